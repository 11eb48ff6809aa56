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

struct LossParts {
  torch::Tensor total;  // scalar
  double focal = 0, dice = 0, iou_mse = 0;
  int64_t best = 0;  // the candidate whose mask was trained
};

// logits [M, H, W] candidates (M = 1, or 3 for an ambiguous single point:
// the best candidate's mask is the one trained, as in SAM; every candidate's
// predicted IoU is regressed to its actual IoU), iou_pred [M], target [H, W].
LossParts sam_loss(const torch::Tensor& logits, const torch::Tensor& iou_pred, const torch::Tensor& target,
                   double focal_weight = 20.0);

}  // namespace rsam::train
