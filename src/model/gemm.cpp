#include "model/gemm.h"

#include <ATen/ExpandUtils.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <dlfcn.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace rsam::gemm {

using torch::Tensor;

namespace {

// oneDNN's C API (dnnl.h): row-major C = alpha op(A) op(B) + beta C.
using Sgemm = int (*)(char transa, char transb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                      int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

Sgemm sgemm() {
  // Looked up, not linked: LibTorch builds that hide oneDNN's symbols (or
  // have none) simply keep torch's path. RSAM_GEMM=torch forces that path.
  static const Sgemm f = []() -> Sgemm {
    if (const char* e = std::getenv("RSAM_GEMM"); e && std::strcmp(e, "torch") == 0) return nullptr;
    return reinterpret_cast<Sgemm>(dlsym(RTLD_DEFAULT, "dnnl_sgemm"));
  }();
  return f;
}

// The same with bf16 operands accumulated into fp32 C.
using GemmBf16 = int (*)(char transa, char transb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A,
                         int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc);

GemmBf16 gemm_bf16() {
  static const GemmBf16 f =
      sgemm() ? reinterpret_cast<GemmBf16>(dlsym(RTLD_DEFAULT, "dnnl_gemm_bf16bf16f32")) : nullptr;
  return f;
}

// OpenMP's per-thread team size (libgomp's, which torch and oneDNN share).
using SetThreads = void (*)(int);
using GetThreads = int (*)();

// Runs f with oneDNN limited to the calling thread: inside a parallel region
// oneDNN would still start a team of its own for each small product.
template <class F>
void single_threaded(F&& f) {
  static const auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  static const auto get = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "omp_get_max_threads"));
  const int before = set && get ? get() : 0;
  if (before > 1) set(1);
  f();
  if (before > 1) set(before);
}

std::atomic<bool> g_reference{false};

// How sgemm reads a rows x cols matrix stored with strides (rs, cs): as it
// is (row-major, leading dimension ld) or transposed (column-major).
struct Layout {
  bool ok = false;
  char trans = 'N';
  int64_t ld = 0;
};

Layout layout_of(int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
  // Size-1 dimensions may carry any stride; only the real ones matter.
  if (cols == 1 || cs == 1) {
    const int64_t ld = rows == 1 ? cols : rs;
    if (ld >= cols) return {true, 'N', ld};
  }
  if (rows == 1 || rs == 1) {
    const int64_t ld = cols == 1 ? rows : cs;
    if (ld >= rows) return {true, 'T', ld};
  }
  return {};
}

bool fast_dtype(const Tensor& t) { return t.device().is_cpu() && t.scalar_type() == torch::kFloat32; }

bool fast_path_on(std::initializer_list<const Tensor*> ts) {
  if (!sgemm() || g_reference || at::autocast::is_cpu_enabled()) return false;
  for (const Tensor* t : ts)
    if (t->defined() && !fast_dtype(*t)) return false;
  return true;
}

bool records_grad(std::initializer_list<const Tensor*> ts) {
  if (!torch::GradMode::is_enabled()) return false;
  for (const Tensor* t : ts)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}

// Element offsets of each matrix of t over its leading `nb` dimensions, in
// row-major order of those dimensions (expanded dimensions have stride 0).
std::vector<int64_t> batch_offsets(const Tensor& t, int64_t nb) {
  std::vector<int64_t> off{0};
  for (int64_t d = 0; d < nb; ++d) {
    std::vector<int64_t> next;
    next.reserve(off.size() * t.size(d));
    for (int64_t o : off)
      for (int64_t i = 0; i < t.size(d); ++i) next.push_back(o + i * t.stride(d));
    off = std::move(next);
  }
  return off;
}

