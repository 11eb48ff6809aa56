// Image handling that must match the reference bit for bit: SAM's predictor
// resizes with PIL's antialiased bilinear filter (torchvision.resize on a PIL
// image), which quantizes to uint8 between its horizontal and vertical
// passes. OpenCV's INTER_LINEAR/INTER_AREA differ from it by several grey
// levels, so rsam carries its own port of that algorithm.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace rsam {

// Interleaved 8-bit image, row-major, `channels` values per pixel.
struct Image8 {
  int width = 0, height = 0, channels = 3;
  std::vector<uint8_t> data;
  Image8() = default;
  Image8(int w, int h, int c) : width(w), height(h), channels(c), data(size_t(w) * h * c) {}
  uint8_t* row(int y) { return data.data() + size_t(y) * width * channels; }
  const uint8_t* row(int y) const { return data.data() + size_t(y) * width * channels; }
};

// Copies interleaved 8-bit RGB rows (e.g. a cv::Mat's data/step) into an Image8.
Image8 image8_from_rows(const uint8_t* data, int width, int height, size_t row_step);

// PIL Image.resize(size, BILINEAR) for 8-bit images (Pillow's Resample.c
// semantics: separable, support scaled by the reduction factor, 22-bit fixed
// point coefficients, horizontal pass first with uint8 intermediate).
Image8 resize_bilinear_pil(const Image8& in, int out_w, int out_h);

// ResizeLongestSide.get_preprocess_shape: (new_h, new_w).
std::pair<int, int> preprocess_shape(int h, int w, int long_side);

}  // namespace rsam
