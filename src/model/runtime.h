// Process-level torch settings every entry point needs: torch defaults to a
// single intra-op thread, and Debian's torch silently falls back to the
// reference BLAS (~30x slower fp32 matmul) without libopenblas0-pthread.
#pragma once

#include <string>

namespace rsam {

// n <= 0 means all cores.
void set_threads(int n);
int num_threads();
// Empty when the BLAS is fine, else a one-line warning to print.
std::string blas_warning();
// True when the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere
// oneDNN emulates it and bf16 runs slower than fp32.
bool cpu_has_native_bf16();

}  // namespace rsam
