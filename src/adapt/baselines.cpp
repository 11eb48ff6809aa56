// The classic PEFT baselines of the Conv-LoRA comparison: decoder-only
// fine-tuning, BitFit, a bottleneck Adapter and SSF (scale and shift).
#include "adapt/adapter.h"
#include "error.h"
#include "model/gemm.h"

namespace rsam::adapt {

using torch::Tensor;
namespace F = torch::nn::functional;

namespace {

// SSF (Lian et al., 2022): y = gamma * (W x + b) + beta per output channel.
struct SSF : Adapter {
  explicit SSF(const LayerInfo& l) {
    gamma = register_parameter("gamma", torch::ones({l.out}));
    beta = register_parameter("beta", torch::zeros({l.out}));
  }
  std::string method() const override { return "ssf"; }
  Tensor forward(const Tensor& x, const Tensor& W, const Tensor& b, const AdapterContext&) override {
    // Inference: fold the scale and shift into the layer (no per-token pass).
    if (!is_training() && !(torch::GradMode::is_enabled() && gamma.requires_grad()) && b.defined())
      return gemm::linear(x, W * gamma.unsqueeze(1).to(W.dtype()), b * gamma.to(b.dtype()) + beta.to(b.dtype()));
    return gemm::linear(x, W, b) * gamma.to(x.dtype()) + beta.to(x.dtype());
  }
  bool merge_into(Tensor& W, Tensor& b) override {
    W.mul_(gamma.unsqueeze(1).to(W.dtype()));
    if (!b.defined()) return false;
    b.mul_(gamma.to(b.dtype())).add_(beta.to(b.dtype()));
    return true;
  }
  Tensor gamma, beta;
};

// Bottleneck adapter (Houlsby et al., 2019) on a layer's output:
// y = h + up(GELU(down(h))), h = W x + b; up starts at zero.
struct Bottleneck : Adapter {
  Bottleneck(const nlohmann::json& cfg, const LayerInfo& l) {
    const int64_t m = cfg.value("bottleneck", int64_t(64));
    if (m <= 0) throw Error("adapter 'bottleneck' must be positive");
    down = register_module("down", torch::nn::Linear(l.out, m));
    up = register_module("up", torch::nn::Linear(m, l.out));
    torch::NoGradGuard ng;
    up->weight.zero_();
    up->bias.zero_();
  }
  std::string method() const override { return "adapter"; }
  Tensor forward(const Tensor& x, const Tensor& W, const Tensor& b, const AdapterContext&) override {
    auto h = gemm::linear(x, W, b);
    return h + up(torch::gelu(down(h)));
  }
  torch::nn::Linear down{nullptr}, up{nullptr};
};

RegisterAdapter reg_ssf({"ssf",
                         "SSF: per-channel scale and shift after every encoder linear layer (mergeable)",
                         {"image_encoder.blocks.*"},
                         true,
                         [](const nlohmann::json&, const LayerInfo& l) { return std::make_shared<SSF>(l); },
                         nullptr,
                         {},
                         nullptr});

RegisterAdapter reg_adapter({"adapter",
                             "Adapter: bottleneck MLP (bottleneck size) after attention and MLP outputs of each block",
                             {"image_encoder.blocks.*.attn.proj", "image_encoder.blocks.*.mlp.lin2"},
                             false,
                             [](const nlohmann::json& c, const LayerInfo& l) {
                               return std::make_shared<Bottleneck>(c, l);
                             },
                             nullptr,
                             {int_key("bottleneck")},
                             nullptr});

RegisterAdapter reg_bitfit({"bitfit",
                            "BitFit: trains only the image encoder's bias terms",
                            {},
                            true,
                            nullptr,
                            [](const std::string& k) {
                              return k.rfind("image_encoder.", 0) == 0 && k.size() > 5 &&
                                     k.compare(k.size() - 5, 5, ".bias") == 0;
                            },
                            {},
                            nullptr});

RegisterAdapter reg_decoder({"decoder_only",
                             "Decoder-only: trains the mask decoder, encoder frozen",
                             {},
                             true,
                             nullptr,
                             [](const std::string& k) { return k.rfind("mask_decoder.", 0) == 0; },
                             {},
                             nullptr});

}  // namespace

}  // namespace rsam::adapt
