#include "data/metrics.h"

#include <cmath>

#include <opencv2/imgproc.hpp>

#include "error.h"

namespace rsam::data {

namespace {

cv::Mat binary(const cv::Mat& m, const char* what) {
  if (m.empty() || m.type() != CV_8UC1)
    throw Error(std::string("metrics: ") + what + " must be a non-empty CV_8UC1 mask");
  cv::Mat b;
  cv::compare(m, 0, b, cv::CMP_GT);  // 0/255
  return b;
}

double ratio(double num, double den) { return den == 0 ? 1.0 : num / den; }

}  // namespace

cv::Mat mask_boundary(const cv::Mat& mask01, double dilation_ratio) {
  const cv::Mat m = binary(mask01, "mask");
  const double diag = std::sqrt(static_cast<double>(m.rows) * m.rows + static_cast<double>(m.cols) * m.cols);
  // nearbyint in the default rounding mode rounds halves to even, like Python's round().
  const int d = std::max(1, static_cast<int>(std::nearbyint(dilation_ratio * diag)));
  // d iterations of a 3x3 erosion with zero padding == one (2d+1)^2 square
  // erosion with a constant-0 border: pixels near the image edge are boundary.
  cv::Mat eroded;
  cv::erode(m, eroded, cv::getStructuringElement(cv::MORPH_RECT, cv::Size(2 * d + 1, 2 * d + 1)), cv::Point(-1, -1), 1,
            cv::BORDER_CONSTANT, cv::Scalar(0));
  cv::Mat band = m & ~eroded;
  return band & 1;
}

namespace {

void check_same_size(const cv::Mat& p, const cv::Mat& g) {
  if (p.size() != g.size())
    throw Error("metrics: prediction is " + std::to_string(p.cols) + "x" + std::to_string(p.rows) +
                " but ground truth is " + std::to_string(g.cols) + "x" + std::to_string(g.rows));
}

}  // namespace

double mask_iou(const cv::Mat& pred01, const cv::Mat& gt01) {
  const cv::Mat p = binary(pred01, "prediction"), g = binary(gt01, "ground truth");
  check_same_size(p, g);
  return ratio(cv::countNonZero(p & g), cv::countNonZero(p | g));
}

MaskMetrics mask_metrics(const cv::Mat& pred01, const cv::Mat& gt01, double boundary_dilation_ratio) {
  const cv::Mat p = binary(pred01, "prediction"), g = binary(gt01, "ground truth");
  check_same_size(p, g);
  const double inter = cv::countNonZero(p & g), uni = cv::countNonZero(p | g);
  const double np = cv::countNonZero(p), ng = cv::countNonZero(g);
  MaskMetrics m;
  m.iou = ratio(inter, uni);
  m.dice = ratio(2 * inter, np + ng);
  m.pixel_accuracy = 1.0 - static_cast<double>(cv::countNonZero(p ^ g)) / static_cast<double>(p.total());
  const cv::Mat bp = mask_boundary(pred01, boundary_dilation_ratio), bg = mask_boundary(gt01, boundary_dilation_ratio);
  m.boundary_iou = ratio(cv::countNonZero(bp & bg), cv::countNonZero(bp | bg));
  return m;
}

void MetricsAccumulator::add(const MaskMetrics& m) {
  ++n_;
  iou_ += m.iou;
  dice_ += m.dice;
  acc_ += m.pixel_accuracy;
  biou_ += m.boundary_iou;
}

MaskMetrics MetricsAccumulator::mean() const {
  if (n_ == 0) return {};
  const double n = static_cast<double>(n_);
  return {iou_ / n, dice_ / n, acc_ / n, biou_ / n};
}

MaskMetrics mean_metrics(const std::vector<MaskMetrics>& all) {
  MetricsAccumulator acc;
  for (const auto& m : all) acc.add(m);
  return acc.mean();
}

}  // namespace rsam::data
