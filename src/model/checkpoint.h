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

// Reads .pth (zip or legacy) or .safetensors, builds the model on `device`
// in eval mode.
LoadedSam load_sam(const std::string& path, const torch::Device& device = torch::kCPU);
// A copy of `model` for inputs of `img_size` (a multiple of the patch size):
// the absolute position embedding is resized bilinearly and the global
// blocks' rel-pos tables linearly (what get_rel_pos does at run time); every
// other weight is copied. Fine-tuning at the new size starts from here.
Sam resize_input(const Sam& model, int img_size);
// Where deepen_encoder puts its new blocks: for each new block, the index of
// the original block it follows (-1: before the first), spread evenly.
std::vector<int> deepen_insert_after(int depth, int new_depth);
// A copy of `model` with `new_depth` encoder blocks that computes exactly the
// same function: the new blocks are windowed, spread evenly between the old
// ones, and have zero output projections (attn.proj and mlp.lin2, weights and
// biases), so each is the identity until trained; their other weights are a
// fresh init from `seed`. The global blocks stay global at their new indexes.
Sam deepen_encoder(const Sam& model, int new_depth, uint64_t seed = 0);
// A copy of `model` whose prompt encoder and mask decoder are `new_width`
// wide (a multiple k of the current width; the decoder's heads and MLP grow
// k times too, the head size stays) that computes the same masks and
// scores: every channel is copied k times, which keeps each LayerNorm's
// mean and variance, and the weights reading a copied channel are split
// unevenly between its copies, so training can pull them apart. The image
// encoder's neck widens with them; its ViT blocks are untouched.
Sam widen_decoder(const Sam& model, int new_width);
// Writes .safetensors (with the config in metadata) or .pth by extension.
void save_sam(const Sam& model, const std::string& path);

}  // namespace rsam
