// `rsam segment/eval --enhancer` and GleSAM in --compare lists (issue 40),
// on the tiny test SAM (tests/data/sam/tiny_a.pth, 32-channel embeddings)
// and the miniature enhancer of tests/data/glesam (a 4-channel U-Net
// widened by CRE to 32 channels).
#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "io/npy.h"

using namespace rsam::cli_test;

namespace {

const std::string kEnh = RSAM_TEST_DATA_DIR "/glesam/enhancer.json";

std::string make_scenes(const std::string& name, int n) {
  const std::string dir = ::testing::TempDir() + "rsam_glesam_scenes_" + name;
  std::system(("rm -rf " + dir + " && mkdir -p " + dir + "/images " + dir + "/masks").c_str());
  for (int i = 0; i < n; ++i) {
    cv::Mat img(56, 64, CV_8UC3, cv::Scalar(90, 80, 70)), mask = cv::Mat::zeros(56, 64, CV_8UC1);
    cv::randu(img, cv::Scalar(50, 50, 50), cv::Scalar(130, 130, 130));
    const cv::Point c(20 + 3 * i, 18 + 2 * i);
    cv::circle(img, c, 8 + i % 5, cv::Scalar(30, 210, 240), cv::FILLED);
    cv::circle(mask, c, 8 + i % 5, cv::Scalar(255), cv::FILLED);
    cv::imwrite(dir + "/images/s" + std::to_string(i) + ".png", img);
    cv::imwrite(dir + "/masks/s" + std::to_string(i) + ".png", mask);
  }
  return "folder:" + dir + "/images," + dir + "/masks";
}

double max_abs_diff(const rsam::io::NpyArray& a, const rsam::io::NpyArray& b) {
  double m = 0;
  for (size_t i = 0; i < a.data.size(); ++i) m = std::max(m, double(std::abs(a.data[i] - b.data[i])));
  return m;
}

}  // namespace

TEST(GlesamCli, SegmentWithEnhancerWritesTheEnhancedEmbedding) {
  const std::string seg = "segment --checkpoint " + kData + "tiny_a.pth --image " + kData +
                          "images/square64.png --point 30,30 --json --threads 1";
  const auto plain_emb = tmp("glesam_plain.npy"), enh_emb = tmp("glesam_enh.npy"), bf_emb = tmp("glesam_bf.npy");
  auto plain = run(seg + " --embedding-out " + plain_emb);
  ASSERT_EQ(plain.code, 0) << plain.err;
  auto enh = run(seg + " --enhancer " + kEnh + " --embedding-out " + enh_emb);
  ASSERT_EQ(enh.code, 0) << enh.err;
  const auto j = nlohmann::json::parse(enh.out);
  EXPECT_EQ(j["enhancer"]["method"], "glesam");
  EXPECT_EQ(j["enhancer"]["gamma"], 5.0);
  EXPECT_EQ(j["enhancer"]["timestep"], 1);
  const auto p = rsam::io::load_npy(plain_emb), e = rsam::io::load_npy(enh_emb);
  ASSERT_EQ(e.shape, (std::vector<int64_t>{1, 32, 8, 8}));
  // Enhanced, and not beyond what one step at t = 1 can move it.
  const double d = max_abs_diff(p, e);
  EXPECT_GT(d, 1e-4);
  EXPECT_LT(d, 1.0);
  // The fine-tuned decoder and the enhanced embedding change the masks.
  EXPECT_NE(j["masks"], nlohmann::json::parse(plain.out)["masks"]);
  // bf16: close to fp32.
  auto bf = run(seg + " --enhancer " + kEnh + " --precision bf16 --embedding-out " + bf_emb);
  ASSERT_EQ(bf.code, 0) << bf.err;
  EXPECT_LT(max_abs_diff(rsam::io::load_npy(bf_emb), e), 0.2);
}

