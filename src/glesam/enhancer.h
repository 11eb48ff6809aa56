// GleSAM's generative latent enhancement (issue 40, docs/glesam.md): SAM's
// image embedding z_L of a degraded image is restored by one denoising step
// of a Stable Diffusion U-Net before the mask decoder.
//
//   FDA   the embedding is scaled by gamma before the U-Net;
//   CRE   the U-Net's 4-channel conv_in / conv_out are widened to SAM's
//         channels by tiling the pretrained weights (cre_widen);
//   step  eps = U(gamma z_L, t, c), c = the empty prompt's CLIP embedding,
//         x0 = (gamma z_L - sqrt(1 - abar_t) eps) / sqrt(abar_t) in float64,
//         and the decoder receives z_H = x0 / gamma.
//
// An enhancer is described by a JSON file, as adapters are:
//   {"method": "glesam", "sd": "SD_FOLDER", "lora": "pytorch_lora_weights.safetensors",
//    "decoder": "ft-decoder.pth", "gamma": 5, "timestep": 1}
// ("lora", "decoder", "gamma", "timestep" optional; "text_embedding": E.npy
// may replace the folder's tokenizer/ and text_encoder/). Relative paths are
// relative to the JSON file's folder.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "diffusion/unet.h"
#include "io/tensor_file.h"
#include "model/predictor.h"
#include "model/sam.h"

namespace rsam::glesam {

// SAM's embedding width: what the released weights were widened to.
constexpr int64_t kSamChannels = 256;

// CRE: conv_in [F, 4, k, k] -> [F, channels, k, k] (input channel c is the
// pretrained channel c mod 4), conv_out [4, F, k, k] -> [channels, F, k, k]
// and its bias tiled alike; no rescaling (GleSAM's code; the paper's
// "replicate and concatenate"). The widened weights keep requires_grad off.
// rsam::Error unless the U-Net has 4 input and output channels and
// `channels` is a positive multiple of 4. Any LoRA on conv_in / conv_out
// must be attached after this.
void cre_widen(diffusion::UNet2DConditionModel& unet, int64_t channels = kSamChannels);

// The ablation instead of CRE: conv_in / conv_out replaced by freshly
// initialised layers (PyTorch's default Conv2d init, from torch's global
// generator) of `channels` input / output channels, trainable. Same
// preconditions as cre_widen.
void fresh_in_out(diffusion::UNet2DConditionModel& unet, int64_t channels);
// The in/out convolutions' tensors (conv_in.weight, conv_in.bias,
// conv_out.weight, conv_out.bias), without any LoRA factors.
io::StateDict in_out_tensors(diffusion::UNet2DConditionModel& unet);

// The JSON description, paths resolved against the file's folder.
struct EnhancerConfig {
  std::string sd;              // Stable Diffusion folder (unet/, scheduler/, [tokenizer/, text_encoder/])
  std::string lora;            // U-Net LoRA file; empty: none
  std::string decoder;         // fine-tuned mask decoder; empty: SAM's own
  std::string text_embedding;  // [1, S, D] or [S, D] .npy; empty: encode `prompt` with the folder's CLIP
  std::string prompt;          // the U-Net's text condition; "" as GleSAM (needs no merges.txt)
  double gamma = 5;            // FDA scale (the paper's)
  int64_t timestep = 1;        // every released script's conditioning_timestep
  // false: the paper's Table 6 ablation. conv_in / conv_out are fresh layers
  // at the embedding width (not CRE's tiling), trained with the LoRA in
  // stage 1 and stored in `in_out` (conv_in.* and conv_out.* tensors).
  bool cre = true;
  std::string in_out;
  std::string origin;          // the JSON file, for messages

