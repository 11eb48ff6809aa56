#include "amg/output.h"

#include <charconv>
#include <cmath>

#include "error.h"
#include "io/fs.h"
#include "io/image_codec.h"

namespace rsam::amg {

cv::Mat record_mask(const MaskRecord& r) { return data::rle_decode(r.rle); }

nlohmann::json segmentation_json(const MaskRecord& r, OutputMode mode) {
  nlohmann::json j;
  j["size"] = {r.rle.h, r.rle.w};
  if (mode == OutputMode::CocoRle)
    j["counts"] = data::rle_to_string(r.rle);
  else if (mode == OutputMode::UncompressedRle)
    j["counts"] = r.rle.counts;
  else
    throw Error("binary_mask records are written as one PNG per mask (--out-dir), not as JSON");
  return j;
}

nlohmann::json record_json(const MaskRecord& r, OutputMode mode) {
  return {{"segmentation", segmentation_json(r, mode)},
          {"area", r.area},
          {"bbox", r.bbox},
          {"predicted_iou", r.predicted_iou},
          {"point_coords", nlohmann::json::array({r.point_coords})},
          {"stability_score", r.stability_score},
          {"crop_box", r.crop_box}};
}

nlohmann::json records_json(const std::vector<MaskRecord>& records, OutputMode mode) {
  auto j = nlohmann::json::array();
  for (const auto& r : records) j.push_back(record_json(r, mode));
  return j;
}

std::vector<MaskRecord> records_from_json(const nlohmann::json& j) {
  if (!j.is_array()) throw Error("mask records: expected a JSON list");
  std::vector<MaskRecord> out;
  try {
    for (const auto& e : j) {
      MaskRecord r;
      const auto& seg = e.at("segmentation");
      const int h = seg.at("size").at(0).get<int>(), w = seg.at("size").at(1).get<int>();
      if (seg.at("counts").is_string())
        r.rle = data::rle_from_string(seg.at("counts").get<std::string>(), h, w);
      else
        r.rle = data::Rle{h, w, seg.at("counts").get<std::vector<uint32_t>>()};
      r.area = e.at("area").get<int64_t>();
      r.bbox = e.at("bbox").get<std::array<int64_t, 4>>();
      r.predicted_iou = e.at("predicted_iou").get<double>();
      r.point_coords = e.at("point_coords").at(0).get<std::array<double, 2>>();
      r.stability_score = e.at("stability_score").get<double>();
      r.crop_box = e.at("crop_box").get<std::array<int64_t, 4>>();
      out.push_back(std::move(r));
    }
  } catch (const nlohmann::json::exception& ex) {
    throw Error(std::string("mask records: malformed record (") + ex.what() + ")");
  }
  return out;
}

std::string py_float(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, v);
  std::string s(buf, res.ptr);
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}

std::string metadata_csv(const std::vector<MaskRecord>& records) {
  std::string out =
      "id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,predicted_iou,stability_score,"
      "crop_box_x0,crop_box_y0,crop_box_w,crop_box_h";
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    out += "\n" + std::to_string(i) + "," + std::to_string(r.area);
    for (auto v : r.bbox) out += "," + std::to_string(v);
    out += "," + py_float(r.point_coords[0]) + "," + py_float(r.point_coords[1]);
    out += "," + py_float(r.predicted_iou) + "," + py_float(r.stability_score);
    for (auto v : r.crop_box) out += "," + std::to_string(v);
  }
  return out;  // the official file has no trailing newline
}

void write_masks_to_folder(const std::vector<MaskRecord>& records, const std::string& dir) {
  for (size_t i = 0; i < records.size(); ++i)
    io::write_image(io::join_inside(dir, std::to_string(i) + ".png"), record_mask(records[i]) * 255, false);
  io::write_text(io::join_inside(dir, "metadata.csv"), metadata_csv(records));
}

}  // namespace rsam::amg