TEST(GlesamCli, SegmentWithAdapterAndEnhancerComposes) {
  const auto ad = tmp("glesam_gara.safetensors"), cfg = tmp("glesam_gara.json");
  std::ofstream(cfg) << R"({"method": "gara", "r_low": 2, "r_high": 6, "gate_hidden": 8})";
  auto init = run("adapter init --checkpoint " + kData + "tiny_a.pth --adapter " + cfg + " --out " + ad);
  ASSERT_EQ(init.code, 0) << init.err;
  const std::string seg = "segment --checkpoint " + kData + "tiny_a.pth --image " + kData +
                          "images/square64.png --point 30,30 --json --threads 1 --enhancer " + kEnh;
  auto enh = run(seg);
  ASSERT_EQ(enh.code, 0) << enh.err;
  auto both = run(seg + " --adapter " + ad);
  ASSERT_EQ(both.code, 0) << both.err;
  const auto j = nlohmann::json::parse(both.out);
  EXPECT_EQ(j["adapter"], "gara");
  EXPECT_EQ(j["enhancer"]["method"], "glesam");
  // A fresh adapter is the identity, so the composition equals the enhancer alone.
  EXPECT_EQ(j["masks"], nlohmann::json::parse(enh.out)["masks"]);
}

TEST(GlesamCli, BadEnhancersAreOneLineErrors) {
  const std::string seg = "segment --checkpoint " + kData + "tiny_a.pth --image " + kData +
                          "images/square64.png --point 30,30 --threads 1 --enhancer ";
  const auto bad = tmp("glesam_bad.json"), far = tmp("glesam_t.json");
  std::ofstream(bad) << R"({"method": "glesam", "sd": "x", "gama": 5})";
  expect_one_line_error(run(seg + bad), "unknown key \"gama\"");
  std::ofstream(far) << R"({"method": "glesam", "sd": ")" << RSAM_TEST_DATA_DIR << R"(/glesam/sd", "timestep": 1000})";
  expect_one_line_error(run(seg + far), "out of range");
  expect_one_line_error(run(seg + tmp("glesam_none.json")), "glesam_none.json");
  expect_one_line_error(run(seg + kData + "tiny_a.pth"), "--enhancer expects");
  // tiny_b has 32-channel embeddings too (the U-Net fits) but another
  // decoder shape: the enhancer's fine-tuned decoder is refused.
  expect_one_line_error(run("segment --checkpoint " + kData + "tiny_b.pth --image " + kData +
                            "images/square64.png --point 30,30 --threads 1 --enhancer " + kEnh),
                        "mask decoder");
  // The embedding must not be written onto the enhancer.
  const auto copy = tmp("glesam_copy.json");
  std::system(("cp " + kEnh + " " + copy).c_str());
  expect_one_line_error(run(seg + copy + " --embedding-out " + copy), "enhancer");
}

TEST(GlesamCli, EvalPutsTheEnhancerInTheSameReport) {
  const auto data = make_scenes("eval", 3);
  const auto dir = tmp("glesam_eval");
  std::system(("rm -rf " + dir).c_str());
  auto r = run("eval --checkpoint " + kData + "tiny_a.pth --data " + data + " --compare none," + kEnh +
               " --corruption clean,fog --prompts box --threads 1 --quiet --report " + dir);
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string md = slurp(dir + "/report.md");
  EXPECT_NE(md.find("enhancer"), std::string::npos) << md;
  const auto csv = slurp(dir + "/records.csv");
  EXPECT_NE(csv.find("enhancer"), std::string::npos);
  EXPECT_NE(csv.find("sam"), std::string::npos);
  // --enhancer alone is the same method as in the list; compare pairs them.
  const auto one = tmp("glesam_eval_one");
  std::system(("rm -rf " + one).c_str());
  auto e = run("eval --checkpoint " + kData + "tiny_a.pth --data " + data + " --enhancer " + kEnh +
               " --corruption clean,fog --prompts box --threads 1 --quiet --report " + one);
  ASSERT_EQ(e.code, 0) << e.err;
  auto cmp = run("compare " + dir + " " + one + " --base-method sam --json");
  ASSERT_EQ(cmp.code, 0) << cmp.err;
  const auto j = nlohmann::json::parse(cmp.out);
  ASSERT_EQ(j["rows"].size(), 2u);
  for (const auto& row : j["rows"]) EXPECT_EQ(row["n"].get<int>(), 3) << row.dump();
  // Same method, same objects: the enhancer's scores in both reports agree.
  auto same = run("compare " + dir + " " + one + " --base-method enhancer --json");
  ASSERT_EQ(same.code, 0) << same.err;
  for (const auto& row : nlohmann::json::parse(same.out)["rows"]) EXPECT_EQ(row["diff"].get<double>(), 0.0);
  expect_one_line_error(run("eval --checkpoint " + kData + "tiny_a.pth --data " + data + " --enhancer " + kEnh +
                            " --compare none --quiet"),
                        "not both");
}

