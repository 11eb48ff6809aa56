#include "eval/records.h"

#include <filesystem>
#include <fstream>

#include "error.h"
#include "io/fs.h"
#include "io/text.h"

namespace rsam::eval {

namespace fs = std::filesystem;

std::string utf8_escaped(const std::string& s) { return io::escape_bytes(s, /*controls=*/false); }

// results.json's per-record object; record_from_json reads back what this writes.
nlohmann::json record_json(const Record& x) {
  return {{"method", x.method},
          {"sample", x.sample},
          {"index", x.index},
          {"corruption", x.corruption},
          {"prompt", x.prompt},
          {"iou", x.m.iou},
          {"dice", x.m.dice},
          {"pixel_accuracy", x.m.pixel_accuracy},
          {"boundary_iou", x.m.boundary_iou},
          {"score", x.score},
          {"best_candidate_iou", x.best_candidate_iou},
          {"candidate_iou", x.candidate_iou},
          {"candidate_score", x.candidate_score},
          {"candidate_area", x.candidate_area},
          {"candidate_stability", x.candidate_stability},
          {"single_mask_iou", x.single_mask_iou},
          {"picked", x.picked}};
}

Record record_from_json(const nlohmann::json& x) {
  Record rec;
  rec.method = x.at("method").get<std::string>();
  rec.sample = x.at("sample").get<std::string>();
  rec.index = x.at("index").get<size_t>();
  rec.corruption = x.at("corruption").get<std::string>();
  rec.prompt = x.at("prompt").get<std::string>();
  rec.m.iou = x.at("iou").get<double>();
  rec.m.dice = x.at("dice").get<double>();
  rec.m.pixel_accuracy = x.at("pixel_accuracy").get<double>();
  rec.m.boundary_iou = x.at("boundary_iou").get<double>();
  rec.score = x.at("score").get<float>();
  // Reports written before best_candidate_iou existed: the picked IoU.
  rec.best_candidate_iou = x.value("best_candidate_iou", rec.m.iou);
  rec.candidate_iou = x.value("candidate_iou", std::vector<double>{});
  rec.picked = x.value("picked", -1);
  rec.candidate_score = x.value("candidate_score", std::vector<double>{});
  rec.candidate_area = x.value("candidate_area", std::vector<double>{});
  rec.candidate_stability = x.value("candidate_stability", std::vector<double>{});
  rec.single_mask_iou = x.value("single_mask_iou", -1.0);
  return rec;
}


void write_records(const std::string& path, const std::vector<Record>& records) {
  nlohmann::json recs = nlohmann::json::array();
  for (const auto& x : records) recs.push_back(record_json(x));
  io::write_text(path, recs.dump());
}

std::vector<Record> read_records(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error("cannot read '" + path + "'");
  std::vector<Record> out;
  try {
    for (const auto& x : nlohmann::json::parse(f)) out.push_back(record_from_json(x));
  } catch (const nlohmann::json::exception& e) {
    throw Error("'" + path + "' is not a list of eval records: " + e.what());
  }
  return out;
}

EvalRun read_run(const std::string& path) {
  const std::string file = fs::is_directory(path) ? (fs::path(path) / "results.json").string() : path;
  std::ifstream f(file);
  if (!f) throw Error("cannot read '" + file + "' (give a report directory of rsam eval or its results.json)");
  EvalRun run;
  try {
    const auto j = nlohmann::json::parse(f);
    run.options = j.at("options");
    for (const auto& x : j.at("records")) run.records.push_back(record_from_json(x));
  } catch (const nlohmann::json::exception& e) {
    throw Error("'" + file + "' is not an rsam eval results.json: " + e.what());
  }
  if (run.records.empty()) throw Error("'" + file + "' holds no record");
  return run;
}

}  // namespace rsam::eval
