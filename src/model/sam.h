// Segment Anything on LibTorch. Module and parameter names mirror the official
// PyTorch code one to one (`image_encoder.blocks.0.attn.qkv.weight`, ...), so
// an official state_dict loads by name with no translation table.
#pragma once

#include <torch/torch.h>

#include <optional>
#include <utility>

#include "model/config.h"
#include "model/linear.h"

namespace rsam {

// Channel-wise LayerNorm over NCHW (official common.LayerNorm2d).
struct LayerNorm2dImpl : torch::nn::Module {
  LayerNorm2dImpl(int64_t channels, double eps = 1e-6);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight, bias;
  double eps;
};
TORCH_MODULE(LayerNorm2d);

struct MLPBlockImpl : torch::nn::Module {
  MLPBlockImpl(int64_t dim, int64_t mlp_dim, bool relu);
  torch::Tensor forward(const torch::Tensor& x);
  AdaptableLinear lin1{nullptr}, lin2{nullptr};
  bool relu;  // the decoder uses ReLU, the encoder GELU
};
TORCH_MODULE(MLPBlock);

// ---- Image encoder -------------------------------------------------------

struct EncoderAttentionImpl : torch::nn::Module {
  EncoderAttentionImpl(int64_t dim, int64_t heads, int64_t rel_size);
  // x: [B, H, W, C]
  torch::Tensor forward(const torch::Tensor& x);
  int64_t num_heads;
  double scale;
  AdaptableLinear qkv{nullptr}, proj{nullptr};
  torch::Tensor rel_pos_h, rel_pos_w;
};
TORCH_MODULE(EncoderAttention);

struct EncoderBlockImpl : torch::nn::Module {
  EncoderBlockImpl(int64_t dim, int64_t heads, int64_t mlp_dim, int64_t window, int64_t grid);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  EncoderAttention attn{nullptr};
  MLPBlock mlp{nullptr};
  int64_t window_size;
};
TORCH_MODULE(EncoderBlock);

struct PatchEmbedImpl : torch::nn::Module {
  PatchEmbedImpl(int64_t in_chans, int64_t dim, int64_t patch);
  torch::Tensor forward(const torch::Tensor& x);  // [B, C, H, W] -> [B, H/p, W/p, dim]
  torch::nn::Conv2d proj{nullptr};
};
TORCH_MODULE(PatchEmbed);

struct ImageEncoderViTImpl : torch::nn::Module {
  explicit ImageEncoderViTImpl(const SamConfig& cfg);
  // x: normalized, padded [B, 3, S, S] -> [B, prompt_embed_dim, S/p, S/p]
  torch::Tensor forward(const torch::Tensor& x);
  PatchEmbed patch_embed{nullptr};
  torch::Tensor pos_embed;
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::Sequential neck{nullptr};
  int64_t img_size;
};
TORCH_MODULE(ImageEncoderViT);

// ---- Prompt encoder ------------------------------------------------------

struct PositionEmbeddingRandomImpl : torch::nn::Module {
  explicit PositionEmbeddingRandomImpl(int64_t num_pos_feats);
  torch::Tensor pe_encoding(const torch::Tensor& coords) const;
  torch::Tensor forward(int64_t h, int64_t w) const;  // [C, H, W]
  // coords in input-image pixels [B, N, 2] (x, y).
  torch::Tensor forward_with_coords(const torch::Tensor& coords, int64_t img_h, int64_t img_w) const;
  torch::Tensor positional_encoding_gaussian_matrix;
};
TORCH_MODULE(PositionEmbeddingRandom);

struct PromptEncoderImpl : torch::nn::Module {
  explicit PromptEncoderImpl(const SamConfig& cfg);
  torch::Tensor get_dense_pe() const;  // [1, C, h, w]
  // points: ([B,N,2] float, [B,N] int labels); boxes [B,4]; masks [B,1,4h,4w].
  // Returns (sparse [B, n, C], dense [B, C, h, w]).
  std::pair<torch::Tensor, torch::Tensor> forward(
      const std::optional<std::pair<torch::Tensor, torch::Tensor>>& points,
      const std::optional<torch::Tensor>& boxes, const std::optional<torch::Tensor>& masks);
  int64_t embed_dim, emb_h, emb_w, input_h, input_w;
  PositionEmbeddingRandom pe_layer{nullptr};
  torch::nn::ModuleList point_embeddings{nullptr};
  torch::nn::Embedding not_a_point_embed{nullptr}, no_mask_embed{nullptr};
  torch::nn::Sequential mask_downscaling{nullptr};

