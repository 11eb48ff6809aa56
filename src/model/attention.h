// Multi-head attention with SAM's decomposed relative-position bias.
// Two implementations of the same maths (the ncnn pattern): the reference
// one transcribes the official code and materializes the whole
// [B*heads, HW, HW] map; the chunked one walks blocks of query rows so the
// map for a global-attention block (12 x 4096 x 4096 floats = 805 MB in
// ViT-B) never exists at once and the bias add stays in cache. Tests hold the
// chunked path to the reference.
#pragma once

#include <torch/torch.h>

namespace rsam {

// q, k, v: [BH, H*W, C]; Rh: [H, H, C]; Rw: [W, W, C] (from get_rel_pos).
// Returns softmax((q*scale) k^T + rel_h + rel_w) v as [BH, H*W, C].
torch::Tensor attention_with_rel_pos(const torch::Tensor& q, const torch::Tensor& k,
                                     const torch::Tensor& v, const torch::Tensor& Rh,
                                     const torch::Tensor& Rw, int64_t H, int64_t W, double scale);
torch::Tensor attention_with_rel_pos_reference(const torch::Tensor& q, const torch::Tensor& k,
                                               const torch::Tensor& v, const torch::Tensor& Rh,
                                               const torch::Tensor& Rw, int64_t H, int64_t W,
                                               double scale);
torch::Tensor attention_with_rel_pos_chunked(const torch::Tensor& q, const torch::Tensor& k,
                                             const torch::Tensor& v, const torch::Tensor& Rh,
                                             const torch::Tensor& Rw, int64_t H, int64_t W, double scale,
                                             int64_t max_chunk_elems = int64_t(1) << 21);

// Process-wide switch (for benchmarks and tests): force the reference path.
void set_reference_attention(bool on);
bool reference_attention();

}  // namespace rsam
