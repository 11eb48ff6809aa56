// The trainer: samples laid out as the predictor lays them out, corrective
// clicks, gradient checkpointing against the plain backward pass, the
// options and short runs of the tiny model (adapters, pre-training, bf16,
// occluded objects, consistency), and the bundled model it trained.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include "adapt/adapter.h"
#include "data/synth.h"
#include "error.h"
#include "eval/evaluator.h"
#include "io/fs.h"
#include "model/checkpoint.h"
#include "model/image.h"
#include "model/predictor.h"
#include "tiny_config.h"
#include "train/trainer.h"
#include "train_helpers.h"

namespace fs = std::filesystem;
using namespace rsam_test;

TEST(Train, CorrectiveClickLandsInTheError) {
  // 4x4 low-res grid over a 16-pixel input (cells of 4): object = top-left 2x2.
  auto target = torch::zeros({4, 4});
  target.narrow(0, 0, 2).narrow(1, 0, 2).fill_(1);
  rsam::train::Click c;
  torch::manual_seed(0);
  std::set<std::pair<float, float>> seen;
  for (int i = 0; i < 40; ++i) {
    // Nothing predicted: a positive click on the missed object, at a cell centre.
    ASSERT_TRUE(rsam::train::corrective_click(torch::full({4, 4}, -5.f), target, 16, &c));
    EXPECT_EQ(c.label, 1);
    EXPECT_TRUE((c.x == 2 || c.x == 6) && (c.y == 2 || c.y == 6)) << c.x << "," << c.y;
    seen.insert({c.x, c.y});
    // Everything predicted: a negative click outside the object.
    ASSERT_TRUE(rsam::train::corrective_click(torch::full({4, 4}, 5.f), target, 16, &c));
    EXPECT_EQ(c.label, 0);
    EXPECT_TRUE(c.x > 8 || c.y > 8) << c.x << "," << c.y;
  }
  EXPECT_EQ(seen.size(), 4u);  // drawn over the whole error region
  // A perfect mask needs no click.
  EXPECT_FALSE(rsam::train::corrective_click(target * 10 - 5, target, 16, &c));
}

TEST(GradCheckpoint, SameGradientsAsPlainBackward) {
  auto run = [](bool ckpt) {
    rsam::adapt::AdaptedSam a(tiny(), {{"method", "gara"}, {"r_low", 2}, {"r_high", 4}, {"gate_hidden", 8}}, 5);
    {
      torch::NoGradGuard ng;
      torch::manual_seed(3);
      for (auto& [k, t] : a.trainable())
        if (k.find(".B_") != std::string::npos) t.normal_(0, 0.1);
    }
    a.model()->train();
    torch::manual_seed(11);  // same Gumbel noise in both runs
    auto x = torch::randn({2, 3, 64, 64});
    auto emb = rsam::train::encode_for_training(a.model(), x, ckpt);
    emb.pow(2).mean().backward();
    std::vector<torch::Tensor> grads;
    for (auto& [k, t] : a.trainable()) grads.push_back(t.grad().defined() ? t.grad().clone() : torch::zeros_like(t));
    return std::make_pair(emb.detach(), grads);
  };
  auto [e1, g1] = run(false);
  auto [e2, g2] = run(true);
  EXPECT_TRUE(torch::allclose(e1, e2));
  ASSERT_EQ(g1.size(), g2.size());
  double total = 0;
  for (size_t i = 0; i < g1.size(); ++i) {
    EXPECT_LE((g1[i] - g2[i]).abs().max().item<double>(), 1e-6) << i;
    total += g1[i].abs().sum().item<double>();
  }
  EXPECT_GT(total, 0.0);
}

