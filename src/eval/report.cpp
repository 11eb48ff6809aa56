#include "eval/report.h"

#include <opencv2/core.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "data/loader.h"
#include "data/prompts.h"
#include "error.h"
#include "eval/summary.h"
#include "io/fs.h"
#include "io/image_codec.h"
#include "viz/viz.h"

namespace rsam::eval {

namespace fs = std::filesystem;

namespace {

// The options that decide an evaluation's numbers (threads, paths of the
// report and verbosity do not).
nlohmann::json options_json(const EvalOptions& o) {
  std::vector<std::string> adapters;
  for (const auto& a : o.adapters) adapters.push_back(utf8_escaped(a));
  nlohmann::json j = {{"checkpoint", utf8_escaped(o.checkpoint)},
                      {"adapters", adapters},
                      {"data", utf8_escaped(o.data)},
                      {"corruptions", utf8_escaped(o.corruptions)},
                      {"severity", data::severity_name(o.severity)},
                      {"prompts", utf8_escaped(o.prompts)},
                      {"seed", o.seed},
                      {"max_samples", o.max_samples},
                      {"precision", precision_name(o.precision)},
                      {"refine", o.refine}};
  // Since 2026-12-03 a prompt type draws the same prompt wherever it is
  // listed; results written before (without this entry) drew the k-th listed
  // type from key k, so they are not reused for the new draws.
  j["prompt_draws"] = "by type";
  // Only when they differ from the default, so results cached before --pick
  // and --flip existed still match.
  if (o.pick != Pick::Score) j["pick"] = pick_name(o.pick);
  if (o.flip) j["flip"] = true;
  return j;
}

// results.json (options, summary, oracle, every record) and records.csv.
void write_data_files(const std::string& dir, const EvalOptions& o, const EvalResult& r) {
  const nlohmann::json opts = options_json(o);
  nlohmann::json recs = nlohmann::json::array();
  std::ostringstream csv;
  csv << "method,sample,index,corruption,prompt,iou,dice,pixel_accuracy,boundary_iou,score,best_candidate_iou,picked,"
         "candidate_iou,candidate_score,candidate_area,candidate_stability,single_mask_iou\n";
  for (const auto& x : r.records) {
    recs.push_back(record_json(x));
    csv << x.method << ',' << '"' << x.sample << '"' << ',' << x.index << ',' << x.corruption << ',' << x.prompt << ','
        << x.m.iou << ',' << x.m.dice << ',' << x.m.pixel_accuracy << ',' << x.m.boundary_iou << ',' << x.score << ','
        << x.best_candidate_iou << ',' << x.picked;
    // Each per-candidate list is one quoted field, its values split by ';'.
    for (const auto* v : {&x.candidate_iou, &x.candidate_score, &x.candidate_area, &x.candidate_stability}) {
      csv << ",\"";
      for (size_t j = 0; j < v->size(); ++j) csv << (j ? ";" : "") << (*v)[j];
      csv << '"';
    }
    csv << ',';
    if (x.single_mask_iou >= 0) csv << x.single_mask_iou;
    csv << "\n";
  }
  io::write_text(
      (fs::path(dir) / "results.json").string(),
      nlohmann::json{{"options", opts}, {"summary", r.summary}, {"oracle", r.oracle}, {"records", recs}}.dump(1));
  io::write_text((fs::path(dir) / "records.csv").string(), csv.str());
}

// The title and the command line that reproduces the numbers.
void md_header(std::ostringstream& md, const EvalOptions& o) {
  md << "# rsam robustness report\n\n";
  md << "Re-run: `rsam eval --checkpoint " << o.checkpoint << " --data " << o.data << " --corruption " << o.corruptions
     << " --severity " << data::severity_name(o.severity) << " --prompts " << o.prompts << " --seed " << o.seed;
  if (!o.adapters.empty()) {
    md << " --compare ";
    for (size_t i = 0; i < o.adapters.size(); ++i) md << (i ? "," : "") << o.adapters[i];
  }
  if (o.max_samples) md << " --max-samples " << o.max_samples;
  if (o.refine) md << " --refine " << o.refine;
  if (o.pick != Pick::Score) md << " --pick " << pick_name(o.pick);
  if (o.flip) md << " --flip";
  md << "`\n\nIoU / Dice in %, mean over samples. Per-sample numbers: `records.csv`, `results.json`.\n\n";
}

// One table per method in the papers' layout: rows corruptions, columns
// prompt types.
void md_methods(std::ostringstream& md, const nlohmann::json& summary, const std::vector<data::PromptSpec>& prompts) {
  for (auto& [method, byc] : summary.items()) {
    md << "## " << method << "\n\n| corruption |";
    for (const auto& p : prompts) md << " " << p.text << " IoU | " << p.text << " Dice |";
    md << "\n|---|";
    for (size_t i = 0; i < prompts.size(); ++i) md << "---|---|";
    md << "\n";
    for (auto& [c, byp] : byc.items()) {
      const bool agg = c == "degraded (mean)";
      md << "| " << (agg ? "**" + c + "**" : c) << " |";
      for (const auto& p : prompts) {
        if (!byp.contains(p.text)) {
          md << " - | - |";
          continue;
        }
        char b[64];
        std::snprintf(b, sizeof b, " %.1f | %.1f |", 100 * byp[p.text]["iou"].get<double>(),
                      100 * byp[p.text]["dice"].get<double>());
        md << b;
      }
      md << "\n";
    }
    md << "\n";
  }
}

// Several methods: clean against degraded, side by side.
void md_comparison(std::ostringstream& md, const nlohmann::json& summary,
                   const std::vector<data::PromptSpec>& prompts) {
  if (summary.size() <= 1) return;
  md << "## Comparison (IoU %, clean vs mean over corruptions)\n\n| method |";
  for (const auto& p : prompts) md << " " << p.text << " clean | " << p.text << " degraded |";
  md << "\n|---|";
  for (size_t i = 0; i < prompts.size(); ++i) md << "---|---|";
  md << "\n";
  for (auto& [method, byc] : summary.items()) {
    md << "| " << method << " |";
    for (const auto& p : prompts) {
      for (const char* c : {"clean", "degraded (mean)"}) {
        if (byc.contains(c) && byc[c].contains(p.text)) {
          char b[32];
          std::snprintf(b, sizeof b, " %.1f |", 100 * byc[c][p.text]["iou"].get<double>());
          md << b;
        } else {
          md << " - |";
        }
      }
    }
    md << "\n";
  }
  md << "\n";
}

// Single points are ambiguous; SAM returns three masks and picks one by its
// predicted IoU. How much that ranking loses is a model property worth seeing.
void md_single_point(std::ostringstream& md, const nlohmann::json& summary, const data::PromptSpec& p) {
  md << "## " << p.text
     << ": the mask picked by predicted IoU vs the best of the three and the single-mask output (IoU %)\n\n"
     << "| method | clean, picked | clean, best of three | clean, single-mask output | degraded, picked | degraded, "
        "best of three | degraded, single-mask output |\n"
     << "|---|---|---|---|---|---|---|\n";
  for (auto& [method, byc] : summary.items()) {
    md << "| " << method << " |";
    for (const char* c : {"clean", "degraded (mean)"}) {
      if (!byc.contains(c) || !byc[c].contains(p.text)) {
        md << " - | - | - |";
        continue;
      }
      const auto& e = byc[c][p.text];
      char b[96];
      std::snprintf(b, sizeof b, " %.1f | %.1f |", 100 * e["iou"].get<double>(),
                    100 * e["best_candidate_iou"].get<double>());
      md << b;
      if (e.contains("single_mask_iou")) {
        std::snprintf(b, sizeof b, " %.1f |", 100 * e["single_mask_iou"].get<double>());
        md << b;
      } else {
        md << " - |";
      }
    }
    md << "\n";
  }
  md << "\n";
  // Which candidate wins and which one the score picks: a head that never
  // picks a candidate that is often best shows up here.
  std::ostringstream rows;
  for (auto& [method, byc] : summary.items()) {
    if (!byc.contains("clean") || !byc["clean"].contains(p.text) || !byc["clean"][p.text].contains("candidates"))
      continue;
    rows << "| " << method << " |";
    for (const auto& c : byc["clean"][p.text]["candidates"]) {
      char b[96];
      std::snprintf(b, sizeof b, " %.1f, %lld, %lld |", 100 * c["iou"].get<double>(),
                    (long long)c["best"].get<int64_t>(), (long long)c["picked"].get<int64_t>());
      rows << b;
    }
    rows << "\n";
  }
  if (!rows.str().empty())
    md << "Clean, per candidate in the decoder's order: mean IoU %, times best, times picked.\n\n"
       << "| method | candidate 0 | candidate 1 | candidate 2 |\n|---|---|---|---|\n"
       << rows.str() << "\n";
}

void md_oracle(std::ostringstream& md, const nlohmann::json& oracle) {
  if (oracle.is_null()) return;
  md << "## Rank oracle (degraded inputs, IoU %)\n\n";
  char b[256];
  std::snprintf(b, sizeof b,
                "| best fixed (%s) | oracle per corruption | oracle per image |\n|---|---|---|\n| %.1f | %.1f | %.1f |\n\n",
                oracle["best_fixed"]["method"].get<std::string>().c_str(), 100 * oracle["best_fixed"]["iou"].get<double>(),
                100 * oracle["per_corruption_oracle_iou"].get<double>(),
                100 * oracle["per_image_oracle_iou"].get<double>());
  md << b;
}

}  // namespace

void write_report(const std::string& dir, const EvalOptions& o, const EvalResult& r) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  // Worded as check_report's (whose wording a test asserts).
  if (ec) throw Error("cannot make the report folder '" + dir + "': " + ec.message());
  write_data_files(dir, o, r);
  std::ostringstream md;
  md_header(md, o);
  const auto prompts = data::parse_prompts(o.prompts);
  md_methods(md, r.summary, prompts);
  md_comparison(md, r.summary, prompts);
  for (const auto& p : prompts)
    if (data::is_single_point(p)) md_single_point(md, r.summary, p);
  md_oracle(md, r.oracle);
  md << "![IoU per corruption](iou_per_corruption.png)\n";
  io::write_text((fs::path(dir) / "report.md").string(), md.str());
  if (!prompts.empty()) bar_chart((fs::path(dir) / "iou_per_corruption.png").string(), r.summary, prompts.back().text);
}

