// Shared by the generator's test files: the official fixtures
// (scripts/make_amg_fixtures.py), rsam-tiny without its adapter, readers.
#pragma once

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include <fstream>

#include "amg/amg.h"
#include "amg/mask_ops.h"
#include "amg/output.h"
#include "io/image_codec.h"
#include "model/bundled.h"
#include "model/checkpoint.h"

namespace rsam::amg::test {

inline const std::string kDir = RSAM_TEST_DATA_DIR "/amg/";

inline const nlohmann::json& fixture() {
  static const nlohmann::json j = [] {
    std::ifstream f(kDir + "official_amg.json");
    return nlohmann::json::parse(f);
  }();
  return j;
}

inline SamPredictor& tiny() {
  // rsam-tiny without its adapter: the weights the official Sam loaded.
  static SamPredictor p(load_sam(bundled_model("rsam-tiny.safetensors")).model);
  return p;
}

inline Image8 read(const std::string& name) {
  const cv::Mat m = io::read_image(kDir + name, io::ImageRead::Rgb);
  return image8_from_rows(m.data, m.cols, m.rows, m.step);
}

inline data::Rle rle_of(const nlohmann::json& r) {
  return {r["size"][0].get<int>(), r["size"][1].get<int>(), r["counts"].get<std::vector<uint32_t>>()};
}

inline double iou(const cv::Mat& a, const cv::Mat& b) {
  const double inter = cv::countNonZero(a & b), uni = cv::countNonZero(a | b);
  return uni == 0 ? 1.0 : inter / uni;
}

inline AmgOptions options_of(const nlohmann::json& kw) {
  AmgOptions o;
  if (kw.contains("points_per_side")) o.points_per_side = kw["points_per_side"].get<int>();
  if (kw.contains("crop_n_layers")) o.crop_n_layers = kw["crop_n_layers"].get<int>();
  if (kw.contains("pred_iou_thresh")) o.pred_iou_thresh = kw["pred_iou_thresh"].get<double>();
  if (kw.contains("stability_score_thresh")) o.stability_score_thresh = kw["stability_score_thresh"].get<double>();
  if (kw.contains("min_mask_region_area")) o.min_mask_region_area = kw["min_mask_region_area"].get<int64_t>();
  return o;
}

}  // namespace rsam::amg::test
