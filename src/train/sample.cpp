// Loader items laid out as the model takes them (as the predictor lays out
// its input), the other objects of an image gathered beside them, and the
// corrective clicks of the interactive rounds.
#include <opencv2/imgproc.hpp>

#include <algorithm>

#include "degrade/rng.h"
#include "model/image.h"
#include "train/cv_tensor.h"
#include "train/trainer_internal.h"

namespace rsam::train {

using torch::Tensor;

namespace {

// Up to n other samples on the same image as `it`, drawn without
// replacement by a generator of (seed, the item's global position): the same
// on a resumed run.
std::vector<size_t> more_masks(const data::Dataset& ds, const data::Item& it, int n, uint64_t seed) {
  if (n <= 0) return {};
  std::vector<size_t> others;
  for (size_t j : ds.same_image(it.dataset_index))
    if (j != it.dataset_index) others.push_back(j);
  degrade::Rng rng(degrade::derive_seed(seed ^ 0x5a5a5a5aULL, it.index));
  const size_t take = std::min(others.size(), size_t(n));
  for (size_t k = 0; k < take; ++k)
    std::swap(others[k], others[k + size_t(rng.uniform_int(0, int(others.size() - k) - 1))]);
  others.resize(take);
  return others;
}

}  // namespace

Tensor model_input(const Sam& model, const cv::Mat& rgb) {
  const auto [nh, nw] = preprocess_shape(rgb.rows, rgb.cols, model->config.img_size);
  auto resized = resize_bilinear_pil(to_image8(rgb), nw, nh);
  auto t = torch::from_blob(resized.data.data(), {nh, nw, 3}, torch::kUInt8)
               .permute({2, 0, 1})
               .to(torch::kFloat32)
               .unsqueeze(0);
  return model->preprocess(t.to(model->device()))[0];
}

bool in_pieces(const cv::Mat& mask) {
  cv::Mat labels;
  return cv::connectedComponents(mask > 0, labels, 4, CV_32S) > 2;  // background + two parts
}

ModelSample to_model_sample(const Sam& model, const cv::Mat& rgb, const cv::Mat& mask01,
                            const data::SampledPrompt& prompt, bool with_image) {
  const auto& cfg = model->config;
  const int S = cfg.img_size, low = 4 * cfg.embedding_size();
  const int oh = rgb.rows, ow = rgb.cols;
  const auto [nh, nw] = preprocess_shape(oh, ow, S);
  ModelSample s;
  if (with_image) s.image = model_input(model, rgb);
  // Target: the mask laid out like the image, then averaged down to the
  // decoder's low-res grid (soft values at edges).
  cv::Mat m;
  mask01.convertTo(m, CV_32F);
  cv::resize(m, m, cv::Size(nw, nh), 0, 0, cv::INTER_LINEAR);
  cv::Mat padded = cv::Mat::zeros(S, S, CV_32F);
  m.copyTo(padded(cv::Rect(0, 0, nw, nh)));
  s.input_target =
      torch::from_blob(m.ptr<float>(), {nh, nw}, torch::kFloat32).gt(0.5).to(model->device(), torch::kUInt8);
  cv::resize(padded, padded, cv::Size(low, low), 0, 0, cv::INTER_AREA);
  s.target = torch::from_blob(padded.ptr<float>(), {low, low}, torch::kFloat32).clone().to(model->device());
  const double sx = double(nw) / ow, sy = double(nh) / oh;
  if (!prompt.points.empty()) {
    std::vector<float> xy;
    for (const auto& p : prompt.points) {
      xy.push_back(float(p.x * sx));
      xy.push_back(float(p.y * sy));
    }
    s.points = torch::tensor(xy).view({1, -1, 2}).to(model->device());
    s.labels = torch::tensor(prompt.labels, torch::kInt32).view({1, -1}).to(model->device());
    s.ambiguous = prompt.points.size() == 1 && !prompt.has_box;
  }
  s.pieces = in_pieces(mask01);
  if (prompt.has_box) {
    const auto& b = prompt.box;
    s.box = torch::tensor({float(b[0] * sx), float(b[1] * sy), float(b[2] * sx), float(b[3] * sy)})
                .view({1, 4})
                .to(model->device());
  }
  return s;
}

bool corrective_click(const Tensor& logits, const Tensor& target, int img_size, Click* out) {
  torch::NoGradGuard ng;
  const auto pred = logits.detach() > 0, obj = target > 0.5;
  const auto err = (pred ^ obj).flatten().nonzero();
  if (err.size(0) == 0) return false;
  const int64_t W = logits.size(1);
  const int64_t k = err[torch::randint(err.size(0), {1}, torch::kLong).item<int64_t>()][0].item<int64_t>();
  const double cell = double(img_size) / double(W);  // the low-res grid spans the padded input square
  out->x = float((double(k % W) + 0.5) * cell);
  out->y = float((double(k / W) + 0.5) * cell);
  out->label = obj.flatten()[k].item<bool>() ? 1 : 0;  // missed object -> positive; false mask -> negative
  return true;
}

namespace detail {

MicroBatch gather_samples(const Sam& model, const data::Dataset& ds, const data::Batch& batch, const TrainOptions& o,
                          const data::PromptSpec& prompt, int rank, int world, bool with_clean) {
  MicroBatch mb;
  for (size_t b = 0; b < batch.size(); ++b) {
    // Every rank reads the whole batch (so skips agree) and keeps its
    // share: together the ranks train on exactly one process's batch.
    if (int(b % size_t(world)) != rank) continue;
    const auto& it = batch[b];
    mb.samples.push_back(to_model_sample(model, it.image, it.sample.mask, it.prompt));
    mb.imgs.push_back(mb.samples.back().image);
    mb.image_of.push_back(int64_t(mb.imgs.size()) - 1);
    if (with_clean) mb.clean.push_back(it.corruption == "clean" ? mb.imgs.back() : model_input(model, it.sample.image));
    // More objects of the same image share its (expensive) encoding, as
    // SAM's own training decodes many masks per image.
    for (size_t j : more_masks(ds, it, o.masks_per_image - 1, o.seed)) {
      const cv::Mat m = ds.get_mask(j);
      if (m.size() != it.sample.mask.size() || cv::countNonZero(m) == 0) continue;
      const auto p = data::sample_prompt(m, prompt, o.seed, degrade::derive_seed(j, it.index));
      mb.samples.push_back(to_model_sample(model, it.image, m, p, /*with_image=*/false));
      mb.image_of.push_back(int64_t(mb.imgs.size()) - 1);
    }
  }
  return mb;
}

}  // namespace detail

}  // namespace rsam::train
