#include "eval/evaluator.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <torch/torch.h>
#include <unistd.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include "adapt/adapter.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/prompts.h"
#include "degrade/corruption.h"
#include "degrade/rng.h"
#include "error.h"
#include "io/fs.h"
#include "io/text.h"
#include "io/image_codec.h"
#include "model/checkpoint.h"
#include "model/predictor.h"
#include "model/runtime.h"
#include "train/cv_tensor.h"

namespace rsam::eval {

namespace fs = std::filesystem;

namespace {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep))
    if (!item.empty()) out.push_back(item);
  return out;
}

std::vector<std::string> expand_corruptions(const std::string& list) {
  std::vector<std::string> out;
  for (const auto& c : split(list, ',')) {
    if (c == "clean") {
      out.push_back("clean");
      continue;
    }
    for (const auto& n : degrade::expand(c)) out.push_back(n);
  }
  if (out.empty()) throw Error("--corruption names nothing to evaluate");
  return out;
}

std::string method_label(const std::string& adapter) {
  if (adapter.empty() || adapter == "none") return "sam";
  return fs::path(adapter).stem().string();
}

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

std::vector<std::string> method_labels(const std::vector<std::string>& adapters) {
  std::map<std::string, int> uses;
  for (const auto& a : adapters) ++uses[method_label(a)];
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (const auto& a : adapters) {
    std::string l = method_label(a);
    const std::string folder = fs::path(a).parent_path().filename().string();
    if (uses[l] > 1 && l != "sam" && !folder.empty()) l = folder + "/" + l;
    l = utf8_escaped(l);
    if (!seen.insert(l).second) throw Error("two adapters share the name '" + l + "'");
    out.push_back(l);
  }
  return out;
}

std::string utf8_escaped(const std::string& s) { return io::escape_bytes(s, /*controls=*/false); }

std::unique_ptr<io::FolderLock> check_report(const EvalOptions& o, bool lock) {
  if (o.report.empty()) return nullptr;
  const std::string& dir = o.report;
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) throw Error("--report '" + dir + "' is a file, not a folder");
  fs::create_directories(dir, ec);
  if (ec) throw Error("cannot make the --report folder '" + dir + "': " + ec.message());
  std::vector<io::NamedPath> outputs, inputs{{"the checkpoint", o.checkpoint}};
  for (const char* f : {"results.json", "records.csv", "report.md", "iou_per_corruption.png"})
    outputs.push_back({std::string("the report's ") + f, (fs::path(dir) / f).string()});
  for (const auto& a : o.adapters)
    if (a != "none") inputs.push_back({"the adapter", a});
  for (const auto& f : data::dataset_files(o.data)) inputs.push_back({"the dataset file", f});
  io::check_outputs(outputs, inputs);
  // Writable, tested with the lock file itself (root passes access(2) even
  // where nothing can be created, as in /proc).
  const std::string probe = (fs::path(dir) / ".rsam.lock").string();
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) throw Error("cannot write in the --report folder '" + dir + "': " + std::strerror(errno));
  ::close(fd);
  if (!lock) return nullptr;
  return std::make_unique<io::FolderLock>(dir);  // also removes what killed runs left there
}

std::string make_shard_dir(const std::string& report) {
  std::string parent = report;
  if (parent.empty()) {
    const char* t = std::getenv("TMPDIR");
    parent = t != nullptr && *t != '\0' ? t : "/tmp";
  }
  io::remove_stale_temps(parent);
  return io::make_temp_dir(parent, "eval");
}

