#include "eval/study.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "adapt/adapter.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "degrade/corruption.h"
#include "error.h"
#include "eval/evaluator.h"
#include "io/fs.h"
#include "log.h"
#include "model/checkpoint.h"
#include "model/image.h"
#include "model/predictor.h"
#include "model/runtime.h"
#include "train/cv_tensor.h"
#include "train/trainer.h"

namespace rsam::eval {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Nearest power of two (in log scale), at least lo.
int64_t pow2(double x, int64_t lo) {
  const int64_t p = int64_t(1) << std::max(0, int(std::lround(std::log2(std::max(x, 1.0)))));
  return std::max(lo, p);
}

using io::write_text;

struct Stat {
  std::vector<double> v;
  double mean() const {
    double s = 0;
    for (double x : v) s += x;
    return v.empty() ? 0 : s / double(v.size());
  }
  double std() const {
    if (v.size() < 2) return 0;
    const double m = mean();
    double s = 0;
    for (double x : v) s += (x - m) * (x - m);
    return std::sqrt(s / double(v.size() - 1));
  }
};

std::string pct(const Stat& s, bool with_std = true) {
  if (s.v.empty()) return "–";
  char b[64];
  if (with_std && s.v.size() > 1)
    std::snprintf(b, sizeof b, "%.1f ± %.1f", 100 * s.mean(), 100 * s.std());
  else
    std::snprintf(b, sizeof b, "%.1f", 100 * s.mean());
  return b;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> default_study_methods(int width) {
  const double f = double(width) / 768.0;  // the papers' settings are for ViT-B
  std::vector<std::pair<std::string, std::string>> m;
  for (int r : {2, 4, 8, 16}) m.push_back({"lora-r" + std::to_string(r), json{{"method", "lora"}, {"rank", r}}.dump()});
  json gara{{"method", "gara"},
            {"r_low", pow2(16 * f, 4)},
            {"r_high", pow2(256 * f, 16)},
            {"gate_hidden", pow2(128 * f, 16)}};
  m.push_back({"gara", gara.dump()});
  gara["space_gate"] = false;
  m.push_back({"gara-nospace", gara.dump()});
  m.push_back({"moe_lora", json{{"method", "moe_lora"},
                                {"ranks", {pow2(8 * f, 1), pow2(16 * f, 2), pow2(32 * f, 4), pow2(64 * f, 8)}},
                                {"gate_hidden", pow2(128 * f, 16)}}
                               .dump()});
  m.push_back({"conv_lora", json{{"method", "conv_lora"}, {"rank", pow2(8 * f, 2)}}.dump()});
  m.push_back({"decoder_only", json{{"method", "decoder_only"}}.dump()});
  m.push_back({"bitfit", json{{"method", "bitfit"}}.dump()});
  m.push_back({"adapter", json{{"method", "adapter"}, {"bottleneck", pow2(64 * f, 8)}}.dump()});
  m.push_back({"ssf", json{{"method", "ssf"}}.dump()});
  return m;
}

namespace {

using Methods = std::vector<std::pair<std::string, std::string>>;  // name -> adapter config JSON text

// The options that decide a run's weights (not where it is written or how
// many threads ran it), kept beside the run as NAME.options.json.
json run_options(const train::TrainOptions& t, const std::string& cfg) {
  return {{"checkpoint", utf8_escaped(t.checkpoint)},
          {"data", utf8_escaped(t.data)},
          {"adapter", json::parse(cfg)},
          {"corruption", utf8_escaped(t.corruption)},
          {"severity", data::severity_name(t.severity)},
          {"clean_ratio", t.clean_ratio},
          {"prompts", t.prompts},
          {"steps", t.steps},
          {"batch", t.batch},
          {"masks_per_image", t.masks_per_image},
          {"optimizer", t.optimizer},
          {"lr", t.lr},
          {"wd", t.wd},
          {"warmup", t.warmup},
          {"seed", t.seed}};
}

// A run is reused (finished) or resumed (started) only with the options it
// was made with: new options over old adapters would report numbers that
// belong to neither.
void check_run(const fs::path& options_file, const json& want, bool finished, const std::string& run) {
  std::error_code ec;
  if (!fs::exists(options_file, ec)) {
    if (finished)
      throw Error("study: run " + run + " has no record of its options (made by an older rsam); delete " + run +
                  ".* to train it again, or use a new output folder");
    return;
  }
  const auto bytes = io::read_file(options_file.string());
  const json have = json::parse(bytes.begin(), bytes.end(), nullptr, false);
  if (have == want) return;
  std::string what = "unreadable " + options_file.filename().string();
  if (have.is_object()) {
    what = "other keys";
    for (auto& [k, v] : want.items())
      if (!have.contains(k) || have[k] != v) {
        what = k + " " + (have.contains(k) ? have[k].dump() : std::string("unset")) + ", now " + v.dump();
        break;
      }
  }
  throw Error("study: run " + run + " was made with other options (" + what + "); use a new output folder, or delete " + run +
              ".* and " + run + "/ to train it again");
}

// A seed's evaluation results, whole or in shares, once one of its runs is
// (re)trained: they scored the adapters that were there before.
void forget_evaluation(const fs::path& seed_dir) {
  std::error_code ec;
  fs::remove(seed_dir / "report" / "results.json", ec);
  for (fs::directory_iterator it(seed_dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string f = it->path().filename().string();
    if (f.rfind("shard", 0) == 0 && it->path().extension() == ".json") fs::remove(it->path(), ec);
  }
}

train::TrainOptions run_recipe(const StudyOptions& o, const std::string& cfg_path, int s, const fs::path& run) {
  train::TrainOptions t;
  t.checkpoint = o.checkpoint;
  t.data = o.train_data;
  t.adapter = cfg_path;
  t.corruption = o.train_corruption;
  t.severity = 0;
  t.clean_ratio = 0.2;
  t.prompts = "points:1,points:3,box";
  t.steps = o.steps;
  t.batch = o.batch;
  t.masks_per_image = o.masks_per_image;
  t.optimizer = "adamw";
  t.lr = o.lr;
  t.wd = 1e-4;
  t.warmup = std::max<int64_t>(1, o.steps / 10);
  t.seed = uint64_t(1000 + s);
  t.out = run.string();
  t.resume = true;
  t.save_every = std::max<int64_t>(10, o.steps / 4);
  t.threads = o.threads;
  t.workers = 1;
  t.quiet = true;
  t.distributed = false;  // under --nproc each rank trains runs of its own
  return t;
}

// 1. Every method for every seed (this process's share under --nproc).
// Finished runs made with the same options are kept. Returns the training
// seconds of the runs timed in one go, by method.
std::map<std::string, Stat> train_runs(const StudyOptions& o, const Methods& methods,
                                       const std::function<void(const std::string&)>& log) {
  const fs::path out(o.out);
  std::map<std::string, Stat> train_secs;
  int64_t run_index = -1;
  for (int s = 0; s < o.seeds; ++s) {
    const fs::path sd = out / ("s" + std::to_string(s));
    fs::create_directories(sd);
    for (const auto& [name, cfg] : methods) {
      ++run_index;
      if (o.phase == "eval" || (o.phase == "train" && run_index % o.shards != o.shard)) continue;
      const fs::path done = sd / (name + ".safetensors");
      const fs::path secs_file = sd / (name + ".seconds");
      const fs::path options_file = sd / (name + ".options.json");
      const std::string cfg_path = (out / "configs" / (name + ".json")).string();
      const train::TrainOptions t = run_recipe(o, cfg_path, s, sd / name);
      const json want = run_options(t, cfg);
      check_run(options_file, want, fs::exists(done), (sd / name).string());
      if (fs::exists(done)) {
        if (fs::exists(secs_file)) {
          const auto b = io::read_file(secs_file.string());
          train_secs[name].v.push_back(std::stod(std::string(b.begin(), b.end())));
        }
        continue;
      }
      write_text(cfg_path, json::parse(cfg).dump(2) + "\n");
      write_text(options_file.string(), want.dump(2) + "\n");  // first: a killed run is checked on resume
      forget_evaluation(sd);
      log("study: training " + name + " seed " + std::to_string(s));
      const auto t0 = std::chrono::steady_clock::now();
      const auto r = train::train(t);
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const auto bytes = io::read_file(r.weights_path);
      if (r.start_step == 0) {  // a resumed run's time covers only its last part: not recorded
        write_text(secs_file.string(), std::to_string(secs));
        train_secs[name].v.push_back(secs);
      }
      io::write_atomic(done.string(), bytes.data(), bytes.size());
      if (!std::isfinite(r.last_loss)) throw Error("study: " + name + " diverged");
    }
  }
  return train_secs;
}

// The methods to compare: the default line-up scaled to the model's width,
// or the NAME=METHOD / NAME=CONFIG.json entries given.
Methods study_methods(const StudyOptions& o, int width) {
  if (o.methods.empty()) return default_study_methods(width);
  Methods methods;
  for (const auto& s : o.methods) {
    const auto eq = s.find('=');
    if (eq == std::string::npos || eq == 0)
      throw Error("study: method '" + s + "' must be NAME=METHOD or NAME=CONFIG.json");
    methods.push_back({s.substr(0, eq), adapt::load_config(s.substr(eq + 1)).dump()});
  }
  return methods;
}

// The evaluations of every seed, gathered for the report.
struct Scores {
  std::map<std::string, std::map<std::string, std::map<std::string, Stat>>> iou;  // method -> corr -> prompt
  std::map<std::string, Stat> oracle;  // best_fixed / per_corruption / per_image over LoRA ranks
  std::map<std::string, std::map<std::string, int>> oracle_choice;
  std::vector<std::string> corr_order;
  std::vector<std::string> method_order{"no adapter"};
};

// 2. One seed's adapters (and the base) on identical inputs: reused when
// its report holds the same options, merged from the shares the --nproc
// workers left, or evaluated here. In phase "eval", this process's share
// only, into a shard file (nullopt).
std::optional<EvalResult> evaluate_seed(const StudyOptions& o, const Methods& methods, int s,
                                        const std::function<void(const std::string&)>& log) {
  const fs::path sd = fs::path(o.out) / ("s" + std::to_string(s));
  EvalOptions e;
  e.checkpoint = o.checkpoint;
  e.adapters = {"none"};
  for (const auto& [name, cfg] : methods) e.adapters.push_back((sd / (name + ".safetensors")).string());
  e.data = o.val_data;
  e.corruptions = o.eval_corruptions;
  e.prompts = o.prompts;
  e.max_samples = o.max_samples;
  e.threads = o.threads;
  e.quiet = true;
  e.report = (sd / "report").string();
  auto cached = load_results((fs::path(e.report) / "results.json").string(), e);
  auto shard_file = [&](int k) { return (sd / ("shard" + std::to_string(k) + ".json")).string(); };
  if (o.phase == "eval") {
    if (!cached) {
      e.shard = o.shard, e.shards = o.shards, e.report.clear();
      log("study: evaluating share " + std::to_string(o.shard) + " of seed " + std::to_string(s));
      write_records(shard_file(o.shard), evaluate(e).records);
    }
    return std::nullopt;
  }
  if (!cached && o.shards > 1) {
    std::vector<EvalResult> parts(static_cast<size_t>(o.shards));
    bool all = true;
    for (int k = 0; k < o.shards; ++k) {
      if (!fs::exists(shard_file(k))) {
        all = false;
        break;
      }
      parts[size_t(k)].records = read_records(shard_file(k));
    }
    if (all) {
      cached = merge_shards(std::move(parts), e);
      write_report(e.report, e, *cached);
      for (int k = 0; k < o.shards; ++k) fs::remove(shard_file(k));
    }
  }
  log("study: " + std::string(cached ? "reusing the evaluation of" : "evaluating") + " seed " + std::to_string(s));
  return cached ? std::move(*cached) : evaluate(e);
}

// A seed's numbers into the scores: IoU per method, corruption and prompt,
// and the rank oracle over the LoRA ranks.
void add_seed(Scores& sc, const EvalResult& r, int s) {
  for (auto& [m, byc] : r.summary.items()) {
    const std::string label = m == "sam" ? "no adapter" : m;
    for (auto& [c, byp] : byc.items()) {
      if (s == 0 && label == "no adapter" &&
          std::find(sc.corr_order.begin(), sc.corr_order.end(), c) == sc.corr_order.end())
        sc.corr_order.push_back(c);
      for (auto& [p, met] : byp.items()) sc.iou[label][c][p].v.push_back(met["iou"].get<double>());
    }
  }
  std::vector<Record> lora;
  for (const auto& rec : r.records)
    if (rec.method.rfind("lora-r", 0) == 0) lora.push_back(rec);
  const json orc = rank_oracle(lora);
  if (!orc.is_null()) {
    sc.oracle["best fixed rank"].v.push_back(orc["best_fixed"]["iou"].get<double>());
    sc.oracle["best rank per corruption"].v.push_back(orc["per_corruption_oracle_iou"].get<double>());
    sc.oracle["best rank per image"].v.push_back(orc["per_image_oracle_iou"].get<double>());
    sc.oracle_choice["fixed"][orc["best_fixed"]["method"].get<std::string>()]++;
    for (auto& [c, ch] : orc["per_image_choice_counts"].items()) sc.oracle_choice["per image"][c] += ch.get<int>();
  }
}

// 3. GaRA's gates per corruption: active rank and space choice.
struct Gates {
  size_t images = 0;
  std::vector<std::string> corrs{"clean"};
  std::map<std::string, std::map<std::string, Stat>> rank, high;  // method -> corr
};

Gates gate_stats(const StudyOptions& o, const Methods& methods, data::Dataset& ds) {
  // One sample per distinct image, read once and reused for every corruption and seed.
  std::vector<std::pair<size_t, data::Sample>> gate_samples;  // (dataset index, sample)
  {
    std::set<std::string> seen;
    for (size_t i = 0; i < ds.size() && int(gate_samples.size()) < o.gate_images; ++i) {
      auto smp = ds.get(i);
      if (seen.insert(smp.image_path).second) gate_samples.emplace_back(i, std::move(smp));
    }
  }
  Gates g;
  g.images = gate_samples.size();
  for (const auto& c : degrade::expand("robustseg")) g.corrs.push_back(c);
  for (const auto& c : degrade::expand("lqseg")) g.corrs.push_back(c);
  for (const auto& [name, cfg] : methods) {
    if (json::parse(cfg).value("method", "") != "gara") continue;
    for (int s = 0; s < o.seeds; ++s) {
      auto ad = adapt::AdaptedSam::load(load_sam(o.checkpoint).model,
                                        (fs::path(o.out) / ("s" + std::to_string(s)) / (name + ".safetensors")).string());
      ad.model()->eval();
      SamPredictor pred(ad.model(), Precision::FP32);
      for (const auto& c : g.corrs) {
        const auto corr = c == "clean" ? nullptr : degrade::create(c, 3);
        for (const auto& [i, smp] : gate_samples) {
          const cv::Mat img = corr ? corr->run(smp.image, 77 + i).image : smp.image;
          pred.set_image(to_image8(img));
          double rank = 0, high = 0;
          int n = 0;
          const json gates = ad.gates();
          for (auto& [layer, imgs] : gates.items())
            for (auto& proj : imgs[0]) {
              rank += proj["rank"].get<double>();
              high += proj["space"] == "high" ? 1.0 : 0.0;
              ++n;
            }
          if (n) g.rank[name][c].v.push_back(rank / n), g.high[name][c].v.push_back(high / n);
        }
      }
    }
  }
  return g;
}

// 4. Parameters and encoder overhead (seed 0 adapters, interleaved timing).
struct Cost {
  std::map<std::string, int64_t> params;
  std::map<std::string, double> overhead;
  int64_t base_params = 0;
};

Cost measure_cost(const StudyOptions& o, const Methods& methods, data::Dataset& ds) {
  Cost cost;
  const auto smp = ds.get(0);
  const Image8 img = to_image8(smp.image);
  Sam plain = load_sam(o.checkpoint).model;
  SamPredictor p0(plain, Precision::FP32);
  cost.base_params = parameter_count(*plain);
  for (const auto& [name, cfg] : methods) {
    auto ad = adapt::AdaptedSam::load(load_sam(o.checkpoint).model,
                                      (fs::path(o.out) / "s0" / (name + ".safetensors")).string());
    ad.model()->eval();
    cost.params[name] = ad.trainable_count();
    SamPredictor p1(ad.model(), Precision::FP32);
    p0.set_image(img);
    p1.set_image(img);  // warm-up
    const PairTimes t = time_pairs(
        9, [&] { p0.set_image(img); }, [&] { p1.set_image(img); });
    std::vector<double> ratios;
    for (size_t k = 0; k < t.a.size(); ++k) ratios.push_back(t.b[k] / t.a[k]);
    std::sort(ratios.begin(), ratios.end());
    cost.overhead[name] = ratios[ratios.size() / 2];
  }
  return cost;
}

// 5. The report: what the study measured, from the pieces above.
class StudyReport {
 public:
  StudyReport(const StudyOptions& o, const Methods& methods, Scores& sc, Gates& gates, Cost& cost,
              std::map<std::string, Stat>& train_secs)
      : o_(o), methods_(methods), sc_(sc), gates_(gates), cost_(cost), train_secs_(train_secs) {
    // The Robust-Seg and LQ columns average the types that were evaluated; the
    // report names them, since --corruption may select a subset.
    robust_ = evaluated(robust_all_), lq_ = evaluated(lq_all_);
    for (const auto& p : data::parse_prompts(o.prompts)) ps_.push_back(p.text);
  }

  void write() {
    intro();
    summary();
    per_corruption();
    findings();
    oracle();
    gates();
    cost();
    chart();
    write_text(o_.doc, md_.str());
  }

 private:
  std::vector<std::string> evaluated(const std::vector<std::string>& all) const {
    std::vector<std::string> v;
    for (const auto& c : all)
      if (std::find(sc_.corr_order.begin(), sc_.corr_order.end(), c) != sc_.corr_order.end()) v.push_back(c);
    return v;
  }

  // Method m's IoU per seed, averaged over the corruptions `corrs`.
  Stat group_stat(const std::string& m, const std::vector<std::string>& corrs, const std::string& p) {
    auto& iou = sc_.iou;
    Stat st;
    const size_t n = iou[m].empty() ? 0 : iou[m].begin()->second.begin()->second.v.size();
    for (size_t s = 0; s < n; ++s) {
      double sum = 0;
      int k = 0;
      for (const auto& c : corrs)
        if (iou[m].count(c) && iou[m][c].count(p) && iou[m][c][p].v.size() > s) sum += iou[m][c][p].v[s], ++k;
      if (k) st.v.push_back(sum / k);
    }
    return st;
  }

  void intro() {
    const StudyOptions& o = o_;
    md_ << "# The miniature study: adapters for robustness on rsam-tiny\n\n";
    md_ << "Generated by `rsam study` (scripts/study.sh); do not edit by hand. " << o.seeds << " seeds per method; "
        << "every method trained " << o.steps << " steps of batch " << o.batch << " images x up to "
        << o.masks_per_image << " objects on `" << o.train_data << "` under `" << o.train_corruption
        << "` corruptions (random severity, 20% clean), "
        << "AdamW lr " << o.lr << "; evaluated on the first " << o.max_samples << " objects of `" << o.val_data
        << "` per corruption (severity 3) and prompt, the same inputs for every method and seed. "
        << "Numbers are mean IoU in %, mean ± standard deviation over seeds (the spread comes from training seeds; "
        << "evaluation inputs are fixed).\n\n";
    auto join = [](const std::vector<std::string>& v) {
      std::string j;
      for (const auto& x : v) j += (j.empty() ? "" : ", ") + x;
      return j.empty() ? std::string("none") : j;
    };
    const auto& corr_order = sc_.corr_order;
    md_ << "Evaluated: clean " << (std::count(corr_order.begin(), corr_order.end(), "clean") ? "yes" : "no") << "; "
        << robust_.size() << " of " << robust_all_.size() << " Robust-Seg types (" << join(robust_) << "); "
        << lq_.size() << " of " << lq_all_.size() << " LQ levels (" << join(lq_)
        << "). The Robust-Seg and LQ columns average the evaluated ones.\n\n";
  }

  void summary() {
    md_ << "## Summary\n\n| method | trainable params |";
    for (const auto& p : ps_) md_ << " clean " << p << " |";
    for (const auto& p : ps_) md_ << " Robust-Seg " << p << " |";
    for (const auto& p : ps_) md_ << " LQ " << p << " |";
    md_ << "\n|---|---:|";
    for (size_t i = 0; i < 3 * ps_.size(); ++i) md_ << "---:|";
    md_ << "\n";
    for (const auto& m : sc_.method_order) {
      md_ << "| " << m << " | " << (m == "no adapter" ? std::string("0") : std::to_string(cost_.params[m])) << " |";
      for (const auto& p : ps_) md_ << " " << pct(sc_.iou[m]["clean"][p]) << " |";
      for (const auto& p : ps_) md_ << " " << pct(group_stat(m, robust_, p)) << " |";
      for (const auto& p : ps_) md_ << " " << pct(group_stat(m, lq_, p)) << " |";
      md_ << "\n";
    }
  }

  void per_corruption() {
    auto& iou = sc_.iou;
    const auto& method_order = sc_.method_order;
    for (const auto& p : ps_) {
      md_ << "\n## Per corruption, prompt " << p << "\n\n| corruption |";
      for (const auto& m : method_order) md_ << " " << m << " |";
      md_ << "\n|---|";
      for (size_t i = 0; i < method_order.size(); ++i) md_ << "---:|";
      md_ << "\n";
      for (const auto& c : sc_.corr_order) {
        md_ << "| " << c << " |";
        double best = -1;
        for (const auto& m : method_order) best = std::max(best, iou[m][c][p].mean());
        for (const auto& m : method_order) {
          const bool b = iou[m][c][p].mean() == best;
          md_ << " " << (b ? "**" : "") << pct(iou[m][c][p], false) << (b ? "**" : "") << " |";
        }
        md_ << "\n";
      }
    }
  }

  // Findings computed from the tables, so they stay true when rerun.
  void findings() {
    const std::string p = ps_.back();
    std::vector<std::string> all_corr(robust_);
    all_corr.insert(all_corr.end(), lq_.begin(), lq_.end());
    std::string best_m;
    double best = -1;
    for (const auto& m : sc_.method_order) {
      const double v = group_stat(m, all_corr, p).mean();
      if (v > best) best = v, best_m = m;
    }
    std::string best_lora;
    double bl = -1;
    for (const auto& m : sc_.method_order)
      if (m.rfind("lora-r", 0) == 0 && group_stat(m, all_corr, p).mean() > bl)
        bl = group_stat(m, all_corr, p).mean(), best_lora = m;
    const Stat g = group_stat("gara", all_corr, p), l = group_stat(best_lora, all_corr, p),
               b = group_stat("no adapter", all_corr, p);
    char buf[600];
    std::snprintf(buf, sizeof buf,
                  "\n## Findings (computed)\n\n- Over all corruptions with prompt %s, the best method is **%s** "
                  "(%.1f%%); the base without adapter scores %s.\n- GaRA: %s; the best fixed-rank LoRA (%s): %s. "
                  "GaRA minus that LoRA: %+.1f points, %s.\n",
                  p.c_str(), best_m.c_str(), 100 * best, pct(b).c_str(), pct(g).c_str(), best_lora.c_str(),
                  pct(l).c_str(), 100 * (g.mean() - l.mean()),
                  std::fabs(g.mean() - l.mean()) > g.std() + l.std()
                      ? "larger than the seed spread"
                      : "within the seed spread (not a reliable difference)");
    md_ << buf;
  }

  void oracle() {
    if (sc_.oracle.empty()) return;
    md_ << "\n## Rank oracle over the LoRA ranks (GaRA Fig. 2)\n\nAll prompts, corrupted inputs only. A rank chosen per "
           "corruption or per image (knowing the answer) against the best single rank:\n\n| choice | IoU "
           "|\n|---|---:|\n";
    for (const char* k : {"best fixed rank", "best rank per corruption", "best rank per image"})
      md_ << "| " << k << " | " << pct(sc_.oracle[k]) << " |\n";
    md_ << "\nBest fixed rank per seed:";
    for (auto& [m, n] : sc_.oracle_choice["fixed"]) md_ << " " << m << " x" << n;
    md_ << ". Per-image winners (all seeds):";
    for (auto& [m, n] : sc_.oracle_choice["per image"]) md_ << " " << m << " " << n;
    md_ << ".\n";
  }

  void gates() {
    if (gates_.rank.empty()) return;
    md_ << "\n## GaRA's gates per corruption\n\nMean over the first " << gates_.images
        << " validation images, all layers and q/k/v projections, all seeds: active rank-1 components "
           "(of r_low or r_high) and the share of projections that chose the high-rank space.\n\n| corruption |";
    for (auto& [m, byc] : gates_.rank) md_ << " " << m << " active rank | " << m << " high space |";
    md_ << "\n|---|";
    for (size_t i = 0; i < gates_.rank.size(); ++i) md_ << "---:|---:|";
    md_ << "\n";
    for (const auto& c : gates_.corrs) {
      md_ << "| " << c << " |";
      for (auto& [m, byc] : gates_.rank) {
        char b[64];
        std::snprintf(b, sizeof b, " %.2f | %.0f%% |", byc[c].mean(), 100 * gates_.high[m][c].mean());
        md_ << b;
      }
      md_ << "\n";
    }
  }

  void cost() {
    md_ << "\n## Cost\n\nTrainable parameters (base: " << cost_.base_params << "), encoder time with the adapter over "
        << "without (median of 9 interleaved pairs, alternating which runs first, " << num_threads()
        << (num_threads() == 1 ? " thread" : " threads")
        << ", this machine), training time per run: the mean over the runs timed in one go (a run "
        << "resumed after a stop is not timed; a `.seconds` file removed from the run directory drops one).\n\n"
        << "| method | params | % of base | encode overhead | train s/run |\n|---|---:|---:|---:|---:|\n";
    for (const auto& [name, cfg] : methods_) {
      const Stat& ts = train_secs_[name];
      char t[64];
      if (ts.v.empty())
        std::snprintf(t, sizeof t, "not timed");
      else if (int(ts.v.size()) < o_.seeds)
        std::snprintf(t, sizeof t, "%.0f (%d of %d runs)", ts.mean(), int(ts.v.size()), o_.seeds);
      else
        std::snprintf(t, sizeof t, "%.0f", ts.mean());
      char b[256];
      std::snprintf(b, sizeof b, "| %s | %lld | %.2f | %.2fx | %s |\n", name.c_str(), (long long)cost_.params[name],
                    100.0 * double(cost_.params[name]) / double(cost_.base_params), cost_.overhead[name], t);
      md_ << b;
    }
  }

  // The seed-mean summary in evaluate()'s format, drawn beside the report.
  void chart() {
    json mean_summary = json::object();
    for (const auto& m : sc_.method_order)
      for (const auto& c : sc_.corr_order)
        for (const auto& p : ps_) mean_summary[m][c][p] = {{"iou", sc_.iou[m][c][p].mean()}};
    const fs::path doc(o_.doc);
    if (!doc.parent_path().empty()) fs::create_directories(doc.parent_path());
    const std::string chart = doc.stem().string() + "_iou_per_corruption.png";
    bar_chart((doc.parent_path() / chart).string(), mean_summary, ps_.back());
    md_ << "\n![IoU per corruption, prompt " << ps_.back() << ", mean over seeds](" << chart << ")\n";
  }

  const StudyOptions& o_;
  const Methods& methods_;
  Scores& sc_;
  Gates& gates_;
  Cost& cost_;
  std::map<std::string, Stat>& train_secs_;
  const std::vector<std::string> robust_all_ = degrade::expand("robustseg"), lq_all_ = degrade::expand("lqseg");
  std::vector<std::string> robust_, lq_, ps_;
  std::ostringstream md_;
};

}  // namespace

std::unique_ptr<io::FolderLock> lock_study(const StudyOptions& o) {
  std::error_code ec;
  fs::create_directories(o.out, ec);
  if (ec || !fs::is_directory(o.out, ec))
    throw Error("study: cannot make the output folder '" + o.out + "'" + (ec ? ": " + ec.message() : ""));
  // The report and its chart must not land on what the study reads.
  const fs::path doc(o.doc);
  std::vector<io::NamedPath> inputs{{"the checkpoint", o.checkpoint}};
  for (const auto& spec : {o.train_data, o.val_data})
    for (const auto& f : data::dataset_files(spec)) inputs.push_back({"the dataset file", f});
  for (const auto& m : o.methods)
    if (const auto eq = m.find('='); eq != std::string::npos) inputs.push_back({"a method config", m.substr(eq + 1)});
  io::check_outputs({{"the report", o.doc},
                     {"the chart", (doc.parent_path() / (doc.stem().string() + "_iou_per_corruption.png")).string()}},
                    inputs);
  return std::make_unique<io::FolderLock>(o.out);
}

void run_study(const StudyOptions& o) {
  if (o.checkpoint.empty() || o.train_data.empty() || o.val_data.empty())
    throw Error("study: a checkpoint, training data and validation data are required");
  if (o.seeds < 1 || o.steps < 1) throw Error("study: the number of seeds and of steps must be >= 1");
  set_threads(o.threads);
  fs::create_directories(fs::path(o.out) / "configs");
  const int width = load_sam(o.checkpoint).model->config.encoder_embed_dim;
  const Methods methods = study_methods(o, width);
  auto log = [&](const std::string& s) {
    if (!o.quiet) log_info(s);
  };
  if (!o.phase.empty() && o.phase != "train" && o.phase != "eval")
    throw Error("study: phase must be train or eval, not '" + o.phase + "'");
  if (o.shards < 1 || o.shard < 0 || o.shard >= o.shards) throw Error("study: shard must be in 0..shards-1");

  std::map<std::string, Stat> train_secs = train_runs(o, methods, log);
  if (o.phase == "train") return;
  Scores scores;
  for (const auto& [name, cfg] : methods) scores.method_order.push_back(name);
  for (int s = 0; s < o.seeds; ++s)
    if (const auto r = evaluate_seed(o, methods, s, log)) add_seed(scores, *r, s);
  if (o.phase == "eval") return;

  auto ds = data::open_dataset(o.val_data);
  Gates gates = gate_stats(o, methods, *ds);
  Cost cost = measure_cost(o, methods, *ds);
  StudyReport(o, methods, scores, gates, cost, train_secs).write();
  log("study: wrote " + o.doc);
}

}  // namespace rsam::eval
