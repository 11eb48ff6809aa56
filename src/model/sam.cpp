// SAM modules. Each forward follows the official implementation operation by
// operation (same order, same scalars) so fp32 results match it to rounding;
// where rsam computes something differently for speed (chunked global
// attention) the reference formulation stays beside it and tests hold the two
// together.
#include "model/sam.h"

#include <cmath>

#include "error.h"
#include "model/attention.h"
#include "model/mask_resize.h"

namespace rsam {

namespace F = torch::nn::functional;
using torch::Tensor;

// ---- common ----------------------------------------------------------------

LayerNorm2dImpl::LayerNorm2dImpl(int64_t channels, double eps_) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({channels}));
  bias = register_parameter("bias", torch::zeros({channels}));
}

Tensor LayerNorm2dImpl::forward(const Tensor& x_in) {
  // Statistics in fp32 even when a bf16 conv feeds it: a bf16 variance
  // visibly moves the neck's output (no effect in fp32).
  const auto x = x_in.to(torch::kFloat32);
  auto u = x.mean(1, /*keepdim=*/true);
  auto s = (x - u).pow(2).mean(1, true);
  auto y = (x - u) / torch::sqrt(s + eps);
  return weight.index({torch::indexing::Slice(), torch::indexing::None, torch::indexing::None}) * y +
         bias.index({torch::indexing::Slice(), torch::indexing::None, torch::indexing::None});
}

MLPBlockImpl::MLPBlockImpl(int64_t dim, int64_t mlp_dim, bool relu_) : relu(relu_) {
  lin1 = register_module("lin1", AdaptableLinear(dim, mlp_dim));
  lin2 = register_module("lin2", AdaptableLinear(mlp_dim, dim));
}

Tensor MLPBlockImpl::forward(const Tensor& x) {
  auto h = lin1(x);
  return lin2(relu ? torch::relu(h) : torch::gelu(h));
}

// ---- image encoder ---------------------------------------------------------

std::pair<Tensor, std::pair<int64_t, int64_t>> window_partition(const Tensor& x_in, int64_t ws) {
  auto x = x_in;
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  const int64_t pad_h = (ws - H % ws) % ws, pad_w = (ws - W % ws) % ws;
  if (pad_h > 0 || pad_w > 0) x = F::pad(x, F::PadFuncOptions({0, 0, 0, pad_w, 0, pad_h}));
  const int64_t Hp = H + pad_h, Wp = W + pad_w;
  x = x.view({B, Hp / ws, ws, Wp / ws, ws, C});
  auto windows = x.permute({0, 1, 3, 2, 4, 5}).contiguous().view({-1, ws, ws, C});
  return {windows, {Hp, Wp}};
}

Tensor window_unpartition(const Tensor& windows, int64_t ws, std::pair<int64_t, int64_t> pad_hw,
                          std::pair<int64_t, int64_t> hw) {
  const auto [Hp, Wp] = pad_hw;
  const auto [H, W] = hw;
  const int64_t B = windows.size(0) / (Hp * Wp / ws / ws);
  auto x = windows.view({B, Hp / ws, Wp / ws, ws, ws, -1});
  x = x.permute({0, 1, 3, 2, 4, 5}).contiguous().view({B, Hp, Wp, -1});
  if (Hp > H || Wp > W) {
    using torch::indexing::Slice;
    x = x.index({Slice(), Slice(0, H), Slice(0, W), Slice()}).contiguous();
  }
  return x;
}

Tensor resize_rel_pos(const Tensor& rel_pos, int64_t length) {
  if (rel_pos.size(0) == length) return rel_pos;
  // Official code interpolates linearly when the table was trained for
  // another size.
  auto resized = F::interpolate(
      rel_pos.reshape({1, rel_pos.size(0), -1}).permute({0, 2, 1}),
      F::InterpolateFuncOptions().size(std::vector<int64_t>{length}).mode(torch::kLinear).align_corners(false));
  return resized.reshape({-1, length}).permute({1, 0});
}

