// A procedural outdoor scene (sky, sun, hills, textured ground, a house, a
// tree, a sign) with a matching object mask: natural-looking enough for
// PSNR/SSIM bands and contact sheets, with no image files in the repo.
#pragma once

#include <cmath>
#include <cstdint>

#include <opencv2/imgproc.hpp>

#include "degrade/ops.h"
#include "degrade/rng.h"

namespace rsam::degrade::testing {

struct Scene {
  cv::Mat rgb;   // CV_8UC3
  cv::Mat mask;  // CV_8UC1: 0 background, 255 the house
};

inline Scene make_scene(int width, int height, uint64_t seed) {
  Rng rng(seed);
  const double W = width, H = height;
  cv::Mat img(height, width, CV_32FC3);
  cv::Mat clouds = ops::fractal_noise(img.size(), -3.0, 4, rng);
  cv::Mat relief = ops::fractal_noise(img.size(), -2.0, 8, rng);
  cv::Mat grass = ops::fractal_noise(img.size(), -0.5, 32, rng);
  const double ridge_phase = rng.uniform(0, 6.28), ridge2 = rng.uniform(0, 6.28);
  const double horizon = 0.55 + rng.uniform(-0.05, 0.05);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const double u = x / W, v = y / H;
      const double ridge = 0.38 + 0.06 * std::sin(6.0 * u + ridge_phase) + 0.03 * std::sin(17.0 * u + ridge2) +
                           0.04 * (relief.at<float>(y, x) - 0.5);
      cv::Vec3f c;
      if (v < ridge) {  // sky with clouds
        const double cl = std::max(0.0, clouds.at<float>(y, x) - 0.45) * 1.8;
        c = cv::Vec3f(static_cast<float>(90 + 80 * v), static_cast<float>(140 + 70 * v), 235.f) * static_cast<float>(1 - cl) +
            cv::Vec3f(245.f, 245.f, 250.f) * static_cast<float>(cl);
      } else if (v < horizon) {  // distant hills
        const float shade = static_cast<float>(0.7 + 0.5 * relief.at<float>(y, x));
        c = cv::Vec3f(70.f, 105.f, 95.f) * shade;
      } else {  // textured ground, lighter towards the viewer
        const float g = grass.at<float>(y, x);
        const float near = static_cast<float>((v - horizon) / (1 - horizon));
        c = cv::Vec3f(60.f + 70.f * g, 110.f + 80.f * g, 40.f + 30.f * g) * (0.8f + 0.35f * near);
      }
      img.at<cv::Vec3f>(y, x) = c;
    }
  }
  // Fine full-resolution texture (photos have detail down to the pixel):
  // lightly smoothed per-pixel noise, stronger on the ground than in the sky.
  cv::Mat grain(height, width, CV_32F);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) grain.at<float>(y, x) = static_cast<float>(rng.uniform(-1, 1));
  cv::GaussianBlur(grain, grain, cv::Size(0, 0), 0.8);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      const float amp = y < height * horizon ? 10.f : 40.f;
      img.at<cv::Vec3f>(y, x) += cv::Vec3f::all(amp * grain.at<float>(y, x));
    }
  cv::Mat out;
  img.convertTo(out, CV_8U);
  // Grass blades: many thin strokes.
  for (int i = 0; i < width * height / 60; ++i) {
    const int x = rng.uniform_int(0, width - 1);
    const int y = static_cast<int>(H * horizon) + rng.uniform_int(0, std::max(0, height - 1 - static_cast<int>(H * horizon)));
    const int len = 2 + rng.uniform_int(0, std::max(2, height / 40));
    const int g = 90 + rng.uniform_int(0, 120);
    cv::line(out, cv::Point(x, y), cv::Point(x + rng.uniform_int(-2, 2), y - len), cv::Scalar(40, g, 30), 1);
  }
  // Sun.
  cv::circle(out, cv::Point(static_cast<int>(W * 0.8), static_cast<int>(H * 0.15)), static_cast<int>(H * 0.06),
             cv::Scalar(255, 236, 150), cv::FILLED, cv::LINE_AA);
  // House: walls, roof, door, window.
  Scene s;
  s.mask = cv::Mat::zeros(height, width, CV_8U);
  const int hx = static_cast<int>(W * 0.18), hy = static_cast<int>(H * 0.58);
  const int hw = static_cast<int>(W * 0.26), hh = static_cast<int>(H * 0.22);
  const cv::Rect walls(hx, hy, hw, hh);
  std::vector<cv::Point> roof = {{hx - hw / 10, hy}, {hx + hw + hw / 10, hy}, {hx + hw / 2, hy - hh * 2 / 3}};
  cv::rectangle(out, walls, cv::Scalar(196, 68, 52), cv::FILLED, cv::LINE_AA);
  cv::fillConvexPoly(out, roof, cv::Scalar(110, 45, 40), cv::LINE_AA);
  // Bricks.
  const int brick = std::max(3, hh / 12);
  for (int y = hy + brick; y < hy + hh; y += brick) {
    cv::line(out, cv::Point(hx, y), cv::Point(hx + hw - 1, y), cv::Scalar(150, 50, 40), 1);
    for (int x = hx + ((y - hy) / brick % 2) * brick; x < hx + hw; x += 2 * brick)
      cv::line(out, cv::Point(x, y - brick), cv::Point(x, y), cv::Scalar(150, 50, 40), 1);
  }
  cv::rectangle(out, cv::Rect(hx + hw / 8, hy + hh / 3, hw / 5, hh * 2 / 3), cv::Scalar(70, 40, 25), cv::FILLED);
  cv::rectangle(out, cv::Rect(hx + hw / 2, hy + hh / 4, hw / 3, hh / 3), cv::Scalar(200, 225, 240), cv::FILLED);
  cv::line(out, cv::Point(hx + hw / 2 + hw / 6, hy + hh / 4), cv::Point(hx + hw / 2 + hw / 6, hy + hh / 4 + hh / 3),
           cv::Scalar(60, 40, 30), std::max(1, width / 200));
  cv::rectangle(s.mask, walls, cv::Scalar(255), cv::FILLED);
  cv::fillConvexPoly(s.mask, roof, cv::Scalar(255));
  // Tree.
  const cv::Point tree(static_cast<int>(W * 0.68), static_cast<int>(H * 0.62));
  cv::rectangle(out, cv::Rect(tree.x - width / 60, tree.y, width / 30, static_cast<int>(H * 0.18)),
                cv::Scalar(95, 65, 40), cv::FILLED);
  for (int i = 0; i < 400; ++i) {  // leaves
    const cv::Point p(tree.x + static_cast<int>(rng.uniform(-1, 1) * W * 0.08),
                      tree.y - static_cast<int>(rng.uniform(0, 1) * H * 0.2));
    const int g = 70 + rng.uniform_int(0, 110);
    cv::circle(out, p, std::max(1, static_cast<int>(W * 0.012)), cv::Scalar(30, g, 35), cv::FILLED, cv::LINE_AA);
  }
  // Sign with text: fine edges for blur and compression to destroy.
  const cv::Rect sign(static_cast<int>(W * 0.8), static_cast<int>(H * 0.7), static_cast<int>(W * 0.16),
                      static_cast<int>(H * 0.08));
  cv::rectangle(out, sign, cv::Scalar(245, 245, 240), cv::FILLED);
  cv::rectangle(out, sign, cv::Scalar(20, 20, 20), std::max(1, width / 256));
  cv::putText(out, "rsam", cv::Point(sign.x + sign.width / 10, sign.y + sign.height * 3 / 4), cv::FONT_HERSHEY_SIMPLEX,
              sign.height / 40.0, cv::Scalar(20, 20, 120), std::max(1, width / 300), cv::LINE_AA);
  s.rgb = out;
  return s;
}

