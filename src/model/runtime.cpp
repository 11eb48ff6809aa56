#include "model/runtime.h"

#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <dlfcn.h>
#include <strings.h>
#include <sys/mman.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "error.h"
#include "log.h"

namespace rsam {

namespace {
// The libblas.so.3 torch links is whichever the alternatives system points at.
void* blas_handle() {
  void* h = dlopen("libblas.so.3", RTLD_LAZY | RTLD_NOLOAD);
  if (!h) h = dlopen("libblas.so.3", RTLD_LAZY);
  return h;
}
}  // namespace

int hardware_threads() { return int(std::max(1u, std::thread::hardware_concurrency())); }

PairTimes time_pairs(int pairs, const std::function<void()>& a, const std::function<void()>& b) {
  auto seconds = [](const std::function<void()>& f) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  PairTimes t;
  for (int k = 0; k < pairs; ++k) {
    if (k % 2 == 0) {
      t.a.push_back(seconds(a));
      t.b.push_back(seconds(b));
    } else {
      t.b.push_back(seconds(b));
      t.a.push_back(seconds(a));
    }
  }
  return t;
}

int set_threads(int n) {
  if (n < 0) throw Error("the thread count must be 0 (all cores) or positive, got " + std::to_string(n));
  // More threads than cores only oversubscribe (a run many times slower).
  if (n > hardware_threads()) {
    log_info("rsam: note: " + std::to_string(n) + " threads asked for, " + std::to_string(hardware_threads()) +
             " cores here: using " + std::to_string(hardware_threads()));
    n = 0;
  }
  if (n == 0) n = hardware_threads();
  torch::set_num_threads(n);
  // torch sizes only its OpenMP pool; OpenBLAS keeps its own pthread pool at
  // all cores, so "--threads 1" would still run GEMMs on two threads.
  if (void* h = blas_handle())
    if (auto f = reinterpret_cast<void (*)(int)>(dlsym(h, "openblas_set_num_threads"))) f(n);
  return n;
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

namespace {
// Below glibc's (initial) mmap threshold malloc serves blocks from its heap
// and keeps them; those stay with malloc.
constexpr size_t kMinCached = size_t(128) << 10;

// Rounds up to a multiple of 1/8 of the request's power of two, so a few
// classes serve the slightly varying sizes of a training step.
size_t size_class(size_t n) {
  size_t top = 1;
  while (top <= n / 2) top *= 2;
  const size_t step = std::max<size_t>(top / 8, 1);
  return (n + step - 1) / step * step;
}

// A new block. Large ones are aligned to and advised as huge pages where
// the kernel offers them on request: the first pass over a model's
// activations otherwise takes a page fault per 4 KiB, a large part of a
// process's first encode. RSAM_HUGEPAGES=0 turns the advice off (to
// compare). Null when out of memory.
void* fresh(size_t size) {
  constexpr size_t kHuge = size_t(2) << 20;
  static const bool huge = [] {
    const char* e = std::getenv("RSAM_HUGEPAGES");
    return !(e && std::strcmp(e, "0") == 0);
  }();
  if (size < 2 * kHuge || !huge) {
    try {
      return c10::alloc_cpu(size);
    } catch (const c10::Error&) {
      return nullptr;
    }
  }
  void* p = nullptr;
  if (posix_memalign(&p, kHuge, size) != 0) return nullptr;
  madvise(p, size / kHuge * kHuge, MADV_HUGEPAGE);  // advice only: failure is harmless
  return p;
}

struct CpuCache {
  std::mutex m;
  size_t cap = 0, cached = 0;
  std::unordered_map<void*, size_t> live;  // cacheable blocks in use -> class size
  std::unordered_map<size_t, std::vector<void*>> idle;

  void* take(size_t n) {
    const size_t size = size_class(n);
    {
      std::lock_guard<std::mutex> g(m);
      auto it = idle.find(size);
      if (it != idle.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        cached -= size;
        live.emplace(p, size);
        return p;
      }
    }
    void* p = fresh(size);
    if (!p) {
      release_all();  // out of memory: what the cache holds may be enough
      p = fresh(size);
    }
    if (!p) p = c10::alloc_cpu(size);  // throws torch's out-of-memory error
    std::lock_guard<std::mutex> g(m);
    live.emplace(p, size);
    return p;
  }

  void give_back(void* p) {
    std::vector<void*> to_free;
    {
      std::lock_guard<std::mutex> g(m);
      auto it = live.find(p);
      if (it == live.end()) {
        to_free.push_back(p);  // not ours (raw_deallocate of a small block)
      } else {
        const size_t size = it->second;
        live.erase(it);
        if (size > cap) {
          to_free.push_back(p);
        } else {
          // Over the bound: other cached blocks make room, the newest is kept.
          for (auto c = idle.begin(); cached + size > cap && c != idle.end(); ++c)
            while (cached + size > cap && !c->second.empty()) {
              to_free.push_back(c->second.back());
              c->second.pop_back();
              cached -= c->first;
            }
          idle[size].push_back(p);
          cached += size;
        }
      }
    }
    for (void* q : to_free) c10::free_cpu(q);
  }

  void release_all() {
    std::vector<void*> to_free;
    {
      std::lock_guard<std::mutex> g(m);
      for (auto& [size, blocks] : idle) to_free.insert(to_free.end(), blocks.begin(), blocks.end());
      idle.clear();
      cached = 0;
    }
    for (void* q : to_free) c10::free_cpu(q);
  }
};

CpuCache& cpu_cache() {
  static auto* c = new CpuCache;  // never destroyed: tensors may outlive main()
  return *c;
}

void give_back(void* p) {
  if (p) cpu_cache().give_back(p);
}

struct CachingCpuAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) const override {
    const c10::Device cpu(c10::DeviceType::CPU);
    if (n < kMinCached) {
      void* p = n ? c10::alloc_cpu(n) : nullptr;
      return {p, p, &c10::free_cpu, cpu};
    }
    void* p = cpu_cache().take(n);
    // data == context, as raw_allocate (oneDNN's scratch memory) requires.
    return {p, p, &give_back, cpu};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &give_back; }
};

std::once_flag g_installed_once;
}  // namespace

