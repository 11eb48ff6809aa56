#include "eval/study.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include "adapt/adapter.h"
#include "data/dataset.h"
#include "degrade/corruption.h"
#include "error.h"
#include "eval/evaluator.h"
#include "io/fs.h"
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
          {"severity", t.severity},
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
                  ".* to train it again, or use a new --out");
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
  throw Error("study: run " + run + " was made with other options (" + what + "); use a new --out, or delete " + run +
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
  t.severity = "random";
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

}  // namespace

std::unique_ptr<io::FolderLock> lock_study(const StudyOptions& o) {
  std::error_code ec;
  fs::create_directories(o.out, ec);
  if (ec || !fs::is_directory(o.out, ec))
    throw Error("study: cannot make the --out folder '" + o.out + "'" + (ec ? ": " + ec.message() : ""));
  // The report and its chart must not land on what the study reads.
  const fs::path doc(o.doc);
  std::vector<io::NamedPath> inputs{{"the checkpoint", o.checkpoint}};
  for (const auto& spec : {o.train_data, o.val_data})
    for (const auto& f : data::dataset_files(spec)) inputs.push_back({"the dataset file", f});
  for (const auto& m : o.methods)
    if (const auto eq = m.find('='); eq != std::string::npos) inputs.push_back({"a method config", m.substr(eq + 1)});
  io::check_outputs({{"--doc", o.doc},
                     {"the chart", (doc.parent_path() / (doc.stem().string() + "_iou_per_corruption.png")).string()}},
                    inputs);
  return std::make_unique<io::FolderLock>(o.out);
}

