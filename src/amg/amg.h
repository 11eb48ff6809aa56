// "Segment everything": the official SamAutomaticMaskGenerator
// (segment_anything/automatic_mask_generator.py, utils/amg.py) over rsam's
// predictor, with the same parameters, defaults, order of filtering and NMS
// tie-breaking, so its records match the official ones mask for mask.
//
// What differs is only where the work is done: the decoder runs on whole
// batches, the predicted-IoU filter comes before any upsampling (it needs
// none), only its survivors are upsampled to the image, and thresholding,
// boxes, the crop-edge rule and RLE are one C++ pass per surviving mask.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "data/rle.h"
#include "model/image.h"
#include "model/predictor.h"
#include "rsam/auto_mask_options.h"

namespace rsam::amg {

enum class OutputMode { BinaryMask, UncompressedRle, CocoRle };
OutputMode parse_output_mode(const std::string& s);  // "binary_mask" | "uncompressed_rle" | "coco_rle"
std::string output_mode_name(OutputMode m);

// The official constructor's arguments, names and defaults: those the
// public rsam::AutoMaskOptions has too (one definition), the output mode as
// an enum.
struct AmgOptions : AutoMaskArguments {
  OutputMode output_mode = OutputMode::BinaryMask;
};
// rsam::Error (one line) for what the official code would crash on or
// silently misuse: no or both point sources, 0 points, empty or too few
// grids, thresholds outside [0, 1], NaNs, batch < 1, negative layers/area.
void check_options(const AmgOptions& o);

// One mask, as the official record. The mask itself is kept as the
// uncompressed RLE over the whole image (official mask_data["rles"]); the
// output mode decides how it is written (output.h).
struct MaskRecord {
  data::Rle rle;
  int64_t area = 0;
  std::array<int64_t, 4> bbox{};  // XYWH, the official batched_mask_to_box convention
  double predicted_iou = 0;       // the decoder's float32 value
  std::array<double, 2> point_coords{};
  double stability_score = 0;
  std::array<int64_t, 4> crop_box{};  // XYWH
};

// Where generation time goes (milliseconds and counts), summed over crops.
struct AmgProfile {
  double encode_ms = 0, decode_ms = 0, upsample_ms = 0, masks_ms = 0, nms_ms = 0, postprocess_ms = 0;
  int64_t crops = 0, points = 0, decoded = 0, after_iou = 0, after_stability = 0, after_edge = 0, kept = 0;
};

// How a crop's embedding is made. Default: predictor.set_image(crop). A
// GleSAM enhancer, for example, would set_embedding its own.
using CropEncoder = std::function<void(SamPredictor& predictor, const Image8& crop)>;

// The official generate(image): records in the official order. The image is
// RGB (3 channels), any size >= 1x1; rsam::Error for an empty one or bad
// options. An image where nothing survives gives an empty list. The
// predictor decodes single-view (its flip setting is not used).
std::vector<MaskRecord> generate(SamPredictor& predictor, const Image8& image, const AmgOptions& options,
                                 AmgProfile* profile = nullptr, const CropEncoder& encode = {});

// ---- The official helpers, exposed for tests ------------------------------

// build_point_grid(n): n*n points in [0,1]^2, x fastest (numpy linspace).
std::vector<std::array<double, 2>> build_point_grid(int n_per_side);
std::vector<std::vector<std::array<double, 2>>> build_all_layer_point_grids(int n_per_side, int n_layers,
                                                                            int scale_per_layer);
// generate_crop_boxes: XYXY boxes, the whole image first; layer of each.
std::vector<std::array<int64_t, 4>> generate_crop_boxes(int64_t im_h, int64_t im_w, int n_layers,
                                                        double overlap_ratio, std::vector<int>* layer_idxs);

}  // namespace rsam::amg
