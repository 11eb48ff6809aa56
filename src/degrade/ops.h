// Building blocks shared by the corruptions (internal to src/degrade, but
// exposed so tests can check them directly).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "degrade/convolve.h"
#include "degrade/rng.h"

namespace rsam::degrade::ops {

// Rows per block of parallel per-pixel work. The partition is fixed and each
// block draws from its own stream derive_seed(seed, block), so the output is
// the same for any number of threads.
constexpr int kBlockRows = 16;

// Runs fn(row_begin, row_end, rng) over blocks of kBlockRows rows via
// cv::parallel_for_.
void parallel_rows(int rows, uint64_t seed, const std::function<void(int, int, Rng&)>& fn);

// cv::cvtColor over fixed blocks of kBlockRows rows. OpenCV's own parallel
// split can put a SIMD/scalar seam in different places for different thread
// counts (seen with the HLS conversions), changing a few bytes; fixed blocks
// make the result independent of cv::setNumThreads.
cv::Mat cvt_color(const cv::Mat& src, int code);

// CV_8UC3 -> CV_32FC3 scaled by `scale` (1 or 1/255), and back (clamped, rounded).
cv::Mat to_float(const cv::Mat& u8, double scale);
cv::Mat to_u8(const cv::Mat& f32, double scale);

// Adds N(0, sigma^2) to a CV_32FC3 image. gray: one draw per pixel for all
// three channels (colourless noise); otherwise one per channel. clamp01:
// clamps the result to [0, 1] in the same pass. Draws by Rng::fill_normal.
void add_gaussian_noise(cv::Mat& f32, double sigma, bool gray, uint64_t seed, bool clamp01 = false);

// Poisson sampling for a fixed set of means by inverse CDF. Images are 8-bit,
// so per-pixel means take at most 256 distinct values; one table per value
// beats a general sampler by an order of magnitude. Tables span 12 standard
// deviations either side of the mean (lost mass < 1e-30) and store the CDF
// in float, so probabilities are exact to about 1e-7.
class PoissonTable {
 public:
  explicit PoissonTable(const std::vector<double>& means);
  // Sample for mean index `i` given u uniform in [0, 1).
  int sample(size_t i, double u) const;
  // The same for u = (2 * bits + 1) / 2^24 with bits uniform below 2^23 (the
  // midpoints of 2^23 equal cells: never 0 or 1), in integers and float:
  // equal to sample(i, u) for every bits (test PoissonTable.BitsSamplerEqualsTheReference).
  int sample_bits(size_t i, uint32_t bits) const {
    const Mean& m = means_[i];
    const uint32_t u24 = 2 * bits + 1;
    const float u = static_cast<float>(u24) * 0x1.0p-24f;  // exact
    uint32_t k = guide_[m.offset + static_cast<uint32_t>((static_cast<uint64_t>(u24) * m.count) >> 24)];
    const float* c = cdf_.data() + m.offset;
    while (c[k] <= u) ++k;  // stops at the last entry at the latest: its cdf is 1 > u
    return m.first + static_cast<int>(k);
  }

 private:
  struct Mean {
    uint32_t offset;  // start of its CDF in cdf_ and of its guide in guide_
    uint32_t count;   // entries tabulated
    int first;        // smallest k tabulated
  };
  std::vector<Mean> means_;
  std::vector<uint32_t> guide_;  // per mean, count entries: first index with cdf > j / count
  std::vector<float> cdf_;
};

// JPEG encode + decode of an RGB image with libjpeg through OpenCV
// (4:2:0 chroma subsampling, OpenCV's default).
cv::Mat jpeg_roundtrip(const cv::Mat& rgb8, int quality);

// Smooth random field in [0, 1] of size `size`: octaves of bicubically
// upsampled uniform grids, the coarsest `base_cells` across, amplitude
// falling by 2^(exponent/2) per octave (power spectrum ~ f^exponent).
cv::Mat fractal_noise(cv::Size size, double exponent, int base_cells, Rng& rng);

// Normalised line kernel of odd size `ksize` through the centre at
// `angle_deg` (0 = horizontal), anti-aliased.
cv::Mat line_kernel(int ksize, double angle_deg);

// Gaussian blur with a large sigma (>= 2) computed at half resolution:
// area-downsample by 2, blur, bilinear-upsample, with the blur's sigma
// reduced by the variance the two resamplings add. The result has no detail
// the half-resolution grid cannot carry, so it stays within about 1/255 of
// the full-resolution blur (see tests) at a quarter of the cost.
cv::Mat gaussian_blur_halfres(const cv::Mat& src, double sigma);

// Real-ESRGAN's unsharp mask (USMSharp) of a CV_32FC3 image in [0, 1], in
// place: blur = Gaussian(sigma), mask = |f - blur| * 255 > threshold,
// soft = Gaussian(sigma) of the mask, f = soft * clamp(f + weight * (f -
// blur), 0, 1) + (1 - soft) * f. Both blurs are gaussian_blur_halfres's
// approximation, with the full-resolution blur and mask never stored: rows
// of the blurs are upsampled as they are used and the mask is box-averaged
// as it is made (three passes over the image instead of about twelve).
void unsharp_mask(cv::Mat& f, double sigma, float weight, float threshold);

// The same from full-size intermediates (gaussian_blur_halfres for both
// blurs): the plain version unsharp_mask() is held to.
void unsharp_mask_reference(cv::Mat& f, double sigma, float weight, float threshold);

// Remaps the image (bilinear, reflect-101) and, if given, the mask
// (nearest, so labels are not blended) with the same maps.
cv::Mat remap_with_mask(const cv::Mat& img, const cv::Mat& map_x, const cv::Mat& map_y, cv::Mat* mask,
                        int interpolation = 1 /* cv::INTER_LINEAR */);

}  // namespace rsam::degrade::ops
