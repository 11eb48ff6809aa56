#include "degrade/ops.h"

#include <algorithm>
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

void add_gaussian_noise(cv::Mat& f32, double sigma, bool gray, uint64_t seed) {
  CV_Assert(f32.type() == CV_32FC3);
  const int w = f32.cols;
  parallel_rows(f32.rows, seed, [&](int r0, int r1, Rng& rng) {
    for (int y = r0; y < r1; ++y) {
      float* p = f32.ptr<float>(y);
      if (gray) {
        for (int x = 0; x < w; ++x) {
          const float n = static_cast<float>(sigma * rng.normal());
          p[3 * x] += n;
          p[3 * x + 1] += n;
          p[3 * x + 2] += n;
        }
      } else {
        for (int i = 0; i < 3 * w; ++i) p[i] += static_cast<float>(sigma * rng.normal());
      }
    }
  });
}

PoissonTable::PoissonTable(const std::vector<double>& means) {
  first_.reserve(means.size());
  offset_.reserve(means.size());
  count_.reserve(means.size());
  std::vector<double> pmf;
  for (double lam : means) {
    offset_.push_back(cdf_.size());
    if (!(lam > 0.0)) {  // mean 0 (or NaN from a caller's bug): always 0
      first_.push_back(0);
      count_.push_back(1);
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
    for (int k = mode; k < hi; ++k) pmf[static_cast<size_t>(k + 1 - lo)] = pmf[static_cast<size_t>(k - lo)] * lam / (k + 1);
    for (int k = mode; k > lo; --k) pmf[static_cast<size_t>(k - 1 - lo)] = pmf[static_cast<size_t>(k - lo)] * k / lam;
    double total = 0.0;
    for (double p : pmf) total += p;
    double acc = 0.0;
    for (double p : pmf) {
      acc += p;
      cdf_.push_back(static_cast<float>(acc / total));
    }
    cdf_.back() = 1.0f;
    first_.push_back(lo);
    count_.push_back(pmf.size());
    // Guide table (Chen and Asau): bucket j of [0, 1) starts its search at
    // the first index whose CDF exceeds j / n, so a sample needs ~2 compares.
    const size_t n = pmf.size(), off = offset_.back();
    size_t idx = 0;
    for (size_t j = 0; j < n; ++j) {
      const float edge = static_cast<float>(static_cast<double>(j) / static_cast<double>(n));
      while (idx + 1 < n && cdf_[off + idx] <= edge) ++idx;
      guide_.push_back(static_cast<uint32_t>(idx));
    }
  }
}

int PoissonTable::sample(size_t i, double u) const {
  const float* c = cdf_.data() + offset_[i];
  const size_t n = count_[i];
  const float uf = static_cast<float>(u);
  size_t k = guide_[offset_[i] + std::min(n - 1, static_cast<size_t>(u * static_cast<double>(n)))];
  while (k + 1 < n && c[k] <= uf) ++k;
  return first_[i] + static_cast<int>(k);
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
// rows/columns while the L1 mass they hold stays within `budget` (shared by
// the separable and the direct convolution).
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

}  // namespace

cv::Mat filter_separable(const cv::Mat& src, const cv::Mat& kernel, double tol, int* terms) {
  CV_Assert(kernel.rows % 2 == 1 && kernel.cols % 2 == 1);
  cv::Mat k;
  kernel.convertTo(k, CV_64F);
  // Crop symmetric borders while the mass they hold stays within half the budget.
  double dropped = 0;
  const cv::Mat kc = k(trim_symmetric_borders(k, tol / 2, &dropped)).clone();
  cv::Mat w, u, vt;
  cv::SVD::compute(kc, w, u, vt);
  cv::Mat approx = cv::Mat::zeros(kc.size(), CV_64F);
  int n = 0;
  while (n < w.rows) {
    approx += w.at<double>(n) * u.col(n) * vt.row(n);
    ++n;
    if (dropped + cv::norm(kc - approx, cv::NORM_L1) <= tol) break;
  }
  cv::Mat out, tmp;
  for (int i = 0; i < n; ++i) {
    cv::Mat ky, kx;
    cv::Mat(u.col(i) * w.at<double>(i)).convertTo(ky, CV_32F);
    vt.row(i).convertTo(kx, CV_32F);
    cv::sepFilter2D(src, i == 0 ? out : tmp, CV_32F, kx, ky, cv::Point(-1, -1), 0, cv::BORDER_REFLECT_101);
    if (i > 0) out += tmp;
  }
  if (terms) *terms = n;
  return out;
}

namespace {

struct Tap {
  int dy, offset;    // source row (relative to the output row) and element offset
  int dy2, offset2;  // the mirrored tap of a point-symmetric kernel, or dy2 < 0
  float k;
};

// One output row of a direct correlation: sum over taps of k * row[dy][x + offset].
// Works in blocks of 64 floats held in eight 8-wide vector accumulators
// across all taps (one load per tap and element, one store per block; eight
// independent sums hide the add latency). Cloned for AVX2 so dense kernels
// run at full vector width on any x86-64 build (the default clone splits
// each vector in two SSE halves). Every clone adds in the same order without
// FMA contraction (-std=c++17 keeps fp-contract off): same bytes everywhere.
typedef float v8f __attribute__((vector_size(32)));
constexpr int kLanes = 8, kAcc = 8, kBlock = kLanes * kAcc;

#if defined(__x86_64__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
void correlate_row(float* __restrict out, const float* const* rows, const Tap* taps, size_t ntaps, int n) {
  int x0 = 0;
  for (; x0 + kBlock <= n; x0 += kBlock) {
    v8f acc[kAcc] = {};
    for (size_t t = 0; t < ntaps; ++t) {
      const float* p = rows[taps[t].dy] + taps[t].offset + x0;
      const float k = taps[t].k;
      if (taps[t].dy2 >= 0) {  // k * (a + b): one multiply for two taps
        const float* q = rows[taps[t].dy2] + taps[t].offset2 + x0;
        for (int a = 0; a < kAcc; ++a) {
          v8f u, v;
          std::memcpy(&u, p + a * kLanes, sizeof u);
          std::memcpy(&v, q + a * kLanes, sizeof v);
          acc[a] += k * (u + v);
        }
      } else {
        for (int a = 0; a < kAcc; ++a) {
          v8f v;
          std::memcpy(&v, p + a * kLanes, sizeof v);
          acc[a] += k * v;
        }
      }
    }
    std::memcpy(out + x0, acc, sizeof acc);
  }
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

}  // namespace

cv::Mat convolve(const cv::Mat& src, const cv::Mat& kernel) {
  CV_Assert(src.depth() == CV_32F && (src.channels() == 1 || src.channels() == 3));
  CV_Assert(kernel.rows % 2 == 1 && kernel.cols % 2 == 1);
  cv::Mat k;
  kernel.convertTo(k, CV_64F);
  // Crop negligible symmetric borders.
  const double budget = 1e-5;
  const cv::Mat kc = k(trim_symmetric_borders(k, budget)).clone();
  const int kh = kc.rows, kw = kc.cols;
  int nnz = 0;
  for (int y = 0; y < kh; ++y)
    for (int x = 0; x < kw; ++x) nnz += kc.at<double>(y, x) != 0.0;
  // Rank test: separable passes cost about (kw + kh) per term.
  cv::Mat sv;
  cv::SVD::compute(kc, sv, cv::SVD::NO_UV);
  int rank = 0;
  double tail = 0;
  for (int i = sv.rows - 1; i >= 0; --i) {
    tail += sv.at<double>(i);
    if (tail * std::sqrt(static_cast<double>(kw * kh)) > budget) {  // L1 <= sqrt(n) * nuclear-norm bound
      rank = i + 1;
      break;
    }
  }
  if (rank <= 2 && rank * (kw + kh) * 2 < nnz) return filter_separable(src, kc, budget);

  const int ch = src.channels();
  cv::Mat padded;
  cv::copyMakeBorder(src, padded, kh / 2, kh / 2, kw / 2, kw / 2, cv::BORDER_REFLECT_101);
  // Point-symmetric kernels (every blur kernel here: Gaussians, sinc, lines)
  // are summed in mirrored pairs, a third fewer arithmetic operations.
  bool symmetric = true;
  for (int y = 0; y < kh && symmetric; ++y)
    for (int x = 0; x < kw && symmetric; ++x)
      symmetric = kc.at<double>(y, x) == kc.at<double>(kh - 1 - y, kw - 1 - x);
  std::vector<Tap> taps;
  for (int y = 0; y < kh; ++y)
    for (int x = 0; x < kw; ++x) {
      const double v = kc.at<double>(y, x);
      if (v == 0.0) continue;
      const int my = kh - 1 - y, mx = kw - 1 - x;
      if (!symmetric || (y == my && x == mx)) {
        taps.push_back({y, x * ch, -1, 0, static_cast<float>(v)});
      } else if (y * kw + x < my * kw + mx) {  // first of the pair; its mirror comes later
        taps.push_back({y, x * ch, my, mx * ch, static_cast<float>(v)});
      }
    }
  cv::Mat out(src.size(), src.type());
  const int n = src.cols * ch;
  cv::parallel_for_(cv::Range(0, src.rows), [&](const cv::Range& r) {
    std::vector<const float*> rows(static_cast<size_t>(kh));
    for (int y = r.start; y < r.end; ++y) {
      for (int i = 0; i < kh; ++i) rows[static_cast<size_t>(i)] = padded.ptr<float>(y + i);
      correlate_row(out.ptr<float>(y), rows.data(), taps.data(), taps.size(), n);
    }
  });
  return out;
}

cv::Mat gaussian_blur_halfres(const cv::Mat& src, double sigma) {
  CV_Assert(sigma >= 2.0);
  cv::Mat half, blurred, out;
  cv::resize(src, half, cv::Size((src.cols + 1) / 2, (src.rows + 1) / 2), 0, 0, cv::INTER_AREA);
  // The 2-px box of the downsample adds variance 1/4 px^2, the bilinear
  // upsample about 2/3 px^2 (full-resolution pixels); the rest is blurred at
  // half resolution, where sigma halves.
  const double s = std::sqrt(sigma * sigma - 0.25 - 2.0 / 3.0) / 2.0;
  cv::GaussianBlur(half, blurred, cv::Size(0, 0), s, s, cv::BORDER_REFLECT_101);
  cv::resize(blurred, out, src.size(), 0, 0, cv::INTER_LINEAR);
  return out;
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
