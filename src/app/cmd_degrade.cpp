// `rsam degrade`: corrupt images or folders, draw a contact sheet, or list
// the corruptions. The work is in degrade/runner.h; this file only maps
// flags onto it.
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "app/commands.h"
#include "app/flags.h"
#include "degrade/runner.h"
#include "error.h"

namespace rsam::app {

namespace {

struct DegradeArgs {
  std::string input, output, corruption, masks, preview, sheet;  // corruption: robustseg (run) / all (preview) if empty
  int severity = 3;
  uint64_t seed = 0;
  int jobs = 1;
  int tile = 256;
  bool warp_masks = false, list = false, json = false;
};

void run_degrade(const DegradeArgs& a) {
  const bool folder = !a.input.empty() || !a.output.empty();
  const int modes = (folder ? 1 : 0) + (a.preview.empty() ? 0 : 1) + (a.list ? 1 : 0);
  if (modes != 1)
    throw rsam::Error("degrade: use exactly one of --input/--output, --preview IMG --out SHEET.png, or --list");
  if (a.list) {
    if (a.json)
      std::cout << degrade::list_json().dump(2) << "\n";
    else
      std::cout << degrade::list_text();
    return;
  }
  if (!a.preview.empty()) {
    degrade::PreviewOptions p;
    p.image = a.preview;
    p.output = a.sheet;
    p.corruption = a.corruption.empty() ? "all" : a.corruption;
    p.severity = a.severity;
    p.seed = a.seed;
    p.tile = a.tile;
    if (p.output.empty()) throw rsam::Error("degrade: --preview needs --out SHEET.png");
    degrade::preview(p);
    std::cerr << "degrade: wrote " << p.output << "\n";
    return;
  }
  if (a.input.empty() || a.output.empty()) throw rsam::Error("degrade: a folder run needs both --input and --output");
  degrade::RunOptions o;
  o.input = a.input;
  o.output = a.output;
  o.corruption = a.corruption.empty() ? "robustseg" : a.corruption;
  o.severity = a.severity;
  o.seed = a.seed;
  o.jobs = a.jobs;
  o.masks = a.masks;
  o.warp_masks = a.warp_masks;
  o.log = &std::cerr;
  const degrade::RunSummary s = degrade::run(o);
  if (s.failed == 0) return;
  // Say what is on disk as it is: an image can fail after some of its
  // outputs were written, and a resumed run may have written nothing.
  const auto outputs = [](size_t n) { return std::to_string(n) + (n == 1 ? " output was" : " outputs were"); };
  std::string done;
  if (s.written == 0 && s.skipped == 0)
    done = "nothing was written";
  else if (s.written == 0)
    done = "nothing new was written (" + outputs(s.skipped) + " done earlier)";
  else
    done = outputs(s.written) + " written" + (s.skipped ? " (" + std::to_string(s.skipped) + " done earlier)" : "");
  throw rsam::Error("degrade: " + std::to_string(s.failed) + " of " + std::to_string(s.images) +
                    " images failed (listed above); " + done);
}

}  // namespace

void add_degrade_command(CLI::App& app) {
  auto args = std::make_shared<DegradeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "degrade", "Corrupt images (Robust-Seg, LQSeg, extras) deterministically, preview them, or list them");
  // One line per command in `rsam --help`; the exit status is told here.
  cmd->footer("Exit status is 1 if any image could not be read (the rest are still written).");
  cmd->add_option("--input", args->input, "Image file or folder (walked recursively)");
  cmd->add_option("--output", args->output, "Output folder: <corruption>/<tree>.png, masks/, manifest.jsonl");
  cmd->add_option("--corruption", args->corruption,
                  "A corruption name, or robustseg | lqseg | lq1 | lq2 | lq3 | extras | all "
                  "(default: robustseg for a run, all for --preview)");
  cmd->add_option("--severity", args->severity, "1..5; 3 is the reference strength (LQ levels ignore it)")
      ->check(CLI::Range(1, 5))
      ->capture_default_str();
  cmd->add_option("--seed", args->seed, "Run seed; each output's seed derives from it and the file's path")
      ->check(kSeed)
      ->capture_default_str();
  cmd->add_option("--jobs", args->jobs, "Images processed in parallel (outputs do not depend on it)")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  cmd->add_option("--masks", args->masks, "Mask folder mirroring --input (same stem, any image extension)");
  cmd->add_flag(
      "--warp-masks", args->warp_masks,
      "Move masks with geometric corruptions (elastic, frosted glass, zoom); default copies them, as RobustSAM");
  cmd->add_option("--preview", args->preview, "Draw a contact sheet of IMG under every corruption");
  cmd->add_option("--out", args->sheet, "Where --preview writes its PNG");
  cmd->add_option("--tile", args->tile, "Preview tile width in px")->check(CLI::Range(32, 2048))->capture_default_str();
  cmd->add_flag("--list", args->list, "List corruptions with their parameters per severity");
  cmd->add_flag("--json", args->json, "With --list: print JSON");
  cmd->callback([args] { run_degrade(*args); });
}

}  // namespace rsam::app
