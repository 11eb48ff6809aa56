// Shared maths of the low-rank family (LoRA, GaRA, MoE-LoRA): a layer's
// output is split into S independent slices (q, k, v), each with its own
// rank-r factors. A is stored stacked [S*r, in], B as [S, out/S, r].
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace rsam::adapt {

// kaiming-uniform(a=sqrt(5)) A, as LoRA and the reference adapters use.
torch::Tensor init_lora_a(int64_t rows, int64_t in);

// x [..., in] -> sum over components of B_s diag(mask) A_s x, [..., S*out_s].
// mask is [rows_of_x_leading_dim or 1, S*r] (per-sample gates) or undefined.
torch::Tensor lowrank_delta(const torch::Tensor& x, const torch::Tensor& A, const torch::Tensor& B,
                            const torch::Tensor& mask);

// Dense update B diag(mask) A as a [S*out_s, in] matrix; mask [S*r] or undefined.
torch::Tensor lowrank_weight(const torch::Tensor& A, const torch::Tensor& B, const torch::Tensor& mask);

// Expands per-image values [images, ...] to x's leading dimension, where x
// holds `groups` consecutive rows per image (attention windows).
torch::Tensor per_row(const torch::Tensor& per_image, int64_t rows);

// Applies a different weight per image: y_b = x_b W_b^T + bias, with
// W_b = weight + delta(b). The fast inference path of input-dependent
// adapters: one dense fold per image instead of a low-rank path per token.
torch::Tensor linear_per_image(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                               int64_t images, const std::function<torch::Tensor(int64_t)>& delta);

// True when folding (out*in per image) is cheaper than the per-token
// low-rank path (tokens*(in+out) per active component).
bool fold_is_cheaper(const torch::Tensor& x, int64_t in, int64_t out, int64_t images);

// Per-image feature for the gates: the block's pooled input when the model
// provides it, else the mean of x's tokens per leading row.
std::pair<torch::Tensor, int64_t> gate_input(const torch::Tensor& x, const torch::Tensor& pooled, int64_t images);

// Adapter options shared by the family: a positive integer (`def` when the
// key is absent), and the inference path (auto, fold or lowrank).
int64_t positive_option(const nlohmann::json& cfg, const char* key, int64_t def);
std::string path_option(const nlohmann::json& cfg);

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
  torch::Tensor forward(torch::Tensor x) {
    for (size_t i = 0; i < fc.size(); ++i) {
      x = fc[i](x);
      if (i + 1 < fc.size()) x = torch::relu(x);
    }
    return x;
  }
  std::vector<torch::nn::Linear> fc;
};

}  // namespace rsam::adapt
