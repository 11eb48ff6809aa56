#include "diffusion/config.h"

#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "error.h"

namespace rsam::diffusion {

using nlohmann::json;

namespace {

// Sizes past these are typos or hostile files, and each would allocate its
// weights before a shape check could fail.
constexpr int64_t kMaxWidth = 1 << 16;
constexpr int64_t kMaxDepth = 64;
constexpr size_t kMaxBlocks = 8;

json parse_object(const std::string& text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const std::exception&) {
    throw Error(origin + " is not valid JSON");
  }
  if (!j.is_object()) throw Error(origin + " must be a JSON object");
  return j;
}

// Typed access to one key, with errors that name the file and the key.
struct Reader {
  const json& j;
  const std::string& origin;

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw Error(origin + ": '" + key + "' " + what);
  }
  int64_t integer(const std::string& key, const json& v, int64_t lo, int64_t hi) const {
    if (!v.is_number_integer()) fail(key, "must be an integer");
    // Unsigned first: a value past int64's range must not wrap into range.
    const bool ok = v.is_number_unsigned() ? v.get<uint64_t>() <= uint64_t(hi) && int64_t(v.get<uint64_t>()) >= lo
                                           : v.get<int64_t>() >= lo && v.get<int64_t>() <= hi;
    if (!ok) fail(key, "is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return v.get<int64_t>();
  }
  int64_t integer(const std::string& key, int64_t lo, int64_t hi) const { return integer(key, j.at(key), lo, hi); }
  double number(const std::string& key) const {
    const json& v = j.at(key);
    if (!v.is_number()) fail(key, "must be a number");
    const double x = v.get<double>();
    if (!std::isfinite(x)) fail(key, "must be finite");
    return x;
  }
  bool boolean(const std::string& key) const {
    const json& v = j.at(key);
    if (!v.is_boolean()) fail(key, "must be true or false");
    return v.get<bool>();
  }
  std::string string(const std::string& key) const {
    const json& v = j.at(key);
    if (!v.is_string()) fail(key, "must be a string");
    return v.get<std::string>();
  }
  // An int, or a list with one int per block (diffusers accepts both).
  std::vector<int64_t> per_block(const std::string& key, size_t n, int64_t lo, int64_t hi) const {
    const json& v = j.at(key);
    if (!v.is_array()) return std::vector<int64_t>(n, integer(key, v, lo, hi));
    if (v.size() != n) fail(key, "has " + std::to_string(v.size()) + " entries for " + std::to_string(n) + " blocks");
    std::vector<int64_t> out;
    for (const auto& e : v) out.push_back(integer(key, e, lo, hi));
    return out;
  }
  std::vector<std::string> strings(const std::string& key) const {
    const json& v = j.at(key);
    if (!v.is_array()) fail(key, "must be a list of strings");
    std::vector<std::string> out;
    for (const auto& e : v) {
      if (!e.is_string()) fail(key, "must be a list of strings");
      out.push_back(e.get<std::string>());
    }
    return out;
  }
};

std::string dump(const json& v) {
  std::string s = v.dump();
  return s.size() > 40 ? s.substr(0, 37) + "..." : s;
}

// UNet2DConditionModel arguments rsam does not implement: they must keep
// diffusers' default, or they would change the network.
const std::map<std::string, json>& unet_fixed_defaults() {
  static const std::map<std::string, json> m = {
      {"encoder_hid_dim", nullptr},
      {"encoder_hid_dim_type", nullptr},
      {"class_embed_type", nullptr},
      {"addition_embed_type", nullptr},
      {"addition_time_embed_dim", nullptr},
      {"num_class_embeds", nullptr},
      {"dual_cross_attention", false},
      {"resnet_time_scale_shift", "default"},
      {"time_embedding_type", "positional"},
      {"time_cond_proj_dim", nullptr},
      {"projection_class_embeddings_input_dim", nullptr},
      {"attention_type", "default"},
      {"class_embeddings_concat", false},
      {"reverse_transformer_layers_per_block", nullptr},
      // diffusers 0.27 raises on any value here (its naming issue #2011).
      {"num_attention_heads", nullptr},
  };
  return m;
}

// Arguments diffusers passes only to block types rsam refuses anyway
// (Simple*/Attn* blocks), or that do nothing at inference.
const std::set<std::string>& unet_inert_keys() {
  static const std::set<std::string> s = {"sample_size",
                                          "dropout",
                                          "resnet_skip_time_act",
                                          "resnet_out_scale_factor",
                                          "mid_block_only_cross_attention",
                                          "cross_attention_norm",
                                          "addition_embed_type_num_heads"};
  return s;
}

std::string block_type(const Reader& r, const std::string& key, std::string t, bool down) {
  // get_down_block / get_up_block drop this prefix before dispatching.
  if (t.rfind("UNetRes", 0) == 0) t = t.substr(7);
  const char* cross = down ? "CrossAttnDownBlock2D" : "CrossAttnUpBlock2D";
  const char* plain = down ? "DownBlock2D" : "UpBlock2D";
  if (t != cross && t != plain)
    r.fail(key, "names block type '" + t + "'; rsam supports " + cross + " and " + plain);
  return t;
}

bool is_activation(const std::string& a) {
  return a == "silu" || a == "swish" || a == "gelu" || a == "relu" || a == "mish";
}

void read_unet_blocks(const Reader& r, UNetConfig& c) {
  const json& j = r.j;
  for (const char* key : {"down_block_types", "up_block_types", "block_out_channels"})
    if (!j.contains(key)) r.fail(key, "is missing");
  const json& boc = j.at("block_out_channels");
  if (!boc.is_array() || boc.empty() || boc.size() > kMaxBlocks)
    r.fail("block_out_channels", "must be a list of 1 to " + std::to_string(kMaxBlocks) + " integers");
  for (const auto& v : boc) c.block_out_channels.push_back(r.integer("block_out_channels", v, 1, kMaxWidth));
  const size_t n = c.num_blocks();
  for (const auto& t : r.strings("down_block_types")) c.down_block_types.push_back(block_type(r, "down_block_types", t, true));
  for (const auto& t : r.strings("up_block_types")) c.up_block_types.push_back(block_type(r, "up_block_types", t, false));
  if (c.down_block_types.size() != n)
    r.fail("down_block_types", "has " + std::to_string(c.down_block_types.size()) + " entries for " +
                                   std::to_string(n) + " block_out_channels");
  if (c.up_block_types.size() != n)
    r.fail("up_block_types", "has " + std::to_string(c.up_block_types.size()) + " entries for " +
                                 std::to_string(n) + " down blocks");
  auto list_or = [&](const char* key, int64_t def, int64_t lo, int64_t hi) {
    return j.contains(key) ? r.per_block(key, n, lo, hi) : std::vector<int64_t>(n, def);
  };
  c.layers_per_block = list_or("layers_per_block", 2, 1, kMaxDepth);
  c.transformer_layers_per_block = list_or("transformer_layers_per_block", 1, 1, kMaxDepth);
  c.cross_attention_dim = list_or("cross_attention_dim", 1280, 1, kMaxWidth);
  c.attention_head_dim = list_or("attention_head_dim", 8, 1, kMaxWidth);
  if (j.contains("mid_block_type")) {
    const json& m = j.at("mid_block_type");
    if (m.is_null()) {
      c.mid_block = false;
    } else if (!m.is_string() || m.get<std::string>() != "UNetMidBlock2DCrossAttn") {
      r.fail("mid_block_type", "is " + dump(m) + "; rsam supports UNetMidBlock2DCrossAttn (or null)");
    }
  }
  if (j.contains("only_cross_attention")) {
    const json& v = j.at("only_cross_attention");
    bool any = v.is_boolean() && v.get<bool>();
    if (v.is_array())
      for (const auto& e : v) any = any || !e.is_boolean() || e.get<bool>();
    if (any || !(v.is_boolean() || v.is_array())) r.fail("only_cross_attention", "must be false (rsam has no cross-only attention)");
  }
}

void read_unet_scalars(const Reader& r, UNetConfig& c) {
  const json& j = r.j;
  auto has = [&](const char* k) { return j.contains(k) && !j.at(k).is_null(); };
  if (has("in_channels")) c.in_channels = r.integer("in_channels", 1, kMaxWidth);
  if (has("out_channels")) c.out_channels = r.integer("out_channels", 1, kMaxWidth);
  if (has("center_input_sample")) c.center_input_sample = r.boolean("center_input_sample");
  if (has("flip_sin_to_cos")) c.flip_sin_to_cos = r.boolean("flip_sin_to_cos");
  if (has("freq_shift")) c.freq_shift = r.number("freq_shift");
  if (has("downsample_padding")) c.downsample_padding = r.integer("downsample_padding", 0, 8);
  if (has("mid_block_scale_factor")) c.mid_block_scale_factor = r.number("mid_block_scale_factor");
  if (has("act_fn")) c.act_fn = r.string("act_fn");
  if (j.contains("norm_num_groups")) {
    if (j.at("norm_num_groups").is_null()) r.fail("norm_num_groups", "is null; rsam needs group norms");
    c.norm_num_groups = r.integer("norm_num_groups", 1, kMaxWidth);
  }
  if (has("norm_eps")) c.norm_eps = r.number("norm_eps");
  if (has("use_linear_projection")) c.use_linear_projection = r.boolean("use_linear_projection");
  if (has("upcast_attention")) c.upcast_attention = r.boolean("upcast_attention");
  if (has("time_embedding_dim")) c.time_embedding_dim = r.integer("time_embedding_dim", 1, kMaxWidth);
  if (has("time_embedding_act_fn")) c.time_embedding_act_fn = r.string("time_embedding_act_fn");
  if (has("timestep_post_act")) c.timestep_post_act = r.string("timestep_post_act");
  if (has("conv_in_kernel")) c.conv_in_kernel = r.integer("conv_in_kernel", 1, 15);
  if (has("conv_out_kernel")) c.conv_out_kernel = r.integer("conv_out_kernel", 1, 15);
}

const std::set<std::string>& unet_known_keys() {
  static const std::set<std::string> s = {
      "in_channels", "out_channels", "center_input_sample", "flip_sin_to_cos", "freq_shift", "down_block_types",
      "mid_block_type", "up_block_types", "only_cross_attention", "block_out_channels", "layers_per_block",
      "downsample_padding", "mid_block_scale_factor", "act_fn", "norm_num_groups", "norm_eps",
      "cross_attention_dim", "transformer_layers_per_block", "attention_head_dim", "use_linear_projection",
      "upcast_attention", "time_embedding_dim", "time_embedding_act_fn", "timestep_post_act", "conv_in_kernel",
      "conv_out_kernel"};
  return s;
}

}  // namespace

