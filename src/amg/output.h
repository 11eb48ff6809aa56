// The generator's records in the official output forms: JSON records
// (scripts/amg.py's json.dump of generate()), the per-mask PNG folder with
// metadata.csv (write_masks_to_folder), and the overlay picture.
#pragma once

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include <string>
#include <vector>

#include "amg/amg.h"

namespace rsam::amg {

// The record's mask, CV_8U 0/1 at the image size (rle_to_mask).
cv::Mat record_mask(const MaskRecord& r);
// "segmentation" in an RLE mode: uncompressed {"size":[h,w],"counts":[...]}
// or COCO {"size":[h,w],"counts":"<compressed>"} (coco_encode_rle).
// rsam::Error for binary_mask, which is written as PNGs.
nlohmann::json segmentation_json(const MaskRecord& r, OutputMode mode);
// The official record: segmentation, area, bbox, predicted_iou,
// point_coords, stability_score, crop_box.
nlohmann::json record_json(const MaskRecord& r, OutputMode mode);
nlohmann::json records_json(const std::vector<MaskRecord>& records, OutputMode mode);
// Records back from records_json (RLE modes), e.g. to resume or compare.
std::vector<MaskRecord> records_from_json(const nlohmann::json& j);

// scripts/amg.py's metadata.csv text (header, a row per mask; floats as
// Python prints them).
std::string metadata_csv(const std::vector<MaskRecord>& records);
// write_masks_to_folder: DIR/<i>.png (0/255) for each mask, then
// DIR/metadata.csv last, each written atomically; `dir` must exist.
void write_masks_to_folder(const std::vector<MaskRecord>& records, const std::string& dir);

// Python's repr of a float (shortest round trip, "1.0" for integers).
std::string py_float(double v);

}  // namespace rsam::amg