TEST(ModelSample, LaysOutImageTargetAndPromptLikeThePredictor) {
  auto m = tiny();
  cv::Mat img(30, 40, CV_8UC3, cv::Scalar(10, 20, 30)), mask = cv::Mat::zeros(30, 40, CV_8UC1);
  mask(cv::Rect(0, 0, 20, 30)).setTo(1);
  rsam::data::SampledPrompt p;
  p.points = {cv::Point2f(10, 15)};
  p.labels = {1};
  p.has_box = true;
  p.box = cv::Vec4f(0, 0, 19, 29);
  auto s = rsam::train::to_model_sample(m, img, mask, p);
  EXPECT_EQ(s.image.sizes(), (std::vector<int64_t>{3, 64, 64}));
  EXPECT_EQ(s.target.sizes(), (std::vector<int64_t>{32, 32}));
  // 40x30 -> 64x48: the left half of the resized area is foreground, the pad is 0.
  EXPECT_NEAR(s.target[10][5].item<float>(), 1.0f, 1e-5);
  EXPECT_NEAR(s.target[10][25].item<float>(), 0.0f, 1e-5);
  EXPECT_NEAR(s.target[30][5].item<float>(), 0.0f, 1e-5);
  EXPECT_NEAR(s.points[0][0][0].item<float>(), 16.0f, 1e-4);
  EXPECT_NEAR(s.box[0][3].item<float>(), 29 * 1.6f, 1e-4);
  EXPECT_FALSE(s.ambiguous);
  // At input resolution, without the padding: 32 x 48 pixels of object in the 64 x 48 image.
  EXPECT_EQ(s.input_target.sizes(), (std::vector<int64_t>{48, 64}));
  EXPECT_EQ(s.input_target.sum().item<int64_t>(), 32 * 48);
  EXPECT_EQ(s.input_target[47][31].item<int>(), 1);
  EXPECT_EQ(s.input_target[47][32].item<int>(), 0);
}

TEST(Train, InPiecesCountsFourConnectedParts) {
  cv::Mat1b m = cv::Mat1b::zeros(8, 8);
  EXPECT_FALSE(rsam::train::in_pieces(m));
  m(1, 1) = m(1, 2) = m(2, 2) = 1;
  EXPECT_FALSE(rsam::train::in_pieces(m));
  m(3, 3) = 255;  // touches (2, 2) only at a corner: a second part
  EXPECT_TRUE(rsam::train::in_pieces(m));
  m(2, 3) = 1;  // now joined
  EXPECT_FALSE(rsam::train::in_pieces(m));
}

TEST(Train, BadOptionsAreErrors) {
  rsam::train::TrainOptions o;
  o.checkpoint = kData + "tiny_a.pth";
  // Under the test's own temp dir: a system's "/nonexistent" may exist.
  const std::string missing = (fs::path(::testing::TempDir()) / "rsam_train_no_such_dir").string();
  fs::remove_all(missing);
  o.data = "folder:" + missing + "," + missing;
  o.steps = 1;
  o.quiet = true;
  o.out = (fs::path(::testing::TempDir()) / "rsam_train_bad").string();
  fs::remove_all(o.out);
  EXPECT_THROW(rsam::train::train(o), rsam::Error);
  o.steps = 0;
  EXPECT_THROW(rsam::train::train(o), rsam::Error);
}

// NaN compares false and Inf passes "> 0": such numbers trained silently
// wrong (an all-NaN adapter, no clipping). The messages name the options, not flags.
TEST(Train, NonFiniteAndNegativeNumbersAreRefusedUpFront) {
  auto o = short_run("folder:/nonexistent,/nonexistent", 1, "rsam_train_ranges_out");
  auto expect = [&](auto set, const std::string& part) {
    auto b = o;
    set(b);
    const auto e = error_of([&] { rsam::train::check_options(b); });
    EXPECT_NE(e.find(part), std::string::npos) << e;
    EXPECT_EQ(e.find("--"), std::string::npos) << e;
    EXPECT_THROW(rsam::train::train(b), rsam::Error);
  };
  const double inf = HUGE_VAL, nan = std::nan("");
  expect([&](auto& b) { b.lr = inf; }, "the learning rate must be a finite number in (0, 1] (got inf)");
  expect([&](auto& b) { b.lr = nan; }, "the learning rate");
  expect([&](auto& b) { b.lr = 1e39; }, "the learning rate");  // beyond float
  expect([&](auto& b) { b.clip = nan; }, "the gradient clip must be a finite number >= 0");
  expect([&](auto& b) { b.clip = -1; }, "the gradient clip");
  expect([&](auto& b) { b.warmup = -5; }, "the warm-up steps must be >= 0 (got -5)");
  expect([&](auto& b) { b.wd = inf; }, "the weight decay");
  expect([&](auto& b) { b.min_lr_ratio = 2; }, "learning-rate ratio");
  expect([&](auto& b) { b.clean_ratio = nan; }, "the clean ratio");
  expect([&](auto& b) { b.save_every = -1; }, "checkpoint interval");
  expect([&](auto& b) { b.resume = b.overwrite = true; }, "exclude each other");
  EXPECT_FALSE(fs::exists(o.out));
  EXPECT_NO_THROW(rsam::train::check_options(o));
}