std::string read_text_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot read " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) throw Error("cannot read " + path);
  return ss.str();
}

// ---- U-Net -----------------------------------------------------------------

void UNetConfig::validate() const {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw Error("invalid U-Net config: " + what);
  };
  const size_t n = num_blocks();
  need(n >= 1 && n <= kMaxBlocks, "block_out_channels must have 1 to 8 entries");
  need(down_block_types.size() == n && up_block_types.size() == n, "one down and one up block per block_out_channels");
  need(layers_per_block.size() == n && transformer_layers_per_block.size() == n && cross_attention_dim.size() == n &&
           attention_head_dim.size() == n,
       "per-block lists must have one entry per block");
  need(norm_num_groups >= 1, "norm_num_groups must be positive");
  for (size_t i = 0; i < n; ++i) {
    const int64_t ch = block_out_channels[i];
    need(ch >= 1 && ch % norm_num_groups == 0, "block_out_channels " + std::to_string(ch) +
                                                   " is not a multiple of norm_num_groups " +
                                                   std::to_string(norm_num_groups));
    need(attention_head_dim[i] >= 1 && attention_head_dim[i] <= ch,
         "attention_head_dim (heads) " + std::to_string(attention_head_dim[i]) + " does not fit " +
             std::to_string(ch) + " channels");
    need(layers_per_block[i] >= 1 && transformer_layers_per_block[i] >= 1 && cross_attention_dim[i] >= 1,
         "layer counts and cross_attention_dim must be positive");
  }
  // act_fn is required; the two optional activations may be unset (empty).
  for (const auto* a : {&act_fn, &time_embedding_act_fn, &timestep_post_act})
    need(is_activation(*a) || (a != &act_fn && a->empty()),
         "activation '" + *a + "' is not one of silu, swish, gelu, relu, mish");
  need(norm_eps > 0 && std::isfinite(norm_eps), "norm_eps must be positive");
  need(mid_block_scale_factor != 0 && std::isfinite(mid_block_scale_factor), "mid_block_scale_factor must be non-zero");
  need(conv_in_kernel % 2 == 1 && conv_out_kernel % 2 == 1, "conv_in_kernel and conv_out_kernel must be odd");
  need(block_out_channels[0] / 2 - freq_shift != 0, "freq_shift equals half the time channels (division by zero)");
  need(time_embed_dim() >= 1 && in_channels >= 1 && out_channels >= 1, "channel counts must be positive");
}

