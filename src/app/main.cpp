// rsam command-line entry point. Every failure the user can cause ends here
// as one line on stderr and exit code 1; usage errors exit 2.
#include <c10/util/Exception.h>
#include <torch/version.h>
#include <CLI/CLI.hpp>
#include <opencv2/core/version.hpp>

#include <cstdlib>
#include <cstring>
#include <iostream>

#include "app/commands.h"
#include "error.h"
#include "log.h"
#include "model/runtime.h"

namespace rsam::app {

namespace {
char** g_argv = nullptr;
}

void set_program_argv(char** argv) { g_argv = argv; }
char** program_argv() {
  if (!g_argv) throw Error("internal: program arguments not recorded");
  return g_argv;
}

void configure_runtime(int threads, const std::string& precision) {
  set_threads(threads);
  if (const auto w = bf16_warning(); precision == "bf16" && !w.empty()) log_warning(w);
  static bool warned = false;
  if (!warned) {
    warned = true;
    const auto w = blas_warning();
    if (!w.empty()) log_warning(w);
  }
}

}  // namespace rsam::app

int main(int argc, char** argv) {
  // Long multi-threaded jobs run up to 2x faster with passive OpenMP waiting
  // (see runtime.h); the re-exec costs one more process start, so short
  // commands skip it. The server and the mask generator decode many prompts.
  if (argc > 1)
    for (const char* cmd : {"train", "eval", "study", "bench", "demo", "serve", "amg"})
      if (std::strcmp(argv[1], cmd) == 0) rsam::reexec_with_passive_omp_wait(argv);
  rsam::app::set_program_argv(argv);
  CLI::App app{"rsam: Segment Anything that keeps working on degraded images"};
  app.require_subcommand(1);
  // The version is written once, in CMake; the libraries' for bug reports.
  app.set_version_flag("--version", "rsam " RSAM_VERSION " (LibTorch " TORCH_VERSION ", OpenCV " CV_VERSION ")");
  app.footer("Run 'rsam COMMAND --help' for a command's flags; docs/cli.md has them all.");
  rsam::app::add_segment_command(app);
  rsam::app::add_info_command(app);
  rsam::app::add_convert_command(app);
  rsam::app::add_bench_command(app);
  rsam::app::add_adapter_command(app);
  rsam::app::add_degrade_command(app);
  rsam::app::add_synth_command(app);
  rsam::app::add_demo_command(app);
  rsam::app::add_study_command(app);
  rsam::app::add_train_command(app);
  rsam::app::add_eval_command(app);
  rsam::app::add_compare_command(app);
  rsam::app::add_amg_command(app);
  rsam::app::add_serve_command(app);
  try {
    // Page faults on re-allocated tensors cost more than the encode itself
    // at rsam-tiny's size (runtime.h). RSAM_CPU_CACHE=0 keeps torch's own
    // allocator, for comparing the two; RSAM_CPU_CACHE=N caches up to N GiB.
    // Set before parsing, which runs the command; inside the try, so a bad
    // value ends as every other error does.
    const size_t cache_bound = rsam::cpu_cache_bound(std::getenv("RSAM_CPU_CACHE"));
    if (cache_bound > 0) rsam::use_caching_cpu_allocator(cache_bound);
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 prints the message (and help for --help); its own exit codes
    // (105 for a value out of range, 106 for a missing option, ...) would make
    // every usage error look different to a script.
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const rsam::Error& e) {
    std::cerr << "rsam: error: " << e.what() << "\n";
    return 1;
  } catch (const c10::Error& e) {
    // Torch messages carry a C++ backtrace; the first line is the message.
    std::string msg = e.what_without_backtrace();
    std::cerr << "rsam: error: " << msg.substr(0, msg.find('\n')) << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    std::cerr << "rsam: error: " << msg.substr(0, msg.find('\n')) << "\n";
    return 1;
  }
  return 0;
}
