// Train -> evaluate -> report on the tiny model and generated scenes, and
// what evaluation's options change: the results read back, determinism
// across prompt lists, --refine, --pick stability, --flip, and rsam
// compare's pairing of two reports.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>

#include "end_to_end.h"
#include "error.h"
#include "eval/compare.h"
#include "eval/evaluator.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using namespace rsam_test;

TEST(EndToEnd, TrainThenEvaluateWithAReport) {
  const auto x = train_and_evaluate("report");
  const auto& o = x.train;
  const auto& r = x.trained;
  const auto& e = x.eval;
  const auto& res = x.result;
  EXPECT_EQ(r.steps, 4);
  EXPECT_TRUE(std::isfinite(r.last_loss));
  EXPECT_TRUE(fs::exists(r.weights_path));
  EXPECT_TRUE(fs::exists(fs::path(o.out) / "loss.png"));
  EXPECT_GE(r.val_iou, 0.0);
  std::ifstream mf(fs::path(o.out) / "metrics.jsonl");
  int lines = 0;
  for (std::string l; std::getline(mf, l);) ++lines;
  EXPECT_EQ(lines, 5);  // 4 steps + validation

  EXPECT_EQ(res.records.size(), 2u * 6 * 3 * 3);
  EXPECT_TRUE(res.summary.contains("sam"));
  EXPECT_TRUE(res.summary.contains("adapter"));
  EXPECT_TRUE(res.summary["sam"].contains("degraded (mean)"));
  EXPECT_FALSE(res.oracle.is_null());
  // One point gets three candidates; the best of them (knowing the answer)
  // bounds the picked one. A box gets one mask, so the two coincide.
  int better = 0, clean_points = 0, single_differs = 0;
  double single_sum = 0;
  for (const auto& rec : res.records) {
    if (rec.prompt == "points:1") {
      EXPECT_GE(rec.best_candidate_iou, rec.m.iou);
      better += rec.best_candidate_iou > rec.m.iou;
      // Every candidate's IoU is kept; the picked one is the reported mask.
      ASSERT_EQ(rec.candidate_iou.size(), 3u);
      ASSERT_GE(rec.picked, 0);
      ASSERT_LT(rec.picked, 3);
      EXPECT_EQ(rec.candidate_iou[size_t(rec.picked)], rec.m.iou);
      EXPECT_EQ(*std::max_element(rec.candidate_iou.begin(), rec.candidate_iou.end()), rec.best_candidate_iou);
      // The pick is the highest predicted IoU; areas and stabilities are real.
      ASSERT_EQ(rec.candidate_score.size(), 3u);
      EXPECT_EQ(std::max_element(rec.candidate_score.begin(), rec.candidate_score.end()) - rec.candidate_score.begin(),
                rec.picked);
      EXPECT_NEAR(rec.candidate_score[size_t(rec.picked)], rec.score, 1e-6);
      ASSERT_EQ(rec.candidate_area.size(), 3u);
      ASSERT_EQ(rec.candidate_stability.size(), 3u);
      for (size_t j = 0; j < 3; ++j) {
        EXPECT_GE(rec.candidate_area[j], 0.0);
        EXPECT_GE(rec.candidate_stability[j], 0.0);
        EXPECT_LE(rec.candidate_stability[j], 1.0);
      }
      clean_points += rec.corruption == "clean" && rec.method == "sam";
      // The decoder's single-mask output, scored beside the pick: a fourth
      // mask, not one of the three candidates.
      EXPECT_GE(rec.single_mask_iou, 0.0);
      EXPECT_LE(rec.single_mask_iou, 1.0);
      single_differs += std::none_of(rec.candidate_iou.begin(), rec.candidate_iou.end(),
                                     [&](double v) { return v == rec.single_mask_iou; });
      if (rec.corruption == "clean" && rec.method == "sam") single_sum += rec.single_mask_iou;
    } else {
      EXPECT_EQ(rec.best_candidate_iou, rec.m.iou);
      EXPECT_TRUE(rec.candidate_iou.empty());
      EXPECT_EQ(rec.picked, -1);
      EXPECT_EQ(rec.single_mask_iou, -1.0);
    }
  }
  EXPECT_GT(single_differs, 0);
  EXPECT_NEAR(res.summary["sam"]["clean"]["points:1"]["single_mask_iou"].get<double>(), single_sum / clean_points,
              1e-9);
  EXPECT_FALSE(res.summary["sam"]["clean"]["box"].contains("single_mask_iou"));
  {
    const auto& cands = res.summary["sam"]["clean"]["points:1"]["candidates"];
    ASSERT_EQ(cands.size(), 3u);
    int64_t best_total = 0, picked_total = 0;
    for (const auto& c : cands) best_total += c["best"].get<int64_t>(), picked_total += c["picked"].get<int64_t>();
    EXPECT_EQ(best_total, clean_points);
    EXPECT_EQ(picked_total, clean_points);
    EXPECT_FALSE(res.summary["sam"]["clean"]["box"].contains("candidates"));
  }
  EXPECT_GT(better, 0) << "an untrained model never ranks a worse candidate first?";
  EXPECT_GE(res.summary["sam"]["clean"]["points:1"]["best_candidate_iou"].get<double>(),
            res.summary["sam"]["clean"]["points:1"]["iou"].get<double>());
  for (const char* f : {"report.md", "results.json", "records.csv", "iou_per_corruption.png"})
    EXPECT_TRUE(fs::exists(fs::path(e.report) / f)) << f;
  std::ifstream rf(fs::path(e.report) / "report.md");
  const std::string report((std::istreambuf_iterator<char>(rf)), std::istreambuf_iterator<char>());
  EXPECT_NE(report.find("points:1: the mask picked by predicted IoU vs the best of the three and the single-mask"),
            std::string::npos);
  EXPECT_NE(report.find("per candidate in the decoder's order"), std::string::npos);
}

