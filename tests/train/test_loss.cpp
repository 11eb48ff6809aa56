// SAM's training loss against hand-computed values: focal, dice, the IoU
// head's targets (at input resolution) and the ranking term.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>

#include "error.h"
#include "train_helpers.h"
#include "train/loss.h"

namespace fs = std::filesystem;
using namespace rsam_test;

TEST(Loss, FocalAndDiceMatchHandComputedValues) {
  // One pixel, logit 0 (p = 0.5), target 1: ce = ln 2, (1 - p_t)^2 = 0.25, alpha 0.25.
  auto focal = rsam::train::sigmoid_focal_loss(torch::zeros({1, 1, 1}), torch::ones({1, 1, 1}));
  EXPECT_NEAR(focal.item<double>(), 0.25 * 0.25 * std::log(2.0), 1e-6);
  // Target 0: alpha weight 0.75.
  auto focal0 = rsam::train::sigmoid_focal_loss(torch::zeros({1, 1, 1}), torch::zeros({1, 1, 1}));
  EXPECT_NEAR(focal0.item<double>(), 0.75 * 0.25 * std::log(2.0), 1e-6);
  // Dice: p = 0.5 everywhere on 4 pixels, target has 2 ones: 1 - (2*1 + 1)/(2 + 2 + 1) = 0.4.
  auto t = torch::tensor({1.f, 1.f, 0.f, 0.f}).view({1, 2, 2});
  EXPECT_NEAR(rsam::train::dice_loss(torch::zeros({1, 2, 2}), t).item<double>(), 0.4, 1e-6);
  // Confident and right: both near zero.
  auto big = (t * 2 - 1) * 20;
  EXPECT_LT(rsam::train::sigmoid_focal_loss(big, t).item<double>(), 1e-8);
  EXPECT_LT(rsam::train::dice_loss(big, t).item<double>(), 1e-3);
  EXPECT_FLOAT_EQ(rsam::train::mask_iou(big, t).item<float>(), 1.0f);
}

TEST(Loss, AmbiguousPromptsTrainTheBestCandidate) {
  auto t = torch::tensor({1.f, 1.f, 0.f, 0.f}).view({2, 2});
  auto good = (t * 2 - 1) * 10, bad = -good;
  auto logits = torch::stack({bad, good, torch::zeros({2, 2})});
  auto pred = torch::tensor({0.5f, 1.0f, 0.2f}).requires_grad_();
  auto parts = rsam::train::sam_loss(logits, pred, t);
  EXPECT_LT(parts.dice, 0.01);
  // Every candidate's score is supervised (it ranks them at inference):
  // actual IoUs 0, 1, 0 (empty mask) -> ((0.5)^2 + 0 + (0.2)^2) / 3.
  EXPECT_NEAR(parts.iou_mse, (0.25 + 0.04) / 3, 1e-6);
  parts.total.backward();
  EXPECT_NEAR(pred.grad()[0].item<float>(), 2 * 0.5f / 3, 1e-6);
  EXPECT_NEAR(pred.grad()[1].item<float>(), 0.0f, 1e-6);
  EXPECT_NEAR(pred.grad()[2].item<float>(), 2 * 0.2f / 3, 1e-6);
}

