// Bridges the torch-free file readers (io/) and the model: detects the SAM
// configuration from tensor shapes, loads strictly by name, and writes state
// dicts back out.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "io/tensor_file.h"
#include "model/sam.h"
// Model surgery (resize_input, deepen_encoder, widen_decoder) lives in
// model/surgery.h; included here so existing callers keep compiling.
#include "model/surgery.h"

namespace rsam {

torch::Tensor to_torch(const io::TensorData& t);
io::TensorData from_torch(const torch::Tensor& t);

// Architecture from tensor shapes (heads from the rel-pos width, global
// blocks from rel-pos length, ...). The decoder head count cannot be seen in
// shapes: it comes from `hint` (safetensors metadata "rsam.config") or
// defaults to the official 8.
SamConfig detect_config(const io::StateDict& sd, const SamConfig* hint = nullptr);

// Copies every tensor into the model; any missing, unexpected or mis-shaped
// key is an rsam::Error that names it. Nothing stays at random init.
void load_state_dict(torch::nn::Module& model, const io::StateDict& sd, const std::string& origin);

io::StateDict state_dict_of(const torch::nn::Module& model);

// Learned parameters, as the official count (sum over model.parameters()):
// the prompt encoder's Gaussian matrix is a buffer, saved but not learned.
int64_t parameter_count(const torch::nn::Module& model);
int64_t parameter_count(const io::StateDict& sd);

struct LoadedSam {
  Sam model{nullptr};
  std::string path;
  int64_t num_params = 0;
};

// A SAM checkpoint's tensors and the architecture they are: from the
// config a .safetensors written by rsam carries, else from the shapes.
struct SamWeights {
  io::StateDict tensors;
  SamConfig config;
};
SamWeights read_sam_weights(const std::string& path);

// Reads .pth (zip or legacy) or .safetensors, builds the model on `device`
// in eval mode.
LoadedSam load_sam(const std::string& path, const torch::Device& device = torch::kCPU);
// Writes .safetensors (with the config in metadata) or .pth by extension.
void save_sam(const Sam& model, const std::string& path);

}  // namespace rsam
