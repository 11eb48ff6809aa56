#include "app/image_io.h"

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "error.h"
#include "io/fs.h"
#include "io/image_bytes.h"

namespace rsam::app {

Image8 read_rgb(const std::string& path) {
  const auto bytes = io::read_file(path);
  const std::string problem = io::image_bytes_problem(bytes.data(), bytes.size());
  if (!problem.empty()) throw Error("cannot decode image '" + path + "': " + problem);
  cv::Mat m;
  try {
    m = cv::imdecode(cv::Mat(1, int(bytes.size()), CV_8UC1, const_cast<uint8_t*>(bytes.data())),
                     cv::IMREAD_COLOR);
  } catch (const cv::Exception&) {
    m.release();
  }
  if (m.empty()) throw Error("cannot decode image '" + path + "'");
  cv::cvtColor(m, m, cv::COLOR_BGR2RGB);
  Image8 out(m.cols, m.rows, 3);
  for (int y = 0; y < m.rows; ++y) std::memcpy(out.row(y), m.ptr(y), size_t(m.cols) * 3);
  return out;
}

static std::string ext_of(const std::string& path) {
  const auto dot = path.rfind('.');
  return dot == std::string::npos ? std::string(".png") : path.substr(dot);
}

static void encode_and_write(const std::string& path, const cv::Mat& m) {
  std::vector<uint8_t> buf;
  bool ok = false;
  try {
    ok = cv::imencode(ext_of(path), m, buf);
  } catch (const cv::Exception&) {
    ok = false;
  }
  if (!ok) throw Error("cannot encode image for '" + path + "' (unknown extension?)");
  io::write_atomic(path, buf.data(), buf.size());
}

void write_image(const std::string& path, const Image8& img) {
  cv::Mat m(img.height, img.width, img.channels == 3 ? CV_8UC3 : CV_8UC1, const_cast<uint8_t*>(img.data.data()));
  cv::Mat bgr;
  if (img.channels == 3)
    cv::cvtColor(m, bgr, cv::COLOR_RGB2BGR);
  else
    bgr = m;
  encode_and_write(path, bgr);
}

void write_mask_png(const std::string& path, const uint8_t* mask01, int w, int h) {
  cv::Mat m(h, w, CV_8UC1);
  for (int i = 0; i < w * h; ++i) m.data[i] = mask01[i] ? 255 : 0;
  encode_and_write(path, m);
}

}  // namespace rsam::app
