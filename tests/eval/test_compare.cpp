// Evaluation's pieces without a model: method labels, paired comparison of
// two runs, and the study's method configs.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "adapt/adapter.h"
#include "error.h"
#include "eval/compare.h"
#include "eval/evaluator.h"
#include "eval/study.h"

TEST(Eval, MethodLabelsTellSameNamedAdaptersApartByFolder) {
  using rsam::eval::method_labels;
  EXPECT_EQ(method_labels({"none", "a/gara.safetensors"}), (std::vector<std::string>{"sam", "gara"}));
  EXPECT_EQ(method_labels({"none", "run1/adapter.safetensors", "/x/run2/adapter.safetensors"}),
            (std::vector<std::string>{"sam", "run1/adapter", "run2/adapter"}));
  EXPECT_THROW(method_labels({"run1/adapter.safetensors", "/y/run1/adapter.safetensors"}), rsam::Error);
  EXPECT_THROW(method_labels({"none", "none"}), rsam::Error);
}

namespace {
rsam::eval::Record rec(const std::string& method, size_t index, const std::string& corruption,
                       const std::string& prompt, double iou) {
  rsam::eval::Record r;
  r.method = method, r.index = index, r.sample = "s" + std::to_string(index);
  r.corruption = corruption, r.prompt = prompt, r.m.iou = iou, r.m.dice = iou / 2;
  return r;
}
}  // namespace