void run_study(const StudyOptions& o) {
  if (o.checkpoint.empty() || o.train_data.empty() || o.val_data.empty())
    throw Error("study: --checkpoint, --train and --val are required");
  if (o.seeds < 1 || o.steps < 1) throw Error("study: --seeds and --steps must be >= 1");
  set_threads(o.threads);
  const fs::path out(o.out);
  fs::create_directories(out / "configs");
  Sam base = load_sam(o.checkpoint).model;
  const int width = base->config.encoder_embed_dim;

  Methods methods;
  if (o.methods.empty()) {
    methods = default_study_methods(width);
  } else {
    for (const auto& s : o.methods) {
      const auto eq = s.find('=');
      if (eq == std::string::npos || eq == 0)
        throw Error("study: method '" + s + "' must be NAME=METHOD or NAME=CONFIG.json");
      methods.push_back({s.substr(0, eq), adapt::load_config(s.substr(eq + 1)).dump()});
    }
  }
  auto log = [&](const std::string& s) {
    if (!o.quiet) std::cerr << s << "\n";
  };

  if (!o.phase.empty() && o.phase != "train" && o.phase != "eval")
    throw Error("study: phase must be train or eval, not '" + o.phase + "'");
  if (o.shards < 1 || o.shard < 0 || o.shard >= o.shards) throw Error("study: shard must be in 0..shards-1");

  std::map<std::string, Stat> train_secs = train_runs(o, methods, log);
  if (o.phase == "train") return;

  // 2. Evaluate each seed's adapters (and the base) on identical inputs.
  std::map<std::string, std::map<std::string, std::map<std::string, Stat>>> iou;  // method -> corr -> prompt
  std::map<std::string, Stat> oracle;  // best_fixed / per_corruption / per_image over LoRA ranks
  std::map<std::string, std::map<std::string, int>> oracle_choice;
  std::vector<std::string> corr_order;
  std::vector<std::string> method_order{"no adapter"};
  for (const auto& [name, cfg] : methods) method_order.push_back(name);
  for (int s = 0; s < o.seeds; ++s) {
    const fs::path sd = out / ("s" + std::to_string(s));
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
      continue;
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
    const EvalResult r = cached ? std::move(*cached) : evaluate(e);
    for (auto& [m, byc] : r.summary.items()) {
      const std::string label = m == "sam" ? "no adapter" : m;
      for (auto& [c, byp] : byc.items()) {
        if (s == 0 && label == "no adapter" && std::find(corr_order.begin(), corr_order.end(), c) == corr_order.end())
          corr_order.push_back(c);
        for (auto& [p, met] : byp.items()) iou[label][c][p].v.push_back(met["iou"].get<double>());
      }
    }
    std::vector<Record> lora;
    for (const auto& rec : r.records)
      if (rec.method.rfind("lora-r", 0) == 0) lora.push_back(rec);
    const json orc = rank_oracle(lora);
    if (!orc.is_null()) {
      oracle["best fixed rank"].v.push_back(orc["best_fixed"]["iou"].get<double>());
      oracle["best rank per corruption"].v.push_back(orc["per_corruption_oracle_iou"].get<double>());
      oracle["best rank per image"].v.push_back(orc["per_image_oracle_iou"].get<double>());
      oracle_choice["fixed"][orc["best_fixed"]["method"].get<std::string>()]++;
      for (auto& [c, ch] : orc["per_image_choice_counts"].items()) oracle_choice["per image"][c] += ch.get<int>();
    }
  }
  if (o.phase == "eval") return;
  // The Robust-Seg and LQ columns average the types that were evaluated; the
  // report names them, since --corruption may select a subset.
  auto evaluated = [&](const std::vector<std::string>& all) {
    std::vector<std::string> v;
    for (const auto& c : all)
      if (std::find(corr_order.begin(), corr_order.end(), c) != corr_order.end()) v.push_back(c);
    return v;
  };
  const auto robust_all = degrade::expand("robustseg"), lq_all = degrade::expand("lqseg");
  const auto robust = evaluated(robust_all), lq = evaluated(lq_all);
  const auto prompts = data::parse_prompts(o.prompts);

  // 3. GaRA's gates per corruption: active rank and space choice.
  auto ds = data::open_dataset(o.val_data);
  // One sample per distinct image, read once and reused for every corruption and seed.
  std::vector<std::pair<size_t, data::Sample>> gate_samples;  // (dataset index, sample)
  {
    std::set<std::string> seen;
    for (size_t i = 0; i < ds->size() && int(gate_samples.size()) < o.gate_images; ++i) {
      auto smp = ds->get(i);
      if (seen.insert(smp.image_path).second) gate_samples.emplace_back(i, std::move(smp));
    }
  }
  std::map<std::string, std::map<std::string, Stat>> gate_rank, gate_high;  // method -> corr
  std::vector<std::string> gate_corrs{"clean"};
  for (const auto& c : degrade::expand("robustseg")) gate_corrs.push_back(c);
  for (const auto& c : degrade::expand("lqseg")) gate_corrs.push_back(c);
  for (const auto& [name, cfg] : methods) {
    if (json::parse(cfg).value("method", "") != "gara") continue;
    for (int s = 0; s < o.seeds; ++s) {
      auto ad = adapt::AdaptedSam::load(load_sam(o.checkpoint).model,
                                        (out / ("s" + std::to_string(s)) / (name + ".safetensors")).string());
      ad.model()->eval();
      SamPredictor pred(ad.model(), Precision::FP32);
      for (const auto& c : gate_corrs) {
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
          if (n) gate_rank[name][c].v.push_back(rank / n), gate_high[name][c].v.push_back(high / n);
        }
      }
    }
  }

  // 4. Parameters and encoder overhead (seed 0 adapters, interleaved timing).
  std::map<std::string, int64_t> params;
  std::map<std::string, double> overhead;
  int64_t base_params = 0;
  {
    const auto smp = ds->get(0);
    const Image8 img = to_image8(smp.image);
    Sam plain = load_sam(o.checkpoint).model;
    SamPredictor p0(plain, Precision::FP32);
    base_params = parameter_count(*plain);
    for (const auto& [name, cfg] : methods) {
      auto ad = adapt::AdaptedSam::load(load_sam(o.checkpoint).model, (out / "s0" / (name + ".safetensors")).string());
      ad.model()->eval();
      params[name] = ad.trainable_count();
      SamPredictor p1(ad.model(), Precision::FP32);
      p0.set_image(img);
      p1.set_image(img);  // warm-up
      const PairTimes t = time_pairs(
          9, [&] { p0.set_image(img); }, [&] { p1.set_image(img); });
      std::vector<double> ratios;
      for (size_t k = 0; k < t.a.size(); ++k) ratios.push_back(t.b[k] / t.a[k]);
      std::sort(ratios.begin(), ratios.end());
      overhead[name] = ratios[ratios.size() / 2];
    }
  }

  // 5. The report.
  std::ostringstream md;
  md << "# The miniature study: adapters for robustness on rsam-tiny\n\n";
  md << "Generated by `rsam study` (scripts/study.sh); do not edit by hand. " << o.seeds << " seeds per method; "
     << "every method trained " << o.steps << " steps of batch " << o.batch << " images x up to " << o.masks_per_image
     << " objects on `" << o.train_data << "` under `" << o.train_corruption
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
  md << "Evaluated: clean " << (std::count(corr_order.begin(), corr_order.end(), "clean") ? "yes" : "no") << "; "
     << robust.size() << " of " << robust_all.size() << " Robust-Seg types (" << join(robust) << "); " << lq.size()
     << " of " << lq_all.size() << " LQ levels (" << join(lq)
     << "). The Robust-Seg and LQ columns average the evaluated ones.\n\n";
  const std::vector<std::string> ps = [&] {
    std::vector<std::string> v;
    for (const auto& p : prompts) v.push_back(p.text);
    return v;
  }();
  auto group_stat = [&](const std::string& m, const std::vector<std::string>& corrs, const std::string& p) {
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
  };
  md << "## Summary\n\n| method | trainable params |";
  for (const auto& p : ps) md << " clean " << p << " |";
  for (const auto& p : ps) md << " Robust-Seg " << p << " |";
  for (const auto& p : ps) md << " LQ " << p << " |";
  md << "\n|---|---:|";
  for (size_t i = 0; i < 3 * ps.size(); ++i) md << "---:|";
  md << "\n";
  std::map<std::string, Stat> degraded_box;
  for (const auto& m : method_order) {
    md << "| " << m << " | " << (m == "no adapter" ? std::string("0") : std::to_string(params[m])) << " |";
    for (const auto& p : ps) md << " " << pct(iou[m]["clean"][p]) << " |";
    for (const auto& p : ps) md << " " << pct(group_stat(m, robust, p)) << " |";
    for (const auto& p : ps) md << " " << pct(group_stat(m, lq, p)) << " |";
    md << "\n";
  }
  for (const auto& p : ps) {
    md << "\n## Per corruption, prompt " << p << "\n\n| corruption |";
    for (const auto& m : method_order) md << " " << m << " |";
    md << "\n|---|";
    for (size_t i = 0; i < method_order.size(); ++i) md << "---:|";
    md << "\n";
    for (const auto& c : corr_order) {
      md << "| " << c << " |";
      double best = -1;
      for (const auto& m : method_order) best = std::max(best, iou[m][c][p].mean());
      for (const auto& m : method_order) {
        const bool b = iou[m][c][p].mean() == best;
        md << " " << (b ? "**" : "") << pct(iou[m][c][p], false) << (b ? "**" : "") << " |";
      }
      md << "\n";
    }
  }
  // Findings computed from the tables, so they stay true when rerun.
  {
    const std::string p = ps.back();
    std::vector<std::string> all_corr(robust);
    all_corr.insert(all_corr.end(), lq.begin(), lq.end());
    std::string best_m;
    double best = -1;
    for (const auto& m : method_order) {
      const double v = group_stat(m, all_corr, p).mean();
      if (v > best) best = v, best_m = m;
    }
    std::string best_lora;
    double bl = -1;
    for (const auto& m : method_order)
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
    md << buf;
  }
  if (!oracle.empty()) {
    md << "\n## Rank oracle over the LoRA ranks (GaRA Fig. 2)\n\nAll prompts, corrupted inputs only. A rank chosen per "
          "corruption or per image (knowing the answer) against the best single rank:\n\n| choice | IoU "
          "|\n|---|---:|\n";
    for (const char* k : {"best fixed rank", "best rank per corruption", "best rank per image"})
      md << "| " << k << " | " << pct(oracle[k]) << " |\n";
    md << "\nBest fixed rank per seed:";
    for (auto& [m, n] : oracle_choice["fixed"]) md << " " << m << " x" << n;
    md << ". Per-image winners (all seeds):";
    for (auto& [m, n] : oracle_choice["per image"]) md << " " << m << " " << n;
    md << ".\n";
  }
  if (!gate_rank.empty()) {
    md << "\n## GaRA's gates per corruption\n\nMean over the first " << gate_samples.size()
       << " validation images, all layers and q/k/v projections, all seeds: active rank-1 components "
          "(of r_low or r_high) and the share of projections that chose the high-rank space.\n\n| corruption |";
    for (auto& [m, byc] : gate_rank) md << " " << m << " active rank | " << m << " high space |";
    md << "\n|---|";
    for (size_t i = 0; i < gate_rank.size(); ++i) md << "---:|---:|";
    md << "\n";
    for (const auto& c : gate_corrs) {
      md << "| " << c << " |";
      for (auto& [m, byc] : gate_rank) {
        char b[64];
        std::snprintf(b, sizeof b, " %.2f | %.0f%% |", byc[c].mean(), 100 * gate_high[m][c].mean());
        md << b;
      }
      md << "\n";
    }
  }
  md << "\n## Cost\n\nTrainable parameters (base: " << base_params << "), encoder time with the adapter over "
     << "without (median of 9 interleaved pairs, alternating which runs first, " << num_threads()
     << (num_threads() == 1 ? " thread" : " threads")
     << ", this machine), training time per run: the mean over the runs timed in one go (a run "
     << "resumed after a stop is not timed; a `.seconds` file removed from the run directory drops one).\n\n"
     << "| method | params | % of base | encode overhead | train s/run |\n|---|---:|---:|---:|---:|\n";
  for (const auto& [name, cfg] : methods) {
    const Stat& ts = train_secs[name];
    char t[64];
    if (ts.v.empty())
      std::snprintf(t, sizeof t, "not timed");
    else if (int(ts.v.size()) < o.seeds)
      std::snprintf(t, sizeof t, "%.0f (%d of %d runs)", ts.mean(), int(ts.v.size()), o.seeds);
    else
      std::snprintf(t, sizeof t, "%.0f", ts.mean());
    char b[256];
    std::snprintf(b, sizeof b, "| %s | %lld | %.2f | %.2fx | %s |\n", name.c_str(), (long long)params[name],
                  100.0 * double(params[name]) / double(base_params), overhead[name], t);
    md << b;
  }
  // Chart: the seed-mean summary in evaluate()'s format.
  json mean_summary = json::object();
  for (const auto& m : method_order)
    for (const auto& c : corr_order)
      for (const auto& p : ps) mean_summary[m][c][p] = {{"iou", iou[m][c][p].mean()}};
  const fs::path doc(o.doc);
  if (!doc.parent_path().empty()) fs::create_directories(doc.parent_path());
  const std::string chart = doc.stem().string() + "_iou_per_corruption.png";
  bar_chart((doc.parent_path() / chart).string(), mean_summary, ps.back());
  md << "\n![IoU per corruption, prompt " << ps.back() << ", mean over seeds](" << chart << ")\n";
  write_text(o.doc, md.str());
  log("study: wrote " + o.doc);
}

}  // namespace rsam::eval
