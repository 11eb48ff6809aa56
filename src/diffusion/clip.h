// transformers' CLIPTextModel (4.28) on LibTorch: the text encoder of a
// Stable Diffusion folder. Names equal the state-dict keys
// ("text_model.encoder.layers.0.self_attn.q_proj.weight"); the output is
// last_hidden_state (after the final layer norm) under the causal mask.
#pragma once

#include <torch/torch.h>

#include "diffusion/config.h"
#include "diffusion/layers.h"

namespace rsam::diffusion {

struct ClipAttentionImpl : torch::nn::Module {
  ClipAttentionImpl(int64_t dim, int64_t heads);
  // x [B, L, D]; mask: additive [L, L].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask);
  Linear k_proj{nullptr}, v_proj{nullptr}, q_proj{nullptr}, out_proj{nullptr};
  int64_t heads;
  double scale;
};
TORCH_MODULE(ClipAttention);

struct ClipMLPImpl : torch::nn::Module {
  ClipMLPImpl(int64_t dim, int64_t inner, Act act);
  torch::Tensor forward(const torch::Tensor& x);
  Linear fc1{nullptr}, fc2{nullptr};
  Act act;
};
TORCH_MODULE(ClipMLP);

struct ClipEncoderLayerImpl : torch::nn::Module {
  explicit ClipEncoderLayerImpl(const ClipTextConfig& c);
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& mask);
  ClipAttention self_attn{nullptr};
  torch::nn::LayerNorm layer_norm1{nullptr}, layer_norm2{nullptr};
  ClipMLP mlp{nullptr};
};
TORCH_MODULE(ClipEncoderLayer);

struct ClipTextEmbeddingsImpl : torch::nn::Module {
  explicit ClipTextEmbeddingsImpl(const ClipTextConfig& c);
  torch::Tensor forward(const torch::Tensor& ids);
  Embedding token_embedding{nullptr}, position_embedding{nullptr};
  // transformers <= 4.30 saves this buffer (int64 [1, max_positions]) and
  // uses the file's values; later files lack it and it is arange.
  torch::Tensor position_ids;
};
TORCH_MODULE(ClipTextEmbeddings);

struct ClipEncoderImpl : torch::nn::Module {
  explicit ClipEncoderImpl(const ClipTextConfig& c);
  torch::nn::ModuleList layers{nullptr};
};
TORCH_MODULE(ClipEncoder);

struct ClipTextTransformerImpl : torch::nn::Module {
  explicit ClipTextTransformerImpl(const ClipTextConfig& c);
  torch::Tensor forward(const torch::Tensor& ids);
  ClipTextEmbeddings embeddings{nullptr};
  ClipEncoder encoder{nullptr};
  torch::nn::LayerNorm final_layer_norm{nullptr};
};
TORCH_MODULE(ClipTextTransformer);

struct ClipTextModelImpl : torch::nn::Module {
  explicit ClipTextModelImpl(const ClipTextConfig& c);
  // ids [B, L] (L <= max_position_embeddings) -> last_hidden_state [B, L, D].
  torch::Tensor forward(const torch::Tensor& ids);
  ClipTextConfig config;
  ClipTextTransformer text_model{nullptr};
};
TORCH_MODULE(ClipTextModel);

}  // namespace rsam::diffusion
