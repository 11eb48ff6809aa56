// U-Net LoRA: GleSAM's released file layout, merging, and rsam's own form.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "diffusion/lora.h"
#include "diffusion/sd.h"
#include "diffusion_test_util.h"
#include "error.h"
#include "model/checkpoint.h"

namespace rsam::diffusion {
namespace {

using testing::abs_max;
using testing::data;
using testing::npy;
using testing::rel_max;

const std::string kGleSamFile = "sd1/lora/pytorch_lora_weights.safetensors";

torch::Tensor run(UNet2DConditionModel& unet) {
  torch::NoGradGuard ng;
  return unet(npy("sd1/io/unet_sample.npy"), npy("sd1/io/unet_timesteps.npy").to(torch::kLong),
              npy("sd1/io/unet_encoder_hidden_states.npy"));
}


// The fixture file is laid out as GleSAM's pytorch_lora_weights.safetensors:
// "unet." prefix, lora.down/lora.up on to_q/to_k/to_v/to_out.0 and
// lora_A/lora_B on every other target, no alpha. The reference output is
// diffusers' U-Net with W += B A merged in Python.
TEST(UNetLora, GleSamReleaseLayoutLoadsAndMatches) {
  auto w = read_lora(data(kGleSamFile));
  EXPECT_EQ(w.modules.size(), 81u);
  EXPECT_EQ(w.rank(), 2);
  EXPECT_FALSE(w.alpha.has_value());
  auto unet = load_unet(data("sd1/unet"));
  const auto base = run(unet);
  EXPECT_EQ(load_lora(*unet, data(kGleSamFile)), 81);
  // Every GleSAM target of this U-Net got its factors, convs and linears alike.
  EXPECT_EQ(lora_target_modules(*unet, glesam_lora_targets()).size(), 81u);
  const auto out = run(unet);
  const auto ref = npy("sd1/io/lora_out.npy");
  const double err = rel_max(out, ref);
  std::printf("[ lora ] U-Net+LoRA max |diff| / max |ref| = %.3g (LoRA moves the output by %.3g)\n", err,
              rel_max(base, ref));
  EXPECT_LE(err, 1e-4);
  EXPECT_GT(rel_max(base, ref), 1e-2);
}

TEST(UNetLora, MergedEqualsUnmerged) {
  auto unet = load_unet(data("sd1/unet"));
  load_lora(*unet, data(kGleSamFile), 4.0);  // alpha 4 at rank 2: scale 2
  const auto unmerged = run(unet);
  EXPECT_EQ(merge_lora(*unet), 81);
  EXPECT_EQ(lora_parameter_count(*unet), 0);
  const auto merged = run(unet);
  const double err = abs_max(merged, unmerged) / unmerged.abs().max().item<double>();
  std::printf("[ lora ] merged vs unmerged max |diff| / max = %.3g\n", err);
  EXPECT_LE(err, 1e-5);
}

TEST(UNetLora, RoundTripIsBitExact) {
  auto unet = load_unet(data("sd1/unet"));
  load_lora(*unet, data(kGleSamFile), 3.0);
  const std::string path = testing::scratch("rt") + "/lora.safetensors";
  save_lora(*unet, path);
  const auto src = read_lora(data(kGleSamFile));
  const auto back = read_lora(path);
  ASSERT_EQ(back.modules.size(), src.modules.size());
  EXPECT_EQ(*back.alpha, 3.0);
  for (const auto& [name, ab] : src.modules) {
    ASSERT_TRUE(back.modules.count(name)) << name;
    EXPECT_TRUE(torch::equal(back.modules.at(name).first, ab.first)) << name;
    EXPECT_TRUE(torch::equal(back.modules.at(name).second, ab.second)) << name;
  }
  // The written form: unet.<module>.lora_A/lora_B.weight only.
  for (const auto& [k, t] : io::load_safetensors(path).tensors)
    EXPECT_TRUE(k.rfind("unet.", 0) == 0 && (k.find(".lora_A.weight") != std::string::npos ||
                                               k.find(".lora_B.weight") != std::string::npos))
        << k;
  auto again = load_unet(data("sd1/unet"));
  load_lora(*again, path);  // alpha from the metadata
  EXPECT_TRUE(torch::equal(run(again), run(unet)));
}

TEST(UNetLora, PeftPrefixAndAdapterNameForms) {
  const auto src = io::load_safetensors(data(kGleSamFile));
  io::StateDict renamed;
  for (const auto& [k, t] : src.tensors) {
    std::string n = "base_model.model." + k.substr(5);
    for (auto [from, to] : {std::pair<std::string, std::string>{".lora.down.", ".lora_A.default."},
                            {".lora.up.", ".lora_B.default."}, {".lora_A.weight", ".lora_A.default.weight"},
                            {".lora_B.weight", ".lora_B.default.weight"}}) {
      const auto at = n.find(from);
      if (at != std::string::npos) n.replace(at, from.size(), to);
    }
    renamed.emplace_back(n, t);
  }
  const std::string path = testing::scratch("peft") + "/adapter_model.safetensors";
  io::save_safetensors(path, renamed);
  auto a = load_unet(data("sd1/unet"));
  auto b = load_unet(data("sd1/unet"));
  load_lora(*a, data(kGleSamFile));
  load_lora(*b, path);
  EXPECT_TRUE(torch::equal(run(a), run(b)));
}

TEST(UNetLora, FreshAdaptersLeaveTheFunctionUnchanged) {
  auto unet = load_unet(data("sd2/unet"));
  torch::NoGradGuard ng;
  auto x = npy("sd2/io/unet_sample.npy");
  auto t = npy("sd2/io/unet_timesteps.npy").to(torch::kLong);
  auto ehs = npy("sd2/io/unet_encoder_hidden_states.npy");
  const auto before = unet(x, t, ehs);
  const int64_t n = add_lora(*unet, LoraSpec{4, 4, glesam_lora_targets()}, 7);
  EXPECT_GT(n, 0);
  EXPECT_TRUE(torch::equal(unet(x, t, ehs), before));
  // SD-2 style: proj_in is a Linear, so A is [r, in].
  auto p = unet->named_parameters(true);
  EXPECT_EQ(p["mid_block.attentions.0.proj_in.lora_A.weight"].dim(), 2);
  // Downsampler: A keeps the 3x3 stride-2 kernel, B is 1x1.
  EXPECT_EQ(p["down_blocks.0.downsamplers.0.conv.lora_A.weight"].sizes(), (std::vector<int64_t>{4, 4, 3, 3}));
  EXPECT_EQ(p["down_blocks.0.downsamplers.0.conv.lora_B.weight"].sizes(), (std::vector<int64_t>{4, 4, 1, 1}));
}

TEST(UNetLora, BadFilesAreOneLineErrors) {
  const auto src = io::load_safetensors(data(kGleSamFile));
  const std::string dir = testing::scratch("bad");
  auto write = [&](const std::string& name, const std::function<bool(std::string&, io::TensorData&)>& edit) {
    io::StateDict sd;
    for (auto [k, t] : src.tensors)
      if (edit(k, t)) sd.emplace_back(k, t);
    io::save_safetensors(dir + "/" + name, sd);
    return dir + "/" + name;
  };
  auto unet = load_unet(data("sd1/unet"));
  const auto no_b = write("no_b.safetensors", [](std::string& k, io::TensorData&) {
    return k != "unet.conv_in.lora_B.weight";
  });
  EXPECT_NE(testing::error_of([&] { load_lora(*unet, no_b); }).find("'conv_in' has only its A factor"), std::string::npos);
  const auto wrong_module = write("module.safetensors", [](std::string& k, io::TensorData&) {
    if (k.rfind("unet.conv_in.", 0) == 0) k.replace(5, 7, "conv_zz");
    return true;
  });
  EXPECT_NE(testing::error_of([&] { load_lora(*unet, wrong_module); }).find("'conv_zz' is not a Linear or Conv2d"),
            std::string::npos);
  const auto wrong_shape = write("shape.safetensors", [](std::string& k, io::TensorData& t) {
    if (k == "unet.conv_out.lora_B.weight") {
      t.shape[0] += 1;
      t.data.resize(t.data.size() / (t.shape[0] - 1) * t.shape[0]);
    }
    return true;
  });
  EXPECT_NE(testing::error_of([&] { load_lora(*unet, wrong_shape); }).find("LoRA B of 'conv_out' has shape"),
            std::string::npos);
  const auto stray = write("stray.safetensors", [](std::string& k, io::TensorData&) {
    if (k == "unet.conv_in.lora_A.weight") k = "unet.conv_in.alpha";
    return true;
  });
  EXPECT_NE(testing::error_of([&] { load_lora(*unet, stray); }).find("is not a LoRA factor"), std::string::npos);
}

}  // namespace
}  // namespace rsam::diffusion
