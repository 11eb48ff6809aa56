// OpenCV <-> predictor conversions in one place: datasets and metrics work on
// cv::Mat, the predictor on Image8 and device tensors, and training,
// evaluation, the study and the demo all cross between them.
#pragma once

#include <torch/types.h>
#include <opencv2/core.hpp>

#include "error.h"
#include "model/image.h"

namespace rsam {

// A CV_8UC3 RGB image as an Image8 (copied); rsam::Error for anything else.
inline Image8 to_image8(const cv::Mat& rgb) {
  if (rgb.empty() || rgb.type() != CV_8UC3) throw Error("images must be 8-bit RGB (CV_8UC3)");
  return image8_from_rows(rgb.data, rgb.cols, rgb.rows, rgb.step);
}

// A predicted [H, W] mask (bool or uint8, on any device) as an owning CV_8UC1
// 0/1 Mat: the copy to the CPU happens here, so callers never wrap device memory.
inline cv::Mat mask_to_mat(const torch::Tensor& mask) {
  const auto m = mask.to(torch::kCPU, torch::kUInt8).contiguous();
  return cv::Mat(int(m.size(0)), int(m.size(1)), CV_8UC1, m.data_ptr<uint8_t>()).clone();
}

}  // namespace rsam
