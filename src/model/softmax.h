// Row softmax of attention logits plus SAM's decomposed relative-position
// bias, written as fp32 or bf16 in one pass over each row.
//
// The unfused form (add the two bias maps, softmax in fp32, cast to bf16 for
// the next product) reads and writes the whole map four times; here each row
// is read once and written once, while it sits in L1. Two implementations of
// the same maths (the ncnn pattern): a scalar reference, and an AVX-512 one
// chosen at run time on CPUs that have it. Tests hold one to the other and
// both to torch.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace rsam::kernels {

// For row r of `rows`, with n = kh * kw keys:
//   y[r, i*kw + j] = softmax over (i, j) of x[r, i*kw + j] + bh[r*kh + i] + bw[r*kw + j]
// x is overwritten (it is the caller's scratch); y is fp32, or bf16 rounded
// to nearest even exactly as torch converts.
struct RelPosSoftmax {
  float* x = nullptr;
  int64_t ldx = 0;
  const float* bh = nullptr;
  const float* bw = nullptr;
  int64_t rows = 0, kh = 0, kw = 0;
  void* y = nullptr;
  int64_t ldy = 0;
  bool bf16 = false;
};

void rel_pos_softmax_reference(const RelPosSoftmax& a);
// False (and nothing written) on CPUs without AVX-512 F/BW or non-x86 builds.
bool rel_pos_softmax_vectorized(const RelPosSoftmax& a);
// Whether the vectorized kernel runs on this CPU.
bool vectorized_available();

// Tensor form on the CPU: logits [R, kh*kw] fp32 (rows unit-stride; used as
// scratch), bh [R, kh] and bw [R, kw] fp32 contiguous, y [R, kh*kw] fp32 or
// bf16 (rows unit-stride). Rows run in parallel outside a parallel region,
// inline inside one. `reference` forces the scalar kernel.
void rel_pos_softmax(torch::Tensor& logits, const torch::Tensor& bh, const torch::Tensor& bw, torch::Tensor& y,
                     bool reference = false);

}  // namespace rsam::kernels
