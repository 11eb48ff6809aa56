// The one place rsam reads and writes pictures (OpenCV's codecs). Before
// anything is decoded, the bytes are checked for truncation and the size the
// header claims is checked against a pixel limit, so a small file claiming
// 30000x30000 pixels (a decompression bomb) is refused instead of eating
// gigabytes. Formats: PNG, JPEG, BMP, TIFF, WebP, PPM/PGM; others are refused.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace rsam::io {

// The pixel limit: RSAM_MAX_PIXELS if set (a positive integer), else
// 100 megapixels; set_max_image_pixels overrides both.
uint64_t max_image_pixels();
void set_max_image_pixels(uint64_t pixels);

enum class ImageRead {
  Rgb,        // 8-bit, 3 channels, RGB order
  Gray,       // 8-bit, 1 channel
  Unchanged,  // as stored (8 or 16 bit, 1-4 channels, OpenCV's BGR order)
};

// The file name extensions rsam reads as pictures (lower case, with the dot),
// and whether `path` has one of them (any case).
const std::vector<std::string>& image_extensions();
bool has_image_extension(const std::string& path);

// rsam::Error "cannot decode image 'NAME': reason" on any problem.
cv::Mat decode_image(const uint8_t* data, size_t size, ImageRead mode, const std::string& name);
cv::Mat read_image(const std::string& path, ImageRead mode);

// Encoded by the file name's extension (.png, .jpg, .bmp, ...; none: PNG).
// `rgb`: a 3-channel image is in RGB order (else OpenCV's BGR).
std::vector<uint8_t> encode_image(const cv::Mat& image, const std::string& path, bool rgb);
// Refuses, before any work, an output name no encoder takes, and for
// `lossless` outputs (masks) a lossy format such as .jpg, which would
// scramble the mask's values. No extension means PNG.
void check_image_name(const std::string& path, bool lossless);
// encode_image, then write_atomic.
void write_image(const std::string& path, const cv::Mat& image, bool rgb);

}  // namespace rsam::io
