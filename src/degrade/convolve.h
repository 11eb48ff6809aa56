// ops::convolve, the float-image correlation the blur corruptions share
// (internal to src/degrade, exposed so tests can check it directly).
#pragma once

#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace rsam::degrade::ops {

// Correlates a float image (1 or 3 channels) with `kernel` like cv::filter2D
// (reflect-101 border), leaving out at most 1e-5 of the kernel's L1 mass, so
// |output - exact| <= 1e-5 * max|src| (plus float rounding). The cheaper of
// two routes: one or two separable passes when the kernel is (numerically)
// of rank <= 2 (isotropic Gaussians), otherwise a direct vectorised
// sum over the kernel's taps. The direct sum drops the smallest taps within
// the budget (the empty corners of elongated kernels), pairs the taps of
// point-symmetric kernels, and for mirror-symmetric ones (sinc, isotropic
// kernels) first adds the rows at +-dy, so a 21x21 sinc costs 121
// multiplies per element where mirrored pairs alone need 221.
cv::Mat convolve(const cv::Mat& src, const cv::Mat& kernel);

// The plain definition convolve() is held to: a double-precision sum over
// every tap, reflect-101 border. Slow; for tests.
cv::Mat convolve_reference(const cv::Mat& src, const cv::Mat& kernel);

// convolve()'s inner loop comes in vector widths ("avx512", "avx2",
// "generic"); every one gives the same bytes. Those this CPU runs, best
// first (the default), and a switch to force one ("" = the default), so tests
// can compare them. Takes effect for every thread at once.
std::vector<std::string> convolve_variants();
void force_convolve_variant(const std::string& name);

}  // namespace rsam::degrade::ops
