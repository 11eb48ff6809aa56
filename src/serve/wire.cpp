#include "serve/wire.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <cmath>
#include <set>

#include "data/rle.h"
#include "io/image_codec.h"

namespace rsam::serve {

namespace {
const char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::array<uint8_t, SHA256_DIGEST_LENGTH> sha256(const void* data, size_t size) {
  std::array<uint8_t, SHA256_DIGEST_LENGTH> d{};
  SHA256(static_cast<const unsigned char*>(data), size, d.data());
  return d;
}

using json = nlohmann::json;

float finite_number(const json& v, const std::string& what) {
  if (!v.is_number()) throw HttpError(400, what + " must be a number");
  const double d = v.get<double>();
  if (!std::isfinite(d) || std::fabs(d) > 1e9) throw HttpError(400, what + " must be a finite number");
  return float(d);
}

void parse_points(const json& j, Prompt& p) {
  const json& pts = j.value("points", json::array());
  if (!pts.is_array()) throw HttpError(400, "points must be an array of [x, y]");
  // Counted before anything is built from them.
  if (pts.size() > kMaxPromptPoints)
    throw HttpError(400, std::to_string(pts.size()) + " points: at most " + std::to_string(kMaxPromptPoints));
  for (const auto& pt : pts) {
    if (!pt.is_array() || pt.size() != 2) throw HttpError(400, "each point must be [x, y]");
    p.points.push_back({finite_number(pt[0], "a point's x"), finite_number(pt[1], "a point's y")});
  }
  if (j.contains("labels") && !j["labels"].is_null()) {
    const json& labels = j["labels"];
    if (!labels.is_array() || labels.size() != pts.size())
      throw HttpError(400, "labels must be an array with one label per point");
    for (const auto& l : labels) {
      if (!l.is_number_integer() || (l.get<int64_t>() != 0 && l.get<int64_t>() != 1))
        throw HttpError(400, "a label must be 1 (foreground) or 0 (background)");
      p.labels.push_back(l.get<int>());
    }
  } else {
    p.labels.assign(p.points.size(), 1);
  }
}

void parse_mask_input(const json& v, int64_t side, Prompt& p) {
  if (!v.is_string()) throw HttpError(400, "mask_input must be base64 float32 data");
  auto bytes = base64_decode(v.get<std::string>(), "mask_input");
  if (int64_t(bytes.size()) != side * side * 4)
    throw HttpError(400, "mask_input must hold " + std::to_string(side) + "x" + std::to_string(side) +
                             " float32 values (" + std::to_string(side * side * 4) + " bytes), got " +
                             std::to_string(bytes.size()) + " bytes");
  auto t = torch::empty({1, side, side}, torch::kFloat32);
  std::memcpy(t.data_ptr<float>(), bytes.data(), bytes.size());
  if (!torch::isfinite(t).all().item<bool>()) throw HttpError(400, "mask_input holds values that are not finite");
  p.mask_input = t;
}

json parse_object(const std::string& body, size_t max_bytes) {
  if (body.size() > max_bytes)
    throw HttpError(413, "request of " + std::to_string(body.size()) + " bytes: at most " + std::to_string(max_bytes));
  json j;
  try {
    j = json::parse(body.empty() ? std::string("{}") : body);
  } catch (const json::exception& e) {
    throw HttpError(400, "bad JSON: " + std::string(e.what()));
  }
  if (!j.is_object()) throw HttpError(400, "the request must be a JSON object");
  return j;
}

void check_keys(const json& j, const std::set<std::string>& keys) {
  for (const auto& [k, v] : j.items())
    if (!keys.count(k)) throw HttpError(400, "unknown field '" + k.substr(0, 40) + "'");
}

std::optional<bool> opt_flag(const json& j, const char* k) {
  if (!j.contains(k) || j[k].is_null()) return std::nullopt;
  if (!j[k].is_boolean()) throw HttpError(400, std::string(k) + " must be true or false");
  return j[k].get<bool>();
}

double number_in(const json& j, const char* k, double def, double lo, double hi) {
  if (!j.contains(k) || j[k].is_null()) return def;
  const double v = finite_number(j[k], k);
  if (v < lo || v > hi)
    throw HttpError(400, std::string(k) + " must be from " + nlohmann::json(lo).dump() + " to " + json(hi).dump());
  return v;
}
}  // namespace

std::string base64_encode(const uint8_t* d, size_t n) {
  std::string out;
  out.reserve((n + 2) / 3 * 4);
  for (size_t i = 0; i < n; i += 3) {
    const uint32_t v = uint32_t(d[i]) << 16 | (i + 1 < n ? uint32_t(d[i + 1]) << 8 : 0) | (i + 2 < n ? d[i + 2] : 0);
    out += kB64[v >> 18 & 63];
    out += kB64[v >> 12 & 63];
    out += i + 1 < n ? kB64[v >> 6 & 63] : '=';
    out += i + 2 < n ? kB64[v & 63] : '=';
  }
  return out;
}

std::vector<uint8_t> base64_decode(const std::string& s, const std::string& what) {
  std::vector<uint8_t> out;
  out.reserve(s.size() / 4 * 3);
  uint32_t acc = 0;
  int bits = 0;
  size_t i = 0;
  for (; i < s.size() && s[i] != '='; ++i) {
    const char* at = std::strchr(kB64, s[i]);
    if (s[i] == '\0' || !at) throw HttpError(400, what + " is not base64");
    acc = acc << 6 | uint32_t(at - kB64);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(uint8_t(acc >> bits & 0xff));
    }
  }
  for (; i < s.size(); ++i)
    if (s[i] != '=') throw HttpError(400, what + " is not base64");
  return out;
}

