// The miniature study: every adapter method trained on the same corrupted
// data with the same steps and seeds, evaluated on the same held-out scenes
// per corruption and prompt, with the rank-oracle analysis, GaRA's gate
// statistics, parameter counts and inference overhead, written as one
// Markdown report with charts. Resumable: finished runs are kept.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "io/fs.h"

namespace rsam::eval {

struct StudyOptions {
  std::string checkpoint;  // base model (rsam-tiny)
  std::string train_data, val_data;
  // "name=method[,key=value...]" entries; empty = the default line-up
  // (LoRA ranks, GaRA and its no-space-gate ablation, MoE-LoRA, Conv-LoRA,
  // decoder-only, BitFit, Adapter, SSF) with ranks scaled to the model width.
  std::vector<std::string> methods;
  int seeds = 3;
  int64_t steps = 100;
  int batch = 4, masks_per_image = 4;
  double lr = 1e-3;
  std::string train_corruption = "robustseg,lqseg";  // loader corruptions for training
  std::string eval_corruptions = "clean,robustseg,lqseg";
  std::string prompts = "point:1,point:3,box";
  int64_t max_samples = 48;  // held-out objects evaluated
  int gate_images = 16;      // images per corruption for the gate statistics
  int threads = 0;
  std::string out = "runs/study";       // runs, adapters, per-seed reports
  std::string doc = "docs/results.md";  // the report (charts beside it)
  bool quiet = false;
  // Shares of a study run by several processes (rsam study --nproc). Phase
  // "train" trains the runs k (seed-major) with k % shards == shard, then
  // returns; phase "eval" evaluates that share of the held-out samples for
  // each seed into OUT/s<seed>/shard<k>.json, then returns. With no phase
  // and shards > 1, a seed whose report is missing is merged from those files.
  std::string phase;
  int shard = 0, shards = 1;
};

// The default method line-up for a model whose encoder width is `width`
// (name -> adapter config JSON text).
std::vector<std::pair<std::string, std::string>> default_study_methods(int width);

// Each run keeps the options that decided its weights (OUT/s<seed>/NAME.options.json,
// written before it trains); a run made with other options is an rsam::Error
// (one line naming the first difference), never reused or silently retrained.
void run_study(const StudyOptions& opts);

// Makes OUT, checks that --doc and its chart land on no input, and holds OUT
// against other runs until the lock is dropped. Taken by the process that
// writes the report, not by the workers of --nproc.
std::unique_ptr<io::FolderLock> lock_study(const StudyOptions& opts);

}  // namespace rsam::eval
