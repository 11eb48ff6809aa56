#include "train/loss.h"

#include "error.h"

namespace rsam::train {

using torch::Tensor;

Tensor sigmoid_focal_loss(const Tensor& logits, const Tensor& targets, double alpha, double gamma) {
  auto p = torch::sigmoid(logits);
  auto ce = torch::binary_cross_entropy_with_logits(logits, targets, {}, {}, at::Reduction::None);
  auto p_t = p * targets + (1 - p) * (1 - targets);
  auto loss = ce * (1 - p_t).pow(gamma);
  if (alpha >= 0) loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss;
  return loss.flatten(1).mean(1);
}

Tensor dice_loss(const Tensor& logits, const Tensor& targets) {
  auto p = torch::sigmoid(logits).flatten(1);
  auto t = targets.flatten(1);
  return 1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1);
}

Tensor mask_iou(const Tensor& logits, const Tensor& targets) {
  torch::NoGradGuard ng;
  auto p = (logits > 0).flatten(1);
  auto t = (targets > 0.5).flatten(1);
  auto inter = (p & t).sum(1).to(torch::kFloat32);
  auto uni = (p | t).sum(1).to(torch::kFloat32);
  return torch::where(uni > 0, inter / uni.clamp_min(1), torch::ones_like(uni));
}

Tensor upsampled_mask_iou(const Tensor& logits, const Tensor& targets, int64_t size) {
  torch::NoGradGuard ng;
  namespace F = torch::nn::functional;
  const int64_t h = targets.size(-2), w = targets.size(-1);
  if (size < h || size < w) throw Error("upsampled_mask_iou: target larger than the input frame");
  auto up = F::interpolate(logits.unsqueeze(0), F::InterpolateFuncOptions()
                                                    .size(std::vector<int64_t>{size, size})
                                                    .mode(torch::kBilinear)
                                                    .align_corners(false))[0]
                .slice(1, 0, h)
                .slice(2, 0, w);
  return mask_iou(up, targets.unsqueeze(0).expand_as(up));
}

Tensor iou_rank_loss(const Tensor& iou_pred, const Tensor& actual, double tau) {
  auto gap = (actual.unsqueeze(1) - actual.unsqueeze(0)).clamp_min(0);  // [i, j]: actual_i - actual_j if > 0
  auto margin = (iou_pred.unsqueeze(1) - iou_pred.unsqueeze(0)) / tau;
  return (gap * torch::softplus(-margin)).sum();
}

LossParts sam_loss(const Tensor& logits_in, const Tensor& iou_pred_in, const Tensor& target_in,
                   const Tensor& iou_target, const LossOptions& opts) {
  auto logits = logits_in.to(torch::kFloat32);
  auto iou_pred = iou_pred_in.to(torch::kFloat32);
  auto target = target_in.to(torch::kFloat32).unsqueeze(0).expand_as(logits);
  auto focal = sigmoid_focal_loss(logits, target);
  auto dice = dice_loss(logits, target);
  auto seg = opts.focal_weight * focal + dice;  // [M]
  auto best = seg.argmin().item<int64_t>();
  // Every candidate's IoU is supervised, not only the trained one's: at
  // inference the predicted IoU ranks the three candidates, and a head that
  // only ever saw the best one ranks them at random (on rsam-tiny, one point:
  // 0.41 picked by score vs 0.48 for the best of three).
  auto actual =
      iou_target.defined() ? upsampled_mask_iou(logits, iou_target, opts.input_size) : mask_iou(logits, target);
  auto iou_mse = (iou_pred - actual).pow(2).mean();
  LossParts out;
  out.total = seg[best] + iou_mse;
  if (opts.rank_weight > 0 && iou_pred.size(0) > 1) {
    auto rank = iou_rank_loss(iou_pred, actual);
    out.total = out.total + opts.rank_weight * rank;
    out.iou_rank = rank.item<double>();
  }
  out.focal = focal[best].item<double>();
  out.dice = dice[best].item<double>();
  out.iou_mse = iou_mse.item<double>();
  out.best = best;
  return out;
}

}  // namespace rsam::train
