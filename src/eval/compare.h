// Paired comparison of two evaluations: for each prompt and corruption, the
// mean difference over the objects both runs scored, with its standard
// error, so that a change is read against its noise. Runs of `rsam eval`
// with the same data, seed and severity see the same objects, prompts and
// corruptions, so their per-object differences are paired.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "eval/evaluator.h"

namespace rsam::eval {

struct PairedRow {
  std::string prompt;
  // A corruption, or a set averaged per object first: "robustseg (mean of
  // 15)", "lqseg (mean of 3)", "degraded (mean)" (every shared corruption
  // but clean), each over the objects that have all of its members.
  std::string corruption;
  size_t n = 0;                  // objects paired
  double base = 0, other = 0;    // means over those objects
  double diff = 0;               // other - base
  double se = 0;                 // standard error of diff (sd of the n differences / sqrt(n)); NaN for n < 2
  size_t better = 0, worse = 0;  // objects where other is above / below base
};

struct CompareOptions {
  // Which method of each run (results hold one per --compare entry); empty
  // when the run holds one.
  std::string base_method, other_method;
  std::string metric = "iou";  // iou, dice, boundary_iou or pixel_accuracy
};

struct PairedComparison {
  std::string base_method, other_method, metric;
  std::vector<PairedRow> rows;  // prompt by prompt: clean, each corruption, then the sets
  // Records of the chosen methods that found no partner (other objects,
  // prompts or corruptions); they are in no row.
  size_t base_unpaired = 0, other_unpaired = 0;
  // Random prompt types left out because the runs drew them differently
  // (a run written before draws stopped depending on the place in --prompts).
  std::vector<std::string> skipped;
};

// rsam::Error (one line) when the runs cannot be paired: different data,
// seed or severity, a run with several methods and none named, an unknown
// metric, or no object scored by both with the same prompt and corruption.
PairedComparison compare_runs(const EvalRun& base, const EvalRun& other, const CompareOptions& opts);

// A Markdown table (values in %) and the same as JSON (fractions, se null
// when undefined).
std::string comparison_markdown(const PairedComparison& c, const std::string& base_name, const std::string& other_name);
nlohmann::json comparison_json(const PairedComparison& c);

}  // namespace rsam::eval
