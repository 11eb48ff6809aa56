// What the trainer's files share (setup, samples, steps, checkpoints, the
// output folder); not part of the library's API, which is trainer.h.
#pragma once

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "adapt/adapter.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "io/fs.h"
#include "train/distributed.h"
#include "train/loss.h"
#include "train/trainer.h"

namespace rsam::train::detail {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// ---- setup.cpp: the model, its trainable set, the optimizer, the loader ----

// The model being trained and what updates it.
struct Trainee {
  Sam model{nullptr};
  std::optional<adapt::AdaptedSam> adapted;  // unless full
  NamedTensors params;                       // what the optimizer updates, with state-dict names
  std::vector<torch::Tensor> plist;          // the same tensors, in the same order
  std::optional<Sam> teacher;                // the frozen base, for consistency
  std::unique_ptr<torch::optim::Optimizer> opt;
};

// Builds `t` in place (the adapters hold on to the model).
void build_trainee(const TrainOptions& o, const nlohmann::json& cfg, Trainee& t);
// The training loader's options, except on_skip.
data::LoaderOptions loader_options(const TrainOptions& o);
// The learning rate of a step: linear warm-up, then cosine decay.
double lr_at(const TrainOptions& o, int64_t step, int64_t total);
void set_lr(torch::optim::Optimizer& opt, const std::string& optimizer, double lr);

// ---- encode.cpp --------------------------------------------------------------

// bf16 autocast on or off for the model's device type.
void set_autocast(bool on, bool cuda);

// ---- sample.cpp: loader items -> model samples -------------------------------

// One micro-batch laid out for the model: samples[k] decodes the encoding of
// imgs[image_of[k]]; clean holds the images uncorrupted (consistency only).
struct MicroBatch {
  std::vector<ModelSample> samples;
  std::vector<int64_t> image_of;
  std::vector<torch::Tensor> imgs, clean;
};
MicroBatch gather_samples(const Sam& model, const data::Dataset& ds, const data::Batch& batch, const TrainOptions& o,
                          const data::PromptSpec& prompt, int rank, int world, bool with_clean);

// ---- step.cpp: the loss per object, the step, its statistics ------------------

// One optimizer step's sums over its micro-batches (and, reduced, its ranks).
struct StepStats {
  double loss_sum = 0, focal = 0, dice = 0, iou_mse = 0, iou_rank = 0, aux_sum = 0, cons_sum = 0;
  int64_t n_items = 0, n_terms = 0;  // objects; loss terms (objects x rounds)
  double n_weight = 0;               // the terms' summed weights (occluded_weight)
  int64_t n_pieces = 0;              // objects whose mask is in several pieces
};

// Where the run stands: the step, and the metrics kept for the output folder.
struct History {
  int64_t step = 0, start_step = 0;
  std::vector<std::string> metric_lines;          // metrics.jsonl up to the checkpoint (resume)
  std::vector<std::pair<int64_t, double>> curve;  // (step, loss) for loss.png
  double last_loss = 0;
};

// Everything a step needs, fixed for the run.
struct Run {
  Run(const TrainOptions& o, Trainee& t, const data::Dataset& ds, data::Loader& loader, const data::PromptSpec& prompt)
      : o(o), t(t), ds(ds), loader(loader), prompt(prompt) {}
  const TrainOptions& o;
  Trainee& t;
  const data::Dataset& ds;
  data::Loader& loader;
  const data::PromptSpec& prompt;  // the loader's prompt spec, for the extra objects of an image
  ProcessGroup* group = nullptr;
  int rank = 0, world = 1;
  bool lead = true, quiet = false, bf16 = false;
  int64_t total = 0, per_step = 0;
  std::string ckpt_path, metrics_path, cfg_text;
  io::AppendFile* metrics = nullptr;  // rank 0's metrics.jsonl
};

// The optimizer steps from h.step to the total (or until the data ends).
void run_steps(const Run& run, History& h);
// With a group: the gradients of run.t.plist and the statistics summed over the ranks.
void reduce_step(const Run& run, StepStats& st);
// Rank 0 takes the output folder (open_out), before the rendezvous so that
// a refused run ends while the other ranks wait there; then the group
// torchrun's environment names (null: one process, or !o.distributed), and
// each process's share of the cores unless o.threads says.
std::unique_ptr<ProcessGroup> open_out_and_join(const TrainOptions& o, const nlohmann::json& cfg,
                                                std::optional<io::FolderLock>& lock);
// Rank 0 starts metrics.jsonl (with the lines a resumed run keeps) and config.json.
void start_metrics(const TrainOptions& o, const nlohmann::json& cfg, const History& h, const std::string& metrics_path,
                   std::optional<io::AppendFile>& metrics);
// With a group: every rank's trainable weights become rank 0's (whatever
// each loaded or resumed).
void broadcast_params(const Run& run);

// ---- checkpoint.cpp: save, load, resume ---------------------------------------

struct Checkpoint {
  int64_t step = 0;
  data::LoaderState loader;
};
// Every rank's generator state (rank 0's first); a collective with a group.
std::vector<torch::Tensor> rng_states(ProcessGroup* group);
void save_checkpoint(const std::string& path, const Checkpoint& c, const NamedTensors& params,
                     torch::optim::Optimizer& opt, const std::string& config, const std::vector<torch::Tensor>& rngs);
// Continues from run.ckpt_path when resuming and it exists: weights,
// optimizer, generator and loader restored, the metrics up to it kept.
void resume(const Run& run, History& h);
void check_finite(const NamedTensors& params, int64_t step);
void save_result(const std::function<void()>& checkpoint, const std::function<void()>& weights,
                 const std::string& weights_path);

// ---- output.cpp: the output folder --------------------------------------------

// Rank 0's hold on the output folder: checked, created, locked for the run,
// checked again under the lock, and emptied of the old run's files with overwrite.
void open_out(const TrainOptions& o, const nlohmann::json& cfg, std::optional<io::FolderLock>& lock);

// ---- trainer.cpp ----------------------------------------------------------------

// The options that decide the result, as config.json and the checkpoint record them.
nlohmann::json run_config(const TrainOptions& o);

}  // namespace rsam::train::detail
