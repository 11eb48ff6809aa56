// The official SamAutomaticMaskGenerator's arguments and defaults
// (automatic_mask_generator.py), output_mode aside: one definition shared by
// the public rsam::AutoMaskOptions (rsam.h) and the library's own
// amg::AmgOptions (src/amg/amg.h), which differ only in how they hold the
// output mode (its name / an enum). Standard C++ only, so the public header
// stays free of LibTorch and OpenCV.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

namespace rsam {

struct AutoMaskArguments {
  // A grid of points_per_side^2 clicks, or (points_per_side unset) the
  // given grids, one per crop layer, points in [0, 1] of the crop. Exactly
  // one of the two, as in the official class.
  std::optional<int> points_per_side = 32;
  std::vector<std::vector<std::array<double, 2>>> point_grids;
  int points_per_batch = 64;
  double pred_iou_thresh = 0.88;
  double stability_score_thresh = 0.95;
  double stability_score_offset = 1.0;
  double box_nms_thresh = 0.7;
  int crop_n_layers = 0;
  double crop_nms_thresh = 0.7;
  double crop_overlap_ratio = 512.0 / 1500.0;
  int crop_n_points_downscale_factor = 1;
  int64_t min_mask_region_area = 0;
};

}  // namespace rsam
