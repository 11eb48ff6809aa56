// `rsam info`: a checkpoint's model type, parameter count and tensors.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>
#include <optional>

#include "app/commands.h"
#include "io/tensor_file.h"
#include "model/checkpoint.h"

namespace rsam::app {

namespace {

void run_info(const std::string& path, bool json) {
  // Read once; a safetensors file written by rsam carries its config (as in
  // load_sam), which detect_config alone could not tell from the shapes.
  io::StateDict sd;
  std::optional<SamConfig> hint;
  if (path.size() > 12 && path.substr(path.size() - 12) == ".safetensors") {
    auto f = io::load_safetensors(path);
    sd = std::move(f.tensors);
    auto it = f.metadata.find("rsam.config");
    if (it != f.metadata.end()) hint = SamConfig::from_json(it->second);
  } else {
    sd = io::load_any(path);
  }
  const SamConfig cfg = detect_config(sd, hint ? &*hint : nullptr);
  const int64_t params = parameter_count(sd);
  if (json) {
    nlohmann::json j;
    j["model"] = cfg.type_name();
    j["config"] = nlohmann::json::parse(cfg.to_json());
    j["parameters"] = params;
    j["tensors"] = nlohmann::json::array();
    for (const auto& [k, t] : sd)
      j["tensors"].push_back({{"name", k}, {"dtype", io::dtype_name(t.dtype)}, {"shape", t.shape}});
    std::cout << j.dump(2) << "\n";
    return;
  }
  std::printf("model: %s\nparameters: %lld (%.2f M)\ntensors: %zu\nconfig: %s\n", cfg.type_name().c_str(),
              (long long)params, params / 1e6, sd.size(), cfg.to_json().c_str());
  for (const auto& [k, t] : sd) {
    std::string shape;
    for (size_t i = 0; i < t.shape.size(); ++i) shape += (i ? "x" : "") + std::to_string(t.shape[i]);
    std::printf("  %-70s %-5s %s\n", k.c_str(), io::dtype_name(t.dtype), shape.c_str());
  }
}

}  // namespace

void add_info_command(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  auto* c = app.add_subcommand("info", "Show a checkpoint's model type, parameters and tensors");
  c->add_option("checkpoint", *path, "Checkpoint (.pth or .safetensors)")->required();
  c->add_flag("--json", *json, "JSON output");
  c->callback([path, json] { run_info(*path, *json); });
}

}  // namespace rsam::app