TEST(Train, TrainableSelectsWeightsByNamePrefix) {
  // Only the IoU head trains (with the ranking loss): every other weight,
  // hence every mask, stays as it was.
  const auto spec = make_scenes("trainable", 4);
  auto o = short_run(spec, 2, "rsam_train_trainable_out");
  o.full = true;
  o.trainable = "mask_decoder.iou_prediction_head";
  o.rank_loss = 1.0;
  o.corruption = "none";
  o.prompts = "points:1";
  o.lr = 1e-2;
  const auto r = rsam::train::train(o);
  const auto before = tiny()->named_parameters(true);
  const auto after = rsam::load_sam(r.weights_path).model->named_parameters(true);
  int changed = 0, kept = 0;
  for (const auto& p : before) {
    const std::string& name = p.key();
    ASSERT_NE(after.find(name), nullptr) << name;
    const bool same = torch::equal(p.value(), *after.find(name));
    if (name.rfind(o.trainable, 0) == 0) {
      EXPECT_FALSE(same) << name;
      ++changed;
    } else {
      EXPECT_TRUE(same) << name;
      ++kept;
    }
  }
  EXPECT_EQ(changed, 6);  // 3 layers x (weight, bias)
  EXPECT_GT(kept, 50);
  // The ranking term is logged.
  std::ifstream mf(fs::path(o.out) / "metrics.jsonl");
  std::string line;
  ASSERT_TRUE(std::getline(mf, line));
  EXPECT_GT(nlohmann::json::parse(line)["iou_rank"].get<double>(), 0.0) << line;

  auto bad = o;
  bad.trainable = "no_such_module.";
  bad.out += "_bad";  // o.out holds a run, which would be refused first
  fs::remove_all(bad.out);
  EXPECT_THROW(rsam::train::train(bad), rsam::Error);
  fs::remove_all(bad.out);
  bad = o;
  bad.full = false;
  EXPECT_THROW(rsam::train::train(bad), rsam::Error);
  bad = o;
  bad.rank_loss = -1;
  EXPECT_THROW(rsam::train::train(bad), rsam::Error);
  bad.rank_loss = std::nan("");
  EXPECT_THROW(rsam::train::train(bad), rsam::Error);
  bad = o;
  bad.iou_target = "fullres";
  EXPECT_THROW(rsam::train::train(bad), rsam::Error);
  fs::remove_all(o.out);
}

TEST(Train, Bf16WithGradientCheckpointing) {
  const auto spec = make_scenes("bf16", 3);
  rsam::train::TrainOptions o;
  o.checkpoint = kData + "tiny_a.pth";
  o.data = spec;
  o.adapter = "gara";
  o.corruption = "none";
  o.steps = 2;
  o.precision = rsam::Precision::BF16;
  o.grad_checkpoint = true;
  o.workers = 0;
  o.threads = 1;
  o.quiet = true;
  o.out = (fs::path(::testing::TempDir()) / "rsam_train_bf16_out").string();
  fs::remove_all(o.out);
  auto r = rsam::train::train(o);
  EXPECT_EQ(r.steps, 2);
  EXPECT_TRUE(std::isfinite(r.last_loss));
}