std::string content_id(const uint8_t* data, size_t size) {
  const auto d = sha256(data, size);
  static const char hex[] = "0123456789abcdef";
  std::string id;
  for (int i = 0; i < 16; ++i) {
    id += hex[d[i] >> 4];
    id += hex[d[i] & 15];
  }
  return id;
}

bool is_content_id(const std::string& s) {
  if (s.size() != 32) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

bool constant_time_equal(const std::string& a, const std::string& b) {
  const auto da = sha256(a.data(), a.size()), db = sha256(b.data(), b.size());
  return CRYPTO_memcmp(da.data(), db.data(), da.size()) == 0;
}

SegmentRequest parse_segment_request(const std::string& body, size_t max_bytes, int64_t mask_side) {
  const json j = parse_object(body, max_bytes);
  check_keys(j, {"points", "labels", "box", "mask_input", "multimask", "adapter", "enhancer", "format",
                 "return_logits"});
  SegmentRequest r;
  parse_points(j, r.prompt);
  if (j.contains("box") && !j["box"].is_null()) {
    const json& b = j["box"];
    if (!b.is_array() || b.size() != 4) throw HttpError(400, "box must be [x0, y0, x1, y1]");
    r.prompt.box = std::array<float, 4>{finite_number(b[0], "box x0"), finite_number(b[1], "box y0"),
                                        finite_number(b[2], "box x1"), finite_number(b[3], "box y1")};
  }
  if (j.contains("mask_input") && !j["mask_input"].is_null()) parse_mask_input(j["mask_input"], mask_side, r.prompt);
  auto flag = [&](const char* k, bool def) {
    if (!j.contains(k) || j[k].is_null()) return def;
    if (!j[k].is_boolean()) throw HttpError(400, std::string(k) + " must be true or false");
    return j[k].get<bool>();
  };
  r.multimask = flag("multimask", false);
  r.logits = flag("return_logits", false);
  r.adapter = opt_flag(j, "adapter");
  r.enhancer = opt_flag(j, "enhancer");
  const std::string format = j.value("format", json("rle")).is_string() ? j.value("format", std::string("rle")) : "";
  if (format != "rle" && format != "png" && format != "both") throw HttpError(400, "format must be rle, png or both");
  r.rle = format != "png";
  r.png = format != "rle";
  if (r.prompt.points.empty() && !r.prompt.box && !r.prompt.mask_input.defined())
    throw HttpError(400, "give a prompt: points, a box or a mask_input");
  return r;
}

EverythingRequest parse_everything_request(const std::string& body, size_t max_bytes) {
  const json j = parse_object(body, max_bytes);
  check_keys(j, {"adapter", "enhancer", "points_per_side", "points_per_batch", "pred_iou_thresh",
                 "stability_score_thresh", "box_nms_thresh", "min_mask_region_area"});
  EverythingRequest r;
  r.adapter = opt_flag(j, "adapter");
  r.enhancer = opt_flag(j, "enhancer");
  auto& o = r.options;
  auto integer = [&](const char* k, int64_t def, int64_t lo, int64_t hi) {
    const double v = number_in(j, k, double(def), double(lo), double(hi));
    if (v != std::floor(v)) throw HttpError(400, std::string(k) + " must be a whole number");
    return int64_t(v);
  };
  o.points_per_side = int(integer("points_per_side", *o.points_per_side, 1, 64));
  o.points_per_batch = int(integer("points_per_batch", o.points_per_batch, 1, 1024));
  o.pred_iou_thresh = number_in(j, "pred_iou_thresh", o.pred_iou_thresh, 0, 1);
  o.stability_score_thresh = number_in(j, "stability_score_thresh", o.stability_score_thresh, 0, 1);
  o.box_nms_thresh = number_in(j, "box_nms_thresh", o.box_nms_thresh, 0, 1);
  o.min_mask_region_area = integer("min_mask_region_area", o.min_mask_region_area, 0, int64_t(1) << 40);
  amg::check_options(o);
  return r;
}

json mask_json(const uint8_t* mask01, int w, int h, bool rle, bool png) {
  const cv::Mat m(h, w, CV_8UC1, const_cast<uint8_t*>(mask01));
  json j;
  j["area"] = cv::countNonZero(m);
  if (rle) j["rle"] = {{"size", {h, w}}, {"counts", data::rle_to_string(data::rle_encode(m))}};
  if (png) {
    const cv::Mat img = m * 255;
    const auto bytes = io::encode_image(img, "mask.png", /*rgb=*/false);
    j["png"] = base64_encode(bytes.data(), bytes.size());
  }
  return j;
}

}  // namespace rsam::serve
