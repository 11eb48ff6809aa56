// The DDPM noise schedule of a Stable Diffusion folder and GleSAM's
// one-step estimate of the clean latent.
#pragma once

#include <torch/torch.h>

#include "diffusion/config.h"

namespace rsam::diffusion {

// alphas_cumprod [num_train_timesteps] as diffusers' DDIMScheduler computes
// it: betas, 1 - betas and the cumulative product in float32 with the same
// torch ops (so the float32 values are bit-identical), then cast to float64
// as GleSAM stores them.
torch::Tensor alphas_cumprod(const SchedulerConfig& c);

// x0 = (x - sqrt(1 - a_t) * eps) / sqrt(a_t), a_t = alphas_cumprod[t], in
// float64 and returned as float32 (GleSAM's get_x0_from_noise). x, eps: [B,
// ...]; t: a scalar or [B] long; alphas_cumprod: float64.
torch::Tensor x0_from_eps(const torch::Tensor& x, const torch::Tensor& eps, const torch::Tensor& alphas_cumprod,
                          const torch::Tensor& t);
// The same estimate for a model trained with `prediction_type`: epsilon (as
// above), v_prediction (x0 = sqrt(a) x - sqrt(1 - a) v) or sample (x0 = the
// output). GleSAM treats every U-Net output as epsilon; this is for callers
// that follow the folder's declared type.
torch::Tensor x0_from_output(const torch::Tensor& x, const torch::Tensor& output, const torch::Tensor& alphas_cumprod,
                             const torch::Tensor& t, const std::string& prediction_type);

}  // namespace rsam::diffusion
