#include "app/image_io.h"

#include <cstring>

#include "io/image_codec.h"

namespace rsam::app {

Image8 read_rgb(const std::string& path) {
  const cv::Mat m = io::read_image(path, io::ImageRead::Rgb);
  Image8 out(m.cols, m.rows, 3);
  for (int y = 0; y < m.rows; ++y) std::memcpy(out.row(y), m.ptr(y), size_t(m.cols) * 3);
  return out;
}

void write_image(const std::string& path, const Image8& img) {
  const cv::Mat m(img.height, img.width, img.channels == 3 ? CV_8UC3 : CV_8UC1, const_cast<uint8_t*>(img.data.data()));
  io::write_image(path, m, img.channels == 3);
}

void write_mask_png(const std::string& path, const uint8_t* mask01, int w, int h) {
  io::check_image_name(path, /*lossless=*/true);
  cv::Mat m(h, w, CV_8UC1);
  for (int i = 0; i < w * h; ++i) m.data[i] = mask01[i] ? 255 : 0;
  io::write_image(path, m, false);
}

}  // namespace rsam::app
