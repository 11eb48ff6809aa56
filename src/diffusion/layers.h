// The Linear and Conv2d layers of the diffusion models. Their parameters
// are named as torch.nn's ("weight", "bias"), so the reference state dicts
// load by name, and each can carry a LoRA the way peft attaches one: child
// modules "lora_A" and "lora_B" whose product, scaled by alpha / rank, is
// added to the layer's output. Weights are allocated uninitialized: they
// always come from a file (or from init_random in tests and benchmarks).
#pragma once

#include <torch/torch.h>

#include "model/autocast.h"  // Bf16Autocast

#include <string>

namespace rsam::diffusion {

// A LoRA factor: one tensor named "weight" (peft's lora_A / lora_B layers).
struct LoraFactorImpl : torch::nn::Module {
  explicit LoraFactorImpl(const torch::Tensor& w) { weight = register_parameter("weight", w); }
  torch::Tensor weight;
};
TORCH_MODULE(LoraFactor);

class LoraHost : public torch::nn::Module {
 public:
  torch::Tensor weight, bias;
  LoraFactor lora_A{nullptr}, lora_B{nullptr};
  double lora_scale = 0;  // alpha / rank

  bool has_lora() const { return !lora_A.is_empty(); }
  int64_t lora_rank() const { return has_lora() ? lora_A->weight.size(0) : 0; }
  // Shapes peft gives the factors: Linear A [r, in], B [out, r]; Conv2d A
  // [r, in, kh, kw] (the layer's kernel, stride and padding), B [out, r, 1, 1].
  virtual std::vector<int64_t> lora_a_shape(int64_t rank) const = 0;
  std::vector<int64_t> lora_b_shape(int64_t rank) const;
  // rsam::Error unless A and B have the shapes above for one rank; `name`
  // is for the message.
  void check_lora(const torch::Tensor& a, const torch::Tensor& b, const std::string& name) const;
  // Attaches A and B (shapes checked, copied to the layer's device/dtype).
  void set_lora(const torch::Tensor& a, const torch::Tensor& b, double scale, const std::string& name);
  void remove_lora();
  // scale * B A in the layer's weight shape.
  torch::Tensor lora_delta() const;
  // weight += lora_delta(), then the LoRA is removed: the same function,
  // one layer instead of three.
  void merge_lora();
};

struct LinearImpl : LoraHost {
  LinearImpl(int64_t in, int64_t out, bool with_bias = true);
  torch::Tensor forward(const torch::Tensor& x);
  std::vector<int64_t> lora_a_shape(int64_t rank) const override { return {rank, in_features}; }
  int64_t in_features, out_features;
};
TORCH_MODULE(Linear);

struct Conv2dImpl : LoraHost {
  Conv2dImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1, int64_t padding = 0, bool with_bias = true);
  torch::Tensor forward(const torch::Tensor& x);
  std::vector<int64_t> lora_a_shape(int64_t rank) const override { return {rank, in_channels, kernel, kernel}; }
  int64_t in_channels, out_channels, kernel, stride, padding;
};
TORCH_MODULE(Conv2d);

// A weight-only Embedding (nn.Embedding's "weight").
struct EmbeddingImpl : torch::nn::Module {
  EmbeddingImpl(int64_t num, int64_t dim);
  torch::Tensor forward(const torch::Tensor& ids);
  torch::Tensor weight;
};
TORCH_MODULE(Embedding);

enum class Act { SiLU, GELU, ReLU, Mish, QuickGELU };
Act parse_act(const std::string& name);  // diffusers / transformers names
torch::Tensor apply_act(Act a, const torch::Tensor& x);

// True when x would be computed in bf16 on the CPU (a bf16 tensor, or CPU
// bf16 autocast on): torch 1.13's CPU fallback kernels then lose precision
// in convolutions, so rsam's convolutions run those in fp32.
bool cpu_bf16(const torch::Tensor& x);

// A LayerNorm or GroupNorm applied in its weights' dtype (fp32): under
// bf16 autocast a bf16 input would otherwise meet fp32 weights, which the
// CPU kernels refuse; CUDA autocast runs these norms in fp32 too.
template <class Norm>
torch::Tensor norm_fp32(Norm& norm, const torch::Tensor& x) {
  const auto dt = norm->weight.scalar_type();
  return norm(x.scalar_type() == dt ? x : x.to(dt));
}

// Fills every parameter with a seeded random init of torch.nn's scale
// (uniform +-1/sqrt(fan_in); norms at 1 and 0): for tests and benchmarks of
// models whose weights are not at hand.
void init_random(torch::nn::Module& model, uint64_t seed);

}  // namespace rsam::diffusion