// ---- training (rsam train --enhancer) ------------------------------------------

#include <signal.h>

#include "io/tensor_file.h"

namespace {

// An enhancer with the fixture's SD folder and no LoRA/decoder: stage 1's start.
std::string bare_enhancer(const std::string& name) {
  const auto path = tmp(name + ".json");
  std::ofstream(path) << R"({"method": "glesam", "sd": ")" << RSAM_TEST_DATA_DIR << R"(/glesam/sd", "gamma": 5})";
  return path;
}


bool all_zero(const rsam::io::TensorData& t) {
  for (uint8_t b : t.data)
    if (b != 0) return false;
  return true;
}

}  // namespace

TEST(GlesamTrain, Stage1TrainsOnlyTheUNetLora) {
  const auto data = make_scenes("stage1", 4);
  const auto out = tmp("glesam_stage1");
  std::system(("rm -rf " + out).c_str());
  auto r = run("train --checkpoint " + kData + "tiny_a.pth --data " + data + " --enhancer " +
               bare_enhancer("stage1") + " --glesam-stage unet --lora-rank 2 --lora-alpha 2 --corruption gauss_noise"
               " --steps 3 --batch 2 --lr 1e-3 --threads 1 --workers 0 --quiet --out " + out);
  ASSERT_EQ(r.code, 0) << r.err;
  // The LoRA file holds the U-Net's LoRA and nothing else: 130 modules x (A, B).
  const auto lora = rsam::io::load_safetensors(out + "/lora.safetensors");
  EXPECT_EQ(lora.tensors.size(), 260u);
  int moved_b = 0;
  for (const auto& [k, t] : lora.tensors) {
    EXPECT_EQ(k.rfind("unet.", 0), 0u) << k;
    EXPECT_TRUE(k.find(".lora_A.") != std::string::npos || k.find(".lora_B.") != std::string::npos) << k;
    if (k.find(".lora_B.") != std::string::npos && !all_zero(t)) ++moved_b;  // B starts at zero
  }
  EXPECT_GT(moved_b, 100);
  EXPECT_FALSE(std::ifstream(out + "/decoder.safetensors").good());  // the decoder is not stage 1's
  // The written enhancer uses the LoRA, and segment runs with it.
  const auto e = nlohmann::json::parse(slurp(out + "/enhancer.json"));
  EXPECT_EQ(e["lora"], "lora.safetensors");
  EXPECT_EQ(e["gamma"], 5.0);
  EXPECT_FALSE(e.contains("decoder"));
  int lines_n = lines(slurp(out + "/metrics.jsonl"));
  EXPECT_EQ(lines_n, 3);
  auto seg = run("segment --checkpoint " + kData + "tiny_a.pth --image " + kData +
                 "images/square64.png --point 30,30 --threads 1 --enhancer " + out + "/enhancer.json");
  EXPECT_EQ(seg.code, 0) << seg.err;
  // A LoRA already in the enhancer is refused for stage 1.
  expect_one_line_error(run("train --checkpoint " + kData + "tiny_a.pth --data " + data + " --enhancer " + kEnh +
                            " --glesam-stage unet --steps 1 --quiet --out " + tmp("glesam_s1bad")),
                        "fresh LoRA");
}

