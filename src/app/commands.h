// Each `rsam <command>` lives in its own translation unit and registers its
// sub-app here; main.cpp only wires them together.
#pragma once

namespace CLI {
class App;
}

namespace rsam::app {

void add_segment_command(CLI::App& app);
void add_info_command(CLI::App& app);
void add_convert_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_degrade_command(CLI::App& app);

}  // namespace rsam::app