// Pre-training from random weights (rsam-tiny's path): a JSON config, synthetic
// scenes, several objects decoded per image encoding; same seed, same weights.
TEST(Train, FromScratchOnSyntheticScenesWithSeveralMasksPerImage) {
  const auto dir = fs::path(::testing::TempDir()) / "rsam_train_scratch";
  fs::remove_all(dir);
  rsam::data::SynthOptions so;
  so.size = 64;
  so.photos = "none";
  so.min_objects = 3;
  so.max_objects = 5;
  rsam::data::write_synth((dir / "scenes").string(), 3, so);
  const auto cfg_path = (dir / "tiny.json").string();
  {
    std::ofstream f(cfg_path);
    f << rsam::testing::tiny_config().to_json();
  }
  rsam::train::TrainOptions o;
  o.init = cfg_path;
  o.full = true;
  o.data = "coco:" + (dir / "scenes" / "annotations.json").string() + "," + (dir / "scenes" / "images").string();
  o.corruption = "none";
  o.prompts = "points:1,box";
  o.steps = 2;
  o.batch = 2;
  o.masks_per_image = 3;
  o.quiet = true;
  o.threads = 1;
  o.out = (dir / "a").string();
  const auto r = rsam::train::train(o);
  ASSERT_TRUE(std::isfinite(r.last_loss));
  auto model = rsam::load_sam(r.weights_path).model;
  EXPECT_EQ(model->config, rsam::testing::tiny_config());
  o.out = (dir / "b").string();
  rsam::train::train(o);
  EXPECT_EQ(rsam::io::read_file((dir / "a" / "model.safetensors").string()),
            rsam::io::read_file((dir / "b" / "model.safetensors").string()));
  // Each step decoded more objects than it encoded images.
  std::ifstream m((dir / "a" / "metrics.jsonl").string());
  std::string line;
  int steps = 0;
  while (std::getline(m, line) && line.find("\"masks\"") != std::string::npos) {
    ++steps;
    EXPECT_GT(nlohmann::json::parse(line)["masks"].get<int>(), o.batch) << line;
  }
  EXPECT_EQ(steps, 2);
  // Interactive rounds: more loss terms per object, so other weights.
  o.iterative_points = 2;
  o.out = (dir / "c").string();
  const auto ri = rsam::train::train(o);
  ASSERT_TRUE(std::isfinite(ri.last_loss));
  EXPECT_NE(rsam::io::read_file((dir / "a" / "model.safetensors").string()),
            rsam::io::read_file((dir / "c" / "model.safetensors").string()));
  o.iterative_points = -1;
  EXPECT_THROW(rsam::train::train(o), rsam::Error);
  o.iterative_points = 0;
  // --init needs --full, and excludes --checkpoint.
  o.full = false;
  EXPECT_THROW(rsam::train::train(o), rsam::Error);
  o.full = true;
  o.checkpoint = kData + "tiny_a.pth";
  EXPECT_THROW(rsam::train::train(o), rsam::Error);
  fs::remove_all(dir);
}

// --occluded-weight: objects cut into pieces by others weigh more in the
// step's mean. Same seed and data: other weights when a step decodes such an
// object, the same weights when it decodes none.
TEST(Train, OccludedWeightReweightsObjectsInPieces) {
  const auto dir = fs::path(::testing::TempDir()) / "rsam_train_occluded";
  fs::remove_all(dir);
  auto scenes = [&](const std::string& name, int lo, int hi, uint64_t seed) {
    rsam::data::SynthOptions so;
    so.seed = seed;
    so.size = 64;
    so.photos = "none";
    so.min_objects = lo;
    so.max_objects = hi;
    rsam::data::write_synth((dir / name).string(), 2, so);
    return "coco:" + (dir / name / "annotations.json").string() + "," + (dir / name / "images").string();
  };
  auto o = short_run("", 1, "rsam_train_occluded_out");
  o.full = true;
  o.corruption = "none";
  o.prompts = "box";
  o.masks_per_image = 12;
  o.lr = 1e-3;
  auto run = [&](const std::string& data, double w, const std::string& out) {
    o.data = data;
    o.occluded_weight = w;
    o.out = (dir / out).string();
    rsam::train::train(o);
    std::ifstream m(fs::path(o.out) / "metrics.jsonl");
    std::string line;
    std::getline(m, line);
    return std::make_pair(rsam::load_sam((dir / out / "model.safetensors").string()).model,
                          nlohmann::json::parse(line)["masks_in_pieces"].get<int>());
  };
  // The files' metadata name the options; compare the weights.
  auto same = [](const rsam::Sam& a, const rsam::Sam& b) {
    const auto pb = b->named_parameters(true);
    for (const auto& p : a->named_parameters(true))
      if (!torch::equal(p.value(), *pb.find(p.key()))) return false;
    return true;
  };
  const auto crowded = scenes("crowded", 10, 12, 0);
  const auto [w1, n1] = run(crowded, 1, "c1");
  const auto [w4, n4] = run(crowded, 4, "c4");
  ASSERT_GT(n1, 0);  // the crowded scenes have occluded objects
  EXPECT_EQ(n1, n4);
  EXPECT_FALSE(same(w1, w4));
  // One object a scene, none of them cut (with this seed; a lone object
  // can still be in pieces, e.g. a ring through the border).
  const auto single = scenes("single", 1, 1, 1);
  const auto [s1, m1] = run(single, 1, "s1");
  const auto [s4, m4] = run(single, 4, "s4");
  EXPECT_EQ(m1, 0);
  EXPECT_EQ(m4, 0);
  EXPECT_TRUE(same(s1, s4));
  o.occluded_weight = 0;
  EXPECT_THROW(rsam::train::train(o), rsam::Error);
  o.occluded_weight = std::nan("");
  EXPECT_THROW(rsam::train::train(o), rsam::Error);
  fs::remove_all(dir);
}