TEST(GlesamTrain, Stage2TrainsTheDecoderButItsIouHead) {
  const auto data = make_scenes("stage2", 4);
  const auto out = tmp("glesam_stage2");
  std::system(("rm -rf " + out).c_str());
  auto r = run("train --checkpoint " + kData + "tiny_a.pth --data " + data + " --enhancer " + kEnh +
               " --glesam-stage decoder --prompts points:3 --corruption gauss_noise --steps 2 --batch 2 --lr 1e-3"
               " --threads 1 --workers 0 --quiet --out " + out);
  ASSERT_EQ(r.code, 0) << r.err;
  // Against the decoder it started from (the enhancer's ft-decoder.pth).
  const auto before = rsam::io::load_pth(RSAM_TEST_DATA_DIR "/glesam/ft-decoder.pth");
  const auto after = rsam::io::load_safetensors(out + "/decoder.safetensors").tensors;
  ASSERT_EQ(after.size(), before.size());
  int changed = 0, iou = 0;
  for (size_t i = 0; i < after.size(); ++i) {
    const auto& [k, t] = after[i];
    const auto it = std::find_if(before.begin(), before.end(), [&](const auto& kv) { return kv.first == k; });
    ASSERT_NE(it, before.end()) << k;
    const bool same = it->second.data == t.data;
    if (k.find("iou") != std::string::npos) {
      ++iou;
      EXPECT_TRUE(same) << k << " (the IoU token and head stay frozen)";
    } else {
      changed += !same;
    }
  }
  EXPECT_GT(iou, 0);
  EXPECT_GT(changed, int(after.size()) / 2);
  // The written enhancer keeps the LoRA it was given and adds the decoder.
  const auto e = nlohmann::json::parse(slurp(out + "/enhancer.json"));
  EXPECT_EQ(e["decoder"], "decoder.safetensors");
  EXPECT_NE(e["lora"].get<std::string>().find("pytorch_lora_weights.safetensors"), std::string::npos);
  EXPECT_FALSE(std::ifstream(out + "/lora.safetensors").good());
}

TEST(GlesamTrain, KilledAndResumedEndsWithTheSameWeights) {
  const auto data = make_scenes("resume", 6);
  const std::string common = "train --checkpoint " + kData + "tiny_a.pth --data " + data + " --enhancer " +
                             bare_enhancer("resume") +
                             " --glesam-stage unet --lora-rank 2 --corruption gauss_noise,fog --severity random"
                             " --steps 150 --save-every 3 --batch 2 --lr 1e-3 --threads 1 --workers 1 --quiet";
  expect_resume_identical(common, "glesam_resume", "/lora.safetensors", 150, true);
  if (::testing::Test::HasFatalFailure()) return;
  // Another run's options into the same folder are refused.
  expect_one_line_error(run(common + " --out " + tmp("glesam_resume_kill") + " --resume --lora-alpha 4"),
                        "other options");
}

// ---- the miniature: the U-Net prior, the embedding cache, "cre": false ----------

namespace {

// A prior template (unet/config.json, scheduler/, text_embedding.npy) from
// the fixture SD folder's configs, as `--glesam-stage prior --init` reads it.
std::string prior_template(const std::string& name) {
  const std::string dir = tmp("glesam_prior_tpl_" + name), g = RSAM_TEST_DATA_DIR "/glesam";
  std::system(("rm -rf " + dir + " && mkdir -p " + dir + "/unet " + dir + "/scheduler && cp " + g +
               "/sd/unet/config.json " + dir + "/unet/ && cp " + g + "/sd/scheduler/scheduler_config.json " + dir +
               "/scheduler/ && cp " + g + "/text_embedding.npy " + dir + "/")
                  .c_str());
  return dir;
}

std::string prior_cmd(const std::string& data, const std::string& tpl) {
  return "train --glesam-stage prior --init " + tpl + " --checkpoint " + kData + "tiny_a.pth --data " + data +
         " --batch 2 --lr 1e-3 --seed 3 --threads 1 --workers 1";
}

}  // namespace

