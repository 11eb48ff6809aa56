// Process-level torch settings every entry point needs: torch defaults to a
// single intra-op thread, and Debian's torch silently falls back to the
// reference BLAS (~30x slower fp32 matmul) without libopenblas0-pthread.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace rsam {

// The machine's hardware threads (at least 1): what "all cores" means
// wherever a thread count defaults.
int hardware_threads();
// Seconds per call of `a` and of `b`, run in `pairs` back-to-back pairs
// whose order alternates (a b, b a, a b, ...): a drift in the machine's
// speed, or anything that favours the first or the second call of a pair
// (cache state, a clock ramp), falls on both alike. For A/B ratios.
struct PairTimes {
  std::vector<double> a, b;
};
PairTimes time_pairs(int pairs, const std::function<void()>& a, const std::function<void()>& b);
// 0 means all cores; more than the cores is capped to them (with a note),
// negative is an error. Sizes torch's OpenMP pool and OpenBLAS's pool.
int set_threads(int n);  // returns the count used
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
// torch's CPU allocator hands every freed tensor back to malloc, and glibc
// hands large blocks on to the kernel, so the next tensor of that size
// faults all its pages in again (~8 us a page in this VM): at rsam-tiny's
// 512-pixel input most of an encode, and ~190,000 faults per training step.
// This installs a CPU allocator that keeps freed blocks of 128 KB and more
// by size class (each at most 1/8 over its request) and hands them out
// again; at most `max_cached_bytes` stay cached (other cached blocks are freed to
// make room). Process-wide and not undone, so an application decides: the
// CLI installs it at start-up. Calling it again only changes the bound.
constexpr size_t kDefaultCpuCacheBytes = size_t(2) << 30;
void use_caching_cpu_allocator(size_t max_cached_bytes = kDefaultCpuCacheBytes);
// The CLI's RSAM_CPU_CACHE setting as a bound in bytes: unset (nullptr) is
// the default 2 GiB, "0" is no cache at all (0), and a positive number is
// that many GiB (fractions allowed). rsam::Error, one line, on anything else.
// Larger inputs need more: a 1024-pixel rsam-tiny training step frees well
// over 2 GiB per process and faults much of it in again (docs/performance.md, Memory).
size_t cpu_cache_bound(const char* setting);
// Bytes of freed blocks the cache holds now; 0 when it is not installed.
size_t cpu_cache_bytes();
// Frees every cached block (the allocator stays installed).
void release_cpu_cache();
// Empty when the BLAS is fine, else a one-line warning to print.
std::string blas_warning();
// How this CPU runs torch 1.13's bf16: natively (AVX512-BF16 or AMX),
// emulated by oneDNN (AVX-512 BW/VL/DQ: slower than fp32), or on torch's
// own fallback kernels (no AVX-512; bf16 linear layers ~33x slower than
// fp32 on an AVX2 EPYC). Not x86: Native (unknown, so no warning).
enum class Bf16Support { Native, OneDnn, Fallback };
Bf16Support cpu_bf16_support();
// Empty when bf16 is native, else a one-line warning to print.
std::string bf16_warning();

}  // namespace rsam