 private:
  torch::Tensor point_weight(int i) const;
};
TORCH_MODULE(PromptEncoder);

// ---- Mask decoder --------------------------------------------------------

struct DecoderAttentionImpl : torch::nn::Module {
  DecoderAttentionImpl(int64_t dim, int64_t heads, int64_t downsample);
  torch::Tensor forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);
  int64_t num_heads;
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};
};
TORCH_MODULE(DecoderAttention);

// What a decode computes from the image alone: the first two-way block's
// projections of the image tokens (keys = embedding + no-mask embedding).
// Valid for every prompt without a mask input, so the predictor makes it
// once per image (MaskDecoderImpl::prepare) instead of once per prompt.
struct DecoderImageCache {
  torch::Tensor keys;    // [1, N, C] layer 0's keys
  torch::Tensor key_pe;  // [1, N, C] the dense positional encoding as tokens
  torch::Tensor t2i_k, t2i_v;  // layer 0 cross_attn_token_to_image k, v: [heads, N, d]
  torch::Tensor i2t_q;         // layer 0 cross_attn_image_to_token q: [heads, N, d]
  bool defined() const { return keys.defined(); }
};

// Process-wide switch (benchmarks, tests): decode with the reference
// formulation (the official code transcribed) instead of the fast one.
void set_reference_decoder(bool on);
bool reference_decoder();

struct TwoWayAttentionBlockImpl : torch::nn::Module {
  TwoWayAttentionBlockImpl(int64_t dim, int64_t heads, int64_t mlp_dim, int64_t downsample,
                           bool skip_first_layer_pe);
  std::pair<torch::Tensor, torch::Tensor> forward(torch::Tensor queries, torch::Tensor keys,
                                                  const torch::Tensor& query_pe,
                                                  const torch::Tensor& key_pe);
  DecoderAttention self_attn{nullptr}, cross_attn_token_to_image{nullptr},
      cross_attn_image_to_token{nullptr};
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr}, norm3{nullptr}, norm4{nullptr};
  MLPBlock mlp{nullptr};
  bool skip_first_layer_pe;
};
TORCH_MODULE(TwoWayAttentionBlock);

struct TwoWayTransformerImpl : torch::nn::Module {
  explicit TwoWayTransformerImpl(const SamConfig& cfg);
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& image_embedding,
                                                  const torch::Tensor& image_pe,
                                                  const torch::Tensor& point_embedding);
  // The same maths with tokens-major keys [1 or B, N, C] and key_pe [1, N, C],
  // the attention's projections reassociated so that the wide (N-token)
  // products run at the width heads*tokens instead of the internal width
  // (fast_decoder.cpp). With a cache, keys must be cache->keys.
  std::pair<torch::Tensor, torch::Tensor> forward_fast(const torch::Tensor& keys, const torch::Tensor& key_pe,
                                                       const torch::Tensor& point_embedding,
                                                       const DecoderImageCache* cache);
  torch::nn::ModuleList layers{nullptr};
  DecoderAttention final_attn_token_to_image{nullptr};
  torch::nn::LayerNorm norm_final_attn{nullptr};
};
TORCH_MODULE(TwoWayTransformer);

struct MLPImpl : torch::nn::Module {
  MLPImpl(int64_t in, int64_t hidden, int64_t out, int64_t num_layers);
  torch::Tensor forward(torch::Tensor x);
  torch::nn::ModuleList layers{nullptr};
};
TORCH_MODULE(MLP);