TEST(GlesamPrior, WritesAnSdFolderThatAnEnhancerLoadsWithCre) {
  const auto data = make_scenes("prior", 4);
  const auto out = tmp("glesam_prior"), s1 = tmp("glesam_prior_s1");
  std::system(("rm -rf " + out + " " + s1).c_str());
  auto r = run(prior_cmd(data, prior_template("a")) + " --steps 3 --quiet --out " + out);
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* f : {"unet/config.json", "scheduler/scheduler_config.json", "text_embedding.npy", "latents.json",
                        "loss.png", "checkpoint.pt"})
    EXPECT_TRUE(std::ifstream(out + "/" + f).good()) << f;
  EXPECT_EQ(lines(slurp(out + "/metrics.jsonl")), 3);
  EXPECT_GT(nlohmann::json::parse(slurp(out + "/latents.json"))["scale"].get<double>(), 0);
  // Exactly the template U-Net's tensors (the fixture U-Net has the same config).
  const auto fixture =
      rsam::io::load_safetensors(RSAM_TEST_DATA_DIR "/glesam/sd/unet/diffusion_pytorch_model.safetensors").tensors;
  const auto trained = rsam::io::load_safetensors(out + "/unet/diffusion_pytorch_model.safetensors").tensors;
  ASSERT_EQ(trained.size(), fixture.size());
  for (const auto& [k, t] : fixture) {
    const auto it = std::find_if(trained.begin(), trained.end(), [&](const auto& kv) { return kv.first == k; });
    ASSERT_NE(it, trained.end()) << k;
    EXPECT_EQ(it->second.shape, t.shape) << k;
  }
  const auto e = nlohmann::json::parse(slurp(out + "/enhancer.json"));
  EXPECT_EQ(e["sd"], ".");
  EXPECT_EQ(e["text_embedding"], "text_embedding.npy");
  // GleSAM's stage 1 on it (CRE to tiny_a's 32 channels), then segment.
  auto t1 = run("train --checkpoint " + kData + "tiny_a.pth --data " + data + " --enhancer " + out +
                "/enhancer.json --glesam-stage unet --lora-rank 2 --corruption gauss_noise --steps 1 --batch 2"
                " --threads 1 --workers 0 --quiet --out " + s1);
  ASSERT_EQ(t1.code, 0) << t1.err;
  auto seg = run("segment --checkpoint " + kData + "tiny_a.pth --image " + kData +
                 "images/square64.png --point 30,30 --threads 1 --json --enhancer " + s1 + "/enhancer.json");
  EXPECT_EQ(seg.code, 0) << seg.err;
}

TEST(GlesamPrior, CachedEmbeddingsGiveTheSameWeights) {
  const auto data = make_scenes("prior_cache", 4);
  const auto cache = tmp("glesam_cache");
  std::system(("rm -rf " + cache).c_str());
  const std::string cmd = prior_cmd(data, prior_template("b")) + " --steps 4 --overwrite";
  auto plain = run(cmd + " --quiet --out " + tmp("glesam_prior_plain"));
  ASSERT_EQ(plain.code, 0) << plain.err;
  auto cold = run(cmd + " --embedding-cache " + cache + " --out " + tmp("glesam_prior_cold"));
  ASSERT_EQ(cold.code, 0) << cold.err;
  EXPECT_EQ(cold.err.find(" 0 computed"), std::string::npos) << cold.err;
  auto warm = run(cmd + " --embedding-cache " + cache + " --out " + tmp("glesam_prior_warm"));
  ASSERT_EQ(warm.code, 0) << warm.err;
  EXPECT_NE(warm.err.find(" 0 computed"), std::string::npos) << warm.err;
  const std::string w = "/unet/diffusion_pytorch_model.safetensors";
  const auto ref = slurp(tmp("glesam_prior_plain") + w);
  EXPECT_TRUE(slurp(tmp("glesam_prior_cold") + w) == ref);
  EXPECT_TRUE(slurp(tmp("glesam_prior_warm") + w) == ref);
  // A cache made with another model is refused.
  expect_one_line_error(run("train --glesam-stage prior --init " + prior_template("b2") + " --checkpoint " + kData +
                            "tiny_b.pth --data " + data + " --steps 1 --quiet --embedding-cache " + cache +
                            " --overwrite --out " + tmp("glesam_prior_other")),
                        "another model");
}