// Dead-leaves image: opaque discs with radii drawn from a power law
// (density ~ r^-3) stacked until the canvas is covered. The standard
// synthetic stand-in for natural images (scale-invariant, 1/f^2 spectrum,
// occluding edges at every scale; ISO 19567-2 uses it to measure texture loss).
inline cv::Mat dead_leaves(int width, int height, uint64_t seed) {
  Rng rng(seed);
  cv::Mat img(height, width, CV_8UC3, cv::Scalar::all(128));
  const double rmin = 1.0, rmax = std::max(width, height) / 4.0;
  // Painted back to front: enough discs to cover the canvas many times over.
  const int n = width * height / 6;
  for (int i = 0; i < n; ++i) {
    // Inverse CDF of p(r) ~ r^-3 on [rmin, rmax].
    const double u = rng.uniform();
    const double r = 1.0 / std::sqrt(1.0 / (rmin * rmin) - u * (1.0 / (rmin * rmin) - 1.0 / (rmax * rmax)));
    const cv::Point c(rng.uniform_int(0, width - 1), rng.uniform_int(0, height - 1));
    const cv::Scalar colour(rng.uniform_int(0, 255), rng.uniform_int(0, 255), rng.uniform_int(0, 255));
    cv::circle(img, c, std::max(1, static_cast<int>(r)), colour, cv::FILLED, cv::LINE_AA);
  }
  return img;
}

}  // namespace rsam::degrade::testing