void use_caching_cpu_allocator(size_t max_cached_bytes) {
  {
    std::lock_guard<std::mutex> g(cpu_cache().m);
    cpu_cache().cap = max_cached_bytes;
  }
  std::call_once(g_installed_once, [] {
    static CachingCpuAllocator alloc;
    c10::SetCPUAllocator(&alloc, /*priority=*/1);  // above torch's default (0)
  });
}

size_t cpu_cache_bound(const char* setting) {
  if (!setting) return kDefaultCpuCacheBytes;
  char* end = nullptr;
  errno = 0;
  const double gib = std::strtod(setting, &end);
  // Up to 1 TiB: anything larger is a typo, and would overflow size_t math.
  if (end == setting || *end != '\0' || errno != 0 || !(gib >= 0) || gib > 1024)
    throw Error(std::string("RSAM_CPU_CACHE: expected 0 or a size in GiB, got '") + setting + "'");
  return size_t(gib * double(size_t(1) << 30));
}

size_t cpu_cache_bytes() {
  // Only the installed allocator fills the cache, so it is 0 until then.
  std::lock_guard<std::mutex> g(cpu_cache().m);
  return cpu_cache().cached;
}

void release_cpu_cache() { cpu_cache().release_all(); }

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

Bf16Support cpu_bf16_support() {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512bf16") || __builtin_cpu_supports("amx-bf16")) return Bf16Support::Native;
  // torch 1.13's mkldnn_bf16_device_check: oneDNN's bf16 kernels need these.
  if (__builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return Bf16Support::OneDnn;
  return Bf16Support::Fallback;
#else
  return Bf16Support::Native;
#endif
}

std::string bf16_warning() {
  switch (cpu_bf16_support()) {
    case Bf16Support::Native:
      return {};
    case Bf16Support::OneDnn:
      return "warning: this CPU has no native bf16 (AVX512-BF16/AMX): bf16 is emulated and slower than fp32";
    case Bf16Support::Fallback:
      break;
  }
  return "warning: this CPU has no AVX-512, so torch runs bf16 on slow fallback kernels (an encode ~20x slower "
         "than fp32); use fp32";
}

}  // namespace rsam
