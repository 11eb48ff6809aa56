// `rsam train`, `rsam eval`, `rsam compare` and `rsam study`: flag parsing over train/ and eval/.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "app/commands.h"
#include "app/flags.h"
#include "data/dataset.h"
#include "error.h"
#include "eval/compare.h"
#include "eval/evaluator.h"
#include "eval/study.h"
#include "io/fs.h"
#include "train/distributed.h"
#include "train/trainer.h"

namespace rsam::app {

namespace {
char** g_argv = nullptr;
}

void set_program_argv(char** argv) { g_argv = argv; }
char** program_argv() {
  if (!g_argv) throw Error("internal: program arguments not recorded");
  return g_argv;
}

void add_train_command(CLI::App& app) {
  auto o = std::make_shared<train::TrainOptions>();
  auto* c = app.add_subcommand("train", "Train an adapter (or, with --full, every weight) on corrupted data");
  c->add_option("--checkpoint", o->checkpoint, "Base SAM checkpoint");
  c->add_option("--init", o->init,
                "With --full: start from random weights of this config (JSON file or vit_b|vit_l|vit_h)");
  c->add_option("--data", o->data, "Dataset spec: folder:IMAGES,MASKS | coco:ANN.json,IMAGES | sa1b:DIR | ...")
      ->required();
  c->add_option("--val", o->val, "Validation dataset spec (box-prompt IoU at the end)");
  c->add_option("--adapter", o->adapter,
                "Method name (gara, lora, moe_lora, conv_lora, ssf, adapter, bitfit, "
                "decoder_only) or a JSON config file");
  c->add_flag("--train-decoder", o->train_decoder, "Also fine-tune the mask decoder");
  c->add_flag("--full", o->full, "Train every weight (pre-training small models)");
  c->add_option("--trainable", o->trainable,
                "With --full: train only weights under these name prefixes, e.g. mask_decoder.iou_prediction_head");
  c->add_option("--corruption", o->corruption, "robustseg | lq | none | NAME,... (drawn per sample)");
  c->add_option("--severity", o->severity, "1..5 or random");
  c->add_option("--clean-ratio", o->clean_ratio, "Share of samples left clean");
  c->add_option("--prompts", o->prompts, "Prompt kinds drawn per sample, e.g. points:3,box");
  c->add_option("--steps", o->steps, "Optimizer steps");
  c->add_option("--epochs", o->epochs, "Epochs (instead of --steps)");
  c->add_option("--batch", o->batch, "Images per micro-batch");
  c->add_option("--masks-per-image", o->masks_per_image,
                "Objects of the same image decoded per encoding (COCO, instances)");
  c->add_option("--iterative-points", o->iterative_points,
                "Interactive rounds per object: a corrective click from the last mask's error, plus that mask");
  c->add_option("--rank-loss", o->rank_loss,
                "Weight of a pairwise ranking loss on the predicted IoUs of a single point's three masks");
  c->add_option("--occluded-weight", o->occluded_weight,
                "Loss weight of an object whose mask is in several pieces (cut by another object)");
  c->add_option("--consistency", o->consistency,
                "Weight of the MSE between the adapted embedding and the frozen base's embedding of the clean image");
  c->add_option(
       "--iou-target", o->iou_target,
       "Where the IoU that the scores learn is measured: input (resolution, as evaluated) or lowres (mask grid)")
      ->check(CLI::IsMember({"input", "lowres"}));
  c->add_option("--accum", o->accum, "Micro-batches per optimizer step");
  c->add_option("--optimizer", o->optimizer, "adam or adamw");
  c->add_option("--lr", o->lr, "Peak learning rate");
  c->add_option("--wd", o->wd, "Weight decay");
  c->add_option("--clip", o->clip, "Gradient-norm clip (0 = off)");
  c->add_option("--warmup", o->warmup, "Linear warm-up steps before cosine decay");
  c->add_option("--precision", o->precision, "fp32 or bf16 (autocast)")->check(CLI::IsMember({"fp32", "bf16"}));
  c->add_flag("--grad-checkpoint", o->grad_checkpoint, "Recompute encoder blocks in backward (less memory)");
  c->add_option("--seed", o->seed, "Seed for data order, corruptions, prompts and init")->check(kSeed);
  c->add_option("--out", o->out, "Output directory");
  c->add_flag("--resume", o->resume, "Continue the run in OUT (from OUT/checkpoint.pt), with the same options");
  c->add_flag("--overwrite", o->overwrite, "Replace the run in OUT: its files are removed first");
  c->add_option("--save-every", o->save_every, "Checkpoint every N steps");
  c->add_option("--threads", o->threads, "Intra-op threads per process (default: all cores, shared by --nproc)");
  c->add_option("--workers", o->workers, "Data loading threads");
  auto nproc = std::make_shared<int>(1);
  c->add_option("--nproc", *nproc,
                "Data-parallel processes on this machine (c10d Gloo); each takes its share of every batch");
  c->add_flag("--quiet", o->quiet, "No progress output");
  c->callback([o, nproc] {
    if (*nproc != 1 && !train::started_as_rank()) {
      // Bad options fail here, once, rather than in every rank.
      train::check_options(*o);
      if (*nproc < 1) throw Error("--nproc must be >= 1");
      if (!train::distributed_available())
        throw Error("this rsam was built without c10d's Gloo backend (install libgloo-dev and rebuild)");
      if (!o->checkpoint.empty() && !std::ifstream(o->checkpoint).good())
        throw Error("cannot read checkpoint '" + o->checkpoint + "'");
      data::open_dataset(o->data);
      train::check_output_folder(*o);
      std::fflush(stdout);
      std::exit(train::launch_local(*nproc, program_argv()));
    }
    auto r = train::train(*o);
    if (!r.wrote_outputs) return;  // a rank above 0: rank 0 reports
    std::printf("trained %lld steps, last loss %.4f -> %s\n", (long long)r.steps, r.last_loss, r.weights_path.c_str());
    if (r.val_iou >= 0) std::printf("validation box IoU %.4f\n", r.val_iou);
  });
}

void add_eval_command(CLI::App& app) {
  auto o = std::make_shared<eval::EvalOptions>();
  auto adapter = std::make_shared<std::string>(), compare = std::make_shared<std::string>();
  auto* c = app.add_subcommand("eval", "Robustness report: every corruption x every prompt type");
  c->add_option("--checkpoint", o->checkpoint, "Base SAM checkpoint")->required();
  c->add_option("--adapter", *adapter, "Adapter to evaluate (default: the base model)");
  c->add_option("--compare", *compare, "Several adapters in one table: A,B,C (\"none\" = the base)");
  c->add_option("--data", o->data, "Dataset spec")->required();
  c->add_option("--corruption", o->corruptions, "clean,robustseg,lqseg,lq1,NAME,...");
  c->add_option("--severity", o->severity, "1..5 or random");
  c->add_option("--prompts", o->prompts,
                "point:1,center,point:3,box,noisy-box,clicks:N (1 point + N-1 corrective clicks)");
  c->add_option("--seed", o->seed, "Seed for prompts and corruptions")->check(kSeed);
  c->add_option("--max-samples", o->max_samples, "Evaluate the first N samples");
  c->add_option("--precision", o->precision, "fp32 or bf16")->check(CLI::IsMember({"fp32", "bf16"}));
  c->add_option("--threads", o->threads, "Intra-op threads per process (default: all cores, shared by --nproc)");
  c->add_option("--report", o->report, "Directory for report.md, results.json, records.csv, chart");
  c->add_flag("--oracle", o->oracle, "Rank-oracle analysis over the compared adapters");
  c->add_option("--refine", o->refine,
                "Rounds of post-refinement: the mask decoded again as its own mask input (not for clicks:N)")
      ->check(CLI::Range(0, 10));
  c->add_option("--pick", o->pick, "One of a lone point's three masks: by predicted IoU (score) or stability")
      ->check(CLI::IsMember({"score", "stability"}));
  c->add_flag("--flip", o->flip,
              "Test-time flip: each image also encoded mirrored and the two views' logits averaged (twice the time)");
  auto nproc = std::make_shared<int>(1);
  c->add_option("--nproc", *nproc, "Processes on this machine, each evaluating every N-th sample");
  c->add_flag("--quiet", o->quiet, "No progress output");
  c->callback([o, adapter, compare, nproc] {
    if (!adapter->empty() && !compare->empty()) throw Error("give --adapter or --compare, not both");
    if (!adapter->empty()) o->adapters = {*adapter};
    std::stringstream ss(*compare);
    std::string item;
    while (std::getline(ss, item, ','))
      if (!item.empty()) o->adapters.push_back(item);
    if (*nproc < 1) throw Error("--nproc must be >= 1");
    eval::EvalResult r;
    const char* shards_dir = std::getenv("RSAM_EVAL_SHARDS");
    const bool worker = shards_dir && train::started_as_rank();
    // Before any loading; the process that writes the report holds its
    // folder (workers write only their shares).
    const auto lock = worker ? nullptr : eval::check_report(*o, true);
    if (worker) {
      const std::string dir = shards_dir;
      // One share: the launcher merges and reports.
      o->shard = train::rank_from_env();
      o->shards = *nproc;
      o->report.clear();
      o->quiet = o->quiet || o->shard != 0;
      if (o->threads <= 0) o->threads = train::threads_per_process(*nproc);
      const auto part = eval::evaluate(*o);
      eval::write_records(dir + "/rank" + std::to_string(o->shard) + ".json", part.records);
      return;
    }
    if (*nproc > 1) {
      if (!std::ifstream(o->checkpoint).good()) throw Error("cannot read checkpoint '" + o->checkpoint + "'");
      data::open_dataset(o->data);
      // Removed whatever happens here; a killed run's is found by the next.
      struct TempDir {
        std::string path;
        void remove() {
          std::error_code ec;
          if (!path.empty()) std::filesystem::remove_all(path, ec);
          path.clear();
        }
        ~TempDir() { remove(); }
      } dir{eval::make_shard_dir(o->report)};
      setenv("RSAM_EVAL_SHARDS", dir.path.c_str(), 1);
      std::fflush(stdout);
      const int code = train::launch_local(*nproc, program_argv());
      std::vector<eval::EvalResult> parts(static_cast<size_t>(*nproc));
      for (int k = 0; k < *nproc && code == 0; ++k)
        parts[size_t(k)].records = eval::read_records(dir.path + "/rank" + std::to_string(k) + ".json");
      if (code != 0) {
        dir.remove();  // std::exit runs no destructor of this frame
        std::exit(code);
      }
      r = eval::merge_shards(std::move(parts), *o);
      if (!o->report.empty()) eval::write_report(o->report, *o, r);
    } else {
      r = eval::evaluate(*o);
    }
    for (auto& [method, byc] : r.summary.items())
      for (auto& [corr, byp] : byc.items())
        for (auto& [prompt, m] : byp.items())
          std::printf("%-12s %-22s %-12s IoU %.4f  Dice %.4f  (n=%d)\n", method.c_str(), corr.c_str(), prompt.c_str(),
                      m["iou"].get<double>(), m["dice"].get<double>(), m["n"].get<int>());
    if (!o->report.empty()) std::printf("report: %s/report.md\n", o->report.c_str());
  });
}

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
    if (const char* phase = std::getenv("RSAM_STUDY_PHASE"); phase && train::started_as_rank()) {
      o->phase = phase;
      o->shard = train::rank_from_env();
      o->shards = *nproc;
      if (o->threads <= 0) o->threads = train::threads_per_process(*nproc);
      eval::run_study(*o);
      return;
    }
    // This process holds the run folder for the whole study; its workers
    // (above) work inside the hold.
    const auto lock = eval::lock_study(*o);
    if (*nproc > 1) {
      // Two rounds of processes (every run must exist before any seed is
      // evaluated), then this process merges and writes the report.
      for (const char* phase : {"train", "eval"}) {
        setenv("RSAM_STUDY_PHASE", phase, 1);
        std::fflush(stdout);
        if (const int code = train::launch_local(*nproc, program_argv())) std::exit(code);
      }
      unsetenv("RSAM_STUDY_PHASE");
      o->shards = *nproc;
    }
    eval::run_study(*o);
  });
}

}  // namespace rsam::app