UNetConfig UNetConfig::from_json(const std::string& text, const std::string& origin) {
  const json j = parse_object(text, origin);
  const Reader r{j, origin};
  if (j.contains("_class_name")) {
    const json& cls = j.at("_class_name");
    if (!cls.is_string() || cls.get<std::string>() != "UNet2DConditionModel")
      r.fail("_class_name", "is " + dump(cls) + "; rsam reads UNet2DConditionModel");
  }
  UNetConfig c;
  try {
    read_unet_blocks(r, c);
    read_unet_scalars(r, c);
  } catch (const json::exception&) {
    throw Error(origin + ": malformed value");
  }
  for (const auto& [key, value] : j.items()) {
    if (key.empty() || key[0] == '_' || unet_known_keys().count(key) || unet_inert_keys().count(key)) continue;
    auto fixed = unet_fixed_defaults().find(key);
    if (fixed == unet_fixed_defaults().end()) {
      c.ignored_keys.push_back(key);
    } else if (value != fixed->second) {
      r.fail(key, "is " + dump(value) + "; rsam supports only " + dump(fixed->second));
    }
  }
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(origin + ": " + e.what());
  }
  return c;
}

UNetConfig UNetConfig::from_file(const std::string& path) { return from_json(read_text_file(path), path); }

std::string UNetConfig::to_json() const {
  json j{{"_class_name", "UNet2DConditionModel"},
         {"in_channels", in_channels},
         {"out_channels", out_channels},
         {"center_input_sample", center_input_sample},
         {"flip_sin_to_cos", flip_sin_to_cos},
         {"freq_shift", freq_shift},
         {"down_block_types", down_block_types},
         {"mid_block_type", mid_block ? json("UNetMidBlock2DCrossAttn") : json(nullptr)},
         {"up_block_types", up_block_types},
         {"block_out_channels", block_out_channels},
         {"layers_per_block", layers_per_block},
         {"transformer_layers_per_block", transformer_layers_per_block},
         {"downsample_padding", downsample_padding},
         {"mid_block_scale_factor", mid_block_scale_factor},
         {"act_fn", act_fn},
         {"norm_num_groups", norm_num_groups},
         {"norm_eps", norm_eps},
         {"cross_attention_dim", cross_attention_dim},
         {"attention_head_dim", attention_head_dim},
         {"use_linear_projection", use_linear_projection},
         {"upcast_attention", upcast_attention},
         {"conv_in_kernel", conv_in_kernel},
         {"conv_out_kernel", conv_out_kernel}};
  j["time_embedding_dim"] = time_embedding_dim ? json(time_embedding_dim) : json(nullptr);
  j["time_embedding_act_fn"] = time_embedding_act_fn.empty() ? json(nullptr) : json(time_embedding_act_fn);
  j["timestep_post_act"] = timestep_post_act.empty() ? json(nullptr) : json(timestep_post_act);
  return j.dump(2);
}