TEST(GlesamPrior, KilledAndResumedEndsWithTheSameWeights) {
  const auto data = make_scenes("prior_resume", 6);
  const std::string common =
      prior_cmd(data, prior_template("c")) + " --prior-crop 4 --steps 150 --save-every 3 --quiet";
  expect_resume_identical(common, "glesam_prior", "/unet/diffusion_pytorch_model.safetensors", 150, true);
}

TEST(GlesamPrior, BadOptionsAreOneLineErrors) {
  const auto data = make_scenes("prior_bad", 2);
  const std::string tpl = prior_template("d");
  const std::string base = "train --glesam-stage prior --checkpoint " + kData + "tiny_a.pth --data " + data +
                           " --steps 1 --quiet --out " + tmp("glesam_prior_bad");
  expect_one_line_error(run(base), "template folder");
  expect_one_line_error(run(base + " --init " + tpl + " --enhancer " + kEnh), "give no enhancer");
  expect_one_line_error(run(base + " --init " + tpl + " --prior-crop 1"), "crop");
  std::system(("rm " + tpl + "/text_embedding.npy").c_str());
  expect_one_line_error(run(base + " --init " + tpl), "text_embedding.npy");
  expect_one_line_error(run("train --checkpoint " + kData + "tiny_a.pth --data " + data + " --enhancer " + kEnh +
                            " --glesam-stage decoder --prior-crop 4 --steps 1 --quiet --out " + tmp("glesam_crop_s2")),
                        "prior stage only");
}

TEST(GlesamTrain, CreFalseTrainsFreshInOutConvsWithTheLora) {
  const auto data = make_scenes("cre_false", 4);
  const auto enh = tmp("glesam_cre_false.json"), out = tmp("glesam_cre_false"), s2 = tmp("glesam_cre_false_s2");
  std::system(("rm -rf " + out + " " + s2).c_str());
  std::ofstream(enh) << R"({"method": "glesam", "sd": ")" << RSAM_TEST_DATA_DIR << R"(/glesam/sd", "cre": false})";
  const std::string seg = "segment --checkpoint " + kData + "tiny_a.pth --image " + kData +
                          "images/square64.png --point 30,30 --threads 1 --json";
  // Untrained fresh convolutions are not an enhancer.
  expect_one_line_error(run(seg + " --enhancer " + enh), "in_out");
  auto r = run("train --checkpoint " + kData + "tiny_a.pth --data " + data + " --enhancer " + enh +
               " --glesam-stage unet --lora-rank 2 --corruption gauss_noise --steps 2 --batch 2 --lr 1e-3"
               " --threads 1 --workers 0 --quiet --out " + out);
  ASSERT_EQ(r.code, 0) << r.err;
  const auto e = nlohmann::json::parse(slurp(out + "/enhancer.json"));
  EXPECT_EQ(e["cre"], false);
  EXPECT_EQ(e["in_out"], "in_out.safetensors");
  EXPECT_EQ(e["lora"], "lora.safetensors");
  const auto convs = rsam::io::load_safetensors(out + "/in_out.safetensors").tensors;
  ASSERT_EQ(convs.size(), 4u);
  EXPECT_EQ(convs[0].first, "conv_in.weight");
  EXPECT_EQ(convs[0].second.shape, (std::vector<int64_t>{4, 32, 3, 3}));
  EXPECT_EQ(convs[2].second.shape, (std::vector<int64_t>{32, 4, 3, 3}));
  const auto emb_fresh = tmp("glesam_cre_false.npy"), emb_cre = tmp("glesam_cre_true.npy");
  auto a = run(seg + " --enhancer " + out + "/enhancer.json --embedding-out " + emb_fresh);
  ASSERT_EQ(a.code, 0) << a.err;
  auto b = run(seg + " --enhancer " + bare_enhancer("cre_true") + " --embedding-out " + emb_cre);
  ASSERT_EQ(b.code, 0) << b.err;
  EXPECT_GT(max_abs_diff(rsam::io::load_npy(emb_fresh), rsam::io::load_npy(emb_cre)), 1e-4);
  // Stage 2 continues from it; stage 1 refuses trained convolutions.
  auto t2 = run("train --checkpoint " + kData + "tiny_a.pth --data " + data + " --enhancer " + out +
                "/enhancer.json --glesam-stage decoder --corruption gauss_noise --steps 1 --threads 1 --workers 0"
                " --quiet --out " + s2);
  EXPECT_EQ(t2.code, 0) << t2.err;
  EXPECT_EQ(nlohmann::json::parse(slurp(s2 + "/enhancer.json"))["cre"], false);
  std::ofstream(tmp("glesam_cre_s1_again.json")) << R"({"method": "glesam", "sd": ")" << RSAM_TEST_DATA_DIR
                                                   << R"(/glesam/sd", "cre": false, "in_out": ")" << out
                                                   << R"(/in_out.safetensors"})";
  expect_one_line_error(run("train --checkpoint " + kData + "tiny_a.pth --data " + data + " --enhancer " +
                            tmp("glesam_cre_s1_again.json") + " --glesam-stage unet --steps 1 --quiet --out " +
                            tmp("glesam_cre_again")),
                        "fresh in/out");
}

