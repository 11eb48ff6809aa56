#include "model/runtime.h"

#include <dlfcn.h>
#include <torch/torch.h>

#include <thread>

namespace rsam {

void set_threads(int n) {
  if (n <= 0) n = int(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(n);
}

int num_threads() { return torch::get_num_threads(); }

std::string blas_warning() {
  // OpenBLAS exports openblas_get_config; the reference BLAS does not. The
  // libblas.so.3 torch links is whichever the alternatives system points at.
  void* h = dlopen("libblas.so.3", RTLD_LAZY | RTLD_NOLOAD);
  if (!h) h = dlopen("libblas.so.3", RTLD_LAZY);
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