Tensor get_rel_pos(int64_t q_size, int64_t k_size, const Tensor& rel_pos) {
  const Tensor resized = resize_rel_pos(rel_pos, 2 * std::max(q_size, k_size) - 1);
  const double qs = std::max(double(k_size) / double(q_size), 1.0);
  const double ks = std::max(double(q_size) / double(k_size), 1.0);
  auto opts = torch::TensorOptions().dtype(torch::kFloat32);
  auto q_coords = torch::arange(q_size, opts).unsqueeze(1) * qs;
  auto k_coords = torch::arange(k_size, opts).unsqueeze(0) * ks;
  auto rel = (q_coords - k_coords) + double(k_size - 1) * ks;
  return resized.index({rel.to(torch::kLong).to(resized.device())});
}

EncoderAttentionImpl::EncoderAttentionImpl(int64_t dim, int64_t heads, int64_t rel_size) : num_heads(heads) {
  const int64_t head_dim = dim / heads;
  scale = std::pow(double(head_dim), -0.5);
  qkv = register_module("qkv", AdaptableLinear(dim, dim * 3));
  proj = register_module("proj", AdaptableLinear(dim, dim));
  rel_pos_h = register_parameter("rel_pos_h", torch::zeros({2 * rel_size - 1, head_dim}));
  rel_pos_w = register_parameter("rel_pos_w", torch::zeros({2 * rel_size - 1, head_dim}));
}

Tensor EncoderAttentionImpl::forward(const Tensor& x) {
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2);
  auto qkv_out = qkv(x).reshape({B, H * W, 3, num_heads, -1}).permute({2, 0, 3, 1, 4});
  auto parts = qkv_out.reshape({3, B * num_heads, H * W, -1}).unbind(0);
  const auto& q = parts[0];
  const auto& k = parts[1];
  const auto& v = parts[2];
  auto Rh = get_rel_pos(H, H, rel_pos_h);
  auto Rw = get_rel_pos(W, W, rel_pos_w);
  auto out = attention_with_rel_pos(q, k, v, Rh, Rw, H, W, scale, is_training());
  auto y = out.view({B, num_heads, H, W, -1}).permute({0, 2, 3, 1, 4}).reshape({B, H, W, -1});
  return proj(y);
}

EncoderBlockImpl::EncoderBlockImpl(int64_t dim, int64_t heads, int64_t mlp_dim, int64_t window, int64_t grid)
    : window_size(window) {
  norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-6)));
  attn = register_module("attn", EncoderAttention(dim, heads, window == 0 ? grid : window));
  norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-6)));
  mlp = register_module("mlp", MLPBlock(dim, mlp_dim, /*relu=*/false));
}

// Input-dependent adapters (GaRA, MoE-LoRA) gate on f(x) = the per-image
// mean of the block's normalized input tokens: norm1's output for the
// attention layers, norm2's for the MLP. It is computed before windowing, so
// padding never enters it, and only when an attached adapter asks for it.
static void set_context(AdaptableLinear& l, const Tensor& normed) {
  if (!l->wants_pooled()) return;
  l->context.pooled = normed.mean({1, 2});
  l->context.images = normed.size(0);
}

Tensor EncoderBlockImpl::forward(const Tensor& x_in) {
  auto shortcut = x_in;
  auto x = norm1(x_in);
  set_context(attn->qkv, x);
  set_context(attn->proj, x);
  const int64_t H = x.size(1), W = x.size(2);
  std::pair<int64_t, int64_t> pad_hw{H, W};
  if (window_size > 0) std::tie(x, pad_hw) = window_partition(x, window_size);
  x = attn(x);
  if (window_size > 0) x = window_unpartition(x, window_size, pad_hw, {H, W});
  x = shortcut + x;
  auto xn = norm2(x);
  set_context(mlp->lin1, xn);
  set_context(mlp->lin2, xn);
  return x + mlp(xn);
}