// ---- CLIP text encoder -----------------------------------------------------

void ClipTextConfig::validate() const {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw Error("invalid text encoder config: " + what);
  };
  need(num_attention_heads >= 1 && hidden_size % num_attention_heads == 0,
       "hidden_size must be divisible by num_attention_heads");
  need(hidden_act == "quick_gelu" || hidden_act == "gelu",
       "hidden_act '" + hidden_act + "' is not supported (quick_gelu or gelu)");
  need(layer_norm_eps > 0, "layer_norm_eps must be positive");
}

ClipTextConfig ClipTextConfig::from_json(const std::string& text, const std::string& origin) {
  json j = parse_object(text, origin);
  // A full CLIPConfig nests the text model's settings (what
  // CLIPTextConfig.from_pretrained reads from it).
  if (j.contains("text_config") && j.at("text_config").is_object()) {
    json inner = j.at("text_config");
    j = inner;
  }
  const Reader r{j, origin};
  ClipTextConfig c;
  auto has = [&](const char* k) { return j.contains(k) && !j.at(k).is_null(); };
  if (has("vocab_size")) c.vocab_size = r.integer("vocab_size", 1, 1 << 24);
  if (has("hidden_size")) c.hidden_size = r.integer("hidden_size", 1, kMaxWidth);
  if (has("intermediate_size")) c.intermediate_size = r.integer("intermediate_size", 1, 4 * kMaxWidth);
  if (has("num_hidden_layers")) c.num_hidden_layers = r.integer("num_hidden_layers", 1, kMaxDepth);
  if (has("num_attention_heads")) c.num_attention_heads = r.integer("num_attention_heads", 1, kMaxWidth);
  if (has("max_position_embeddings")) c.max_position_embeddings = r.integer("max_position_embeddings", 1, 1 << 16);
  if (has("layer_norm_eps")) c.layer_norm_eps = r.number("layer_norm_eps");
  if (has("hidden_act")) c.hidden_act = r.string("hidden_act");
  if (has("model_type")) {
    const std::string mt = r.string("model_type");
    if (mt != "clip_text_model" && mt != "clip")
      r.fail("model_type", "is '" + mt + "'; rsam reads clip_text_model");
  }
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(origin + ": " + e.what());
  }
  return c;
}

