// The optimizer steps: each object's loss with SAM's interactive rounds,
// the micro-batches a step accumulates, the sums the ranks reduce, and the
// line each step adds to metrics.jsonl and to the progress output.
#include <ATen/autocast_mode.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>

#include "error.h"
#include "log.h"
#include "train/trainer_internal.h"

namespace rsam::train::detail {

using torch::Tensor;

namespace {

// One micro-batch's loss terms: their weighted sum (with its graph), their
// summed weights and their count.
struct TermSum {
  Tensor total;
  double weight = 0;
  int64_t terms = 0;
};

void add_term(const LossParts& t, double w, TermSum& sum, StepStats& st) {  // w: the object's weight (x 1.0 is exact)
  const Tensor term = t.total * w;
  sum.total = sum.total.defined() ? sum.total + term : term;
  sum.weight += w;
  st.focal += t.focal;
  st.dice += t.dice;
  st.iou_mse += t.iou_mse;
  st.iou_rank += t.iou_rank;
  ++sum.terms;
}

// The loss of one object, on image `image` of the embeddings `emb`: the
// prompt's masks, then the interactive rounds (SAM, sec. A): the previous
// mask (no gradient through it) and a corrective click go back in; one mask
// out. Each decode takes its own slice of `emb`, so the gradients add up in
// the same order as they always have (outputs stay bit-identical).
void object_loss(const Run& run, const ModelSample& s, const Tensor& emb, int64_t image, const Tensor& pe, TermSum& sum,
                 StepStats& st) {
  Sam& model = run.t.model;
  LossOptions loss_opts;
  loss_opts.rank_weight = run.o.rank_loss;
  loss_opts.input_size = model->config.img_size;
  const Tensor iou_target = run.o.iou_target == "input" ? s.input_target : Tensor();
  const double w = s.pieces ? run.o.occluded_weight : 1.0;
  std::optional<std::pair<Tensor, Tensor>> pts;
  if (s.points.defined()) pts = std::make_pair(s.points, s.labels);
  std::optional<Tensor> box;
  if (s.box.defined()) box = s.box;
  auto [sparse, dense] = model->prompt_encoder->forward(pts, box, std::nullopt);
  auto [low, iou] = model->mask_decoder->forward(emb.narrow(0, image, 1), pe, sparse, dense, s.ambiguous);
  auto parts = sam_loss(low[0], iou[0], s.target, iou_target, loss_opts);
  add_term(parts, w, sum, st);
  Tensor prev = low[0][parts.best];
  Tensor points = s.points, labels = s.labels;
  for (int r = 0; r < run.o.iterative_points; ++r) {
    Click c;
    if (!corrective_click(prev, s.target, model->config.img_size, &c)) break;
    auto p = torch::tensor({c.x, c.y}).view({1, 1, 2}).to(emb.device());
    auto l = torch::full({1, 1}, c.label, torch::TensorOptions(torch::kInt32).device(emb.device()));
    points = points.defined() ? torch::cat({points, p}, 1) : p;
    labels = labels.defined() ? torch::cat({labels, l}, 1) : l;
    auto [sp, dn] = model->prompt_encoder->forward(std::make_pair(points, labels), box,
                                                   prev.detach().view({1, 1, prev.size(0), prev.size(1)}));
    auto [low_r, iou_r] = model->mask_decoder->forward(emb.narrow(0, image, 1), pe, sp, dn, false);
    add_term(sam_loss(low_r[0], iou_r[0], s.target, iou_target, loss_opts), w, sum, st);
    prev = low_r[0][0];
  }
}

// bf16 covers the encoder only; the decoder runs in fp32 as in the
// predictor (it is cheap, and torch 1.13's CPU LayerNorm rejects a bf16
// input with fp32 weights).
Tensor encode(const Run& run, const std::function<Tensor()>& pass) {
  if (!run.bf16) return pass();
  const bool cuda = run.t.model->device().is_cuda();
  set_autocast(true, cuda);
  Tensor e = pass();
  set_autocast(false, cuda);
  at::autocast::clear_cache();
  return e.to(torch::kFloat32);
}

// The loss terms of a micro-batch's objects; `cons` becomes the consistency
// term when there is a teacher.
TermSum micro_batch_terms(const Run& run, const MicroBatch& mb, Tensor& cons, StepStats& st) {
  TermSum sum;
  if (mb.samples.empty()) return sum;
  Sam& model = run.t.model;
  auto emb = encode(run, [&] { return encode_for_training(model, torch::stack(mb.imgs), run.o.grad_checkpoint); });
  if (run.t.teacher) {
    Tensor target;
    {
      torch::NoGradGuard ng;  // the target: no graph for the frozen pass
      target = encode(run, [&] { return (*run.t.teacher)->image_encoder->forward(torch::stack(mb.clean)); });
    }
    cons = torch::mse_loss(emb, target);
  }
  auto pe = model->prompt_encoder->get_dense_pe();
  for (size_t i = 0; i < mb.samples.size(); ++i) object_loss(run, mb.samples[i], emb, mb.image_of[i], pe, sum, st);
  return sum;
}

// One micro-batch into the step: its loss backpropagated, its sums added.
// False when the data ran out.
bool micro_batch(const Run& run, data::Batch& batch, StepStats& st) {
  const TrainOptions& o = run.o;
  if (!run.loader.next(batch)) return false;
  const MicroBatch mb =
      gather_samples(run.t.model, run.ds, batch, o, run.prompt, run.rank, run.world, run.t.teacher.has_value());
  Tensor cons;
  const TermSum sum = micro_batch_terms(run, mb, cons, st);
  auto aux = run.t.adapted && !mb.samples.empty() ? run.t.adapted->aux_loss() : torch::zeros({});
  // Every mask weighs the same (or occluded_weight): the weighted mean over
  // this micro-batch's masks (on all ranks), averaged over the accumulated
  // micro-batches.
  double all_weight = sum.weight;
  if (run.group) {
    std::vector<Tensor> c{torch::tensor({sum.weight}, torch::kFloat64)};
    run.group->all_reduce_sum(c);
    all_weight = c[0].item<double>();
  }
  if (sum.total.defined()) {
    auto loss = (sum.total / (std::max(1.0, all_weight) * o.accum)) + aux / double(o.accum * run.world);
    // A mean over this rank's images; the ranks' gradients are summed.
    if (cons.defined()) loss = loss + cons * (o.consistency / double(o.accum * run.world));
    loss.backward();
    st.loss_sum += sum.total.item<double>();
  }
  if (cons.defined()) st.cons_sum += cons.item<double>();
  st.aux_sum += aux.item<double>();
  st.n_items += int64_t(mb.samples.size());
  st.n_terms += sum.terms;
  st.n_weight += sum.weight;
  for (const auto& s : mb.samples) st.n_pieces += s.pieces;
  return true;
}

}  // namespace

// One sum over the ranks for the gradients (a rank with no object adds
// zeros), one for what the metrics report.
void reduce_step(const Run& run, StepStats& st) {
  if (!run.group) return;
  torch::NoGradGuard ng;
  std::vector<Tensor> grads;
  for (auto& p : run.t.plist) {
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    grads.push_back(p.grad());
  }
  run.group->all_reduce_sum(grads);
  const double world = run.world;
  std::vector<Tensor> m{
      torch::tensor({st.loss_sum, st.focal, st.dice, st.iou_mse, st.iou_rank, st.aux_sum / world, double(st.n_items),
                     double(st.n_terms), st.n_weight, double(st.n_pieces), st.cons_sum / world},
                    torch::kFloat64)};
  run.group->all_reduce_sum(m);
  auto v = m[0].accessor<double, 1>();
  st.loss_sum = v[0], st.focal = v[1], st.dice = v[2], st.iou_mse = v[3], st.iou_rank = v[4], st.aux_sum = v[5];
  st.n_items = int64_t(v[6]), st.n_terms = int64_t(v[7]), st.n_weight = v[8];
  st.n_pieces = int64_t(v[9]), st.cons_sum = v[10];
}

namespace {

std::string fmt_eta(double s) {
  char b[32];
  if (s >= 3600)
    std::snprintf(b, sizeof b, "%dh%02dm", int(s / 3600), int(std::fmod(s, 3600) / 60));
  else
    std::snprintf(b, sizeof b, "%dm%02ds", int(s / 60), int(std::fmod(s, 60)));
  return b;
}

// The progress output: on a terminal one line redrawn in place (a display,
// not a log line), else a log line every tenth step and at the end.
struct Progress {
  bool tty = isatty(2);
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  int64_t first = 0;  // the step the run (or its resumption) started at
};

// The finished step's metrics.jsonl line and progress line.
void report_step(const Run& run, const Progress& pr, int64_t step, double lr, const StepStats& st, double loss) {
  const TrainOptions& o = run.o;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - pr.start).count();
  const double ips = double((step - pr.first) * run.per_step) / std::max(secs, 1e-9);
  const double eta = double(run.total - step) * secs / double(std::max<int64_t>(1, step - pr.first));
  nlohmann::json j{{"step", step},
                   {"loss", loss},
                   {"focal", st.focal / st.n_terms},
                   {"dice", st.dice / st.n_terms},
                   {"iou_mse", st.iou_mse / st.n_terms},
                   {"iou_rank", st.iou_rank / st.n_terms},
                   {"aux", st.aux_sum / o.accum},
                   {"lr", lr},
                   {"img_per_s", ips},
                   {"masks", st.n_items},
                   {"masks_in_pieces", st.n_pieces},
                   {"skipped", run.loader.skipped()}};
  if (run.t.teacher) j["consistency"] = st.cons_sum / o.accum;  // the embeddings' mean squared difference
  if (run.lead) run.metrics->write_line(j.dump());
  if (run.quiet) return;
  char line[200];
  std::snprintf(line, sizeof line, "step %lld/%lld  loss %.4f  %.2f img/s  ETA %s", (long long)step,
                (long long)run.total, loss, ips, fmt_eta(eta).c_str());
  if (pr.tty)
    log_progress(line);
  else if (step % 10 == 0 || step == run.total)
    log_info(line);
}

}  // namespace

