#include "viz/viz.h"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

namespace rsam::viz {

cv::Mat mask_overlay(const cv::Mat& rgb, const uint8_t* mask, const PromptMarks& p) {
  cv::Mat out = rgb.clone();  // clone: continuous, so pixel i is at data + 3 i
  const int w = out.cols, h = out.rows;
  const uint8_t tint[3] = {30, 144, 255};
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const size_t i = size_t(y) * w + x;
      if (!mask[i]) continue;
      const bool edge =
          x == 0 || y == 0 || x == w - 1 || y == h - 1 || !mask[i - 1] || !mask[i + 1] || !mask[i - w] || !mask[i + w];
      uint8_t* px = out.data + i * 3;
      for (int c = 0; c < 3; ++c) px[c] = edge ? 255 : uint8_t((px[c] * 2 + tint[c] * 3) / 5);
    }
  auto at = [&](int x, int y) { return out.data + (size_t(y) * w + x) * 3; };
  auto dot = [&](int cx, int cy, int r, const uint8_t col[3]) {
    for (int y = std::max(0, cy - r); y <= std::min(h - 1, cy + r); ++y)
      for (int x = std::max(0, cx - r); x <= std::min(w - 1, cx + r); ++x)
        if ((x - cx) * (x - cx) + (y - cy) * (y - cy) <= r * r) std::memcpy(at(x, y), col, 3);
  };
  const uint8_t green[3] = {40, 220, 60}, red[3] = {230, 40, 40}, yellow[3] = {255, 220, 0};
  const int r = std::max(3, std::min(w, h) / 100);
  for (size_t i = 0; i < p.points.size(); ++i)
    dot(int(p.points[i][0]), int(p.points[i][1]), r, p.labels[i] == 1 ? green : red);
  if (p.box) {
    const auto& b = *p.box;
    const int x0 = std::clamp(int(b[0]), 0, w - 1), x1 = std::clamp(int(b[2]), 0, w - 1);
    const int y0 = std::clamp(int(b[1]), 0, h - 1), y1 = std::clamp(int(b[3]), 0, h - 1);
    for (int x = x0; x <= x1; ++x) {
      std::memcpy(at(x, y0), yellow, 3);
      std::memcpy(at(x, y1), yellow, 3);
    }
    for (int y = y0; y <= y1; ++y) {
      std::memcpy(at(x0, y), yellow, 3);
      std::memcpy(at(x1, y), yellow, 3);
    }
  }
  return out;
}

cv::Mat masks_overlay(const cv::Mat& rgb, const std::vector<cv::Mat>& masks) {
  cv::Mat out = rgb.clone();
  std::vector<size_t> order(masks.size());
  std::vector<int> area(masks.size());
  for (size_t i = 0; i < masks.size(); ++i) {
    order[i] = i;
    area[i] = cv::countNonZero(masks[i]);
  }
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return area[a] > area[b]; });
  for (size_t k = 0; k < order.size(); ++k) {
    const size_t i = order[k];
    // Golden-ratio hues: neighbours in the list get distant colours.
    cv::Mat hsv(1, 1, CV_8UC3, cv::Scalar(int(std::fmod(i * 0.618033988749895, 1.0) * 180), 200, 255)), col;
    cv::cvtColor(hsv, col, cv::COLOR_HSV2RGB);
    const cv::Vec3b c = col.at<cv::Vec3b>(0, 0);
    cv::Mat tinted(out.size(), CV_8UC3, cv::Scalar(c[0], c[1], c[2]));
    cv::Mat blend;
    cv::addWeighted(out, 0.45, tinted, 0.55, 0.0, blend);
    blend.copyTo(out, masks[i]);
    std::vector<std::vector<cv::Point>> contours;
    cv::findContours(masks[i].clone(), contours, cv::RETR_LIST, cv::CHAIN_APPROX_NONE);
    cv::drawContours(out, contours, -1, cv::Scalar(c[0] / 2, c[1] / 2, c[2] / 2), 1);
  }
  return out;
}

cv::Mat caption_tile(const cv::Mat& rgb, const cv::Mat& mask01, cv::Point pt, const std::string& caption,
                     const cv::Scalar& tint) {
  const int scale = std::max(1, int(std::lround(384.0 / std::max(rgb.cols, rgb.rows))));
  cv::Mat img = rgb.clone();
  if (!mask01.empty()) {
    cv::Mat colour(img.size(), img.type(), tint), blended;
    cv::addWeighted(img, 0.45, colour, 0.55, 0, blended);
    blended.copyTo(img, mask01);
  }
  cv::resize(img, img, {}, scale, scale, cv::INTER_NEAREST);
  if (!mask01.empty()) {
    cv::Mat big;
    cv::resize(mask01 * 255, big, img.size(), 0, 0, cv::INTER_NEAREST);
    std::vector<std::vector<cv::Point>> contours;
    cv::findContours(big, contours, cv::RETR_LIST, cv::CHAIN_APPROX_NONE);
    cv::drawContours(img, contours, -1, cv::Scalar(255, 255, 255), 2);
  }
  if (pt.x >= 0) {
    cv::circle(img, pt * scale, 6, cv::Scalar(40, 220, 60), cv::FILLED);
    cv::circle(img, pt * scale, 6, cv::Scalar(0, 0, 0), 1);
  }
  cv::Mat out(img.rows + 28, img.cols, CV_8UC3, cv::Scalar(24, 24, 24));
  img.copyTo(out(cv::Rect(0, 28, img.cols, img.rows)));
  cv::putText(out, caption, {6, 20}, cv::FONT_HERSHEY_SIMPLEX, 0.6, cv::Scalar(240, 240, 240), 1, cv::LINE_AA);
  return out;
}

