// Per-mask segmentation metrics used by evaluation.
//
// Conventions (pred and gt are CV_8UC1, nonzero = object, same size):
//   iou            |P∩G| / |P∪G|; 1 if both are empty
//   dice           2|P∩G| / (|P|+|G|); 1 if both are empty
//   pixel_accuracy fraction of pixels where pred and gt agree
//   boundary_iou   Cheng et al. 2021 (the boundary_iou API's mask_to_boundary):
//                  boundary(M) = M minus M eroded by a 3x3 square d times, the
//                  image border counting as background; d = round(ratio *
//                  image diagonal) (Python's round: halves to even), at least
//                  1. boundary_iou = |Bp∩Bg| / |Bp∪Bg|; 1 if both boundaries
//                  are empty (only when both masks are empty), 0 if one is.
// A size mismatch or a non-CV_8UC1 input is an rsam::Error.
#pragma once

#include <cstddef>
#include <vector>

#include <opencv2/core.hpp>

namespace rsam::data {

struct MaskMetrics {
  double iou = 0;
  double dice = 0;
  double pixel_accuracy = 0;
  double boundary_iou = 0;
};

MaskMetrics mask_metrics(const cv::Mat& pred01, const cv::Mat& gt01, double boundary_dilation_ratio = 0.02);
// IoU alone (same conventions as mask_metrics), for ranking many candidates cheaply.
double mask_iou(const cv::Mat& pred01, const cv::Mat& gt01);

// The boundary band mask_metrics uses (CV_8UC1 0/1), for inspection and tests.
cv::Mat mask_boundary(const cv::Mat& mask01, double dilation_ratio = 0.02);

// Mean of each field over `all` (per-mask averaging, as mIoU in the SAM
// robustness papers); all zeros for an empty list.
MaskMetrics mean_metrics(const std::vector<MaskMetrics>& all);

// Running sums for means without keeping every result.
class MetricsAccumulator {
 public:
  void add(const MaskMetrics& m);
  size_t count() const { return n_; }
  MaskMetrics mean() const;  // all zeros if nothing was added

 private:
  size_t n_ = 0;
  double iou_ = 0, dice_ = 0, acc_ = 0, biou_ = 0;
};

}  // namespace rsam::data
