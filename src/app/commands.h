// Each `rsam <command>` lives in its own translation unit and registers its
// sub-app here; main.cpp only wires them together.
#pragma once

#include <string>

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
void add_amg_command(CLI::App& app);

void add_synth_command(CLI::App& app);
void add_demo_command(CLI::App& app);
void add_study_command(CLI::App& app);
void add_serve_command(CLI::App& app);

// Threads (0: all cores) and the runtime's one-time notes (bf16 without
// native support, a BLAS that is not OpenBLAS) for commands that run a model.
void configure_runtime(int threads, const std::string& precision = "fp32");

}  // namespace rsam::app
