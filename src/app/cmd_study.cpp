// `rsam study`: flag parsing over eval::run_study; with --nproc the runs
// and the held-out samples are shared out over processes by eval/launch.h.
#include <CLI/CLI.hpp>

#include <cstdlib>

#include "app/commands.h"
#include "error.h"
#include "eval/launch.h"
#include "model/bundled.h"

namespace rsam::app {

void add_study_command(CLI::App& app) {
  auto o = std::make_shared<eval::StudyOptions>();
  auto* c = app.add_subcommand("study", "Train and compare every adapter method over seeds; write a Markdown report");
  c->add_option("--checkpoint", o->checkpoint, "Base model (default: the bundled rsam-tiny)");
  c->add_option("--train", o->train_data, "Training dataset spec")->required();
  c->add_option("--val", o->val_data, "Held-out dataset spec")->required();
  c->add_option("--method", o->methods, "NAME=METHOD|CONFIG.json, repeatable (default: the full line-up)");
  c->add_option("--seeds", o->seeds, "Seeds per method")->capture_default_str();
  c->add_option("--steps", o->steps, "Optimizer steps per run")->capture_default_str();
  c->add_option("--batch", o->batch, "Images per step")->capture_default_str();
  c->add_option("--masks-per-image", o->masks_per_image, "Objects decoded per image")->capture_default_str();
  c->add_option("--lr", o->lr, "Peak learning rate")->capture_default_str();
  c->add_option("--train-corruption", o->train_corruption, "Corruptions drawn in training")->capture_default_str();
  c->add_option("--corruption", o->eval_corruptions, "Evaluated corruptions")->capture_default_str();
  c->add_option("--prompts", o->prompts, "Evaluated prompts")->capture_default_str();
  c->add_option("--max-samples", o->max_samples, "Held-out objects evaluated")->capture_default_str();
  c->add_option("--gate-images", o->gate_images, "Images per corruption for GaRA's gate statistics")
      ->capture_default_str();
  c->add_option("--threads", o->threads, "Intra-op threads per process (default: all cores, shared by --nproc)");
  c->add_option("--out", o->out, "Run directory (resumable)")->capture_default_str();
  c->add_option("--doc", o->doc, "Markdown report (charts beside it)")->capture_default_str();
  auto nproc = std::make_shared<int>(1);
  c->add_option("--nproc", *nproc, "Processes on this machine: the runs, then the held-out samples, shared out");
  c->add_flag("--quiet", o->quiet, "No progress output");
  c->callback([o, nproc] {
    if (o->checkpoint.empty()) o->checkpoint = resolve_model("", "", true).first;
    if (*nproc < 1) throw Error("--nproc must be >= 1");
    if (const int code = eval::study_launched(*o, *nproc, program_argv())) std::exit(code);
  });
}

}  // namespace rsam::app
