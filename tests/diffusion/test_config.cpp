// The torch-free readers of a Stable Diffusion folder's JSON files: real
// configs, refusals that name the key, and a property test: random and
// mutated JSON gives an rsam::Error or a config that validates, never a
// crash or another exception.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "diffusion/config.h"
#include "error.h"

namespace rsam::diffusion {
namespace {

using nlohmann::json;

std::string data(const std::string& rel) { return std::string(RSAM_DIFFUSION_DATA) + "/" + rel; }

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(UNetConfig, RealStableDiffusionConfigs) {
  const auto sd21 = UNetConfig::from_file(data("configs/sd21_base_unet.json"));
  EXPECT_EQ(sd21.attention_head_dim, (std::vector<int64_t>{5, 10, 20, 20}));
  EXPECT_TRUE(sd21.use_linear_projection);
  EXPECT_EQ(sd21.cross_attention_dim, (std::vector<int64_t>(4, 1024)));
  EXPECT_EQ(sd21.time_embed_dim(), 1280);
  const auto sd15 = UNetConfig::from_file(data("configs/sd15_unet.json"));
  EXPECT_EQ(sd15.attention_head_dim, (std::vector<int64_t>(4, 8)));
  EXPECT_FALSE(sd15.use_linear_projection);
  EXPECT_EQ(sd15.layers_per_block, (std::vector<int64_t>(4, 2)));
  // to_json reads back to the same config.
  const auto again = UNetConfig::from_json(sd21.to_json());
  EXPECT_EQ(again.to_json(), sd21.to_json());
}

TEST(UNetConfig, RefusalsNameTheKey) {
  const auto base = json::parse(read_text_file(data("configs/sd15_unet.json")));
  auto with = [&](const std::string& key, const json& v) {
    json j = base;
    j[key] = v;
    return error_of([&] { UNetConfig::from_json(j.dump(), "unet/config.json"); });
  };
  EXPECT_EQ(with("num_attention_heads", 8), "unet/config.json: 'num_attention_heads' is 8; rsam supports only null");
  EXPECT_EQ(with("attention_type", "gated"),
            "unet/config.json: 'attention_type' is \"gated\"; rsam supports only \"default\"");
  EXPECT_EQ(with("only_cross_attention", true),
            "unet/config.json: 'only_cross_attention' must be false (rsam has no cross-only attention)");
  EXPECT_EQ(with("up_block_types", {"UpBlock2D", "AttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"}),
            "unet/config.json: 'up_block_types' names block type 'AttnUpBlock2D'; rsam supports "
            "CrossAttnUpBlock2D and UpBlock2D");
  EXPECT_EQ(with("_class_name", "ControlNetModel"),
            "unet/config.json: '_class_name' is \"ControlNetModel\"; rsam reads UNet2DConditionModel");
  EXPECT_NE(with("norm_num_groups", 30).find("not a multiple of norm_num_groups 30"), std::string::npos);
  EXPECT_NE(with("attention_head_dim", {8, 8}).find("'attention_head_dim' has 2 entries for 4 blocks"),
            std::string::npos);
  EXPECT_NE(with("act_fn", "tanh").find("activation 'tanh'"), std::string::npos);
  // Keys diffusers does not know are ignored (as diffusers does), and listed.
  json j = base;
  j["some_future_key"] = 3;
  EXPECT_EQ(UNetConfig::from_json(j.dump()).ignored_keys, std::vector<std::string>{"some_future_key"});
  // "UNetRes" prefixes are dropped as get_down_block does.
  j = base;
  j["down_block_types"][3] = "UNetResDownBlock2D";
  EXPECT_EQ(UNetConfig::from_json(j.dump()).down_block_types[3], "DownBlock2D");
}

TEST(SchedulerConfig, RealAndRefused) {
  const auto s = SchedulerConfig::from_file(data("configs/sd21_base_scheduler.json"));
  EXPECT_EQ(s.beta_schedule, "scaled_linear");
  EXPECT_EQ(s.class_name, "PNDMScheduler");
  EXPECT_NE(error_of([] { SchedulerConfig::from_json(R"({"beta_schedule": "sigmoid"})"); }).find("'sigmoid'"),
            std::string::npos);
  EXPECT_NE(error_of([] { SchedulerConfig::from_json(R"({"rescale_betas_zero_snr": true})"); })
                .find("rescale_betas_zero_snr"),
            std::string::npos);
}

TEST(ClipTokenFiles, FromJson) {
  const std::string vocab = R"({"!": 0, "<|startoftext|>": 49406, "<|endoftext|>": 49407})";
  const std::string tc = R"({"model_max_length": 77, "bos_token": {"content": "<|startoftext|>"},
                             "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"})";
  auto t = ClipTokens::from_json(tc, R"({"pad_token": "!"})", vocab);
  EXPECT_EQ(t.pad, 0);
  EXPECT_EQ(t.bos, 49406);
  t = ClipTokens::from_json(tc, "", vocab);
  EXPECT_EQ(t.pad, 49407);
  const auto ids = t.encode("");
  ASSERT_EQ(ids.size(), 77u);
  EXPECT_EQ(ids[0], 49406);
  EXPECT_EQ(ids[1], 49407);
  EXPECT_EQ(ids[76], 49407);
  EXPECT_NE(error_of([&] { ClipTokens::from_json(tc, R"({"pad_token": "?"})", vocab); })
                .find("pad_token '?' is not in vocab.json"),
            std::string::npos);
  EXPECT_NE(error_of([&] { ClipTokens::from_json(R"({"model_max_length": 77})", "", vocab); }).find("no bos_token"),
            std::string::npos);
  // Newer files list added tokens by id in tokenizer_config.json.
  const std::string added = R"({"model_max_length": 8, "bos_token": "<s>", "eos_token": "<|endoftext|>",
      "pad_token": "<p>", "added_tokens_decoder": {"5": {"content": 3}, "7": {"content": "<p>"}, "9": {"content": "<s>"}}})";
  t = ClipTokens::from_json(added, "", vocab);
  EXPECT_EQ(t.pad, 7);
  EXPECT_EQ(t.bos, 9);
  EXPECT_EQ(t.encode("").size(), 8u);
}