cv::Mat text_table(const std::vector<std::vector<std::string>>& rows, int width) {
  size_t cols = 0;
  for (const auto& r : rows) cols = std::max(cols, r.size());
  if (cols == 0 || width <= 0) return {};
  const int row_h = 30, first = cols > 1 ? width / 3 : width, rest = cols > 1 ? (width - first) / int(cols - 1) : 0;
  cv::Mat out(int(rows.size()) * row_h + 8, width, CV_8UC3, cv::Scalar(24, 24, 24));
  for (size_t i = 0; i < rows.size(); ++i) {
    const cv::Scalar ink = i == 0 ? cv::Scalar(170, 170, 170) : cv::Scalar(240, 240, 240);
    for (size_t c = 0; c < rows[i].size(); ++c) {
      const int x = c == 0 ? 8 : first + int(c - 1) * rest + 8;
      cv::putText(out, rows[i][c], {x, int(i) * row_h + 24}, cv::FONT_HERSHEY_SIMPLEX, 0.6, ink, 1, cv::LINE_AA);
    }
  }
  cv::line(out, {0, row_h + 2}, {width - 1, row_h + 2}, cv::Scalar(90, 90, 90));
  return out;
}

namespace {

// The rows of the gate figure: image 0's projections of each layer.
const nlohmann::json* first_image(const nlohmann::json& imgs) {
  return imgs.is_array() && !imgs.empty() && imgs[0].is_array() ? &imgs[0] : nullptr;
}

// "...blocks.3.attn..." -> "b3", then the projection's name.
std::string gate_row_name(std::string layer, int s) {
  static const char* proj_names[] = {"q", "k", "v"};
  const auto b = layer.find("blocks.");
  if (b != std::string::npos) layer = "b" + layer.substr(b + 7, layer.find('.', b + 7) - b - 7);
  return layer + " " + (s < 3 ? proj_names[s] : "?");
}

}  // namespace

cv::Mat gate_picture(const nlohmann::json& gates) {
  int rows = 0, cols = 0;
  for (auto& [layer, imgs] : gates.items())
    if (const auto* ps = first_image(imgs))
      for (auto& p : *ps) {
        ++rows;
        cols = std::max(cols, p.value("max_rank", 0));
      }
  if (rows == 0 || cols == 0) return {};
  const int cell = std::max(2, std::min(8, 1024 / cols)), label_w = 80;
  cv::Mat img(rows * cell + 2, label_w + cols * cell + 2, CV_8UC3, cv::Scalar(255, 255, 255));
  int r = 0;
  for (auto& [layer, imgs] : gates.items()) {
    const auto* ps = first_image(imgs);
    if (!ps) continue;
    int s = 0;
    for (auto& p : *ps) {
      const int max_rank = p.value("max_rank", 0);
      std::vector<bool> on(size_t(max_rank), false);
      for (auto& a : p["active"]) on[size_t(a.get<int>())] = true;
      const bool high = p.value("space", "") == "high";
      for (int c = 0; c < cols; ++c) {
        cv::Scalar col = c < max_rank ? (on[size_t(c)] ? cv::Scalar(255, 255, 255) : cv::Scalar(70, 70, 70))
                                      : cv::Scalar(0, 0, 0);
        cv::rectangle(img, cv::Rect(label_w + c * cell, r * cell, cell, cell), col, cv::FILLED);
      }
      cv::rectangle(img, cv::Rect(label_w - 8, r * cell, 6, cell),
                    high ? cv::Scalar(0, 140, 255) : cv::Scalar(255, 120, 0), cv::FILLED);
      if (cell >= 6)  // smaller rows cannot hold a readable name
        cv::putText(img, gate_row_name(layer, s), cv::Point(2, r * cell + cell - 1), cv::FONT_HERSHEY_PLAIN,
                    cell / 10.0, cv::Scalar(0, 0, 0));
      ++r;
      ++s;
    }
  }
  return img;
}

