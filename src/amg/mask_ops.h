// The per-mask pieces of the generator, torch-free: box NMS with
// torchvision's tie-breaking, masks to boxes and RLE, and the official
// small-region post-processing (OpenCV connected components, as the official
// code uses).
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include <opencv2/core.hpp>

#include "amg/amg.h"
#include "data/rle.h"

namespace rsam::amg {

using BoxXYXY = std::array<int64_t, 4>;

// torchvision.ops.nms on the CPU: boxes visited by descending score, ties in
// input order (its sort is stable), float32 IoU, suppressed when IoU > thr.
// Returns kept indices in visiting order.
std::vector<int64_t> nms(const std::vector<BoxXYXY>& boxes, const std::vector<float>& scores, double iou_threshold);
// torchvision.ops.batched_nms with one category, as the generator calls it:
// up to 1000 boxes it is nms(); above, torchvision runs its "vanilla" path,
// which reorders the kept boxes with torch's unstable CPU sort (std::sort on
// (score, index) pairs); that order is reproduced too.
std::vector<int64_t> batched_nms(const std::vector<BoxXYXY>& boxes, const std::vector<float>& scores,
                                 double iou_threshold);
// The permutation torch.sort(descending=True) gives on the CPU (unstable).
std::vector<int64_t> torch_sort_descending(const std::vector<float>& values);

// batched_mask_to_box of one mask: XYXY with inclusive right/bottom pixel,
// [0,0,0,0] when empty. `mask` is CV_8U, nonzero = in.
BoxXYXY mask_to_box(const cv::Mat& mask);

// One crop's thresholded mask (CV_8U 0/1, crop size) placed at (x0, y0) in
// an h x w image, as uncompressed RLE (mask_to_rle_pytorch of uncrop_masks),
// and its box in the crop's frame (batched_mask_to_box).
struct CropMask {
  data::Rle rle;
  BoxXYXY box{};
};
CropMask encode_crop_mask(const cv::Mat& crop_mask, int64_t x0, int64_t y0, int h, int w);

// is_box_near_crop_edge for one box in the crop's frame.
bool near_crop_edge(const BoxXYXY& box_in_crop, const BoxXYXY& crop_box, int64_t orig_w, int64_t orig_h,
                    double atol = 20.0);

// remove_small_regions(mask, area_thresh, mode): `holes` fills holes smaller
// than the area, else removes islands smaller than it (keeping the largest if
// all are). Returns the new mask (CV_8U 0/1) and whether it changed.
std::pair<cv::Mat, bool> remove_small_regions(const cv::Mat& mask01, double area_thresh, bool holes);

// SamAutomaticMaskGenerator.postprocess_small_regions on the records, in
// place: holes then islands, boxes recomputed, NMS preferring unchanged
// masks, RLE and box updated for kept changed masks.
void postprocess_small_regions(std::vector<MaskRecord>& records, int64_t min_area, double nms_thresh);

}  // namespace rsam::amg
