// The mask decoder's fast path: the same maths as the reference
// (MaskDecoderImpl::predict_masks, the official code transcribed), arranged
// so that the products over the 4,096 image tokens are as narrow as the
// algebra allows.
//
// In SAM's two-way attention one side has a handful of tokens (T prompt and
// output tokens) and the other N image tokens. The reference projects the N
// tokens to the internal width D (q/k/v projections, N x C x D each) and back
// (out_proj, N x D x C). Per head h, with the few tokens' projections at hand,
//   logits  = (x W_h^T + b_h) t_h^T = x (W_h^T t_h^T) + b_h t_h^T,
//   output  = P (x Wv_h^T + bv_h) = (P x) Wv_h^T + bv_h   (rows of P sum to 1),
//   out_proj(sum over heads) = sum_h P_h (v_h Wo_h^T),
// so the wide products run at width heads*T (8 x 7 = 56 in SAM) instead of
// D (128): N x C x 56 instead of N x C x 128. The first block's projections
// of the image tokens do not depend on the prompt at all and are computed
// once per image (DecoderImageCache). The upscaling's transposed
// convolutions (kernel 2, stride 2) are one GEMM per pixel each, run on the
// tokens-major keys without the NCHW round trip.
#include <atomic>
#include <cmath>

#include "model/gemm.h"
#include "model/sam.h"