cv::Mat line_chart(const std::vector<std::pair<double, double>>& pts, const std::string& title) {
  if (pts.size() < 2) return {};
  const int W = 640, H = 360, m = 40;
  cv::Mat img(H, W, CV_8UC3, cv::Scalar(255, 255, 255));
  double lo = 1e300, hi = -1e300;
  for (auto& [x, y] : pts) lo = std::min(lo, y), hi = std::max(hi, y);
  if (hi <= lo) hi = lo + 1;
  const double x0 = pts.front().first, x1 = std::max(x0 + 1, pts.back().first);
  auto P = [&](double x, double y) {
    return cv::Point(int(m + (W - 2 * m) * (x - x0) / (x1 - x0)), int(H - m - (H - 2 * m) * (y - lo) / (hi - lo)));
  };
  cv::rectangle(img, cv::Point(m, m), cv::Point(W - m, H - m), cv::Scalar(200, 200, 200));
  for (size_t i = 1; i < pts.size(); ++i)
    cv::line(img, P(pts[i - 1].first, pts[i - 1].second), P(pts[i].first, pts[i].second), cv::Scalar(200, 90, 30), 1,
             cv::LINE_AA);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.4g", hi);
  cv::putText(img, buf, cv::Point(2, m + 4), cv::FONT_HERSHEY_PLAIN, 0.9, cv::Scalar(0, 0, 0));
  std::snprintf(buf, sizeof buf, "%.4g", lo);
  cv::putText(img, buf, cv::Point(2, H - m), cv::FONT_HERSHEY_PLAIN, 0.9, cv::Scalar(0, 0, 0));
  cv::putText(img, title, cv::Point(W / 2 - 50, 20), cv::FONT_HERSHEY_PLAIN, 1.1, cv::Scalar(0, 0, 0));
  return img;
}

cv::Mat bar_chart(const BarChart& chart) {
  const auto& groups = chart.groups;
  const auto& series = chart.series;
  if (series.empty() || groups.empty()) return {};
  const int group = int(series.size()) * 12 + 10, H = 360, top = 30, bottom = 110, left = 40;
  const int W = left + int(groups.size()) * group + 20;
  cv::Mat img(H, W, CV_8UC3, cv::Scalar(255, 255, 255));
  // 16 distinct colours (BGR; matplotlib's tab20 without the near-duplicates)
  // so that a full study line-up never shares one.
  static const cv::Scalar palette[] = {{180, 119, 31},  {14, 127, 255},  {44, 160, 44},   {40, 39, 214},
                                       {189, 103, 148}, {75, 86, 140},   {194, 119, 227}, {127, 127, 127},
                                       {34, 189, 188},  {207, 190, 23},  {232, 199, 174}, {120, 187, 255},
                                       {138, 223, 152}, {150, 152, 255}, {213, 176, 197}, {0, 0, 0}};
  const size_t n_colours = sizeof palette / sizeof palette[0];
  auto value = [&](size_t s, size_t g) {
    return s < chart.values.size() && g < chart.values[s].size() ? chart.values[s][g] : std::nan("");
  };
  double lowest = 1.0;
  for (size_t s = 0; s < series.size(); ++s)
    for (size_t g = 0; g < groups.size(); ++g)
      if (!std::isnan(value(s, g))) lowest = std::min(lowest, value(s, g));
  const int floor_pct = std::max(0, int(std::floor(100 * lowest / 10.0)) * 10 - 10);
  const double span = (100.0 - floor_pct) / 100.0, base = floor_pct / 100.0;
  const int plot_h = H - top - bottom;
  for (int t = 0; t <= 4; ++t) {
    const int y = top + plot_h - plot_h * t / 4;
    cv::line(img, {left, y}, {W - 10, y}, cv::Scalar(225, 225, 225));
    char tick[16];
    std::snprintf(tick, sizeof tick, "%g", floor_pct + t * (100.0 - floor_pct) / 4);
    cv::putText(img, tick, {4, y + 4}, cv::FONT_HERSHEY_PLAIN, 0.8, cv::Scalar(0, 0, 0));
  }
  for (size_t g = 0; g < groups.size(); ++g) {
    for (size_t s = 0; s < series.size(); ++s) {
      if (std::isnan(value(s, g))) continue;
      const double v = std::clamp((value(s, g) - base) / span, 0.0, 1.0);
      const int x = left + int(g) * group + 5 + int(s) * 12;
      cv::rectangle(img, {x, top + plot_h - int(plot_h * v)}, {x + 10, top + plot_h}, palette[s % n_colours],
                    cv::FILLED);
    }
    cv::Mat label(14, bottom - 5, CV_8UC3, cv::Scalar(255, 255, 255));
    cv::putText(label, groups[g].substr(0, 16), {0, 11}, cv::FONT_HERSHEY_PLAIN, 0.85, cv::Scalar(0, 0, 0));
    cv::Mat rot;
    cv::rotate(label, rot, cv::ROTATE_90_COUNTERCLOCKWISE);
    const int x = left + int(g) * group + group / 2 - 7;
    if (x + rot.cols <= W) rot.copyTo(img(cv::Rect(x, top + plot_h + 4, rot.cols, rot.rows)));
  }
  for (size_t s = 0; s < series.size(); ++s) {
    cv::rectangle(img, {left + int(s) * 110, 8}, {left + int(s) * 110 + 10, 18}, palette[s % n_colours], cv::FILLED);
    cv::putText(img, series[s].substr(0, 14), {left + int(s) * 110 + 14, 18}, cv::FONT_HERSHEY_PLAIN, 0.9,
                cv::Scalar(0, 0, 0));
  }
  return img;
}

}  // namespace rsam::viz