TEST(EndToEnd, AFinishedEvaluationReadsBackForItsOwnOptions) {
  const auto x = train_and_evaluate("readback");
  const auto& e = x.eval;
  const auto& res = x.result;
  // A finished evaluation reads back as it was (a resumed study reuses it),
  // but only for the options that wrote it.
  const auto results_json = (fs::path(e.report) / "results.json").string();
  auto back = rsam::eval::load_results(results_json, e);
  ASSERT_TRUE(back.has_value());
  ASSERT_EQ(back->records.size(), res.records.size());
  for (size_t i = 0; i < res.records.size(); ++i) {
    EXPECT_EQ(back->records[i].prompt, res.records[i].prompt);
    EXPECT_NEAR(back->records[i].m.iou, res.records[i].m.iou, 1e-12);
    EXPECT_NEAR(back->records[i].best_candidate_iou, res.records[i].best_candidate_iou, 1e-12);
    EXPECT_EQ(back->records[i].picked, res.records[i].picked);
    EXPECT_EQ(back->records[i].candidate_iou.size(), res.records[i].candidate_iou.size());
    EXPECT_EQ(back->records[i].candidate_stability, res.records[i].candidate_stability);
    EXPECT_EQ(back->records[i].candidate_area, res.records[i].candidate_area);
    EXPECT_NEAR(back->records[i].single_mask_iou, res.records[i].single_mask_iou, 1e-12);
  }
  EXPECT_NEAR(back->summary["sam"]["clean"]["box"]["iou"].get<double>(),
              res.summary["sam"]["clean"]["box"]["iou"].get<double>(), 1e-12);
  EXPECT_FALSE(back->oracle.is_null());
  auto other = e;
  other.seed = 7;
  EXPECT_FALSE(rsam::eval::load_results(results_json, other).has_value());
  EXPECT_FALSE(rsam::eval::load_results(results_json + ".missing", e).has_value());
  {
    std::ofstream bad(fs::path(e.report) / "truncated.json");
    bad << "{\"options\": {";
  }
  EXPECT_FALSE(rsam::eval::load_results((fs::path(e.report) / "truncated.json").string(), e).has_value());
}

// Same seed, same prompts and corruptions: the base model scores identically twice.
TEST(EndToEnd, TheBaseModelScoresTheSameTwice) {
  const auto x = train_and_evaluate("again");
  const auto& res = x.result;
  auto again = rsam::eval::evaluate(base_only(x.eval));
  for (size_t i = 0; i < again.records.size(); ++i) EXPECT_EQ(again.records[i].m.iou, res.records[i].m.iou);
}

TEST(EndToEnd, APromptTypeDrawsTheSamePointsWhateverElseIsListed) {
  const auto e = eval_options(make_scenes("e2e_listed", 6));
  auto again = rsam::eval::evaluate(e);
  // A prompt type draws the same points whatever else is listed, so runs with
  // other lists pair object by object.
  {
    auto listed = e;
    listed.prompts = "box,clicks:3,point:1";
    const auto l = rsam::eval::evaluate(listed);
    std::map<std::pair<std::string, std::string>, double> first;
    for (const auto& x : again.records) first[{x.sample + x.corruption, x.prompt}] = x.m.iou;
    int same = 0;
    for (const auto& x : l.records) {
      ASSERT_TRUE(first.count({x.sample + x.corruption, x.prompt})) << x.prompt;
      EXPECT_EQ(x.m.iou, (first[{x.sample + x.corruption, x.prompt}])) << x.sample << " " << x.prompt;
      same += x.prompt == "points:1";
    }
    EXPECT_EQ(same, 6 * 3);
  }
}

