#include "model/runtime.h"

#include <dlfcn.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <strings.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <thread>

namespace rsam {

namespace {
// The libblas.so.3 torch links is whichever the alternatives system points at.
void* blas_handle() {
  void* h = dlopen("libblas.so.3", RTLD_LAZY | RTLD_NOLOAD);
  if (!h) h = dlopen("libblas.so.3", RTLD_LAZY);
  return h;
}
}  // namespace

void set_threads(int n) {
  if (n <= 0) n = int(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(n);
  // torch sizes only its OpenMP pool; OpenBLAS keeps its own pthread pool at
  // all cores, so "--threads 1" would still run GEMMs on two threads.
  if (void* h = blas_handle())
    if (auto f = reinterpret_cast<void (*)(int)>(dlsym(h, "openblas_set_num_threads"))) f(n);
}

int blas_threads() {
  if (void* h = blas_handle())
    if (auto f = reinterpret_cast<int (*)()>(dlsym(h, "openblas_get_num_threads"))) return f();
  return 0;
}

bool omp_waits_passively() {
  const char* p = std::getenv("OMP_WAIT_POLICY");
  return p && (strcasecmp(p, "passive") == 0);
}

void reexec_with_passive_omp_wait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY")) return;  // the user chose; also stops a loop
  if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1) != 0) return;
  // The resolved path, not /proc/self/exe itself, so ps and top still show
  // the program's own name.
  char path[4096];
  const ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n > 0) {
    path[n] = '\0';
    execv(path, argv);
  }
  unsetenv("OMP_WAIT_POLICY");  // exec failed (no /proc): run on as we are
}

bool keep_freed_memory() {
#if defined(__GLIBC__)
  // 32 MB is the largest mmap threshold glibc accepts on 64-bit. Setting it
  // also turns off glibc's own threshold adjustment, which would lower the
  // trim threshold again.
  return mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1;
#else
  return false;
#endif
}

int num_threads() { return torch::get_num_threads(); }

std::string blas_warning() {
  // OpenBLAS exports openblas_get_config; the reference BLAS does not.
  void* h = blas_handle();
  if (!h) return {};
  const bool openblas = dlsym(h, "openblas_get_config") != nullptr;
  const bool mkl = dlsym(h, "mkl_get_version") != nullptr || dlsym(h, "MKL_Get_Version") != nullptr;
  const bool blis = dlsym(h, "bli_info_get_version_str") != nullptr;
  if (openblas || mkl || blis) return {};
  return "warning: torch is using the reference BLAS (slow fp32 matmul); install libopenblas0-pthread";
}

bool cpu_has_native_bf16() {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16") || __builtin_cpu_supports("amx-bf16");
#else
  return true;  // not x86 (or unknown): do not warn
#endif
}

}  // namespace rsam
