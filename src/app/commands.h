// Each `rsam <command>` lives in its own translation unit and registers its
// sub-app here; main.cpp only wires them together.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <utility>

namespace CLI {
class App;
}

namespace rsam::app {

// main()'s argv, for commands that start copies of the program (train --nproc).
void set_program_argv(char** argv);
char** program_argv();

void add_segment_command(CLI::App& app);
void add_info_command(CLI::App& app);
void add_convert_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_degrade_command(CLI::App& app);
void add_adapter_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_compare_command(CLI::App& app);

void add_synth_command(CLI::App& app);
void add_demo_command(CLI::App& app);
void add_study_command(CLI::App& app);

// A file of the bundled models (models/ in the source tree, share/rsam/models
// when installed, or $RSAM_MODELS): its path, or "" if absent.
std::string bundled_model(const std::string& file);
// The checkpoint and adapter a command runs: the given ones, or without a
// checkpoint the bundled rsam-tiny with its GaRA adapter (unless no_adapter).
// rsam::Error if nothing is given and the bundle is missing.
std::pair<std::string, std::string> resolve_model(const std::string& checkpoint, const std::string& adapter,
                                                  bool no_adapter);

// Gate report of an adapted model: JSON at `path` and, for gated methods,
// a picture of the binary gate vectors beside it (same stem, .png).
void write_gates(const std::string& path, const nlohmann::json& gates);
// Where write_gates puts the picture: `path` with a .png extension.
std::string gates_picture_path(const std::string& path);

}  // namespace rsam::app