// ---- gradient checkpointing and data parallelism ----------------------------------

namespace {

// max |a - b| and mean |a - b| over the tensors of two safetensors files
// with the same names and shapes.
std::pair<double, double> weight_diff(const std::string& x, const std::string& y) {
  const auto fx = rsam::io::load_safetensors(x).tensors, fy = rsam::io::load_safetensors(y).tensors;
  EXPECT_EQ(fx.size(), fy.size());
  double mx = 0, sum = 0;
  int64_t n = 0;
  for (size_t t = 0; t < std::min(fx.size(), fy.size()); ++t) {
    EXPECT_EQ(fx[t].first, fy[t].first);
    EXPECT_EQ(fx[t].second.shape, fy[t].second.shape);
    const float* px = reinterpret_cast<const float*>(fx[t].second.data.data());
    const float* py = reinterpret_cast<const float*>(fy[t].second.data.data());
    for (int64_t k = 0; k < std::min(fx[t].second.numel(), fy[t].second.numel()); ++k) {
      const double d = std::abs(double(px[k]) - double(py[k]));
      mx = std::max(mx, d), sum += d, ++n;
    }
  }
  return {mx, n ? sum / double(n) : 0.0};
}

std::vector<double> losses(const std::string& dir) {
  std::vector<double> v;
  std::ifstream f(dir + "/metrics.jsonl");
  for (std::string l; std::getline(f, l);) v.push_back(nlohmann::json::parse(l)["loss"].get<double>());
  return v;
}

// The runs `a` and `b` (into fresh folders) succeed with the same losses
// step by step and weights that differ only by the order of float sums
// (Adam moves a weight whose gradient is ~0 by up to the learning rate).
void expect_same_run(const std::string& a, const std::string& b, const std::string& name, const std::string& weights,
                     double mean_tol) {
  const auto da = tmp(name + "_a"), db = tmp(name + "_b");
  std::system(("rm -rf " + da + " " + db).c_str());
  auto ra = run(a + " --out " + da);
  ASSERT_EQ(ra.code, 0) << ra.err;
  auto rb = run(b + " --out " + db);
  ASSERT_EQ(rb.code, 0) << rb.err;
  EXPECT_EQ(lines(rb.out), 1) << rb.out;  // one report (rank 0's)
  const auto la = losses(da), lb = losses(db);
  ASSERT_EQ(la.size(), 3u);
  ASSERT_EQ(lb.size(), la.size());
  for (size_t i = 0; i < la.size(); ++i) EXPECT_NEAR(la[i], lb[i], 1e-5 * la[i]) << "step " << i + 1;
  const auto [mx, mean] = weight_diff(da + weights, db + weights);
  EXPECT_LT(mean, mean_tol);
  EXPECT_LT(mx, 3 * 1e-3);
}

const std::string kStage1 = " --glesam-stage unet --lora-rank 2 --corruption gauss_noise --steps 3 --batch 4"
                            " --lr 1e-3 --threads 1 --workers 0 --quiet";

// Stage 1 and the prior (its random crops too) train the same with `flag`
// as without it; returns the stage-1 command.
std::string expect_flag_trains_the_same(const std::string& name, const std::string& flag) {
  const auto data = make_scenes(name, 4);
  const std::string s1 = "train --checkpoint " + kData + "tiny_a.pth --data " + data + " --enhancer " +
                         bare_enhancer(name) + kStage1;
  expect_same_run(s1, s1 + flag, "glesam_" + name + "_s1", "/lora.safetensors", 1e-6);
  if (::testing::Test::HasFatalFailure()) return s1;
  const std::string prior = prior_cmd(data, prior_template(name)) + " --prior-crop 4 --steps 3 --quiet";
  expect_same_run(prior, prior + flag, "glesam_" + name + "_prior", "/unet/diffusion_pytorch_model.safetensors",
                  1e-6);
  return s1;
}

}  // namespace

