// rsam::AutomaticMaskGenerator: the official generator (amg/amg.h) on the
// public model, its records in the official output forms.
#include "amg/amg.h"

#include <cstring>

#include "amg/output.h"
#include "api/impl.h"
#include "data/rle.h"

namespace rsam {

struct AutomaticMaskGenerator::Impl {
  std::shared_ptr<Model::Impl> model;
  amg::AmgOptions options;
};

namespace {

amg::AmgOptions to_internal(const AutoMaskOptions& o) {
  amg::AmgOptions a;
  static_cast<AutoMaskArguments&>(a) = o;  // one definition of the official arguments
  a.output_mode = amg::parse_output_mode(o.output_mode);
  amg::check_options(a);
  return a;
}

AutoMask to_public(const amg::MaskRecord& r, amg::OutputMode mode) {
  AutoMask m;
  m.height = r.rle.h;
  m.width = r.rle.w;
  if (mode == amg::OutputMode::BinaryMask) {
    const cv::Mat mask = amg::record_mask(r);  // CV_8U, 0 or 1
    m.segmentation.resize(size_t(mask.rows) * size_t(mask.cols));
    for (int y = 0; y < mask.rows; ++y) std::memcpy(m.segmentation.data() + size_t(y) * mask.cols, mask.ptr(y), mask.cols);
  } else if (mode == amg::OutputMode::UncompressedRle) {
    m.rle_counts = r.rle.counts;
  } else {
    m.coco_counts = data::rle_to_string(r.rle);
  }
  m.area = r.area;
  m.bbox = r.bbox;
  m.predicted_iou = r.predicted_iou;
  m.point_coords = r.point_coords;
  m.stability_score = r.stability_score;
  m.crop_box = r.crop_box;
  return m;
}

}  // namespace

AutomaticMaskGenerator::AutomaticMaskGenerator(const Model& model, const AutoMaskOptions& options)
    : impl_(std::make_unique<Impl>()) {
  impl_->model = model.impl_;
  impl_->options = api::guarded([&] { return to_internal(options); });
}
AutomaticMaskGenerator::~AutomaticMaskGenerator() = default;
AutomaticMaskGenerator::AutomaticMaskGenerator(AutomaticMaskGenerator&&) noexcept = default;
AutomaticMaskGenerator& AutomaticMaskGenerator::operator=(AutomaticMaskGenerator&&) noexcept = default;

std::vector<AutoMask> AutomaticMaskGenerator::generate(const Image& rgb) const {
  return api::guarded([&] {
    if (rgb.width <= 0 || rgb.height <= 0 || rgb.data.size() != size_t(rgb.width) * size_t(rgb.height) * 3)
      throw Error("generate: expected an RGB image of width * height * 3 bytes, got " + std::to_string(rgb.width) +
                  "x" + std::to_string(rgb.height) + " with " + std::to_string(rgb.data.size()) + " bytes");
    Image8 img(rgb.width, rgb.height, 3);
    img.data = rgb.data;
    // The enhancer, attached to the predictor, restores every crop's embedding.
    SamPredictor pred = impl_->model->predictor();
    std::vector<AutoMask> out;
    for (const auto& r : amg::generate(pred, img, impl_->options)) out.push_back(to_public(r, impl_->options.output_mode));
    return out;
  });
}

}  // namespace rsam
