// The miniature's U-Net prior (issue 40, docs/glesam.md): no Stable
// Diffusion weights can be downloaded here, so rsam pre-trains a small
// SD-2-style U-Net itself, as an epsilon-prediction DDPM on 4-channel
// latents made from a SAM's image embeddings, and writes it as a diffusers
// Stable Diffusion folder that an enhancer JSON loads with CRE exactly as a
// real one.
//
// The latent of an embedding z [B, C, h, w]: channel j is the mean of the
// channels c with c mod 4 == j (the channels CRE's tiling feeds through the
// pretrained input channel j), divided by a scale that gives the training
// latents unit mean square.
#pragma once

#include <torch/torch.h>

#include <string>

#include "diffusion/unet.h"

namespace rsam::glesam {

// z [B, C, h, w] (C a positive multiple of 4) -> [B, 4, h, w] / scale.
torch::Tensor latents_from_embedding(const torch::Tensor& z, double scale = 1.0);

// Initialises every parameter as torch.nn initialises a freshly built
// diffusers U-Net (Conv2d/Linear kaiming-uniform with a = sqrt(5) and a
// fan-in-bounded uniform bias, norms weight 1 bias 0), from torch's global
// generator.
void init_unet(diffusion::UNet2DConditionModel& unet);

// The DDPM training loss for clean latents x0, timesteps t [B] (long) and
// noise like x0: MSE(U(sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, t, text),
// noise). alphas_cumprod: float64 [T]. With gradients.
torch::Tensor prior_loss(diffusion::UNet2DConditionModel& unet, const torch::Tensor& alphas_cumprod,
                         const torch::Tensor& text_embedding, const torch::Tensor& x0, const torch::Tensor& t,
                         const torch::Tensor& noise, bool bf16 = false);

// The template a prior starts from: a folder with unet/config.json,
// scheduler/scheduler_config.json and text_embedding.npy ([1, S, D] with D
// the U-Net's cross_attention_dim). rsam::Error naming the missing file.
struct PriorTemplate {
  std::string folder, unet_config_text, scheduler_text, text_embedding_path;
};
PriorTemplate read_prior_template(const std::string& folder);

// Writes `out` as a diffusers SD folder: unet/config.json,
// unet/diffusion_pytorch_model.safetensors, scheduler/scheduler_config.json,
// text_embedding.npy (the template's), every file atomically.
void write_sd_folder(const std::string& out, diffusion::UNet2DConditionModel& unet, const PriorTemplate& tpl);

}  // namespace rsam::glesam