ClipTextConfig ClipTextConfig::from_file(const std::string& path) { return from_json(read_text_file(path), path); }

std::string ClipTextConfig::to_json() const {
  return json{{"model_type", "clip_text_model"},
              {"vocab_size", vocab_size},
              {"hidden_size", hidden_size},
              {"intermediate_size", intermediate_size},
              {"num_hidden_layers", num_hidden_layers},
              {"num_attention_heads", num_attention_heads},
              {"max_position_embeddings", max_position_embeddings},
              {"layer_norm_eps", layer_norm_eps},
              {"hidden_act", hidden_act}}
      .dump(2);
}

// ---- scheduler ---------------------------------------------------------------

void SchedulerConfig::validate() const {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw Error("invalid scheduler config: " + what);
  };
  need(num_train_timesteps >= 2, "num_train_timesteps must be at least 2");
  need(beta_schedule == "linear" || beta_schedule == "scaled_linear" || beta_schedule == "squaredcos_cap_v2" ||
           !trained_betas.empty(),
       "beta_schedule '" + beta_schedule + "' is not supported (linear, scaled_linear, squaredcos_cap_v2)");
  need(trained_betas.empty() || int64_t(trained_betas.size()) == num_train_timesteps,
       "trained_betas must have num_train_timesteps entries");
  need(prediction_type == "epsilon" || prediction_type == "v_prediction" || prediction_type == "sample",
       "prediction_type '" + prediction_type + "' is not one of epsilon, v_prediction, sample");
  need(beta_start >= 0 && beta_end >= 0 && beta_start < 1 && beta_end < 1, "betas must lie in [0, 1)");
}

SchedulerConfig SchedulerConfig::from_json(const std::string& text, const std::string& origin) {
  const json j = parse_object(text, origin);
  const Reader r{j, origin};
  SchedulerConfig c;
  auto has = [&](const char* k) { return j.contains(k) && !j.at(k).is_null(); };
  if (has("_class_name")) c.class_name = r.string("_class_name");
  if (has("num_train_timesteps")) c.num_train_timesteps = r.integer("num_train_timesteps", 2, 1 << 20);
  if (has("beta_start")) c.beta_start = r.number("beta_start");
  if (has("beta_end")) c.beta_end = r.number("beta_end");
  if (has("beta_schedule")) c.beta_schedule = r.string("beta_schedule");
  if (has("prediction_type")) c.prediction_type = r.string("prediction_type");
  if (has("trained_betas")) {
    const json& tb = j.at("trained_betas");
    if (!tb.is_array()) r.fail("trained_betas", "must be a list of numbers");
    for (const auto& b : tb) {
      if (!b.is_number() || !std::isfinite(b.get<double>())) r.fail("trained_betas", "must be a list of numbers");
      c.trained_betas.push_back(b.get<double>());
    }
  }
  if (has("rescale_betas_zero_snr") && r.boolean("rescale_betas_zero_snr"))
    r.fail("rescale_betas_zero_snr", "is true; rsam supports only false");
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(origin + ": " + e.what());
  }
  return c;
}

SchedulerConfig SchedulerConfig::from_file(const std::string& path) { return from_json(read_text_file(path), path); }

std::string SchedulerConfig::to_json() const {
  json j{{"_class_name", class_name},           {"num_train_timesteps", num_train_timesteps},
         {"beta_start", beta_start},            {"beta_end", beta_end},
         {"beta_schedule", beta_schedule},      {"prediction_type", prediction_type}};
  j["trained_betas"] = trained_betas.empty() ? json(nullptr) : json(trained_betas);
  return j.dump(2);
}

// ---- tokenizer -----------------------------------------------------------------