EvalResult evaluate(const EvalOptions& o) {
  if (o.checkpoint.empty() || o.data.empty()) throw Error("--checkpoint and --data are required");
  if (o.shards < 1 || o.shard < 0 || o.shard >= o.shards) throw Error("eval: shard must be in 0..shards-1");
  check_report(o, false);
  set_threads(o.threads);
  const auto corruptions = expand_corruptions(o.corruptions);
  const auto prompt_specs = data::parse_prompts(o.prompts);
  const int severity = data::parse_severity(o.severity);
  auto ds = data::open_dataset(o.data);
  size_t n = ds->size();
  if (o.max_samples > 0) n = std::min(n, size_t(o.max_samples));
  std::vector<std::string> adapters = o.adapters.empty() ? std::vector<std::string>{"none"} : o.adapters;
  const auto labels = method_labels(adapters);

  EvalResult res;
  const auto prec = parse_precision(o.precision);
  const Pick pick = parse_pick(o.pick);
  if (const auto w = bf16_warning(); prec == Precision::BF16 && o.shard == 0 && !w.empty()) std::cerr << w << "\n";
  for (size_t ai = 0; ai < adapters.size(); ++ai) {
    const auto& adapter = adapters[ai];
    auto base = load_sam(o.checkpoint).model;
    std::optional<adapt::AdaptedSam> adapted;
    if (adapter != "none") adapted.emplace(adapt::AdaptedSam::load(base, adapter));
    SamPredictor pred(adapted ? adapted->model() : base, prec, o.flip);
    const auto& label = labels[ai];
    size_t done = 0, skipped = 0;
    for (size_t i = size_t(o.shard); i < n; i += size_t(o.shards)) {
      data::Sample s;
      try {
        s = ds->get(i);
      } catch (const Error& e) {
        if (!o.quiet) std::cerr << "skipped sample " << i << ": " << e.what() << "\n";
        ++skipped;
        continue;
      }
      if (cv::countNonZero(s.mask) == 0) {
        // Said, as for an unreadable sample: a degenerate polygon or one wholly
        // outside its image would otherwise vanish from the counts unexplained.
        if (!o.quiet) std::cerr << "skipped sample " << i << ": its mask is empty (no pixel inside the image)\n";
        ++skipped;
        continue;
      }
      // Prompts from the clean ground truth: identical for every corruption and
      // method, and for a prompt type whatever else --prompts lists (the type's
      // text is in sample_prompt's seed; the key is what the first listed
      // prompt always had, so those draws are unchanged), which keeps runs
      // with different lists paired object by object (rsam compare).
      std::vector<data::SampledPrompt> prompts;
      for (const auto& spec : prompt_specs)
        prompts.push_back(data::sample_prompt(s.mask, spec, o.seed, degrade::derive_seed(i, 0)));
      for (const auto& c : corruptions) {
        cv::Mat img = s.image;
        int sev = 0;
        if (c != "clean") {
          sev = severity > 0
                    ? severity
                    : 1 + int(degrade::derive_seed(degrade::derive_seed(o.seed, i), degrade::hash_string(c)) % 5);
          img = degrade::create(c, sev)
                    ->run(s.image, degrade::derive_seed(degrade::derive_seed(o.seed, i), degrade::hash_string(c)))
                    .image;
        }
        pred.set_image(to_image8(img));
        for (size_t k = 0; k < prompts.size(); ++k) {
          const auto& sp = prompts[k];
          Prompt p;
          for (size_t q = 0; q < sp.points.size(); ++q) {
            p.points.push_back({sp.points[q].x, sp.points[q].y});
            p.labels.push_back(sp.labels[q]);
          }
          if (sp.has_box) p.box = std::array<float, 4>{sp.box[0], sp.box[1], sp.box[2], sp.box[3]};
          // One point is ambiguous: pick one of three masks, as SAM does.
          bool multi = is_ambiguous(p);
          auto r = pred.predict(p, multi);
          int64_t best = multi ? best_index(r, pick) : 0;  // the predictor's pick, kept as an index for the records
          cv::Mat pm = mask_to_mat(r.masks[best]);
          // What the pick is weighed against: the single-mask output for the
          // same point (one more decode, no encode).
          const double single_iou = multi && prompt_specs[k].clicks <= 1
                                        ? data::mask_iou(mask_to_mat(pred.predict(p, false).masks[0]), s.mask)
                                        : -1.0;
          // --refine: the picked mask goes back in as the mask input. The
          // candidates below stay the first decode's; the record scores the
          // refined mask.
          float refined_score = 0;
          const bool refining = o.refine > 0 && prompt_specs[k].clicks <= 1;
          if (refining) {
            const Prediction refined = pred.refine(p, multi ? best_of(r, pick) : r, o.refine);
            pm = mask_to_mat(refined.masks[0]);
            refined_score = refined.iou_predictions[0].item<float>();
          }
          // clicks:N: each further click goes where the last mask is most
          // wrong, with that mask's logits as the mask input (SAM's demo loop).
          for (int click = 1; click < prompt_specs[k].clicks; ++click) {
            cv::Point at;
            int label = 1;
            if (!data::next_click(pm, s.mask, &at, &label)) break;
            p.points.push_back({float(at.x), float(at.y)});
            p.labels.push_back(label);
            p.mask_input = r.low_res_logits[best].unsqueeze(0);
            multi = false;
            r = pred.predict(p, false);
            best = 0;
            pm = mask_to_mat(r.masks[0]);
          }
          Record rec;
          rec.method = label;
          rec.sample = utf8_escaped(s.id);
          rec.index = i;
          rec.corruption = c;
          rec.prompt = prompt_specs[k].text;
          rec.m = data::mask_metrics(pm, s.mask);
          rec.score = refining ? refined_score : r.iou_predictions[best].item<float>();
          rec.best_candidate_iou = rec.m.iou;
          if (multi) {
            rec.single_mask_iou = single_iou;
            rec.picked = int(best);
            // The best of the three candidates themselves (a refined mask
            // may beat them all; it is not one of them).
            rec.best_candidate_iou = 0;
            const auto stability = stability_scores(r.low_res_logits);
            for (int64_t j = 0; j < r.masks.size(0); ++j) {
              // Unrefined, the picked candidate is the scored mask: its IoU is known.
              const double iou = j == best && !refining ? rec.m.iou : data::mask_iou(mask_to_mat(r.masks[j]), s.mask);
              rec.candidate_iou.push_back(iou);
              rec.best_candidate_iou = std::max(rec.best_candidate_iou, iou);
              rec.candidate_score.push_back(r.iou_predictions[j].item<double>());
              rec.candidate_area.push_back(r.masks[j].sum().item<double>());
              rec.candidate_stability.push_back(stability[j].item<double>());
            }
          }
          res.records.push_back(rec);
        }
      }
      ++done;
      if (!o.quiet)
        std::cerr << "\r" << label << ": " << done << "/"
                  << (n + size_t(o.shards) - 1 - size_t(o.shard)) / size_t(o.shards) << " samples" << std::flush;
    }
    if (!o.quiet) std::cerr << "\n";
    if (done == 0 && o.shards == 1)
      throw Error("no sample of '" + o.data + "' could be evaluated (" + std::to_string(skipped) + " skipped)");
  }
  res.summary = summarize(res.records);
  if (o.oracle) res.oracle = rank_oracle(res.records);
  if (!o.report.empty()) write_report(o.report, o, res);
  return res;
}

