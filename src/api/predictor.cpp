// rsam::Predictor: the public face of SamPredictor (model/predictor.h),
// converting plain buffers to tensors and back.
#include <algorithm>
#include <cstring>

#include "api/impl.h"
#include "model/image.h"

namespace rsam {

struct Predictor::Impl {
  std::shared_ptr<Model::Impl> model;
  std::optional<SamPredictor> pred;  // set while an image is set

  const SamPredictor& ready() const {
    if (!pred) throw Error("no image set: call set_image first");
    return *pred;
  }
  int low_res_size() const { return 4 * model->stack.sam->config.embedding_size(); }
};

namespace {

Prompt to_internal(const SegmentPrompt& s, int low_res) {
  Prompt p;
  for (const auto& q : s.points) {
    p.points.push_back({q.x, q.y});
    p.labels.push_back(q.label);
  }
  if (s.box) p.box = std::array<float, 4>{s.box->x0, s.box->y0, s.box->x1, s.box->y1};
  if (!s.mask_input.empty()) {
    const size_t need = size_t(low_res) * size_t(low_res);
    if (s.mask_input.size() != need)
      throw Error("mask input must hold " + std::to_string(low_res) + "x" + std::to_string(low_res) + " = " +
                  std::to_string(need) + " values, got " + std::to_string(s.mask_input.size()));
    p.mask_input = torch::tensor(s.mask_input).view({1, low_res, low_res});
  }
  return p;
}

template <class T>
std::vector<T> to_vector(const torch::Tensor& t) {
  auto c = t.detach().to(torch::kCPU).contiguous();
  return std::vector<T>(c.data_ptr<T>(), c.data_ptr<T>() + c.numel());
}

// One prompt's output: masks [M, H, W] (bool, or float logits), iou [M], low-res [M, s, s].
Masks to_public(const torch::Tensor& masks, const torch::Tensor& iou, const torch::Tensor& low_res, bool logits) {
  Masks m;
  m.count = int(masks.size(0));
  m.height = int(masks.size(1));
  m.width = int(masks.size(2));
  // The official predictor thresholds logits at mask_threshold = 0.
  m.masks = to_vector<uint8_t>((logits ? masks > 0 : masks).to(torch::kUInt8));
  if (logits) m.logits = to_vector<float>(masks.to(torch::kFloat32));
  m.scores = to_vector<float>(iou.to(torch::kFloat32));
  m.low_res_size = int(low_res.size(-1));
  m.low_res_logits = to_vector<float>(low_res.to(torch::kFloat32));
  return m;
}

// Prompts the decoder can take as one batch: same point count, and boxes and
// mask inputs in all of them or none.
bool same_shape(const std::vector<SegmentPrompt>& ps) {
  for (const auto& p : ps)
    if (p.points.size() != ps[0].points.size() || p.box.has_value() != ps[0].box.has_value() ||
        p.mask_input.empty() != ps[0].mask_input.empty())
      return false;
  return true;
}

}  // namespace

int Masks::best() const {
  return int(std::max_element(scores.begin(), scores.end()) - scores.begin());
}

Predictor::Predictor(const Model& model) : impl_(std::make_unique<Impl>()) { impl_->model = model.impl_; }
Predictor::~Predictor() = default;
Predictor::Predictor(Predictor&&) noexcept = default;
Predictor& Predictor::operator=(Predictor&&) noexcept = default;

void Predictor::set_image(const uint8_t* rgb, int width, int height, size_t stride) {
  api::guarded([&] {
    if (!rgb || width <= 0 || height <= 0)
      throw Error("set_image: empty image (" + std::to_string(width) + "x" + std::to_string(height) + ")");
    if (stride == 0) stride = size_t(width) * 3;
    if (stride < size_t(width) * 3) throw Error("set_image: row stride is shorter than width * 3 bytes");
    const Image8 img = image8_from_rows(rgb, width, height, stride);
    impl_->pred.reset();
    // A new SamPredictor each image: it then runs the model as it is now,
    // with an adapter loaded since the last image.
    SamPredictor p = impl_->model->predictor();
    p.set_image(img);
    impl_->pred.emplace(std::move(p));
  });
}

void Predictor::set_image(const Image& rgb) {
  if (rgb.data.size() != size_t(rgb.width) * size_t(rgb.height) * 3 || rgb.width <= 0 || rgb.height <= 0)
    throw Error("set_image: an RGB image of " + std::to_string(rgb.width) + "x" + std::to_string(rgb.height) +
                " needs " + std::to_string(size_t(std::max(rgb.width, 0)) * size_t(std::max(rgb.height, 0)) * 3) +
                " bytes, got " + std::to_string(rgb.data.size()));
  set_image(rgb.data.data(), rgb.width, rgb.height);
}

void Predictor::reset_image() { impl_->pred.reset(); }
bool Predictor::is_image_set() const { return impl_->pred.has_value(); }
int Predictor::original_width() const { return int(impl_->ready().original_size().second); }
int Predictor::original_height() const { return int(impl_->ready().original_size().first); }
int Predictor::low_res_size() const { return impl_->low_res_size(); }

Masks Predictor::predict(const SegmentPrompt& prompt, bool multimask_output, bool return_logits) const {
  return api::guarded([&] {
    const auto& pred = impl_->ready();
    const auto r = pred.predict(to_internal(prompt, impl_->low_res_size()), multimask_output, return_logits);
    return to_public(r.masks, r.iou_predictions, r.low_res_logits, return_logits);
  });
}

std::vector<Masks> Predictor::predict_batch(const std::vector<SegmentPrompt>& prompts, bool multimask_output,
                                            bool return_logits) const {
  return api::guarded([&] {
    const auto& pred = impl_->ready();
    std::vector<Masks> out;
    if (prompts.empty()) return out;
    const int s = impl_->low_res_size();
    std::vector<Prompt> ps;
    for (const auto& p : prompts) {
      ps.push_back(to_internal(p, s));
      // predict_batch takes tensors as given: the per-prompt checks here.
      check_prompt(ps.back(), original_width(), original_height(), s);
    }
    if (!same_shape(prompts)) {
      for (const auto& p : ps) {
        const auto r = pred.predict(p, multimask_output, return_logits);
        out.push_back(to_public(r.masks, r.iou_predictions, r.low_res_logits, return_logits));
      }
      return out;
    }
    torch::Tensor points, labels, boxes, masks;
    const int64_t n = int64_t(ps.size()), k = int64_t(ps[0].points.size());
    if (k > 0) {
      std::vector<float> xy;
      std::vector<int> lab;
      for (const auto& p : ps)
        for (int64_t j = 0; j < k; ++j) {
          xy.insert(xy.end(), {p.points[j][0], p.points[j][1]});
          lab.push_back(p.labels[j]);
        }
      points = torch::tensor(xy).view({n, k, 2});
      labels = torch::tensor(lab, torch::kInt32).view({n, k});
    }
    if (ps[0].box) {
      std::vector<float> b;
      for (const auto& p : ps) b.insert(b.end(), p.box->begin(), p.box->end());
      boxes = torch::tensor(b).view({n, 4});
    }
    if (ps[0].mask_input.defined()) {
      std::vector<torch::Tensor> ms;
      for (const auto& p : ps) ms.push_back(p.mask_input);
      masks = torch::stack(ms);  // [N, 1, s, s]
    }
    const auto r = pred.predict_batch(points, labels, boxes, masks, multimask_output, return_logits);
    for (int64_t i = 0; i < n; ++i)
      out.push_back(to_public(r.masks[i], r.iou_predictions[i], r.low_res_logits[i], return_logits));
    return out;
  });
}

Embedding Predictor::get_image_embedding() const {
  return api::guarded([&] {
    const auto& e = impl_->ready().embedding();  // [1, C, h, w]
    Embedding out;
    out.channels = int(e.size(1));
    out.height = int(e.size(2));
    out.width = int(e.size(3));
    out.data = to_vector<float>(e.to(torch::kFloat32));
    return out;
  });
}

}  // namespace rsam
