// Parameter-efficient adaptation of a frozen SAM. An adapter method is a
// named component built from JSON through a registry (tiny-cuda-nn style):
// adding a method is one file that calls RSAM_REGISTER_ADAPTER.
//
// Config, all fields optional but "method":
//   {"method": "gara",
//    "targets": ["image_encoder.blocks.*.attn.qkv"],   // glob over layer names
//    "split": "auto",            // qkv: q, k, v adapted separately (3); else 1
//    "train_decoder": false,
//    ...method parameters (rank, alpha, r_low, r_high, tau, ...)}
// Each method declares its keys (MethodInfo::keys): load_config refuses any
// other key, a value of the wrong type, or one out of range.
#pragma once

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "io/tensor_file.h"
#include "model/linear.h"
#include "model/sam.h"

namespace rsam::adapt {

struct LayerInfo {
  std::string name;   // e.g. image_encoder.blocks.3.attn.qkv
  int64_t in = 0, out = 0;
  int64_t split = 1;  // independent output slices (3 for q, k, v)
};

// Base of every adapter that wraps a Linear. Subclasses implement forward
// and may report gates, merge, or add an auxiliary loss.
struct Adapter : LinearAdapter {
  virtual std::string method() const = 0;
  // Folds the update into (weight, bias) for zero inference overhead;
  // false when the method is input-dependent.
  virtual bool merge_into(torch::Tensor& /*weight*/, torch::Tensor& /*bias*/) { return false; }
  // Auxiliary loss accumulated by the last forward (Conv-LoRA load balance).
  virtual torch::Tensor aux_loss() { return {}; }
  // Per-image gate decisions of the last forward, for introspection.
  virtual nlohmann::json gates() const { return nullptr; }
};

using AdapterFactory = std::function<std::shared_ptr<Adapter>(const nlohmann::json& cfg, const LayerInfo& layer)>;

// One parameter of a method's JSON config: its type and range. A config is
// checked against its method's keys before anything is built, so a typo or
// a fractional rank is an error instead of a silent default or truncation.
struct ConfigKey {
  enum class Kind { Int, Number, Bool, Choice, IntList };
  std::string name;
  Kind kind = Kind::Number;
  double min = -HUGE_VAL, max = HUGE_VAL;  // Int, Number, and each IntList item
  bool above_min = false;                  // min itself excluded (tau > 0)
  std::vector<std::string> choices;        // Kind::Choice
};
// The sizes of a component (ranks, hidden widths): 1 up to this.
constexpr int64_t kMaxAdapterSize = 65536;
ConfigKey int_key(const std::string& name, int64_t min = 1, int64_t max = kMaxAdapterSize);
ConfigKey number_key(const std::string& name, double min = -HUGE_VAL, double max = HUGE_VAL, bool above_min = false);
ConfigKey bool_key(const std::string& name);
ConfigKey choice_key(const std::string& name, std::vector<std::string> choices);
ConfigKey int_list_key(const std::string& name, int64_t min = 1, int64_t max = kMaxAdapterSize);

struct MethodInfo {
  std::string name, description;
  std::vector<std::string> default_targets;  // empty: the method wraps nothing
  bool mergeable = false;
  AdapterFactory factory;  // null for methods that only unfreeze base tensors
  // For methods that unfreeze base tensors (bitfit, decoder_only): selects them.
  std::function<bool(const std::string& param_name)> trains_base;
  // The method's own config keys; "method" and "train_decoder" (every
  // method) and "targets" and "split" (methods with a factory) come on top.
  std::vector<ConfigKey> keys;
  // Checks across keys (r_low <= r_high), on a config whose keys passed:
  // throws rsam::Error with the message's tail ("r_low must not exceed r_high").
  std::function<void(const nlohmann::json& cfg)> check;
};

void register_method(MethodInfo info);
const MethodInfo& method_info(const std::string& name);  // rsam::Error if unknown
std::vector<std::string> method_names();

struct RegisterAdapter {
  explicit RegisterAdapter(MethodInfo info) { register_method(std::move(info)); }
};

// A frozen SAM with one adapter method attached.
class AdaptedSam {
 public:
  // Attaches fresh adapters (seeded) and freezes everything else.
  AdaptedSam(Sam base, nlohmann::json config, uint64_t seed = 0);

