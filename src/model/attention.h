// Multi-head attention with SAM's decomposed relative-position bias.
// Three implementations of the same maths (the ncnn pattern): the reference
// one transcribes the official code and materializes the whole
// [B*heads, HW, HW] map; the chunked one walks blocks of query rows so the
// map for a global-attention block (805 MB of fp32 in ViT-B) never exists at
// once, each chunk's bias written first and the q·kᵀ product added onto it
// by the GEMM; the fused one (CPU inference) also walks row blocks, or one
// small map per task, and writes each block's biased softmax in one pass
// (kernels::rel_pos_softmax) in the dtype of the next product. Tests hold
// both to the reference.
#pragma once

#include <torch/torch.h>

namespace rsam {

// q, k, v: [BH, H*W, C]; Rh: [H, H, C]; Rw: [W, W, C] (from get_rel_pos).
// Returns softmax((q*scale) k^T + rel_h + rel_w) v as [BH, H*W, C]. With
// `training` (the module's mode) or autograd recording it is the reference.
torch::Tensor attention_with_rel_pos(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                     const torch::Tensor& Rh, const torch::Tensor& Rw, int64_t H, int64_t W,
                                     double scale, bool training = false);
torch::Tensor attention_with_rel_pos_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                               const torch::Tensor& Rh, const torch::Tensor& Rw, int64_t H, int64_t W,
                                               double scale);
torch::Tensor attention_with_rel_pos_chunked(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                             const torch::Tensor& Rh, const torch::Tensor& Rw, int64_t H, int64_t W,
                                             double scale, int64_t max_chunk_elems = int64_t(1) << 21);
// Every map's logits, biased softmax and product with v done step by step
// in buffers sized for one step: one map per task for small maps, blocks of
// query rows on all threads for large ones. The softmax is
// kernels::rel_pos_softmax (its scalar reference when `reference_kernel`);
// the probabilities are bf16 where the products are. Inference on the CPU
// (fp32 or bf16); attention_with_rel_pos takes it when fused_attention_runs.
torch::Tensor attention_with_rel_pos_fused(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                           const torch::Tensor& Rh, const torch::Tensor& Rw, int64_t H, int64_t W,
                                           double scale, int64_t max_chunk_elems = int64_t(1) << 21,
                                           bool reference_kernel = false);
bool fused_attention_runs(const torch::Tensor& q);

// The right-hand operand of a matmul, laid out so that a CPU bf16 product
// accumulates in fp32. Without oneDNN's bf16 kernels (CPUs without AVX-512)
// torch 1.13 falls back to its own gemm, which accumulates in bf16 when
// neither operand is transposed: softmax(..) @ v over 1024 keys is then off
// by ~1.2% (relative), against ~0.17% through the transposed path. Returns
// `b` itself unless it is bf16 on the CPU or CPU bf16 autocast is on.
torch::Tensor bf16_safe_rhs(const torch::Tensor& b);

// Runs a convolution in fp32 when it would otherwise run in bf16 on the CPU
// (same fallback: torch 1.13's bf16 CPU convolution without oneDNN loses
// 1-4% relative). Convolutions are ~1% of a ViT's work, so fp32 costs
// little where bf16 is native. Elsewhere it is conv.forward(x).
torch::Tensor conv_fp32_on_cpu(torch::nn::Conv2dImpl& conv, const torch::Tensor& x);

// Which implementation attention_with_rel_pos takes (process-wide, for
// benchmarks and tests). Fastest: fused where fused_attention_runs, else
// the reference for small maps and chunked for large ones; Chunked: that
// fallback even where the fused path runs; Reference: always the reference.
enum class AttentionPath { Fastest, Chunked, Reference };
void set_attention_path(AttentionPath path);
AttentionPath attention_path();
// The implementation `path` runs for q (inference): fused, chunked or reference.
std::string attention_path_name(AttentionPath path, const torch::Tensor& q);
// Parses fastest|chunked|reference; throws rsam::Error on anything else.
AttentionPath parse_attention_path(const std::string& name);

}  // namespace rsam
