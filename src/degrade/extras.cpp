// Real-world extras beyond the two reference sets.
#include <algorithm>
#include <cmath>

#include <opencv2/imgproc.hpp>

#include "degrade/corruption.h"
#include "degrade/ops.h"
#include "degrade/params.h"

namespace rsam::degrade {
namespace {

using nlohmann::json;

// Low light: the scene is darkened as y = gain * x^gamma (x in [0, 1]), then
// recorded by a sensor with Poisson-Gaussian noise: photons ~ Poisson(y * Q)
// where Q is the photon count at full white, plus Gaussian read noise:
// out = photons / Q + N(0, read_noise^2). Variance is y / Q + read_noise^2,
// so dark regions get relatively noisier, as in real night shots.
class LowLight : public Corruption {
 public:
  explicit LowLight(const json& p)
      : gamma_(interval_in(p, "gamma", 0.1, 10)), gain_(interval_in(p, "gain", 0, 1)),
        photons_(interval_in(p, "photons", 1, 1e6)), read_(interval_in(p, "read_noise", 0, 1)) {}

 protected:
  cv::Mat apply(const cv::Mat& rgb, Rng& rng, json& drawn, cv::Mat*) const override {
    const double gamma = gamma_.draw(rng), gain = gain_.draw(rng), q = photons_.draw(rng), read = read_.draw(rng);
    drawn["gamma"] = gamma;
    drawn["gain"] = gain;
    drawn["photons"] = q;
    drawn["read_noise"] = read;
    std::vector<double> means(256);
    for (int v = 0; v < 256; ++v) means[static_cast<size_t>(v)] = gain * std::pow(v / 255.0, gamma) * q;
    const ops::PoissonTable table(means);
    cv::Mat out(rgb.size(), CV_8UC3);
    const int n = rgb.cols * 3;
    ops::parallel_rows(rgb.rows, rng.next(), [&](int r0, int r1, Rng& br) {
      for (int y = r0; y < r1; ++y) {
        const uchar* s = rgb.ptr<uchar>(y);
        uchar* o = out.ptr<uchar>(y);
        for (int i = 0; i < n; ++i) {
          const double v = table.sample(s[i], br.uniform()) / q + read * br.normal();
          o[i] = cv::saturate_cast<uchar>(v * 255.0);
        }
      }
    });
    return out;
  }

 private:
  Interval gamma_, gain_, photons_, read_;
};

// Haze by the atmospheric scattering model I = J t + A (1 - t), with
// transmission t = exp(-beta d) over a depth-like map d in [0, 1]: a vertical
// ramp (the top of a photo is usually farther away) mixed with smooth random
// relief, so haze thickens towards the horizon but not uniformly.
class Haze : public Corruption {
 public:
  explicit Haze(const json& p)
      : beta_(interval_in(p, "beta", 0, 20)), airlight_(interval_in(p, "airlight", 0, 1)),
        ramp_(number_in(p, "ramp_weight", 0, 1)) {}

 protected:
  cv::Mat apply(const cv::Mat& rgb, Rng& rng, json& drawn, cv::Mat*) const override {
    const double beta = beta_.draw(rng), a = airlight_.draw(rng);
    drawn["beta"] = beta;
    drawn["airlight"] = a;
    cv::Mat relief = ops::fractal_noise(rgb.size(), -3.0, 3, rng);
    const float a255 = static_cast<float>(a * 255.0);
    cv::Mat out(rgb.size(), CV_8UC3);
    const int h = rgb.rows;
    ops::parallel_rows(h, 0, [&](int r0, int r1, Rng&) {
      for (int y = r0; y < r1; ++y) {
        const double ramp = h > 1 ? 1.0 - static_cast<double>(y) / (h - 1) : 0.5;
        const cv::Vec3b* s = rgb.ptr<cv::Vec3b>(y);
        cv::Vec3b* o = out.ptr<cv::Vec3b>(y);
        const float* r = relief.ptr<float>(y);
        for (int x = 0; x < rgb.cols; ++x) {
          const double d = ramp_ * ramp + (1.0 - ramp_) * r[x];
          const float t = static_cast<float>(std::exp(-beta * d));
          for (int c = 0; c < 3; ++c) o[x][c] = cv::saturate_cast<uchar>(s[x][c] * t + a255 * (1.0f - t));
        }
      }
    });
    return out;
  }

 private:
  Interval beta_, airlight_;
  double ramp_;
};

std::vector<json> five(std::initializer_list<json> rows) { return std::vector<json>(rows); }

}  // namespace

void register_extras() {
  using R = json;
  register_corruption(
      {"low_light", "extra", "gamma darkening with Poisson-Gaussian sensor noise", false, true,
       five({{{"gamma", R{1.2, 1.5}}, {"gain", R{0.6, 0.8}}, {"photons", R{600, 1000}}, {"read_noise", R{0.002, 0.005}}},
             {{"gamma", R{1.5, 2.0}}, {"gain", R{0.45, 0.65}}, {"photons", R{300, 600}}, {"read_noise", R{0.005, 0.01}}},
             {{"gamma", R{2.0, 2.5}}, {"gain", R{0.3, 0.5}}, {"photons", R{100, 300}}, {"read_noise", R{0.01, 0.02}}},
             {{"gamma", R{2.5, 3.0}}, {"gain", R{0.2, 0.35}}, {"photons", R{50, 100}}, {"read_noise", R{0.015, 0.03}}},
             {{"gamma", R{3.0, 3.5}}, {"gain", R{0.1, 0.2}}, {"photons", R{20, 50}}, {"read_noise", R{0.02, 0.04}}}}),
       [](const json& p) { return std::make_unique<LowLight>(p); }});
  register_corruption(
      {"haze", "extra", "atmospheric scattering I = J t + A (1 - t), t = exp(-beta d), depth-like d", false, true,
       five({{{"beta", R{0.3, 0.6}}, {"airlight", R{0.7, 1.0}}, {"ramp_weight", 0.6}},
             {{"beta", R{0.6, 1.0}}, {"airlight", R{0.7, 1.0}}, {"ramp_weight", 0.6}},
             {{"beta", R{1.0, 1.6}}, {"airlight", R{0.7, 1.0}}, {"ramp_weight", 0.6}},
             {{"beta", R{1.6, 2.2}}, {"airlight", R{0.7, 1.0}}, {"ramp_weight", 0.6}},
             {{"beta", R{2.2, 3.0}}, {"airlight", R{0.7, 1.0}}, {"ramp_weight", 0.6}}}),
       [](const json& p) { return std::make_unique<Haze>(p); }});
}

}  // namespace rsam::degrade
