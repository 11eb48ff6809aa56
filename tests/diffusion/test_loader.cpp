// Loading Stable Diffusion folders: the GleSAM bundle, describe for
// `rsam info`, and the one-line errors of broken folders and files.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>

#include "diffusion/lora.h"
#include "diffusion/schedule.h"
#include "diffusion/sd.h"
#include "diffusion_test_util.h"
#include "error.h"

namespace rsam::diffusion {
namespace {

using testing::data;
using testing::npy;
using testing::error_of;


bool has(const std::string& s, const std::string& part) {
  if (s.find(part) != std::string::npos) return true;
  ADD_FAILURE() << "'" << s << "' lacks '" << part << "'";
  return false;
}

TEST(SdFolder, LoadsWhatGleSamUses) {
  auto sd = load_stable_diffusion(data("sd2"));
  EXPECT_EQ(sd.text_embedding.sizes(), (std::vector<int64_t>{1, 77, 16}));
  EXPECT_LE(testing::abs_max(sd.text_embedding, npy("sd2/io/clip_empty_out.npy")), 1e-5);
  EXPECT_EQ(sd.alphas_cumprod.scalar_type(), torch::kFloat64);
  EXPECT_EQ(sd.scheduler.prediction_type, "epsilon");
  torch::NoGradGuard ng;
  auto out = sd.unet(npy("sd2/io/unet_sample.npy"), torch::tensor(1, torch::kLong),
                     npy("sd2/io/unet_encoder_hidden_states.npy"));
  EXPECT_LE(testing::rel_max(out, npy("sd2/io/unet_out.npy")), 1e-4);
}

TEST(SdFolder, TorchSaveUNetLoadsLikeSafetensors) {
  // diffusion_pytorch_model.bin through rsam's restricted torch.save reader.
  const std::string sd = testing::copy_fixture("sd1");
  const std::string st = sd + "/unet/diffusion_pytorch_model.safetensors";
  io::save_pth(sd + "/unet/diffusion_pytorch_model.bin", io::load_safetensors(st).tensors);
  std::filesystem::remove(st);
  auto a = load_unet(sd + "/unet");
  auto b = load_unet(data("sd1/unet"));
  torch::NoGradGuard ng;
  auto x = npy("sd1/io/unet_sample.npy");
  auto t = npy("sd1/io/unet_timesteps.npy").to(torch::kLong);
  auto ehs = npy("sd1/io/unet_encoder_hidden_states.npy");
  EXPECT_TRUE(torch::equal(a(x, t, ehs), b(x, t, ehs)));
}

TEST(SdFolder, Describe) {
  const auto d = describe_sd_path(data("sd2"));
  EXPECT_EQ(d["kind"], "stable_diffusion");
  EXPECT_EQ(d["unet"]["dtype"], "F32");
  EXPECT_EQ(d["unet"]["config"]["attention_head_dim"], nlohmann::json({1, 2, 4}));
  EXPECT_GT(d["unet"]["parameters"].get<int64_t>(), 0);
  EXPECT_EQ(d["text_encoder"]["config"]["hidden_act"], "gelu");
  EXPECT_EQ(d["tokenizer"]["pad_token"], "!");
  EXPECT_EQ(d["scheduler"]["beta_schedule"], "scaled_linear");
  auto unet = load_unet(data("sd2/unet"));
  int64_t n = 0;
  for (const auto& p : unet->parameters()) n += p.numel();
  EXPECT_EQ(d["unet"]["parameters"].get<int64_t>(), n);
  // Files alone: an fp16 U-Net, a .bin text encoder, a LoRA.
  EXPECT_EQ(describe_sd_path(data("sd1/unet/diffusion_pytorch_model.safetensors"))["dtype"], "F16");
  EXPECT_EQ(describe_sd_path(data("sd1/text_encoder/pytorch_model.bin"))["kind"], "clip_text_encoder");
  const auto lora = describe_sd_path(data("sd1/lora/pytorch_lora_weights.safetensors"));
  EXPECT_EQ(lora["kind"], "unet_lora");
  EXPECT_EQ(lora["modules"], 81);
  EXPECT_EQ(describe_sd_path(data("sd1/unet"))["kind"], "unet");
  EXPECT_TRUE(is_sd_folder(data("sd1")));
  EXPECT_FALSE(is_sd_folder(data("sd1/unet")));
}

TEST(LoaderErrors, MissingFolderAndFiles) {
  has(error_of([] { load_stable_diffusion(data("no_such_model")); }), "no such folder");
  const std::string sd = testing::copy_fixture("sd1");
  std::filesystem::remove(sd + "/unet/diffusion_pytorch_model.safetensors");
  has(error_of([&] { load_unet(sd + "/unet"); }), "no weights file (looked for diffusion_pytorch_model.safetensors");
  std::filesystem::remove(sd + "/unet/config.json");
  has(error_of([&] { load_unet(sd + "/unet"); }), "config.json");
  has(error_of([&] { describe_sd_path(sd + "/tokenizer"); }), "not a Stable Diffusion folder");
  std::filesystem::remove(sd + "/scheduler/scheduler_config.json");
  has(error_of([&] { load_stable_diffusion(sd); }), "scheduler_config.json");
}

TEST(LoaderErrors, TruncatedWeights) {
  const std::string sd = testing::copy_fixture("sd2");
  for (const char* rel : {"/unet/diffusion_pytorch_model.safetensors", "/text_encoder/model.safetensors"}) {
    const std::string p = sd + rel;
    std::filesystem::resize_file(p, std::filesystem::file_size(p) - 100);
  }
  has(error_of([&] { load_unet(sd + "/unet"); }), "diffusion_pytorch_model.safetensors");
  has(error_of([&] { load_text_encoder(sd + "/text_encoder"); }), "model.safetensors");
  const std::string sd1 = testing::copy_fixture("sd1");
  const std::string bin = sd1 + "/text_encoder/pytorch_model.bin";
  std::filesystem::resize_file(bin, std::filesystem::file_size(bin) / 2);
  has(error_of([&] { load_text_encoder(sd1 + "/text_encoder"); }), "pytorch_model.bin");
}

TEST(LoaderErrors, MismatchedShapesNameTheFirstTensor) {
  // The sd1 U-Net's weights under the sd2 U-Net's config.
  const std::string sd = testing::copy_fixture("sd2");
  std::filesystem::copy_file(data("sd1/unet/diffusion_pytorch_model.safetensors"),
                             sd + "/unet/diffusion_pytorch_model.safetensors",
                             std::filesystem::copy_options::overwrite_existing);
  const auto m = error_of([&] { load_unet(sd + "/unet"); });
  has(m, "shape mismatch");
  has(m, "conv_in.weight (file [8, 4, 3, 3], model [4, 4, 3, 3])");
}

TEST(LoaderErrors, UnsupportedConfigValues) {
  const std::string sd = testing::copy_fixture("sd2");
  auto set = [&](const std::string& key, const nlohmann::json& value) {
    auto j = nlohmann::json::parse(read_text_file(data("sd2/unet/config.json")));
    j[key] = value;
    std::ofstream(sd + "/unet/config.json") << j.dump();
  };
  set("down_block_types", {"CrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D", "DownBlock2D"});
  has(error_of([&] { load_unet(sd + "/unet"); }), "names block type 'SimpleCrossAttnDownBlock2D'");
  set("mid_block_type", "UNetMidBlock2DSimpleCrossAttn");
  has(error_of([&] { load_unet(sd + "/unet"); }), "'mid_block_type'");
  set("addition_embed_type", "text_time");
  has(error_of([&] { load_unet(sd + "/unet"); }), "'addition_embed_type' is \"text_time\"; rsam supports only null");
  set("resnet_time_scale_shift", "scale_shift");
  has(error_of([&] { load_unet(sd + "/unet"); }), "'resnet_time_scale_shift'");
}

TEST(LoaderErrors, WrongInputsAreOneLineErrors) {
  auto unet = load_unet(data("sd2/unet"));
  torch::NoGradGuard ng;
  auto x = npy("sd2/io/unet_sample.npy");
  auto t = torch::tensor(1, torch::kLong);
  has(error_of([&] { unet(x, t, torch::zeros({1, 77, 13})); }), "cross_attention_dim is 12");
  has(error_of([&] { unet(x.narrow(1, 0, 3), t, torch::zeros({1, 77, 12})); }), "U-Net input must be [B, 4, H, W]");
  has(error_of([&] { unet(x, torch::tensor({1, 2, 3}), torch::zeros({1, 77, 12})); }), "timesteps");
}

}  // namespace
}  // namespace rsam::diffusion
