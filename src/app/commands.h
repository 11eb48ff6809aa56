// Each `rsam <command>` lives in its own translation unit and registers its
// sub-app here; main.cpp only wires them together.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace CLI {
class App;
}

namespace rsam::app {

void add_segment_command(CLI::App& app);
void add_info_command(CLI::App& app);
void add_convert_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_degrade_command(CLI::App& app);
void add_adapter_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_eval_command(CLI::App& app);

// Gate report of an adapted model: JSON at `path` and, for gated methods,
// a picture of the binary gate vectors beside it (same stem, .png).
void write_gates(const std::string& path, const nlohmann::json& gates);

}  // namespace rsam::app
