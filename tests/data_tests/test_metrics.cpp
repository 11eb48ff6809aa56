// Mask metrics on masks small enough to count by hand.
#include <gtest/gtest.h>

#include "data/metrics.h"
#include "error.h"

namespace rsam::data {
namespace {

cv::Mat rect(int w, int h, cv::Rect r) {
  cv::Mat m(h, w, CV_8UC1, cv::Scalar(0));
  m(r).setTo(1);
  return m;
}

TEST(Metrics, ShiftedSquare) {
  // 10x10 image (diagonal 14.1, ratio 0.02 -> d = round(0.28) -> 0 -> 1).
  // gt: 6x6 square at (2,2); pred: the same shifted right by one column.
  const cv::Mat gt = rect(10, 10, {2, 2, 6, 6}), pred = rect(10, 10, {3, 2, 6, 6});
  const MaskMetrics m = mask_metrics(pred, gt);
  EXPECT_DOUBLE_EQ(m.iou, 30.0 / 42.0);  // 6x5 overlap; 36 + 36 - 30
  EXPECT_DOUBLE_EQ(m.dice, 60.0 / 72.0);
  EXPECT_DOUBLE_EQ(m.pixel_accuracy, 88.0 / 100.0);  // 6 + 6 disagreeing pixels
  // Each boundary is the 1-pixel ring: 36 - 16 = 20 pixels. The rings share
  // the top and bottom rows over columns 3..7 (2 x 5 = 10): 10 / (20+20-10).
  EXPECT_EQ(cv::countNonZero(mask_boundary(gt)), 20);
  EXPECT_DOUBLE_EQ(m.boundary_iou, 10.0 / 30.0);
}

TEST(Metrics, PerfectAndDisjoint) {
  const cv::Mat a = rect(8, 8, {1, 1, 3, 3}), b = rect(8, 8, {5, 5, 2, 2});
  const MaskMetrics same = mask_metrics(a, a);
  EXPECT_EQ(same.iou, 1.0);
  EXPECT_EQ(same.dice, 1.0);
  EXPECT_EQ(same.pixel_accuracy, 1.0);
  EXPECT_EQ(same.boundary_iou, 1.0);
  const MaskMetrics none = mask_metrics(a, b);
  EXPECT_EQ(none.iou, 0.0);
  EXPECT_EQ(none.dice, 0.0);
  EXPECT_DOUBLE_EQ(none.pixel_accuracy, 1.0 - 13.0 / 64.0);
  EXPECT_EQ(none.boundary_iou, 0.0);
}

TEST(Metrics, EmptyMaskConventions) {
  const cv::Mat empty(6, 6, CV_8UC1, cv::Scalar(0)), obj = rect(6, 6, {1, 1, 2, 2});
  const MaskMetrics both = mask_metrics(empty, empty);
  EXPECT_EQ(both.iou, 1.0);
  EXPECT_EQ(both.dice, 1.0);
  EXPECT_EQ(both.pixel_accuracy, 1.0);
  EXPECT_EQ(both.boundary_iou, 1.0);
  for (const MaskMetrics& m : {mask_metrics(empty, obj), mask_metrics(obj, empty)}) {
    EXPECT_EQ(m.iou, 0.0);
    EXPECT_EQ(m.dice, 0.0);
    EXPECT_DOUBLE_EQ(m.pixel_accuracy, 32.0 / 36.0);
    EXPECT_EQ(m.boundary_iou, 0.0);
  }
}

TEST(Metrics, IouAloneMatchesTheFullMetrics) {
  const cv::Mat gt = rect(10, 10, {2, 2, 6, 6}), pred = rect(10, 10, {3, 2, 6, 6});
  const cv::Mat empty(10, 10, CV_8UC1, cv::Scalar(0));
  EXPECT_DOUBLE_EQ(mask_iou(pred, gt), 30.0 / 42.0);
  EXPECT_EQ(mask_iou(empty, empty), mask_metrics(empty, empty).iou);
  EXPECT_EQ(mask_iou(empty, gt), 0.0);
  EXPECT_THROW(mask_iou(rect(9, 10, {0, 0, 2, 2}), gt), Error);
}

TEST(Metrics, BoundaryWidthFollowsTheDiagonal) {
  // 12x16 image: diagonal exactly 20. The image border counts as background.
  const cv::Mat full(12, 16, CV_8UC1, cv::Scalar(1));
  // ratio 0.1 -> d = 2: interior (12-4) x (16-4) = 96 survives, 192 - 96 = 96.
  EXPECT_EQ(cv::countNonZero(mask_boundary(full, 0.1)), 96);
  // ratio 0.125 -> 2.5 rounds half to even (Python's round) -> d = 2, not 3 (132).
  EXPECT_EQ(cv::countNonZero(mask_boundary(full, 0.125)), 96);
  // ratio 0.15 -> d = 3: (12-6) x (16-6) = 60 interior -> 132.
  EXPECT_EQ(cv::countNonZero(mask_boundary(full, 0.15)), 132);
  // Tiny ratio -> d clamps to 1: 10 x 14 = 140 interior -> 52.
  EXPECT_EQ(cv::countNonZero(mask_boundary(full, 0.0)), 52);
  // Non-0/1 inputs count as binary.
  EXPECT_EQ(cv::countNonZero(mask_boundary(full * 255, 0.1)), 96);
}

TEST(Metrics, MeansAndErrors) {
  const MaskMetrics a{1.0, 1.0, 1.0, 0.5}, b{0.5, 0.0, 0.75, 0.25};
  const MaskMetrics m = mean_metrics({a, b});
  EXPECT_DOUBLE_EQ(m.iou, 0.75);
  EXPECT_DOUBLE_EQ(m.dice, 0.5);
  EXPECT_DOUBLE_EQ(m.pixel_accuracy, 0.875);
  EXPECT_DOUBLE_EQ(m.boundary_iou, 0.375);
  MetricsAccumulator acc;
  EXPECT_EQ(acc.mean().iou, 0.0);
  acc.add(a);
  acc.add(b);
  EXPECT_EQ(acc.count(), 2u);
  EXPECT_DOUBLE_EQ(acc.mean().iou, 0.75);
  EXPECT_THROW(mask_metrics(cv::Mat(4, 4, CV_8UC1, cv::Scalar(0)), cv::Mat(4, 5, CV_8UC1, cv::Scalar(0))), Error);
  EXPECT_THROW(mask_metrics(cv::Mat(4, 4, CV_32F, cv::Scalar(0)), cv::Mat(4, 4, CV_32F, cv::Scalar(0))), Error);
}

}  // namespace
}  // namespace rsam::data