TEST(Loss, ScoresLearnTheIoUAtInputResolution) {
  // A 2x2 object inside one cell of a 4x4 grid over a 16x16 input: on the
  // grid its area-averaged target is 0.25 (background), so a mask of that
  // cell scores IoU 0 there. Upsampled (bilinear, half-pixel centres), the
  // positive logit covers the cell's 4x4 pixels but its corners (there the
  // cell weighs 0.625² < 1/2): 12 pixels around the object's 4, IoU 1/3.
  auto logits = torch::full({1, 4, 4}, -1.f);
  logits[0][1][2] = 1.f;
  auto input = torch::zeros({16, 16}, torch::kUInt8);
  input.slice(0, 5, 7).slice(1, 9, 11).fill_(1);
  auto low = torch::zeros({4, 4});
  low[1][2] = 0.25f;
  EXPECT_EQ(rsam::train::mask_iou(logits, low.unsqueeze(0)).item<float>(), 0.0f);
  EXPECT_FLOAT_EQ(rsam::train::upsampled_mask_iou(logits, input, 16).item<float>(), 1.0f / 3);
  auto pred = torch::zeros({1}).requires_grad_();
  const auto parts = rsam::train::sam_loss(logits, pred, low, input, {20.0, 0.0, 16});
  EXPECT_NEAR(parts.iou_mse, 1.0 / 9, 1e-6);
  EXPECT_NEAR(rsam::train::sam_loss(logits, pred, low).iou_mse, 0.0, 1e-9);
  // The padding is not part of the image: a mask that spills into it is
  // cropped away, as the predictor crops it (image 16 wide, 8 tall).
  auto spill = torch::full({1, 4, 4}, -1.f);
  spill[0][1][2] = 1.f;
  spill[0][3][0] = 1.f;  // the bottom row of cells is padding
  EXPECT_FLOAT_EQ(rsam::train::upsampled_mask_iou(spill, input.slice(0, 0, 8), 16).item<float>(), 1.0f / 3);
  EXPECT_LT(rsam::train::upsampled_mask_iou(spill, input, 16).item<float>(), 1.0f / 3);
  EXPECT_THROW(rsam::train::upsampled_mask_iou(spill, input, 8), rsam::Error);
}

TEST(Loss, RankingTermPushesTheBestCandidateUp) {
  // Actual IoUs 0, 1, 0.5 and equal scores: pairs (1,0), (1,2), (2,0) with
  // gaps 1, 0.5, 0.5, each softplus(0) = ln 2.
  const auto actual = torch::tensor({0.f, 1.f, 0.5f});
  auto pred = torch::full({3}, 0.5f).requires_grad_();
  auto rank = rsam::train::iou_rank_loss(pred, actual, 0.05);
  EXPECT_NEAR(rank.item<double>(), 2 * std::log(2.0), 1e-6);
  rank.backward();
  // d/dp_i of gap * softplus(-(p_i - p_j) / tau) at 0: -gap / (2 tau).
  EXPECT_NEAR(pred.grad()[1].item<float>(), -(1 + 0.5) * 10, 1e-4);
  EXPECT_NEAR(pred.grad()[0].item<float>(), (1 + 0.5) * 10, 1e-4);
  EXPECT_NEAR(pred.grad()[2].item<float>(), 0.0, 1e-4);
  // Ordered right by a wide margin: almost free. Equal actual IoUs: nothing to rank.
  EXPECT_LT(rsam::train::iou_rank_loss(actual * 2, actual, 0.05).item<double>(), 1e-6);
  EXPECT_EQ(rsam::train::iou_rank_loss(torch::tensor({0.9f, 0.1f}), torch::full({2}, 0.5f)).item<double>(), 0.0);

  // Inside sam_loss: added with its weight, reported, and only for several candidates.
  auto t = torch::tensor({1.f, 1.f, 0.f, 0.f}).view({2, 2});
  auto good = (t * 2 - 1) * 10;
  auto logits = torch::stack({-good, good, torch::zeros({2, 2})});
  const auto scores = torch::tensor({0.8f, 0.2f, 0.5f});
  const auto plain = rsam::train::sam_loss(logits, scores, t);
  const auto ranked = rsam::train::sam_loss(logits, scores, t, {}, {20.0, 2.0});
  const double expect = rsam::train::iou_rank_loss(scores, torch::tensor({0.f, 1.f, 0.f})).item<double>();
  EXPECT_GT(expect, 0.5);  // the right mask is ranked last
  EXPECT_NEAR(ranked.iou_rank, expect, 1e-6);
  EXPECT_NEAR(ranked.total.item<double>() - plain.total.item<double>(), 2 * expect, 1e-5);
  EXPECT_EQ(plain.iou_rank, 0.0);
  EXPECT_EQ(rsam::train::sam_loss(good.unsqueeze(0), torch::tensor({0.5f}), t, {}, {20.0, 2.0}).iou_rank, 0.0);
}
