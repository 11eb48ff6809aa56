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
