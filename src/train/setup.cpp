// What a run trains and with what: the model (loaded, or random weights for
// pre-training), its trainable set (adapters, or every weight under the
// given prefixes), the frozen base for consistency, the optimizer and its
// schedule, and the training loader's options.
#include <cmath>
#include <sstream>

#include "error.h"
#include "io/fs.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "train/trainer_internal.h"

namespace rsam::train::detail {

using torch::Tensor;

namespace {

// Random weights of an architecture, for pre-training: torch's default
// initialisers as in the official modules, except the absolute position
// embedding. The official code starts it at zero because it always loads MAE
// weights next; from scratch a small random start (ViT's 0.02) tells positions apart.
Sam init_sam(const std::string& spec, uint64_t seed) {
  SamConfig cfg;
  if (const auto preset = SamConfig::find_preset(spec)) {
    cfg = *preset;
  } else {
    const auto bytes = io::read_file(spec);
    cfg = SamConfig::from_json(std::string(bytes.begin(), bytes.end()));
  }
  cfg.validate();
  torch::manual_seed(seed);
  Sam m(cfg);
  torch::NoGradGuard ng;
  m->image_encoder->pos_embed.normal_(0.0, 0.02);
  return m;
}

// With full: every weight, or those under the comma-separated prefixes of
// `trainable`, set to train and returned; the others frozen.
NamedTensors select_weights(Sam& model, const std::string& trainable, uint64_t seed) {
  torch::manual_seed(seed);
  std::vector<std::string> prefixes;
  std::stringstream list(trainable);
  for (std::string p; std::getline(list, p, ',');)
    if (!p.empty()) prefixes.push_back(p);
  auto selected = [&](const std::string& name) {
    if (prefixes.empty()) return true;
    for (const auto& p : prefixes)
      if (name.compare(0, p.size(), p) == 0) return true;
    return false;
  };
  NamedTensors params;
  for (auto& p : model->named_parameters(true)) {
    // Frozen weights build no autograd graph: training only the IoU head
    // costs little more than the forward pass.
    const bool on = selected(p.key());
    p.value().set_requires_grad(on);
    if (on) params.emplace_back(p.key(), p.value());
  }
  if (params.empty())
    throw Error("the trainable-weights pattern '" + trainable + "' matches no parameter of the model");
  return params;
}

// "points:3,box" -> one kind drawn per sample.
std::string as_mix(const std::string& prompts) {
  if (prompts.find(',') == std::string::npos || prompts.rfind("mix:", 0) == 0) return prompts;
  std::string s = "mix:";
  for (char c : prompts) s += c == ',' ? '|' : c;
  return s;
}

}  // namespace

void build_trainee(const TrainOptions& o, const nlohmann::json& cfg, Trainee& t) {
  t.model = o.init.empty() ? load_sam(o.checkpoint).model : init_sam(o.init, o.seed);
  if (o.full) {
    t.params = select_weights(t.model, o.trainable, o.seed);
  } else {
    auto acfg = cfg["adapter_config"];
    if (o.train_decoder) acfg["train_decoder"] = true;
    t.adapted.emplace(t.model, acfg, o.seed);
    t.params = t.adapted->trainable();
  }
  // The frozen base, for consistency: a second copy, so that no adapter
  // (nor a base tensor a method unfreezes) changes what it computes.
  if (o.consistency > 0) {
    t.teacher = load_sam(o.checkpoint).model;
    (*t.teacher)->to(t.model->device());
    (*t.teacher)->eval();
    for (auto& p : (*t.teacher)->parameters(true)) p.set_requires_grad(false);
  }
  for (auto& [k, p] : t.params) t.plist.push_back(p);
  if (o.optimizer == "adamw")
    t.opt = std::make_unique<torch::optim::AdamW>(t.plist, torch::optim::AdamWOptions(o.lr).weight_decay(o.wd));
  else
    t.opt = std::make_unique<torch::optim::Adam>(t.plist, torch::optim::AdamOptions(o.lr).weight_decay(o.wd));
}

data::LoaderOptions loader_options(const TrainOptions& o) {
  data::LoaderOptions lo;
  lo.batch_size = size_t(o.batch);
  lo.seed = o.seed;
  lo.shuffle = true;
  lo.epochs = o.steps > 0 ? 0 : uint64_t(o.epochs);
  lo.corruptions = o.corruption;
  lo.severity = o.severity;
  lo.clean_ratio = o.clean_ratio;
  lo.prompts = {data::parse_prompt(as_mix(o.prompts))};
  lo.workers = o.workers;
  return lo;
}

double lr_at(const TrainOptions& o, int64_t step, int64_t total) {
  if (o.warmup > 0 && step < o.warmup) return o.lr * double(step + 1) / double(o.warmup);
  const double t = total > o.warmup ? double(step - o.warmup) / double(total - o.warmup) : 1.0;
  const double lo = o.lr * o.min_lr_ratio;
  return lo + (o.lr - lo) * 0.5 * (1.0 + std::cos(M_PI * std::min(1.0, t)));
}

void set_lr(torch::optim::Optimizer& opt, const std::string& optimizer, double lr) {
  for (auto& g : opt.param_groups()) {
    if (optimizer == "adamw")
      static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    else
      static_cast<torch::optim::AdamOptions&>(g.options()).lr(lr);
  }
}

}  // namespace rsam::train::detail