PatchEmbedImpl::PatchEmbedImpl(int64_t in_chans, int64_t dim, int64_t patch) {
  proj = register_module("proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_chans, dim, patch).stride(patch)));
}

Tensor PatchEmbedImpl::forward(const Tensor& x) { return conv_fp32_on_cpu(*proj, x).permute({0, 2, 3, 1}); }

ImageEncoderViTImpl::ImageEncoderViTImpl(const SamConfig& c) : img_size(c.img_size) {
  const int64_t grid = c.embedding_size();
  patch_embed = register_module("patch_embed", PatchEmbed(c.in_chans, c.encoder_embed_dim, c.patch_size));
  pos_embed = register_parameter("pos_embed", torch::zeros({1, grid, grid, c.encoder_embed_dim}));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int i = 0; i < c.encoder_depth; ++i) {
    const bool global =
        std::find(c.global_attn_indexes.begin(), c.global_attn_indexes.end(), i) != c.global_attn_indexes.end();
    blocks->push_back(
        EncoderBlock(c.encoder_embed_dim, c.encoder_num_heads, c.encoder_mlp_dim, global ? 0 : c.window_size, grid));
  }
  neck = register_module(
      "neck",
      torch::nn::Sequential(
          torch::nn::Conv2d(torch::nn::Conv2dOptions(c.encoder_embed_dim, c.prompt_embed_dim, 1).bias(false)),
          LayerNorm2d(c.prompt_embed_dim),
          torch::nn::Conv2d(torch::nn::Conv2dOptions(c.prompt_embed_dim, c.prompt_embed_dim, 3).padding(1).bias(false)),
          LayerNorm2d(c.prompt_embed_dim)));
}

Tensor ImageEncoderViTImpl::forward(const Tensor& input) {
  auto x = patch_embed(input);
  x = x + pos_embed;
  for (const auto& blk : *blocks) x = blk->as<EncoderBlock>()->forward(x);
  // The neck's modules one by one, so its convolutions can keep fp32 under
  // CPU bf16 (conv_fp32_on_cpu); the same as neck->forward otherwise.
  x = x.permute({0, 3, 1, 2});
  for (auto& m : *neck) {
    if (auto conv = std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(m.ptr())) {
      x = conv_fp32_on_cpu(*conv, x);
    } else {
      x = m.forward(x);
    }
  }
  return x;
}

// ---- prompt encoder --------------------------------------------------------

PositionEmbeddingRandomImpl::PositionEmbeddingRandomImpl(int64_t num_pos_feats) {
  positional_encoding_gaussian_matrix =
      register_buffer("positional_encoding_gaussian_matrix", torch::randn({2, num_pos_feats}));
}

Tensor PositionEmbeddingRandomImpl::pe_encoding(const Tensor& coords_in) const {
  auto coords = 2 * coords_in - 1;
  coords = torch::matmul(coords, positional_encoding_gaussian_matrix);
  coords = (2 * M_PI) * coords;
  return torch::cat({torch::sin(coords), torch::cos(coords)}, -1);
}

Tensor PositionEmbeddingRandomImpl::forward(int64_t h, int64_t w) const {
  auto grid = torch::ones(
      {h, w}, torch::TensorOptions().dtype(torch::kFloat32).device(positional_encoding_gaussian_matrix.device()));
  auto y_embed = grid.cumsum(0) - 0.5;
  auto x_embed = grid.cumsum(1) - 0.5;
  y_embed = y_embed / double(h);
  x_embed = x_embed / double(w);
  auto pe = pe_encoding(torch::stack({x_embed, y_embed}, -1));
  return pe.permute({2, 0, 1});
}

Tensor PositionEmbeddingRandomImpl::forward_with_coords(const Tensor& coords_in, int64_t img_h, int64_t img_w) const {
  auto coords = coords_in.clone();
  using torch::indexing::Slice;
  coords.index_put_({Slice(), Slice(), 0}, coords.index({Slice(), Slice(), 0}) / double(img_w));
  coords.index_put_({Slice(), Slice(), 1}, coords.index({Slice(), Slice(), 1}) / double(img_h));
  return pe_encoding(coords.to(torch::kFloat));
}

