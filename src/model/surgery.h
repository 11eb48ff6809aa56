// Model surgery: copies of a model at a new input size, encoder depth or
// decoder width that start out computing what the original computes.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "model/sam.h"

namespace rsam {

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

}  // namespace rsam
