// LoRA and MoE-LoRA (GaRA is in adapt/gara.cpp): the low-rank family, which
// shares its maths (adapt/lowrank.h) and differs in how components are
// switched on.
#include <cmath>

#include "adapt/adapter.h"
#include "adapt/lowrank.h"
#include "error.h"
#include "model/gemm.h"

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
    outs.push_back(gemm::linear(x.narrow(0, b * groups, groups), weight + delta(b).to(weight.dtype()), bias));
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

int64_t positive_option(const nlohmann::json& cfg, const char* key, int64_t def) {
  const int64_t v = cfg.value(key, def);
  if (v <= 0) throw Error(std::string("adapter '") + key + "' must be positive");
  return v;
}

std::string path_option(const nlohmann::json& cfg) {
  const auto p = cfg.value("inference_path", std::string("auto"));
  if (p != "auto" && p != "fold" && p != "lowrank")
    throw Error("adapter 'inference_path' must be auto, fold or lowrank");
  return p;
}

namespace {

// ---- LoRA ------------------------------------------------------------------

struct LoRA : Adapter {
  LoRA(const nlohmann::json& cfg, const LayerInfo& l) {
    rank = positive_option(cfg, "rank", 8);
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
      return gemm::linear(x, W + (lowrank_weight(A, B, {}) * scale).to(W.dtype()), b);
    auto y = gemm::linear(x, W, b);
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
    path = path_option(cfg);
    const int64_t hidden = positive_option(cfg, "gate_hidden", 128);
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
    auto y = gemm::linear(x, W, b);
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
