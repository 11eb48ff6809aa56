#include "eval/summary.h"

#include <algorithm>
#include <map>
#include <string>

namespace rsam::eval {

namespace {

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / double(v.size());
}

}  // namespace

nlohmann::json summarize(const std::vector<Record>& records) {
  struct Acc {
    data::MetricsAccumulator m;
    double best_sum = 0;    // of best_candidate_iou
    double single_sum = 0;  // of single_mask_iou, over the records that have one
    int64_t single_n = 0;
    // Per candidate index (single points): IoU sum, times best, times picked.
    std::vector<double> cand_sum;
    std::vector<int64_t> cand_best, cand_picked;
    int64_t cand_n = 0;
    void add(const Record& r) {
      m.add(r.m), best_sum += r.best_candidate_iou;
      if (r.single_mask_iou >= 0) single_sum += r.single_mask_iou, ++single_n;
      if (r.candidate_iou.empty() || r.picked < 0) return;
      const size_t k = r.candidate_iou.size();
      if (cand_sum.size() < k) cand_sum.resize(k), cand_best.resize(k), cand_picked.resize(k);
      const size_t top =
          size_t(std::max_element(r.candidate_iou.begin(), r.candidate_iou.end()) - r.candidate_iou.begin());
      for (size_t j = 0; j < k; ++j) cand_sum[j] += r.candidate_iou[j];
      ++cand_best[top];
      if (size_t(r.picked) < k) ++cand_picked[size_t(r.picked)];
      ++cand_n;
    }
    nlohmann::json json() const {
      const auto mean = m.mean();
      nlohmann::json j{{"iou", mean.iou},
                       {"dice", mean.dice},
                       {"pixel_accuracy", mean.pixel_accuracy},
                       {"boundary_iou", mean.boundary_iou},
                       {"best_candidate_iou", m.count() ? best_sum / double(m.count()) : 0.0},
                       {"n", m.count()}};
      if (single_n > 0) j["single_mask_iou"] = single_sum / double(single_n);
      if (cand_n > 0) {
        auto& c = j["candidates"] = nlohmann::json::array();
        for (size_t k = 0; k < cand_sum.size(); ++k)
          c.push_back({{"iou", cand_sum[k] / double(cand_n)}, {"best", cand_best[k]}, {"picked", cand_picked[k]}});
      }
      return j;
    }
  };
  std::map<std::string, std::map<std::string, std::map<std::string, Acc>>> acc;
  std::map<std::string, std::map<std::string, Acc>> degraded;
  for (const auto& r : records) {
    acc[r.method][r.corruption][r.prompt].add(r);
    if (r.corruption != "clean") degraded[r.method][r.prompt].add(r);
  }
  nlohmann::json out = nlohmann::json::object();
  for (auto& [method, byc] : acc) {
    for (auto& [c, byp] : byc)
      for (auto& [p, a] : byp) out[method][c][p] = a.json();
    for (auto& [p, a] : degraded[method]) out[method]["degraded (mean)"][p] = a.json();
  }
  return out;
}

nlohmann::json rank_oracle(const std::vector<Record>& records) {
  // GaRA Fig. 2: how much a rank chosen per corruption, or per image, would
  // gain over the best single rank. "Methods" are the compared adapters.
  std::map<std::string, std::vector<double>> by_method;
  std::map<std::string, std::map<std::string, std::vector<double>>> by_corr;  // corr -> method -> ious
  std::map<std::string, std::map<std::string, double>> by_item;               // item -> method -> iou
  for (const auto& r : records) {
    if (r.corruption == "clean") continue;
    by_method[r.method].push_back(r.m.iou);
    by_corr[r.corruption][r.method].push_back(r.m.iou);
    by_item[std::to_string(r.index) + "|" + r.corruption + "|" + r.prompt][r.method] = r.m.iou;
  }
  if (by_method.size() < 2) return nullptr;
  std::string best_fixed;
  double best_fixed_iou = -1;
  for (auto& [m, v] : by_method)
    if (mean_of(v) > best_fixed_iou) best_fixed_iou = mean_of(v), best_fixed = m;
  double per_corr_sum = 0;
  size_t per_corr_n = 0;
  nlohmann::json corr_choice = nlohmann::json::object();
  for (auto& [c, mm] : by_corr) {
    std::string best;
    double bi = -1;
    for (auto& [m, v] : mm)
      if (mean_of(v) > bi) bi = mean_of(v), best = m;
    corr_choice[c] = {{"method", best}, {"iou", bi}};
    per_corr_sum += bi * double(mm.begin()->second.size());
    per_corr_n += mm.begin()->second.size();
  }
  double per_item = 0;
  std::map<std::string, int> item_choice_counts;
  for (auto& [k, mm] : by_item) {
    std::string best;
    double bi = -1;
    for (auto& [m, v] : mm)
      if (v > bi) bi = v, best = m;
    per_item += bi;
    item_choice_counts[best]++;
  }
  return {{"best_fixed", {{"method", best_fixed}, {"iou", best_fixed_iou}}},
          {"per_corruption_oracle_iou", per_corr_n ? per_corr_sum / double(per_corr_n) : 0.0},
          {"per_corruption_choice", corr_choice},
          {"per_image_oracle_iou", by_item.empty() ? 0.0 : per_item / double(by_item.size())},
          {"per_image_choice_counts", item_choice_counts}};
}

}  // namespace rsam::eval
