#include "adapt/adapter.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iomanip>
#include <set>
#include <sstream>

#include "error.h"
#include "io/fs.h"
#include "model/checkpoint.h"

namespace rsam::adapt {

namespace {

std::map<std::string, MethodInfo>& registry() {
  static std::map<std::string, MethodInfo> r;
  return r;
}

int64_t resolve_split(const nlohmann::json& cfg, const std::string& layer, int64_t out) {
  const auto s = cfg.value("split", nlohmann::json("auto"));
  int64_t split = 1;
  if (s.is_string()) {
    if (s.get<std::string>() != "auto") throw Error("adapter 'split' must be \"auto\" or an integer");
    // The papers adapt q, k and v separately even though SAM fuses them.
    split = layer.size() >= 4 && layer.compare(layer.size() - 4, 4, ".qkv") == 0 ? 3 : 1;
  } else if (s.is_number_integer()) {
    split = s.get<int64_t>();
  } else {
    throw Error("adapter 'split' must be \"auto\" or an integer");
  }
  if (split < 1 || out % split) throw Error("adapter split " + std::to_string(split) + " does not divide " + layer);
  return split;
}

}  // namespace

void register_method(MethodInfo info) {
  const auto name = info.name;
  registry()[name] = std::move(info);
}

const MethodInfo& method_info(const std::string& name) {
  auto it = registry().find(name);
  if (it == registry().end()) {
    std::string known;
    for (const auto& [k, v] : registry()) known += (known.empty() ? "" : ", ") + k;
    throw Error("unknown adapter method '" + name + "' (known: " + known + ")");
  }
  return it->second;
}

std::vector<std::string> method_names() {
  std::vector<std::string> v;
  for (const auto& [k, _] : registry()) v.push_back(k);
  return v;
}

bool glob_match(const std::string& p, const std::string& s) {
  // Iterative '*' matcher (any run of characters).
  size_t pi = 0, si = 0, star = std::string::npos, mark = 0;
  while (si < s.size()) {
    if (pi < p.size() && p[pi] == s[si]) {
      ++pi;
      ++si;
    } else if (pi < p.size() && p[pi] == '*') {
      star = pi++;
      mark = si;
    } else if (star != std::string::npos) {
      pi = star + 1;
      si = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

std::vector<std::pair<std::string, AdaptableLinear>> adaptable_layers(torch::nn::Module& model) {
  std::vector<std::pair<std::string, AdaptableLinear>> out;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    if (auto lin = std::dynamic_pointer_cast<AdaptableLinearImpl>(item.value()))
      out.emplace_back(item.key(), AdaptableLinear(lin));
  }
  return out;
}

torch::Tensor gumbel_sigmoid_gate(const torch::Tensor& logits, double tau, bool training) {
  if (!training) return (logits > 0).to(logits.dtype());  // sigma(a) > 0.5  <=>  a > 0
  auto u = torch::rand_like(logits).clamp(1e-10, 1.0 - 1e-10);
  auto g = -torch::log(-torch::log(u));
  auto soft = torch::sigmoid((logits + g) / tau);
  auto hard = (soft > 0.5).to(soft.dtype());
  return hard + soft - soft.detach();  // straight-through
}

ConfigKey int_key(const std::string& name, int64_t min, int64_t max) {
  return {name, ConfigKey::Kind::Int, double(min), double(max), false, {}};
}
ConfigKey number_key(const std::string& name, double min, double max, bool above_min) {
  return {name, ConfigKey::Kind::Number, min, max, above_min, {}};
}
ConfigKey bool_key(const std::string& name) { return {name, ConfigKey::Kind::Bool, 0, 0, false, {}}; }
ConfigKey choice_key(const std::string& name, std::vector<std::string> choices) {
  return {name, ConfigKey::Kind::Choice, 0, 0, false, std::move(choices)};
}
ConfigKey int_list_key(const std::string& name, int64_t min, int64_t max) {
  return {name, ConfigKey::Kind::IntList, double(min), double(max), false, {}};
}

namespace {

std::string fmt_number(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

// An integer written as one (8, or 8.0), not a fraction to truncate.
bool integral(const nlohmann::json& v) {
  if (v.is_number_integer()) return true;
  if (!v.is_number_float()) return false;
  const double d = v.get<double>();
  return std::isfinite(d) && d == std::floor(d);
}

// "must be ..." for a key's type and range, as the error message says it.
std::string expected(const ConfigKey& k) {
  using K = ConfigKey::Kind;
  if (k.kind == K::Bool) return "true or false";
  if (k.kind == K::Choice) {
    std::string s = "one of";
    for (size_t i = 0; i < k.choices.size(); ++i) s += (i ? ", " : " ") + k.choices[i];
    return s;
  }
  const bool lo = std::isfinite(k.min), hi = std::isfinite(k.max);
  std::string what = k.kind == K::Number ? "a finite number"
                     : k.kind == K::Int  ? "an integer"
                                         : "a non-empty list of integers";
  if (k.kind != K::Number && lo && hi) return what + " in " + fmt_number(k.min) + ".." + fmt_number(k.max);
  if (lo) what += std::string(k.above_min ? " > " : " >= ") + fmt_number(k.min);
  if (lo && hi) what += " and";
  if (hi) what += " <= " + fmt_number(k.max);
  return what;
}

bool in_range(const ConfigKey& k, double v) {
  return std::isfinite(v) && (k.above_min ? v > k.min : v >= k.min) && v <= k.max;
}

bool valid_value(const ConfigKey& k, const nlohmann::json& v) {
  using K = ConfigKey::Kind;
  switch (k.kind) {
    case K::Bool:
      return v.is_boolean();
    case K::Choice:
      return v.is_string() && std::find(k.choices.begin(), k.choices.end(), v.get<std::string>()) != k.choices.end();
    case K::Int:
      return integral(v) && in_range(k, v.get<double>());
    case K::Number:
      return v.is_number() && in_range(k, v.get<double>());
    case K::IntList:
      if (!v.is_array() || v.empty()) return false;
      for (const auto& e : v)
        if (!integral(e) || !in_range(k, e.get<double>())) return false;
      return true;
  }
  return false;
}

// The keys every method takes, and those of the methods that wrap layers.
std::vector<ConfigKey> common_keys(const MethodInfo& info) {
  std::vector<ConfigKey> keys{{"method", ConfigKey::Kind::Choice, 0, 0, false, {info.name}}, bool_key("train_decoder")};
  if (info.factory) {
    keys.push_back({"targets", ConfigKey::Kind::Choice, 0, 0, false, {}});  // checked by hand: a list of globs
    keys.push_back({"split", ConfigKey::Kind::Int, 1, double(kMaxAdapterSize), false, {}});  // or "auto"
  }
  return keys;
}

}  // namespace

void check_config(const nlohmann::json& cfg, const std::string& source) {
  const std::string where = "adapter config '" + source + "': ";
  if (!cfg.is_object()) throw Error(where + "not a JSON object");
  if (!cfg.contains("method") || !cfg["method"].is_string()) throw Error(where + "needs a \"method\" string");
  const auto& info = method_info(cfg["method"].get<std::string>());
  std::vector<ConfigKey> keys = common_keys(info);
  keys.insert(keys.end(), info.keys.begin(), info.keys.end());
  for (const auto& [name, value] : cfg.items()) {
    auto k = std::find_if(keys.begin(), keys.end(), [&](const ConfigKey& c) { return c.name == name; });
    if (k == keys.end()) {
      std::vector<std::string> names;
      for (const auto& c : keys) names.push_back(c.name);
      std::sort(names.begin(), names.end());
      std::string allowed;
      for (const auto& n : names) allowed += (allowed.empty() ? "" : ", ") + n;
      throw Error(where + "unknown key \"" + name + "\" for method " + info.name + " (allowed: " + allowed + ")");
    }
    bool ok = false;
    std::string want;
    if (name == "method") {
      ok = true;
    } else if (name == "targets") {
      ok = value.is_array() && !value.empty() &&
           std::all_of(value.begin(), value.end(), [](const nlohmann::json& t) { return t.is_string(); });
      want = "a non-empty list of layer-name patterns";
    } else if (name == "split") {
      ok = (value.is_string() && value.get<std::string>() == "auto") || valid_value(*k, value);
      want = "\"auto\" or " + expected(*k);
    } else {
      ok = valid_value(*k, value);
      want = expected(*k);
    }
    if (!ok) throw Error(where + "\"" + name + "\" must be " + want + " (got " + value.dump() + ")");
  }
  if (info.check) {
    try {
      info.check(cfg);
    } catch (const Error& e) {
      throw Error(where + e.what());
    }
  }
}

nlohmann::json load_config(const std::string& method_or_file) {
  if (method_or_file.find('.') == std::string::npos && method_or_file.find('/') == std::string::npos) {
    nlohmann::json j{{"method", method_or_file}};
    check_config(j, method_or_file);
    return j;
  }
  const auto bytes = io::read_file(method_or_file);
  auto j = nlohmann::json::parse(bytes.begin(), bytes.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) throw Error("adapter config '" + method_or_file + "' is not a JSON object");
  check_config(j, method_or_file);
  return j;
}

std::string base_fingerprint(const torch::nn::Module& model, const std::set<std::string>& exclude) {
  // FNV-1a over names and bytes of every base tensor (adapters excluded).
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      std::memcpy(&w, b + i, 8);
      h = (h ^ w) * 1099511628211ull;
    }
    for (; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  };
  auto add = [&](const std::string& name, const torch::Tensor& t) {
    if (name.find(".adapter.") != std::string::npos || exclude.count(name)) return;
    auto c = t.detach().to(torch::kCPU).contiguous();
    mix(name.data(), name.size());
    mix(c.data_ptr(), size_t(c.numel()) * c.element_size());
  };
  for (const auto& p : model.named_parameters(true)) add(p.key(), p.value());
  for (const auto& b : model.named_buffers(true)) add(b.key(), b.value());
  std::ostringstream os;
  os << std::hex << std::setw(16) << std::setfill('0') << h;
  return os.str();
}

AdaptedSam::AdaptedSam(Sam base, nlohmann::json cfg, uint64_t seed) : model_(std::move(base)), config_(std::move(cfg)) {
  if (!config_.is_object() || !config_.contains("method") || !config_["method"].is_string())
    throw Error("adapter config needs a \"method\" string");
  method_ = config_["method"].get<std::string>();
  const auto& info = method_info(method_);
  for (const auto& p : model_->parameters()) base_params_ += p.numel();
  for (auto& p : model_->parameters()) p.set_requires_grad(false);

  std::vector<std::string> targets = info.default_targets;
  if (config_.contains("targets")) {
    if (!config_["targets"].is_array()) throw Error("adapter \"targets\" must be a list of patterns");
    targets = config_["targets"].get<std::vector<std::string>>();
  }
  // Same seed, same initial adapter (independent of the global torch RNG).
  torch::manual_seed(seed);
  std::set<std::string> names;
  if (info.factory) {
    for (auto& [name, lin] : adaptable_layers(*model_)) {
      bool hit = false;
      for (const auto& t : targets) hit = hit || glob_match(t, name);
      if (!hit) continue;
      LayerInfo li{name, lin->in_features, lin->out_features, 1};
      li.split = resolve_split(config_, name, li.out);
      auto a = info.factory(config_, li);
      a->to(lin->weight.device());
      lin->attach(a);
      adapters_.emplace_back(name, a);
    }
    if (adapters_.empty()) throw Error("adapter targets match no layer of this model");
  }
  const bool train_decoder = config_.value("train_decoder", false) || method_ == "decoder_only";
  for (auto& p : model_->named_parameters(true)) {
    const auto& k = p.key();
    const bool is_adapter = k.find(".adapter.") != std::string::npos;
    const bool base_trained = (info.trains_base && info.trains_base(k)) ||
                              (train_decoder && k.rfind("mask_decoder.", 0) == 0);
    if (is_adapter || base_trained) {
      p.value().set_requires_grad(true);
      trainable_.emplace_back(k, p.value());
    }
  }
  base_params_ = 0;
  for (const auto& p : model_->named_parameters(true))
    if (p.key().find(".adapter.") == std::string::npos) base_params_ += p.value().numel();
}

std::vector<std::pair<std::string, torch::Tensor>> AdaptedSam::trainable() const { return trainable_; }

int64_t AdaptedSam::trainable_count() const {
  int64_t n = 0;
  for (const auto& [k, t] : trainable_) n += t.numel();
  return n;
}

torch::Tensor AdaptedSam::aux_loss() const {
  torch::Tensor total;
  for (const auto& [name, a] : adapters_) {
    auto l = a->aux_loss();
    if (l.defined()) total = total.defined() ? total + l : l;
  }
  return total.defined() ? total : torch::zeros({});
}

nlohmann::json AdaptedSam::gates() const {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [name, a] : adapters_) {
    auto g = a->gates();
    if (!g.is_null()) j[name] = g;
  }
  return j;
}

std::string AdaptedSam::fingerprint() const {
  std::set<std::string> trained;
  for (const auto& [k, t] : trainable_) trained.insert(k);
  return base_fingerprint(*model_, trained);
}

void AdaptedSam::save(const std::string& path) const {
  io::StateDict sd;
  for (const auto& [k, t] : trainable_) sd.emplace_back(k, from_torch(t));
  std::map<std::string, std::string> meta{{"rsam.adapter", config_.dump()},
                                          {"rsam.base_fingerprint", fingerprint()},
                                          {"rsam.base_config", model_->config.to_json()},
                                          {"rsam.base_params", std::to_string(base_params_)},
                                          {"format", "pt"}};
  io::save_safetensors(path, sd, meta);
}

AdaptedSam AdaptedSam::load(Sam base, const std::string& path) {
  auto f = io::load_safetensors(path);
  auto cfg_it = f.metadata.find("rsam.adapter");
  if (cfg_it == f.metadata.end()) throw Error("'" + path + "' is not an rsam adapter file (no rsam.adapter metadata)");
  nlohmann::json cfg;
  try {
    cfg = nlohmann::json::parse(cfg_it->second);
  } catch (const std::exception&) {
    throw Error("'" + path + "': adapter config is not valid JSON");
  }
  AdaptedSam a(std::move(base), cfg, 0);
  const auto fp = f.metadata.count("rsam.base_fingerprint") ? f.metadata.at("rsam.base_fingerprint") : "";
  const auto have = a.fingerprint();
  if (fp != have)
    throw Error("adapter '" + path + "' was trained on a different base model (fingerprint " + fp + ", this model " +
                have + ")");
  std::map<std::string, torch::Tensor> want(a.trainable_.begin(), a.trainable_.end());
  if (want.size() != f.tensors.size())
    throw Error("adapter '" + path + "' holds " + std::to_string(f.tensors.size()) + " tensors, its config expects " +
                std::to_string(want.size()));
  torch::NoGradGuard ng;
  for (const auto& [k, t] : f.tensors) {
    auto it = want.find(k);
    if (it == want.end()) throw Error("adapter '" + path + "': unexpected tensor '" + k + "'");
    auto src = to_torch(t);
    if (src.sizes() != it->second.sizes()) throw Error("adapter '" + path + "': tensor '" + k + "' has the wrong shape");
    if (src.is_floating_point() && !torch::isfinite(src).all().item<bool>())
      throw Error("adapter '" + path + "': tensor '" + k + "' holds NaN or Inf");
    it->second.copy_(src.to(it->second.dtype()));
  }
  return a;
}

void rebase_adapter(Sam old_base, Sam new_base, const std::string& in, const std::string& out) {
  const auto from = AdaptedSam::load(std::move(old_base), in);
  AdaptedSam to(std::move(new_base), from.config(), 0);
  auto src = from.trainable(), dst = to.trainable();
  if (src.size() != dst.size()) throw Error("adapter '" + in + "' does not fit the converted model");
  torch::NoGradGuard ng;
  for (size_t i = 0; i < src.size(); ++i) {
    if (src[i].first != dst[i].first || !src[i].second.sizes().equals(dst[i].second.sizes()))
      throw Error("adapter '" + in + "': tensor '" + src[i].first + "' does not fit the converted model");
    dst[i].second.copy_(src[i].second);
  }
  to.save(out);
}

void AdaptedSam::merge() {
  const auto& info = method_info(method_);
  if (!info.mergeable) throw Error("method '" + method_ + "' is input-dependent or structural and cannot be merged");
  torch::NoGradGuard ng;
  for (auto& [name, lin] : adaptable_layers(*model_)) {
    if (!lin->adapter) continue;
    auto a = std::dynamic_pointer_cast<Adapter>(lin->adapter);
    if (!a || !a->merge_into(lin->weight, lin->bias)) throw Error("layer " + name + " cannot be merged");
    lin->detach();
  }
  adapters_.clear();
  trainable_.clear();
}

nlohmann::json describe_adapter_file(const std::string& path) {
  const auto f = io::load_safetensors(path);
  const auto it = f.metadata.find("rsam.adapter");
  if (it == f.metadata.end()) throw Error("'" + path + "' is not an rsam adapter file (no rsam.adapter metadata)");
  const auto cfg = nlohmann::json::parse(it->second, nullptr, /*allow_exceptions=*/false);
  if (!cfg.is_object()) throw Error("'" + path + "': its rsam.adapter metadata is not a JSON object");
  int64_t n = 0;
  for (const auto& [k, t] : f.tensors) n += t.numel();
  int64_t base = 0;
  if (const auto b = f.metadata.find("rsam.base_params"); b != f.metadata.end()) {
    char* end = nullptr;
    base = std::strtoll(b->second.c_str(), &end, 10);
    if (end == b->second.c_str() || *end || base < 0) base = 0;  // unreadable: said as unknown, not fatal
  }
  const auto fp = f.metadata.find("rsam.base_fingerprint");
  return {{"method", cfg.value("method", "")},
          {"config", cfg},
          {"parameters", n},
          {"tensors", f.tensors.size()},
          {"base_parameters", base},
          {"percent_of_base", base ? 100.0 * double(n) / double(base) : 0.0},
          {"base_fingerprint", fp == f.metadata.end() ? "" : fp->second}};
}

}  // namespace rsam::adapt
