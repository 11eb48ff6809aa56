#include "eval/evaluate.h"

#include <fcntl.h>
#include <torch/torch.h>
#include <unistd.h>
#include <opencv2/core.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <set>

#include "adapt/adapter.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/prompts.h"
#include "degrade/corruption.h"
#include "degrade/rng.h"
#include "error.h"
#include "eval/report.h"
#include "eval/summary.h"
#include "glesam/enhancer.h"
#include "io/fs.h"
#include "io/text.h"
#include "log.h"
#include "model/checkpoint.h"
#include "model/predictor.h"
#include "model/runtime.h"
#include "train/cv_tensor.h"

namespace rsam::eval {

namespace fs = std::filesystem;

namespace {

std::vector<std::string> expand_corruptions(const std::string& list) {
  std::vector<std::string> out;
  for (const auto& c : io::split(list, ',', /*skip_empty=*/true)) {
    if (c == "clean") {
      out.push_back("clean");
      continue;
    }
    for (const auto& n : degrade::expand(c)) out.push_back(n);
  }
  if (out.empty()) throw Error("the corruption list '" + list + "' names nothing to evaluate");
  return out;
}

std::string method_label(const std::string& item) {
  if (item.empty() || item == "none") return "sam";
  // GleSAM enhancers (.json) and "ADAPTER+ENHANCER.json" pairs name both.
  const auto parts = glesam::split_method(item);
  if (parts.enhancer.empty()) return fs::path(item).stem().string();
  const std::string e = fs::path(parts.enhancer).stem().string();
  return parts.adapter.empty() || parts.adapter == "none" ? e : fs::path(parts.adapter).stem().string() + "+" + e;
}

// What every sample is scored with, decided once from the options.
struct Plan {
  const EvalOptions& o;
  std::vector<std::string> corruptions;
  std::vector<data::PromptSpec> prompt_specs;
  int severity = 0;
  Pick pick = Pick::Score;
};

// What one sample and prompt type is scored from.
struct Scene {
  const data::Sample& sample;
  size_t index;
  const std::string& method;
  const std::string& corruption;
};

// The candidates of an ambiguous single point, for studying the pick.
void add_candidates(Record& rec, const Prediction& r, int64_t best, bool refining, const cv::Mat& truth) {
  // The best of the three candidates themselves (a refined mask may beat
  // them all; it is not one of them).
  rec.best_candidate_iou = 0;
  const auto stability = stability_scores(r.low_res_logits);
  for (int64_t j = 0; j < r.masks.size(0); ++j) {
    // Unrefined, the picked candidate is the scored mask: its IoU is known.
    const double iou = j == best && !refining ? rec.m.iou : data::mask_iou(mask_to_mat(r.masks[j]), truth);
    rec.candidate_iou.push_back(iou);
    rec.best_candidate_iou = std::max(rec.best_candidate_iou, iou);
    rec.candidate_score.push_back(r.iou_predictions[j].item<double>());
    rec.candidate_area.push_back(r.masks[j].sum().item<double>());
    rec.candidate_stability.push_back(stability[j].item<double>());
  }
}

// One prompt type on the image the predictor holds: the mask, refined or
// clicked on as asked, scored against the clean ground truth.
Record score_prompt(SamPredictor& pred, const Plan& plan, const Scene& at, const data::SampledPrompt& sp,
                    const data::PromptSpec& spec) {
  const EvalOptions& o = plan.o;
  const cv::Mat& truth = at.sample.mask;
  Prompt p;
  for (size_t q = 0; q < sp.points.size(); ++q) {
    p.points.push_back({sp.points[q].x, sp.points[q].y});
    p.labels.push_back(sp.labels[q]);
  }
  if (sp.has_box) p.box = std::array<float, 4>{sp.box[0], sp.box[1], sp.box[2], sp.box[3]};
  // One point is ambiguous: pick one of three masks, as SAM does.
  bool multi = is_ambiguous(p);
  auto r = pred.predict(p, multi);
  int64_t best = multi ? best_index(r, plan.pick) : 0;  // the predictor's pick, kept as an index for the records
  cv::Mat pm = mask_to_mat(r.masks[best]);
  // What the pick is weighed against: the single-mask output for the same
  // point (one more decode, no encode).
  const double single_iou =
      multi && spec.clicks <= 1 ? data::mask_iou(mask_to_mat(pred.predict(p, false).masks[0]), truth) : -1.0;
  // --refine: the picked mask goes back in as the mask input. The candidates
  // below stay the first decode's; the record scores the refined mask.
  float refined_score = 0;
  const bool refining = o.refine > 0 && spec.clicks <= 1;
  if (refining) {
    const Prediction refined = pred.refine(p, multi ? best_of(r, plan.pick) : r, o.refine);
    pm = mask_to_mat(refined.masks[0]);
    refined_score = refined.iou_predictions[0].item<float>();
  }
  // clicks:N: each further click goes where the last mask is most wrong,
  // with that mask's logits as the mask input (SAM's demo loop).
  for (int click = 1; click < spec.clicks; ++click) {
    cv::Point next;
    int label = 1;
    if (!data::next_click(pm, truth, &next, &label)) break;
    p.points.push_back({float(next.x), float(next.y)});
    p.labels.push_back(label);
    p.mask_input = r.low_res_logits[best].unsqueeze(0);
    multi = false;
    r = pred.predict(p, false);
    best = 0;
    pm = mask_to_mat(r.masks[0]);
  }
  Record rec;
  rec.method = at.method;
  rec.sample = utf8_escaped(at.sample.id);
  rec.index = at.index;
  rec.corruption = at.corruption;
  rec.prompt = spec.text;
  rec.m = data::mask_metrics(pm, truth);
  rec.score = refining ? refined_score : r.iou_predictions[best].item<float>();
  rec.best_candidate_iou = rec.m.iou;
  if (multi) {
    rec.single_mask_iou = single_iou;
    rec.picked = int(best);
    add_candidates(rec, r, best, refining, truth);
  }
  return rec;
}

// Every corruption and prompt type of sample i, in that order.
void score_sample(SamPredictor& pred, const Plan& plan, const std::string& method, const data::Sample& s, size_t i,
                  std::vector<Record>* out) {
  const EvalOptions& o = plan.o;
  // Prompts from the clean ground truth: identical for every corruption and
  // method, and for a prompt type whatever else --prompts lists (the type's
  // text is in sample_prompt's seed; the key is what the first listed
  // prompt always had, so those draws are unchanged), which keeps runs
  // with different lists paired object by object (rsam compare).
  std::vector<data::SampledPrompt> prompts;
  for (const auto& spec : plan.prompt_specs)
    prompts.push_back(data::sample_prompt(s.mask, spec, o.seed, degrade::derive_seed(i, 0)));
  for (const auto& c : plan.corruptions) {
    cv::Mat img = s.image;
    if (c != "clean") {
      const uint64_t key = degrade::derive_seed(degrade::derive_seed(o.seed, i), degrade::hash_string(c));
      const int sev = plan.severity > 0 ? plan.severity : 1 + int(key % 5);
      img = degrade::create(c, sev)->run(s.image, key).image;
    }
    pred.set_image(to_image8(img));
    const Scene at{s, i, method, c};
    for (size_t k = 0; k < prompts.size(); ++k)
      out->push_back(score_prompt(pred, plan, at, prompts[k], plan.prompt_specs[k]));
  }
}

// One method (the base, or the base with one adapter) over this process's
// share of the first n samples.
void score_method(const Plan& plan, data::Dataset& ds, size_t n, const std::string& adapter, const std::string& label,
                  Precision prec, std::vector<Record>* out) {
  const EvalOptions& o = plan.o;
  auto base = load_sam(o.checkpoint).model;
  const auto parts = glesam::split_method(adapter);
  std::optional<adapt::AdaptedSam> adapted;
  if (!parts.adapter.empty() && parts.adapter != "none") adapted.emplace(adapt::AdaptedSam::load(base, parts.adapter));
  Sam model = adapted ? adapted->model() : base;
  // A GleSAM enhancer: its decoder replaces SAM's, and every embedding is
  // enhanced once per image before the prompts are decoded.
  std::shared_ptr<const glesam::Enhancer> enhancer;
  if (!parts.enhancer.empty()) enhancer = glesam::load_for(model, parts.enhancer);
  SamPredictor pred(model, prec, o.flip);
  if (enhancer) glesam::attach(pred, enhancer);
  size_t done = 0, skipped = 0;
  for (size_t i = size_t(o.shard); i < n; i += size_t(o.shards)) {
    data::Sample s;
    try {
      s = ds.get(i);
    } catch (const Error& e) {
      if (!o.quiet) log_warning("skipped sample " + std::to_string(i) + ": " + e.what());
      ++skipped;
      continue;
    }
    if (cv::countNonZero(s.mask) == 0) {
      // Said, as for an unreadable sample: a degenerate polygon or one wholly
      // outside its image would otherwise vanish from the counts unexplained.
      if (!o.quiet)
        log_warning("skipped sample " + std::to_string(i) + ": its mask is empty (no pixel inside the image)");
      ++skipped;
      continue;
    }
    score_sample(pred, plan, label, s, i, out);
    ++done;
    // A progress meter rewritten in place on a terminal, not a log line.
    if (!o.quiet)
      log_progress(label + ": " + std::to_string(done) + "/" +
                   std::to_string((n + size_t(o.shards) - 1 - size_t(o.shard)) / size_t(o.shards)) + " samples");
  }
  if (!o.quiet) log_progress_end();
  if (done == 0 && o.shards == 1)
    throw Error("no sample of '" + o.data + "' could be evaluated (" + std::to_string(skipped) + " skipped)");
}

}  // namespace

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

std::unique_ptr<io::FolderLock> check_report(const EvalOptions& o, bool lock) {
  if (o.report.empty()) return nullptr;
  const std::string& dir = o.report;
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
    throw Error("the report folder '" + dir + "' is a file, not a folder");
  fs::create_directories(dir, ec);
  // The flag's name stays in the two messages below: tests/app/test_safety_data.cpp asserts it.
  if (ec) throw Error("cannot make the report folder '" + dir + "': " + ec.message());
  std::vector<io::NamedPath> outputs, inputs{{"the checkpoint", o.checkpoint}};
  for (const char* f : {"results.json", "records.csv", "report.md", "iou_per_corruption.png"})
    outputs.push_back({std::string("the report's ") + f, (fs::path(dir) / f).string()});
  for (const auto& a : o.adapters) {
    const auto parts = glesam::split_method(a);
    if (!parts.adapter.empty() && parts.adapter != "none") inputs.push_back({"the adapter", parts.adapter});
    if (!parts.enhancer.empty()) inputs.push_back({"the enhancer", parts.enhancer});
  }
  for (const auto& f : data::dataset_files(o.data)) inputs.push_back({"the dataset file", f});
  io::check_outputs(outputs, inputs);
  // Writable, tested with the lock file itself (root passes access(2) even
  // where nothing can be created, as in /proc).
  const std::string probe = (fs::path(dir) / ".rsam.lock").string();
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) throw Error("cannot write in the report folder '" + dir + "': " + std::strerror(errno));
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
  if (o.checkpoint.empty() || o.data.empty()) throw Error("eval: a checkpoint and a dataset are required");
  if (o.shards < 1 || o.shard < 0 || o.shard >= o.shards) throw Error("eval: shard must be in 0..shards-1");
  check_report(o, false);
  set_threads(o.threads);
  Plan plan{o, expand_corruptions(o.corruptions), data::parse_prompts(o.prompts), o.severity};
  auto ds = data::open_dataset(o.data);
  size_t n = ds->size();
  if (o.max_samples > 0) n = std::min(n, size_t(o.max_samples));
  const std::vector<std::string> adapters = o.adapters.empty() ? std::vector<std::string>{"none"} : o.adapters;
  const auto labels = method_labels(adapters);

  EvalResult res;
  const auto prec = o.precision;
  plan.pick = o.pick;
  if (const auto w = bf16_warning(); prec == Precision::BF16 && o.shard == 0 && !w.empty()) log_warning(w);
  for (size_t ai = 0; ai < adapters.size(); ++ai) score_method(plan, *ds, n, adapters[ai], labels[ai], prec, &res.records);
  res.summary = summarize(res.records);
  if (o.oracle) res.oracle = rank_oracle(res.records);
  if (!o.report.empty()) write_report(o.report, o, res);
  return res;
}

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

}  // namespace rsam::eval