// --consistency: the adapted embedding is held to the frozen base's
// embedding of the clean image. A fresh LoRA adapter computes the base's
// embedding exactly, so on clean images the term starts at zero and on
// corrupted ones above it; its gradient changes the adapter that is trained.
TEST(Train, ConsistencyHoldsTheAdapterToTheCleanEmbedding) {
  const auto spec = make_scenes("consistency", 4);
  auto o = short_run(spec, 2, "rsam_train_consistency_out");
  o.adapter = "lora";
  o.lr = 1e-2;
  o.prompts = "box";
  auto run = [&](const std::string& corruption, double w, const std::string& out) {
    o.corruption = corruption;
    o.severity = 5;
    o.consistency = w;
    o.out = (fs::path(::testing::TempDir()) / out).string();
    fs::remove_all(o.out);
    rsam::train::train(o);
    std::vector<nlohmann::json> steps;
    std::ifstream m(fs::path(o.out) / "metrics.jsonl");
    for (std::string line; std::getline(m, line);) steps.push_back(nlohmann::json::parse(line));
    return steps;
  };
  const auto clean = run("none", 1, "rsam_train_consistency_clean");
  ASSERT_EQ(clean.size(), 2u);
  // The frozen teacher runs the inference attention, the student the
  // reference: the same maths to rounding.
  EXPECT_LE(clean[0]["consistency"].get<double>(), 1e-10);
  EXPECT_GT(clean[1]["consistency"].get<double>(), 0.0);  // the first step moved the adapter
  const auto noisy = run("gauss_noise", 1, "rsam_train_consistency_noisy");
  EXPECT_GT(noisy[0]["consistency"].get<double>(), 1e-4);
  const auto noisy_adapter = rsam::io::read_file(o.out + "/adapter.safetensors");
  const auto plain = run("gauss_noise", 0, "rsam_train_consistency_plain");
  EXPECT_FALSE(plain[0].contains("consistency"));
  EXPECT_EQ(plain[0]["loss"].get<double>(), noisy[0]["loss"].get<double>());  // same data and start
  EXPECT_NE(rsam::io::read_file(o.out + "/adapter.safetensors"), noisy_adapter);
  o.consistency = -1;
  EXPECT_THROW(rsam::train::train(o), rsam::Error);
  o.consistency = std::nan("");
  EXPECT_THROW(rsam::train::train(o), rsam::Error);
  o.consistency = 1;
  o.full = true;
  EXPECT_THROW(rsam::train::train(o), rsam::Error);
}

