// `rsam compare`: paired differences between two eval reports (eval/compare.h).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>

#include "app/commands.h"
#include "eval/compare.h"
#include "io/fs.h"

namespace rsam::app {

void add_compare_command(CLI::App& app) {
  struct Args {
    std::string base, other, out;
    eval::CompareOptions o;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  auto* c = app.add_subcommand("compare", "Paired differences between two eval reports, with standard errors");
  c->add_option("base", a->base, "Report directory of rsam eval (or its results.json): the baseline")->required();
  c->add_option("other", a->other, "Report directory (or results.json) compared against it")->required();
  c->add_option("--base-method", a->o.base_method, "The baseline's method when its report holds several");
  c->add_option("--method", a->o.other_method, "The other report's method when it holds several");
  c->add_option("--metric", a->o.metric, "Per-object metric compared")
      ->check(CLI::IsMember({"iou", "dice", "boundary_iou", "pixel_accuracy"}))
      ->capture_default_str();
  c->add_flag("--json", a->json, "Print JSON instead of the Markdown table");
  c->add_option("--out", a->out, "Also write the Markdown table to this file");
  c->callback([a] {
    // The table must not replace one of the reports it compares.
    auto results = [](const std::string& p) {
      std::error_code ec;
      return std::filesystem::is_directory(p, ec) ? (std::filesystem::path(p) / "results.json").string() : p;
    };
    io::check_outputs({{"--out", a->out}},
                      {{"the base report", results(a->base)}, {"the other report", results(a->other)}});
    const auto cmp = eval::compare_runs(eval::read_run(a->base), eval::read_run(a->other), a->o);
    const auto md = eval::comparison_markdown(cmp, a->base, a->other);
    if (!a->out.empty()) io::write_text(a->out, md);
    std::printf("%s", a->json ? (eval::comparison_json(cmp).dump(1) + "\n").c_str() : md.c_str());
  });
}


}  // namespace rsam::app
