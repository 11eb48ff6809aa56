// Gradient checkpointing through GleSAM's U-Net (train::grad_checkpoint on
// its down, mid and up blocks, as `rsam train --grad-checkpoint` sets it):
// one training step with it gives the loss, the gradients and the updated
// weights of the plain backward pass.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "glesam/enhancer.h"
#include "train/trainer.h"

namespace rsam::glesam {
namespace {

using torch::Tensor;

struct StepResult {
  double loss = 0;
  std::vector<Tensor> grads, weights;
  int checkpointed = 0, block_runs = 0;  // blocks given to the checkpoint; their runs
};

// One Adam step of the fixture enhancer (its LoRA, or every U-Net weight
// as the prior trains) on the stage-1 loss MSE(x0(gamma z_L), gamma z_H).
StepResult one_step(bool checkpoint, bool all_weights, bool bf16) {
  EnhancerOptions eo;
  eo.channels = 32;  // tiny_a's embedding width
  Enhancer enh = Enhancer::load(std::string(RSAM_TEST_DATA) + "/glesam/enhancer.json", eo);
  StepResult r;
  // Counts the blocks and each run of one: a checkpointed block runs again
  // in the backward pass.
  if (checkpoint)
    enh.unet()->gradient_checkpointing = [&r](const auto& fn, const std::vector<Tensor>& in) {
      ++r.checkpointed;
      return train::grad_checkpoint(
          [fn, &r](const std::vector<Tensor>& x) {
            ++r.block_runs;
            return fn(x);
          },
          in);
    };
  std::vector<Tensor> params;
  for (const auto& p : enh.unet()->named_parameters())
    if (all_weights || p.key().find("lora_") != std::string::npos) params.push_back(p.value().set_requires_grad(true));
  torch::manual_seed(7);
  const Tensor z_low = torch::randn({2, 32, 8, 8}), z_high = torch::randn({2, 32, 8, 8});
  torch::optim::Adam opt(params, torch::optim::AdamOptions(1e-3));
  const Tensor loss = torch::mse_loss(enh.predict_x0(z_low * enh.gamma(), bf16), z_high * enh.gamma());
  loss.backward();
  r.loss = loss.item<double>();
  for (const auto& p : params) r.grads.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
  opt.step();
  for (const auto& p : params) r.weights.push_back(p.detach().clone());
  return r;
}

void expect_same_step(bool all_weights, bool bf16) {
  const StepResult plain = one_step(false, all_weights, bf16), ckpt = one_step(true, all_weights, bf16);
  EXPECT_EQ(plain.loss, ckpt.loss);
  ASSERT_EQ(plain.grads.size(), ckpt.grads.size());
  ASSERT_GT(plain.grads.size(), 10u);
  double norm = 0, diff = 0, moved = 0;
  for (size_t i = 0; i < plain.grads.size(); ++i) {
    norm = std::max(norm, plain.grads[i].abs().max().item<double>());
    diff = std::max(diff, (plain.grads[i] - ckpt.grads[i]).abs().max().item<double>());
    moved = std::max(moved, (plain.weights[i] - ckpt.weights[i]).abs().max().item<double>());
  }
  EXPECT_GT(norm, 0.0);
  EXPECT_EQ(plain.checkpointed, 0);
  EXPECT_GT(ckpt.checkpointed, 4);  // down, mid and up blocks
  EXPECT_EQ(ckpt.block_runs, 2 * ckpt.checkpointed);
  // Only the order in which a tensor's gradients add up may differ.
  EXPECT_LE(diff, 1e-5 * norm);
  EXPECT_LE(moved, 1e-6);
}

TEST(GlesamGradCheckpoint, LoraStepMatchesThePlainBackward) { expect_same_step(false, false); }

TEST(GlesamGradCheckpoint, WholeUNetStepMatchesThePlainBackward) { expect_same_step(true, false); }

TEST(GlesamGradCheckpoint, Bf16LoraStepMatchesThePlainBackward) { expect_same_step(false, true); }

}  // namespace
}  // namespace rsam::glesam
