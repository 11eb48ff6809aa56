// Structural completeness check for PNG and JPEG bytes, run before OpenCV
// decodes them. libjpeg pads a truncated JPEG with grey and reports success,
// so a file cut in half would otherwise become a silent wrong answer; libpng
// fails on a cut PNG but prints its own line first. Walking the container
// (chunks / segments) is cheap and catches both with one clear message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace rsam::io {

// Empty when the bytes are a complete PNG or JPEG, or are some other format
// (left to the decoder); otherwise a short description such as
// "truncated JPEG (no end-of-image marker)".
std::string image_bytes_problem(const uint8_t* data, size_t size);

// The format and size a picture's header claims, read without decoding.
struct ImageHeader {
  std::string format;  // "png", "jpeg", "bmp", "tiff", "webp", "pnm"; empty if unrecognised
  uint64_t width = 0, height = 0;  // 0 if the header does not say (or lies past the end)
};
ImageHeader image_header(const uint8_t* data, size_t size);

}  // namespace rsam::io
