#include "degrade/corruption.h"

#include <mutex>

#include "error.h"

namespace rsam::degrade {

// Each group file provides one function that registers its corruptions.
// They are called explicitly (not from static initialisers) because
// rsam_degrade is a static library: an object file nobody references would
// be dropped by the linker together with its registrations.
void register_robustseg();
void register_lqseg();
void register_extras();

namespace {

std::vector<Spec>& mutable_registry() {
  static std::vector<Spec> specs;
  return specs;
}

void ensure_builtins() {
  static std::once_flag once;
  std::call_once(once, [] {
    register_robustseg();
    register_lqseg();
    register_extras();
  });
}

}  // namespace

void register_corruption(Spec s) {
  auto& specs = mutable_registry();
  for (const auto& existing : specs)
    if (existing.name == s.name) throw rsam::Error("degrade: corruption '" + s.name + "' registered twice");
  if (s.levels.size() != 1 && s.levels.size() != static_cast<size_t>(kMaxSeverity))
    throw rsam::Error("degrade: corruption '" + s.name + "' needs 1 or 5 parameter levels");
  specs.push_back(std::move(s));
}

const std::vector<Spec>& registry() {
  ensure_builtins();
  return mutable_registry();
}

const Spec& spec(const std::string& name) {
  for (const auto& s : registry())
    if (s.name == name) return s;
  std::string known;
  for (const auto& s : registry()) known += (known.empty() ? "" : ", ") + s.name;
  throw rsam::Error("degrade: unknown corruption '" + name + "' (known: " + known + ")");
}

std::unique_ptr<Corruption> create(const std::string& name, int severity, const nlohmann::json& overrides) {
  if (severity < kMinSeverity || severity > kMaxSeverity)
    throw rsam::Error("degrade: severity must be in 1..5, got " + std::to_string(severity));
  const Spec& s = spec(name);
  nlohmann::json params = s.levels.size() == 1 ? s.levels[0] : s.levels[static_cast<size_t>(severity - 1)];
  if (!overrides.is_null()) {
    if (!overrides.is_object()) throw rsam::Error("degrade: parameter overrides for '" + name + "' must be a JSON object");
    for (auto it = overrides.begin(); it != overrides.end(); ++it) {
      if (!params.contains(it.key()))
        throw rsam::Error("degrade: '" + name + "' has no parameter '" + it.key() + "'");
      params[it.key()] = it.value();
    }
  }
  std::unique_ptr<Corruption> c;
  try {
    c = s.make(params);
  } catch (const nlohmann::json::exception& e) {
    throw rsam::Error("degrade: bad parameters for '" + name + "': " + e.what());
  }
  c->name_ = s.name;
  c->severity_ = s.levels.size() == 1 ? kReferenceSeverity : severity;
  c->params_ = std::move(params);
  return c;
}

Result Corruption::run(const cv::Mat& rgb, uint64_t seed, const cv::Mat& mask) const {
  if (rgb.empty()) throw rsam::Error("degrade: " + name_ + ": empty image");
  if (rgb.type() != CV_8UC3) throw rsam::Error("degrade: " + name_ + ": expected an 8-bit 3-channel RGB image");
  Result r;
  cv::Mat m;
  if (!mask.empty()) {
    if (mask.size() != rgb.size())
      throw rsam::Error("degrade: " + name_ + ": mask size differs from image size");
    if (mask.depth() != CV_8U || mask.channels() != 1)
      throw rsam::Error("degrade: " + name_ + ": mask must be 8-bit single-channel");
    m = mask.clone();
  }
  Rng rng(seed);
  r.drawn = nlohmann::json::object();
  r.image = apply(rgb, rng, r.drawn, m.empty() ? nullptr : &m);
  CV_Assert(r.image.type() == CV_8UC3 && r.image.size() == rgb.size());
  r.mask = m;
  return r;
}

const std::vector<std::string>& robustseg_names() {
  static const std::vector<std::string> names = {
      "snow",           "fog",         "rain",        "gauss_noise",       "iso_noise",
      "impulse_noise",  "resampling_blur", "motion_blur", "zoom_blur",    "color_jitter",
      "compression",    "elastic_transform", "frosted_glass_blur", "brightness", "contrast"};
  return names;
}

std::vector<std::string> expand(const std::string& what) {
  std::vector<std::string> out;
  if (what == "robustseg") return robustseg_names();
  if (what == "lqseg") return {"lq1", "lq2", "lq3"};
  if (what == "extras" || what == "all") {
    for (const auto& s : registry())
      if (what == "all" || s.group == "extra") out.push_back(s.name);
    return out;
  }
  spec(what);  // throws with the list of known names
  return {what};
}

}  // namespace rsam::degrade