// ---- property test -----------------------------------------------------------

json random_value(std::mt19937& rng, int depth = 0) {
  switch (rng() % (depth > 2 ? 6 : 8)) {
    case 0: return nullptr;
    case 1: return bool(rng() % 2);
    case 2: return int64_t(rng() % 4000) - 500;
    case 3: return std::uniform_real_distribution<double>(-1e3, 1e3)(rng);
    case 4: return std::vector<std::string>{"silu", "CrossAttnDownBlock2D", "UpBlock2D", "", "x"}[rng() % 5];
    case 5: return (rng() % 2) ? json(uint64_t(-1) - rng() % 3) : json(int64_t(1) << (rng() % 63));
    case 6: {
      json a = json::array();
      for (int i = int(rng() % 6); i > 0; --i) a.push_back(random_value(rng, depth + 1));
      return a;
    }
    default: {
      json o = json::object();
      for (int i = int(rng() % 4); i > 0; --i) o["k" + std::to_string(rng() % 5)] = random_value(rng, depth + 1);
      return o;
    }
  }
}

// Replaces, removes or reshapes one value somewhere in j.
void mutate(json& j, std::mt19937& rng) {
  json* node = &j;
  while ((node->is_object() || node->is_array()) && !node->empty() && rng() % 3) {
    auto it = node->begin();
    std::advance(it, rng() % node->size());
    node = &*it;
  }
  switch (rng() % 4) {
    case 0: *node = random_value(rng); break;
    case 1:
      if (node->is_array() && !node->empty()) node->erase(node->size() - 1);
      else *node = nullptr;
      break;
    case 2:
      if (node->is_array()) node->push_back(random_value(rng));
      else *node = json::array({*node, *node});
      break;
    default:
      // Scale an integer (wrapping, no signed overflow): limits and zero.
      if (node->is_number_integer()) *node = int64_t(uint64_t(node->get<int64_t>()) * (rng() % 5) - 1);
      else *node = random_value(rng);
  }
}

template <class Parse, class Check>
void property(const std::vector<std::string>& seeds, Parse parse, Check check, int rounds) {
  std::mt19937 rng(39);
  int accepted = 0, refused = 0;
  for (int i = 0; i < rounds; ++i) {
    std::string text;
    if (i % 5 == 4) {
      // Raw byte damage: the JSON parser's error paths.
      text = seeds[rng() % seeds.size()];
      for (int k = int(rng() % 4); k >= 0 && !text.empty(); --k) text[rng() % text.size()] = char(rng() % 256);
      if (rng() % 2) text.resize(rng() % (text.size() + 1));
    } else {
      json j = json::parse(seeds[rng() % seeds.size()]);
      for (int k = int(rng() % 3); k >= 0; --k) mutate(j, rng);
      text = j.dump();
    }
    try {
      check(parse(text));
      ++accepted;
    } catch (const Error&) {
      ++refused;
    }
  }
  EXPECT_GT(accepted, 0);
  EXPECT_GT(refused, 0);
}

TEST(ConfigProperty, MutatedUNetConfigsAreRefusedOrValid) {
  std::vector<std::string> seeds;
  for (const char* f : {"configs/sd21_base_unet.json", "configs/sd15_unet.json", "sd2/unet/config.json",
                        "odd/unet/config.json"})
    seeds.push_back(read_text_file(data(f)));
  property(
      seeds, [](const std::string& t) { return UNetConfig::from_json(t); },
      [](const UNetConfig& c) {
        c.validate();  // whatever was accepted builds a consistent network
        EXPECT_EQ(UNetConfig::from_json(c.to_json()).to_json(), c.to_json());
      },
      4000);
}

TEST(ConfigProperty, MutatedTextEncoderSchedulerAndTokenizerFiles) {
  std::vector<std::string> te{read_text_file(data("configs/sd21_text_encoder.json")),
                              read_text_file(data("configs/sd15_text_encoder.json"))};
  property(te, [](const std::string& t) { return ClipTextConfig::from_json(t); },
           [](const ClipTextConfig& c) { c.validate(); }, 2000);
  std::vector<std::string> sc{read_text_file(data("configs/sd21_base_scheduler.json")),
                              read_text_file(data("sd1/scheduler/scheduler_config.json"))};
  property(sc, [](const std::string& t) { return SchedulerConfig::from_json(t); },
           [](const SchedulerConfig& c) { c.validate(); }, 2000);
  const std::string vocab = read_text_file(data("sd2/tokenizer/vocab.json"));
  std::vector<std::string> tk{read_text_file(data("sd1/tokenizer/tokenizer_config.json")),
                              read_text_file(data("sd2/tokenizer/tokenizer_config.json")),
                              R"({"model_max_length": 77, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                                  "pad_token": "<p>", "added_tokens_decoder": {"40": {"content": "<p>"}}})"};
  property(tk, [&](const std::string& t) { return ClipTokens::from_json(t, "", vocab); },
           [](const ClipTokens& c) {
             const auto ids = c.encode("");
             EXPECT_EQ(int64_t(ids.size()), c.max_length);
           },
           2000);
}

}  // namespace
}  // namespace rsam::diffusion
