// LoRA, GaRA and MoE-LoRA: the low-rank family, which shares its maths
// (adapt/lowrank.h) and differs in how components are switched on.
#include <cmath>

#include "adapt/adapter.h"
#include "adapt/lowrank.h"
#include "error.h"

namespace rsam::adapt {

using torch::Tensor;
namespace F = torch::nn::functional;

// ---- shared maths ----------------------------------------------------------

Tensor init_lora_a(int64_t rows, int64_t in) {
  auto a = torch::empty({rows, in});
  torch::nn::init::kaiming_uniform_(a, std::sqrt(5.0));
  return a;
}

Tensor lowrank_delta(const Tensor& x, const Tensor& A, const Tensor& B, const Tensor& mask) {
  const int64_t S = B.size(0), out_s = B.size(1), r = B.size(2);
  auto u = torch::matmul(x, A.t());  // [..., S*r]
  if (mask.defined()) {
    // mask [rows, S*r] -> broadcast over the token dims of x.
    std::vector<int64_t> shape(x.dim(), 1);
    shape[0] = mask.size(0);
    shape.back() = S * r;
    u = u * mask.view(shape).to(u.dtype());
  }
  auto lead = u.sizes().vec();
  lead.pop_back();
  auto d = torch::einsum("nsr,sor->nso", {u.reshape({-1, S, r}), B.to(u.dtype())});
  lead.push_back(S * out_s);
  return d.reshape(lead);
}

Tensor lowrank_weight(const Tensor& A, const Tensor& B, const Tensor& mask) {
  const int64_t S = B.size(0), out_s = B.size(1), r = B.size(2), in = A.size(1);
  auto a = A.view({S, r, in});
  auto b = B;
  if (mask.defined()) b = b * mask.view({S, 1, r}).to(b.dtype());
  return torch::bmm(b, a).reshape({S * out_s, in});
}

Tensor per_row(const Tensor& per_image, int64_t rows) {
  const int64_t images = per_image.size(0);
  if (rows == images) return per_image;
  return per_image.repeat_interleave(rows / images, 0);
}

Tensor linear_per_image(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t images,
                        const std::function<Tensor(int64_t)>& delta) {
  const int64_t groups = x.size(0) / images;
  std::vector<Tensor> outs;
  outs.reserve(images);
  for (int64_t b = 0; b < images; ++b)
    outs.push_back(F::linear(x.narrow(0, b * groups, groups), weight + delta(b).to(weight.dtype()), bias));
  return images == 1 ? outs[0] : torch::cat(outs, 0);
}

bool fold_is_cheaper(const Tensor& x, int64_t in, int64_t out, int64_t images) {
  const int64_t tokens = x.numel() / in / std::max<int64_t>(images, 1);
  return out * in < tokens * (in + out);
}

std::pair<Tensor, int64_t> gate_input(const Tensor& x, const Tensor& pooled, int64_t images) {
  if (pooled.defined() && images > 0 && x.size(0) % images == 0) return {pooled, images};
  // No block context: every leading row is its own input.
  auto flat = x.reshape({x.size(0), -1, x.size(-1)});
  return {flat.mean(1), x.size(0)};
}

namespace {

int64_t positive(const nlohmann::json& cfg, const char* key, int64_t def) {
  const int64_t v = cfg.value(key, def);
  if (v <= 0) throw Error(std::string("adapter '") + key + "' must be positive");
  return v;
}

std::string path_choice(const nlohmann::json& cfg) {
  const auto p = cfg.value("inference_path", std::string("auto"));
  if (p != "auto" && p != "fold" && p != "lowrank")
    throw Error("adapter 'inference_path' must be auto, fold or lowrank");
  return p;
}

// ---- LoRA ------------------------------------------------------------------

struct LoRA : Adapter {
  LoRA(const nlohmann::json& cfg, const LayerInfo& l) {
    rank = positive(cfg, "rank", 8);
    scale = cfg.value("alpha", double(rank)) / double(rank);
    dropout = cfg.value("dropout", 0.0);
    const int64_t S = l.split;
    A = register_parameter("lora_A", init_lora_a(S * rank, l.in));
    B = register_parameter("lora_B", torch::zeros({S, l.out / S, rank}));
  }
  std::string method() const override { return "lora"; }
  Tensor forward(const Tensor& x, const Tensor& W, const Tensor& b, const AdapterContext&) override {
    // Inference: fold B A into the weight (out*in*r multiply-adds, once per
    // call) instead of a low-rank pass over every token.
    if (!is_training() && !(torch::GradMode::is_enabled() && (A.requires_grad() || x.requires_grad())))
      return F::linear(x, W + (lowrank_weight(A, B, {}) * scale).to(W.dtype()), b);
    auto y = F::linear(x, W, b);
    auto h = (is_training() && dropout > 0) ? F::dropout(x, F::DropoutFuncOptions().p(dropout).training(true)) : x;
    return y + lowrank_delta(h, A, B, {}) * scale;
  }
  bool merge_into(Tensor& W, Tensor& bias) override {
    W.add_(lowrank_weight(A, B, {}).to(W.dtype()) * scale);
    return true;
  }
  int64_t rank;
  double scale, dropout;
  Tensor A, B;
};

RegisterAdapter reg_lora({"lora",
                          "LoRA: fixed-rank update B A on each target, q/k/v separately (rank, alpha, dropout)",
                          {"image_encoder.blocks.*.attn.qkv"},
                          true,
                          [](const nlohmann::json& c, const LayerInfo& l) { return std::make_shared<LoRA>(c, l); },
                          nullptr,
                          {int_key("rank"), number_key("alpha"), number_key("dropout", 0, 1)},
                          nullptr});

// ---- GaRA ------------------------------------------------------------------

// MLP gate: Linear/ReLU stack ending in `out` logits.
struct GateMLP : torch::nn::Module {
  GateMLP(int64_t in, int64_t hidden, int64_t out, int layers, double out_bias) {
    for (int i = 0; i < layers; ++i) {
      const int64_t o = i == layers - 1 ? out : hidden;
      fc.push_back(register_module("fc" + std::to_string(i), torch::nn::Linear(i == 0 ? in : hidden, o)));
    }
    torch::NoGradGuard ng;
    fc.back()->bias.fill_(out_bias);
  }
  Tensor forward(Tensor x) {
    for (size_t i = 0; i < fc.size(); ++i) {
      x = fc[i](x);
      if (i + 1 < fc.size()) x = torch::relu(x);
    }
    return x;
  }
  std::vector<torch::nn::Linear> fc;
};

struct GaRA : Adapter {
  GaRA(const nlohmann::json& cfg, const LayerInfo& l) : split(l.split), in(l.in), out(l.out) {
    r_low = positive(cfg, "r_low", 16);
    r_high = positive(cfg, "r_high", 256);
    tau = cfg.value("tau", 0.5);
    scale = cfg.value("scale", 1.0);
    space_gate = cfg.value("space_gate", true);
    path = path_choice(cfg);
    const int64_t hidden = positive(cfg, "gate_hidden", 128);
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
    auto y = F::linear(x, W, b);
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

// ---- MoE-LoRA --------------------------------------------------------------

// Several fixed-rank LoRA experts; one shared gate picks one per image
// (GaRA paper, Table 7 baseline). Straight-through Gumbel-softmax in
// training, argmax at inference.
struct MoELoRA : Adapter {
  MoELoRA(const nlohmann::json& cfg, const LayerInfo& l) : in(l.in), out(l.out) {
    ranks = cfg.value("ranks", std::vector<int64_t>{8, 16, 32, 64});
    if (ranks.empty()) throw Error("moe_lora needs at least one expert rank");
    tau = cfg.value("tau", 1.0);
    scale = cfg.value("scale", 1.0);
    path = path_choice(cfg);
    const int64_t hidden = positive(cfg, "gate_hidden", 128);
    gate = register_module("gate", std::make_shared<GateMLP>(in, hidden, int64_t(ranks.size()), 2, 0.0));
    for (size_t e = 0; e < ranks.size(); ++e) {
      if (ranks[e] <= 0) throw Error("moe_lora ranks must be positive");
      A.push_back(register_parameter("A" + std::to_string(e), init_lora_a(l.split * ranks[e], in)));
      B.push_back(register_parameter("B" + std::to_string(e), torch::zeros({l.split, out / l.split, ranks[e]})));
    }
  }
  std::string method() const override { return "moe_lora"; }
  bool needs_pooled() const override { return true; }

  Tensor forward(const Tensor& x, const Tensor& W, const Tensor& b, const AdapterContext& ctx) override {
    auto [f, images] = gate_input(x, ctx.pooled, ctx.images);
    auto logits = gate->forward(f.to(A[0].dtype()));
    Tensor onehot;
    if (is_training()) {
      auto u = torch::rand_like(logits).clamp(1e-10, 1.0 - 1e-10);
      auto soft = torch::softmax((logits - torch::log(-torch::log(u))) / tau, -1);
      auto hard = F::one_hot(soft.argmax(-1), int64_t(ranks.size())).to(soft.dtype());
      onehot = hard + soft - soft.detach();
    } else {
      onehot = F::one_hot(logits.argmax(-1), int64_t(ranks.size())).to(logits.dtype());
    }
    last_choice = onehot.argmax(-1).detach().to(torch::kCPU);
    const bool grad = is_training() || (torch::GradMode::is_enabled() && (A[0].requires_grad() || x.requires_grad()));
    if (!grad && (path == "fold" || (path == "auto" && fold_is_cheaper(x, in, out, images)))) {
      return linear_per_image(x, W, b, images, [&](int64_t i) {
        const int64_t e = last_choice[i].item<int64_t>();
        return lowrank_weight(A[e], B[e], {}) * scale;
      });
    }
    auto y = F::linear(x, W, b);
    const int64_t rows = x.size(0);
    std::vector<int64_t> shape(x.dim(), 1);
    shape[0] = rows;
    for (size_t e = 0; e < ranks.size(); ++e) {
      auto w = per_row(onehot.select(1, int64_t(e)).contiguous(), rows).view(shape);
      y = y + lowrank_delta(x, A[e], B[e], {}) * w.to(y.dtype()) * scale;
    }
    return y;
  }
  nlohmann::json gates() const override {
    if (!last_choice.defined()) return nullptr;
    nlohmann::json j = nlohmann::json::array();
    for (int64_t i = 0; i < last_choice.size(0); ++i) {
      const int64_t e = last_choice[i].item<int64_t>();
      j.push_back({{"expert", e}, {"rank", ranks[size_t(e)]}});
    }
    return j;
  }
  int64_t in, out;
  std::vector<int64_t> ranks;
  double tau, scale;
  std::string path;
  std::shared_ptr<GateMLP> gate;
  std::vector<Tensor> A, B;
  Tensor last_choice;
};

RegisterAdapter reg_moe({"moe_lora",
                         "MoE-LoRA: fixed-rank LoRA experts, one chosen per image by a shared gate; ranks, tau",
                         {"image_encoder.blocks.*.attn.qkv"},
                         false,
                         [](const nlohmann::json& c, const LayerInfo& l) { return std::make_shared<MoELoRA>(c, l); },
                         nullptr,
                         {int_list_key("ranks"), number_key("tau", 0, HUGE_VAL, /*above_min=*/true),
                          number_key("scale"), int_key("gate_hidden"),
                          choice_key("inference_path", {"auto", "fold", "lowrank"})},
                         nullptr});

}  // namespace

}  // namespace rsam::adapt