PromptEncoderImpl::PromptEncoderImpl(const SamConfig& c)
    : embed_dim(c.prompt_embed_dim),
      emb_h(c.embedding_size()),
      emb_w(c.embedding_size()),
      input_h(c.img_size),
      input_w(c.img_size) {
  pe_layer = register_module("pe_layer", PositionEmbeddingRandom(embed_dim / 2));
  point_embeddings = register_module("point_embeddings", torch::nn::ModuleList());
  for (int i = 0; i < 4; ++i) point_embeddings->push_back(torch::nn::Embedding(1, embed_dim));
  not_a_point_embed = register_module("not_a_point_embed", torch::nn::Embedding(1, embed_dim));
  const int64_t m = c.mask_in_chans;
  mask_downscaling = register_module(
      "mask_downscaling",
      torch::nn::Sequential(torch::nn::Conv2d(torch::nn::Conv2dOptions(1, m / 4, 2).stride(2)), LayerNorm2d(m / 4),
                            torch::nn::GELU(), torch::nn::Conv2d(torch::nn::Conv2dOptions(m / 4, m, 2).stride(2)),
                            LayerNorm2d(m), torch::nn::GELU(),
                            torch::nn::Conv2d(torch::nn::Conv2dOptions(m, embed_dim, 1))));
  no_mask_embed = register_module("no_mask_embed", torch::nn::Embedding(1, embed_dim));
}

Tensor PromptEncoderImpl::point_weight(int i) const {
  return point_embeddings->ptr(i)->as<torch::nn::Embedding>()->weight;
}

Tensor PromptEncoderImpl::get_dense_pe() const { return pe_layer->forward(emb_h, emb_w).unsqueeze(0); }

std::pair<Tensor, Tensor> PromptEncoderImpl::forward(const std::optional<std::pair<Tensor, Tensor>>& points,
                                                     const std::optional<Tensor>& boxes,
                                                     const std::optional<Tensor>& masks) {
  int64_t bs = 1;
  if (points)
    bs = points->first.size(0);
  else if (boxes)
    bs = boxes->size(0);
  else if (masks)
    bs = masks->size(0);
  const auto dev = point_weight(0).device();
  auto sparse = torch::empty({bs, 0, embed_dim}, torch::TensorOptions().device(dev));
  if (points) {
    auto coords = points->first + 0.5;  // centre of the pixel
    auto labels = points->second;
    if (!boxes) {
      // A padding point stands in for the missing box, as in the official code.
      coords = torch::cat({coords, torch::zeros({coords.size(0), 1, 2}, coords.options())}, 1);
      labels = torch::cat({labels, -torch::ones({labels.size(0), 1}, labels.options())}, 1);
    }
    auto pe = pe_layer->forward_with_coords(coords, input_h, input_w);
    auto lab = labels.unsqueeze(-1);
    pe = torch::where(lab == -1, torch::zeros_like(pe), pe);
    pe = pe + (lab == -1).to(pe.dtype()) * not_a_point_embed->weight;
    pe = pe + (lab == 0).to(pe.dtype()) * point_weight(0);
    pe = pe + (lab == 1).to(pe.dtype()) * point_weight(1);
    sparse = torch::cat({sparse, pe}, 1);
  }
  if (boxes) {
    auto coords = (*boxes + 0.5).reshape({-1, 2, 2});
    auto corner = pe_layer->forward_with_coords(coords, input_h, input_w);
    using torch::indexing::Slice;
    corner.index({Slice(), 0, Slice()}).add_(point_weight(2).squeeze(0));
    corner.index({Slice(), 1, Slice()}).add_(point_weight(3).squeeze(0));
    sparse = torch::cat({sparse, corner}, 1);
  }
  Tensor dense;
  if (masks)
    dense = mask_downscaling->forward(*masks);
  else
    dense = no_mask_embed->weight.reshape({1, -1, 1, 1}).expand({bs, -1, emb_h, emb_w});
  return {sparse, dense};
}

