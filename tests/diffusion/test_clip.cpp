// Holds rsam's CLIP text encoder to transformers' CLIPTextModel and the
// empty-prompt tokens to what CLIPTokenizer(padding="max_length") gives.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>

#include "diffusion/sd.h"
#include "diffusion/tokenizer.h"
#include "diffusion_test_util.h"
#include "error.h"

namespace rsam::diffusion {
namespace {

using testing::abs_max;
using testing::data;
using testing::npy;

class ClipParity : public ::testing::TestWithParam<std::string> {};

// sd2: gelu, model.safetensors; sd1: quick_gelu, pytorch_model.bin (zip
// torch.save, read by rsam's restricted reader). Both store the int64
// position_ids buffer.
TEST_P(ClipParity, MatchesTransformers) {
  const std::string c = GetParam();
  auto enc = load_text_encoder(data(c + "/text_encoder"));
  torch::NoGradGuard ng;
  const auto out = enc(npy(c + "/io/clip_ids.npy").to(torch::kLong));
  const double err = abs_max(out, npy(c + "/io/clip_out.npy"));
  std::printf("[ %s ] CLIP max |diff| = %.3g\n", c.c_str(), err);
  RecordProperty("abs_max_diff", std::to_string(err));
  EXPECT_LE(err, 1e-5);
}

TEST_P(ClipParity, EmptyPromptEmbedding) {
  const std::string c = GetParam();
  const auto tokens = ClipTokens::from_folder(data(c + "/tokenizer"));
  const auto ids = tokens.encode("");
  const auto ref_ids = npy(c + "/io/clip_empty_ids.npy").to(torch::kLong);
  EXPECT_TRUE(torch::equal(torch::tensor(ids, torch::kLong).unsqueeze(0), ref_ids));
  const auto emb = encode_prompt(data(c));
  ASSERT_EQ(emb.sizes(), (std::vector<int64_t>{1, 77, 16}));
  const double err = abs_max(emb, npy(c + "/io/clip_empty_out.npy"));
  std::printf("[ %s ] empty-prompt embedding max |diff| = %.3g\n", c.c_str(), err);
  EXPECT_LE(err, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ClipParity, ::testing::Values("sd2", "sd1"));

TEST(ClipTokens, PadIdComesFromTheTokenizerFiles) {
  // sd2: tokenizer_config says <|endoftext|>, special_tokens_map says "!"
  // (the map wins, as in SD-2.x); sd1: both say <|endoftext|> (AddedToken form).
  const auto sd2 = ClipTokens::from_folder(data("sd2/tokenizer"));
  EXPECT_EQ(sd2.pad_token, "!");
  EXPECT_EQ(sd2.pad, 0);
  EXPECT_EQ(sd2.bos, 38);
  EXPECT_EQ(sd2.eos, 39);
  const auto sd1 = ClipTokens::from_folder(data("sd1/tokenizer"));
  EXPECT_EQ(sd1.pad, sd1.eos);
  EXPECT_EQ(sd1.max_length, 77);
}

TEST(ClipTokens, WithoutSpecialTokensMapTheConfigDecides) {
  const std::string tok = testing::copy_fixture("sd2/tokenizer");
  std::filesystem::remove(tok + "/special_tokens_map.json");
  EXPECT_EQ(ClipTokens::from_folder(tok).pad, 39);
}

TEST(ClipTokens, OnlyTheEmptyPrompt) {
  const auto t = ClipTokens::from_folder(data("sd2/tokenizer"));
  try {
    t.encode("a photo of a cat");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("only the empty prompt"), std::string::npos) << e.what();
  }
}

// Text goes through ClipTokenizer into the same encoder; the U-Net's
// conditioning follows SdLoadOptions::prompt.
TEST(ClipTokens, TextPromptsAreTokenizedAndEncoded) {
  const std::string text = "Hello! a photo";
  const auto ids = ClipTokenizer::from_folder(data("sd2/tokenizer")).encode(text);
  auto enc = load_text_encoder(data("sd2/text_encoder"));
  torch::NoGradGuard ng;
  const auto ref = enc(torch::tensor(ids, torch::kLong).unsqueeze(0));
  const auto emb = encode_prompt(data("sd2"), text);
  EXPECT_TRUE(torch::equal(emb, ref));
  EXPECT_FALSE(torch::allclose(emb, encode_prompt(data("sd2"))));
  SdLoadOptions o;
  o.prompt = text;
  EXPECT_TRUE(torch::equal(load_stable_diffusion(data("sd2"), o).text_embedding, emb));
}

TEST(Clip, FilesWithoutPositionIdsUseArange) {
  // transformers >= 4.31 writes no position_ids; the result must not change.
  const std::string dir = testing::copy_fixture("sd2/text_encoder");
  auto sd = read_weights(dir + "/model.safetensors");
  io::StateDict kept;
  for (auto& [k, t] : sd)
    if (k != "text_model.embeddings.position_ids") kept.emplace_back(k, t);
  io::save_safetensors(dir + "/model.safetensors", kept);
  auto enc = load_text_encoder(dir);
  torch::NoGradGuard ng;
  EXPECT_LE(abs_max(enc(npy("sd2/io/clip_ids.npy").to(torch::kLong)), npy("sd2/io/clip_out.npy")), 1e-5);
}

TEST(Clip, RealConfigsBuild) {
  const auto sd21 = ClipTextConfig::from_file(data("configs/sd21_text_encoder.json"));
  EXPECT_EQ(sd21.num_hidden_layers, 23);
  EXPECT_EQ(sd21.hidden_act, "gelu");
  const auto sd15 = ClipTextConfig::from_file(data("configs/sd15_text_encoder.json"));
  EXPECT_EQ(sd15.hidden_size, 768);
  EXPECT_EQ(sd15.hidden_act, "quick_gelu");
  ClipTextModel m(sd15);  // uninitialized weights: shapes only
  int64_t n = 0;
  for (const auto& p : m->parameters()) n += p.numel();
  EXPECT_EQ(n, 123060480);  // CLIP ViT-L/14's text tower
}

}  // namespace
}  // namespace rsam::diffusion
