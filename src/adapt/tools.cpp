#include "adapt/tools.h"

#include <vector>

#include "adapt/adapter.h"
#include "model/checkpoint.h"

namespace rsam::adapt {

namespace {

// Default configs for the parameter table: the papers' settings.
std::vector<nlohmann::json> table_methods() {
  return {{{"method", "decoder_only"}},
          {{"method", "bitfit"}},
          {{"method", "adapter"}, {"bottleneck", 64}},
          {{"method", "ssf"}},
          {{"method", "lora"}, {"rank", 4}},
          {{"method", "lora"}, {"rank", 16}},
          {{"method", "lora"}, {"rank", 256}},
          {{"method", "moe_lora"}, {"ranks", {2, 16, 128, 256}}},
          {{"method", "conv_lora"}, {"rank", 8}, {"experts", 8}},
          {{"method", "gara"}, {"r_low", 16}, {"r_high", 256}},
          {{"method", "gara"}, {"r_low", 16}, {"r_high", 256}, {"space_gate", false}}};
}

std::string label(const nlohmann::json& c) {
  std::string s = c["method"];
  for (auto& [k, v] : c.items())
    if (k != "method") s += " " + k + "=" + v.dump();
  return s;
}

}  // namespace

std::string merge_adapter_file(const std::string& checkpoint, const std::string& adapter, const io::NamedPath& out) {
  io::check_outputs({out}, {{"the checkpoint", checkpoint}, {"the adapter", adapter}});
  auto a = AdaptedSam::load(load_sam(checkpoint).model, adapter);
  a.merge();
  save_sam(a.model(), out.path);
  return a.method();
}

InitResult init_adapter_file(const std::string& checkpoint, const std::string& config, const io::NamedPath& out,
                             uint64_t seed) {
  io::check_outputs({out}, {{"the checkpoint", checkpoint}, {"the adapter config", config}});
  const auto cfg = load_config(config);  // a bad config fails before the model loads
  AdaptedSam a(load_sam(checkpoint).model, cfg, seed);
  a.save(out.path);
  return {a.method(), a.trainable_count()};
}

nlohmann::json parameter_table(const SamConfig& config) {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& c : table_methods()) {
    Sam base(config);  // fresh each time: attaching mutates the model
    AdaptedSam a(base, c, 0);
    rows.push_back({{"method", label(c)},
                    {"params", a.trainable_count()},
                    {"ratio_percent", 100.0 * double(a.trainable_count()) / double(a.base_count())}});
  }
  return rows;
}

}  // namespace rsam::adapt
