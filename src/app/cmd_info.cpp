// `rsam info`: a checkpoint's model type, parameter count and tensors, or
// what a Stable Diffusion folder or file holds.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>

#include "app/commands.h"
#include "diffusion/sd.h"
#include "error.h"
#include "io/tensor_file.h"
#include "model/checkpoint.h"

namespace rsam::app {

namespace {

void run_sam_info(const std::string& path, bool json) {
  const SamWeights w = read_sam_weights(path);
  const io::StateDict& sd = w.tensors;
  const SamConfig& cfg = w.config;
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

// A Stable Diffusion folder, one of its component folders, or a U-Net, CLIP
// or U-Net LoRA file; otherwise a SAM checkpoint, whose error is the one
// shown when the file is neither.
void run_info(const std::string& path, bool json) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    std::cout << diffusion::describe_sd_path(path).dump(json ? 2 : 1) << "\n";
    return;
  }
  try {
    run_sam_info(path, json);
  } catch (const Error& sam_error) {
    nlohmann::json sd;
    try {
      sd = diffusion::describe_sd_path(path);
    } catch (const Error&) {
      throw sam_error;
    }
    std::cout << sd.dump(json ? 2 : 1) << "\n";
  }
}

}  // namespace

void add_info_command(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  auto* c = app.add_subcommand("info", "Describe a checkpoint: SAM, or a Stable Diffusion folder or file");
  c->add_option("checkpoint", *path, "SAM checkpoint (.pth or .safetensors), or a Stable Diffusion folder, U-Net, text encoder or U-Net LoRA file")->required();
  c->add_flag("--json", *json, "JSON output");
  c->callback([path, json] { run_info(*path, *json); });
}

}  // namespace rsam::app
