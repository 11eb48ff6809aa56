// Reading and writing pictures for the CLI (OpenCV codecs), always RGB in
// memory, always written atomically.
#pragma once

#include <string>

#include "model/image.h"

namespace rsam::app {

Image8 read_rgb(const std::string& path);  // rsam::Error if missing/undecodable
// Writes by extension (.png, .jpg, ...; none: PNG) via temp file + rename.
void write_image(const std::string& path, const Image8& img);
// 0/255 single-channel mask from a bool mask [H, W] stored row-major; a
// lossy name (.jpg) is refused.
void write_mask_png(const std::string& path, const uint8_t* mask01, int w, int h);

}  // namespace rsam::app