TEST(Compare, PairsObjectsAndGivesTheStandardErrorOfTheDifference) {
  using namespace rsam::eval;
  EvalRun base, other;
  base.options = other.options = {{"data", "coco:x"}, {"seed", 0}, {"severity", "3"}, {"corruptions", "clean,lqseg"}};
  // Box, clean: differences +0.1, +0.2, -0.1 on objects 0-2; object 3 only in
  // the base, object 4 only in the other.
  const double b[] = {0.5, 0.6, 0.7, 0.8}, o[] = {0.6, 0.8, 0.6};
  for (size_t i = 0; i < 4; ++i) base.records.push_back(rec("sam", i, "clean", "box", b[i]));
  for (size_t i = 0; i < 3; ++i) other.records.push_back(rec("sam", i, "clean", "box", o[i]));
  other.records.push_back(rec("sam", 4, "clean", "box", 0.9));
  // LQ: objects 0 and 1 have all three levels, object 2 misses lq3 in the other run.
  for (size_t i = 0; i < 3; ++i)
    for (int l = 1; l <= 3; ++l) {
      const std::string c = "lq" + std::to_string(l);
      base.records.push_back(rec("sam", i, c, "box", 0.1 * l));
      if (!(i == 2 && l == 3)) other.records.push_back(rec("sam", i, c, "box", 0.1 * l + 0.01 * double(i + 1)));
    }
  const auto c = compare_runs(base, other, {});
  EXPECT_EQ(c.base_method, "sam");
  ASSERT_FALSE(c.rows.empty());
  const auto& clean = c.rows[0];  // clean comes first
  EXPECT_EQ(clean.corruption, "clean");
  EXPECT_EQ(clean.n, 3u);
  EXPECT_NEAR(clean.base, 0.6, 1e-12);
  EXPECT_NEAR(clean.other, 2.0 / 3, 1e-12);
  EXPECT_NEAR(clean.diff, 0.2 / 3, 1e-12);
  // sd of (0.1, 0.2, -0.1) around 1/15: sqrt(((0.1-m)^2 + (0.2-m)^2 + (-0.1-m)^2) / 2), over sqrt(3).
  const double m = 0.2 / 3, sd = std::sqrt((std::pow(0.1 - m, 2) + std::pow(0.2 - m, 2) + std::pow(-0.1 - m, 2)) / 2);
  EXPECT_NEAR(clean.se, sd / std::sqrt(3.0), 1e-12);
  EXPECT_EQ(clean.better, 2u);
  EXPECT_EQ(clean.worse, 1u);
  // Per level, then the set: objects 0 and 1 only, each averaged over its three levels.
  std::map<std::string, PairedRow> by;
  for (const auto& r : c.rows) by[r.corruption] = r;
  ASSERT_TRUE(by.count("lq3") && by.count("lqseg (mean of 3)"));
  EXPECT_FALSE(by.count("degraded (mean)"));  // it would repeat the LQ row
  EXPECT_EQ(by["lq1"].n, 3u);
  EXPECT_EQ(by["lq3"].n, 2u);
  const auto& set = by["lqseg (mean of 3)"];
  EXPECT_EQ(set.n, 2u);
  EXPECT_NEAR(set.base, 0.2, 1e-12);
  EXPECT_NEAR(set.diff, 0.015, 1e-12);
  EXPECT_NEAR(set.se, 0.005, 1e-12);  // differences 0.01 and 0.02
  EXPECT_FALSE(by.count("robustseg (mean of 15)"));
  {
    // With fog too, every corruption averaged per object: objects 0 and 1.
    auto fogged = base, fogged_other = other;
    for (size_t i = 0; i < 3; ++i) {
      fogged.records.push_back(rec("sam", i, "fog", "box", 0.4));
      fogged_other.records.push_back(rec("sam", i, "fog", "box", 0.5));
    }
    std::map<std::string, PairedRow> f;
    for (const auto& r : compare_runs(fogged, fogged_other, {}).rows) f[r.corruption] = r;
    ASSERT_TRUE(f.count("degraded (mean)"));
    EXPECT_EQ(f["degraded (mean)"].n, 2u);
    EXPECT_NEAR(f["degraded (mean)"].diff, (0.1 + 3 * 0.015) / 4, 1e-12);
  }
  EXPECT_EQ(c.base_unpaired, 2u);   // object 3 clean, object 2 lq3
  EXPECT_EQ(c.other_unpaired, 1u);  // object 4
  // Another metric reads another field.
  CompareOptions dice;
  dice.metric = "dice";
  EXPECT_NEAR(compare_runs(base, other, dice).rows[0].diff, 0.1 / 3, 1e-12);
  const auto md = comparison_markdown(c, "a", "b");
  EXPECT_NE(md.find("| box | clean | 3 | 60.00 | 66.67 | +6.67 ± "), std::string::npos) << md;
  const auto j = comparison_json(c);
  EXPECT_EQ(j["rows"].size(), c.rows.size());
  EXPECT_EQ(j["rows"][0]["n"].get<size_t>(), 3u);

  // What cannot be paired is an error, not a table.
  auto seeded = other;
  seeded.options["seed"] = 1;
  EXPECT_THROW(compare_runs(base, seeded, {}), rsam::Error);
  auto severe = other;
  severe.options["severity"] = "random";
  EXPECT_THROW(compare_runs(base, severe, {}), rsam::Error);
  auto clean_only = base, clean_other = severe;  // the severity does not matter without corruption
  clean_only.options["corruptions"] = clean_other.options["corruptions"] = "clean";
  EXPECT_NO_THROW(compare_runs(clean_only, clean_other, {}));
  auto two = other;
  two.records.push_back(rec("gara", 0, "clean", "box", 0.7));
  EXPECT_THROW(compare_runs(base, two, {}), rsam::Error);  // which method?
  CompareOptions pick;
  pick.other_method = "gara";
  EXPECT_EQ(compare_runs(base, two, pick).rows.at(0).n, 1u);
  pick.other_method = "lora";
  EXPECT_THROW(compare_runs(base, two, pick), rsam::Error);
  CompareOptions bad;
  bad.metric = "accuracy";
  EXPECT_THROW(compare_runs(base, other, bad), rsam::Error);
  auto points = other;
  for (auto& r : points.records) r.prompt = "points:1";
  EXPECT_THROW(compare_runs(base, points, {}), rsam::Error);  // nothing in common
  auto twice = base;
  twice.records.push_back(twice.records[0]);
  EXPECT_THROW(compare_runs(twice, other, {}), rsam::Error);

  // Runs written before draws by type drew the k-th listed type from key k:
  // a random type listed at different places is left out, a box is not.
  EvalRun old_a, old_b;
  old_a.options = {{"data", "d"}, {"seed", 0}, {"prompts", "point:1,box"}, {"corruptions", "clean"}};
  old_b.options = {{"data", "d"}, {"seed", 0}, {"prompts", "box,point:1"}, {"corruptions", "clean"}};
  for (size_t i = 0; i < 3; ++i)
    for (const char* p : {"points:1", "box"}) {
      old_a.records.push_back(rec("sam", i, "clean", p, 0.5));
      old_b.records.push_back(rec("sam", i, "clean", p, 0.6));
    }
  auto mixed = compare_runs(old_a, old_b, {});
  ASSERT_EQ(mixed.rows.size(), 1u);
  EXPECT_EQ(mixed.rows[0].prompt, "box");
  EXPECT_EQ(mixed.skipped, std::vector<std::string>{"points:1"});
  EXPECT_EQ(mixed.base_unpaired, 0u);
  EXPECT_NE(comparison_markdown(mixed, "a", "b").find("Not compared: points:1 ("), std::string::npos);
  auto now = old_b;
  now.options["prompt_draws"] = "by type";  // draws from key 0, as the first listed type did
  EXPECT_EQ(compare_runs(old_a, now, {}).rows.size(), 2u);
  EXPECT_EQ(compare_runs(now, old_b, {}).skipped.size(), 1u);
}

// The study's own method configs go through the strict adapter-config check.
TEST(Study, MethodConfigsAreValid) {
  for (int width : {128, 768, 1280})
    for (const auto& [name, cfg] : rsam::eval::default_study_methods(width))
      EXPECT_NO_THROW(rsam::adapt::check_config(nlohmann::json::parse(cfg), name)) << cfg;
}