void bar_chart(const std::string& path, const nlohmann::json& summary, const std::string& prompt) {
  std::vector<std::string> methods, corrs;
  for (auto& [m, byc] : summary.items()) {
    methods.push_back(m);
    if (corrs.empty())
      for (auto& [c, byp] : byc.items()) corrs.push_back(c);
  }
  if (methods.empty() || corrs.empty()) return;
  const int group = int(methods.size()) * 12 + 10, H = 360, top = 30, bottom = 110, left = 40;
  const int W = left + int(corrs.size()) * group + 20;
  cv::Mat img(H, W, CV_8UC3, cv::Scalar(255, 255, 255));
  // 16 distinct colours (BGR; matplotlib's tab20 without the near-duplicates)
  // so that a full study line-up never shares one.
  static const cv::Scalar palette[] = {{180, 119, 31},  {14, 127, 255},  {44, 160, 44},   {40, 39, 214},
                                       {189, 103, 148}, {75, 86, 140},   {194, 119, 227}, {127, 127, 127},
                                       {34, 189, 188},  {207, 190, 23},  {232, 199, 174}, {120, 187, 255},
                                       {138, 223, 152}, {150, 152, 255}, {213, 176, 197}, {0, 0, 0}};
  const size_t n_colours = sizeof palette / sizeof palette[0];
  // The y axis starts one step of 10 below the multiple of 10 under the lowest
  // bar: method differences of a point or two vanish on a 0..100 axis.
  double lowest = 1.0;
  for (const auto& m : methods)
    for (const auto& c : corrs)
      if (summary[m][c].contains(prompt)) lowest = std::min(lowest, summary[m][c][prompt]["iou"].get<double>());
  const int floor_pct = std::max(0, int(std::floor(100 * lowest / 10.0)) * 10 - 10);
  const double span = (100.0 - floor_pct) / 100.0, base = floor_pct / 100.0;
  const int plot_h = H - top - bottom;
  for (int t = 0; t <= 4; ++t) {
    const int y = top + plot_h - plot_h * t / 4;
    cv::line(img, {left, y}, {W - 10, y}, cv::Scalar(225, 225, 225));
    char tick[16];
    std::snprintf(tick, sizeof tick, "%g", floor_pct + t * (100.0 - floor_pct) / 4);
    cv::putText(img, tick, {4, y + 4}, cv::FONT_HERSHEY_PLAIN, 0.8, cv::Scalar(0, 0, 0));
  }
  for (size_t c = 0; c < corrs.size(); ++c) {
    for (size_t m = 0; m < methods.size(); ++m) {
      const auto& node = summary[methods[m]][corrs[c]];
      if (!node.contains(prompt)) continue;
      const double v = std::clamp((node[prompt]["iou"].get<double>() - base) / span, 0.0, 1.0);
      const int x = left + int(c) * group + 5 + int(m) * 12;
      cv::rectangle(img, {x, top + plot_h - int(plot_h * v)}, {x + 10, top + plot_h}, palette[m % n_colours],
                    cv::FILLED);
    }
    cv::Mat label(14, bottom - 5, CV_8UC3, cv::Scalar(255, 255, 255));
    cv::putText(label, corrs[c].substr(0, 16), {0, 11}, cv::FONT_HERSHEY_PLAIN, 0.85, cv::Scalar(0, 0, 0));
    cv::Mat rot;
    cv::rotate(label, rot, cv::ROTATE_90_COUNTERCLOCKWISE);
    const int x = left + int(c) * group + group / 2 - 7;
    if (x + rot.cols <= W) rot.copyTo(img(cv::Rect(x, top + plot_h + 4, rot.cols, rot.rows)));
  }
  for (size_t m = 0; m < methods.size(); ++m) {
    cv::rectangle(img, {left + int(m) * 110, 8}, {left + int(m) * 110 + 10, 18}, palette[m % n_colours], cv::FILLED);
    cv::putText(img, methods[m].substr(0, 14), {left + int(m) * 110 + 14, 18}, cv::FONT_HERSHEY_PLAIN, 0.9,
                cv::Scalar(0, 0, 0));
  }
  io::write_image(path, img, false);
}

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
                      {"severity", utf8_escaped(o.severity)},
                      {"prompts", utf8_escaped(o.prompts)},
                      {"seed", o.seed},
                      {"max_samples", o.max_samples},
                      {"precision", utf8_escaped(o.precision)},
                      {"refine", o.refine}};
  // Since 2026-12-03 a prompt type draws the same prompt wherever it is
  // listed; results written before (without this entry) drew the k-th listed
  // type from key k, so they are not reused for the new draws.
  j["prompt_draws"] = "by type";
  // Only when they differ from the default, so results cached before --pick
  // and --flip existed still match.
  if (o.pick != "score") j["pick"] = utf8_escaped(o.pick);
  if (o.flip) j["flip"] = true;
  return j;
}

