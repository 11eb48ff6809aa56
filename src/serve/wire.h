// What travels over the wire, apart from HTTP itself: the error type that
// carries a status, request parsing with its bounds, masks as COCO RLE / PNG,
// base64, content ids, the token comparison.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "amg/amg.h"
#include "model/predictor.h"

namespace rsam::serve {

// A request refused with an HTTP status; the message is the JSON error.
struct HttpError : std::runtime_error {
  HttpError(int status, const std::string& what, int retry_after_s = 0)
      : std::runtime_error(what), status(status), retry_after_s(retry_after_s) {}
  int status;
  int retry_after_s;  // > 0: sent as Retry-After (503)
};

std::string base64_encode(const uint8_t* data, size_t size);
// HttpError 400 naming `what` on a character outside the alphabet.
std::vector<uint8_t> base64_decode(const std::string& text, const std::string& what);

// An image's id: its bytes' SHA-256, the first 128 bits in hex. A
// cryptographic hash, so that nobody can craft bytes that take another
// user's cached image.
std::string content_id(const uint8_t* data, size_t size);
bool is_content_id(const std::string& s);

// Equal strings, in time independent of where they differ (both are hashed
// first, so not even their lengths leak).
bool constant_time_equal(const std::string& a, const std::string& b);

// The body of POST /v1/images/{id}/segment:
//   {"points": [[x, y], ...], "labels": [1, 0, ...], "box": [x0, y0, x1, y1],
//    "mask_input": "<base64 float32 [S*S], S = 4 x the embedding size>",
//    "multimask": false, "adapter": true, "enhancer": true,
//    "format": "rle" | "png" | "both", "return_logits": false}
// Every key optional (labels default to 1), unknown keys refused. Prompts
// are checked against the image later (check_prompt); here only their form.
struct SegmentRequest {
  Prompt prompt;
  bool multimask = false;
  std::optional<bool> adapter, enhancer;
  bool rle = true, png = false, logits = false;
};
// HttpError 400 on malformed JSON or fields, 413 above max_bytes.
SegmentRequest parse_segment_request(const std::string& body, size_t max_bytes, int64_t mask_side);

// The body of POST /v1/images/{id}/everything: {"adapter", "enhancer",
// and the generator's "points_per_side" (1..64), "points_per_batch",
// "pred_iou_thresh", "stability_score_thresh", "box_nms_thresh",
// "min_mask_region_area"}; the official defaults, no crop layers.
struct EverythingRequest {
  amg::AmgOptions options;
  std::optional<bool> adapter, enhancer;
};
EverythingRequest parse_everything_request(const std::string& body, size_t max_bytes);

// One mask [h, w] (0/1 bytes, row-major) as {"area", "rle": {"size", "counts"}
// (COCO compressed), "png": base64 of a 0/255 PNG}.
nlohmann::json mask_json(const uint8_t* mask01, int w, int h, bool rle, bool png);

}  // namespace rsam::serve
