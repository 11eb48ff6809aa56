#include "model/predictor.h"

#include "model/autocast.h"
#include "model/runtime.h"

#include <ATen/autocast_mode.h>

#include <algorithm>
#include <cmath>

#include "error.h"

namespace rsam {

using torch::Tensor;

Precision parse_precision(const std::string& s) {
  if (s == "fp32") return Precision::FP32;
  if (s == "bf16") return Precision::BF16;
  throw Error("unknown precision '" + s + "' (expected fp32 or bf16)");
}

Precision resolve_precision(const std::string& s, bool bf16_agrees) {
  if (s != "auto") return parse_precision(s);
  return bf16_agrees && cpu_bf16_support() == Bf16Support::Native ? Precision::BF16 : Precision::FP32;
}

const char* precision_name(Precision p) { return p == Precision::BF16 ? "bf16" : "fp32"; }

namespace {

bool finite(float v) { return std::isfinite(v); }

}  // namespace

SamPredictor::SamPredictor(Sam model, Precision precision, bool flip)
    : model_(std::move(model)), precision_(precision), flip_(flip) {
  if (!model_) throw Error("predictor needs a model");
  model_->eval();
}

Tensor SamPredictor::prepare_image(const Image8& rgb) const {
  if (rgb.channels != 3)
    throw Error("set_image expects an RGB image (3 channels), got " + std::to_string(rgb.channels));
  if (rgb.width <= 0 || rgb.height <= 0) throw Error("set_image: empty image");
  const int S = model_->config.img_size;
  const auto [nh, nw] = preprocess_shape(rgb.height, rgb.width, S);
  if (nh < 1 || nw < 1)
    throw Error("the image is " + std::to_string(rgb.width) + "x" + std::to_string(rgb.height) +
                ": too thin for the model's " + std::to_string(S) + "-pixel input (a side would be 0 pixels)");
  Image8 resized = resize_bilinear_pil(rgb, nw, nh);
  auto t = torch::from_blob(resized.data.data(), {nh, nw, 3}, torch::kUInt8)
               .permute({2, 0, 1})
               .contiguous()
               .unsqueeze(0)
               .to(torch::kFloat32);
  return t.to(model_->device());
}

Tensor SamPredictor::encode(const Tensor& preprocessed) const {
  torch::NoGradGuard ng;
  // The encoder is the only part run in bf16; the decoder stays fp32, which
  // is cheap and keeps the IoU head stable.
  Bf16Autocast ac(model_->device(), precision_ == Precision::BF16);
  return model_->image_encoder->forward(preprocessed).to(torch::kFloat32);
}

void SamPredictor::set_image(const Image8& rgb) {
  features_ = features_flipped_ = Tensor();
  cache_ = cache_flipped_ = DecoderImageCache();
  auto x = prepare_image(rgb);
  original_size_ = {rgb.height, rgb.width};
  input_size_ = {x.size(2), x.size(3)};
  torch::NoGradGuard ng;
  features_ = encode(model_->preprocess(x));
  // Mirrored before the padding, so both views are padded on the right. The
  // resize is symmetric, so this is the mirrored image resized.
  if (flip_) features_flipped_ = encode(model_->preprocess(x.flip({3})));
  if (hook_) {
    features_ = hook_(features_);
    if (features_flipped_.defined()) features_flipped_ = hook_(features_flipped_);
  }
  prepare_decoder();
}

void SamPredictor::prepare_decoder() {
  torch::NoGradGuard ng;
  dense_pe_ = model_->prompt_encoder->get_dense_pe();
  const Tensor no_mask = model_->prompt_encoder->forward(std::nullopt, std::nullopt, std::nullopt).second;
  cache_ = model_->mask_decoder->prepare(features_, dense_pe_, no_mask);
  cache_flipped_ = features_flipped_.defined() ? model_->mask_decoder->prepare(features_flipped_, dense_pe_, no_mask)
                                               : DecoderImageCache();
}

void SamPredictor::set_embedding(const Tensor& embedding, std::pair<int64_t, int64_t> original_size) {
  const auto& c = model_->config;
  const int64_t g = c.embedding_size();
  if (embedding.dim() != 4 || embedding.size(0) != 1 || embedding.size(1) != c.prompt_embed_dim ||
      embedding.size(2) != g || embedding.size(3) != g)
    throw Error("embedding must have shape [1, " + std::to_string(c.prompt_embed_dim) + ", " + std::to_string(g) +
                ", " + std::to_string(g) + "]");
  if (original_size.first <= 0 || original_size.second <= 0) throw Error("original size must be positive");
  const auto [nh, nw] = preprocess_shape(int(original_size.first), int(original_size.second), c.img_size);
  features_ = embedding.to(model_->device(), torch::kFloat32);
  features_flipped_ = Tensor();
  original_size_ = original_size;
  input_size_ = {nh, nw};
  prepare_decoder();
}

const Tensor& SamPredictor::embedding() const {
  if (!features_.defined()) throw Error("no image set: call set_image first");
  return features_;
}

void check_prompt(const Prompt& p, int w, int h, int64_t m) {
  if (p.points.size() != p.labels.size()) throw Error("each point needs a label");
  if (p.points.size() > kMaxPromptPoints)
    throw Error(std::to_string(p.points.size()) + " points in one prompt: at most " + std::to_string(kMaxPromptPoints));
  for (size_t i = 0; i < p.points.size(); ++i) {
    const float x = p.points[i][0], y = p.points[i][1];
    if (!finite(x) || !finite(y)) throw Error("point " + std::to_string(i) + " is not a finite number");
    if (x < 0 || y < 0 || x > w || y > h)
      throw Error("point (" + std::to_string(x) + ", " + std::to_string(y) + ") is outside the " + std::to_string(w) +
                  "x" + std::to_string(h) + " image");
    if (p.labels[i] != 0 && p.labels[i] != 1 && p.labels[i] != -1)
      throw Error("point label must be 1 (foreground) or 0 (background), got " + std::to_string(p.labels[i]));
  }
  if (p.box) {
    const auto& b = *p.box;
    for (float v : b)
      if (!finite(v)) throw Error("box holds a non-finite number");
    if (b[2] < b[0] || b[3] < b[1]) throw Error("box must be x0,y0,x1,y1 with x0<=x1 and y0<=y1");
    if (b[0] < 0 || b[1] < 0 || b[2] > w || b[3] > h)
      throw Error("box is outside the " + std::to_string(w) + "x" + std::to_string(h) + " image");
  }
  if (p.mask_input.defined()) {
    if (m > 0 && (p.mask_input.dim() != 3 || p.mask_input.size(0) != 1 || p.mask_input.size(1) != m ||
                  p.mask_input.size(2) != m))
      throw Error("mask input must have shape [1, " + std::to_string(m) + ", " + std::to_string(m) + "]");
    if (!torch::isfinite(p.mask_input).all().item<bool>()) throw Error("mask input holds NaN or Inf");
  }
  if (p.points.empty() && !p.box && !p.mask_input.defined())
    throw Error("give at least one prompt: a point, a box or a mask input");
}

void SamPredictor::check_prompt(const Prompt& p) const {
  rsam::check_prompt(p, original_size_.second, original_size_.first, 4 * model_->config.embedding_size());
}

Prediction SamPredictor::predict(const Prompt& p, bool multimask_output, bool return_logits) const {
  auto r = finish(decode_prompt(p, multimask_output), return_logits);
  return {r.masks[0], r.iou_predictions[0], r.low_res_logits[0]};
}

SamPredictor::LowRes SamPredictor::decode_prompt(const Prompt& p, bool multimask_output) const {
  embedding();  // throws when no image is set
  check_prompt(p);
  const auto [oh, ow] = original_size_;
  const auto [ih, iw] = input_size_;
  const auto dev = model_->device();
  // apply_coords: numpy float64 scaling, then float32 (as the reference).
  const double sx = double(iw) / double(ow), sy = double(ih) / double(oh);
  Tensor pts, labels, boxes, masks;
  if (!p.points.empty()) {
    std::vector<float> xy;
    for (const auto& q : p.points) {
      xy.push_back(float(double(q[0]) * sx));
      xy.push_back(float(double(q[1]) * sy));
    }
    pts = torch::tensor(xy).view({1, int64_t(p.points.size()), 2}).to(dev);
    labels = torch::tensor(p.labels, torch::kInt32).view({1, -1}).to(dev);
  }
  if (p.box) {
    const auto& b = *p.box;
    boxes = torch::tensor({float(double(b[0]) * sx), float(double(b[1]) * sy), float(double(b[2]) * sx),
                           float(double(b[3]) * sy)})
                .view({1, 4})
                .to(dev);
  }
  if (p.mask_input.defined()) masks = p.mask_input.to(dev, torch::kFloat32).unsqueeze(0);
  return decode_scaled(pts, labels, boxes, masks, multimask_output);
}

bool is_ambiguous(const Prompt& p) { return p.points.size() == 1 && !p.box && !p.mask_input.defined(); }

Pick parse_pick(const std::string& s) {
  if (s == "score") return Pick::Score;
  if (s == "stability") return Pick::Stability;
  throw Error("pick: expected 'score' or 'stability', got '" + s + "'");
}

const char* pick_name(Pick p) { return p == Pick::Stability ? "stability" : "score"; }

Tensor stability_scores(const Tensor& logits, float offset) {
  if (!logits.defined() || logits.dim() != 3) throw Error("stability_scores: expected logits [M, h, w]");
  const auto l = logits.flatten(1);
  const auto inner = l.gt(offset).sum(1).to(torch::kFloat32);
  const auto outer = l.gt(-offset).sum(1).to(torch::kFloat32);
  // inner <= outer, so an empty union means an empty mask: 0, not NaN.
  return torch::where(outer > 0, inner / outer.clamp_min(1), torch::zeros_like(outer));
}

int64_t best_index(const Prediction& r, Pick pick) {
  // argmax returns the first of equal values (the decoder's order).
  const Tensor v = pick == Pick::Score ? r.iou_predictions : stability_scores(r.low_res_logits);
  return v.argmax().item<int64_t>();
}

Prediction best_of(const Prediction& r, Pick pick) {
  const int64_t k = best_index(r, pick);
  return {r.masks.narrow(0, k, 1), r.iou_predictions.narrow(0, k, 1), r.low_res_logits.narrow(0, k, 1)};
}

Prediction SamPredictor::predict_one(const Prompt& p, bool return_logits, Pick pick) const {
  if (!is_ambiguous(p)) return predict(p, false, return_logits);
  if (reference_decoder()) return best_of(predict(p, true, return_logits), pick);
  // Picked on the low-res logits and scores, so only the picked mask is
  // brought to full resolution (each mask is upsampled on its own: the
  // same values as upsampling all three and keeping one).
  const LowRes d = decode_prompt(p, true);
  const auto [low, iou] = combined(d);
  const int64_t k = best_index({Tensor(), iou[0], low[0]}, pick);
  auto r = finish(d.narrow(1, k, 1), return_logits);
  return {r.masks[0], r.iou_predictions[0], r.low_res_logits[0]};
}

SamPredictor::LowRes SamPredictor::LowRes::narrow(int64_t dim, int64_t start, int64_t length) const {
  auto n = [&](const Tensor& t) { return t.defined() ? t.narrow(dim, start, length) : t; };
  return {n(low_res), n(iou), n(flow), n(fiou)};
}

Prediction SamPredictor::refine(const Prompt& prompt, const Prediction& picked, int rounds, bool return_logits) const {
  if (rounds < 0) throw Error("refine: rounds must be >= 0");
  if (!picked.low_res_logits.defined() || picked.low_res_logits.dim() != 3 || picked.low_res_logits.size(0) != 1)
    throw Error("refine: needs a one-mask prediction (predict_one's, or best_of's)");
  Prediction r = picked;
  for (int i = 0; i < rounds; ++i) {
    Prompt q = prompt;
    q.mask_input = r.low_res_logits;  // [1, 4h, 4w]: the mask-input shape
    r = predict(q, false, return_logits);
  }
  return r;
}

Prediction SamPredictor::predict_batch(const Tensor& points, const Tensor& labels, const Tensor& boxes,
                                       const Tensor& mask_input, bool multimask_output, bool return_logits) const {
  embedding();
  const auto [oh, ow] = original_size_;
  const auto [ih, iw] = input_size_;
  const auto dev = model_->device();
  Tensor pts, bxs;
  if (points.defined()) {
    if (!labels.defined() || points.dim() != 3 || points.size(2) != 2 || labels.dim() != 2 ||
        labels.size(0) != points.size(0) || labels.size(1) != points.size(1))
      throw Error("batched points must be [N,K,2] with labels [N,K]");
    if (!torch::isfinite(points).all().item<bool>()) throw Error("points hold NaN or Inf");
    pts = points.to(dev, torch::kFloat64).clone();
    pts.select(2, 0).mul_(double(iw) / double(ow));
    pts.select(2, 1).mul_(double(ih) / double(oh));
    pts = pts.to(torch::kFloat32);
  }
  if (boxes.defined()) {
    if (boxes.dim() != 2 || boxes.size(1) != 4) throw Error("batched boxes must be [N,4]");
    if (!torch::isfinite(boxes).all().item<bool>()) throw Error("boxes hold NaN or Inf");
    bxs = boxes.to(dev, torch::kFloat64).reshape({-1, 2, 2}).clone();
    bxs.select(2, 0).mul_(double(iw) / double(ow));
    bxs.select(2, 1).mul_(double(ih) / double(oh));
    bxs = bxs.reshape({-1, 4}).to(torch::kFloat32);
  }
  return predict_batch_scaled(pts, labels.defined() ? labels.to(dev, torch::kInt32) : labels, bxs,
                              mask_input.defined() ? mask_input.to(dev, torch::kFloat32) : mask_input, multimask_output,
                              return_logits);
}

Prediction SamPredictor::predict_batch_scaled(const Tensor& pts, const Tensor& labels, const Tensor& boxes,
                                              const Tensor& masks, bool multimask_output, bool return_logits) const {
  return finish(decode_scaled(pts, labels, boxes, masks, multimask_output), return_logits);
}

SamPredictor::LowRes SamPredictor::decode_scaled(const Tensor& pts, const Tensor& labels, const Tensor& boxes,
                                                 const Tensor& masks, bool multimask_output) const {
  torch::NoGradGuard ng;
  std::optional<std::pair<Tensor, Tensor>> points;
  if (pts.defined()) points = std::make_pair(pts, labels);
  std::optional<Tensor> b, m;
  if (boxes.defined()) b = boxes;
  if (masks.defined()) m = masks;
  if (points && b && points->first.size(0) != b->size(0)) throw Error("batched points and boxes must have the same N");
  const Tensor pe = dense_pe_.defined() ? dense_pe_ : model_->prompt_encoder->get_dense_pe();
  LowRes d;
  auto [sparse, dense] = model_->prompt_encoder->forward(points, b, m);
  // The image-only terms hold while no mask input changes the dense embedding.
  std::tie(d.low_res, d.iou) = model_->mask_decoder->forward(features_, pe, sparse, dense, multimask_output,
                                                             m || !cache_.defined() ? nullptr : &cache_);
  if (features_flipped_.defined()) {
    // The mirrored view: a pixel column x of the resized input is iw-1-x
    // there (SAM adds 0.5 to reach the pixel's center), a box's corners swap.
    const double last = double(input_size_.second - 1);
    std::optional<std::pair<Tensor, Tensor>> fpoints;
    std::optional<Tensor> fb, fm;
    if (points) {
      Tensor q = points->first.clone();
      q.select(2, 0).mul_(-1).add_(last);
      fpoints = std::make_pair(q, points->second);
    }
    if (b) {
      Tensor x0 = b->select(1, 0), x1 = b->select(1, 2);
      fb = torch::stack({last - x1, b->select(1, 1), last - x0, b->select(1, 3)}, 1);
    }
    if (m) fm = flip_low_res(*m);
    auto [fsparse, fdense] = model_->prompt_encoder->forward(fpoints, fb, fm);
    std::tie(d.flow, d.fiou) =
        model_->mask_decoder->forward(features_flipped_, pe, fsparse, fdense, multimask_output,
                                      fm || !cache_flipped_.defined() ? nullptr : &cache_flipped_);
  }
  return d;
}

std::pair<Tensor, Tensor> SamPredictor::combined(const LowRes& d) const {
  if (!d.flow.defined()) return {d.low_res, d.iou};
  return {0.5 * (d.low_res + flip_low_res(d.flow)), 0.5 * (d.iou + d.fiou)};
}

Prediction SamPredictor::finish(const LowRes& d, bool return_logits) const {
  torch::NoGradGuard ng;
  auto up = model_->postprocess_masks(d.low_res, input_size_, original_size_);
  // At the original size the mirror is exact; the low-res one is for mask
  // inputs and stability only.
  if (d.flow.defined()) up = 0.5 * (up + model_->postprocess_masks(d.flow, input_size_, original_size_).flip({-1}));
  Prediction out;
  std::tie(out.low_res_logits, out.iou_predictions) = combined(d);
  out.masks = return_logits ? up : up > 0.0;
  return out;
}

Tensor SamPredictor::flip_low_res(const Tensor& t) const {
  const int64_t side = t.size(-1);
  const int64_t w = std::min<int64_t>(
      side, std::max<int64_t>(1, std::llround(double(input_size_.second) * side / model_->config.img_size)));
  if (w == side) return t.flip({-1});
  return torch::cat({t.narrow(-1, 0, w).flip({-1}), t.narrow(-1, w, side - w)}, -1);
}

}  // namespace rsam
