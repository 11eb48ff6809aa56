// The configuration files of a Stable Diffusion folder as diffusers and
// transformers write them (unet/config.json, text_encoder/config.json,
// scheduler/scheduler_config.json, tokenizer/*.json), read the way those
// libraries read them. Torch-free, so the readers build fast and can be
// fuzzed. Every value rsam does not implement is an rsam::Error naming the
// key: a config is either built exactly or refused, never approximated.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace rsam::diffusion {

// diffusers' UNet2DConditionModel for the Stable Diffusion 1.x/2.x family:
// CrossAttnDownBlock2D / DownBlock2D / UpBlock2D / CrossAttnUpBlock2D and the
// cross-attention mid block. Per-block lists are expanded to one entry per
// down block (index i of the down path; the up path reads them reversed).
struct UNetConfig {
  int64_t in_channels = 4;
  int64_t out_channels = 4;
  bool center_input_sample = false;
  bool flip_sin_to_cos = true;
  double freq_shift = 0;
  std::vector<std::string> down_block_types;
  std::vector<std::string> up_block_types;
  bool mid_block = true;  // "UNetMidBlock2DCrossAttn"; false for null
  std::vector<int64_t> block_out_channels;
  std::vector<int64_t> layers_per_block;
  std::vector<int64_t> transformer_layers_per_block;
  int64_t downsample_padding = 1;
  double mid_block_scale_factor = 1;
  std::string act_fn = "silu";
  int64_t norm_num_groups = 32;
  double norm_eps = 1e-5;
  std::vector<int64_t> cross_attention_dim;
  // diffusers' `attention_head_dim` is, for these blocks, the number of
  // heads (the head width is channels / heads); kept under its own name.
  std::vector<int64_t> attention_head_dim;
  bool use_linear_projection = false;
  bool upcast_attention = false;
  int64_t time_embedding_dim = 0;        // 0: 4 * block_out_channels[0]
  std::string time_embedding_act_fn;     // empty: none
  std::string timestep_post_act;         // empty: none
  int64_t conv_in_kernel = 3;
  int64_t conv_out_kernel = 3;
  // Keys diffusers 0.27 does not know (it ignores them, so does rsam).
  std::vector<std::string> ignored_keys;

  size_t num_blocks() const { return block_out_channels.size(); }
  int64_t time_embed_dim() const { return time_embedding_dim ? time_embedding_dim : 4 * block_out_channels[0]; }
  bool down_cross(size_t i) const { return down_block_types[i] == "CrossAttnDownBlock2D"; }
  bool up_cross(size_t i) const { return up_block_types[i] == "CrossAttnUpBlock2D"; }
  // Throws rsam::Error naming the first inconsistent field.
  void validate() const;
  // The config.json form (diffusers' names; lists written out per block).
  std::string to_json() const;
  // `origin` names the file in error messages.
  static UNetConfig from_json(const std::string& text, const std::string& origin = "unet config");
  static UNetConfig from_file(const std::string& path);
};

// transformers' CLIPTextConfig (text_encoder/config.json).
struct ClipTextConfig {
  int64_t vocab_size = 49408;
  int64_t hidden_size = 512;
  int64_t intermediate_size = 2048;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 8;
  int64_t max_position_embeddings = 77;
  double layer_norm_eps = 1e-5;
  std::string hidden_act = "quick_gelu";  // or "gelu"

  void validate() const;
  std::string to_json() const;
  static ClipTextConfig from_json(const std::string& text, const std::string& origin = "text encoder config");
  static ClipTextConfig from_file(const std::string& path);
};

// The noise schedule diffusers' DDIMScheduler builds from
// scheduler_config.json (GleSAM uses only its alphas_cumprod).
struct SchedulerConfig {
  std::string class_name;  // "_class_name", informational
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  std::string beta_schedule = "linear";  // linear, scaled_linear, squaredcos_cap_v2
  std::vector<double> trained_betas;     // non-empty: used as given
  std::string prediction_type = "epsilon";  // epsilon, v_prediction, sample

  void validate() const;
  std::string to_json() const;
  static SchedulerConfig from_json(const std::string& text, const std::string& origin = "scheduler config");
  static SchedulerConfig from_file(const std::string& path);
};

// What the CLIP tokenizer needs to encode the empty prompt: the ids of its
// special tokens and the padded length. The pad token is read as
// transformers reads it: special_tokens_map.json overrides
// tokenizer_config.json, and its id comes from vocab.json (or the added
// tokens listed in tokenizer_config.json).
struct ClipTokens {
  int64_t bos = 0, eos = 0, pad = 0;
  int64_t max_length = 77;
  std::string pad_token;  // the pad token's text ("!" for SD-2.x, "<|endoftext|>" for SD-1.x)
  // For ClipTokenizer (tokenizer.h): the unknown token (CLIPTokenizer's
  // default "<|endoftext|>" when neither file names it) and every special
  // token's text -> id (bos, eos, unk, pad, additional_special_tokens): the
  // texts a prompt is split on before BPE, as transformers does.
  int64_t unk = 0;
  std::map<std::string, int64_t> special_ids;

  static ClipTokens from_folder(const std::string& tokenizer_dir);
  // From the three files' contents (special_tokens_map may be empty: absent).
  static ClipTokens from_json(const std::string& tokenizer_config, const std::string& special_tokens_map,
                              const std::string& vocab, const std::string& origin = "tokenizer");
  // The ids of the empty prompt padded to max_length (what GleSAM
  // conditions on); any other text is an rsam::Error: ClipTokenizer encodes
  // text.
  std::vector<int64_t> encode(const std::string& prompt) const;
};

std::string read_text_file(const std::string& path);

}  // namespace rsam::diffusion
