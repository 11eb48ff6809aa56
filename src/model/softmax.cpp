#include "model/softmax.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <limits>

#if defined(__x86_64__) && defined(__GNUC__)
// GCC 12 warns inside its own AVX-512 headers (their _mm512_undefined_*
// values) when the intrinsics are inlined; nothing here reads them.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define RSAM_HAVE_AVX512_KERNEL 1
#define RSAM_AVX512 __attribute__((target("avx512f")))
#endif

namespace rsam::kernels {

namespace {

template <class Store>
void reference_row(float* x, const float* bh, const float* bw, int64_t kh, int64_t kw, Store store) {
  const int64_t n = kh * kw;
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < kh; ++i)
    for (int64_t j = 0; j < kw; ++j) {
      float& t = x[i * kw + j];
      t = t + bh[i] + bw[j];  // the reference's order: (logit + rel_h) + rel_w
      m = std::max(m, t);
    }
  float sum = 0.f;
  for (int64_t k = 0; k < n; ++k) sum += (x[k] = std::exp(x[k] - m));
  const float inv = 1.f / sum;
  for (int64_t k = 0; k < n; ++k) store(k, x[k] * inv);
}

#ifdef RSAM_HAVE_AVX512_KERNEL

// expf to about 1 ulp (Cephes' polynomial on [-ln2/2, ln2/2]); scalef puts
// the exponent back and underflows to zero. Inputs here are <= 0.
RSAM_AVX512 inline __m512 exp16(__m512 x) {
  // max(floor, x) keeps a NaN x (the second operand wins on NaN).
  x = _mm512_max_ps(_mm512_set1_ps(-104.f), x);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(y, n);
}

// fp32 -> bf16 rounded to nearest even, NaN to 0x7FC0: c10::BFloat16's rule.
RSAM_AVX512 inline void store_bf16(uint16_t* dst, __mmask16 mask, __m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
  r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7FC0));
  _mm512_mask_cvtepi32_storeu_epi16(dst, mask, r);
}

inline __mmask16 tail_mask(int64_t count) { return __mmask16((1u << count) - 1); }

RSAM_AVX512 void vector_row(float* x, const float* bh, const float* bw, int64_t kh, int64_t kw, void* y, bool bf16) {
  const int64_t n = kh * kw, full = kw / 16 * 16;
  const __mmask16 tail = tail_mask(kw - full);
  // Biased logits written back in place, and their maximum.
  __m512 vmax = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t i = 0; i < kh; ++i) {
    const __m512 h = _mm512_set1_ps(bh[i]);
    float* xr = x + i * kw;
    for (int64_t j = 0; j < full; j += 16) {
      const __m512 t = _mm512_add_ps(_mm512_add_ps(_mm512_loadu_ps(xr + j), h), _mm512_loadu_ps(bw + j));
      _mm512_storeu_ps(xr + j, t);
      vmax = _mm512_max_ps(vmax, t);
    }
    if (tail) {
      const __m512 t = _mm512_add_ps(_mm512_add_ps(_mm512_maskz_loadu_ps(tail, xr + full), h),
                                     _mm512_maskz_loadu_ps(tail, bw + full));
      _mm512_mask_storeu_ps(xr + full, tail, t);
      vmax = _mm512_mask_max_ps(vmax, tail, vmax, t);
    }
  }
  const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
  // exp(t - max) in place, and the sum.
  __m512 vsum = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + k), m));
    _mm512_storeu_ps(x + k, e);
    vsum = _mm512_add_ps(vsum, e);
  }
  const __mmask16 rest = tail_mask(n - k);
  if (rest) {
    const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(rest, x + k), m));
    _mm512_mask_storeu_ps(x + k, rest, e);
    vsum = _mm512_mask_add_ps(vsum, rest, vsum, e);
  }
  const __m512 inv = _mm512_set1_ps(1.f / _mm512_reduce_add_ps(vsum));
  for (k = 0; k < n; k += 16) {
    const __mmask16 mask = n - k >= 16 ? __mmask16(0xFFFF) : tail_mask(n - k);
    const __m512 p = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, x + k), inv);
    if (bf16)
      store_bf16(static_cast<uint16_t*>(y) + k, mask, p);
    else
      _mm512_mask_storeu_ps(static_cast<float*>(y) + k, mask, p);
  }
}

