// Image-quality helpers for the degradation tests.
#pragma once

#include <opencv2/imgproc.hpp>

namespace rsam::degrade::testing {

inline double psnr(const cv::Mat& a, const cv::Mat& b) { return cv::PSNR(a, b); }

// Mean SSIM on luma (Wang et al. 2004: Gaussian window 11, sigma 1.5).
inline double ssim(const cv::Mat& a_rgb, const cv::Mat& b_rgb) {
  cv::Mat a, b;
  cv::cvtColor(a_rgb, a, cv::COLOR_RGB2GRAY);
  cv::cvtColor(b_rgb, b, cv::COLOR_RGB2GRAY);
  a.convertTo(a, CV_64F);
  b.convertTo(b, CV_64F);
  const double c1 = 6.5025, c2 = 58.5225;  // (0.01 * 255)^2, (0.03 * 255)^2
  auto blur = [](const cv::Mat& m) {
    cv::Mat o;
    cv::GaussianBlur(m, o, cv::Size(11, 11), 1.5);
    return o;
  };
  const cv::Mat mu_a = blur(a), mu_b = blur(b);
  const cv::Mat aa = blur(a.mul(a)) - mu_a.mul(mu_a);
  const cv::Mat bb = blur(b.mul(b)) - mu_b.mul(mu_b);
  const cv::Mat ab = blur(a.mul(b)) - mu_a.mul(mu_b);
  cv::Mat num = (2 * mu_a.mul(mu_b) + c1).mul(2 * ab + c2);
  cv::Mat den = (mu_a.mul(mu_a) + mu_b.mul(mu_b) + c1).mul(aa + bb + c2);
  cv::Mat map;
  cv::divide(num, den, map);
  return cv::mean(map)[0];
}

}  // namespace rsam::degrade::testing
