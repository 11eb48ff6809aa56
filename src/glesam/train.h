// Training GleSAM's two stages (issue 40, docs/glesam.md) with the adapter
// trainer's machinery: the data loader and its corruptions, the output
// folder's checks and lock, checkpoints that a resumed run continues
// bit-identically, metrics.jsonl, loss.png, bf16 autocast.
//
//   stage 1 (unet):    LoRA (rank 8, alpha 8 by default, GleSAM's targets) on
//                      the CRE-widened U-Net; loss MSE(x0, gamma z_H) where
//                      x0 is the one-step estimate from gamma z_L; z_L / z_H
//                      are the frozen SAM encoder's embeddings of the
//                      corrupted / clean image.
//   prior (the miniature, docs/glesam.md): a small 4-channel U-Net from
//                      random weights, an epsilon-prediction DDPM on latents
//                      made from the clean embeddings (glesam/prior.h);
//                      writes a diffusers SD folder into the output folder.
//   stage 2 (decoder): the mask decoder on the enhanced embeddings, U-Net
//                      frozen; focal + dice 1:1 on the low-res logits
//                      (single-mask output); every decoder weight but the
//                      IoU token and head by default (as released).
//
// Each stage writes its weights (lora.safetensors / decoder.safetensors)
// and an enhancer.json that uses them, next to config.json, checkpoint.pt,
// metrics.jsonl and loss.png.
#pragma once

#include <string>

#include "train/trainer.h"

namespace rsam::glesam {

struct GlesamTrainOptions {
  // checkpoint (the SAM), data, corruption, severity, clean_ratio, prompts,
  // steps/epochs, batch, accum, optimizer, lr, wd, clip, warmup,
  // min_lr_ratio, precision, seed, out, resume, overwrite, save_every,
  // threads, workers, quiet: as for adapters. adapter, full, train_decoder,
  // consistency and the other adapter-only options must keep their defaults.
  train::TrainOptions base;
  std::string enhancer;  // E.json: the SD folder, gamma, timestep; stage 2 also its LoRA
  std::string stage = "unet";  // "prior", "unet" (1) or "decoder" (2)
  // prior: the template folder (unet/config.json, scheduler/, text_embedding.npy)
  std::string prior_init;
  int64_t prior_crop = 0;  // prior: random square latent crops of this side; 0 = whole latents
  // The frozen encoder's clean embeddings cached here (glesam/embedding_cache.h);
  // empty: none. Not part of the run's options (a resumed run may change it).
  std::string embedding_cache;
  int64_t lora_rank = 8;
  double lora_alpha = 8;
  bool decoder_iou = false;  // stage 2: also train the IoU token and head
};

struct GlesamTrainResult {
  int64_t steps = 0, start_step = 0;
  double last_loss = 0;
  std::string weights_path, enhancer_path;
  bool wrote_outputs = true;  // false on the ranks above 0 of a data-parallel run
};

// rsam::Error on bad options before any loading. Under torchrun's
// environment one rank of a data-parallel run, as train::train: each rank
// trains on its share of every batch (the prior's noise drawn as one process
// draws it), the gradients are summed, rank 0 alone writes. With
// grad_checkpoint the U-Net's blocks are recomputed in the backward pass
// (train::grad_checkpoint; the U-Net stages only).
GlesamTrainResult train_glesam(const GlesamTrainOptions& opts);
// The checks train_glesam starts with (options, the enhancer file, outputs
// onto inputs), for a launcher to fail once before it starts any rank.
void check_train_options(const GlesamTrainOptions& opts);

}  // namespace rsam::glesam