  Sam& model() { return model_; }
  const nlohmann::json& config() const { return config_; }
  const std::string& method() const { return method_; }
  const std::vector<std::pair<std::string, std::shared_ptr<Adapter>>>& adapters() const { return adapters_; }

  // Everything the optimizer updates, with state-dict names.
  std::vector<std::pair<std::string, torch::Tensor>> trainable() const;
  int64_t trainable_count() const;
  int64_t base_count() const { return base_params_; }
  torch::Tensor aux_loss() const;  // sum over adapters (zero if none)
  nlohmann::json gates() const;    // {layer: gates} for gated methods

  // Adapter file: safetensors with only the trainable tensors, the config
  // and the base model's fingerprint.
  void save(const std::string& path) const;
  // Builds the adapters from the file's config and loads its tensors;
  // rsam::Error if the file was trained on a different base.
  static AdaptedSam load(Sam base, const std::string& path);

  // Folds mergeable adapters into the base weights and detaches them.
  void merge();

 private:
  std::string fingerprint() const;
  Sam model_;
  nlohmann::json config_;
  std::string method_;
  std::vector<std::pair<std::string, std::shared_ptr<Adapter>>> adapters_;
  std::vector<std::pair<std::string, torch::Tensor>> trainable_;
  int64_t base_params_ = 0;
};

// What an adapter file holds, read without a base model: {method, config,
// parameters, tensors, base_parameters, percent_of_base, base_fingerprint}.
// rsam::Error if the file is not an rsam adapter file.
nlohmann::json describe_adapter_file(const std::string& path);

// Carries an adapter file over to a re-sized copy of its base (`rsam convert
// --img-size`): the adapters' tensors do not depend on the input size, but
// the fingerprint does (the position tables are resampled). Verifies `in`
// against `old_base`, attaches the same adapters to `new_base`, copies every
// trained tensor and writes `out` with new_base's fingerprint. Both models
// get the adapters attached. rsam::Error if `in` does not belong to
// `old_base` or a tensor's shape differs between the two.
void rebase_adapter(Sam old_base, Sam new_base, const std::string& in, const std::string& out);

// A method name ("gara": its defaults) or a JSON config file's contents,
// checked with check_config.
nlohmann::json load_config(const std::string& method_or_file);
// rsam::Error, naming `source` (a file or method name), when the config is
// not an object with a known "method", holds a key that method does not
// take (the allowed ones are listed), or a value of the wrong type or out of
// range: integers must be integers, ranks positive, tau > 0.
void check_config(const nlohmann::json& cfg, const std::string& source);

// 64-bit content hash of every base tensor (hex), recorded in adapter files.
// Tensors the adapter itself trains (BitFit biases, a fine-tuned decoder)
// are excluded, so the fingerprint names the base the file starts from.
std::string base_fingerprint(const torch::nn::Module& model, const std::set<std::string>& exclude = {});

// Glob with '*' matching one dotted component or more characters.
bool glob_match(const std::string& pattern, const std::string& name);

// All AdaptableLinear layers of the model, by state-dict prefix.
std::vector<std::pair<std::string, AdaptableLinear>> adaptable_layers(torch::nn::Module& model);

// Gumbel-sigmoid gate of GaRA (Eq. 3 and 6): hard 0/1 forward; in training
// the straight-through gradient of sigma((logit + G) / tau), G ~ Gumbel(0,1);
// at inference sigma(logit) > 0.5.
torch::Tensor gumbel_sigmoid_gate(const torch::Tensor& logits, double tau, bool training);

}  // namespace rsam::adapt
