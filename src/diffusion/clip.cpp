// Follows transformers 4.28's modeling_clip.py (CLIPTextTransformer and
// CLIPAttention) operation by operation.
#include "diffusion/clip.h"

#include <cmath>
#include <limits>

#include "error.h"
#include "model/attention.h"
#include "model/gemm.h"

namespace rsam::diffusion {

using torch::Tensor;

ClipAttentionImpl::ClipAttentionImpl(int64_t dim, int64_t h) : heads(h), scale(std::pow(double(dim / h), -0.5)) {
  k_proj = register_module("k_proj", Linear(dim, dim));
  v_proj = register_module("v_proj", Linear(dim, dim));
  q_proj = register_module("q_proj", Linear(dim, dim));
  out_proj = register_module("out_proj", Linear(dim, dim));
}

Tensor ClipAttentionImpl::forward(const Tensor& x, const Tensor& mask) {
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2), d = D / heads;
  auto shape = [&](const Tensor& t) { return t.view({B, L, heads, d}).transpose(1, 2).reshape({B * heads, L, d}); };
  // transformers scales the projected queries, then adds the causal mask.
  auto q = shape(q_proj(x) * scale);
  auto k = shape(k_proj(x));
  auto v = shape(v_proj(x));
  auto w = gemm::matmul(q, k.transpose(1, 2));
  w = (w.view({B, heads, L, L}) + mask).view({B * heads, L, L});
  w = cpu_bf16(x) ? w.to(torch::kFloat32).softmax(-1).to(q.scalar_type()) : w.softmax(-1);
  auto o = gemm::matmul(w, bf16_safe_rhs(v));
  o = o.view({B, heads, L, d}).transpose(1, 2).reshape({B, L, D});
  return out_proj(o);
}

ClipMLPImpl::ClipMLPImpl(int64_t dim, int64_t inner, Act a) : act(a) {
  fc1 = register_module("fc1", Linear(dim, inner));
  fc2 = register_module("fc2", Linear(inner, dim));
}

Tensor ClipMLPImpl::forward(const Tensor& x) { return fc2(apply_act(act, fc1(x))); }

ClipEncoderLayerImpl::ClipEncoderLayerImpl(const ClipTextConfig& c) {
  auto ln = [&] {
    return torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps));
  };
  self_attn = register_module("self_attn", ClipAttention(c.hidden_size, c.num_attention_heads));
  layer_norm1 = register_module("layer_norm1", ln());
  mlp = register_module("mlp", ClipMLP(c.hidden_size, c.intermediate_size, parse_act(c.hidden_act)));
  layer_norm2 = register_module("layer_norm2", ln());
}

Tensor ClipEncoderLayerImpl::forward(Tensor x, const Tensor& mask) {
  x = x + self_attn(norm_fp32(layer_norm1, x), mask);
  return x + mlp(norm_fp32(layer_norm2, x));
}

ClipTextEmbeddingsImpl::ClipTextEmbeddingsImpl(const ClipTextConfig& c) {
  token_embedding = register_module("token_embedding", Embedding(c.vocab_size, c.hidden_size));
  position_embedding = register_module("position_embedding", Embedding(c.max_position_embeddings, c.hidden_size));
  position_ids = register_buffer("position_ids", torch::arange(c.max_position_embeddings, torch::kLong).unsqueeze(0));
}

Tensor ClipTextEmbeddingsImpl::forward(const Tensor& ids) {
  const int64_t L = ids.size(1);
  auto pos = position_ids.narrow(1, 0, L);
  return token_embedding(ids) + position_embedding(pos);
}

ClipEncoderImpl::ClipEncoderImpl(const ClipTextConfig& c) {
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(ClipEncoderLayer(c));
}

ClipTextTransformerImpl::ClipTextTransformerImpl(const ClipTextConfig& c) {
  embeddings = register_module("embeddings", ClipTextEmbeddings(c));
  encoder = register_module("encoder", ClipEncoder(c));
  final_layer_norm = register_module(
      "final_layer_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps)));
}

Tensor ClipTextTransformerImpl::forward(const Tensor& ids) {
  auto h = embeddings(ids);
  const int64_t L = ids.size(1);
  // _build_causal_attention_mask: the dtype's lowest value above the
  // diagonal (not -inf), 0 on and below it.
  auto mask = torch::full({L, L}, std::numeric_limits<float>::lowest(), h.options().dtype(torch::kFloat32)).triu(1);
  if (h.scalar_type() != torch::kFloat32) mask = mask.to(h.scalar_type());
  for (auto& layer : *encoder->layers) h = layer->as<ClipEncoderLayer>()->forward(h, mask);
  return norm_fp32(final_layer_norm, h);
}

ClipTextModelImpl::ClipTextModelImpl(const ClipTextConfig& c) : config(c) {
  config.validate();
  text_model = register_module("text_model", ClipTextTransformer(config));
}

Tensor ClipTextModelImpl::forward(const Tensor& ids) {
  if (ids.dim() != 2 || ids.size(1) < 1 || ids.size(1) > config.max_position_embeddings)
    throw Error("text encoder input must be [B, L] with L <= " + std::to_string(config.max_position_embeddings));
  if (ids.numel() && (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= config.vocab_size))
    throw Error("token id out of the text encoder's vocabulary (" + std::to_string(config.vocab_size) + ")");
  return text_model(ids.to(torch::kLong));
}

}  // namespace rsam::diffusion
