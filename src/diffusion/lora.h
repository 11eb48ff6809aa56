// LoRA on the U-Net as peft 0.9 applies it (what GleSAM trains): on every
// Linear or Conv2d whose module name equals a target or ends with
// "." + target, y = W x + (alpha / r) B (A x). On a Conv2d, A is a conv with
// the layer's kernel, stride and padding and B a 1x1 conv.
//
// Files. rsam reads every layout GleSAM's release can have: keys
//   unet.<module>.lora.down.weight / .lora.up.weight  (A / B; what diffusers
//       0.27's converter makes of the attention projections to_q, to_k,
//       to_v, to_out.0)
//   unet.<module>.lora_A.weight / .lora_B.weight      (every other module)
// optionally with peft's "base_model.model." prefix and ".default" adapter
// name (lora_A.default.weight). rsam writes one form, a safetensors file with
//   unet.<module>.lora_A.weight  [r, in] or [r, in, kh, kw]   (A)
//   unet.<module>.lora_B.weight  [out, r] or [out, r, 1, 1]   (B)
// in fp32 and metadata {"format": "pt", "rsam.lora": {"rank", "alpha"}}
// (JSON text): the peft names under diffusers' "unet." prefix, which
// GleSAM's val_load (strip "unet.", add ".default") and diffusers'
// load_lora_weights both read. Files without rsam.lora metadata (GleSAM's)
// carry no alpha: it defaults to the rank (scale 1, GleSAM's r = alpha = 8).
#pragma once

#include <torch/torch.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace rsam::diffusion {

// GleSAM's target_modules (models/sd_unifined_model_CRE_addlora.py).
const std::vector<std::string>& glesam_lora_targets();
// peft's rule: the full module name equals a target or ends with "." + it.
bool is_lora_target(const std::string& module_name, const std::vector<std::string>& targets);
// Names of the Linear/Conv2d modules of `model` the targets select, in
// registration order.
std::vector<std::string> lora_target_modules(torch::nn::Module& model, const std::vector<std::string>& targets);

struct LoraSpec {
  int64_t rank = 8;
  double alpha = 8;
  std::vector<std::string> targets = glesam_lora_targets();
};
// Attaches fresh adapters as peft initializes them (A kaiming-uniform with
// a = sqrt(5), B zero: the model's function is unchanged). Returns the
// number of wrapped modules.
int64_t add_lora(torch::nn::Module& model, const LoraSpec& spec, uint64_t seed = 0);

// A LoRA file's factors by module name (the U-Net's own names).
struct LoraWeights {
  std::map<std::string, std::pair<torch::Tensor, torch::Tensor>> modules;  // name -> (A, B)
  std::optional<double> alpha;           // from rsam.lora metadata
  int64_t rank() const;                  // shared by all modules (checked)
};
LoraWeights read_lora(const std::string& path);
// Attaches the file's factors to `model` (each name must be a Linear/Conv2d
// of the model, with matching shapes). alpha: overrides the file's; default
// the file's, else the rank. Returns the number of modules.
int64_t load_lora(torch::nn::Module& model, const std::string& path, std::optional<double> alpha = std::nullopt);
int64_t apply_lora(torch::nn::Module& model, const LoraWeights& w, std::optional<double> alpha, const std::string& origin);
// Writes the adapters attached to `model` in rsam's form (see above).
void save_lora(torch::nn::Module& model, const std::string& path);
// Folds every attached adapter into its layer's weight (W += alpha/r B A)
// and removes it. Returns the number merged.
int64_t merge_lora(torch::nn::Module& model);
// LoRA parameter count attached to `model`.
int64_t lora_parameter_count(torch::nn::Module& model);

}  // namespace rsam::diffusion
