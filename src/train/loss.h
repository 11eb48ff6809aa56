// SAM's training objective (as RobustSAM and GaRA-SAM train it):
// 20 x sigmoid focal loss (gamma 2, alpha 0.25) + dice loss on the mask
// logits, plus the MSE between the predicted IoU and the IoU the predicted
// mask actually reaches.
#pragma once

#include <torch/torch.h>

namespace rsam::train {

// logits, targets: [N, H, W] (targets soft in 0..1). Mean over pixels, per sample [N].
torch::Tensor sigmoid_focal_loss(const torch::Tensor& logits, const torch::Tensor& targets, double alpha = 0.25,
                                 double gamma = 2.0);
// 1 - (2 sum(p t) + 1) / (sum p + sum t + 1), per sample [N].
torch::Tensor dice_loss(const torch::Tensor& logits, const torch::Tensor& targets);
// IoU of (logits > 0) against (targets > 0.5), per sample [N], no gradient.
torch::Tensor mask_iou(const torch::Tensor& logits, const torch::Tensor& targets);
// The same as the predictor measures it: logits [N, h, w] upsampled
// (bilinear) to the square input frame [size, size], then cropped to the
// image's part of it, the top-left [H, W] of targets.
torch::Tensor upsampled_mask_iou(const torch::Tensor& logits, const torch::Tensor& targets, int64_t size);

struct LossParts {
  torch::Tensor total;  // scalar
  double focal = 0, dice = 0, iou_mse = 0, iou_rank = 0;
  int64_t best = 0;  // the candidate whose mask was trained
};

struct LossOptions {
  double focal_weight = 20.0;
  double rank_weight = 0.0;  // > 0 adds iou_rank_loss over the candidates
  int64_t input_size = 0;    // the model's square input side, needed with an iou_target
};

// logits [M, H, W] candidates (M = 1, or 3 for an ambiguous single point:
// the best candidate's mask is the one trained, as in SAM; every candidate's
// predicted IoU is regressed to its actual IoU), iou_pred [M], target [H, W].
// iou_target, if defined, is the mask at input resolution without the padding
// [H, W] (> 0.5 = object): the actual IoUs are then measured there, on the
// logits upsampled and cropped as the predictor does, i.e. as evaluation
// measures them. On a
// coarse grid (64² for a 256² input) the low-res IoU of a small object is far
// below what the user gets, and a head trained on it under-scores small masks.
LossParts sam_loss(const torch::Tensor& logits, const torch::Tensor& iou_pred, const torch::Tensor& target,
                   const torch::Tensor& iou_target = {}, const LossOptions& opts = {});

// Ranking term for the predicted IoUs of M candidates whose actual IoUs are
// `actual` [M]: sum over pairs with actual_i > actual_j of
// (actual_i - actual_j) * softplus(-(pred_i - pred_j) / tau). Each wrongly
// ordered pair costs in proportion to the IoU lost by picking the worse one;
// the MSE alone regresses each score on its own and leaves close candidates
// mis-ordered.
torch::Tensor iou_rank_loss(const torch::Tensor& iou_pred, const torch::Tensor& actual, double tau = 0.05);

}  // namespace rsam::train