#endif

}  // namespace

void rel_pos_softmax_reference(const RelPosSoftmax& a) {
  for (int64_t r = 0; r < a.rows; ++r) {
    float* x = a.x + r * a.ldx;
    const float* bh = a.bh + r * a.kh;
    const float* bw = a.bw + r * a.kw;
    if (a.bf16) {
      auto* y = static_cast<c10::BFloat16*>(a.y) + r * a.ldy;
      reference_row(x, bh, bw, a.kh, a.kw, [y](int64_t k, float p) { y[k] = c10::BFloat16(p); });
    } else {
      auto* y = static_cast<float*>(a.y) + r * a.ldy;
      reference_row(x, bh, bw, a.kh, a.kw, [y](int64_t k, float p) { y[k] = p; });
    }
  }
}

bool vectorized_available() {
#ifdef RSAM_HAVE_AVX512_KERNEL
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok;
#else
  return false;
#endif
}

bool rel_pos_softmax_vectorized(const RelPosSoftmax& a) {
#ifdef RSAM_HAVE_AVX512_KERNEL
  if (!vectorized_available()) return false;
  const int64_t es = a.bf16 ? 2 : 4;
  for (int64_t r = 0; r < a.rows; ++r)
    vector_row(a.x + r * a.ldx, a.bh + r * a.kh, a.bw + r * a.kw, a.kh, a.kw, static_cast<char*>(a.y) + r * a.ldy * es,
               a.bf16);
  return true;
#else
  return false;
#endif
}

void rel_pos_softmax(torch::Tensor& logits, const torch::Tensor& bh, const torch::Tensor& bw, torch::Tensor& y,
                     bool reference) {
  const int64_t R = logits.size(0), kh = bh.size(-1), kw = bw.size(-1);
  TORCH_CHECK(logits.dim() == 2 && logits.scalar_type() == torch::kFloat32 && logits.stride(1) == 1 &&
                  logits.size(1) == kh * kw,
              "rel_pos_softmax: logits must be [rows, kh*kw] fp32 with unit-stride rows");
  TORCH_CHECK(bh.dim() == 2 && bw.dim() == 2 && bh.size(0) == R && bw.size(0) == R && bh.is_contiguous() &&
                  bw.is_contiguous() && bh.scalar_type() == torch::kFloat32 && bw.scalar_type() == torch::kFloat32,
              "rel_pos_softmax: the biases must be contiguous fp32 [rows, kh] and [rows, kw]");
  TORCH_CHECK(y.dim() == 2 && y.size(0) == R && y.size(1) == kh * kw && y.stride(1) == 1 &&
                  (y.scalar_type() == torch::kFloat32 || y.scalar_type() == torch::kBFloat16),
              "rel_pos_softmax: the output must be [rows, kh*kw] fp32 or bf16 with unit-stride rows");
  TORCH_CHECK(logits.device().is_cpu() && bh.device().is_cpu() && bw.device().is_cpu() && y.device().is_cpu(),
              "rel_pos_softmax: CPU tensors only");
  RelPosSoftmax a;
  a.x = logits.data_ptr<float>();
  a.ldx = logits.stride(0);
  a.bh = bh.data_ptr<float>();
  a.bw = bw.data_ptr<float>();
  a.kh = kh;
  a.kw = kw;
  a.y = y.data_ptr();
  a.ldy = y.stride(0);
  a.bf16 = y.scalar_type() == torch::kBFloat16;
  const bool vec = !reference && vectorized_available();
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, kh * kw));
  at::parallel_for(0, R, grain, [&](int64_t r0, int64_t r1) {
    RelPosSoftmax s = a;
    s.x += r0 * a.ldx;
    s.bh += r0 * kh;
    s.bw += r0 * kw;
    s.y = static_cast<char*>(a.y) + r0 * a.ldy * y.element_size();
    s.rows = r1 - r0;
    if (!vec || !rel_pos_softmax_vectorized(s)) rel_pos_softmax_reference(s);
  });
}

}  // namespace rsam::kernels