// results.json's per-record object; load_results reads back what this writes.
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

}  // namespace

EvalResult merge_shards(std::vector<EvalResult> parts, const EvalOptions& o) {
  EvalResult r;
  for (auto& p : parts)
    for (auto& x : p.records) r.records.push_back(std::move(x));
  if (r.records.empty()) throw Error("no sample of '" + o.data + "' could be evaluated");
  // One process writes method by method, then sample by sample; a sample's
  // records all come from one share, already in order.
  const auto labels = method_labels(o.adapters.empty() ? std::vector<std::string>{"none"} : o.adapters);
  auto method_pos = [&](const std::string& m) { return std::find(labels.begin(), labels.end(), m) - labels.begin(); };
  std::stable_sort(r.records.begin(), r.records.end(), [&](const Record& a, const Record& b) {
    const auto ma = method_pos(a.method), mb = method_pos(b.method);
    return ma != mb ? ma < mb : a.index < b.index;
  });
  r.summary = summarize(r.records);
  if (o.oracle) r.oracle = rank_oracle(r.records);
  return r;
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

void write_report(const std::string& dir, const EvalOptions& o, const EvalResult& r) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("cannot make the --report folder '" + dir + "': " + ec.message());
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

  // Markdown in the papers' layout: rows corruptions, columns prompt types.
  std::ostringstream md;
  md << "# rsam robustness report\n\n";
  md << "Re-run: `rsam eval --checkpoint " << o.checkpoint << " --data " << o.data << " --corruption " << o.corruptions
     << " --severity " << o.severity << " --prompts " << o.prompts << " --seed " << o.seed;
  if (!o.adapters.empty()) {
    md << " --compare ";
    for (size_t i = 0; i < o.adapters.size(); ++i) md << (i ? "," : "") << o.adapters[i];
  }
  if (o.max_samples) md << " --max-samples " << o.max_samples;
  if (o.refine) md << " --refine " << o.refine;
  if (o.pick != "score") md << " --pick " << o.pick;
  if (o.flip) md << " --flip";
  md << "`\n\nIoU / Dice in %, mean over samples. Per-sample numbers: `records.csv`, `results.json`.\n\n";
  const auto prompts = data::parse_prompts(o.prompts);
  for (auto& [method, byc] : r.summary.items()) {
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
  if (r.summary.size() > 1) {
    md << "## Comparison (IoU %, clean vs mean over corruptions)\n\n| method |";
    for (const auto& p : prompts) md << " " << p.text << " clean | " << p.text << " degraded |";
    md << "\n|---|";
    for (size_t i = 0; i < prompts.size(); ++i) md << "---|---|";
    md << "\n";
    for (auto& [method, byc] : r.summary.items()) {
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
  for (const auto& p : prompts) {
    if (!data::is_single_point(p)) continue;
    md << "## " << p.text
       << ": the mask picked by predicted IoU vs the best of the three and the single-mask output (IoU %)\n\n"
       << "| method | clean, picked | clean, best of three | clean, single-mask output | degraded, picked | degraded, "
          "best of three | degraded, single-mask output |\n"
       << "|---|---|---|---|---|---|---|\n";
    for (auto& [method, byc] : r.summary.items()) {
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
    for (auto& [method, byc] : r.summary.items()) {
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
  if (!r.oracle.is_null()) {
    md << "## Rank oracle (degraded inputs, IoU %)\n\n";
    char b[256];
    std::snprintf(
        b, sizeof b,
        "| best fixed (%s) | oracle per corruption | oracle per image |\n|---|---|---|\n| %.1f | %.1f | %.1f |\n\n",
        r.oracle["best_fixed"]["method"].get<std::string>().c_str(), 100 * r.oracle["best_fixed"]["iou"].get<double>(),
        100 * r.oracle["per_corruption_oracle_iou"].get<double>(),
        100 * r.oracle["per_image_oracle_iou"].get<double>());
    md << b;
  }
  md << "![IoU per corruption](iou_per_corruption.png)\n";
  io::write_text((fs::path(dir) / "report.md").string(), md.str());
  if (!prompts.empty()) bar_chart((fs::path(dir) / "iou_per_corruption.png").string(), r.summary, prompts.back().text);
}

}  // namespace rsam::eval
