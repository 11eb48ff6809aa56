// `rsam eval`: flag parsing over eval::evaluate; with --nproc the samples
// are shared out over processes by eval/launch.h.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstdlib>

#include "app/commands.h"
#include "app/enum_flags.h"
#include "app/flags.h"
#include "error.h"
#include "eval/launch.h"
#include "glesam/enhancer.h"
#include "io/text.h"

namespace rsam::app {

void add_eval_command(CLI::App& app) {
  auto o = std::make_shared<eval::EvalOptions>();
  auto adapter = std::make_shared<std::string>(), compare = std::make_shared<std::string>(),
       enhancer = std::make_shared<std::string>();
  auto* c = app.add_subcommand("eval", "Robustness report: every corruption x every prompt type");
  c->add_option("--checkpoint", o->checkpoint, "Base SAM checkpoint")->required();
  c->add_option("--adapter", *adapter, "Adapter to evaluate (default: the base model)");
  c->add_option("--enhancer", *enhancer, "GleSAM enhancer (E.json; with --adapter: the adapted encoder, then it)");
  c->add_option("--compare", *compare,
                "Several methods in one table: A.safetensors,E.json,A.safetensors+E.json (\"none\" = the base)");
  c->add_option("--data", o->data, "Dataset spec")->required();
  c->add_option("--corruption", o->corruptions, "clean,robustseg,lqseg,lq1,NAME,...");
  c->add_option("--severity", o->severity, "1..5 or random")->transform(severity_names());
  c->add_option("--prompts", o->prompts,
                "point:1,center,point:3,box,noisy-box,clicks:N (1 point + N-1 corrective clicks)");
  c->add_option("--seed", o->seed, "Seed for prompts and corruptions")->check(kSeed);
  c->add_option("--max-samples", o->max_samples, "Evaluate the first N samples");
  c->add_option("--precision", o->precision, "fp32 or bf16")->transform(precision_names());
  c->add_option("--threads", o->threads, "Intra-op threads per process (default: all cores, shared by --nproc)");
  c->add_option("--report", o->report, "Directory for report.md, results.json, records.csv, chart");
  c->add_flag("--oracle", o->oracle, "Rank-oracle analysis over the compared adapters");
  c->add_option("--refine", o->refine,
                "Rounds of post-refinement: the mask decoded again as its own mask input (not for clicks:N)")
      ->check(CLI::Range(0, 10));
  c->add_option("--pick", o->pick, "One of a lone point's three masks: by predicted IoU (score) or stability")
      ->transform(pick_names());
  c->add_flag("--flip", o->flip,
              "Test-time flip: each image also encoded mirrored and the two views' logits averaged (twice the time)");
  auto nproc = std::make_shared<int>(1);
  c->add_option("--nproc", *nproc, "Processes on this machine, each evaluating every N-th sample");
  c->add_flag("--quiet", o->quiet, "No progress output");
  c->callback([o, adapter, compare, enhancer, nproc] {
    if ((!adapter->empty() || !enhancer->empty()) && !compare->empty())
      throw Error("give --adapter/--enhancer or --compare, not both");
    if (!enhancer->empty() && !glesam::is_enhancer_path(*enhancer))
      throw Error("--enhancer expects an enhancer description (.json), got '" + *enhancer + "'");
    if (!adapter->empty() && glesam::is_enhancer_path(*adapter))
      throw Error("'" + *adapter + "' is an enhancer: give it with --enhancer");
    if (!adapter->empty() || !enhancer->empty())
      o->adapters = {enhancer->empty() ? *adapter : (adapter->empty() ? "" : *adapter + "+") + *enhancer};
    for (const auto& item : io::split(*compare, ',', /*skip_empty=*/true)) o->adapters.push_back(item);
    if (*nproc < 1) throw Error("--nproc must be >= 1");
    const auto run = eval::evaluate_launched(*o, *nproc, program_argv());
    if (run.exit_code != 0) std::exit(run.exit_code);
    if (run.worker) return;  // the launcher prints
    for (auto& [method, byc] : run.result.summary.items())
      for (auto& [corr, byp] : byc.items())
        for (auto& [prompt, m] : byp.items())
          std::printf("%-12s %-22s %-12s IoU %.4f  Dice %.4f  (n=%d)\n", method.c_str(), corr.c_str(), prompt.c_str(),
                      m["iou"].get<double>(), m["dice"].get<double>(), m["n"].get<int>());
    if (!o->report.empty()) std::printf("report: %s/report.md\n", o->report.c_str());
  });
}

}  // namespace rsam::app