std::optional<EvalResult> load_results(const std::string& path, const EvalOptions& o) {
  EvalRun run;
  try {
    run = read_run(path);
  } catch (const Error&) {
    return std::nullopt;  // missing, truncated, foreign or empty: evaluate again
  }
  if (run.options != options_json(o)) return std::nullopt;
  EvalResult r;
  r.records = std::move(run.records);
  r.summary = summarize(r.records);
  if (o.oracle) r.oracle = rank_oracle(r.records);
  return r;
}

void bar_chart(const std::string& path, const nlohmann::json& summary, const std::string& prompt) {
  // Groups: the first method's corruptions; series: the methods, in the
  // summary's order; no bar where a method lacks the prompt.
  viz::BarChart chart;
  for (auto& [m, byc] : summary.items()) {
    chart.series.push_back(m);
    if (chart.groups.empty())
      for (auto& [c, byp] : byc.items()) chart.groups.push_back(c);
  }
  for (const auto& m : chart.series) {
    auto& row = chart.values.emplace_back();
    const auto& byc = summary.at(m);
    for (const auto& c : chart.groups) {
      const bool has = byc.contains(c) && byc.at(c).contains(prompt);
      row.push_back(has ? byc.at(c).at(prompt).at("iou").get<double>() : std::nan(""));
    }
  }
  if (const cv::Mat img = viz::bar_chart(chart); !img.empty()) io::write_image(path, img, false);
}

}  // namespace rsam::eval
