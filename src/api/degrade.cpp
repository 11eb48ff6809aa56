// rsam::degrade_image and rsam::list_corruptions: the degradation registry
// (degrade/corruption.h) on plain RGB buffers.
#include <opencv2/core.hpp>

#include <cstring>

#include "degrade/corruption.h"
#include "error.h"
#define RSAM_ERROR_DEFINED
#include "rsam/rsam.h"

namespace rsam {

std::vector<CorruptionInfo> list_corruptions() {
  std::vector<CorruptionInfo> out;
  for (const auto& s : degrade::registry()) out.push_back({s.name, s.group, s.summary, s.geometric, s.stochastic});
  return out;
}

Image degrade_image(const Image& rgb, const std::string& corruption, int severity, uint64_t seed) {
  if (rgb.width <= 0 || rgb.height <= 0 || rgb.data.size() != size_t(rgb.width) * size_t(rgb.height) * 3)
    throw Error("degrade: expected an RGB image of width * height * 3 bytes, got " + std::to_string(rgb.width) + "x" +
                std::to_string(rgb.height) + " with " + std::to_string(rgb.data.size()) + " bytes");
  const auto c = degrade::create(corruption, severity);
  const cv::Mat in(rgb.height, rgb.width, CV_8UC3, const_cast<uint8_t*>(rgb.data.data()));
  cv::Mat res;
  try {
    res = c->run(in, seed).image;
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {  // OpenCV's, allocation: one line as every rsam error
    const std::string msg = e.what();
    throw Error("degrade: " + corruption + ": " + msg.substr(0, msg.find('\n')));
  }
  Image out;
  out.width = res.cols;
  out.height = res.rows;
  out.data.resize(size_t(res.cols) * size_t(res.rows) * 3);
  for (int y = 0; y < res.rows; ++y) std::memcpy(out.data.data() + size_t(y) * res.cols * 3, res.ptr(y), size_t(res.cols) * 3);
  return out;
}

}  // namespace rsam
