// fp32 matrix products through oneDNN's sgemm where torch would call its BLAS.
//
// LibTorch sends fp32 matmul/linear to the system BLAS. Debian's OpenBLAS
// picks its kernels by CPU model and falls back to older ones on CPUs newer
// than itself, and it keeps its own thread pool, which fights libgomp's for
// the cores between a GEMM and the elementwise ops around it. oneDNN (which
// LibTorch already loads for its convolutions and bf16 products) dispatches
// on the instruction set and threads with the same OpenMP pool as torch.
// `rsam bench --reference-gemm` times the same run on torch's path.
//
// Every function here computes what its torch counterpart computes and falls
// back to it for anything it does not handle: non-CPU or non-fp32 tensors,
// bf16 autocast, oneDNN not found in the process, or reference mode.
#pragma once

#include <torch/torch.h>

namespace rsam::gemm {

// True when oneDNN's sgemm was found among the loaded libraries.
bool available();
// Reference mode: every call takes torch's own path (tests, benches).
void set_reference(bool on);
bool reference();

// torch::matmul for a, b of at least 2 dimensions (batch dimensions
// broadcast), plus `bias` [N] added to every row when defined. With autograd
// recording, products of equal batch shapes without bias stay on oneDNN
// (forward and backward); the rest are torch's.
torch::Tensor matmul(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& bias = {});

// out = beta out + alpha a·b, batched like matmul, for fp32 out (rows
// unit-stride) and a, b both fp32 or both bf16 (products of bf16 summed in
// fp32, the output never rounded to bf16). With beta 0 out is only written.
// Not differentiable. For a bias that has to be in the sum before anything
// else reads it (attention logits), and for products into views of a
// larger output. Inside a parallel region it runs on the calling thread.
void add_product(torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b, double alpha = 1.0,
                 double beta = 1.0);

// torch::nn::functional::linear: x [..., K], weight [N, K], bias [N] or
// undefined. Differentiable (its backward runs the same sgemm).
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias = {});

}  // namespace rsam::gemm
