// Loading the parts of a Stable Diffusion folder (as diffusers writes it:
// unet/, text_encoder/, tokenizer/, scheduler/) that GleSAM uses, and
// describing one for `rsam info`. Weights are read with rsam's own readers
// (safetensors, or the restricted torch.save reader for .bin), never with
// torch::load. Every failure is a one-line rsam::Error naming the file.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <string>

#include "diffusion/clip.h"
#include "diffusion/config.h"
#include "diffusion/unet.h"
#include "io/tensor_file.h"

namespace rsam::diffusion {

// The weights file of a diffusers component folder: the first of
// <stem>.safetensors, <stem>.bin, <stem>.fp16.safetensors, <stem>.fp16.bin
// that exists (stems: "diffusion_pytorch_model" for unet/, "model" /
// "pytorch_model" for text_encoder/).
std::string find_weights(const std::string& dir, const std::vector<std::string>& stems);
// Reads any of those files (by content) into a state dict.
io::StateDict read_weights(const std::string& path);

// A U-Net from a diffusers "unet" folder (config.json + weights), in fp32
// on `device`, eval mode. fp16/bf16 files are widened to fp32.
UNet2DConditionModel load_unet(const std::string& unet_dir, const torch::Device& device = torch::kCPU);
ClipTextModel load_text_encoder(const std::string& text_encoder_dir, const torch::Device& device = torch::kCPU);
// Copies `sd` into `model` strictly by name (missing, unexpected or
// mis-shaped tensors are an error naming the first ones).
void load_weights(torch::nn::Module& model, const io::StateDict& sd, const std::string& origin);

// The CLIP text embedding of `prompt` for the folder's tokenizer/ and
// text_encoder/: [1, 77, D] float32. The empty prompt needs only the
// tokenizer's JSON files (ClipTokens); text is tokenized by ClipTokenizer
// (tokenizer.h: vocab.json + merges.txt).
torch::Tensor encode_prompt(const std::string& sd_folder, const std::string& prompt = "",
                            const torch::Device& device = torch::kCPU);

// What GleSAM needs from a Stable Diffusion folder.
struct StableDiffusion {
  std::string folder;
  UNet2DConditionModel unet{nullptr};
  SchedulerConfig scheduler;
  torch::Tensor alphas_cumprod;   // [T] float64
  torch::Tensor text_embedding;   // [1, 77, D] float32: the prompt's (GleSAM's is empty)
};
struct SdLoadOptions {
  torch::Device device{torch::kCPU};
  bool text_embedding = true;  // false: skip tokenizer/ and text_encoder/
  std::string prompt;          // the text the U-Net is conditioned on ("" as GleSAM)
};
StableDiffusion load_stable_diffusion(const std::string& folder, const SdLoadOptions& opts = {});

// For `rsam info`: a Stable Diffusion folder, a component folder (unet/,
// text_encoder/), or a weights file (U-Net, CLIP text encoder or U-Net
// LoRA) -> its configuration, parameter count and dtype. Reads headers and
// configs only where it can (safetensors); rsam::Error if `path` is none
// of these.
nlohmann::json describe_sd_path(const std::string& path);
// True when `path` is a folder with unet/config.json (what rsam info uses
// to pick this describer).
bool is_sd_folder(const std::string& path);

}  // namespace rsam::diffusion
