// GleSAM's enhancer (issue 40) against the reference enhancement made by
// scripts/make_glesam_fixtures.py (diffusers 0.27's U-Net, CRE as GleSAM's
// code does it, the LoRA merged, x0 in float64): tests/data/glesam.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <random>

#include "diffusion/lora.h"
#include "diffusion_test_util.h"
#include "diffusion/sd.h"
#include "error.h"
#include "glesam/enhancer.h"
#include "io/npy.h"
#include "io/tensor_file.h"
#include "model/checkpoint.h"
#include "model/predictor.h"

namespace rsam::glesam {
namespace {

namespace fs = std::filesystem;
using torch::Tensor;

std::string data(const std::string& rel) { return std::string(RSAM_TEST_DATA) + "/glesam/" + rel; }
std::string sam_path(const std::string& name) { return std::string(RSAM_TEST_DATA) + "/sam/" + name; }

Tensor npy(const std::string& path) {
  auto a = io::load_npy(path);
  return torch::from_blob(a.data.data(), a.shape, torch::kFloat32).clone();
}

// The diffusion tests' one-line-error check and scratch folders.
using diffusion::testing::error_of;
using diffusion::testing::scratch;

void write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

EnhancerOptions tiny_opts() {
  EnhancerOptions o;
  o.channels = 32;  // tiny_a's embedding width
  return o;
}

// max |a - b| / max |b|
double rel_max(const Tensor& a, const Tensor& b) { return ((a - b).abs().max() / b.abs().max()).item<double>(); }

struct Case {
  const char* name;
  double gamma;
  int64_t t;
};

TEST(EnhancerParity, WholeEnhancementMatchesTheReference) {
  const Tensor z = npy(data("io/z_low.npy"));
  for (const Case c : {Case{"g5_t1", 5, 1}, Case{"g3_t999", 3, 999}, Case{"g1_t500", 1, 500}}) {
    auto cfg = EnhancerConfig::from_file(data("enhancer.json"));
    cfg.gamma = c.gamma;
    cfg.timestep = c.t;
    const auto e = Enhancer::load(cfg, tiny_opts());
    const Tensor ref = npy(data(std::string("io/z_high_") + c.name + ".npy"));
    const Tensor out = e.enhance(z);
    ASSERT_EQ(out.sizes(), ref.sizes());
    EXPECT_EQ(out.scalar_type(), torch::kFloat32);
    // The U-Net's share of z_H is small at t = 1 (sqrt(1 - abar_1) = 0.04):
    // measure the error against what the enhancement changes, not only
    // against z_H.
    const double change = (ref - z).abs().max().item<double>();
    const double err = (out - ref).abs().max().item<double>();
    EXPECT_LT(err, 1e-4 * change) << c.name << ": error " << err << ", change " << change;
    EXPECT_LT(rel_max(out, ref), 1e-5) << c.name;
  }
}

TEST(EnhancerParity, CreAloneWithoutLora) {
  auto cfg = EnhancerConfig::from_file(data("enhancer.json"));
  cfg.lora.clear();
  const auto e = Enhancer::load(cfg, tiny_opts());
  const Tensor z = npy(data("io/z_low.npy")), ref = npy(data("io/z_high_nolora_g5_t1.npy"));
  const Tensor out = e.enhance(z);
  EXPECT_LT((out - ref).abs().max().item<double>(), 1e-4 * (ref - z).abs().max().item<double>());
  // The LoRA changes the result (so the parity above exercises it).
  EXPECT_GT((npy(data("io/z_high_g5_t1.npy")) - ref).abs().max().item<double>(), 1e-3);
}

TEST(EnhancerParity, Bf16AutocastStaysClose) {
  const auto e = Enhancer::load(data("enhancer.json"), tiny_opts());
  const Tensor z = npy(data("io/z_low.npy"));
  const Tensor f32 = e.enhance(z), b16 = e.enhance(z, /*bf16=*/true);
  EXPECT_EQ(b16.scalar_type(), torch::kFloat32);
  // Compared on the U-Net's contribution (z_H - z_L / sqrt(abar)).
  const double change = (f32 - z).abs().max().item<double>();
  EXPECT_LT((b16 - f32).abs().max().item<double>(), 0.05 * change);
  EXPECT_GT((b16 - f32).abs().max().item<double>(), 0.0);  // bf16 really ran
}

TEST(EnhancerParity, PredictX0CarriesGradientsToTheLoraOnly) {
  const auto e = Enhancer::load(data("enhancer.json"), tiny_opts());
  const Tensor z = npy(data("io/z_low.npy"));
  const Tensor x0 = e.predict_x0(z * e.gamma());
  EXPECT_LT(rel_max(x0 / e.gamma(), npy(data("io/z_high_g5_t1.npy"))), 1e-5);
  // Frozen as loaded: a trainer turns the LoRA factors on itself.
  for (const auto& p : e.unet()->parameters()) EXPECT_FALSE(p.requires_grad());
}

// ---- CRE --------------------------------------------------------------------

TEST(Cre, ShapesValuesAndFunction) {
  auto base = diffusion::load_unet(data("sd/unet"));
  auto wide = diffusion::load_unet(data("sd/unet"));
  cre_widen(wide, 32);
  EXPECT_EQ(wide->config.in_channels, 32);
  EXPECT_EQ(wide->config.out_channels, 32);
  const Tensor wi = wide->conv_in->weight, bi = base->conv_in->weight;
  ASSERT_EQ(wi.sizes(), (std::vector<int64_t>{bi.size(0), 32, 3, 3}));
  for (int64_t c = 0; c < 32; ++c) EXPECT_TRUE(torch::equal(wi.select(1, c), bi.select(1, c % 4))) << c;
  EXPECT_TRUE(torch::equal(wide->conv_in->bias, base->conv_in->bias));
  const Tensor wo = wide->conv_out->weight, bo = base->conv_out->weight;
  ASSERT_EQ(wo.sizes(), (std::vector<int64_t>{32, bo.size(1), 3, 3}));
  for (int64_t j = 0; j < 32; ++j) {
    EXPECT_TRUE(torch::equal(wo[j], bo[j % 4])) << j;
    EXPECT_EQ(wide->conv_out->bias[j].item<float>(), base->conv_out->bias[j % 4].item<float>());
  }
  EXPECT_FALSE(wi.requires_grad());
  EXPECT_FALSE(wo.requires_grad());
  EXPECT_EQ(wide->named_parameters().size(), base->named_parameters().size());  // replaced, not added

  // No rescaling: conv_in sums the 8 channel groups, conv_out copies output
  // j % 4. So the widened U-Net on a 4-channel input tiled and divided by 8
  // is the pretrained U-Net, tiled.
  torch::manual_seed(3);
  const Tensor x = torch::randn({1, 4, 8, 8}), t = torch::tensor({7}), c = torch::randn({1, 77, 16});
  torch::NoGradGuard ng;
  const Tensor y4 = base->forward(x, t, c);
  const Tensor y32 = wide->forward(x.repeat({1, 8, 1, 1}) / 8, t, c);
  EXPECT_LT(rel_max(y32, y4.repeat({1, 8, 1, 1})), 1e-5);
  // Without the division the input is 8 times larger: no hidden rescale.
  const Tensor y32x8 = wide->forward(x.repeat({1, 8, 1, 1}), t, c);
  EXPECT_LT(rel_max(y32x8, base->forward(8 * x, t, c).repeat({1, 8, 1, 1})), 1e-5);
}

TEST(Cre, SamWidthByDefaultAndRefusals) {
  auto u = diffusion::load_unet(data("sd/unet"));
  cre_widen(u);
  EXPECT_EQ(u->conv_in->weight.size(1), kSamChannels);
  EXPECT_EQ(u->conv_out->weight.size(0), kSamChannels);
  EXPECT_NE(error_of([&] { cre_widen(u, 512); }).find("4-channel"), std::string::npos);  // twice
  auto v = diffusion::load_unet(data("sd/unet"));
  EXPECT_NE(error_of([&] { cre_widen(v, 30); }).find("multiple of 4"), std::string::npos);
  EXPECT_NE(error_of([&] { cre_widen(v, 0); }).find("multiple of 4"), std::string::npos);
  diffusion::add_lora(*v, {});
  EXPECT_NE(error_of([&] { cre_widen(v, 8); }).find("before LoRA"), std::string::npos);
}

// ---- the JSON ----------------------------------------------------------------

TEST(EnhancerJson, PathsAreRelativeToTheFile) {
  const auto c = EnhancerConfig::from_file(data("enhancer.json"));
  EXPECT_EQ(fs::path(c.sd), fs::path(data("sd")).lexically_normal());
  EXPECT_EQ(fs::path(c.lora), fs::path(data("lora/pytorch_lora_weights.safetensors")).lexically_normal());
  EXPECT_EQ(c.gamma, 5);
  EXPECT_EQ(c.timestep, 1);
  // Round trip through to_json relative to the same folder.
  const auto j = c.to_json(fs::path(data("")).lexically_normal().string());
  EXPECT_EQ(j["sd"], "sd");
  EXPECT_EQ(j["decoder"], "ft-decoder.pth");
  // Defaults: gamma 5 (the paper's), timestep 1 (the released scripts').
  const auto d = EnhancerConfig::parse({{"method", "glesam"}, {"sd", "/x"}}, "", "j");
  EXPECT_EQ(d.gamma, 5);
  EXPECT_EQ(d.timestep, 1);
  EXPECT_TRUE(d.lora.empty());
  EXPECT_TRUE(is_enhancer_path("a/E.json"));
  EXPECT_FALSE(is_enhancer_path("a/A.safetensors"));
}

TEST(EnhancerJson, RefusalsAreOneLine) {
  using J = nlohmann::json;
  auto err = [](const J& j) { return error_of([&] { EnhancerConfig::parse(j, "/d", "E.json"); }); };
  const std::string unknown = err({{"method", "glesam"}, {"sd", "s"}, {"gama", 5}});
  EXPECT_NE(unknown.find("unknown key \"gama\""), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("allowed: method, sd, lora, decoder, text_embedding, gamma, timestep"), std::string::npos);
  EXPECT_NE(err({{"method", "gara"}, {"sd", "s"}}).find("glesam"), std::string::npos);
  EXPECT_NE(err({{"method", "glesam"}}).find("\"sd\""), std::string::npos);
  EXPECT_NE(err({{"method", "glesam"}, {"sd", 3}}).find("\"sd\""), std::string::npos);
  EXPECT_NE(err({{"method", "glesam"}, {"sd", "s"}, {"gamma", 0}}).find("gamma"), std::string::npos);
  EXPECT_NE(err({{"method", "glesam"}, {"sd", "s"}, {"gamma", "5"}}).find("gamma"), std::string::npos);
  EXPECT_NE(err({{"method", "glesam"}, {"sd", "s"}, {"timestep", 1.5}}).find("integer"), std::string::npos);
  EXPECT_NE(err({{"method", "glesam"}, {"sd", "s"}, {"timestep", -1}}).find("timestep"), std::string::npos);
  EXPECT_NE(err(J::array()).find("object"), std::string::npos);
  const std::string dir = scratch("json");
  write(dir + "/bad.json", "{\"method\": \"glesam\",");
  EXPECT_NE(error_of([&] { EnhancerConfig::from_file(dir + "/bad.json"); }).find("not valid JSON"),
            std::string::npos);
  EXPECT_NE(error_of([&] { EnhancerConfig::from_file(dir + "/none.json"); }).find("none.json"), std::string::npos);
}

// "prompt" conditions the U-Net on text through the folder's tokenizer; the
// empty prompt (the default) stays GleSAM's condition.
TEST(EnhancerJson, PromptConditionsTheUNetAndRoundTrips) {
  using J = nlohmann::json;
  auto err = [](const J& j) { return error_of([&] { EnhancerConfig::parse(j, "/d", "E.json"); }); };
  EXPECT_NE(err({{"method", "glesam"}, {"sd", "s"}, {"prompt", 3}}).find("\"prompt\""), std::string::npos);
  EXPECT_NE(err({{"method", "glesam"}, {"sd", "s"}, {"prompt", "a"}, {"text_embedding", "e.npy"}}).find("not both"),
            std::string::npos);
  EXPECT_NE(err({{"method", "glesam"}, {"sd", "s"}, {"prompt", std::string(5000, 'a')}}).find("too long"),
            std::string::npos);
  auto cfg = EnhancerConfig::from_file(data("enhancer.json"));
  const Tensor empty = Enhancer::load(cfg, tiny_opts()).text_embedding();
  cfg.prompt = "a low light photo";
  EXPECT_EQ(cfg.to_json("")["prompt"], "a low light photo");
  const Tensor text = Enhancer::load(cfg, tiny_opts()).text_embedding();
  ASSERT_EQ(text.sizes(), empty.sizes());
  EXPECT_FALSE(torch::equal(text, empty));
  cfg.prompt = "";
  EXPECT_TRUE(torch::equal(Enhancer::load(cfg, tiny_opts()).text_embedding(), empty));
  EXPECT_FALSE(cfg.to_json("").contains("prompt"));
}

TEST(EnhancerJson, TimestepOutOfRangeAndMissingFilesAtLoad) {
  auto cfg = EnhancerConfig::from_file(data("enhancer.json"));
  cfg.timestep = 1000;  // the scheduler has 0..999
  EXPECT_NE(error_of([&] { Enhancer::load(cfg, tiny_opts()); }).find("out of range"), std::string::npos);
  cfg.timestep = 999;
  EXPECT_NO_THROW(Enhancer::load(cfg, tiny_opts()));
  cfg.timestep = 0;  // abar_0 < 1: still a valid one-step estimate
  EXPECT_NO_THROW(Enhancer::load(cfg, tiny_opts()));
  auto missing = EnhancerConfig::from_file(data("enhancer.json"));
  missing.lora = data("lora/none.safetensors");
  EXPECT_NE(error_of([&] { Enhancer::load(missing, tiny_opts()); }).find("none.safetensors"), std::string::npos);
  missing = EnhancerConfig::from_file(data("enhancer.json"));
  missing.sd = data("nosd");
  EXPECT_NE(error_of([&] { Enhancer::load(missing, tiny_opts()); }).find("nosd"), std::string::npos);
}

TEST(EnhancerJson, TextEmbeddingFileReplacesTheTextEncoder) {
  const std::string dir = scratch("text");
  fs::create_directories(dir + "/sd");
  fs::copy(data("sd/unet"), dir + "/sd/unet", fs::copy_options::recursive);
  fs::copy(data("sd/scheduler"), dir + "/sd/scheduler", fs::copy_options::recursive);  // no CLIP
  fs::copy_file(data("text_embedding.npy"), dir + "/E.npy");
  fs::copy_file(data("lora/pytorch_lora_weights.safetensors"), dir + "/lora.safetensors");
  write(dir + "/e.json",
        R"({"method": "glesam", "sd": "sd", "lora": "lora.safetensors", "text_embedding": "E.npy"})");
  const auto e = Enhancer::load(dir + "/e.json", tiny_opts());
  EXPECT_FALSE(e.has_decoder());
  const Tensor z = npy(data("io/z_low.npy"));
  EXPECT_LT(rel_max(e.enhance(z), npy(data("io/z_high_g5_t1.npy"))), 1e-5);
  // A text embedding of the wrong width, or shape, or with NaN.
  const std::vector<float> v(77 * 12, 0.5f);
  io::save_npy(dir + "/E.npy", v.data(), {1, 77, 12});
  EXPECT_NE(error_of([&] { Enhancer::load(dir + "/e.json", tiny_opts()); }).find("cross_attention_dim"),
            std::string::npos);
  io::save_npy(dir + "/E.npy", v.data(), {77 * 12});
  EXPECT_NE(error_of([&] { Enhancer::load(dir + "/e.json", tiny_opts()); }).find("[1, S, D]"), std::string::npos);
  std::vector<float> nan(77 * 16, 0.f);
  nan[5] = std::nanf("");
  io::save_npy(dir + "/E.npy", nan.data(), {1, 77, 16});
  EXPECT_NE(error_of([&] { Enhancer::load(dir + "/e.json", tiny_opts()); }).find("NaN"), std::string::npos);
}

// ---- LoRA / SD mismatch --------------------------------------------------------

TEST(EnhancerLora, MismatchNamesTheFirstTensor) {
  auto cfg = EnhancerConfig::from_file(data("enhancer.json"));
  // The released LoRA belongs to the widened U-Net: on another width its
  // conv_in factor is the first that does not fit.
  auto o = tiny_opts();
  o.channels = 48;
  const std::string m = error_of([&] { Enhancer::load(cfg, o); });
  EXPECT_NE(m.find("conv_in"), std::string::npos) << m;
  EXPECT_NE(m.find("pytorch_lora_weights.safetensors"), std::string::npos) << m;
  // A LoRA of another U-Net (the SD-1.x-style fixture of issue 39).
  cfg.lora = std::string(RSAM_TEST_DATA) + "/diffusion/sd1/lora/pytorch_lora_weights.safetensors";
  const std::string m2 = error_of([&] { Enhancer::load(cfg, tiny_opts()); });
  EXPECT_NE(m2.find("conv_in"), std::string::npos) << m2;
}

// ---- decoder files -------------------------------------------------------------

Tensor decoder_param(Sam& m, const std::string& name) {
  for (const auto& p : m->mask_decoder->named_parameters())
    if (p.key() == name) return p.value().detach().clone();
  return {};
}

TEST(EnhancerDecoder, ReleasedFormsLoadAlike) {
  const std::string dir = scratch("decoder");
  const io::StateDict bare = read_decoder(data("ft-decoder.pth"));  // torch.save of a bare state dict
  ASSERT_FALSE(bare.empty());
  EXPECT_EQ(bare.front().first.rfind("mask_decoder.", 0), std::string::npos);
  io::StateDict prefixed;
  for (const auto& [k, v] : bare) prefixed.emplace_back("mask_decoder." + k, v);
  io::save_safetensors(dir + "/prefixed.safetensors", prefixed);
  io::save_pth(dir + "/prefixed.pth", prefixed);
  // A whole SAM state dict (what GleSAM's stage 2 saves as epoch_last.pth).
  io::StateDict whole;
  for (auto& [k, v] : io::load_pth(sam_path("tiny_a.pth")))
    if (k.rfind("mask_decoder.", 0) != 0) whole.emplace_back(k, v);
  for (const auto& kv : prefixed) whole.push_back(kv);
  io::save_pth(dir + "/whole.pth", whole);
  io::save_safetensors(dir + "/bare.safetensors", bare);

  auto base = load_sam(sam_path("tiny_a.pth")).model;
  const std::string probe = "output_upscaling.0.weight";
  const Tensor original = decoder_param(base, probe);
  Tensor first;
  for (const std::string& f : {data("ft-decoder.pth"), dir + "/prefixed.safetensors", dir + "/prefixed.pth",
                              dir + "/whole.pth", dir + "/bare.safetensors"}) {
    auto m = load_sam(sam_path("tiny_a.pth")).model;
    load_decoder(m, read_decoder(f), f);
    const Tensor w = decoder_param(m, probe);
    EXPECT_FALSE(torch::equal(w, original)) << f;
    if (!first.defined()) first = w;
    EXPECT_TRUE(torch::equal(w, first)) << f;
  }
  // Through the enhancer: read with the JSON, applied on request.
  const auto e = Enhancer::load(data("enhancer.json"), tiny_opts());
  ASSERT_TRUE(e.has_decoder());
  auto m = load_sam(sam_path("tiny_a.pth")).model;
  e.apply_decoder(m);
  EXPECT_TRUE(torch::equal(decoder_param(m, probe), first));
}

TEST(EnhancerDecoder, WrongDecoderIsOneLineError) {
  const std::string dir = scratch("baddec");
  // tiny_b's decoder (width 48) for tiny_a (32): names a tensor.
  auto m = load_sam(sam_path("tiny_a.pth")).model;
  const std::string msg = error_of([&] { load_decoder(m, read_decoder(sam_path("tiny_b.pth")), "tiny_b.pth"); });
  EXPECT_NE(msg.find("tiny_b.pth"), std::string::npos) << msg;
  // A file of something else entirely (the LoRA file).
  const std::string lora = data("lora/pytorch_lora_weights.safetensors");
  EXPECT_FALSE(error_of([&] { load_decoder(m, read_decoder(lora), lora); }).empty());
  write(dir + "/junk.pth", "not a checkpoint");
  EXPECT_FALSE(error_of([&] { read_decoder(dir + "/junk.pth"); }).empty());
  EXPECT_NE(error_of([&] { read_decoder(dir + "/none.pth"); }).find("none.pth"), std::string::npos);
}

// ---- predictor -----------------------------------------------------------------

Image8 test_image() {
  Image8 img(48, 40, 3);
  std::mt19937 rng(5);
  for (auto& v : img.data) v = uint8_t(rng() & 0xff);
  return img;
}

TEST(EnhancerPredictor, AttachEnhancesEveryEncodedView) {
  auto model = load_sam(sam_path("tiny_a.pth")).model;
  auto e = std::make_shared<Enhancer>(Enhancer::load(data("enhancer.json"), tiny_opts()));
  SamPredictor plain(model);
  plain.set_image(test_image());
  SamPredictor pred(model);
  attach(pred, e);
  pred.set_image(test_image());
  EXPECT_TRUE(torch::allclose(pred.embedding(), e->enhance(plain.embedding()), 1e-6, 1e-6));
  EXPECT_FALSE(torch::allclose(pred.embedding(), plain.embedding(), 1e-4, 1e-4));
  Prompt p;
  p.points = {{20.f, 18.f}};
  p.labels = {1};
  EXPECT_EQ(pred.predict(p).masks.size(0), 3);
  // Detached again: the plain embedding.
  attach(pred, nullptr);
  pred.set_image(test_image());
  EXPECT_TRUE(torch::equal(pred.embedding(), plain.embedding()));
  // Flip: both views enhanced (the decode averages them).
  SamPredictor flipped(model, Precision::FP32, /*flip=*/true);
  attach(flipped, e);
  flipped.set_image(test_image());
  EXPECT_TRUE(torch::allclose(flipped.embedding(), pred.embedding().defined() ? e->enhance(plain.embedding())
                                                                               : Tensor(), 1e-6, 1e-6));
  // An enhancer widened for another embedding width.
  auto cfg = EnhancerConfig::from_file(data("enhancer.json"));
  cfg.lora.clear();
  auto o48 = tiny_opts();
  o48.channels = 48;
  auto e48 = std::make_shared<Enhancer>(Enhancer::load(cfg, o48));
  EXPECT_NE(error_of([&] { attach(pred, e48); }).find("widened to 48"), std::string::npos);
  EXPECT_NE(error_of([&] { e->enhance(torch::zeros({1, 48, 8, 8})); }).find("[B, 32, h, w]"), std::string::npos);
}

}  // namespace
}  // namespace rsam::glesam