namespace {

// A special token as tokenizer files spell it: a string, or an AddedToken
// object {"content": ...}; null or absent is "not set".
std::string token_text(const json& v, const std::string& origin, const std::string& key) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v.at("content").is_string()) return v.at("content").get<std::string>();
  if (v.is_null()) return "";
  throw Error(origin + ": '" + key + "' must be a string or an AddedToken");
}

}  // namespace

ClipTokens ClipTokens::from_json(const std::string& tokenizer_config, const std::string& special_tokens_map,
                                 const std::string& vocab_text, const std::string& origin) {
  const json tc = parse_object(tokenizer_config, origin + "/tokenizer_config.json");
  const json stm = special_tokens_map.empty() ? json::object()
                                              : parse_object(special_tokens_map, origin + "/special_tokens_map.json");
  const json vocab = parse_object(vocab_text, origin + "/vocab.json");
  // transformers' from_pretrained: the special tokens map is applied after
  // tokenizer_config.json, so its entries win.
  auto special = [&](const std::string& key) {
    std::string t;
    if (tc.contains(key)) t = token_text(tc.at(key), origin + "/tokenizer_config.json", key);
    if (stm.contains(key)) t = token_text(stm.at(key), origin + "/special_tokens_map.json", key);
    if (t.empty()) throw Error(origin + ": the tokenizer has no " + key + " (needed to pad the prompt)");
    return t;
  };
  auto id_of = [&](const std::string& token, const std::string& key) -> int64_t {
    if (vocab.contains(token) && vocab.at(token).is_number_integer()) return vocab.at(token).get<int64_t>();
    // Newer tokenizer files list added tokens by id.
    if (tc.contains("added_tokens_decoder") && tc.at("added_tokens_decoder").is_object())
      for (const auto& [id, t] : tc.at("added_tokens_decoder").items())
        if (t.is_object() && t.contains("content") && t.at("content") == json(token)) try {
            return std::stoll(id);
          } catch (...) {
          }
    throw Error(origin + ": " + key + " '" + token + "' is not in vocab.json");
  };
  ClipTokens c;
  const std::string bos = special("bos_token"), eos = special("eos_token");
  c.bos = id_of(bos, "bos_token");
  c.eos = id_of(eos, "eos_token");
  c.pad_token = special("pad_token");
  c.pad = id_of(c.pad_token, "pad_token");
  std::string unk = "<|endoftext|>";
  for (const auto* file : {&tc, &stm})
    if (file->contains("unk_token") && !file->at("unk_token").is_null())
      unk = token_text(file->at("unk_token"), origin, "unk_token");
  c.unk = id_of(unk, "unk_token");
  c.special_ids = {{bos, c.bos}, {eos, c.eos}, {unk, c.unk}, {c.pad_token, c.pad}};
  // Also kept whole in a prompt (a list of strings or AddedTokens; the map wins).
  const json* extra = stm.contains("additional_special_tokens")  ? &stm.at("additional_special_tokens")
                      : tc.contains("additional_special_tokens") ? &tc.at("additional_special_tokens")
                                                                 : nullptr;
  if (extra && !extra->is_null()) {
    if (!extra->is_array()) throw Error(origin + ": 'additional_special_tokens' must be a list");
    for (const auto& t : *extra) {
      const std::string text = token_text(t, origin, "additional_special_tokens");
      if (!text.empty()) c.special_ids[text] = id_of(text, "additional special token");
    }
  }
  const std::string tc_origin = origin + "/tokenizer_config.json";
  if (!tc.contains("model_max_length")) throw Error(tc_origin + ": 'model_max_length' is missing");
  c.max_length = Reader{tc, tc_origin}.integer("model_max_length", 2, 4096);
  return c;
}

ClipTokens ClipTokens::from_folder(const std::string& dir) {
  const std::string stm_path = dir + "/special_tokens_map.json";
  std::string stm;
  if (std::ifstream(stm_path).good()) stm = read_text_file(stm_path);
  return from_json(read_text_file(dir + "/tokenizer_config.json"), stm, read_text_file(dir + "/vocab.json"), dir);
}

std::vector<int64_t> ClipTokens::encode(const std::string& prompt) const {
  if (!prompt.empty())
    throw Error("ClipTokens encodes only the empty prompt (ClipTokenizer encodes text); got \"" +
                (prompt.size() > 30 ? prompt.substr(0, 27) + "..." : prompt) + "\"");
  std::vector<int64_t> ids(size_t(max_length), pad);
  ids[0] = bos;
  ids[1] = eos;
  return ids;
}

}  // namespace rsam::diffusion