// out [batch..., M, N] (rows unit-stride; holding the bias when beta is 1)
// = alpha a [batch..., M, K] · b [batch..., K, N] + beta out, with a and b
// expanded to out's batch and of one dtype (fp32, or bf16 into fp32 out).
void run(Tensor a, Tensor b, Tensor& out, float alpha, float beta) {
  const int64_t nb = out.dim() - 2, M = out.size(-2), N = out.size(-1), K = a.size(-1);
  auto la = layout_of(M, K, a.stride(-2), a.stride(-1));
  if (!la.ok) {
    a = a.contiguous();
    la = layout_of(M, K, a.stride(-2), a.stride(-1));
  }
  auto lb = layout_of(K, N, b.stride(-2), b.stride(-1));
  if (!lb.ok) {
    b = b.contiguous();
    lb = layout_of(K, N, b.stride(-2), b.stride(-1));
  }
  const int64_t ldc = M == 1 ? N : out.stride(-2);
  const auto oa = batch_offsets(a, nb), ob = batch_offsets(b, nb), oc = batch_offsets(out, nb);
  float* pc = out.data_ptr<float>();
  const bool bf16 = a.scalar_type() == torch::kBFloat16;
  const char* pa = static_cast<const char*>(a.data_ptr());
  const char* pb = static_cast<const char*>(b.data_ptr());
  const int64_t es = a.element_size();
  auto one = [&](int64_t i) {
    const void* A = pa + oa[i] * es;
    const void* B = pb + ob[i] * es;
    const int status = bf16 ? gemm_bf16()(la.trans, lb.trans, M, N, K, alpha, static_cast<const uint16_t*>(A), la.ld,
                                          static_cast<const uint16_t*>(B), lb.ld, beta, pc + oc[i], ldc)
                            : sgemm()(la.trans, lb.trans, M, N, K, alpha, static_cast<const float*>(A), la.ld,
                                      static_cast<const float*>(B), lb.ld, beta, pc + oc[i], ldc);
    // A refused call leaves C unwritten: an error, never a silent result.
    TORCH_CHECK(status == 0, "oneDNN's gemm refused a ", M, "x", K, "x", N, " product (status ", status,
                "); RSAM_GEMM=torch avoids it");
  };
  // Many products (attention's heads and windows) run one per thread, when
  // small or when they share the threads evenly; others one after another,
  // each on every thread.
  const int64_t count = int64_t(oa.size()), threads = at::get_num_threads();
  const bool small = double(M) * double(N) * double(K) < double(1 << 22);
  if (at::in_parallel_region()) {
    // Called from a task of a parallel loop: this thread is the task's.
    single_threaded([&] {
      for (int64_t i = 0; i < count; ++i) one(i);
    });
  } else if (count > 1 && count >= threads && (small || count % threads == 0)) {
    at::parallel_for(0, count, 1, [&](int64_t i0, int64_t i1) {
      single_threaded([&] {
        for (int64_t i = i0; i < i1; ++i) one(i);
      });
    });
  } else {
    for (int64_t i = 0; i < count; ++i) one(i);
  }
}

// t's last two dimensions under the batch dimensions `batch`.
Tensor expand_to(const Tensor& t, std::vector<int64_t> batch) {
  batch.insert(batch.end(), {t.size(-2), t.size(-1)});
  return t.expand(batch);
}

// a [..., M, K] · b [..., K, N] (+ bias [N]) on the fast path; every shape
// check done by the caller.
Tensor product(const Tensor& a, const Tensor& b, const Tensor& bias) {
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  if (b.dim() == 2 && a.dim() > 2) {
    // Batch dimensions of a alone fold into its rows, as torch::matmul does.
    auto sizes = a.sizes().vec();
    sizes.back() = N;
    return product(a.reshape({-1, K}), b, bias).view(sizes);
  }
  const auto batch = at::infer_size(a.sizes().slice(0, a.dim() - 2), b.sizes().slice(0, b.dim() - 2));
  auto out_shape = batch;
  out_shape.insert(out_shape.end(), {M, N});
  auto out = torch::empty(out_shape, a.options());
  if (bias.defined()) out.copy_(bias.expand(out_shape));  // sgemm adds to it (beta 1)
  run(expand_to(a, batch), expand_to(b, batch), out, 1.f, bias.defined() ? 1.f : 0.f);
  return out;
}

bool shapes_fit(const Tensor& a, const Tensor& b, const Tensor& bias) {
  if (a.dim() < 2 || b.dim() < 2 || a.size(-1) != b.size(-2)) return false;
  if (a.size(-1) == 0 || a.size(-2) == 0 || b.size(-1) == 0) return false;  // torch handles empty products
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != b.size(-1))) return false;
  if (a.dim() > 2 || b.dim() > 2) {
    try {
      at::infer_size(a.sizes().slice(0, a.dim() - 2), b.sizes().slice(0, b.dim() - 2));
    } catch (const c10::Error&) {
      return false;
    }
  }
  return true;
}

