// Robustness evaluation: every sample under every requested corruption,
// with every requested prompt type, for one or several adapters on the same
// base; prompts depend only on (seed, sample, prompt type), so methods are
// compared on identical inputs.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "eval/records.h"
#include "io/fs.h"
#include "model/predictor.h"

namespace rsam::eval {

struct EvalOptions {
  std::string checkpoint;
  // Methods: adapter files, GleSAM enhancers (.json) or "ADAPTER+ENHANCER.json"
  // (glesam::split_method). Empty: the base model alone; "none" in the list = the base.
  std::vector<std::string> adapters;
  std::string data;
  std::string corruptions = "clean,robustseg";  // names, sets (robustseg, lqseg), "clean"
  int severity = 3;  // 1..5, 0 = random per sample
  std::string prompts = "point:1,point:3,box,noisy-box";
  uint64_t seed = 0;
  int64_t max_samples = 0;  // 0 = all
  Precision precision = Precision::FP32;
  int threads = 0;
  std::string report;   // output directory; empty = no files
  bool oracle = false;  // rank oracle over the adapters (GaRA Fig. 2)
  // Rounds of cascaded post-refinement (SamPredictor::refine) after the
  // first mask, for every prompt but clicks:N (whose rounds add clicks).
  int refine = 0;
  // How one mask is picked from the three a lone point gets: by the
  // predicted IoU (SAM's demo) or SAM's stability score.
  Pick pick = Pick::Score;
  // Test-time flip: each image also encoded mirrored, the two views'
  // logits averaged (SamPredictor's flip).
  bool flip = false;
  bool quiet = false;
  // Evaluate only samples i with i % shards == shard (one process's share;
  // merge_shards puts the shares together). A share may be empty.
  int shard = 0, shards = 1;
};

struct EvalResult {
  std::vector<Record> records;
  nlohmann::json summary;  // method -> corruption -> prompt -> metrics
  nlohmann::json oracle;   // when requested
};

// Writes the report too when opts.report is set, after checking its folder
// before any loading (check_report).
EvalResult evaluate(const EvalOptions& opts);

// The report folder, checked before any data or model is loaded so that a
// bad --report fails in a second, not after the scoring: created if missing;
// rsam::Error (one line) when a file is in its place, it cannot be made or
// written, or a report file would land on an input (checkpoint, adapter,
// dataset file). With `lock`, also held against other runs until the
// returned lock is dropped (the process that writes the report takes it;
// worker processes of --nproc must not). Nothing to do for an empty report.
std::unique_ptr<io::FolderLock> check_report(const EvalOptions& opts, bool lock);

// Where the --nproc workers leave their shares: a fresh folder named
// ".rsam-eval-<pid>-XXXXXX" inside the report folder, or
// "$TMPDIR/rsam-eval-<pid>-XXXXXX" without one. Folders of that naming whose
// process is gone (a killed eval) are removed first.
std::string make_shard_dir(const std::string& report);

// Each method's name in reports: "sam" for "none", else the file's stem.
// Files with the same stem (every `rsam train` writes adapter.safetensors)
// are told apart by their folder ("run1/adapter"); names that still clash
// are an rsam::Error.
std::vector<std::string> method_labels(const std::vector<std::string>& adapters);

// The shares of one evaluation (EvalOptions::shard) as one result: the
// records in the order a single process writes them, summary and oracle
// recomputed. rsam::Error if no share evaluated any sample.
EvalResult merge_shards(std::vector<EvalResult> parts, const EvalOptions& opts);

}  // namespace rsam::eval
