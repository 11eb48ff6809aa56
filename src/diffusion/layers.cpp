#include "diffusion/layers.h"

#include <ATen/autocast_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <cmath>

#include "error.h"
#include "model/gemm.h"

namespace rsam::diffusion {

namespace F = torch::nn::functional;
using torch::Tensor;

namespace {
std::string shape_str(c10::IntArrayRef s) {
  std::ostringstream os;
  os << s;
  return os.str();
}
}  // namespace

std::vector<int64_t> LoraHost::lora_b_shape(int64_t rank) const {
  std::vector<int64_t> s{weight.size(0), rank};
  if (weight.dim() == 4) s.insert(s.end(), {1, 1});
  return s;
}

void LoraHost::check_lora(const Tensor& a, const Tensor& b, const std::string& name) const {
  const int64_t rank = a.dim() > 0 ? a.size(0) : 0;
  if (rank < 1 || a.sizes() != c10::IntArrayRef(lora_a_shape(rank)))
    throw Error("LoRA A of '" + name + "' has shape " + shape_str(a.sizes()) + ", expected " +
                shape_str(lora_a_shape(std::max<int64_t>(rank, 1))));
  if (b.sizes() != c10::IntArrayRef(lora_b_shape(rank)))
    throw Error("LoRA B of '" + name + "' has shape " + shape_str(b.sizes()) + ", expected " +
                shape_str(lora_b_shape(rank)));
}

void LoraHost::set_lora(const Tensor& a, const Tensor& b, double scale, const std::string& name) {
  check_lora(a, b, name);
  remove_lora();
  auto opts = weight.options();
  lora_A = register_module("lora_A", LoraFactor(a.detach().to(opts).clone()));
  lora_B = register_module("lora_B", LoraFactor(b.detach().to(opts).clone()));
  lora_scale = scale;
}

void LoraHost::remove_lora() {
  if (!has_lora()) return;
  unregister_module("lora_A");
  unregister_module("lora_B");
  lora_A = LoraFactor(nullptr);
  lora_B = LoraFactor(nullptr);
  lora_scale = 0;
}

Tensor LoraHost::lora_delta() const {
  if (!has_lora()) return torch::zeros_like(weight);
  const auto& A = lora_A->weight;
  const auto& B = lora_B->weight;
  // B is a matrix (Linear) or a 1x1 kernel; a conv with kernel A then B
  // equals one conv whose kernel mixes A's output channels by B.
  auto b2 = B.dim() == 4 ? B.flatten(1) : B;
  Tensor d = weight.dim() == 4 ? torch::einsum("or,rikl->oikl", {b2, A}) : torch::matmul(b2, A);
  return d * lora_scale;
}

void LoraHost::merge_lora() {
  if (!has_lora()) return;
  torch::NoGradGuard ng;
  weight.add_(lora_delta().to(weight.dtype()));
  remove_lora();
}

LinearImpl::LinearImpl(int64_t in, int64_t out, bool with_bias) : in_features(in), out_features(out) {
  weight = register_parameter("weight", torch::empty({out, in}));
  if (with_bias) bias = register_parameter("bias", torch::empty({out}));
}

Tensor LinearImpl::forward(const Tensor& x) {
  auto y = gemm::linear(x, weight, bias);
  if (!has_lora()) return y;
  // peft's order: result + lora_B(lora_A(x)) * scaling.
  return y + gemm::linear(gemm::linear(x, lora_A->weight), lora_B->weight) * lora_scale;
}

Conv2dImpl::Conv2dImpl(int64_t in, int64_t out, int64_t k, int64_t s, int64_t p, bool with_bias)
    : in_channels(in), out_channels(out), kernel(k), stride(s), padding(p) {
  weight = register_parameter("weight", torch::empty({out, in, k, k}));
  if (with_bias) bias = register_parameter("bias", torch::empty({out}));
}

Tensor Conv2dImpl::forward(const Tensor& x_in) {
  const bool fp32 = cpu_bf16(x_in);
  auto cast = [&](const Tensor& t) { return fp32 && t.defined() ? t.to(torch::kFloat32) : t; };
  c10::impl::ExcludeDispatchKeyGuard no_autocast(fp32 ? c10::DispatchKeySet(c10::DispatchKey::AutocastCPU)
                                                      : c10::DispatchKeySet());
  const auto x = cast(x_in);
  auto y = F::conv2d(x, cast(weight), F::Conv2dFuncOptions().bias(cast(bias)).stride(stride).padding(padding));
  if (!has_lora()) return y;
  auto a = F::conv2d(x, cast(lora_A->weight), F::Conv2dFuncOptions().stride(stride).padding(padding));
  return y + F::conv2d(a, cast(lora_B->weight)) * lora_scale;
}

EmbeddingImpl::EmbeddingImpl(int64_t num, int64_t dim) { weight = register_parameter("weight", torch::empty({num, dim})); }

Tensor EmbeddingImpl::forward(const Tensor& ids) { return F::embedding(ids, weight); }

Act parse_act(const std::string& name) {
  if (name == "silu" || name == "swish") return Act::SiLU;
  if (name == "gelu") return Act::GELU;
  if (name == "relu") return Act::ReLU;
  if (name == "mish") return Act::Mish;
  if (name == "quick_gelu") return Act::QuickGELU;
  throw Error("unsupported activation '" + name + "'");
}

Tensor apply_act(Act a, const Tensor& x) {
  switch (a) {
    case Act::SiLU: return torch::silu(x);
    case Act::GELU: return torch::gelu(x);
    case Act::ReLU: return torch::relu(x);
    case Act::Mish: return torch::mish(x);
    case Act::QuickGELU: return x * torch::sigmoid(1.702 * x);  // transformers' QuickGELUActivation
  }
  return x;
}

bool cpu_bf16(const Tensor& x) {
  if (!x.device().is_cpu()) return false;
  if (x.scalar_type() == torch::kBFloat16) return true;
  return at::autocast::is_cpu_enabled() && at::autocast::get_autocast_cpu_dtype() == at::kBFloat16;
}

void init_random(torch::nn::Module& model, uint64_t seed) {
  torch::NoGradGuard ng;
  auto gen = at::detail::createCPUGenerator(seed);
  for (auto& p : model.named_parameters(true)) {
    auto& t = p.value();
    const auto& name = p.key();
    const bool norm = name.find("norm") != std::string::npos;
    auto cpu = torch::empty(t.sizes(), torch::kFloat32);
    if (norm) {
      cpu.fill_(name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0 ? 1.0 : 0.0);
    } else {
      const int64_t fan_in = t.dim() >= 2 ? t.numel() / t.size(0) : t.numel();
      const double bound = 1.0 / std::sqrt(double(std::max<int64_t>(fan_in, 1)));
      cpu.uniform_(-bound, bound, gen);
    }
    t.copy_(cpu);
  }
}

}  // namespace rsam::diffusion
