// GaRA: rank-1 low-rank components gated per image, hierarchically (a space
// gate picks the low or high rank space, then per-component gates). Shares
// the low-rank maths and the gate MLP with LoRA/MoE-LoRA (adapt/lowrank.h).
#include <cmath>

#include "adapt/adapter.h"
#include "adapt/lowrank.h"
#include "error.h"
#include "model/gemm.h"

namespace rsam::adapt {

using torch::Tensor;
namespace F = torch::nn::functional;

namespace {

struct GaRA : Adapter {
  GaRA(const nlohmann::json& cfg, const LayerInfo& l) : split(l.split), in(l.in), out(l.out) {
    r_low = positive_option(cfg, "r_low", 16);
    r_high = positive_option(cfg, "r_high", 256);
    tau = cfg.value("tau", 0.5);
    scale = cfg.value("scale", 1.0);
    space_gate = cfg.value("space_gate", true);
    path = path_option(cfg);
    const int64_t hidden = positive_option(cfg, "gate_hidden", 128);
    // Component gates start open (logit +2 => sigma > 0.5 without noise,
    // ~98% open with it) so every component's B receives gradient; the space
    // gate starts undecided so both spaces get trained.
    const double open = cfg.value("gate_init", 2.0);
    const int64_t S = split;
    A_low = register_parameter("A_low", init_lora_a(S * r_low, in));
    B_low = register_parameter("B_low", torch::zeros({S, out / S, r_low}));
    A_high = register_parameter("A_high", init_lora_a(S * r_high, in));
    B_high = register_parameter("B_high", torch::zeros({S, out / S, r_high}));
    for (int64_t s = 0; s < S; ++s) {
      const auto p = std::to_string(s);
      if (space_gate) g_space.push_back(register_module("g_space" + p, std::make_shared<GateMLP>(in, hidden, 1, 2, 0.0)));
      g_low.push_back(register_module("g_low" + p, std::make_shared<GateMLP>(in, hidden, r_low, 3, open)));
      g_high.push_back(register_module("g_high" + p, std::make_shared<GateMLP>(in, hidden, r_high, 3, open)));
    }
  }
  std::string method() const override { return "gara"; }
  bool needs_pooled() const override { return true; }

  // Per-image component masks [images, S*r_low], [images, S*r_high] (Eq. 7).
  std::pair<Tensor, Tensor> masks(const Tensor& f) {
    std::vector<Tensor> ml, mh, zs_all;
    for (int64_t s = 0; s < split; ++s) {
      Tensor zs = space_gate ? gumbel_sigmoid_gate(g_space[s]->forward(f), tau, is_training())
                             : torch::ones({f.size(0), 1}, f.options());  // ablation: always the higher space
      auto zl = gumbel_sigmoid_gate(g_low[s]->forward(f), tau, is_training());
      auto zh = gumbel_sigmoid_gate(g_high[s]->forward(f), tau, is_training());
      ml.push_back((1 - zs) * zl);
      mh.push_back(zs * zh);
      zs_all.push_back(zs);
    }
    last_space = torch::cat(zs_all, 1).detach().to(torch::kCPU);
    auto low = torch::cat(ml, 1), high = torch::cat(mh, 1);
    last_low = low.detach().to(torch::kCPU);
    last_high = high.detach().to(torch::kCPU);
    return {low, high};
  }

  Tensor forward(const Tensor& x, const Tensor& W, const Tensor& b, const AdapterContext& ctx) override {
    auto [f, images] = gate_input(x, ctx.pooled, ctx.images);
    auto [ml, mh] = masks(f.to(A_low.dtype()));
    // Fold only at inference: training (and checkpoint recomputation) always
    // takes the low-rank path so the forward is the same with or without grad.
    const bool grad = is_training() || (torch::GradMode::is_enabled() && (A_low.requires_grad() || x.requires_grad()));
    const bool fold = !grad && (path == "fold" || (path == "auto" && fold_is_cheaper(x, in, out, images)));
    if (fold) {
      return linear_per_image(x, W, b, images, [&](int64_t i) { return folded_delta(ml[i], mh[i]); });
    }
    auto y = gemm::linear(x, W, b);
    const int64_t rows = x.size(0);
    return y + (lowrank_delta(x, A_low, B_low, per_row(ml, rows)) + lowrank_delta(x, A_high, B_high, per_row(mh, rows))) *
                   scale;
  }

