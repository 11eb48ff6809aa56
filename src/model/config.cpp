#include "model/config.h"

#include <utility>

#include <nlohmann/json.hpp>

#include "error.h"

namespace rsam {

namespace {

// The official presets, by name: ViT-B is the struct's defaults; the larger
// encoders differ only in width, depth, heads, MLP and global blocks.
SamConfig encoder_preset(int width, int depth, int heads, std::vector<int> global) {
  SamConfig c;
  c.encoder_embed_dim = width;
  c.encoder_depth = depth;
  c.encoder_num_heads = heads;
  c.encoder_mlp_dim = 4 * width;
  c.global_attn_indexes = std::move(global);
  return c;
}

const std::vector<std::pair<std::string, SamConfig>>& preset_table() {
  static const std::vector<std::pair<std::string, SamConfig>> table{
      {"vit_b", SamConfig{}},
      {"vit_l", encoder_preset(1024, 24, 16, {5, 11, 17, 23})},
      {"vit_h", encoder_preset(1280, 32, 16, {7, 15, 23, 31})},
  };
  return table;
}

}  // namespace

std::vector<std::string> SamConfig::preset_names() {
  std::vector<std::string> names;
  for (const auto& [name, _] : preset_table()) names.push_back(name);
  return names;
}

std::optional<SamConfig> SamConfig::find_preset(const std::string& name) {
  for (const auto& [n, cfg] : preset_table())
    if (n == name) return cfg;
  return std::nullopt;
}

SamConfig SamConfig::preset(const std::string& name) {
  if (auto cfg = find_preset(name)) return *cfg;
  std::string known;
  for (const auto& n : preset_names()) known += (known.empty() ? "" : ", ") + n;
  throw Error("unknown model preset '" + name + "' (" + known + ")");
}

SamConfig SamConfig::vit_b() { return preset("vit_b"); }
SamConfig SamConfig::vit_l() { return preset("vit_l"); }
SamConfig SamConfig::vit_h() { return preset("vit_h"); }

bool SamConfig::operator==(const SamConfig& o) const { return to_json() == o.to_json(); }

std::string SamConfig::type_name() const {
  for (const auto& [name, cfg] : preset_table())
    if (*this == cfg) return name;
  return "custom";
}

void SamConfig::validate() const {
  auto need = [](bool ok, const char* what) {
    if (!ok) throw Error(std::string("invalid SAM config: ") + what);
  };
  need(patch_size > 0 && img_size > 0 && img_size % patch_size == 0, "img_size must be a multiple of patch_size");
  need(encoder_num_heads > 0 && encoder_embed_dim % encoder_num_heads == 0, "encoder heads must divide encoder width");
  need(encoder_depth > 0 && encoder_mlp_dim > 0, "encoder depth and mlp dim must be positive");
  for (int g : global_attn_indexes) need(g >= 0 && g < encoder_depth, "global_attn_indexes out of range");
  need(window_size >= 0, "window_size must be >= 0");
  need(prompt_embed_dim % 8 == 0 && prompt_embed_dim > 0, "prompt_embed_dim must be a positive multiple of 8");
  need(mask_in_chans % 4 == 0 && mask_in_chans > 0, "mask_in_chans must be a positive multiple of 4");
  need(attention_downsample_rate > 0 && prompt_embed_dim % attention_downsample_rate == 0,
       "attention_downsample_rate must divide prompt_embed_dim");
  need(decoder_num_heads > 0 && (prompt_embed_dim / attention_downsample_rate) % decoder_num_heads == 0,
       "decoder heads must divide the decoder attention width");
  need(decoder_depth > 0 && num_multimask_outputs >= 1 && iou_head_depth >= 1, "decoder sizes must be positive");
}

std::string SamConfig::to_json() const {
  nlohmann::json j{{"img_size", img_size},
                   {"patch_size", patch_size},
                   {"in_chans", in_chans},
                   {"encoder_embed_dim", encoder_embed_dim},
                   {"encoder_depth", encoder_depth},
                   {"encoder_num_heads", encoder_num_heads},
                   {"encoder_mlp_dim", encoder_mlp_dim},
                   {"global_attn_indexes", global_attn_indexes},
                   {"window_size", window_size},
                   {"prompt_embed_dim", prompt_embed_dim},
                   {"mask_in_chans", mask_in_chans},
                   {"decoder_depth", decoder_depth},
                   {"decoder_mlp_dim", decoder_mlp_dim},
                   {"decoder_num_heads", decoder_num_heads},
                   {"attention_downsample_rate", attention_downsample_rate},
                   {"num_multimask_outputs", num_multimask_outputs},
                   {"iou_head_depth", iou_head_depth},
                   {"iou_head_hidden_dim", iou_head_hidden_dim}};
  return j.dump();
}

SamConfig SamConfig::from_json(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    throw Error(std::string("SAM config is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) throw Error("SAM config must be a JSON object");
  SamConfig c;
  auto get = [&](const char* key, int& field) {
    if (!j.contains(key)) return;
    if (!j[key].is_number_integer()) throw Error(std::string("SAM config field '") + key + "' must be an integer");
    field = j[key].get<int>();
  };
  get("img_size", c.img_size);
  get("patch_size", c.patch_size);
  get("in_chans", c.in_chans);
  get("encoder_embed_dim", c.encoder_embed_dim);
  get("encoder_depth", c.encoder_depth);
  get("encoder_num_heads", c.encoder_num_heads);
  get("encoder_mlp_dim", c.encoder_mlp_dim);
  get("window_size", c.window_size);
  get("prompt_embed_dim", c.prompt_embed_dim);
  get("mask_in_chans", c.mask_in_chans);
  get("decoder_depth", c.decoder_depth);
  get("decoder_mlp_dim", c.decoder_mlp_dim);
  get("decoder_num_heads", c.decoder_num_heads);
  get("attention_downsample_rate", c.attention_downsample_rate);
  get("num_multimask_outputs", c.num_multimask_outputs);
  get("iou_head_depth", c.iou_head_depth);
  get("iou_head_hidden_dim", c.iou_head_hidden_dim);
  if (j.contains("global_attn_indexes")) {
    if (!j["global_attn_indexes"].is_array()) throw Error("SAM config field 'global_attn_indexes' must be a list");
    c.global_attn_indexes.clear();
    for (auto& v : j["global_attn_indexes"]) {
      if (!v.is_number_integer()) throw Error("SAM config 'global_attn_indexes' must hold integers");
      c.global_attn_indexes.push_back(v.get<int>());
    }
  }
  c.validate();
  return c;
}

}  // namespace rsam