struct MaskDecoderImpl : torch::nn::Module {
  explicit MaskDecoderImpl(const SamConfig& cfg);
  // Returns (low-res mask logits [B, M, 4h, 4w], iou [B, M]); M = 3 when
  // multimask (tokens 1..3), else 1 (token 0), as the official code slices.
  // image_embeddings is [1 or B, C, h, w]; a single embedding is shared by
  // all B prompts, as the predictor's batched path does.
  // `cache` (from prepare on the same embedding) may be given only when
  // `dense` is the no-mask embedding; it is ignored on the reference path.
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& image_embeddings,
                                                  const torch::Tensor& image_pe,
                                                  const torch::Tensor& sparse,
                                                  const torch::Tensor& dense, bool multimask,
                                                  const DecoderImageCache* cache = nullptr);
  DecoderImageCache prepare(const torch::Tensor& image_embedding, const torch::Tensor& image_pe,
                            const torch::Tensor& no_mask_dense);
  // The official formulation (reference) and the fast one: same outputs to
  // rounding (tests/model holds them together).
  std::pair<torch::Tensor, torch::Tensor> predict_masks_fast(const torch::Tensor& image_embeddings,
                                                             const torch::Tensor& image_pe,
                                                             const torch::Tensor& sparse,
                                                             const torch::Tensor& dense,
                                                             const DecoderImageCache* cache);
  // output_upscaling of tokens-major keys [B, h*w, C] as two GEMMs (a
  // stride-2 kernel-2 transposed convolution is one per pixel), dotted with
  // hyper_in [B, M, C/8]: masks [B, M, 4h, 4w].
  torch::Tensor upscale_masks_fast(const torch::Tensor& keys, const torch::Tensor& hyper_in, int64_t h, int64_t w);
  std::pair<torch::Tensor, torch::Tensor> predict_masks(const torch::Tensor& image_embeddings,
                                                        const torch::Tensor& image_pe,
                                                        const torch::Tensor& sparse,
                                                        const torch::Tensor& dense);
  int64_t transformer_dim, num_mask_tokens;
  TwoWayTransformer transformer{nullptr};
  torch::nn::Embedding iou_token{nullptr}, mask_tokens{nullptr};
  torch::nn::Sequential output_upscaling{nullptr};
  torch::nn::ModuleList output_hypernetworks_mlps{nullptr};
  MLP iou_prediction_head{nullptr};
};
TORCH_MODULE(MaskDecoder);

// ---- SAM -----------------------------------------------------------------

struct SamImpl : torch::nn::Module {
  explicit SamImpl(const SamConfig& cfg);
  SamConfig config;
  ImageEncoderViT image_encoder{nullptr};
  PromptEncoder prompt_encoder{nullptr};
  MaskDecoder mask_decoder{nullptr};
  // Not part of the state dict (the official code registers them
  // non-persistent); kept as plain members and moved with the model.
  torch::Tensor pixel_mean, pixel_std;

  torch::Device device() const { return pixel_mean.device(); }
  void to_device(const torch::Device& d);
  // x: [B, 3, h, w] float RGB in 0..255 with max(h, w) <= img_size.
  torch::Tensor preprocess(const torch::Tensor& x) const;
  // Low-res logits -> logits at the original size (official postprocess_masks).
  torch::Tensor postprocess_masks(const torch::Tensor& masks, std::pair<int64_t, int64_t> input_size,
                                  std::pair<int64_t, int64_t> original_size) const;
  // The official two interpolations (the reference; postprocess_masks runs
  // the composed one of model/mask_resize.h on CPU float masks).
  torch::Tensor postprocess_masks_reference(const torch::Tensor& masks, std::pair<int64_t, int64_t> input_size,
                                            std::pair<int64_t, int64_t> original_size) const;
};
TORCH_MODULE(Sam);

// Full window_partition / unpartition, exposed for tests.
std::pair<torch::Tensor, std::pair<int64_t, int64_t>> window_partition(const torch::Tensor& x,
                                                                        int64_t ws);
torch::Tensor window_unpartition(const torch::Tensor& windows, int64_t ws,
                                 std::pair<int64_t, int64_t> pad_hw, std::pair<int64_t, int64_t> hw);
torch::Tensor get_rel_pos(int64_t q_size, int64_t k_size, const torch::Tensor& rel_pos);
// A rel-pos table [L, C] linearly resized to `length` rows, as get_rel_pos
// does when the table was trained for another size.
torch::Tensor resize_rel_pos(const torch::Tensor& rel_pos, int64_t length);

}  // namespace rsam