  // Dense B diag(z) A for one image: only the active components of the
  // chosen space are multiplied, so the cost follows the effective rank.
  Tensor folded_delta(const Tensor& ml, const Tensor& mh) {
    const int64_t out_s = out / split;
    Tensor d = torch::zeros({out, in}, A_low.options());
    auto add = [&](const Tensor& A, const Tensor& B, const Tensor& m, int64_t r, int64_t s) {
      auto idx = m.narrow(0, s * r, r).nonzero().squeeze(1);
      if (idx.numel() == 0) return;
      auto a = A.narrow(0, s * r, r).index_select(0, idx);  // [k, in]
      auto b = B[s].index_select(1, idx);                   // [out_s, k]
      d.narrow(0, s * out_s, out_s).add_(torch::matmul(b, a));
    };
    for (int64_t s = 0; s < split; ++s) {
      add(A_low, B_low, ml, r_low, s);
      add(A_high, B_high, mh, r_high, s);
    }
    return scale == 1.0 ? d : d * scale;
  }

  nlohmann::json gates() const override {
    if (!last_space.defined()) return nullptr;
    // images -> projections (q, k, v) -> {space, active, rank}
    nlohmann::json imgs = nlohmann::json::array();
    for (int64_t i = 0; i < last_space.size(0); ++i) {
      nlohmann::json projs = nlohmann::json::array();
      for (int64_t s = 0; s < split; ++s) {
        const bool high = last_space[i][s].item<float>() > 0.5f;
        const auto& m = high ? last_high : last_low;
        const int64_t r = high ? r_high : r_low;
        std::vector<int64_t> active;
        for (int64_t k = 0; k < r; ++k)
          if (m[i][s * r + k].item<float>() > 0.5f) active.push_back(k);
        projs.push_back({{"space", high ? "high" : "low"}, {"rank", active.size()}, {"max_rank", r}, {"active", active}});
      }
      imgs.push_back(projs);
    }
    return imgs;
  }

  int64_t split, in, out, r_low, r_high;
  double tau, scale;
  bool space_gate;
  std::string path;
  Tensor A_low, B_low, A_high, B_high;
  std::vector<std::shared_ptr<GateMLP>> g_space, g_low, g_high;
  Tensor last_space, last_low, last_high;
};

// The lower space must not be the larger one (the defaults count when a key is absent).
void check_gara(const nlohmann::json& cfg) {
  const int64_t lo = cfg.value("r_low", int64_t(16)), hi = cfg.value("r_high", int64_t(256));
  if (lo > hi)
    throw Error("\"r_low\" (" + std::to_string(lo) + ") must not exceed \"r_high\" (" + std::to_string(hi) +
                (cfg.contains("r_high") ? "" : ", the default") + ")");
}

RegisterAdapter reg_gara({"gara",
                          "GaRA: rank-1 components gated per image, hierarchical (space gate, then components); "
                          "r_low, r_high, tau, scale, gate_hidden, space_gate",
                          {"image_encoder.blocks.*.attn.qkv"},
                          false,
                          [](const nlohmann::json& c, const LayerInfo& l) { return std::make_shared<GaRA>(c, l); },
                          nullptr,
                          {int_key("r_low"), int_key("r_high"), number_key("tau", 0, HUGE_VAL, /*above_min=*/true),
                           number_key("scale"), int_key("gate_hidden"), number_key("gate_init"), bool_key("space_gate"),
                           choice_key("inference_path", {"auto", "fold", "lowrank"})},
                          check_gara});
}  // namespace

}  // namespace rsam::adapt