void run_steps(const Run& run, History& h) {
  const TrainOptions& o = run.o;
  Trainee& t = run.t;
  Progress pr;
  pr.first = h.step;
  data::Batch batch;
  bool exhausted = false;
  while (h.step < run.total && !exhausted) {
    const double lr = lr_at(o, h.step, run.total);
    set_lr(*t.opt, o.optimizer, lr);
    t.opt->zero_grad();
    StepStats st;
    for (int a = 0; a < o.accum && !exhausted; ++a) exhausted = !micro_batch(run, batch, st);
    reduce_step(run, st);
    if (st.n_items == 0) break;
    if (!std::isfinite(st.loss_sum))
      throw Error("loss became NaN/Inf at step " + std::to_string(h.step) + "; lower the learning rate");
    if (o.clip > 0) torch::nn::utils::clip_grad_norm_(t.plist, o.clip);
    t.opt->step();
    ++h.step;
    h.last_loss = st.loss_sum / st.n_weight;  // the weighted mean the step minimised
    report_step(run, pr, h.step, lr, st, h.last_loss);
    h.curve.emplace_back(h.step, h.last_loss);
    if (o.save_every > 0 && h.step % o.save_every == 0 && h.step < run.total) {
      const auto rngs = rng_states(run.group);  // a collective: every rank
      if (run.lead) {
        check_finite(t.params, h.step);
        save_checkpoint(run.ckpt_path, {h.step, run.loader.state()}, t.params, *t.opt, run.cfg_text, rngs);
      }
    }
  }
  if (!run.quiet && pr.tty) log_progress_end();
}

}  // namespace rsam::train::detail