// The bundled rsam-tiny, trained, in bf16 vs fp32 (the foundation issue's
// agreement check needs trained weights: random ones have logits of order 1
// around the threshold). Box and one-point prompts on synthetic scenes.
TEST(BundledModel, Bf16MasksAgreeWithFp32) {
  const std::string path = RSAM_MODELS_DIR "/rsam-tiny.safetensors";
  auto model = rsam::load_sam(path).model;
  model->eval();
  rsam::SamPredictor f32(model, rsam::Precision::FP32), b16(model, rsam::Precision::BF16);
  rsam::data::SynthOptions so;
  so.size = 256;
  so.seed = 11;
  so.photos = "none";
  const rsam::data::SynthWorld world(so);
  auto iou = [](const torch::Tensor& a, const torch::Tensor& b) {
    const double u = (a | b).sum().item<double>();
    return u == 0 ? 1.0 : (a & b).sum().item<double>() / u;
  };
  double sum = 0, worst = 1;
  int n = 0;
  for (uint64_t i = 0; i < 6; ++i) {
    const auto sc = world.scene(i);
    const auto img = rsam::image8_from_rows(sc.image.data, sc.image.cols, sc.image.rows, sc.image.step);
    f32.set_image(img);
    b16.set_image(img);
    for (const auto& o : sc.objects) {
      rsam::Prompt box;
      box.box = std::array<float, 4>{float(o.bbox.x), float(o.bbox.y), float(o.bbox.x + o.bbox.width),
                                     float(o.bbox.y + o.bbox.height)};
      // A pixel of the object itself, the one nearest its box centre.
      cv::Point best{-1, -1};
      double bd = 1e18;
      for (int y = o.bbox.y; y < o.bbox.y + o.bbox.height; ++y)
        for (int x = o.bbox.x; x < o.bbox.x + o.bbox.width; ++x)
          if (sc.ids.at<uint8_t>(y, x) == o.id) {
            const double d = std::hypot(x - (o.bbox.x + o.bbox.width / 2.0), y - (o.bbox.y + o.bbox.height / 2.0));
            if (d < bd) bd = d, best = {x, y};
          }
      rsam::Prompt pt;
      pt.points = {{float(best.x), float(best.y)}};
      pt.labels = {1};
      for (const auto* p : {&box, &pt}) {
        const auto a = f32.predict(*p, false).masks[0], b = b16.predict(*p, false).masks[0];
        const double v = iou(a, b);
        sum += v, worst = std::min(worst, v), ++n;
      }
    }
  }
  std::printf("bf16 vs fp32, trained rsam-tiny, %d masks: mean IoU %.4f, worst %.4f\n", n, sum / n, worst);
  ASSERT_GT(n, 20);
  EXPECT_GE(sum / n, 0.98);
}

// The bundled rsam-tiny is pre-trained with interactive rounds
// (--iterative-points), so SAM's click loop must refine its masks: each
// corrective click, with the last logits as mask input, lands where the mask
// is wrong. A model never trained with mask inputs gets worse here instead
// (measured on the earlier weights: one point 55, three clicks 26).
TEST(BundledModel, CorrectiveClicksRefineItsMasks) {
  const auto dir = fs::path(::testing::TempDir()) / "rsam_bundled_clicks";
  fs::remove_all(dir);
  rsam::data::SynthOptions so;
  so.size = 256;
  so.seed = 12;
  so.photos = "none";
  rsam::data::write_synth(dir.string(), 6, so);
  rsam::eval::EvalOptions e;
  e.checkpoint = RSAM_MODELS_DIR "/rsam-tiny.safetensors";
  e.data = "coco:" + (dir / "annotations.json").string() + "," + (dir / "images").string();
  e.corruptions = "clean";
  e.prompts = "clicks:1,clicks:3";
  e.threads = 1;
  e.quiet = true;
  const auto r = rsam::eval::evaluate(e);
  const auto& s = r.summary["sam"]["clean"];
  const double one = s["clicks:1"]["iou"].get<double>(), three = s["clicks:3"]["iou"].get<double>();
  std::printf("bundled rsam-tiny, %zu objects: 1 click %.3f, 3 clicks %.3f\n", r.records.size() / 2, one, three);
  ASSERT_GE(r.records.size(), 40u);
  EXPECT_GT(three, one + 0.02);
  fs::remove_all(dir);
}