// ---- mask decoder ----------------------------------------------------------

DecoderAttentionImpl::DecoderAttentionImpl(int64_t dim, int64_t heads, int64_t downsample) : num_heads(heads) {
  const int64_t internal = dim / downsample;
  if (internal % heads != 0) throw Error("decoder attention: heads must divide internal width");
  q_proj = register_module("q_proj", torch::nn::Linear(dim, internal));
  k_proj = register_module("k_proj", torch::nn::Linear(dim, internal));
  v_proj = register_module("v_proj", torch::nn::Linear(dim, internal));
  out_proj = register_module("out_proj", torch::nn::Linear(internal, dim));
}

static Tensor separate_heads(const Tensor& x, int64_t h) {
  const int64_t b = x.size(0), n = x.size(1), c = x.size(2);
  return x.reshape({b, n, h, c / h}).transpose(1, 2);
}

Tensor DecoderAttentionImpl::forward(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in) {
  auto q = separate_heads(q_proj(q_in), num_heads);
  auto k = separate_heads(k_proj(k_in), num_heads);
  auto v = separate_heads(v_proj(v_in), num_heads);
  const int64_t c_per_head = q.size(3);
  auto attn = torch::matmul(q, k.permute({0, 1, 3, 2}));
  attn = attn / std::sqrt(double(c_per_head));
  attn = torch::softmax(attn, -1);
  auto out = torch::matmul(attn, v);
  out = out.transpose(1, 2);
  out = out.reshape({out.size(0), out.size(1), -1});
  return out_proj(out);
}

TwoWayAttentionBlockImpl::TwoWayAttentionBlockImpl(int64_t dim, int64_t heads, int64_t mlp_dim, int64_t downsample,
                                                   bool skip)
    : skip_first_layer_pe(skip) {
  self_attn = register_module("self_attn", DecoderAttention(dim, heads, 1));
  norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
  cross_attn_token_to_image = register_module("cross_attn_token_to_image", DecoderAttention(dim, heads, downsample));
  norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
  mlp = register_module("mlp", MLPBlock(dim, mlp_dim, /*relu=*/true));
  norm3 = register_module("norm3", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
  norm4 = register_module("norm4", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
  cross_attn_image_to_token = register_module("cross_attn_image_to_token", DecoderAttention(dim, heads, downsample));
}

std::pair<Tensor, Tensor> TwoWayAttentionBlockImpl::forward(Tensor queries, Tensor keys, const Tensor& query_pe,
                                                            const Tensor& key_pe) {
  if (skip_first_layer_pe) {
    queries = self_attn(queries, queries, queries);
  } else {
    auto q = queries + query_pe;
    queries = queries + self_attn(q, q, queries);
  }
  queries = norm1(queries);
  auto q = queries + query_pe;
  auto k = keys + key_pe;
  queries = queries + cross_attn_token_to_image(q, k, keys);
  queries = norm2(queries);
  queries = queries + mlp(queries);
  queries = norm3(queries);
  q = queries + query_pe;
  k = keys + key_pe;
  keys = keys + cross_attn_image_to_token(k, q, queries);
  keys = norm4(keys);
  return {queries, keys};
}

TwoWayTransformerImpl::TwoWayTransformerImpl(const SamConfig& c) {
  layers = register_module("layers", torch::nn::ModuleList());
  for (int i = 0; i < c.decoder_depth; ++i)
    layers->push_back(TwoWayAttentionBlock(c.prompt_embed_dim, c.decoder_num_heads, c.decoder_mlp_dim,
                                           c.attention_downsample_rate, i == 0));
  final_attn_token_to_image =
      register_module("final_attn_token_to_image",
                      DecoderAttention(c.prompt_embed_dim, c.decoder_num_heads, c.attention_downsample_rate));
  norm_final_attn =
      register_module("norm_final_attn", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.prompt_embed_dim})));
}

