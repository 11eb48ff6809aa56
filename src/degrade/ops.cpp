#include "degrade/ops.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include <opencv2/core/utility.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "error.h"

namespace rsam::degrade::ops {

void parallel_rows(int rows, uint64_t seed, const std::function<void(int, int, Rng&)>& fn) {
  const int blocks = (rows + kBlockRows - 1) / kBlockRows;
  cv::parallel_for_(cv::Range(0, blocks), [&](const cv::Range& r) {
    for (int b = r.start; b < r.end; ++b) {
      Rng rng(derive_seed(seed, static_cast<uint64_t>(b)));
      fn(b * kBlockRows, std::min(rows, (b + 1) * kBlockRows), rng);
    }
  });
}

cv::Mat cvt_color(const cv::Mat& src, int code) {
  cv::Mat first;  // converts one block to learn the output type
  const int rows0 = std::min(src.rows, kBlockRows);
  cv::cvtColor(src.rowRange(0, rows0), first, code);
  cv::Mat dst(src.rows, src.cols, first.type());
  first.copyTo(dst.rowRange(0, rows0));
  const int blocks = (src.rows + kBlockRows - 1) / kBlockRows;
  cv::parallel_for_(cv::Range(1, std::max(1, blocks)), [&](const cv::Range& r) {
    for (int b = r.start; b < r.end; ++b) {
      const int r0 = b * kBlockRows, r1 = std::min(src.rows, r0 + kBlockRows);
      cv::Mat part;
      cv::cvtColor(src.rowRange(r0, r1), part, code);
      part.copyTo(dst.rowRange(r0, r1));
    }
  });
  return dst;
}

cv::Mat to_float(const cv::Mat& u8, double scale) {
  cv::Mat f;
  u8.convertTo(f, CV_32F, scale);
  return f;
}

cv::Mat to_u8(const cv::Mat& f32, double scale) {
  cv::Mat u;
  f32.convertTo(u, CV_8U, 1.0 / scale);  // saturate_cast: clamps and rounds to nearest
  return u;
}

void add_gaussian_noise(cv::Mat& f32, double sigma, bool gray, uint64_t seed, bool clamp01) {
  CV_Assert(f32.type() == CV_32FC3);
  const int w = f32.cols, n = 3 * w;
  const float s = static_cast<float>(sigma);
  parallel_rows(f32.rows, seed, [&](int r0, int r1, Rng& rng) {
    std::vector<float> z(static_cast<size_t>(gray ? w : n));
    for (int y = r0; y < r1; ++y) {
      rng.fill_normal(z.data(), z.size());
      float* p = f32.ptr<float>(y);
      if (gray) {
        for (int x = 0; x < w; ++x) {
          const float d = s * z[static_cast<size_t>(x)];
          p[3 * x] += d;
          p[3 * x + 1] += d;
          p[3 * x + 2] += d;
        }
      } else {
        for (int i = 0; i < n; ++i) p[i] += s * z[static_cast<size_t>(i)];
      }
      if (clamp01)
        for (int i = 0; i < n; ++i) p[i] = std::min(std::max(p[i], 0.0f), 1.0f);
    }
  });
}

PoissonTable::PoissonTable(const std::vector<double>& means) {
  means_.reserve(means.size());
  std::vector<double> pmf;
  for (double lam : means) {
    const auto offset = static_cast<uint32_t>(cdf_.size());
    if (!(lam > 0.0)) {  // mean 0 (or NaN from a caller's bug): always 0
      means_.push_back({offset, 1, 0});
      cdf_.push_back(1.0f);
      guide_.push_back(0);
      continue;
    }
    const double sd = std::sqrt(lam);
    const int lo = std::max(0, static_cast<int>(std::floor(lam - 12.0 * sd - 12.0)));
    const int hi = static_cast<int>(std::ceil(lam + 12.0 * sd + 12.0));
    const int mode = static_cast<int>(std::floor(lam));
    // Unnormalised pmf from the mode outwards by the ratio p(k+1)/p(k) = lam/(k+1):
    // no factorials, no underflow of exp(-lam) for large means.
    pmf.assign(static_cast<size_t>(hi - lo + 1), 0.0);
    pmf[static_cast<size_t>(mode - lo)] = 1.0;
    for (int k = mode; k < hi; ++k)
      pmf[static_cast<size_t>(k + 1 - lo)] = pmf[static_cast<size_t>(k - lo)] * lam / (k + 1);
    for (int k = mode; k > lo; --k) pmf[static_cast<size_t>(k - 1 - lo)] = pmf[static_cast<size_t>(k - lo)] * k / lam;
    double total = 0.0;
    for (double p : pmf) total += p;
    double acc = 0.0;
    for (double p : pmf) {
      acc += p;
      cdf_.push_back(static_cast<float>(acc / total));
    }
    cdf_.back() = 1.0f;
    means_.push_back({offset, static_cast<uint32_t>(pmf.size()), lo});
    // Guide table (Chen and Asau): bucket j of [0, 1) starts its search at
    // the first index whose CDF exceeds j / n, so a sample needs ~2 compares.
    const size_t n = pmf.size();
    size_t idx = 0;
    for (size_t j = 0; j < n; ++j) {
      const float edge = static_cast<float>(static_cast<double>(j) / static_cast<double>(n));
      while (idx + 1 < n && cdf_[offset + idx] <= edge) ++idx;
      guide_.push_back(static_cast<uint32_t>(idx));
    }
  }
}

int PoissonTable::sample(size_t i, double u) const {
  const Mean& m = means_[i];
  const float* c = cdf_.data() + m.offset;
  const size_t n = m.count;
  const float uf = static_cast<float>(u);
  size_t k = guide_[m.offset + std::min(n - 1, static_cast<size_t>(u * static_cast<double>(n)))];
  while (k + 1 < n && c[k] <= uf) ++k;
  return m.first + static_cast<int>(k);
}

cv::Mat jpeg_roundtrip(const cv::Mat& rgb8, int quality) {
  quality = std::clamp(quality, 1, 100);
  cv::Mat bgr;
  // libjpeg's colour transform assumes BGR order from OpenCV; feeding RGB
  // (as the albumentations reference does) would put chroma in the wrong planes.
  cv::cvtColor(rgb8, bgr, cv::COLOR_RGB2BGR);
  std::vector<uchar> buf;
  if (!cv::imencode(".jpg", bgr, buf, {cv::IMWRITE_JPEG_QUALITY, quality}))
    throw rsam::Error("degrade: JPEG encoding failed");
  cv::Mat dec = cv::imdecode(buf, cv::IMREAD_COLOR);
  if (dec.empty()) throw rsam::Error("degrade: JPEG decoding failed");
  cv::Mat out;
  cv::cvtColor(dec, out, cv::COLOR_BGR2RGB);
  return out;
}

cv::Mat fractal_noise(cv::Size size, double exponent, int base_cells, Rng& rng) {
  // Smooth fields do not need full resolution: build at most 256 px across
  // and upsample once.
  const int longest = std::max(size.width, size.height);
  const double shrink = longest > 256 ? 256.0 / longest : 1.0;
  const cv::Size work(std::max(2, static_cast<int>(std::lround(size.width * shrink))),
                      std::max(2, static_cast<int>(std::lround(size.height * shrink))));
  const int work_longest = std::max(work.width, work.height);
  cv::Mat acc = cv::Mat::zeros(work, CV_32F);
  const double falloff = std::pow(2.0, exponent / 2.0);
  double amp = 1.0;
  int cells = std::max(2, base_cells);
  for (int octave = 0; octave < 6 && cells <= std::max(4, work_longest / 2); ++octave) {
    const int gw = std::max(2, static_cast<int>(std::lround(static_cast<double>(cells) * work.width / work_longest)));
    const int gh = std::max(2, static_cast<int>(std::lround(static_cast<double>(cells) * work.height / work_longest)));
    cv::Mat grid(gh, gw, CV_32F);
    for (int y = 0; y < gh; ++y)
      for (int x = 0; x < gw; ++x) grid.at<float>(y, x) = static_cast<float>(rng.uniform());
    cv::Mat up;
    cv::resize(grid, up, work, 0, 0, cv::INTER_CUBIC);
    cv::scaleAdd(up, amp, acc, acc);
    amp *= falloff;
    cells *= 2;
  }
  cv::normalize(acc, acc, 0.0, 1.0, cv::NORM_MINMAX);
  if (work == size) return acc;
  cv::Mat out;
  cv::resize(acc, out, size, 0, 0, cv::INTER_LINEAR);
  return out;
}

cv::Mat line_kernel(int ksize, double angle_deg) {
  ksize = std::max(1, ksize | 1);
  cv::Mat k = cv::Mat::zeros(ksize, ksize, CV_32F);
  const double a = angle_deg * CV_PI / 180.0;
  const double dx = std::cos(a), dy = std::sin(a);
  const double half = (ksize - 1) / 2.0;
  double sum = 0.0;
  for (int y = 0; y < ksize; ++y) {
    for (int x = 0; x < ksize; ++x) {
      const double px = x - half, py = y - half;
      const double along = px * dx + py * dy;
      const double across = std::abs(-px * dy + py * dx);
      // Coverage of the pixel by a 1-px-wide segment of length ksize.
      const double w_across = std::max(0.0, 1.0 - across);
      const double w_along = std::clamp(half + 0.5 - std::abs(along), 0.0, 1.0);
      const double w = w_across * w_along;
      k.at<float>(y, x) = static_cast<float>(w);
      sum += w;
    }
  }
  k /= sum;
  return k;
}

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

namespace {

// sigma of the half-resolution Gaussian that, between a 2x box downsample
// (variance 1/4 px^2) and a bilinear 2x upsample (about 2/3 px^2, in
// full-resolution pixels), makes a Gaussian of `sigma` at full resolution.
double halfres_sigma(double sigma) {
  CV_Assert(sigma >= 2.0);
  return std::sqrt(sigma * sigma - 0.25 - 2.0 / 3.0) / 2.0;
}

// The partner of pixel 2j in its 2x block along an axis of n pixels: 2j + 1,
// or past the end of an odd size its reflect-101 image n - 2 (so every
// block is centred at 2j + 1/2, where up2_row expects it).
inline int block_partner(int j, int n) { return 2 * j + 1 < n ? 2 * j + 1 : std::max(n - 2, 0); }

// 2x box downsample (cv::resize INTER_AREA at exactly 1/2; odd sizes are
// first extended by one reflect-101 row/column).
cv::Mat down2(const cv::Mat& src) {
  cv::Mat even = src, out;
  if (src.cols % 2 != 0 || src.rows % 2 != 0)
    cv::copyMakeBorder(src, even, 0, src.rows % 2, 0, src.cols % 2, cv::BORDER_REFLECT_101);
  cv::resize(even, out, cv::Size(even.cols / 2, even.rows / 2), 0, 0, cv::INTER_AREA);
  return out;
}

// The bilinear 2x upsample (half-pixel centres, edges replicated: weights
// 1/4, 3/4) in two halves: up2_cols widens every row of `half` to `width`
// pixels once (cv::resize INTER_LINEAR at exactly 2x, the last column
// dropped for odd widths); up2_row then makes any full-resolution row from
// two widened rows.
cv::Mat up2_cols(const cv::Mat& half, int width) {
  cv::Mat out;
  cv::resize(half, out, cv::Size(2 * half.cols, half.rows), 0, 0, cv::INTER_LINEAR);
  return out.colRange(0, width);
}

void up2_row(const cv::Mat& wide, int y, float* out) {
  const int n = wide.cols * wide.channels(), i = y / 2;
  const float* a = wide.ptr<float>(y % 2 == 0 ? std::max(i - 1, 0) : i);
  const float* b = wide.ptr<float>(y % 2 == 0 ? i : std::min(i + 1, wide.rows - 1));
  const float wa = y % 2 == 0 ? 0.25f : 0.75f, wb = 1.0f - wa;
  for (int k = 0; k < n; ++k) out[k] = wa * a[k] + wb * b[k];
}

cv::Mat gaussian_blur(const cv::Mat& src, double sigma) {
  const cv::Mat g = cv::getGaussianKernel(2 * static_cast<int>(std::ceil(4 * sigma)) + 1, sigma, CV_64F);
  return convolve(src, g * g.t());
}

// The unsharp-mask blend of one element.
inline float usm_blend(float p, float b, float s, float weight) {
  const float sharp = std::min(std::max(p + weight * (p - b), 0.0f), 1.0f);
  return s * sharp + (1.0f - s) * p;
}

}  // namespace

cv::Mat gaussian_blur_halfres(const cv::Mat& src, double sigma) {
  cv::Mat half, blurred, out;
  cv::resize(src, half, cv::Size((src.cols + 1) / 2, (src.rows + 1) / 2), 0, 0, cv::INTER_AREA);
  const double s = halfres_sigma(sigma);
  cv::GaussianBlur(half, blurred, cv::Size(0, 0), s, s, cv::BORDER_REFLECT_101);
  cv::resize(blurred, out, src.size(), 0, 0, cv::INTER_LINEAR);
  return out;
}

void unsharp_mask(cv::Mat& f, double sigma, float weight, float threshold) {
  CV_Assert(f.type() == CV_32FC3);
  const int w = f.cols, h = f.rows, n = 3 * w;
  const double s = halfres_sigma(sigma);
  // Blur at half resolution, widened to full width; full-resolution rows
  // are made on the fly by up2_row, never stored.
  const cv::Mat blur = up2_cols(gaussian_blur(down2(f), s), w);
  // The threshold mask, box-downsampled as it is made (down2's blocks).
  cv::Mat mask((h + 1) / 2, (w + 1) / 2, CV_32FC3);
  cv::parallel_for_(cv::Range(0, mask.rows), [&](const cv::Range& r) {
    std::vector<float> b(static_cast<size_t>(n)), m(static_cast<size_t>(n));
    for (int i = r.start; i < r.end; ++i) {
      std::fill(m.begin(), m.end(), 0.0f);
      for (int y : {2 * i, block_partner(i, h)}) {
        up2_row(blur, y, b.data());
        const float* p = f.ptr<float>(y);
        for (int k = 0; k < n; ++k)
          m[static_cast<size_t>(k)] += std::abs(p[k] - b[static_cast<size_t>(k)]) * 255.0f > threshold ? 1.0f : 0.0f;
      }
      float* o = mask.ptr<float>(i);
      for (int j = 0; j < mask.cols; ++j) {
        const int x0 = 2 * j * 3, x1 = block_partner(j, w) * 3;
        for (int c = 0; c < 3; ++c)
          o[3 * j + c] = 0.25f * (m[static_cast<size_t>(x0 + c)] + m[static_cast<size_t>(x1 + c)]);
      }
    }
  });
  const cv::Mat soft = up2_cols(gaussian_blur(mask, s), w);
  cv::parallel_for_(cv::Range(0, h), [&](const cv::Range& r) {
    std::vector<float> b(static_cast<size_t>(n)), sm(static_cast<size_t>(n));
    for (int y = r.start; y < r.end; ++y) {
      up2_row(blur, y, b.data());
      up2_row(soft, y, sm.data());
      float* p = f.ptr<float>(y);
      for (int k = 0; k < n; ++k) p[k] = usm_blend(p[k], b[static_cast<size_t>(k)], sm[static_cast<size_t>(k)], weight);
    }
  });
}

void unsharp_mask_reference(cv::Mat& f, double sigma, float weight, float threshold) {
  CV_Assert(f.type() == CV_32FC3);
  const cv::Mat blur = gaussian_blur_halfres(f, sigma);
  cv::Mat mask(f.size(), CV_32FC3);
  const int n = f.cols * 3;
  for (int y = 0; y < f.rows; ++y) {
    const float* p = f.ptr<float>(y);
    const float* b = blur.ptr<float>(y);
    float* m = mask.ptr<float>(y);
    for (int i = 0; i < n; ++i) m[i] = std::abs(p[i] - b[i]) * 255.0f > threshold ? 1.0f : 0.0f;
  }
  const cv::Mat soft = gaussian_blur_halfres(mask, sigma);
  for (int y = 0; y < f.rows; ++y) {
    float* p = f.ptr<float>(y);
    const float* b = blur.ptr<float>(y);
    const float* s = soft.ptr<float>(y);
    for (int i = 0; i < n; ++i) p[i] = usm_blend(p[i], b[i], s[i], weight);
  }
}

cv::Mat remap_with_mask(const cv::Mat& img, const cv::Mat& map_x, const cv::Mat& map_y, cv::Mat* mask,
                        int interpolation) {
  cv::Mat out;
  cv::remap(img, out, map_x, map_y, interpolation, cv::BORDER_REFLECT_101);
  if (mask != nullptr && !mask->empty()) {
    cv::Mat m;
    cv::remap(*mask, m, map_x, map_y, cv::INTER_NEAREST, cv::BORDER_REFLECT_101);
    *mask = m;
  }
  return out;
}

}  // namespace rsam::degrade::ops
