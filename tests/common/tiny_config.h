// The tiny SAM shape the unit tests build from scratch (the same as the
// committed tiny_a fixture): 64-pixel images, 8x8 grid, windows of 3 so the
// windowed blocks need padding.
#pragma once

#include "model/config.h"

namespace rsam::testing {

inline SamConfig tiny_config() {
  SamConfig c;
  c.img_size = 64;
  c.patch_size = 8;
  c.encoder_embed_dim = 32;
  c.encoder_depth = 2;
  c.encoder_num_heads = 2;
  c.encoder_mlp_dim = 64;
  c.global_attn_indexes = {1};
  c.window_size = 3;
  c.prompt_embed_dim = 32;
  c.mask_in_chans = 8;
  c.decoder_mlp_dim = 64;
  c.iou_head_hidden_dim = 32;
  return c;
}

}  // namespace rsam::testing
