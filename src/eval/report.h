// An evaluation's report folder: results.json (options, summary, oracle,
// records), records.csv, report.md in the papers' layout, and the chart.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

#include "eval/evaluate.h"

namespace rsam::eval {

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
