// Robustness evaluation: every sample under every requested corruption,
// with every requested prompt type, for one or several adapters on the same
// base; prompts depend only on (seed, sample, prompt type), so methods are
// compared on identical inputs. Reports as Markdown, JSON, CSV and a chart.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/metrics.h"
#include "io/fs.h"

namespace rsam::eval {

struct EvalOptions {
  std::string checkpoint;
  std::vector<std::string> adapters;  // empty: the base model alone; "none" in the list = the base
  std::string data;
  std::string corruptions = "clean,robustseg";  // names, sets (robustseg, lqseg), "clean"
  std::string severity = "3";
  std::string prompts = "point:1,point:3,box,noisy-box";
  uint64_t seed = 0;
  int64_t max_samples = 0;  // 0 = all
  std::string precision = "fp32";
  int threads = 0;
  std::string report;   // output directory; empty = no files
  bool oracle = false;  // rank oracle over the adapters (GaRA Fig. 2)
  // Rounds of cascaded post-refinement (SamPredictor::refine) after the
  // first mask, for every prompt but clicks:N (whose rounds add clicks).
  int refine = 0;
  // How one mask is picked from the three a lone point gets: "score" (the
  // predicted IoU, SAM's demo) or "stability" (SAM's stability score).
  std::string pick = "score";
  // Test-time flip: each image also encoded mirrored, the two views'
  // logits averaged (SamPredictor's flip).
  bool flip = false;
  bool quiet = false;
  // Evaluate only samples i with i % shards == shard (one process's share;
  // merge_shards puts the shares together). A share may be empty.
  int shard = 0, shards = 1;
};

struct Record {
  std::string method, sample, corruption, prompt;
  size_t index = 0;
  data::MaskMetrics m;
  float score = 0;  // the decoder's predicted IoU for the chosen mask
  // IoU of the best of the decoder's candidates, knowing the answer: for an
  // ambiguous single point, what a perfect ranking would score (else == m.iou).
  double best_candidate_iou = 0;
  // For an ambiguous single point: every candidate's IoU, in the decoder's
  // order, and the index picked (--pick; -1 otherwise).
  std::vector<double> candidate_iou;
  int picked = -1;
  // Per candidate too, for studying the pick: the predicted IoU, the area in
  // pixels, and SAM's stability score (the IoU of the low-res mask
  // thresholded at logit +1 and at -1, as the automatic mask generator's).
  std::vector<double> candidate_score, candidate_area, candidate_stability;
  // For an ambiguous single point: the IoU of the decoder's single-mask
  // output (`rsam segment --single-mask`), which the pick is measured
  // against; -1 otherwise.
  double single_mask_iou = -1;
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

// JSON holds UTF-8 only: `s` unchanged when it is valid UTF-8, else each
// invalid byte written as the four characters "\xNN". Sample ids and paths
// from the file system go through it before they reach a report.
std::string utf8_escaped(const std::string& s);

// Each method's name in reports: "sam" for "none", else the file's stem.
// Files with the same stem (every `rsam train` writes adapter.safetensors)
// are told apart by their folder ("run1/adapter"); names that still clash
// are an rsam::Error.
std::vector<std::string> method_labels(const std::vector<std::string>& adapters);

// The shares of one evaluation (EvalOptions::shard) as one result: the
// records in the order a single process writes them, summary and oracle
// recomputed. rsam::Error if no share evaluated any sample.
EvalResult merge_shards(std::vector<EvalResult> parts, const EvalOptions& opts);
// A share's records as JSON (results.json's per-record objects), and back.
void write_records(const std::string& path, const std::vector<Record>& records);
std::vector<Record> read_records(const std::string& path);

// A finished evaluation as its report holds it: the options that decided
// the numbers and every record. `path` is a report directory or its
// results.json; rsam::Error (one line) if missing or not a report.
struct EvalRun {
  nlohmann::json options;
  std::vector<Record> records;
};
EvalRun read_run(const std::string& path);

// Summaries and reports from records (exposed for tests and merges).
nlohmann::json summarize(const std::vector<Record>& records);
nlohmann::json rank_oracle(const std::vector<Record>& records);
void write_report(const std::string& dir, const EvalOptions& opts, const EvalResult& r);
// The result a report's results.json holds, if it was written with the same
// deciding options (data, model, adapters, corruptions, prompts, seed, ...);
// nullopt when missing, unreadable or different. Lets a resumed study skip
// evaluations that finished.
std::optional<EvalResult> load_results(const std::string& results_json, const EvalOptions& opts);
// Grouped bars: IoU per corruption (x) for each method, one prompt, from a
// summary shaped like EvalResult::summary (method -> corruption -> prompt -> {iou}).
void bar_chart(const std::string& path, const nlohmann::json& summary, const std::string& prompt);

}  // namespace rsam::eval
