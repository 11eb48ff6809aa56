// The miniature's pieces (issue 40, docs/glesam.md): the U-Net prior's
// latents, loss and SD folder, and the "cre": false ablation's fresh in/out
// convolutions, on the fixture U-Net of tests/data/glesam.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "diffusion/lora.h"
#include "diffusion/schedule.h"
#include "diffusion/sd.h"
#include "diffusion_test_util.h"
#include "error.h"
#include "glesam/enhancer.h"
#include "glesam/prior.h"
#include "io/tensor_file.h"
#include "model/checkpoint.h"

namespace rsam::glesam {
namespace {

namespace fs = std::filesystem;
using diffusion::testing::error_of;
using diffusion::testing::scratch;
using torch::Tensor;

std::string data(const std::string& rel) { return std::string(RSAM_TEST_DATA) + "/glesam/" + rel; }

EnhancerOptions tiny_opts() {
  EnhancerOptions o;
  o.channels = 32;  // tiny_a's embedding width
  return o;
}

// A prior template (what `rsam train --glesam-stage prior --init` reads)
// made from the fixture SD folder's configs and text embedding.
std::string prior_template() {
  const std::string dir = scratch("prior_template");
  fs::create_directories(dir + "/unet");
  fs::create_directories(dir + "/scheduler");
  fs::copy_file(data("sd/unet/config.json"), dir + "/unet/config.json");
  fs::copy_file(data("sd/scheduler/scheduler_config.json"), dir + "/scheduler/scheduler_config.json");
  fs::copy_file(data("text_embedding.npy"), dir + "/text_embedding.npy");
  return dir;
}

TEST(PriorLatents, ChannelGroupsFollowCreTiling) {
  // Channel c = 4 k + j holds the value j + 10 k: group j's mean is j + 10 * mean(k).
  Tensor z = torch::zeros({2, 32, 3, 5});
  for (int64_t c = 0; c < 32; ++c) z.select(1, c).fill_(double(c % 4) + 10.0 * double(c / 4));
  const Tensor l = latents_from_embedding(z, 2.0);
  ASSERT_EQ(l.sizes(), (std::vector<int64_t>{2, 4, 3, 5}));
  for (int64_t j = 0; j < 4; ++j) EXPECT_FLOAT_EQ(l[1][j][2][4].item<float>(), float((j + 35.0) / 2.0)) << j;
  EXPECT_NE(error_of([] { latents_from_embedding(torch::zeros({1, 6, 2, 2})); }).find("multiple of 4"),
            std::string::npos);
  EXPECT_NE(error_of([] { latents_from_embedding(torch::zeros({1, 8, 2, 2}), 0); }).find("scale"),
            std::string::npos);
}

TEST(PriorTraining, StepsLowerTheLossOnAFixedBatchAndMoveEveryLayer) {
  const auto tpl = read_prior_template(prior_template());
  diffusion::UNet2DConditionModel unet(diffusion::UNetConfig::from_json(tpl.unet_config_text));
  torch::manual_seed(1);
  init_unet(unet);
  const auto sched = diffusion::SchedulerConfig::from_json(tpl.scheduler_text);
  const Tensor abar = diffusion::alphas_cumprod(sched);
  const Tensor text = torch::randn({1, 77, 16});
  const Tensor x0 = torch::randn({2, 4, 8, 8}), noise = torch::randn({2, 4, 8, 8});
  const Tensor t = torch::tensor({3, 700}, torch::kLong);
  // Norms start at 1 / 0, as torch builds them.
  EXPECT_TRUE(torch::all(unet->conv_norm_out->weight == 1).item<bool>());
  std::map<std::string, Tensor> before;
  for (const auto& p : unet->named_parameters()) before[p.key()] = p.value().detach().clone();
  std::vector<Tensor> params = unet->parameters();
  for (auto& p : params) p.set_requires_grad(true);
  torch::optim::Adam opt(params, torch::optim::AdamOptions(1e-3));
  double first = 0, last = 0;
  for (int s = 0; s < 6; ++s) {
    opt.zero_grad();
    const Tensor loss = prior_loss(unet, abar, text, x0, t, noise);
    (s == 0 ? first : last) = loss.item<double>();
    loss.backward();
    opt.step();
  }
  EXPECT_LT(last, first * 0.95);
  int moved = 0;
  for (const auto& p : unet->named_parameters()) moved += !torch::equal(p.value(), before[p.key()]);
  EXPECT_EQ(moved, int(before.size()));
  EXPECT_NE(error_of([] { read_prior_template("/nonexistent-prior"); }).find("unet/config.json"), std::string::npos);
}

TEST(PriorFolder, LoadsAsAnEnhancerWithCre) {
  const auto tpl = read_prior_template(prior_template());
  diffusion::UNet2DConditionModel unet(diffusion::UNetConfig::from_json(tpl.unet_config_text));
  torch::manual_seed(2);
  init_unet(unet);
  const std::string dir = scratch("prior_folder");
  write_sd_folder(dir, unet, tpl);
  for (const char* f : {"unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                        "scheduler/scheduler_config.json", "text_embedding.npy"})
    EXPECT_TRUE(fs::is_regular_file(dir + "/" + f)) << f;
  std::ofstream(dir + "/enhancer.json") << R"({"method": "glesam", "sd": ".", "text_embedding": "text_embedding.npy"})";
  const auto e = Enhancer::load(dir + "/enhancer.json", tiny_opts());
  const Tensor wi = e.unet()->conv_in->weight;
  ASSERT_EQ(wi.size(1), 32);
  for (int64_t c = 0; c < 32; ++c) EXPECT_TRUE(torch::equal(wi.select(1, c), unet->conv_in->weight.select(1, c % 4)));
  const Tensor z = torch::randn({1, 32, 8, 8});
  EXPECT_TRUE(torch::isfinite(e.enhance(z)).all().item<bool>());
}

std::string cre_false_json(const std::string& dir, const std::string& extra = "") {
  const std::string p = dir + "/cre_false.json";
  std::ofstream(p) << R"({"method": "glesam", "sd": ")" << data("sd") << R"(", "cre": false)" << extra << "}";
  return p;
}

TEST(CreFalse, FreshConvsSaveReloadAndDifferFromCre) {
  const std::string dir = scratch("cre_false");
  auto opts = tiny_opts();
  // Inference needs the trained convolutions.
  EXPECT_NE(error_of([&] { Enhancer::load(cre_false_json(dir), opts); }).find("in_out"), std::string::npos);
  opts.fresh_in_out = true;
  torch::manual_seed(5);
  const auto fresh = Enhancer::load(cre_false_json(dir), opts);
  const auto cre = Enhancer::load(data("enhancer.json"), tiny_opts());
  const Tensor wi = fresh.unet()->conv_in->weight, wo = fresh.unet()->conv_out->weight;
  ASSERT_EQ(wi.sizes(), cre.unet()->conv_in->weight.sizes());
  ASSERT_EQ(wo.sizes(), cre.unet()->conv_out->weight.sizes());
  // Not a tiling: input channels 0 and 4 differ.
  EXPECT_FALSE(torch::equal(wi.select(1, 0), wi.select(1, 4)));
  const double bound = 1.0 / std::sqrt(32.0 * 9.0);  // kaiming-uniform a = sqrt(5): 1 / sqrt(fan_in)
  EXPECT_LE(wi.abs().max().item<double>(), bound + 1e-6);
  // Saved and reloaded: the same convolutions and the same enhancement.
  const std::string file = dir + "/in_out.safetensors";
  io::save_safetensors(file, in_out_tensors(fresh.unet()));
  const auto sd = io::load_safetensors(file).tensors;
  ASSERT_EQ(sd.size(), 4u);
  EXPECT_EQ(sd[0].first, "conv_in.weight");
  const auto again = Enhancer::load(cre_false_json(dir, R"(, "in_out": "in_out.safetensors")"), tiny_opts());
  EXPECT_TRUE(torch::equal(again.unet()->conv_in->weight, wi));
  EXPECT_TRUE(torch::equal(again.unet()->conv_out->bias, fresh.unet()->conv_out->bias));
  const Tensor z = torch::randn({1, 32, 8, 8});
  EXPECT_TRUE(torch::equal(again.enhance(z), fresh.enhance(z)));
  EXPECT_GT((again.enhance(z) - cre.enhance(z)).abs().max().item<double>(), 1e-4);
  // The JSON round trip keeps both keys.
  const auto j = again.config().to_json(dir);
  EXPECT_EQ(j["cre"], false);
  EXPECT_EQ(j["in_out"], "in_out.safetensors");
  EXPECT_FALSE(EnhancerConfig::parse({{"method", "glesam"}, {"sd", "s"}}, "", "j").to_json().contains("cre"));
}

TEST(CreFalse, BadValuesAreOneLineErrors) {
  using J = nlohmann::json;
  auto err = [](const J& j) { return error_of([&] { EnhancerConfig::parse(j, "/d", "E.json"); }); };
  EXPECT_NE(err({{"method", "glesam"}, {"sd", "s"}, {"cre", "no"}}).find("\"cre\" must be true or false"),
            std::string::npos);
  EXPECT_NE(err({{"method", "glesam"}, {"sd", "s"}, {"cre", 0}}).find("\"cre\""), std::string::npos);
  EXPECT_NE(err({{"method", "glesam"}, {"sd", "s"}, {"in_out", "x.safetensors"}}).find("needs \"cre\": false"),
            std::string::npos);
  EXPECT_NE(err({{"method", "glesam"}, {"sd", "s"}, {"cre", false}, {"in_out", ""}}).find("in_out"),
            std::string::npos);
  const std::string dir = scratch("cre_false_bad");
  EXPECT_NE(error_of([&] {
              Enhancer::load(cre_false_json(dir, R"(, "in_out": "missing.safetensors")"), tiny_opts());
            }).find("missing.safetensors"),
            std::string::npos);
  // A file with the wrong width is refused naming the tensor.
  auto u = diffusion::load_unet(data("sd/unet"));
  fresh_in_out(u, 16);
  io::save_safetensors(dir + "/narrow.safetensors", in_out_tensors(u));
  EXPECT_NE(error_of([&] {
              Enhancer::load(cre_false_json(dir, R"(, "in_out": "narrow.safetensors")"), tiny_opts());
            }).find("conv_in.weight"),
            std::string::npos);
  auto v = diffusion::load_unet(data("sd/unet"));
  EXPECT_NE(error_of([&] { fresh_in_out(v, 30); }).find("multiple of 4"), std::string::npos);
}

}  // namespace
}  // namespace rsam::glesam
