#include "diffusion/lora.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "diffusion/layers.h"
#include "error.h"
#include "io/tensor_file.h"
#include "model/checkpoint.h"

namespace rsam::diffusion {

using torch::Tensor;

namespace {

bool starts_with(const std::string& s, const std::string& head) { return s.compare(0, head.size(), head) == 0; }
bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

std::map<std::string, LoraHost*> hosts(torch::nn::Module& model) {
  std::map<std::string, LoraHost*> out;
  for (const auto& item : model.named_modules())
    if (auto* h = dynamic_cast<LoraHost*>(item.value().get())) out[item.key()] = h;
  return out;
}

// A key of a LoRA file -> (module name, true for A / false for B); the
// suffixes are the forms GleSAM's file mixes plus peft's own.
std::pair<std::string, bool> parse_key(std::string k, const std::string& origin) {
  const std::string original = k;
  for (const char* prefix : {"unet.", "base_model.model.", "unet."})
    if (starts_with(k, prefix)) k = k.substr(std::string(prefix).size());
  if (starts_with(original, "text_encoder") || starts_with(original, "te_"))
    throw Error(origin + ": '" + original + "' is a text-encoder LoRA; rsam applies LoRA to the U-Net only");
  static const std::pair<const char*, bool> suffixes[] = {
      {".lora.down.weight", true},      {".lora.up.weight", false},        {".lora_A.weight", true},
      {".lora_B.weight", false},        {".lora_A.default.weight", true}, {".lora_B.default.weight", false}};
  for (const auto& [suffix, is_a] : suffixes)
    if (ends_with(k, suffix)) return {k.substr(0, k.size() - std::string(suffix).size()), is_a};
  throw Error(origin + ": '" + original + "' is not a LoRA factor (expected <module>.lora_A/lora_B.weight or "
                                          "<module>.lora.down/up.weight)");
}

}  // namespace

const std::vector<std::string>& glesam_lora_targets() {
  static const std::vector<std::string> t = {"to_q",       "to_k",          "to_v",
                                             "to_out.0",   "proj_in",       "proj_out",
                                             "ff.net.0.proj", "ff.net.2",  "conv1",
                                             "conv2",      "conv_shortcut", "downsamplers.0.conv",
                                             "upsamplers.0.conv", "time_emb_proj", "conv_in",
                                             "conv_out"};
  return t;
}

bool is_lora_target(const std::string& name, const std::vector<std::string>& targets) {
  for (const auto& t : targets)
    if (name == t || ends_with(name, "." + t)) return true;
  return false;
}

std::vector<std::string> lora_target_modules(torch::nn::Module& model, const std::vector<std::string>& targets) {
  std::vector<std::string> out;
  for (const auto& item : model.named_modules())
    if (dynamic_cast<LoraHost*>(item.value().get()) && is_lora_target(item.key(), targets)) out.push_back(item.key());
  return out;
}

int64_t add_lora(torch::nn::Module& model, const LoraSpec& spec, uint64_t seed) {
  if (spec.rank < 1) throw Error("LoRA rank must be positive");
  auto gen = at::detail::createCPUGenerator(seed);
  auto all = hosts(model);
  int64_t n = 0;
  for (const auto& name : lora_target_modules(model, spec.targets)) {
    auto* h = all.at(name);
    auto a = torch::empty(h->lora_a_shape(spec.rank));
    // kaiming_uniform_(a=sqrt(5)) as torch.nn layers and peft initialize A:
    // bound = 1 / sqrt(fan_in).
    const double bound = 1.0 / std::sqrt(double(a.numel() / a.size(0)));
    a.uniform_(-bound, bound, gen);
    h->set_lora(a, torch::zeros(h->lora_b_shape(spec.rank)), spec.alpha / double(spec.rank), name);
    ++n;
  }
  if (n == 0) throw Error("no module of the model matches the LoRA targets");
  return n;
}

int64_t LoraWeights::rank() const {
  int64_t r = 0;
  for (const auto& [name, ab] : modules) {
    const int64_t ri = ab.first.size(0);
    if (r && ri != r) throw Error("LoRA modules have different ranks (" + std::to_string(r) + " and " +
                                  std::to_string(ri) + " at '" + name + "')");
    r = ri;
  }
  return r;
}

LoraWeights read_lora(const std::string& path) {
  auto file = io::load_safetensors(path);
  LoraWeights w;
  std::map<std::string, std::pair<Tensor, Tensor>> m;
  for (const auto& [key, td] : file.tensors) {
    const auto [module, is_a] = parse_key(key, path);
    auto& slot = is_a ? m[module].first : m[module].second;
    if (slot.defined()) throw Error(path + ": two " + std::string(is_a ? "A" : "B") + " factors for '" + module + "'");
    slot = to_torch(td).to(torch::kFloat32);
  }
  for (const auto& [module, ab] : m) {
    if (!ab.first.defined() || !ab.second.defined())
      throw Error(path + ": '" + module + "' has only its " + (ab.first.defined() ? "A" : "B") + " factor");
    if (ab.first.dim() < 2 || ab.first.size(0) != ab.second.size(1))
      throw Error(path + ": the A and B factors of '" + module + "' disagree on the rank");
  }
  w.modules = std::move(m);
  if (w.modules.empty()) throw Error(path + ": holds no LoRA factors");
  auto meta = file.metadata.find("rsam.lora");
  if (meta != file.metadata.end()) {
    const auto j = nlohmann::json::parse(meta->second, nullptr, false);
    if (!j.is_object() || !j.contains("alpha") || !j["alpha"].is_number())
      throw Error(path + ": malformed rsam.lora metadata");
    w.alpha = j["alpha"].get<double>();
  }
  w.rank();  // all ranks equal
  return w;
}

int64_t apply_lora(torch::nn::Module& model, const LoraWeights& w, std::optional<double> alpha,
                   const std::string& origin) {
  auto all = hosts(model);
  const double a = alpha ? *alpha : w.alpha ? *w.alpha : double(w.rank());
  // Every module and shape is checked before the first is attached, so a
  // bad file leaves the model as it was.
  for (const auto& [name, ab] : w.modules) {
    if (!all.count(name)) throw Error(origin + ": '" + name + "' is not a Linear or Conv2d of this U-Net");
    try {
      all.at(name)->check_lora(ab.first, ab.second, name);
    } catch (const Error& e) {
      throw Error(origin + ": " + e.what());
    }
  }
  for (const auto& [name, ab] : w.modules) all.at(name)->set_lora(ab.first, ab.second, a / double(ab.first.size(0)), name);
  return int64_t(w.modules.size());
}

int64_t load_lora(torch::nn::Module& model, const std::string& path, std::optional<double> alpha) {
  return apply_lora(model, read_lora(path), alpha, path);
}

void save_lora(torch::nn::Module& model, const std::string& path) {
  io::StateDict sd;
  std::optional<double> alpha;
  int64_t rank = 0;
  for (const auto& [name, h] : hosts(model)) {
    if (!h->has_lora()) continue;
    const double a = h->lora_scale * double(h->lora_rank());
    if (alpha && std::abs(*alpha - a) > 1e-9 * std::abs(a))
      throw Error("save_lora: modules have different alphas; rsam's LoRA file stores one");
    alpha = a;
    rank = h->lora_rank();
    sd.emplace_back("unet." + name + ".lora_A.weight", from_torch(h->lora_A->weight.to(torch::kFloat32)));
    sd.emplace_back("unet." + name + ".lora_B.weight", from_torch(h->lora_B->weight.to(torch::kFloat32)));
  }
  if (sd.empty()) throw Error("save_lora: the model has no LoRA attached");
  const nlohmann::json meta{{"rank", rank}, {"alpha", *alpha}};
  io::save_safetensors(path, sd, {{"format", "pt"}, {"rsam.lora", meta.dump()}});
}

int64_t merge_lora(torch::nn::Module& model) {
  int64_t n = 0;
  for (const auto& [name, h] : hosts(model))
    if (h->has_lora()) {
      h->merge_lora();
      ++n;
    }
  return n;
}

int64_t lora_parameter_count(torch::nn::Module& model) {
  int64_t n = 0;
  for (const auto& [name, h] : hosts(model))
    if (h->has_lora()) n += h->lora_A->weight.numel() + h->lora_B->weight.numel();
  return n;
}

}  // namespace rsam::diffusion
