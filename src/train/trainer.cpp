#include "train/trainer.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <sstream>

#include "adapt/adapter.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/metrics.h"
#include "degrade/rng.h"
#include "error.h"
#include "io/fs.h"
#include "io/image_codec.h"
#include "log.h"
#include "model/checkpoint.h"
#include "model/predictor.h"
#include "model/runtime.h"
#include "train/cv_tensor.h"
#include "train/distributed.h"
#include "train/trainer_internal.h"
#include "viz/viz.h"

namespace rsam::train {

using torch::Tensor;
namespace fs = std::filesystem;
using namespace detail;

namespace {

// loss.png: the loss after every step, drawn once the run has two.
void plot_loss(const std::string& path, const std::vector<std::pair<int64_t, double>>& pts) {
  std::vector<std::pair<double, double>> xy;
  for (const auto& [step, loss] : pts) xy.emplace_back(double(step), loss);
  if (const auto img = viz::line_chart(xy, "loss vs step"); !img.empty()) io::write_image(path, img, /*rgb=*/false);
}

double validate(Sam& model, const std::string& spec, int64_t max_samples, uint64_t seed) {
  auto ds = data::open_dataset(spec);
  data::LoaderOptions lo;
  lo.batch_size = 1;
  lo.seed = seed;
  lo.shuffle = false;
  lo.epochs = 1;
  lo.prompts = data::parse_prompts("box");
  data::Loader loader(*ds, lo);
  model->eval();
  SamPredictor pred(model);
  data::MetricsAccumulator acc;
  data::Batch batch;
  while (int64_t(acc.count()) < max_samples && loader.next(batch)) {
    for (const auto& it : batch) {
      pred.set_image(to_image8(it.image));
      Prompt p;
      const auto& b = it.prompt.box;
      p.box = std::array<float, 4>{b[0], b[1], b[2], b[3]};
      auto r = pred.predict(p, false);
      acc.add(data::mask_metrics(mask_to_mat(r.masks[0]), it.sample.mask));
    }
  }
  return acc.count() ? acc.mean().iou : -1.0;
}

}  // namespace

namespace detail {

// The options that decide the result, as config.json and the checkpoint
// record them; a resume must use the same.
nlohmann::json run_config(const TrainOptions& o) {
  nlohmann::json cfg{{"checkpoint", o.checkpoint},
                     {"init", o.init},
                     {"data", o.data},
                     {"adapter", o.full ? "full" : o.adapter},
                     {"train_decoder", o.train_decoder},
                     {"corruption", o.corruption},
                     {"severity", data::severity_name(o.severity)},
                     {"clean_ratio", o.clean_ratio},
                     {"prompts", o.prompts},
                     {"steps", o.steps},
                     {"epochs", o.epochs},
                     {"batch", o.batch},
                     {"accum", o.accum},
                     {"optimizer", o.optimizer},
                     {"lr", o.lr},
                     {"wd", o.wd},
                     {"clip", o.clip},
                     {"warmup", o.warmup},
                     {"min_lr_ratio", o.min_lr_ratio},
                     {"precision", precision_name(o.precision)},
                     {"grad_checkpoint", o.grad_checkpoint},
                     {"seed", o.seed}};
  if (o.masks_per_image != 1) cfg["masks_per_image"] = o.masks_per_image;
  if (o.iterative_points != 0) cfg["iterative_points"] = o.iterative_points;
  if (o.rank_loss != 0) cfg["rank_loss"] = o.rank_loss;
  if (o.occluded_weight != 1) cfg["occluded_weight"] = o.occluded_weight;
  if (o.consistency != 0) cfg["consistency"] = o.consistency;
  if (!o.trainable.empty()) cfg["trainable"] = o.trainable;
  // Runs from before the option measured on the low-res grid: their configs lack the key.
  if (o.iou_target != "lowres") cfg["iou_target"] = o.iou_target;
  if (!o.full) cfg["adapter_config"] = adapt::load_config(o.adapter);
  return cfg;
}

std::unique_ptr<ProcessGroup> open_out_and_join(const TrainOptions& o, const nlohmann::json& cfg,
                                                std::optional<io::FolderLock>& lock) {
  if (!o.distributed || rank_from_env() == 0) open_out(o, cfg, lock);
  auto group = o.distributed ? ProcessGroup::from_env() : nullptr;
  if (!lock && (!group || group->rank() == 0)) open_out(o, cfg, lock);
  int threads = o.threads;
  if (threads <= 0 && group) threads = threads_per_process(group->local_size());
  set_threads(threads);
  return group;
}

}  // namespace detail

namespace {

std::string got(double v) {
  std::ostringstream os;
  os << v;
  return " (got " + os.str() + ")";
}

// The numbers NaN or Inf would turn into a silent wrong run: the learning
// rate (an all-NaN adapter), the clip (NaN compares false: no clipping), the
// schedule (a negative warm-up). Named as the options are, not as flags.
// Adam moves a weight by up to the learning rate per step, so a rate above 1
// is no training, and far above it overflows float weights.
void check_ranges(const TrainOptions& o) {
  if (!(o.lr > 0 && o.lr <= 1)) throw Error("the learning rate must be a finite number in (0, 1]" + got(o.lr));
  if (!std::isfinite(o.wd) || o.wd < 0) throw Error("the weight decay must be a finite number >= 0" + got(o.wd));
  if (!std::isfinite(o.clip) || o.clip < 0)
    throw Error("the gradient clip must be a finite number >= 0, 0 for none" + got(o.clip));
  if (o.warmup < 0) throw Error("the warm-up steps must be >= 0" + got(double(o.warmup)));
  if (!(o.min_lr_ratio >= 0 && o.min_lr_ratio <= 1))
    throw Error("the final learning-rate ratio must be in [0, 1]" + got(o.min_lr_ratio));
  if (!(o.clean_ratio >= 0 && o.clean_ratio <= 1))
    throw Error("the clean ratio must be in [0, 1]" + got(o.clean_ratio));
  if (!std::isfinite(o.rank_loss)) throw Error("the rank-loss weight must be finite" + got(o.rank_loss));
  if (o.steps < 0 || o.epochs < 0) throw Error("the steps and epochs must be >= 0");
  if (o.save_every < 0)
    throw Error("the checkpoint interval must be >= 0, 0 for the end only" + got(double(o.save_every)));
  if (o.val_samples < 1) throw Error("the validation samples must be >= 1" + got(double(o.val_samples)));
  if (o.workers < 0) throw Error("the data-loading workers must be >= 0" + got(double(o.workers)));
  if (o.out.empty()) throw Error("the output folder is empty");
  if (o.resume && o.overwrite) throw Error("resume and overwrite exclude each other: continue the run or replace it");
}

}  // namespace

void check_options(const TrainOptions& o) {
  if (o.checkpoint.empty() == o.init.empty())
    throw Error("give exactly one of a checkpoint to start from or an init config (random weights)");
  if (!o.init.empty() && !o.full) throw Error("random initial weights need full training (every weight trainable)");
  if (o.data.empty()) throw Error("no training data was given");
  if ((o.steps > 0) == (o.epochs > 0)) throw Error("give exactly one of a step count or an epoch count");
  if (o.batch < 1 || o.accum < 1 || o.masks_per_image < 1)
    throw Error("the batch size, the accumulation count and the masks per image must be >= 1");
  if (o.iterative_points < 0) throw Error("the number of iterative points must be >= 0");
  if (!(o.rank_loss >= 0)) throw Error("the ranking loss weight must be >= 0");
  if (!(o.occluded_weight > 0 && o.occluded_weight <= 100))
    throw Error("the occluded-object weight must be in (0, 100]");
  if (!(o.consistency >= 0 && o.consistency <= 1000)) throw Error("the consistency weight must be in [0, 1000]");
  if (o.consistency > 0 && o.full)
    throw Error(
        "the consistency term needs an adapter: it holds the adapted model to the frozen base, which full training "
        "trains");
  if (o.iou_target != "input" && o.iou_target != "lowres") throw Error("the IoU target must be input or lowres");
  if (!o.trainable.empty() && !o.full)
    throw Error("a trainable-weights pattern selects among all weights: it needs full training");
  if (o.optimizer != "adam" && o.optimizer != "adamw") throw Error("the optimizer must be adam or adamw");
  check_ranges(o);
}

namespace detail {

// Rank 0 starts metrics.jsonl (with the lines a resumed run keeps) and
// config.json.
void start_metrics(const TrainOptions& o, const nlohmann::json& cfg, const History& h, const std::string& metrics_path,
                   std::optional<io::AppendFile>& metrics) {
  std::string all;
  for (auto& l : h.metric_lines) all += l + "\n";
  io::write_atomic(metrics_path, all.data(), all.size());
  metrics.emplace(metrics_path);
  io::write_text((fs::path(o.out) / "config.json").string(), cfg.dump(2) + "\n");
}

void broadcast_params(const Run& run) {
  if (!run.group) return;
  torch::NoGradGuard ng;
  std::vector<Tensor> w;
  for (auto& p : run.t.plist) w.push_back(p.detach());
  run.group->broadcast(w);
}

}  // namespace detail

namespace {

// The finished run: its checkpoint and weights (rank 0 only), the loss
// curve, and the validation score if asked for.
TrainResult finish(const Run& run, const History& h) {
  const TrainOptions& o = run.o;
  Trainee& t = run.t;
  t.model->eval();
  TrainResult r;
  r.steps = h.step;
  r.start_step = h.start_step;
  r.last_loss = h.last_loss;
  r.wrote_outputs = run.lead;
  const auto rngs = rng_states(run.group);
  if (!run.lead) return r;  // the weights are rank 0's to write
  check_finite(t.params, h.step);
  r.weights_path = (fs::path(o.out) / (o.full ? "model.safetensors" : "adapter.safetensors")).string();
  save_result(
      [&] {
        save_checkpoint(run.ckpt_path, {h.step, run.loader.state()}, t.params, *t.opt, run.cfg_text, rngs);
      },
      [&] {
        if (o.full)
          save_sam(t.model, r.weights_path);
        else
          t.adapted->save(r.weights_path);
      },
      r.weights_path);
  plot_loss((fs::path(o.out) / "loss.png").string(), h.curve);
  if (!o.val.empty()) {
    torch::NoGradGuard ng;
    r.val_iou = validate(t.model, o.val, o.val_samples, o.seed);
    run.metrics->write_line(nlohmann::json{{"step", h.step}, {"val_box_iou", r.val_iou}}.dump());
  }
  return r;
}

}  // namespace

TrainResult train(const TrainOptions& o) {
  check_options(o);
  const nlohmann::json cfg = run_config(o);
  const std::string cfg_text = cfg.dump();
  // Data-parallel ranks (torchrun's environment; `rsam train --nproc`): each
  // takes its share of every batch, the gradients are summed, and every rank
  // takes the same optimizer step. Rank 0 alone writes, and holds the output
  // folder for the whole run.
  std::optional<io::FolderLock> lock;
  const auto group = open_out_and_join(o, cfg, lock);
  const bool bf16 = o.precision == Precision::BF16;
  const int rank = group ? group->rank() : 0, world = group ? group->size() : 1;
  const bool lead = rank == 0;
  const bool quiet = o.quiet || !lead;
  if (const auto w = bf16_warning(); bf16 && lead && !w.empty()) log_warning(w);

  Trainee t;
  build_trainee(o, cfg, t);
  // Rank 0 draws as a single process would; the others get streams of
  // their own, or every rank would draw the same Gumbel noise and clicks.
  if (rank > 0) torch::manual_seed(degrade::derive_seed(o.seed, uint64_t(rank)));

  auto ds = data::open_dataset(o.data);
  const int64_t per_step = int64_t(o.batch) * o.accum;
  const int64_t total = o.steps > 0 ? o.steps : o.epochs * ((int64_t(ds->size()) + per_step - 1) / per_step);
  data::LoaderOptions lo = loader_options(o);
  uint64_t skipped_reported = 0;
  lo.on_skip = [&](const std::string& msg) {
    if (!quiet && skipped_reported++ < 5) log_warning("skipped: " + msg);
  };
  data::Loader loader(*ds, lo);

  Run run(o, t, *ds, loader, lo.prompts[0]);
  run.group = group.get();
  run.rank = rank, run.world = world;
  run.lead = lead, run.quiet = quiet, run.bf16 = bf16;
  run.total = total, run.per_step = per_step;
  run.ckpt_path = (fs::path(o.out) / "checkpoint.pt").string();
  run.metrics_path = (fs::path(o.out) / "metrics.jsonl").string();
  run.cfg_text = cfg_text;
  History h;
  resume(run, h);
  std::optional<io::AppendFile> metrics;
  if (lead) start_metrics(o, cfg, h, run.metrics_path, metrics);
  run.metrics = metrics ? &*metrics : nullptr;
  broadcast_params(run);
  t.model->train();
  run_steps(run, h);
  return finish(run, h);
}

}  // namespace rsam::train
