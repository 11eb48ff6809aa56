// One scored (method, sample, corruption, prompt) and how records travel:
// results.json's per-record objects, the shares --nproc workers leave, and
// a finished report read back.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "data/metrics.h"

namespace rsam::eval {

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

// JSON holds UTF-8 only: `s` unchanged when it is valid UTF-8, else each
// invalid byte written as the four characters "\xNN". Sample ids and paths
// from the file system go through it before they reach a report.
std::string utf8_escaped(const std::string& s);

// results.json's per-record object, and back (reports written before some
// fields existed read with their old meaning).
nlohmann::json record_json(const Record& r);
Record record_from_json(const nlohmann::json& j);

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

}  // namespace rsam::eval