  // rsam::Error naming `origin` on a key other than method, sd, lora,
  // decoder, text_embedding, gamma, timestep, cre, in_out, prompt (the
  // allowed keys listed), a wrong type, prompt beside text_embedding, gamma not finite and > 0, a negative timestep
  // (the upper bound is the scheduler's, checked when loaded), or in_out
  // without "cre": false.
  static EnhancerConfig parse(const nlohmann::json& j, const std::string& base_dir, const std::string& origin);
  static EnhancerConfig from_file(const std::string& path);
  // The JSON form, paths made relative to `dir` when they lie inside it.
  nlohmann::json to_json(const std::string& dir = "") const;
};

// True for a path that names an enhancer description (a .json file), as
// opposed to an adapter (.safetensors) in --compare lists.
bool is_enhancer_path(const std::string& path);

// A released decoder file as mask-decoder tensors (keys without the
// "mask_decoder." prefix): a bare mask-decoder state dict, one prefixed
// "mask_decoder.", or a whole SAM state dict; .pth (rsam's pickle reader) or
// .safetensors. rsam::Error when the file holds neither form.
io::StateDict read_decoder(const std::string& path);
// Copies them into model->mask_decoder strictly (a missing, unexpected or
// mis-shaped tensor is an error naming it).
void load_decoder(Sam& model, const io::StateDict& decoder, const std::string& origin);

struct EnhancerOptions {
  torch::Device device{torch::kCPU};
  // The CRE width: the SAM embedding's channels.
  int64_t channels = kSamChannels;
  // false: do not read the decoder file (training stage 1 does not need it).
  bool read_decoder = true;
  // "cre": false without an in_out file: true lets the convolutions start
  // fresh (stage 1 trains them); false makes it an error (inference).
  bool fresh_in_out = false;
};

class Enhancer {
 public:
  // unet: already widened (in = out = the embedding's channels).
  // alphas_cumprod: [T] float64; text_embedding [1, S, D] float32.
  Enhancer(diffusion::UNet2DConditionModel unet, torch::Tensor alphas_cumprod, torch::Tensor text_embedding,
           double gamma, int64_t timestep);
  // SD folder -> U-Net, CRE to opts.channels, LoRA (a file that does not fit
  // is an error naming its first mismatched tensor), text embedding,
  // decoder file read (not applied: see apply_decoder).
  static Enhancer load(const EnhancerConfig& cfg, const EnhancerOptions& opts = {});
  static Enhancer load(const std::string& json_path, const EnhancerOptions& opts = {});

  // z_L [B, C, h, w] -> z_H [B, C, h, w] float32, no gradient. bf16: the
  // U-Net under rsam's bf16 autocast (the x0 step stays float64).
  torch::Tensor enhance(const torch::Tensor& z_low, bool bf16 = false) const;
  // x0 = (x - sqrt(1 - abar_t) U(x, t, c)) / sqrt(abar_t) for x = gamma z_L,
  // with gradients (training: stage 1's loss is MSE(x0, gamma z_H)).
  torch::Tensor predict_x0(const torch::Tensor& scaled, bool bf16 = false) const;

  bool has_decoder() const { return !decoder_.empty(); }
  const io::StateDict& decoder() const { return decoder_; }
  // Loads the fine-tuned decoder into `model` (no-op without one).
  void apply_decoder(Sam& model) const;

  diffusion::UNet2DConditionModel& unet() const { return unet_; }
  const torch::Tensor& alphas_cumprod() const { return alphas_cumprod_; }
  const torch::Tensor& text_embedding() const { return text_; }
  double gamma() const { return gamma_; }
  int64_t timestep() const { return timestep_; }
  int64_t channels() const;
  const EnhancerConfig& config() const { return config_; }

 private:
  void check_input(const torch::Tensor& z) const;
  mutable diffusion::UNet2DConditionModel unet_;
  torch::Tensor alphas_cumprod_, text_;
  double gamma_;
  int64_t timestep_;
  io::StateDict decoder_;
  std::string decoder_origin_;
  EnhancerConfig config_;
};

// Makes `predictor` enhance every embedding set_image computes (both views
// with --flip) before any decode; the enhancer's bf16 follows the
// predictor's precision. The enhancer's decoder must already be applied to
// the predictor's model (apply_decoder).
void attach(SamPredictor& predictor, std::shared_ptr<const Enhancer> enhancer);

// The enhancer of `json_path` for `model`: widened to its embedding width
// on its device, its decoder (if any) loaded into `model`. With an adapter,
// call this after the adapter is attached (the adapter's fingerprint names
// the base decoder).
std::shared_ptr<const Enhancer> load_for(Sam& model, const std::string& json_path);

// A method as eval's --compare lists name it: "none", an adapter file, an
// enhancer (.json), or both as "ADAPTER+ENHANCER.json" (the adapted encoder,
// then the enhancer).
struct MethodParts {
  std::string adapter;   // empty or "none": the base encoder
  std::string enhancer;  // empty: none
};
MethodParts split_method(const std::string& item);

}  // namespace rsam::glesam
