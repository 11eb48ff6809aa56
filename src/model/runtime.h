// Process-level torch settings every entry point needs: torch defaults to a
// single intra-op thread, and Debian's torch silently falls back to the
// reference BLAS (~30x slower fp32 matmul) without libopenblas0-pthread.
#pragma once

#include <string>

namespace rsam {

// n <= 0 means all cores. Sizes torch's OpenMP pool and OpenBLAS's pool.
void set_threads(int n);
int num_threads();
// OpenBLAS's pool size; 0 when the BLAS is not OpenBLAS.
int blas_threads();

// libgomp's default wait policy spins idle OpenMP workers; they then fight
// OpenBLAS's own pthreads for the cores between GEMMs. Measured on 2 cores,
// 2 threads: rsam-tiny training 2.3 -> 4.8 img/s, ViT-B decoder 162 -> 133 ms
// with OMP_WAIT_POLICY=PASSIVE. libgomp reads the variable when it loads, so
// it has to be in the environment before the process starts.
bool omp_waits_passively();
// Re-executes this process with OMP_WAIT_POLICY=PASSIVE unless the variable
// is already set (by the user or by an earlier re-exec). Returns only if it
// did nothing. Call first thing in main(), before any thread exists.
void reexec_with_passive_omp_wait(char** argv);
// glibc's malloc hands every large freed block back to the kernel (munmap,
// or a trim of the heap top), so the next tensor of that size page-faults
// all of its pages in again: at rsam-tiny's 512-pixel input most of an
// encode's time went to page faults. This keeps freed memory in the process
// (blocks up to 32 MB from the heap, which is trimmed only above 1 GB free).
// Process-wide, so an application decides: the CLI calls it at start-up.
// Returns false where it cannot apply (not glibc).
bool keep_freed_memory();
// Empty when the BLAS is fine, else a one-line warning to print.
std::string blas_warning();
// True when the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere
// oneDNN emulates it and bf16 runs slower than fp32.
bool cpu_has_native_bf16();

}  // namespace rsam
