#include "eval/compare.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "data/prompts.h"
#include "degrade/corruption.h"
#include "error.h"
#include "io/text.h"

namespace rsam::eval {

namespace {

double metric_of(const Record& r, const std::string& metric) {
  if (metric == "iou") return r.m.iou;
  if (metric == "dice") return r.m.dice;
  if (metric == "boundary_iou") return r.m.boundary_iou;
  return r.m.pixel_accuracy;
}

std::string pick_method(const EvalRun& run, const std::string& wanted, const char* side) {
  std::set<std::string> methods;
  for (const auto& r : run.records) methods.insert(r.method);
  auto list = [&] {
    std::string s;
    for (const auto& m : methods) s += (s.empty() ? "" : ", ") + m;
    return s;
  };
  if (wanted.empty()) {
    if (methods.size() == 1) return *methods.begin();
    throw Error(std::string("the ") + side + " run holds several methods (" + list() + "): name the one to compare");
  }
  if (!methods.count(wanted))
    throw Error(std::string("the ") + side + " run has no method '" + wanted + "' (it has " + list() + ")");
  return wanted;
}

// One object's value in both runs.
struct Pair {
  double base, other;
};

PairedRow row_of(const std::string& prompt, const std::string& corruption, const std::vector<Pair>& pairs) {
  PairedRow row;
  row.prompt = prompt;
  row.corruption = corruption;
  row.n = pairs.size();
  double sb = 0, so = 0;
  for (const auto& p : pairs) {
    sb += p.base, so += p.other;
    row.better += p.other > p.base;
    row.worse += p.other < p.base;
  }
  const double n = double(row.n);
  row.base = sb / n, row.other = so / n, row.diff = row.other - row.base;
  if (row.n < 2) {
    row.se = std::numeric_limits<double>::quiet_NaN();
  } else {
    double ss = 0;
    for (const auto& p : pairs) ss += (p.other - p.base - row.diff) * (p.other - p.base - row.diff);
    row.se = std::sqrt(ss / (n - 1)) / std::sqrt(n);
  }
  return row;
}

// The key a run drew a prompt type's random prompts from: 0 for runs with
// draws by type; for older ones the type's place in their --prompts, where
// it was drawn from key k; -1 when unknown.
int64_t draw_key(const nlohmann::json& opts, const std::string& prompt) {
  if (!opts.is_object() || opts.value("prompt_draws", std::string()) == "by type") return 0;
  try {
    const auto specs = data::parse_prompts(opts.value("prompts", std::string()));
    for (size_t k = 0; k < specs.size(); ++k)
      if (specs[k].text == prompt) return int64_t(k);
  } catch (const Error&) {
  }
  return -1;
}

bool is_random(const std::string& prompt) {
  try {
    const auto kind = data::parse_prompt(prompt).kind;
    return kind != data::PromptSpec::Kind::Box && kind != data::PromptSpec::Kind::Center;
  } catch (const Error&) {
    return true;  // unknown: assume the worst
  }
}

}  // namespace

namespace {

// Objects, prompts and corruptions are drawn from (data, seed, severity):
// runs that differ there did not see the same inputs.
void check_pairable(const EvalRun& base, const EvalRun& other, const CompareOptions& o) {
  if (o.metric != "iou" && o.metric != "dice" && o.metric != "boundary_iou" && o.metric != "pixel_accuracy")
    throw Error("unknown metric '" + o.metric + "' (iou, dice, boundary_iou, pixel_accuracy)");
  // The severity only matters when both runs corrupt.
  auto corrupts = [](const nlohmann::json& opts) {
    for (const auto& c : io::split(opts.value("corruptions", std::string()), ',', /*skip_empty=*/true))
      if (c != "clean") return true;
    return false;
  };
  if (base.options.is_object() && other.options.is_object())
    for (const char* k : {"data", "seed", "severity"}) {
      if (std::string(k) == "severity" && !(corrupts(base.options) && corrupts(other.options))) continue;
      const auto a = base.options.value(k, nlohmann::json()), b = other.options.value(k, nlohmann::json());
      if (a != b)
        throw Error(std::string("the runs cannot be paired: their ") + k + " differ (" + a.dump() + " vs " + b.dump() +
                    ")");
    }
}

// An object is its dataset index and name.
using Key = std::pair<size_t, std::string>;
// (prompt, corruption) -> object -> value.
using Values = std::map<std::pair<std::string, std::string>, std::map<Key, double>>;

void note(std::vector<std::string>& v, const std::string& x) {
  if (std::find(v.begin(), v.end(), x) == v.end()) v.push_back(x);
}

// One method's records of a run as values; the prompts and corruptions in
// the run's order when asked.
Values values_of(const EvalRun& run, const std::string& method, const std::string& metric, const char* side,
                 std::vector<std::string>* prompts = nullptr, std::vector<std::string>* corruptions = nullptr) {
  Values v;
  for (const auto& r : run.records) {
    if (r.method != method) continue;
    if (!v[{r.prompt, r.corruption}].emplace(Key{r.index, r.sample}, metric_of(r, metric)).second)
      throw Error(std::string("the ") + side + " run scores object " + r.sample + " twice (" + r.prompt + ", " +
                  r.corruption + ")");
    if (prompts) note(*prompts, r.prompt);
    if (corruptions) note(*corruptions, r.corruption);
  }
  return v;
}

// Prompt p's rows: each corruption both runs have, then the sets. Returns
// the objects paired (over the single corruptions).
size_t compare_prompt(PairedComparison& c, const std::string& p, const std::vector<std::string>& corruptions,
                      const Values& a, const Values& b) {
  size_t paired = 0;
  // object -> corruption -> pair, for the sets below.
  std::map<Key, std::map<std::string, Pair>> by_object;
  std::vector<std::string> shared;  // corruptions this prompt has in both runs
  for (const auto& corr : corruptions) {
    const auto ia = a.find({p, corr}), ib = b.find({p, corr});
    if (ia == a.end() || ib == b.end()) continue;
    std::vector<Pair> pairs;
    for (const auto& [obj, va] : ia->second) {
      const auto it = ib->second.find(obj);
      if (it == ib->second.end()) continue;
      pairs.push_back({va, it->second});
      by_object[obj][corr] = pairs.back();
    }
    if (pairs.empty()) continue;
    paired += pairs.size();
    shared.push_back(corr);
    c.rows.push_back(row_of(p, corr, pairs));
  }
  // A set's row averages each object over the set's members first, so the
  // standard error is that of the set mean's difference (members of one
  // object are not independent draws).
  auto set_row = [&](const std::string& label, const std::vector<std::string>& members) {
    if (members.size() < 2) return;
    for (const auto& m : members)
      if (std::find(shared.begin(), shared.end(), m) == shared.end()) return;
    std::vector<Pair> pairs;
    for (const auto& [obj, byc] : by_object) {
      Pair s{0, 0};
      size_t k = 0;
      for (const auto& m : members)
        if (const auto it = byc.find(m); it != byc.end()) s.base += it->second.base, s.other += it->second.other, ++k;
      if (k == members.size()) pairs.push_back({s.base / double(k), s.other / double(k)});
    }
    if (!pairs.empty()) c.rows.push_back(row_of(p, label, pairs));
  };
  const auto rs = degrade::robustseg_names(), lq = degrade::expand("lqseg");
  set_row("robustseg (mean of 15)", rs);
  set_row("lqseg (mean of 3)", lq);
  std::vector<std::string> degraded;
  for (const auto& s : shared)
    if (s != "clean") degraded.push_back(s);
  // Not when it is one of the sets above again.
  auto same = [&](std::vector<std::string> x) {
    auto y = degraded;
    std::sort(x.begin(), x.end()), std::sort(y.begin(), y.end());
    return x == y;
  };
  if (!same(rs) && !same(lq)) set_row("degraded (mean)", degraded);
  return paired;
}

}  // namespace

PairedComparison compare_runs(const EvalRun& base, const EvalRun& other, const CompareOptions& o) {
  check_pairable(base, other, o);
  PairedComparison c;
  c.metric = o.metric;
  c.base_method = pick_method(base, o.base_method, "base");
  c.other_method = pick_method(other, o.other_method, "other");

  std::vector<std::string> prompts, corruptions;  // in the base run's order
  const Values a = values_of(base, c.base_method, o.metric, "base", &prompts, &corruptions);
  const Values b = values_of(other, c.other_method, o.metric, "other");
  // Clean first, as in the reports.
  std::stable_partition(corruptions.begin(), corruptions.end(), [](const std::string& x) { return x == "clean"; });

  size_t paired = 0;
  std::set<std::string> other_prompts;
  for (const auto& [k, m] : b) other_prompts.insert(k.first);
  for (const auto& p : prompts) {
    if (other_prompts.count(p) && is_random(p) && base.options.is_object() && other.options.is_object()) {
      const auto ka = draw_key(base.options, p), kb = draw_key(other.options, p);
      if (ka != kb || ka < 0) {
        c.skipped.push_back(p);
        continue;
      }
    }
    paired += compare_prompt(c, p, corruptions, a, b);
  }
  if (paired == 0 && !c.skipped.empty())
    throw Error("the runs drew their random prompts differently (" + c.skipped.front() +
                "): a run written before rsam drew a prompt type independently of its place in the prompt list");
  if (paired == 0)
    throw Error("no object was scored by both runs with the same prompt and corruption (methods " + c.base_method +
                " and " + c.other_method + ")");
  size_t total_a = 0, total_b = 0;
  auto counted = [&](const std::string& prompt) {
    return std::find(c.skipped.begin(), c.skipped.end(), prompt) == c.skipped.end();
  };
  for (const auto& [k, m] : a) total_a += counted(k.first) ? m.size() : 0;
  for (const auto& [k, m] : b) total_b += counted(k.first) ? m.size() : 0;
  c.base_unpaired = total_a - paired;
  c.other_unpaired = total_b - paired;
  return c;
}

std::string comparison_markdown(const PairedComparison& c, const std::string& base_name,
                                const std::string& other_name) {
  std::ostringstream md;
  md << "Paired comparison, " << c.metric << " in %: other = " << other_name << " (" << c.other_method
     << ") against base = " << base_name << " (" << c.base_method
     << "), over the objects both scored; ± is the standard error of the mean difference.\n\n"
     << "| prompt | corruption | objects | base | other | other - base | better / worse |\n"
     << "|---|---|---:|---:|---:|---:|---:|\n";
  for (const auto& r : c.rows) {
    char se[32] = "n/a";
    if (std::isfinite(r.se)) std::snprintf(se, sizeof se, "%.2f", 100 * r.se);
    char b[256];
    std::snprintf(b, sizeof b, "| %s | %s | %zu | %.2f | %.2f | %+.2f ± %s | %zu / %zu |\n", r.prompt.c_str(),
                  r.corruption.c_str(), r.n, 100 * r.base, 100 * r.other, 100 * r.diff, se, r.better, r.worse);
    md << b;
  }
  if (!c.skipped.empty()) {
    md << "\nNot compared: ";
    for (size_t i = 0; i < c.skipped.size(); ++i) md << (i ? ", " : "") << c.skipped[i];
    md << " (the runs drew these prompts differently: a run written before rsam drew a prompt type independently "
          "of its place in --prompts).\n";
  }
  if (c.base_unpaired || c.other_unpaired)
    md << "\n"
       << c.base_unpaired << " records of the base and " << c.other_unpaired
       << " of the other have no partner and are in no row.\n";
  return md.str();
}

nlohmann::json comparison_json(const PairedComparison& c) {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& r : c.rows)
    rows.push_back({{"prompt", r.prompt},
                    {"corruption", r.corruption},
                    {"n", r.n},
                    {"base", r.base},
                    {"other", r.other},
                    {"diff", r.diff},
                    {"se", std::isfinite(r.se) ? nlohmann::json(r.se) : nlohmann::json()},
                    {"better", r.better},
                    {"worse", r.worse}});
  return {
      {"metric", c.metric},   {"base_method", c.base_method},     {"other_method", c.other_method},    {"rows", rows},
      {"skipped", c.skipped}, {"base_unpaired", c.base_unpaired}, {"other_unpaired", c.other_unpaired}};
}

}  // namespace rsam::eval