TEST(EndToEnd, RefineDecodesThePickedMaskAgain) {
  const auto x = train_and_evaluate("refine");
  const auto e = base_only(x.eval);
  auto again = rsam::eval::evaluate(e);
  // --refine: the same first decodes (candidates, pick, single-mask output),
  // then the picked mask is decoded again; clicks:N keeps its own rounds.
  auto refined_opts = e;
  refined_opts.refine = 1;
  refined_opts.report = (fs::path(::testing::TempDir()) / "rsam_eval_report_refined").string();
  auto refined = rsam::eval::evaluate(refined_opts);
  ASSERT_EQ(refined.records.size(), again.records.size());
  int moved = 0;
  for (size_t i = 0; i < refined.records.size(); ++i) {
    const auto &a = again.records[i], &b = refined.records[i];
    ASSERT_EQ(a.prompt, b.prompt);
    if (a.prompt == "clicks:3") {
      EXPECT_EQ(b.m.iou, a.m.iou);
      continue;
    }
    moved += b.m.iou != a.m.iou;
    EXPECT_EQ(b.candidate_iou, a.candidate_iou);
    EXPECT_EQ(b.picked, a.picked);
    EXPECT_EQ(b.single_mask_iou, a.single_mask_iou);
    // One mask for a box: its "best candidate" is the refined mask itself.
    EXPECT_EQ(b.best_candidate_iou, a.prompt == "points:1" ? a.best_candidate_iou : b.m.iou);
  }
  EXPECT_GT(moved, 0) << "refinement changed no mask";
  EXPECT_FALSE(rsam::eval::load_results((fs::path(refined_opts.report) / "results.json").string(), e).has_value());
  std::ifstream rrf(fs::path(refined_opts.report) / "report.md");
  const std::string rreport((std::istreambuf_iterator<char>(rrf)), std::istreambuf_iterator<char>());
  EXPECT_NE(rreport.find("--refine 1"), std::string::npos);
  // rsam compare reads both reports back and pairs them object by object:
  // clicks:N is not refined, so its rows do not move.
  {
    const auto cmp = rsam::eval::compare_runs(rsam::eval::read_run(x.eval.report),
                                              rsam::eval::read_run(refined_opts.report), {"sam", "", "iou"});
    ASSERT_FALSE(cmp.rows.empty());
    for (const auto& row : cmp.rows) {
      EXPECT_EQ(row.n, 6u) << row.prompt << " " << row.corruption;
      if (row.prompt == "clicks:3") {
        EXPECT_EQ(row.diff, 0.0);
      }
    }
    EXPECT_EQ(cmp.base_unpaired, 0u);
  }
}

TEST(EndToEnd, PickStabilityScoresTheMostStableCandidate) {
  const auto x = train_and_evaluate("stable");
  const auto e = base_only(x.eval);
  auto again = rsam::eval::evaluate(e);
  const auto results_json = (fs::path(x.eval.report) / "results.json").string();
  // --pick stability: the same candidates, the most stable one scored.
  auto stable_opts = e;
  stable_opts.pick = rsam::Pick::Stability;
  const auto stable = rsam::eval::evaluate(stable_opts);
  ASSERT_EQ(stable.records.size(), again.records.size());
  int lone = 0;
  for (size_t i = 0; i < stable.records.size(); ++i) {
    const auto &a = again.records[i], &b = stable.records[i];
    // A box gets one mask: nothing to pick. clicks:N starts from a lone
    // point whose mask is picked the same way, so its rounds may move.
    if (a.prompt == "box") {
      EXPECT_EQ(b.m.iou, a.m.iou);
    }
    if (a.prompt != "points:1") continue;
    ++lone;
    EXPECT_EQ(b.candidate_iou, a.candidate_iou);
    ASSERT_EQ(b.candidate_stability.size(), 3u);
    const auto& st = b.candidate_stability;
    EXPECT_EQ(b.picked, std::max_element(st.begin(), st.end()) - st.begin());
    EXPECT_EQ(b.m.iou, b.candidate_iou[size_t(b.picked)]);
  }
  EXPECT_GT(lone, 0);
  EXPECT_FALSE(rsam::eval::load_results(results_json, stable_opts).has_value());  // another pick, other numbers
  EXPECT_THROW(rsam::parse_pick("largest"), rsam::Error);
}

TEST(EndToEnd, FlipScoresEveryMaskFromTwoViews) {
  const auto x = train_and_evaluate("flip");
  const auto e = base_only(x.eval);
  auto again = rsam::eval::evaluate(e);
  const auto results_json = (fs::path(x.eval.report) / "results.json").string();
  // --flip: every mask from two views (SamPredictor's flip, tested in
  // test_model), so the scores move; a report of its own.
  auto flip_opts = e;
  flip_opts.flip = true;
  flip_opts.report = (fs::path(::testing::TempDir()) / "rsam_eval_report_flipped").string();
  const auto flipped = rsam::eval::evaluate(flip_opts);
  ASSERT_EQ(flipped.records.size(), again.records.size());
  int changed = 0;
  for (size_t i = 0; i < flipped.records.size(); ++i) changed += flipped.records[i].score != again.records[i].score;
  EXPECT_GT(changed, 0) << "the mirrored view changed no score";
  EXPECT_FALSE(rsam::eval::load_results(results_json, flip_opts).has_value());
  EXPECT_TRUE(rsam::eval::load_results((fs::path(flip_opts.report) / "results.json").string(), flip_opts).has_value());
  std::ifstream frf(fs::path(flip_opts.report) / "report.md");
  const std::string freport((std::istreambuf_iterator<char>(frf)), std::istreambuf_iterator<char>());
  EXPECT_NE(freport.find("--flip"), std::string::npos);
}
