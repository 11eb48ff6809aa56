// The convolution engine behind ops::convolve: kernel plans (symmetries,
// dropped taps, separable terms) and the SIMD row kernels. Its own file so
// the vector code and its rounding rules (the target is built with
// -ffp-contract=off, see CMakeLists.txt) sit apart from the other ops.
#include "degrade/convolve.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include <opencv2/core/utility.hpp>
#include <opencv2/imgproc.hpp>

#include "error.h"

namespace rsam::degrade::ops {

namespace {

// The centre of a CV_64F kernel left after dropping symmetric border
// rows/columns while the L1 mass they hold stays within `budget`.
cv::Rect trim_symmetric_borders(const cv::Mat& k, double budget, double* dropped_out = nullptr) {
  int top = 0, left = 0;
  double dropped = 0;
  for (bool changed = true; changed;) {
    changed = false;
    const int h = k.rows - 2 * top, w = k.cols - 2 * left;
    if (h > 1) {
      const double m = cv::norm(k(cv::Rect(left, top, w, 1)), cv::NORM_L1) +
                       cv::norm(k(cv::Rect(left, top + h - 1, w, 1)), cv::NORM_L1);
      if (dropped + m <= budget) dropped += m, ++top, changed = true;
    }
    const int h2 = k.rows - 2 * top;
    if (w > 1) {
      const double m = cv::norm(k(cv::Rect(left, top, 1, h2)), cv::NORM_L1) +
                       cv::norm(k(cv::Rect(left + w - 1, top, 1, h2)), cv::NORM_L1);
      if (dropped + m <= budget) dropped += m, ++left, changed = true;
    }
  }
  if (dropped_out) *dropped_out = dropped;
  return cv::Rect(left, top, k.cols - 2 * left, k.rows - 2 * top);
}

// ------------------------------------------------------------ the row kernel

// One term of a row correlation: k * rows[dy][x + offset], or for a mirrored
// pair of taps with the same weight k * (rows[dy][x + offset] + rows[dy2][x + offset2]).
struct Tap {
  int dy, offset;
  int dy2, offset2;  // the mirrored tap, or dy2 < 0
  float k;
};

typedef float v8f __attribute__((vector_size(32)));
typedef float v16f __attribute__((vector_size(64)));

// out[x] = sum over taps, for x from x0 in blocks of kAcc vectors V held in
// registers across all taps (one load per tap and element, one store per
// block; kAcc independent sums hide the add latency). Returns where it
// stopped: less than a block is left.
template <typename V, int kAcc>
inline __attribute__((always_inline)) int correlate_blocks(float* __restrict out, const float* const* rows,
                                                           const Tap* taps, size_t ntaps, int x0, int n) {
  constexpr int kLanes = static_cast<int>(sizeof(V) / sizeof(float)), kBlock = kLanes * kAcc;
  for (; x0 + kBlock <= n; x0 += kBlock) {
    V acc[kAcc] = {};
    for (size_t t = 0; t < ntaps; ++t) {
      const float* p = rows[taps[t].dy] + taps[t].offset + x0;
      const float k = taps[t].k;
      if (taps[t].dy2 >= 0) {  // k * (a + b): one multiply for two taps
        const float* q = rows[taps[t].dy2] + taps[t].offset2 + x0;
        for (int a = 0; a < kAcc; ++a) {
          V u, v;
          std::memcpy(&u, p + a * kLanes, sizeof u);
          std::memcpy(&v, q + a * kLanes, sizeof v);
          acc[a] += k * (u + v);
        }
      } else {
        for (int a = 0; a < kAcc; ++a) {
          V v;
          std::memcpy(&v, p + a * kLanes, sizeof v);
          acc[a] += k * v;
        }
      }
    }
    std::memcpy(out + x0, acc, sizeof acc);
  }
  return x0;
}

inline __attribute__((always_inline)) void correlate_tail(float* out, const float* const* rows, const Tap* taps,
                                                          size_t ntaps, int x0, int n) {
  for (; x0 < n; ++x0) {
    float a = 0.0f;
    for (size_t t = 0; t < ntaps; ++t) {
      const Tap& tp = taps[t];
      a += tp.dy2 >= 0 ? tp.k * (rows[tp.dy][tp.offset + x0] + rows[tp.dy2][tp.offset2 + x0])
                       : tp.k * rows[tp.dy][tp.offset + x0];
    }
    out[x0] = a;
  }
}

// The variants differ only in vector width. Each output element is summed
// tap by tap in the same order, without FMA contraction (the library is
// built with -ffp-contract=off: g++ contracts by default, and AVX-512 implies
// FMA), so every variant, block size and tail gives the same bytes (test
// Ops.ConvolveVariantsGiveTheSameBytes).
using CorrelateFn = void (*)(float*, const float* const*, const Tap*, size_t, int);

void correlate_row_generic(float* out, const float* const* rows, const Tap* taps, size_t ntaps, int n) {
  int x = correlate_blocks<v8f, 8>(out, rows, taps, ntaps, 0, n);
  x = correlate_blocks<v8f, 1>(out, rows, taps, ntaps, x, n);
  correlate_tail(out, rows, taps, ntaps, x, n);
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) void correlate_row_avx2(float* out, const float* const* rows, const Tap* taps,
                                                        size_t ntaps, int n) {
  int x = correlate_blocks<v8f, 8>(out, rows, taps, ntaps, 0, n);
  x = correlate_blocks<v8f, 1>(out, rows, taps, ntaps, x, n);
  correlate_tail(out, rows, taps, ntaps, x, n);
}

__attribute__((target("avx512f"))) void correlate_row_avx512(float* out, const float* const* rows, const Tap* taps,
                                                             size_t ntaps, int n) {
  int x = correlate_blocks<v16f, 8>(out, rows, taps, ntaps, 0, n);
  x = correlate_blocks<v16f, 1>(out, rows, taps, ntaps, x, n);
  x = correlate_blocks<v8f, 1>(out, rows, taps, ntaps, x, n);
  correlate_tail(out, rows, taps, ntaps, x, n);
}
#endif

struct Variant {
  const char* name;
  CorrelateFn fn;
};

// Best first.
std::vector<Variant> supported_variants() {
  std::vector<Variant> v;
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) v.push_back({"avx512", correlate_row_avx512});
  if (__builtin_cpu_supports("avx2")) v.push_back({"avx2", correlate_row_avx2});
#endif
  v.push_back({"generic", correlate_row_generic});
  return v;
}

std::atomic<CorrelateFn>& correlate_fn() {
  static std::atomic<CorrelateFn> fn{supported_variants().front().fn};
  return fn;
}

void correlate_row(float* out, const float* const* rows, const Tap* taps, size_t ntaps, int n) {
  correlate_fn().load(std::memory_order_relaxed)(out, rows, taps, ntaps, n);
}

// ------------------------------------------------------------ kernel plans

// Exact symmetries of a kernel. Mirror: k(y, x) = k(-y, x) = k(y, -x)
// (isotropic Gaussians, generalized and plateau isotropic kernels, sinc);
// point: k(y, x) = k(-y, -x) (every blur kernel here, anisotropic included).
enum class Symmetry { kNone, kPoint, kMirror };

Symmetry symmetry_of(const cv::Mat& k) {
  bool point = true, mirror = true;
  for (int y = 0; y < k.rows; ++y)
    for (int x = 0; x < k.cols; ++x) {
      const double v = k.at<double>(y, x);
      point = point && v == k.at<double>(k.rows - 1 - y, k.cols - 1 - x);
      mirror = mirror && v == k.at<double>(k.rows - 1 - y, x) && v == k.at<double>(y, k.cols - 1 - x);
    }
  return mirror ? Symmetry::kMirror : point ? Symmetry::kPoint : Symmetry::kNone;
}

// `k` with its smallest taps zeroed while the L1 mass zeroed stays within
// `budget`. Taps go by whole orbits of the symmetry (equal weights), so the
// symmetry survives. Unlike a border crop this also drops the empty corners
// of elongated kernels (anisotropic Gaussians).
cv::Mat drop_small_taps(const cv::Mat& k, Symmetry sym, double budget) {
  struct Orbit {
    double mag;  // |weight| of one tap
    int y, x, size;
  };
  std::vector<Orbit> orbits;
  const int kh = k.rows, kw = k.cols;
  for (int y = 0; y < kh; ++y)
    for (int x = 0; x < kw; ++x) {
      const int my = kh - 1 - y, mx = kw - 1 - x;
      int size = 1;
      if (sym == Symmetry::kMirror) {
        if (y > my || x > mx) continue;  // represented by its top-left image
        size = (y < my ? 2 : 1) * (x < mx ? 2 : 1);
      } else if (sym == Symmetry::kPoint) {
        if (y * kw + x > my * kw + mx) continue;
        size = y * kw + x < my * kw + mx ? 2 : 1;
      }
      orbits.push_back({std::abs(k.at<double>(y, x)), y, x, size});
    }
  std::stable_sort(orbits.begin(), orbits.end(), [](const Orbit& a, const Orbit& b) { return a.mag < b.mag; });
  cv::Mat out = k.clone();
  double dropped = 0;
  for (const Orbit& o : orbits) {
    if (dropped + o.mag * o.size > budget) break;
    dropped += o.mag * o.size;
    const int my = kh - 1 - o.y, mx = kw - 1 - o.x;
    out.at<double>(o.y, o.x) = 0.0;
    if (sym != Symmetry::kNone) out.at<double>(my, mx) = 0.0;
    if (sym == Symmetry::kMirror) out.at<double>(my, o.x) = out.at<double>(o.y, mx) = 0.0;
  }
  return out;
}

void add_rows(float* out, const float* a, const float* b, int n) {
  for (int i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

// Direct correlation with the non-zero taps of `k` (CV_64F). Point-symmetric
// kernels are summed in mirrored pairs; mirror-symmetric ones first add the
// rows at +-dy (one add per element and row pair), then sum mirrored columns
// of those sums: a quarter of the multiplies and half the loads of a plain sum.
cv::Mat correlate_direct(const cv::Mat& src, const cv::Mat& k, Symmetry sym) {
  const int ch = src.channels(), kh = k.rows, kw = k.cols, ry = kh / 2, rx = kw / 2;
  std::vector<Tap> taps;
  std::vector<char> used(static_cast<size_t>(ry) + 1, 0);  // mirror: which row sums the taps read
  for (int y = 0; y < kh; ++y)
    for (int x = 0; x < kw; ++x) {
      const double v = k.at<double>(y, x);
      if (v == 0.0) continue;
      const int my = kh - 1 - y, mx = kw - 1 - x;
      if (sym == Symmetry::kMirror) {
        if (y < ry || x < rx) continue;  // one quadrant (with its axes) covers all
        const int d = y - ry;
        used[static_cast<size_t>(d)] = 1;
        taps.push_back({d, x * ch, x > rx ? d : -1, mx * ch, static_cast<float>(v)});
      } else if (sym == Symmetry::kNone || (y == my && x == mx)) {
        taps.push_back({y, x * ch, -1, 0, static_cast<float>(v)});
      } else if (y * kw + x < my * kw + mx) {  // first of the pair; its mirror comes later
        taps.push_back({y, x * ch, my, mx * ch, static_cast<float>(v)});
      }
    }
  cv::Mat padded;
  cv::copyMakeBorder(src, padded, ry, ry, rx, rx, cv::BORDER_REFLECT_101);
  cv::Mat out(src.size(), src.type());
  const int n = src.cols * ch, pw = padded.cols * ch;
  cv::parallel_for_(cv::Range(0, src.rows), [&](const cv::Range& r) {
    std::vector<const float*> rows(static_cast<size_t>(kh));
    std::vector<float> sums(sym == Symmetry::kMirror ? static_cast<size_t>(ry) * pw : 0);
    for (int y = r.start; y < r.end; ++y) {
      if (sym == Symmetry::kMirror) {
        rows[0] = padded.ptr<float>(y + ry);
        for (int d = 1; d <= ry; ++d) {
          if (!used[static_cast<size_t>(d)]) continue;
          float* s = sums.data() + static_cast<size_t>(d - 1) * pw;
          add_rows(s, padded.ptr<float>(y + ry + d), padded.ptr<float>(y + ry - d), pw);
          rows[static_cast<size_t>(d)] = s;
        }
      } else {
        for (int i = 0; i < kh; ++i) rows[static_cast<size_t>(i)] = padded.ptr<float>(y + i);
      }
      correlate_row(out.ptr<float>(y), rows.data(), taps.data(), taps.size(), n);
    }
  });
  return out;
}

// Taps of a 1-D kernel over rows (vertical) or over elements `ch` apart
// (horizontal); mirrored pairs when it is symmetric (to 1e-9, then made exactly so).
std::vector<Tap> taps_1d(const cv::Mat& v64, bool vertical, int ch) {
  const int len = static_cast<int>(v64.total());
  const double* v = v64.ptr<double>();
  double vmax = 0, asym = 0;
  for (int i = 0; i < len; ++i) {
    vmax = std::max(vmax, std::abs(v[i]));
    asym = std::max(asym, std::abs(v[i] - v[len - 1 - i]));
  }
  const bool even = asym <= 1e-9 * vmax;
  std::vector<Tap> taps;
  for (int i = 0; i < len; ++i) {
    const int m = len - 1 - i;
    if (even && i > m) break;
    const bool pair = even && i < m;
    const double w = pair ? 0.5 * (v[i] + v[m]) : v[i];
    if (w == 0.0) continue;
    if (vertical)
      taps.push_back({i, 0, pair ? m : -1, 0, static_cast<float>(w)});
    else
      taps.push_back({0, i * ch, pair ? 0 : -1, m * ch, static_cast<float>(w)});
  }
  return taps;
}

struct SeparablePlan {
  cv::Mat kernel;  // the cropped kernel the terms approximate
  std::vector<std::vector<Tap>> vertical, horizontal;
  double cost = 0;  // taps per output element
};

// Rank-1 terms of `k`, cropped while the crop holds at most half the
// budget, until what is left out has an L1 mass within `budget`; empty if
// that needs more than `max_terms` terms. Terms come by cross approximation
// with full pivoting (the column and row through the largest residual
// entry), which is exact for kernels of exact rank <= max_terms and, on
// these tiny matrices, far cheaper than an SVD (OpenCV's Jacobi SVD of a
// 21x21 kernel takes milliseconds).
SeparablePlan plan_separable(const cv::Mat& k, cv::Size image, int ch, double budget, int max_terms) {
  SeparablePlan plan;
  double dropped = 0;
  plan.kernel = k(trim_symmetric_borders(k, budget / 2, &dropped)).clone();
  cv::Mat residual = plan.kernel.clone();
  std::vector<std::pair<cv::Mat, cv::Mat>> terms;  // column, row
  while (dropped + cv::norm(residual, cv::NORM_L1) > budget) {
    if (static_cast<int>(terms.size()) == max_terms) return {};
    cv::Point pivot;
    double peak = 0;
    cv::minMaxLoc(cv::abs(residual), nullptr, &peak, nullptr, &pivot);
    const cv::Mat column = residual.col(pivot.x).clone();
    const cv::Mat row = residual.row(pivot.y) / residual.at<double>(pivot);
    residual -= column * row;
    terms.emplace_back(column, row);
  }
  // Vertical passes also cover the horizontal padding.
  const double widen = 1.0 + 2.0 * (plan.kernel.cols / 2) / std::max(1, image.width);
  for (size_t i = 0; i < terms.size(); ++i) {
    plan.vertical.push_back(taps_1d(terms[i].first, true, ch));
    plan.horizontal.push_back(taps_1d(terms[i].second, false, ch));
    plan.cost += plan.vertical.back().size() * widen + plan.horizontal.back().size() + (i > 0 ? 0.5 : 0.0);
  }
  return plan;
}

// Vertical then horizontal 1-D passes, row by row, summed over the terms.
cv::Mat correlate_separable(const cv::Mat& src, const SeparablePlan& plan) {
  const int ch = src.channels(), kh = plan.kernel.rows, kw = plan.kernel.cols;
  cv::Mat padded;
  cv::copyMakeBorder(src, padded, kh / 2, kh / 2, kw / 2, kw / 2, cv::BORDER_REFLECT_101);
  cv::Mat out(src.size(), src.type());
  const int n = src.cols * ch, pw = padded.cols * ch;
  cv::parallel_for_(cv::Range(0, src.rows), [&](const cv::Range& r) {
    std::vector<const float*> rows(static_cast<size_t>(kh));
    std::vector<float> column(static_cast<size_t>(pw)), term(static_cast<size_t>(n));
    for (int y = r.start; y < r.end; ++y) {
      for (int i = 0; i < kh; ++i) rows[static_cast<size_t>(i)] = padded.ptr<float>(y + i);
      float* o = out.ptr<float>(y);
      for (size_t t = 0; t < plan.vertical.size(); ++t) {
        correlate_row(column.data(), rows.data(), plan.vertical[t].data(), plan.vertical[t].size(), pw);
        const float* c = column.data();
        correlate_row(t == 0 ? o : term.data(), &c, plan.horizontal[t].data(), plan.horizontal[t].size(), n);
        if (t > 0) add_rows(o, o, term.data(), n);
      }
    }
  });
  return out;
}

}  // namespace

std::vector<std::string> convolve_variants() {
  std::vector<std::string> names;
  for (const Variant& v : supported_variants()) names.push_back(v.name);
  return names;
}

void force_convolve_variant(const std::string& name) {
  for (const Variant& v : supported_variants())
    if (name.empty() || name == v.name) {
      correlate_fn().store(v.fn);
      return;
    }
  throw rsam::Error("degrade: no convolution variant '" + name + "' on this CPU");
}

cv::Mat convolve(const cv::Mat& src, const cv::Mat& kernel) {
  CV_Assert(src.depth() == CV_32F && (src.channels() == 1 || src.channels() == 3));
  CV_Assert(kernel.rows % 2 == 1 && kernel.cols % 2 == 1);
  cv::Mat k;
  kernel.convertTo(k, CV_64F);
  const double budget = 1e-5;  // L1 mass of the kernel the result may leave out
  const Symmetry sym = symmetry_of(k);
  cv::Mat kept = drop_small_taps(k, sym, budget);
  kept = kept(trim_symmetric_borders(kept, 0.0)).clone();
  double direct_cost = 0;  // taps per output element (a row sum counts half)
  for (int y = 0; y < kept.rows; ++y)
    for (int x = 0; x < kept.cols; ++x) {
      const int my = kept.rows - 1 - y, mx = kept.cols - 1 - x;
      if (kept.at<double>(y, x) == 0.0) continue;
      if (sym == Symmetry::kMirror)
        direct_cost += y >= my && x >= mx ? 1.0 : 0.0;
      else if (sym == Symmetry::kPoint)
        direct_cost += y * kept.cols + x <= my * kept.cols + mx ? 1.0 : 0.0;
      else
        direct_cost += 1.0;
    }
  if (sym == Symmetry::kMirror) direct_cost += 0.5 * (kept.rows / 2);
  const SeparablePlan sep = plan_separable(k, src.size(), src.channels(), budget, 2);
  if (!sep.vertical.empty() && sep.cost < direct_cost) return correlate_separable(src, sep);
  return correlate_direct(src, kept, sym);
}

cv::Mat convolve_reference(const cv::Mat& src, const cv::Mat& kernel) {
  CV_Assert(src.depth() == CV_32F && (src.channels() == 1 || src.channels() == 3));
  CV_Assert(kernel.rows % 2 == 1 && kernel.cols % 2 == 1);
  cv::Mat k;
  kernel.convertTo(k, CV_64F);
  const int ch = src.channels(), ry = k.rows / 2, rx = k.cols / 2;
  cv::Mat out(src.size(), src.type());
  for (int y = 0; y < src.rows; ++y)
    for (int x = 0; x < src.cols; ++x)
      for (int c = 0; c < ch; ++c) {
        double s = 0;
        for (int i = 0; i < k.rows; ++i) {
          const float* row = src.ptr<float>(cv::borderInterpolate(y + i - ry, src.rows, cv::BORDER_REFLECT_101));
          for (int j = 0; j < k.cols; ++j)
            s += k.at<double>(i, j) * row[cv::borderInterpolate(x + j - rx, src.cols, cv::BORDER_REFLECT_101) * ch + c];
        }
        out.ptr<float>(y)[x * ch + c] = static_cast<float>(s);
      }
  return out;
}

}  // namespace rsam::degrade::ops