std::pair<Tensor, Tensor> TwoWayTransformerImpl::forward(const Tensor& image_embedding, const Tensor& image_pe_in,
                                                         const Tensor& point_embedding) {
  auto image = image_embedding.flatten(2).permute({0, 2, 1});
  auto image_pe = image_pe_in.flatten(2).permute({0, 2, 1});
  auto queries = point_embedding;
  auto keys = image;
  for (const auto& layer : *layers)
    std::tie(queries, keys) = layer->as<TwoWayAttentionBlock>()->forward(queries, keys, point_embedding, image_pe);
  auto q = queries + point_embedding;
  auto k = keys + image_pe;
  queries = queries + final_attn_token_to_image(q, k, keys);
  queries = norm_final_attn(queries);
  return {queries, keys};
}

MLPImpl::MLPImpl(int64_t in, int64_t hidden, int64_t out, int64_t num_layers) {
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < num_layers; ++i)
    layers->push_back(torch::nn::Linear(i == 0 ? in : hidden, i == num_layers - 1 ? out : hidden));
}

Tensor MLPImpl::forward(Tensor x) {
  const size_t n = layers->size();
  for (size_t i = 0; i < n; ++i) {
    x = layers[i]->as<torch::nn::Linear>()->forward(x);
    if (i + 1 < n) x = torch::relu(x);
  }
  return x;
}

MaskDecoderImpl::MaskDecoderImpl(const SamConfig& c)
    : transformer_dim(c.prompt_embed_dim), num_mask_tokens(c.num_multimask_outputs + 1) {
  const int64_t d = transformer_dim;
  transformer = register_module("transformer", TwoWayTransformer(c));
  iou_token = register_module("iou_token", torch::nn::Embedding(1, d));
  mask_tokens = register_module("mask_tokens", torch::nn::Embedding(num_mask_tokens, d));
  output_upscaling = register_module(
      "output_upscaling",
      torch::nn::Sequential(torch::nn::ConvTranspose2d(torch::nn::ConvTranspose2dOptions(d, d / 4, 2).stride(2)),
                            LayerNorm2d(d / 4), torch::nn::GELU(),
                            torch::nn::ConvTranspose2d(torch::nn::ConvTranspose2dOptions(d / 4, d / 8, 2).stride(2)),
                            torch::nn::GELU()));
  output_hypernetworks_mlps = register_module("output_hypernetworks_mlps", torch::nn::ModuleList());
  for (int64_t i = 0; i < num_mask_tokens; ++i) output_hypernetworks_mlps->push_back(MLP(d, d, d / 8, 3));
  iou_prediction_head =
      register_module("iou_prediction_head", MLP(d, c.iou_head_hidden_dim, num_mask_tokens, c.iou_head_depth));
}

std::pair<Tensor, Tensor> MaskDecoderImpl::forward(const Tensor& image_embeddings, const Tensor& image_pe,
                                                   const Tensor& sparse, const Tensor& dense, bool multimask,
                                                   const DecoderImageCache* cache) {
  // Training takes the reference path: its autograd graph is the official one.
  auto [masks, iou] = reference_decoder() || torch::GradMode::is_enabled()
                          ? predict_masks(image_embeddings, image_pe, sparse, dense)
                          : predict_masks_fast(image_embeddings, image_pe, sparse, dense, cache);
  using torch::indexing::Slice;
  auto sl = multimask ? Slice(1, torch::indexing::None) : Slice(0, 1);
  return {masks.index({Slice(), sl}), iou.index({Slice(), sl})};
}

