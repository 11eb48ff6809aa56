// Holds rsam's U-Net to diffusers 0.27's UNet2DConditionModel: each fixture
// folder's io/unet_out.npy is diffusers' output for the same weights and
// inputs (scripts/make_diffusion_fixtures.py).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "diffusion/lora.h"
#include "diffusion/sd.h"
#include "diffusion_test_util.h"
#include "model/checkpoint.h"

namespace rsam::diffusion {
namespace {

using testing::data;
using testing::npy;
using testing::rel_max;

torch::Tensor run_fixture(const std::string& c, UNet2DConditionModel& unet) {
  torch::NoGradGuard ng;
  return unet(npy(c + "/io/unet_sample.npy"), npy(c + "/io/unet_timesteps.npy").to(torch::kLong),
              npy(c + "/io/unet_encoder_hidden_states.npy"));
}

class UNetParity : public ::testing::TestWithParam<std::string> {};

// sd2: linear projections, per-block heads [1, 2, 4], upcast_attention.
// sd1: 1x1-conv projections, one head count, fp16 file, sin-first time
//      embedding with freq_shift 1, batch 2 with two timesteps.
// odd: per-block lists, two transformer layers, padding-0 downsamplers, a
//      mid-block scale, gelu, centred input, a 6x10 latent (explicit upsample
//      sizes).
TEST_P(UNetParity, MatchesDiffusers) {
  const std::string c = GetParam();
  auto unet = load_unet(data(c + "/unet"));
  const auto out = run_fixture(c, unet);
  const auto ref = npy(c + "/io/unet_out.npy");
  ASSERT_EQ(out.sizes(), ref.sizes());
  const double err = rel_max(out, ref);
  RecordProperty("rel_max_diff", std::to_string(err));
  std::printf("[ %s ] U-Net max |diff| / max |ref| = %.3g\n", c.c_str(), err);
  EXPECT_LE(err, 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, UNetParity, ::testing::Values("sd2", "sd1", "odd"));

TEST(UNet, ParameterNamesAreDiffusersKeys) {
  auto unet = load_unet(data("sd2/unet"));
  auto params = unet->named_parameters(true);
  EXPECT_TRUE(params.contains("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"));
  EXPECT_TRUE(params.contains("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.bias"));
  EXPECT_FALSE(params.contains("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.bias"));
  EXPECT_TRUE(params.contains("down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight"));
  EXPECT_TRUE(params.contains("down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2.weight"));
  EXPECT_TRUE(params.contains("mid_block.attentions.0.proj_in.weight"));
  EXPECT_TRUE(params.contains("up_blocks.0.upsamplers.0.conv.weight"));
  EXPECT_TRUE(params.contains("up_blocks.1.resnets.0.conv_shortcut.weight"));
  // GEGLU: net.0.proj gives twice the feed-forward's inner width (4 x dim).
  const int64_t dim = params["down_blocks.1.attentions.0.transformer_blocks.0.norm1.weight"].size(0);
  EXPECT_EQ(params["down_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj.weight"].size(0), 8 * dim);
  // SD-2 style: linear projections are 2-D.
  EXPECT_EQ(params["mid_block.attentions.0.proj_in.weight"].dim(), 2);
  auto sd1 = load_unet(data("sd1/unet"));
  EXPECT_EQ(sd1->named_parameters(true)["mid_block.attentions.0.proj_in.weight"].dim(), 4);
}

TEST(UNet, HeadsPerBlockAsDiffusersReadsThem) {
  auto unet = load_unet(data("sd2/unet"));  // attention_head_dim [1, 2, 4], channels [4, 8, 8]
  auto heads = [&](const std::string& block) {
    auto m = unet->named_modules()[block + ".transformer_blocks.0.attn1"];
    return m->as<AttentionImpl>()->heads;
  };
  EXPECT_EQ(heads("down_blocks.0.attentions.0"), 1);
  EXPECT_EQ(heads("down_blocks.1.attentions.0"), 2);
  EXPECT_EQ(heads("mid_block.attentions.0"), 4);    // the last entry
  EXPECT_EQ(heads("up_blocks.1.attentions.0"), 2);  // the list reversed
  EXPECT_EQ(heads("up_blocks.2.attentions.0"), 1);
}

TEST(UNet, OneTextEmbeddingServesTheBatch) {
  auto unet = load_unet(data("sd1/unet"));
  torch::NoGradGuard ng;
  auto x = npy("sd1/io/unet_sample.npy");
  auto ehs = npy("sd1/io/unet_encoder_hidden_states.npy").narrow(0, 0, 1);
  auto t = torch::tensor({5, 5}, torch::kLong);
  auto both = unet(x, t, ehs);
  auto first = unet(x.narrow(0, 0, 1), torch::tensor(5, torch::kLong), ehs);
  EXPECT_LE(testing::abs_max(both.narrow(0, 0, 1), first), 1e-5);
}

TEST(UNet, ChunkedAttentionEqualsOneShot) {
  // A map larger than one chunk (4096 tokens at 8 heads) against the same
  // attention computed as one matrix.
  torch::manual_seed(0);
  Attention attn(16, 16, 8, 2, false);
  init_random(*attn, 1);
  torch::NoGradGuard ng;
  auto x = torch::randn({1, 4096, 16});
  auto got = attn(x);
  auto q = attn->to_q(x).reshape({1, 4096, 8, 2}).permute({0, 2, 1, 3});
  auto k = attn->to_k(x).reshape({1, 4096, 8, 2}).permute({0, 2, 1, 3});
  auto v = attn->to_v(x).reshape({1, 4096, 8, 2}).permute({0, 2, 1, 3});
  auto p = (torch::matmul(q, k.transpose(-1, -2)) * attn->scale).softmax(-1);
  auto ref = attn->to_out[0]->as<Linear>()->forward(torch::matmul(p, v).permute({0, 2, 1, 3}).reshape({1, 4096, 16}));
  EXPECT_LE(testing::abs_max(got, ref), 1e-5);
}

TEST(UNet, Bf16AutocastRunsCloseToFp32) {
  auto unet = load_unet(data("sd2/unet"));
  torch::NoGradGuard ng;
  auto x = npy("sd2/io/unet_sample.npy");
  auto t = npy("sd2/io/unet_timesteps.npy").to(torch::kLong);
  auto ehs = npy("sd2/io/unet_encoder_hidden_states.npy");
  auto ref = unet(x, t, ehs);
  torch::Tensor got;
  {
    Bf16Autocast bf16(torch::kCPU);
    got = unet(x, t, ehs);
  }
  const double err = rel_max(got.to(torch::kFloat32), ref);
  std::printf("[ bf16 ] U-Net max |diff| / max |ref| = %.3g\n", err);
  EXPECT_TRUE(torch::isfinite(got).all().item<bool>());
  // bf16 keeps 8 mantissa bits; through this random U-Net that is 1-3% of
  // the output's scale (a dtype mistake would be of order 1).
  EXPECT_LE(err, 5e-2);
  // The text encoder too (its norms and softmax stay fp32).
  auto enc = load_text_encoder(data("sd2/text_encoder"));
  auto ids = npy("sd2/io/clip_ids.npy").to(torch::kLong);
  torch::Tensor emb;
  {
    Bf16Autocast bf16(torch::kCPU);
    emb = enc(ids);
  }
  const double clip_err = rel_max(emb.to(torch::kFloat32), npy("sd2/io/clip_out.npy"));
  std::printf("[ bf16 ] CLIP max |diff| / max |ref| = %.3g\n", clip_err);
  EXPECT_LE(clip_err, 2e-2);
}

// The real SD-2.1-base and SD-1.5 configs build the published networks:
// parameter counts of diffusers' UNet2DConditionModel for them, and the 280
// modules GleSAM's LoRA target list wraps (glesam-code.md). Weights are
// allocated but never touched, so this costs no memory.
TEST(UNet, RealConfigsHaveThePublishedSizes) {
  struct Case {
    const char* config;
    int64_t params, lora_params;
  };
  for (const Case& c : {Case{"configs/sd21_base_unet.json", 865910724, 8497984},
                        Case{"configs/sd15_unet.json", 859520964, 8432448}}) {
    UNet2DConditionModel unet(UNetConfig::from_file(data(c.config)));
    EXPECT_EQ(parameter_count(*unet), c.params) << c.config;
    const auto targets = lora_target_modules(*unet, glesam_lora_targets());
    EXPECT_EQ(targets.size(), 280u) << c.config;
    EXPECT_EQ(add_lora(*unet, LoraSpec{8, 8, glesam_lora_targets()}), 280);
    EXPECT_EQ(lora_parameter_count(*unet), c.lora_params) << c.config;
  }
  // GleSAM's U-Net is CRE-widened (conv_in/conv_out at 256 channels): its
  // rank-8 LoRA then has 8,518,144 parameters, 34,072,576 bytes in fp32,
  // which with a ~77 KB header is the released GleSAM-H file's 34,149,184.
  auto cfg = UNetConfig::from_file(data("configs/sd21_base_unet.json"));
  cfg.in_channels = cfg.out_channels = 256;
  UNet2DConditionModel cre(cfg);
  add_lora(*cre, LoraSpec{8, 8, glesam_lora_targets()});
  EXPECT_EQ(lora_parameter_count(*cre), 8518144);
}

}  // namespace
}  // namespace rsam::diffusion
