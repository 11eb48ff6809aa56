#include "glesam/bench.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <random>

#include "diffusion/layers.h"
#include "diffusion/lora.h"
#include "diffusion/schedule.h"
#include "error.h"
#include "glesam/enhancer.h"
#include "model/checkpoint.h"
#include "model/predictor.h"
#include "model/runtime.h"

namespace rsam::glesam {

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

double peak_rss_gb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / (1 << 20);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// SD's noise schedule (every SD-1.x/2.x scheduler_config.json).
torch::Tensor sd_alphas() {
  diffusion::SchedulerConfig s;
  s.beta_start = 0.00085;
  s.beta_end = 0.012;
  s.beta_schedule = "scaled_linear";
  return diffusion::alphas_cumprod(s);
}

std::vector<double> time_decodes(const SamPredictor& pred, const Prompt& p, int n) {
  std::vector<double> ms;
  for (int i = 0; i < n; ++i) {
    const auto t0 = Clock::now();
    pred.predict(p, true);
    ms.push_back(ms_since(t0));
  }
  return ms;
}

// One stage-1 step per entry: LoRA forward and backward through the U-Net,
// MSE(x0, gamma z_H), Adam.
std::vector<double> time_train_steps(Enhancer& e, int steps, int64_t rank, bool bf16, int64_t side, int64_t* lora) {
  diffusion::add_lora(*e.unet(), {rank, double(rank), diffusion::glesam_lora_targets()}, 0);
  std::vector<torch::Tensor> params;
  for (const auto& p : e.unet()->named_parameters())
    if (p.key().find("lora_") != std::string::npos) {
      p.value().set_requires_grad(true);
      params.push_back(p.value());
    }
  *lora = 0;
  for (const auto& p : params) *lora += p.numel();
  torch::optim::Adam opt(params, torch::optim::AdamOptions(1e-4));
  const auto z_low = torch::randn({1, e.channels(), side, side}) * 0.3;
  const auto z_high = torch::randn({1, e.channels(), side, side}) * 0.3;
  std::vector<double> ms;
  for (int i = 0; i < steps; ++i) {
    const auto t0 = Clock::now();
    opt.zero_grad();
    torch::mse_loss(e.predict_x0(z_low * e.gamma(), bf16), z_high * e.gamma()).backward();
    opt.step();
    ms.push_back(ms_since(t0));
  }
  return ms;
}

}  // namespace

nlohmann::json bench_enhancer(const EnhancerBenchOptions& o) {
  if (o.repeat < 1 || o.decode_repeat < 1 || o.train_steps < 0) throw Error("enhancer bench: repeat counts must be >= 1");
  const auto cfg = SamConfig::find_preset(o.sam);
  if (!cfg) throw Error("enhancer bench: unknown SAM preset '" + o.sam + "' (vit_b, vit_l, vit_h)");
  Sam sam(*cfg);
  diffusion::init_random(*sam, 1);
  sam->eval();
  auto ucfg = diffusion::UNetConfig::from_file(o.unet_config);
  diffusion::UNet2DConditionModel unet(ucfg);
  diffusion::init_random(*unet, 2);
  cre_widen(unet, cfg->prompt_embed_dim);
  const int64_t unet_params = parameter_count(*unet);
  Enhancer e(unet, sd_alphas(), torch::randn({1, 77, ucfg.cross_attention_dim.back()}), 5, 1);

  const Precision prec = o.bf16 ? Precision::BF16 : Precision::FP32;
  SamPredictor pred(sam, prec);
  Image8 img(cfg->img_size, cfg->img_size * 3 / 4, 3);
  std::mt19937 rng(0);
  for (auto& v : img.data) v = uint8_t(rng() & 0xff);
  std::vector<double> enc, enh;
  torch::Tensor plain;
  for (int i = 0; i < o.repeat; ++i) {
    auto t0 = Clock::now();
    pred.set_image(img);
    enc.push_back(ms_since(t0));
    plain = pred.embedding();
    t0 = Clock::now();
    e.enhance(plain, o.bf16);
    enh.push_back(ms_since(t0));
  }
  Prompt p;
  p.points = {{float(img.width) / 3, float(img.height) / 2}};
  p.labels = {1};
  const auto dec = time_decodes(pred, p, o.decode_repeat);
  // The enhanced embedding has the plain one's shape: the per-prompt decode
  // is the same work, measured here in the same run.
  pred.set_embedding(e.enhance(plain, o.bf16), pred.original_size());
  const auto dec_e = time_decodes(pred, p, o.decode_repeat);
  const double rss_inference = peak_rss_gb();
  nlohmann::json j{{"sam", o.sam},
                   {"unet", o.unet_config},
                   {"unet_parameters", unet_params},
                   {"channels", cfg->prompt_embed_dim},
                   {"precision", o.bf16 ? "bf16" : "fp32"},
                   {"threads", num_threads()},
                   {"image", {img.width, img.height}},
                   {"encode_ms", enc},
                   {"enhance_ms", enh},
                   {"decode_ms", dec},
                   {"decode_enhanced_ms", dec_e},
                   {"decode_ratio_median", median(dec_e) / median(dec)},
                   {"peak_rss_gb_inference", rss_inference}};
  if (o.train_steps > 0) {
    int64_t lora = 0;
    j["train_step_ms"] = time_train_steps(e, o.train_steps, o.lora_rank, o.bf16, plain.size(2), &lora);
    j["lora_parameters"] = lora;
  }
  j["peak_rss_gb"] = peak_rss_gb();
  return j;
}

}  // namespace rsam::glesam
