// `rsam adapter info|merge|init|params`: inspect, fold and size adapters
// (the work is adapt/adapter.h's and adapt/tools.h's, one call each).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

#include "adapt/adapter.h"
#include "adapt/tools.h"
#include "app/commands.h"
#include "app/flags.h"
#include "error.h"
#include "model/config.h"
#include "model/runtime.h"

namespace rsam::app {

namespace {

void run_info(const std::string& path, bool json) {
  const nlohmann::json j = adapt::describe_adapter_file(path);
  if (json) {
    std::cout << j.dump(2) << "\n";
    return;
  }
  std::printf(
      "method: %s\nconfig: %s\nparameters: %lld (%.3f%% of the base's %lld)\ntensors: %zu\nbase fingerprint: %s\n",
      j["method"].get<std::string>().c_str(), j["config"].dump().c_str(), j["parameters"].get<long long>(),
      j["percent_of_base"].get<double>(), j["base_parameters"].get<long long>(), j["tensors"].get<size_t>(),
      j["base_fingerprint"].get<std::string>().c_str());
}

void run_merge(const std::string& ckpt, const std::string& adapter, const std::string& out) {
  const auto method = adapt::merge_adapter_file(ckpt, adapter, {"--out", out});
  std::printf("merged %s into %s -> %s\n", method.c_str(), ckpt.c_str(), out.c_str());
}

void run_init(const std::string& ckpt, const std::string& config, const std::string& out, uint64_t seed) {
  const auto a = adapt::init_adapter_file(ckpt, config, {"--out", out}, seed);
  std::printf("wrote %s: %s, %lld trainable parameters\n", out.c_str(), a.method.c_str(), (long long)a.trainable);
}

void run_params(const std::string& model, bool json) {
  const auto preset = SamConfig::find_preset(model);
  if (!preset) throw Error("unknown --model '" + model + "' (vit_b, vit_l, vit_h)");
  const auto rows = adapt::parameter_table(*preset);
  if (json) {
    std::cout << nlohmann::json{{"model", model}, {"rows", rows}}.dump(2) << "\n";
    return;
  }
  std::printf("| method (%s) | #params (M) | ratio (%%) |\n|---|---|---|\n", model.c_str());
  for (const auto& r : rows)
    std::printf("| %s | %.3f | %.3f |\n", r["method"].get<std::string>().c_str(), r["params"].get<int64_t>() / 1e6,
                r["ratio_percent"].get<double>());
}

}  // namespace

void add_adapter_command(CLI::App& app) {
  auto* c = app.add_subcommand("adapter", "Inspect, merge and size adapters");
  c->require_subcommand(1);
  {
    auto path = std::make_shared<std::string>();
    auto json = std::make_shared<bool>(false);
    auto* s = c->add_subcommand("info", "Method, config, parameters and share of the base");
    s->add_option("adapter", *path, "Adapter file (.safetensors)")->required();
    s->add_flag("--json", *json, "JSON output");
    s->callback([path, json] { run_info(*path, *json); });
  }
  {
    auto ck = std::make_shared<std::string>(), ad = std::make_shared<std::string>(), out = std::make_shared<std::string>();
    auto* s = c->add_subcommand("merge", "Fold a mergeable adapter (lora, ssf, bitfit, decoder_only) into the base");
    s->add_option("--checkpoint", *ck, "Base checkpoint")->required();
    s->add_option("--adapter", *ad, "Adapter file")->required();
    s->add_option("--out", *out, "Merged checkpoint (.safetensors or .pth)")->required();
    s->callback([ck, ad, out] { run_merge(*ck, *ad, *out); });
  }
  {
    auto ck = std::make_shared<std::string>(), cfg = std::make_shared<std::string>(), out = std::make_shared<std::string>();
    auto seed = std::make_shared<uint64_t>(0);
    auto* s = c->add_subcommand("init", "Write a freshly initialized adapter (identity: masks unchanged)");
    s->add_option("--checkpoint", *ck, "Base checkpoint")->required();
    s->add_option("--adapter", *cfg, "Method name or JSON config file")->required();
    s->add_option("--out", *out, "Adapter file (.safetensors)")->required();
    s->add_option("--seed", *seed, "Initialization seed")->check(kSeed);
    s->callback([ck, cfg, out, seed] { run_init(*ck, *cfg, *out, *seed); });
  }
  {
    auto model = std::make_shared<std::string>("vit_b");
    auto json = std::make_shared<bool>(false);
    auto* s = c->add_subcommand("params", "Parameter count of every method on an official model");
    s->add_option("--model", *model, "vit_b, vit_l or vit_h");
    s->add_flag("--json", *json, "JSON output");
    s->callback([model, json] {
      set_threads(0);
      run_params(*model, *json);
    });
  }
  std::string methods;
  for (const auto& m : adapt::method_names()) methods += "\n  " + m + ": " + adapt::method_info(m).description;
  c->footer("Methods:" + methods);
}

}  // namespace rsam::app