std::pair<Tensor, Tensor> MaskDecoderImpl::predict_masks(const Tensor& image_embeddings, const Tensor& image_pe,
                                                         const Tensor& sparse, const Tensor& dense) {
  auto output_tokens = torch::cat({iou_token->weight, mask_tokens->weight}, 0);
  output_tokens = output_tokens.unsqueeze(0).expand({sparse.size(0), -1, -1});
  auto tokens = torch::cat({output_tokens, sparse}, 1);
  // The official code repeats one image embedding per prompt; with a batch of
  // image embeddings (training) each prompt set already has its own.
  Tensor src = image_embeddings.size(0) == tokens.size(0)
                   ? image_embeddings
                   : torch::repeat_interleave(image_embeddings, tokens.size(0), 0);
  src = src + dense;
  auto pos_src = torch::repeat_interleave(image_pe, tokens.size(0), 0);
  const int64_t b = src.size(0), c = src.size(1), h = src.size(2), w = src.size(3);
  auto [hs, src_out] = transformer(src, pos_src, tokens);
  using torch::indexing::Slice;
  auto iou_token_out = hs.index({Slice(), 0, Slice()});
  auto mask_tokens_out = hs.index({Slice(), Slice(1, 1 + num_mask_tokens), Slice()});
  src_out = src_out.transpose(1, 2).reshape({b, c, h, w});
  auto upscaled = output_upscaling->forward(src_out);
  std::vector<Tensor> hyper_in_list;
  for (int64_t i = 0; i < num_mask_tokens; ++i)
    hyper_in_list.push_back(
        output_hypernetworks_mlps[i]->as<MLP>()->forward(mask_tokens_out.index({Slice(), i, Slice()})));
  auto hyper_in = torch::stack(hyper_in_list, 1);
  const int64_t ub = upscaled.size(0), uc = upscaled.size(1), uh = upscaled.size(2), uw = upscaled.size(3);
  auto masks = torch::matmul(hyper_in, upscaled.view({ub, uc, uh * uw})).view({ub, -1, uh, uw});
  auto iou_pred = iou_prediction_head(iou_token_out);
  return {masks, iou_pred};
}

// ---- SAM -------------------------------------------------------------------

SamImpl::SamImpl(const SamConfig& c) : config(c) {
  c.validate();
  image_encoder = register_module("image_encoder", ImageEncoderViT(c));
  prompt_encoder = register_module("prompt_encoder", PromptEncoder(c));
  mask_decoder = register_module("mask_decoder", MaskDecoder(c));
  pixel_mean = torch::tensor({123.675f, 116.28f, 103.53f}).view({-1, 1, 1});
  pixel_std = torch::tensor({58.395f, 57.12f, 57.375f}).view({-1, 1, 1});
}

void SamImpl::to_device(const torch::Device& d) {
  this->to(d);
  pixel_mean = pixel_mean.to(d);
  pixel_std = pixel_std.to(d);
}

Tensor SamImpl::preprocess(const Tensor& x_in) const {
  auto x = (x_in - pixel_mean) / pixel_std;
  const int64_t h = x.size(-2), w = x.size(-1);
  const int64_t s = config.img_size;
  return F::pad(x, F::PadFuncOptions({0, s - w, 0, s - h}));
}

Tensor SamImpl::postprocess_masks(const Tensor& masks, std::pair<int64_t, int64_t> input_size,
                                  std::pair<int64_t, int64_t> original_size) const {
  if (reference_decoder() || !masks.device().is_cpu() || masks.scalar_type() != torch::kFloat32 ||
      masks.requires_grad())
    return postprocess_masks_reference(masks, input_size, original_size);
  return resize_masks_composed(masks, config.img_size, input_size, original_size);
}

Tensor SamImpl::postprocess_masks_reference(const Tensor& masks, std::pair<int64_t, int64_t> input_size,
                                            std::pair<int64_t, int64_t> original_size) const {
  const int64_t s = config.img_size;
  auto m = F::interpolate(
      masks, F::InterpolateFuncOptions().size(std::vector<int64_t>{s, s}).mode(torch::kBilinear).align_corners(false));
  using torch::indexing::Slice;
  m = m.index({"...", Slice(0, input_size.first), Slice(0, input_size.second)});
  return F::interpolate(m, F::InterpolateFuncOptions()
                               .size(std::vector<int64_t>{original_size.first, original_size.second})
                               .mode(torch::kBilinear)
                               .align_corners(false));
}

}  // namespace rsam