namespace rsam {

namespace F = torch::nn::functional;
using torch::Tensor;

namespace {

std::atomic<bool> g_reference_decoder{false};

// [B, T, D] -> [B, heads, T, d]
Tensor heads_of(const Tensor& x, int64_t heads) {
  return x.view({x.size(0), x.size(1), heads, -1}).transpose(1, 2);
}

// A projection on the fast GEMM path.
Tensor project(const torch::nn::Linear& l, const Tensor& x) { return gemm::linear(x, l->weight, l->bias); }

// A projection's weight per head: [D, C] -> [heads, d, C]; bias [heads, d].
Tensor weight_heads(const torch::nn::Linear& l, int64_t heads) { return l->weight.view({heads, -1, l->weight.size(1)}); }
Tensor bias_heads(const torch::nn::Linear& l, int64_t heads) { return l->bias.view({heads, -1}); }

// Tokens attend to the image: attn(q = tokens_q, k = image_k, v = image_v)
// for tokens_q [B, T, C] and image tokens [Bk, N, C] (Bk = 1 or B).
// Returns [B, T, C].
Tensor tokens_to_image(DecoderAttentionImpl& a, const Tensor& tokens_q, const Tensor& image_k,
                       const Tensor& image_v) {
  const int64_t h = a.num_heads, B = tokens_q.size(0), T = tokens_q.size(1), C = image_k.size(2);
  auto q = heads_of(project(a.q_proj, tokens_q), h);                      // [B, h, T, d]
  const double inv = 1.0 / std::sqrt(double(q.size(3)));
  auto qk = gemm::matmul(q, weight_heads(a.k_proj, h));         // [B, h, T, C]
  auto qb = (q * bias_heads(a.k_proj, h).unsqueeze(1)).sum(-1);  // [B, h, T]
  Tensor logits;
  if (image_k.size(0) == B)
    logits = gemm::matmul(qk.reshape({B, h * T, C}), image_k.transpose(1, 2));  // [B, hT, N]
  else
    logits = gemm::matmul(qk.reshape({B * h * T, C}), image_k[0].t()).view({B, h * T, -1});
  logits.add_(qb.reshape({B, h * T, 1})).mul_(inv);
  auto p = torch::softmax(logits, -1);
  Tensor px = image_v.size(0) == B ? gemm::matmul(p, image_v)  // [B, hT, C]
                                   : gemm::matmul(p.view({B * h * T, -1}), image_v[0]).view({B, h * T, C});
  // (P x) Wv_h^T + bv_h per head -> [B, h, T, d]
  auto out = gemm::matmul(px.view({B, h, T, C}), weight_heads(a.v_proj, h).transpose(1, 2)) +
             bias_heads(a.v_proj, h).unsqueeze(1);
  return project(a.out_proj, out.transpose(1, 2).reshape({B, T, -1}));
}

// The same with the first block's image projections precomputed:
// k, v [h, N, d] shared by the B prompts.
Tensor tokens_to_image_cached(DecoderAttentionImpl& a, const Tensor& tokens_q, const Tensor& k, const Tensor& v) {
  const int64_t h = a.num_heads, B = tokens_q.size(0), T = tokens_q.size(1);
  auto q = heads_of(project(a.q_proj, tokens_q), h);  // [B, h, T, d]
  const int64_t d = q.size(3);
  auto qh = q.transpose(0, 1).reshape({h, B * T, d});                           // [h, BT, d]
  auto p = torch::softmax(gemm::matmul(qh, k.transpose(1, 2)) / std::sqrt(double(d)), -1);  // [h, BT, N]
  auto out = gemm::matmul(p, v).view({h, B, T, d}).permute({1, 2, 0, 3});      // [B, T, h, d]
  return project(a.out_proj, out.reshape({B, T, h * d}));
}

// The image side's output from logits laid out [B, h*T, N] (so the softmax
// over each head's T tokens runs along the long N axis, vectorized): the
// softmax, then sum_h P_h (v_h Wo_h^T) + bo as [B, N, C]. v_tok [B, h, T, d].
Tensor image_output(DecoderAttentionImpl& a, const Tensor& logits_t, const Tensor& v_tok) {
  const int64_t h = a.num_heads, B = v_tok.size(0), T = v_tok.size(2), N = logits_t.size(2);
  const int64_t C = a.out_proj->weight.size(0);
  auto p = torch::softmax(logits_t.view({B, h, T, N}), 2).view({B, h * T, N});
  // Wo [C, D] -> per head [h, d, C] (Wo_h^T)
  auto wo = a.out_proj->weight.view({C, h, -1}).permute({1, 2, 0});
  auto u = gemm::matmul(v_tok, wo.unsqueeze(0)).reshape({B, h * T, C});  // [B, hT, C]
  return gemm::matmul(p.transpose(1, 2), u, a.out_proj->bias);
}

// The image attends to the tokens: attn(q = image_q, k = tokens_k, v = tokens_v)
// for image_q [Bk, N, C] (Bk = 1 or B) and tokens [B, T, C]. Returns [B, N, C].
Tensor image_to_tokens(DecoderAttentionImpl& a, const Tensor& image_q, const Tensor& tokens_k,
                       const Tensor& tokens_v) {
  const int64_t h = a.num_heads, B = tokens_k.size(0), T = tokens_k.size(1), C = image_q.size(2);
  auto k = heads_of(project(a.k_proj, tokens_k), h);  // [B, h, T, d]
  auto v = heads_of(project(a.v_proj, tokens_v), h);
  const double inv = 1.0 / std::sqrt(double(k.size(3)));
  auto m = gemm::matmul(k, weight_heads(a.q_proj, h)).reshape({B, h * T, C});  // [B, hT, C]
  auto mb = (k * bias_heads(a.q_proj, h).unsqueeze(1)).sum(-1).reshape({B, h * T, 1});
  Tensor logits;  // [B, hT, N]
  if (image_q.size(0) == B)
    logits = gemm::matmul(m, image_q.transpose(1, 2)).add_(mb);
  else
    logits = gemm::matmul(m.reshape({B * h * T, C}), image_q[0].t()).view({B, h * T, -1}).add_(mb);
  return image_output(a, logits.mul_(inv), v);
}

// The same with the first block's image queries precomputed: q [h, N, d].
Tensor image_to_tokens_cached(DecoderAttentionImpl& a, const Tensor& q, const Tensor& tokens_k,
                              const Tensor& tokens_v) {
  const int64_t h = a.num_heads, B = tokens_k.size(0), T = tokens_k.size(1), N = q.size(1), d = q.size(2);
  auto k = heads_of(project(a.k_proj, tokens_k), h);  // [B, h, T, d]
  auto v = heads_of(project(a.v_proj, tokens_v), h);
  auto kh = k.transpose(0, 1).reshape({h, B * T, d});                                // [h, BT, d]
  auto logits = gemm::matmul(kh, q.transpose(1, 2)).view({h, B, T, N}).transpose(0, 1);  // [B, h, T, N]
  return image_output(a, logits.reshape({B, h * T, N}).mul_(1.0 / std::sqrt(double(d))), v);
}

}  // namespace

void set_reference_decoder(bool on) { g_reference_decoder = on; }
bool reference_decoder() { return g_reference_decoder; }

std::pair<Tensor, Tensor> TwoWayTransformerImpl::forward_fast(const Tensor& keys_in, const Tensor& key_pe,
                                                              const Tensor& point_embedding,
                                                              const DecoderImageCache* cache) {
  Tensor queries = point_embedding, keys = keys_in;
  const Tensor& qpe = point_embedding;
  for (size_t i = 0; i < layers->size(); ++i) {
    auto& L = *layers[i]->as<TwoWayAttentionBlock>();
    if (L.skip_first_layer_pe) {
      queries = L.self_attn(queries, queries, queries);
    } else {
      auto q = queries + qpe;
      queries = queries + L.self_attn(q, q, queries);
    }
    queries = L.norm1(queries);
    const bool cached = i == 0 && cache;
    Tensor keys_pe = cached ? Tensor() : keys + key_pe;
    queries = queries + (cached ? tokens_to_image_cached(*L.cross_attn_token_to_image, queries + qpe, cache->t2i_k,
                                                         cache->t2i_v)
                                : tokens_to_image(*L.cross_attn_token_to_image, queries + qpe, keys_pe, keys));
    queries = L.norm2(queries);
    queries = queries + L.mlp(queries);
    queries = L.norm3(queries);
    auto q = queries + qpe;
    keys = keys + (cached ? image_to_tokens_cached(*L.cross_attn_image_to_token, cache->i2t_q, q, queries)
                          : image_to_tokens(*L.cross_attn_image_to_token, keys_pe, q, queries));
    keys = L.norm4(keys);
  }
  queries = queries + tokens_to_image(*final_attn_token_to_image, queries + qpe, keys + key_pe, keys);
  queries = norm_final_attn(queries);
  return {queries, keys};
}

DecoderImageCache MaskDecoderImpl::prepare(const Tensor& image_embedding, const Tensor& image_pe,
                                           const Tensor& no_mask_dense) {
  torch::NoGradGuard ng;
  DecoderImageCache c;
  c.keys = (image_embedding + no_mask_dense).flatten(2).transpose(1, 2).contiguous();
  c.key_pe = image_pe.flatten(2).transpose(1, 2).contiguous();
  auto& L = *transformer->layers[0]->as<TwoWayAttentionBlock>();
  auto keys_pe = c.keys + c.key_pe;
  auto& t2i = *L.cross_attn_token_to_image;
  auto& i2t = *L.cross_attn_image_to_token;
  c.t2i_k = heads_of(project(t2i.k_proj, keys_pe), t2i.num_heads)[0].contiguous();
  c.t2i_v = heads_of(project(t2i.v_proj, c.keys), t2i.num_heads)[0].contiguous();
  c.i2t_q = heads_of(project(i2t.q_proj, keys_pe), i2t.num_heads)[0].contiguous();
  return c;
}

Tensor MaskDecoderImpl::upscale_masks_fast(const Tensor& keys, const Tensor& hyper_in, int64_t h, int64_t w) {
  auto* ct1 = output_upscaling->ptr(0)->as<torch::nn::ConvTranspose2d>();
  auto* ln = output_upscaling->ptr(1)->as<LayerNorm2d>();
  auto* ct2 = output_upscaling->ptr(3)->as<torch::nn::ConvTranspose2d>();
  const int64_t B = keys.size(0), N = keys.size(1), C = keys.size(2);
  const int64_t c1 = ct1->weight.size(1), c2 = ct2->weight.size(1), M = hyper_in.size(1);
  // Weight [in, out, 2, 2] -> [in, (i, j, out)]: each token's 2x2 block of
  // output pixels, channels last.
  auto w1 = ct1->weight.permute({0, 2, 3, 1}).reshape({C, 4 * c1});
  auto y = gemm::matmul(keys.reshape({B * N, C}), w1, ct1->bias.repeat({4})).view({B * N * 4, c1});
  // LayerNorm2d normalizes each pixel over its channels, as layer_norm does
  // over the last dimension.
  y = torch::gelu(torch::layer_norm(y, {c1}, ln->weight, ln->bias, ln->eps));
  auto w2 = ct2->weight.permute({0, 2, 3, 1}).reshape({c1, 4 * c2});
  auto z = torch::gelu(gemm::matmul(y, w2, ct2->bias.repeat({4})));  // [B*N*4, 4*c2]
  // Each pixel's c2 features dotted with the M hypernetwork outputs, masks
  // major: the GEMM whose output rows are N*16 long, not M wide, runs faster
  // and the reordering below then moves runs of pixels, not single values.
  auto m = gemm::matmul(hyper_in, z.view({B, N * 16, c2}).transpose(1, 2));  // [B, M, N*16]
  // (ty, tx, i, j, i2, j2) -> row 4*ty + 2*i + i2, column 4*tx + 2*j + j2
  return m.view({B, M, h, w, 2, 2, 2, 2})
      .permute({0, 1, 2, 4, 6, 3, 5, 7})
      .reshape({B, M, 4 * h, 4 * w});
}

std::pair<Tensor, Tensor> MaskDecoderImpl::predict_masks_fast(const Tensor& image_embeddings, const Tensor& image_pe,
                                                              const Tensor& sparse, const Tensor& dense,
                                                              const DecoderImageCache* cache) {
  auto output_tokens = torch::cat({iou_token->weight, mask_tokens->weight}, 0);
  output_tokens = output_tokens.unsqueeze(0).expand({sparse.size(0), -1, -1});
  auto tokens = torch::cat({output_tokens, sparse}, 1);
  const int64_t h = image_embeddings.size(2), w = image_embeddings.size(3);
  Tensor keys, key_pe;
  if (cache && cache->defined()) {
    keys = cache->keys;
    key_pe = cache->key_pe;
  } else {
    // One embedding shared by every prompt stays one row of keys while the
    // dense embeddings agree (the no-mask one is expanded, not copied).
    const bool shared = image_embeddings.size(0) == 1 && dense.size(0) > 1 && dense.stride(0) == 0;
    auto src = image_embeddings + (shared ? dense.narrow(0, 0, 1) : dense);
    keys = src.flatten(2).transpose(1, 2).contiguous();
    key_pe = image_pe.flatten(2).transpose(1, 2).contiguous();
    cache = nullptr;
  }
  auto [hs, keys_out] = transformer->forward_fast(keys, key_pe, tokens, cache);
  using torch::indexing::Slice;
  auto iou_token_out = hs.index({Slice(), 0, Slice()});
  std::vector<Tensor> hyper_in_list;
  for (int64_t i = 0; i < num_mask_tokens; ++i)
    hyper_in_list.push_back(output_hypernetworks_mlps[i]->as<MLP>()->forward(hs.index({Slice(), 1 + i, Slice()})));
  auto hyper_in = torch::stack(hyper_in_list, 1);  // [B, M, C/8]
  if (keys_out.size(0) != hyper_in.size(0)) keys_out = keys_out.expand({hyper_in.size(0), -1, -1});
  auto masks = upscale_masks_fast(keys_out.contiguous(), hyper_in, h, w);
  return {masks, iou_prediction_head(iou_token_out)};
}

}  // namespace rsam
