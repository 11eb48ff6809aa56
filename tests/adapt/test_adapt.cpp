// The adapter contract: identity at initialization, only adapter tensors
// move under training, GaRA's gate semantics, merge and file round trips.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <fstream>

#include "adapt/adapter.h"
#include "error.h"
#include "tiny_config.h"
#include "model/checkpoint.h"

namespace {

using rsam::adapt::AdaptedSam;
using nlohmann::json;

rsam::SamConfig tiny() { return rsam::testing::tiny_config(); }

rsam::Sam base_model(uint64_t seed = 0) {
  torch::manual_seed(seed);
  rsam::Sam m(tiny());
  m->eval();
  return m;
}

// Small configs per method so the tests stay fast.
std::vector<json> all_methods() {
  return {{{"method", "lora"}, {"rank", 4}},
          {{"method", "gara"}, {"r_low", 2}, {"r_high", 6}, {"gate_hidden", 16}},
          {{"method", "moe_lora"}, {"ranks", {2, 4}}, {"gate_hidden", 16}},
          {{"method", "conv_lora"}, {"rank", 4}, {"experts", 3}},
          {{"method", "ssf"}},
          {{"method", "adapter"}, {"bottleneck", 8}},
          {{"method", "bitfit"}},
          {{"method", "decoder_only"}}};
}

torch::Tensor image_batch(int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::randn({n, 3, 64, 64});
}

// Full differentiable forward: encoder on a batch, one box prompt per image.
torch::Tensor logits(rsam::Sam& m, const torch::Tensor& images) {
  auto emb = m->image_encoder->forward(images);
  auto boxes = torch::tensor({8.f, 8.f, 40.f, 48.f}).view({1, 4}).repeat({images.size(0), 1});
  auto [sparse, dense] = m->prompt_encoder->forward(std::nullopt, boxes, std::nullopt);
  return m->mask_decoder->forward(emb, m->prompt_encoder->get_dense_pe(), sparse, dense, false).first;
}

std::map<std::string, torch::Tensor> snapshot(torch::nn::Module& m) {
  std::map<std::string, torch::Tensor> s;
  for (const auto& p : m.named_parameters(true)) s[p.key()] = p.value().detach().clone();
  return s;
}

std::string tmp(const std::string& n) { return ::testing::TempDir() + "rsam_adapt_" + n; }

void train_steps(AdaptedSam& a, int steps, uint64_t seed) {
  std::vector<torch::Tensor> params;
  for (auto& [k, t] : a.trainable()) params.push_back(t);
  torch::optim::Adam opt(params, torch::optim::AdamOptions(5e-2));
  a.model()->train();
  for (int i = 0; i < steps; ++i) {
    auto y = logits(a.model(), image_batch(2, seed + i));
    auto loss = (y - 1.0).pow(2).mean() + a.aux_loss();
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  a.model()->eval();
}

}  // namespace

TEST(Adapters, RegistryListsEveryMethod) {
  auto names = rsam::adapt::method_names();
  for (const char* m : {"lora", "gara", "moe_lora", "conv_lora", "ssf", "adapter", "bitfit", "decoder_only"})
    EXPECT_NE(std::find(names.begin(), names.end(), m), names.end()) << m;
  EXPECT_THROW(rsam::adapt::method_info("vera"), rsam::Error);
}

TEST(Adapters, IdentityAtInitialization) {
  auto images = image_batch(2, 7);
  torch::NoGradGuard ng;
  auto ref = logits(*std::make_unique<rsam::Sam>(base_model()), images);
  for (const auto& cfg : all_methods()) {
    AdaptedSam a(base_model(), cfg, 1);
    a.model()->eval();
    EXPECT_LE((logits(a.model(), images) - ref).abs().max().item<double>(), 1e-6) << cfg.dump();
    a.model()->train();  // gates are stochastic in training, but B = 0 still
    EXPECT_LE((logits(a.model(), images) - ref).abs().max().item<double>(), 1e-6) << cfg.dump();
  }
}

TEST(Adapters, OnlyAdapterTensorsChange) {
  for (auto cfg : all_methods()) {
    for (bool decoder : {false, true}) {
      cfg["train_decoder"] = decoder;
      AdaptedSam a(base_model(), cfg, 1);
      auto before = snapshot(*a.model());
      train_steps(a, 2, 11);
      std::set<std::string> trained;
      for (auto& [k, t] : a.trainable()) trained.insert(k);
      const std::string method = cfg["method"];
      int changed = 0;
      for (const auto& p : a.model()->named_parameters(true)) {
        const auto& k = p.key();
        const bool same = torch::equal(before[k], p.value());
        if (!trained.count(k)) {
          EXPECT_TRUE(same) << method << ": frozen " << k << " changed";
        } else {
          changed += !same;
          EXPECT_TRUE(decoder || method == "decoder_only" || k.rfind("mask_decoder.", 0) != 0) << k;
        }
      }
      EXPECT_GT(changed, 0) << method;
    }
  }
}

TEST(Gara, StochasticInTrainingDeterministicAtInference) {
  AdaptedSam a(base_model(), {{"method", "gara"}, {"r_low", 2}, {"r_high", 6}, {"gate_hidden", 16}}, 3);
  train_steps(a, 3, 5);  // B != 0 now, so gates matter
  auto images = image_batch(2, 9);
  torch::NoGradGuard ng;
  a.model()->eval();
  auto e1 = logits(a.model(), images), e2 = logits(a.model(), images);
  EXPECT_TRUE(torch::equal(e1, e2));
  a.model()->train();
  bool differs = false;
  for (int i = 0; i < 10 && !differs; ++i) differs = !torch::equal(logits(a.model(), images), e1);
  EXPECT_TRUE(differs);
}

TEST(Gara, GradientsReachEveryGate) {
  AdaptedSam a(base_model(), {{"method", "gara"}, {"r_low", 2}, {"r_high", 6}, {"gate_hidden", 16}}, 3);
  {
    torch::NoGradGuard ng;  // non-zero B so the gates influence the output
    for (auto& [k, t] : a.trainable())
      if (k.find(".B_") != std::string::npos) t.normal_(0, 0.1);
  }
  a.model()->train();
  auto loss = logits(a.model(), image_batch(4, 2)).pow(2).mean();
  loss.backward();
  int gates = 0;
  for (auto& [k, t] : a.trainable()) {
    if (k.find(".g_") == std::string::npos) continue;
    ++gates;
    ASSERT_TRUE(t.grad().defined()) << k;
    EXPECT_GT(t.grad().abs().sum().item<double>(), 0.0) << k;
  }
  EXPECT_EQ(gates, 2 /*blocks*/ * 3 /*q,k,v*/ * 3 /*gates*/ * 2 /*layers*/ * 2 /*w,b*/ + 2 * 3 * 2 * 2);
}

TEST(Gara, ExactlyOneSpacePerImageAndIntrospection) {
  AdaptedSam a(base_model(), {{"method", "gara"}, {"r_low", 2}, {"r_high", 6}, {"gate_hidden", 16}}, 3);
  torch::NoGradGuard ng;
  logits(a.model(), image_batch(3, 4));
  auto g = a.gates();
  ASSERT_EQ(g.size(), 2u);  // one qkv per block
  for (auto& [layer, imgs] : g.items()) {
    ASSERT_EQ(imgs.size(), 3u);
    for (auto& projs : imgs) {
      ASSERT_EQ(projs.size(), 3u);  // q, k, v
      for (auto& p : projs) {
        const bool high = p["space"] == "high";
        EXPECT_EQ(p["max_rank"], high ? 6 : 2);
        EXPECT_EQ(p["rank"], p["active"].size());
      }
    }
  }
}

// The folded per-image weight and the per-token low-rank path give the same
// outputs for a gated method with random (non-zero) adapter weights.
double fold_vs_lowrank(json cfg, uint64_t seed) {
  auto make = [&](const std::string& path) {
    cfg["inference_path"] = path;
    AdaptedSam a(base_model(), cfg, 3);
    torch::NoGradGuard ng;
    torch::manual_seed(seed);
    for (auto& [k, t] : a.trainable()) t.normal_(0, 0.2);
    a.model()->eval();
    return a;
  };
  auto fold = make("fold"), low = make("lowrank");
  auto images = image_batch(3, 8);
  torch::NoGradGuard ng;
  return (logits(fold.model(), images) - logits(low.model(), images)).abs().max().item<double>();
}

TEST(Gara, FoldedAndLowRankPathsAgree) {
  EXPECT_LE(fold_vs_lowrank({{"method", "gara"}, {"r_low", 2}, {"r_high", 6}, {"gate_hidden", 16}}, 99), 1e-5);
}

TEST(MoELora, FoldedAndLowRankPathsAgree) {
  EXPECT_LE(fold_vs_lowrank({{"method", "moe_lora"}, {"ranks", {2, 4}}, {"gate_hidden", 16}}, 98), 1e-5);
}

TEST(Lora, MergedEqualsUnmerged) {
  for (const char* method : {"lora", "ssf", "bitfit", "decoder_only"}) {
    AdaptedSam a(base_model(), {{"method", method}, {"rank", 4}}, 2);
    train_steps(a, 2, 3);
    auto images = image_batch(2, 6);
    torch::NoGradGuard ng;
    auto before = logits(a.model(), images);
    a.merge();
    EXPECT_TRUE(rsam::adapt::adaptable_layers(*a.model()).size() > 0);
    for (auto& [n, l] : rsam::adapt::adaptable_layers(*a.model())) EXPECT_FALSE(l->has_adapter()) << n;
    EXPECT_LE((logits(a.model(), images) - before).abs().max().item<double>(), 1e-5) << method;
  }
  AdaptedSam g(base_model(), {{"method", "gara"}, {"r_low", 2}, {"r_high", 4}, {"gate_hidden", 8}}, 2);
  EXPECT_THROW(g.merge(), rsam::Error);
}

TEST(Files, SaveLoadRoundTripsBitExactly) {
  for (const auto& cfg : all_methods()) {
    AdaptedSam a(base_model(), cfg, 4);
    train_steps(a, 1, 1);
    const auto path = tmp("rt.safetensors");
    a.save(path);
    SCOPED_TRACE(cfg.dump());
    auto b = AdaptedSam::load(base_model(), path);
    EXPECT_EQ(b.config(), a.config());
    auto ta = a.trainable(), tb = b.trainable();
    ASSERT_EQ(ta.size(), tb.size());
    for (size_t i = 0; i < ta.size(); ++i) {
      EXPECT_EQ(ta[i].first, tb[i].first);
      EXPECT_TRUE(torch::equal(ta[i].second, tb[i].second)) << ta[i].first;
    }
    auto images = image_batch(2, 3);
    torch::NoGradGuard ng;
    a.model()->eval();
    b.model()->eval();
    EXPECT_TRUE(torch::equal(logits(a.model(), images), logits(b.model(), images))) << cfg.dump();
    std::remove(path.c_str());
  }
}

TEST(Files, DifferentBaseIsAnError) {
  AdaptedSam a(base_model(0), {{"method", "lora"}, {"rank", 2}}, 1);
  const auto path = tmp("base.safetensors");
  a.save(path);
  try {
    AdaptedSam::load(base_model(1), path);
    FAIL() << "loaded onto another base";
  } catch (const rsam::Error& e) {
    EXPECT_NE(std::string(e.what()).find("different base"), std::string::npos) << e.what();
  }
  std::remove(path.c_str());
}

// `rsam convert --img-size` re-sizes a base; its adapter follows with the
// same tensors and the new base's fingerprint, and each file fits only its own base.
TEST(Files, RebasedAdapterFitsTheResizedBase) {
  const int big = tiny().img_size * 2;
  for (const auto& cfg : all_methods()) {
    SCOPED_TRACE(cfg.dump());
    AdaptedSam a(base_model(), cfg, 4);
    train_steps(a, 1, 1);
    const auto path = tmp("small.safetensors"), moved = tmp("big.safetensors");
    a.save(path);
    rsam::adapt::rebase_adapter(base_model(), rsam::resize_input(base_model(), big), path, moved);
    auto b = AdaptedSam::load(rsam::resize_input(base_model(), big), moved);
    auto ta = a.trainable(), tb = b.trainable();
    ASSERT_EQ(ta.size(), tb.size());
    for (size_t i = 0; i < ta.size(); ++i) {
      EXPECT_EQ(ta[i].first, tb[i].first);
      EXPECT_TRUE(torch::equal(ta[i].second, tb[i].second)) << ta[i].first;
    }
    EXPECT_THROW(AdaptedSam::load(rsam::resize_input(base_model(), big), path), rsam::Error);
    EXPECT_THROW(AdaptedSam::load(base_model(), moved), rsam::Error);
    // Rebasing from the wrong base is refused too.
    EXPECT_THROW(rsam::adapt::rebase_adapter(base_model(1), rsam::resize_input(base_model(1), big), path, moved),
                 rsam::Error);
    std::remove(path.c_str());
    std::remove(moved.c_str());
  }
}

TEST(Files, TargetsAndSplitAreHonoured) {
  AdaptedSam a(base_model(), {{"method", "lora"}, {"rank", 2}, {"targets", {"image_encoder.blocks.1.*"}}}, 1);
  std::set<std::string> layers;
  for (auto& [n, ad] : a.adapters()) layers.insert(n);
  EXPECT_EQ(layers, (std::set<std::string>{"image_encoder.blocks.1.attn.qkv", "image_encoder.blocks.1.attn.proj",
                                           "image_encoder.blocks.1.mlp.lin1", "image_encoder.blocks.1.mlp.lin2"}));
  // q, k, v separately: B holds three slices.
  for (auto& [k, t] : a.trainable()) {
    if (k == "image_encoder.blocks.1.attn.qkv.adapter.lora_B") {
      EXPECT_EQ(t.size(0), 3);
    }
  }
  EXPECT_THROW(AdaptedSam(base_model(), {{"method", "lora"}, {"targets", {"nothing.*"}}}, 1), rsam::Error);
  EXPECT_THROW(AdaptedSam(base_model(), {{"rank", 2}}, 1), rsam::Error);
}

TEST(Files, FingerprintIsStableAndIgnoresAdapters) {
  const auto a = rsam::adapt::base_fingerprint(*base_model(0));
  EXPECT_EQ(a, rsam::adapt::base_fingerprint(*base_model(0)));
  EXPECT_NE(a, rsam::adapt::base_fingerprint(*base_model(1)));
  AdaptedSam with(base_model(0), {{"method", "lora"}, {"rank", 2}}, 1);
  EXPECT_EQ(a, rsam::adapt::base_fingerprint(*with.model()));
}

// ---- strict configs (issue 37, item 16) -----------------------------------

namespace {

// The message of check_config's error, or "" when the config passes.
std::string config_error(const json& cfg) {
  try {
    rsam::adapt::check_config(cfg, "test.json");
  } catch (const rsam::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Config, EveryMethodsDefaultsAndTheTestConfigsPass) {
  for (const auto& m : rsam::adapt::method_names()) EXPECT_EQ(config_error({{"method", m}}), "") << m;
  for (const auto& cfg : all_methods()) EXPECT_EQ(config_error(cfg), "") << cfg.dump();
  // docs/adapters.md's example, an integral float and a split.
  EXPECT_EQ(config_error(json::parse(R"({"method": "gara", "targets": ["image_encoder.blocks.*.attn.qkv"],
    "split": "auto", "r_low": 16, "r_high": 256, "tau": 0.5, "gate_hidden": 128, "train_decoder": false})")),
            "");
  EXPECT_EQ(config_error({{"method", "lora"}, {"rank", 8.0}, {"split", 3}, {"alpha", 16}, {"dropout", 0.1}}), "");
  EXPECT_EQ(config_error({{"method", "gara"},
                          {"r_low", 8},
                          {"r_high", 8},
                          {"space_gate", false},
                          {"inference_path", "fold"},
                          {"scale", 0.0037},
                          {"gate_init", -1}}),
            "");
}

TEST(Config, AnUnknownKeyIsNamedWithTheAllowedOnes) {
  const auto e = config_error({{"method", "lora"}, {"rnak", 16}});
  EXPECT_NE(e.find("adapter config 'test.json': unknown key \"rnak\" for method lora"), std::string::npos) << e;
  EXPECT_NE(e.find("(allowed: alpha, dropout, method, rank, split, targets, train_decoder)"), std::string::npos) << e;
  // A key of another method is unknown too; so are layer keys of a method that wraps none.
  EXPECT_NE(config_error({{"method", "gara"}, {"rank", 8}}).find("unknown key \"rank\""), std::string::npos);
  EXPECT_NE(config_error({{"method", "bitfit"}, {"targets", {"x"}}}).find("unknown key \"targets\""),
            std::string::npos);
  EXPECT_NE(config_error({{"method", "conv_lora"}, {"split", 3}}).find("\"split\" does not apply"), std::string::npos);
  EXPECT_NE(config_error({{"method", "lorra"}}).find("unknown adapter method 'lorra'"), std::string::npos);
  EXPECT_NE(config_error({{"rank", 8}}).find("needs a \"method\""), std::string::npos);
}

TEST(Config, TypesAndRangesAreChecked) {
  auto expect = [](const json& cfg, const std::string& part) {
    const auto e = config_error(cfg);
    EXPECT_NE(e.find(part), std::string::npos) << cfg.dump() << " -> " << e;
  };
  expect({{"method", "lora"}, {"rank", 8.7}}, "\"rank\" must be an integer in 1..65536 (got 8.7)");
  expect({{"method", "lora"}, {"rank", 0}}, "\"rank\" must be an integer in 1..65536 (got 0)");
  expect({{"method", "lora"}, {"rank", "8"}}, "\"rank\" must be an integer");
  expect({{"method", "lora"}, {"dropout", 1.5}}, "\"dropout\" must be a finite number >= 0 and <= 1");
  expect({{"method", "lora"}, {"split", 2.5}}, "\"split\" must be \"auto\" or an integer");
  expect({{"method", "lora"}, {"split", "all"}}, "\"split\" must be \"auto\" or an integer");
  expect({{"method", "lora"}, {"targets", "image_encoder.*"}}, "\"targets\" must be a non-empty list");
  expect({{"method", "lora"}, {"train_decoder", 1}}, "\"train_decoder\" must be true or false");
  expect({{"method", "gara"}, {"r_low", 64}, {"r_high", 32}}, "\"r_low\" (64) must not exceed \"r_high\" (32)");
  expect({{"method", "gara"}, {"r_low", 300}}, "\"r_low\" (300) must not exceed \"r_high\" (256, the default)");
  expect({{"method", "gara"}, {"tau", 0}}, "\"tau\" must be a finite number > 0 (got 0)");
  expect({{"method", "gara"}, {"tau", -0.5}}, "\"tau\" must be a finite number > 0");
  expect({{"method", "gara"}, {"space_gate", "no"}}, "\"space_gate\" must be true or false");
  expect({{"method", "gara"}, {"inference_path", "fast"}}, "must be one of auto, fold, lowrank");
  expect({{"method", "moe_lora"}, {"ranks", {2, 4.5}}}, "\"ranks\" must be a non-empty list of integers in 1..65536");
  expect({{"method", "moe_lora"}, {"ranks", json::array()}}, "\"ranks\" must be a non-empty list");
  expect({{"method", "moe_lora"}, {"tau", 0}}, "\"tau\" must be a finite number > 0");
  expect({{"method", "conv_lora"}, {"experts", 0}}, "\"experts\" must be an integer in 1..65536");
  expect({{"method", "conv_lora"}, {"balance_weight", -1}}, "\"balance_weight\" must be a finite number >= 0");
  expect({{"method", "adapter"}, {"bottleneck", 1e9}}, "\"bottleneck\" must be an integer in 1..65536");
}

TEST(Config, LoadConfigChecksFilesAndNames) {
  const auto path = ::testing::TempDir() + "rsam_adapt_cfg_typo.json";
  {
    std::ofstream f(path);
    f << R"({"method": "lora", "rnak": 16})";
  }
  try {
    rsam::adapt::load_config(path);
    FAIL() << "a config with an unknown key was loaded";
  } catch (const rsam::Error& e) {
    EXPECT_NE(std::string(e.what()).find("adapter config '" + path + "': unknown key \"rnak\""), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(rsam::adapt::load_config("lorra"), rsam::Error);
  EXPECT_EQ(rsam::adapt::load_config("gara"), json({{"method", "gara"}}));
  std::remove(path.c_str());
}

TEST(Config, TheShippedAdapterConfigIsValid) {
  EXPECT_NO_THROW(rsam::adapt::load_config(RSAM_MODELS_DIR "/rsam-tiny-gara.json"));
}