// --grad-checkpoint recomputes the U-Net's blocks in the backward pass:
// the same training as without it (tests/glesam/test_grad_checkpoint.cpp
// compares the gradients).
TEST(GlesamTrain, GradCheckpointTrainsTheSame) {
  expect_flag_trains_the_same("ckpt", " --grad-checkpoint");
  if (::testing::Test::HasFatalFailure()) return;
  expect_one_line_error(run("train --checkpoint " + kData + "tiny_a.pth --data " + make_scenes("ckpt", 4) +
                            " --enhancer " + kEnh +
                            " --glesam-stage decoder --grad-checkpoint --steps 1 --quiet --out " + tmp("glesam_ckpt_s2")),
                        "decoder stage");
}

// Two data-parallel processes (c10d Gloo) train on exactly the batch one
// process would, as the adapter trainer's (tests/app/test_cli.cpp): stage 1,
// and the prior whose crops, timesteps and noise every rank draws for the
// whole batch.
TEST(GlesamTrain, TwoProcessesMatchOneProcess) {
#ifndef RSAM_HAS_GLOO
  GTEST_SKIP() << "built without c10d's Gloo headers (libgloo-dev)";
#endif
  const std::string s1 = expect_flag_trains_the_same("ddp", " --nproc 2");
  if (::testing::Test::HasFatalFailure()) return;
  // Bad options fail once, before any rank starts.
  expect_one_line_error(run(s1 + " --nproc 0 --out " + tmp("glesam_ddp_zero")), "nproc");
}

// Killed and resumed on two processes, stage 2 ends with the weights of
// an uninterrupted two-process run.
TEST(GlesamTrain, TwoProcessesKilledAndResumedEndWithTheSameWeights) {
#ifndef RSAM_HAS_GLOO
  GTEST_SKIP() << "built without c10d's Gloo headers (libgloo-dev)";
#endif
  const auto data = make_scenes("ddp_resume", 6);
  const std::string common = "train --checkpoint " + kData + "tiny_a.pth --data " + data + " --enhancer " + kEnh +
                             " --glesam-stage decoder --corruption gauss_noise,fog --severity random --steps 60"
                             " --save-every 3 --batch 3 --lr 1e-3 --nproc 2 --threads 1 --workers 1 --quiet";
  expect_resume_identical(common, "glesam_ddp_resume", "/decoder.safetensors", 60, true);
}
