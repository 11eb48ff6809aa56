// SAM's architecture hyper-parameters. The official vit_b/l/h are presets;
// small custom configs (tests, rsam-tiny) use the same code. Everything but
// the decoder's head count is recoverable from a checkpoint's tensor shapes.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace rsam {

struct SamConfig {
  // Image encoder (ViT).
  int img_size = 1024;
  int patch_size = 16;
  int in_chans = 3;
  int encoder_embed_dim = 768;
  int encoder_depth = 12;
  int encoder_num_heads = 12;
  int encoder_mlp_dim = 3072;
  std::vector<int> global_attn_indexes{2, 5, 8, 11};
  int window_size = 14;
  // Shared prompt/decoder width (the image embedding's channel count).
  int prompt_embed_dim = 256;
  int mask_in_chans = 16;
  // Mask decoder.
  int decoder_depth = 2;
  int decoder_mlp_dim = 2048;
  int decoder_num_heads = 8;
  int attention_downsample_rate = 2;
  int num_multimask_outputs = 3;
  int iou_head_depth = 3;
  int iou_head_hidden_dim = 256;

  // The official presets, one table: preset_names() lists them ("vit_b",
  // "vit_l", "vit_h"), find_preset(name) is nullopt for an unknown name and
  // preset(name) throws rsam::Error listing the known ones.
  static std::vector<std::string> preset_names();
  static std::optional<SamConfig> find_preset(const std::string& name);
  static SamConfig preset(const std::string& name);
  static SamConfig vit_b();
  static SamConfig vit_l();
  static SamConfig vit_h();
  // "vit_b", "vit_l", "vit_h" or "custom".
  std::string type_name() const;
  int embedding_size() const { return img_size / patch_size; }
  // Throws rsam::Error naming the first inconsistent field.
  void validate() const;
  std::string to_json() const;
  static SamConfig from_json(const std::string& json);
  bool operator==(const SamConfig& o) const;
};

}  // namespace rsam