// y = x Wᵀ + b for 2-D x, with the same sgemm in both directions.
struct LinearFunction : torch::autograd::Function<LinearFunction> {
  // The bias is optional: an undefined tensor may not be a Function input.
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& x, const Tensor& w,
                        const c10::optional<Tensor>& b) {
    ctx->save_for_backward({x, w});
    ctx->saved_data["bias"] = b.has_value();
    return product(x, w.t(), b ? *b : Tensor());
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& x = saved[0];
    const Tensor& w = saved[1];
    const Tensor& gy = grads[0];
    Tensor gx, gw, gb;
    if (ctx->needs_input_grad(0)) gx = product(gy, w, {});
    if (ctx->needs_input_grad(1)) gw = product(gy.t(), x, {});
    // Without a bias there are two inputs to ask about, not three.
    if (ctx->saved_data["bias"].toBool() && ctx->needs_input_grad(2)) gb = gy.sum(0);
    return {gx, gw, gb};
  }
};

// a·b for a, b with the same batch dimensions (no broadcasting), so that
// training takes the same kernels as inference: the attention products.
struct MatmulFunction : torch::autograd::Function<MatmulFunction> {
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& a, const Tensor& b) {
    ctx->save_for_backward({a, b});
    return product(a, b, {});
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& g = grads[0];
    Tensor ga, gb;
    if (ctx->needs_input_grad(0)) ga = product(g, saved[1].transpose(-2, -1), {});
    if (ctx->needs_input_grad(1)) gb = product(saved[0].transpose(-2, -1), g, {});
    return {ga, gb};
  }
};

}  // namespace

bool available() { return sgemm() != nullptr; }
void set_reference(bool on) { g_reference = on; }
bool reference() { return g_reference; }

Tensor matmul(const Tensor& a, const Tensor& b, const Tensor& bias) {
  const bool fast = fast_path_on({&a, &b, &bias}) && shapes_fit(a, b, bias);
  if (fast && !records_grad({&a, &b, &bias})) return product(a, b, bias);
  if (fast && !bias.defined() && a.dim() == b.dim() &&
      a.sizes().slice(0, a.dim() - 2) == b.sizes().slice(0, b.dim() - 2))
    return MatmulFunction::apply(a, b);
  return bias.defined() ? torch::matmul(a, b) + bias : torch::matmul(a, b);
}

void add_product(Tensor& out, const Tensor& a, const Tensor& b, double alpha, double beta) {
  const bool fp32 = a.scalar_type() == torch::kFloat32 && b.scalar_type() == torch::kFloat32;
  const bool bf16 = a.scalar_type() == torch::kBFloat16 && b.scalar_type() == torch::kBFloat16 && gemm_bf16();
  const bool fast = sgemm() && !g_reference && (fp32 || bf16) && a.device().is_cpu() && b.device().is_cpu() &&
                    out.device().is_cpu() && out.scalar_type() == torch::kFloat32 && out.dim() >= 2 &&
                    (out.size(-1) == 1 || out.stride(-1) == 1) &&
                    (out.size(-2) == 1 || out.stride(-2) >= out.size(-1)) && !records_grad({&out, &a, &b}) &&
                    shapes_fit(a, b, {}) && a.size(-2) == out.size(-2) && b.size(-1) == out.size(-1);
  std::vector<int64_t> batch;
  if (fast) {
    try {
      batch = at::infer_size(at::infer_size(a.sizes().slice(0, a.dim() - 2), b.sizes().slice(0, b.dim() - 2)),
                             out.sizes().slice(0, out.dim() - 2));
    } catch (const c10::Error&) {
      batch.clear();
    }
  }
  if (!fast || batch != out.sizes().slice(0, out.dim() - 2).vec()) {
    // torch's path; under bf16 autocast matmul yields bf16, summed in fp32.
    auto ab = torch::matmul(a, b).to(out.scalar_type());
    if (beta == 0.0)  // out may hold anything, NaN included
      out.copy_(alpha == 1.0 ? ab : ab * alpha);
    else
      (beta == 1.0 ? out : out.mul_(beta)).add_(ab, alpha);
    return;
  }
  run(expand_to(a, batch), expand_to(b, batch), out, float(alpha), float(beta));
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  if (!fast_path_on({&x, &weight, &bias}) || x.dim() < 1 || weight.dim() != 2 || x.size(-1) != weight.size(1) ||
      x.numel() == 0 || weight.numel() == 0 || (bias.defined() && (bias.dim() != 1 || bias.size(0) != weight.size(0))))
    return torch::nn::functional::linear(x, weight, bias);
  auto sizes = x.sizes().vec();
  sizes.back() = weight.size(0);
  auto x2 = x.reshape({-1, x.size(-1)});
  auto y = records_grad({&x, &weight, &bias})
               ? LinearFunction::apply(x2, weight, bias.defined() ? c10::optional<Tensor>(bias) : c10::nullopt)
               : product(x2, weight.t(), bias);
  return y.view(sizes);
}

}  // namespace rsam::gemm
