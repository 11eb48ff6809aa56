// Conv-LoRA (Zhong et al., ICLR 2024): y = W0 x + B(Ax + MoE(Ax)) * alpha/r,
// where the MoE holds multi-scale 3x3 convolutions applied to Ax laid out
// spatially (per attention window, or the whole grid in global blocks).
// Expert i upsamples by factor i (bicubic), convolves, applies GELU and
// resamples back; a top-1 noisy gate (Shazeer et al.) on globally pooled Ax
// picks the expert per sample, with a load-balancing loss.
#include <cmath>

#include "adapt/adapter.h"
#include "adapt/lowrank.h"
#include "error.h"
#include "model/gemm.h"

namespace rsam::adapt {

using torch::Tensor;
namespace F = torch::nn::functional;

namespace {

Tensor cv_squared(const Tensor& v) {
  if (v.numel() <= 1) return torch::zeros({}, v.options());
  return v.var(/*unbiased=*/true) / (v.mean().pow(2) + 1e-10);
}

Tensor normal_cdf(const Tensor& x) { return 0.5 * (1 + torch::erf(x / std::sqrt(2.0))); }

struct ConvLoRA : Adapter {
  ConvLoRA(const nlohmann::json& cfg, const LayerInfo& l) {
    rank = cfg.value("rank", int64_t(8));
    if (rank <= 0) throw Error("conv_lora 'rank' must be positive");
    scale = cfg.value("alpha", double(rank)) / double(rank);
    experts = cfg.value("experts", int64_t(8));
    if (experts < 1) throw Error("conv_lora needs at least one expert");
    balance = cfg.value("balance_weight", 1e-2);
    A = register_parameter("lora_A", init_lora_a(rank, l.in));
    B = register_parameter("lora_B", torch::zeros({l.out, rank}));
    // Gates start at zero (all experts equally likely), as the reference.
    w_gate = register_parameter("w_gate", torch::zeros({rank, experts}));
    w_noise = register_parameter("w_noise", torch::zeros({rank, experts}));
    for (int64_t e = 0; e < experts; ++e) {
      auto conv = torch::nn::Conv2d(torch::nn::Conv2dOptions(rank, rank, 3).padding(1));
      torch::NoGradGuard ng;
      conv->bias.zero_();
      convs.push_back(register_module("expert" + std::to_string(e), conv));
    }
  }
  std::string method() const override { return "conv_lora"; }

  Tensor expert(int64_t e, const Tensor& z) {
    const int64_t h = z.size(2), w = z.size(3), factor = e + 1;
    Tensor u = z;
    if (factor > 1)
      u = F::interpolate(z, F::InterpolateFuncOptions()
                                .size(std::vector<int64_t>{h * factor, w * factor})
                                .mode(torch::kBicubic)
                                .align_corners(false));
    u = torch::gelu(convs[size_t(e)]->forward(u));
    if (factor > 1)
      u = F::interpolate(u, F::InterpolateFuncOptions()
                                .size(std::vector<int64_t>{h, w})
                                .mode(torch::kBicubic)
                                .align_corners(false));
    return u;
  }

  Tensor forward(const Tensor& x, const Tensor& W, const Tensor& b, const AdapterContext&) override {
    if (x.dim() != 4) throw Error("conv_lora needs a spatial [N, H, W, C] input; target an image-encoder layer");
    auto y = gemm::linear(x, W, b);
    auto ax = torch::matmul(x, A.t().to(x.dtype()));  // [N, H, W, r]
    auto z = ax.permute({0, 3, 1, 2});                  // [N, r, H, W]
    const int64_t N = z.size(0);
    auto pooled = z.mean({2, 3}).to(w_gate.dtype());
    auto clean = torch::matmul(pooled, w_gate);
    Tensor logits = clean, noise_std;
    if (is_training()) {
      noise_std = F::softplus(torch::matmul(pooled, w_noise)) + 1e-2;
      logits = clean + torch::randn_like(clean) * noise_std;
    }
    auto top = logits.argmax(-1);  // top-1: the gate value itself is 1
    last_choice = top.detach().to(torch::kCPU);
    // Run each expert only on the samples routed to it.
    auto moe = torch::zeros_like(z);
    for (int64_t e = 0; e < experts; ++e) {
      auto idx = (top == e).nonzero().squeeze(1);
      if (idx.numel() == 0) continue;
      moe.index_copy_(0, idx, expert(e, z.index_select(0, idx)).to(moe.dtype()));
    }
    if (is_training()) {
      auto gates = F::one_hot(top, experts).to(clean.dtype());
      auto importance = gates.sum(0);
      Tensor load;
      if (experts > 1) {
        // Probability each expert stays in the top-1 under fresh noise.
        auto top2 = std::get<0>(logits.topk(2, -1));
        auto is_in = (logits >= top2.select(1, 0).unsqueeze(1));
        auto p_in = normal_cdf((clean - top2.select(1, 1).unsqueeze(1)) / noise_std);
        auto p_out = normal_cdf((clean - top2.select(1, 0).unsqueeze(1)) / noise_std);
        load = torch::where(is_in, p_in, p_out).sum(0);
      } else {
        load = importance;
      }
      last_aux = (cv_squared(importance) + cv_squared(load)) * balance;
    } else {
      last_aux = Tensor();
    }
    auto h = (z + moe).permute({0, 2, 3, 1});  // [N, H, W, r]
    (void)N;
    return y + torch::matmul(h, B.t().to(h.dtype())) * scale;
  }
  bool merge_into(Tensor&, Tensor&) override { return false; }
  Tensor aux_loss() override { return last_aux; }
  nlohmann::json gates() const override {
    if (!last_choice.defined()) return nullptr;
    std::vector<int64_t> counts(size_t(experts), 0);
    for (int64_t i = 0; i < last_choice.size(0); ++i) counts[size_t(last_choice[i].item<int64_t>())]++;
    return {{"expert_counts", counts}};
  }

  int64_t rank, experts;
  double scale, balance;
  Tensor A, B, w_gate, w_noise, last_aux, last_choice;
  std::vector<torch::nn::Conv2d> convs;
};

RegisterAdapter reg({"conv_lora",
                     "Conv-LoRA: LoRA with a top-1 MoE of multi-scale 3x3 convolutions in the bottleneck on the fused "
                     "qkv; rank, alpha, experts, balance_weight",
                     {"image_encoder.blocks.*.attn.qkv"},
                     false,
                     [](const nlohmann::json& c, const LayerInfo& l) {
                       LayerInfo fused = l;
                       fused.split = 1;  // applied to the fused qkv projection, as the reference
                       return std::make_shared<ConvLoRA>(c, fused);
                     },
                     nullptr,
                     {int_key("rank"), number_key("alpha"), int_key("experts"), number_key("balance_weight", 0)},
                     [](const nlohmann::json& c) {
                       if (c.contains("split"))
                         throw Error("\"split\" does not apply to conv_lora, which adapts the fused projection whole");
                     }});

}  // namespace

}  // namespace rsam::adapt
