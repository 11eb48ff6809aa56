#include "glesam/train.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <optional>

#include "data/dataset.h"
#include "data/loader.h"
#include "diffusion/lora.h"
#include "error.h"
#include "glesam/enhancer.h"
#include "io/fs.h"
#include "io/image_codec.h"
#include "log.h"
#include "model/autocast.h"
#include "model/checkpoint.h"
#include "model/runtime.h"
#include "train/loss.h"
#include "train/trainer_internal.h"
#include "viz/viz.h"

namespace rsam::glesam {

namespace fs = std::filesystem;
using nlohmann::json;
using torch::Tensor;
using train::detail::NamedTensors;

namespace {

std::string in_out(const train::TrainOptions& o, const char* name) { return (fs::path(o.out) / name).string(); }
const char* weights_name(const GlesamTrainOptions& g) {
  return g.stage == "unet" ? "lora.safetensors" : "decoder.safetensors";
}

void check(const GlesamTrainOptions& g) {
  const auto& o = g.base;
  if (g.stage != "unet" && g.stage != "decoder") throw Error("the GleSAM stage must be unet (1) or decoder (2)");
  if (g.enhancer.empty()) throw Error("GleSAM training needs --enhancer E.json (the SD folder, gamma, timestep)");
  if (o.checkpoint.empty()) throw Error("GleSAM training needs the SAM checkpoint its encoder is frozen from");
  if (o.full || o.train_decoder || o.consistency != 0 || o.masks_per_image != 1 || o.iterative_points != 0 ||
      o.rank_loss != 0 || !o.trainable.empty() || o.grad_checkpoint)
    throw Error("GleSAM training takes none of the adapter trainer's --full, --train-decoder, --consistency, "
                "--masks-per-image, --iterative-points, --rank-loss, --trainable, --grad-checkpoint");
  if (g.lora_rank < 1 || g.lora_rank > 1024) throw Error("the LoRA rank must be in 1..1024");
  if (!std::isfinite(g.lora_alpha) || g.lora_alpha <= 0) throw Error("the LoRA alpha must be finite and > 0");
  if (const char* w = std::getenv("WORLD_SIZE"); w != nullptr && std::atoi(w) > 1)
    throw Error("GleSAM training runs in one process (--nproc is for adapters)");
  train::check_options(o);
}

json run_config(const GlesamTrainOptions& g, const EnhancerConfig& e) {
  json cfg = train::detail::run_config(g.base);
  for (const char* k : {"adapter", "adapter_config", "train_decoder", "init", "grad_checkpoint"}) cfg.erase(k);
  cfg["glesam"] = {{"stage", g.stage}, {"enhancer", e.to_json()}};
  if (g.stage == "unet")
    cfg["glesam"].update({{"lora_rank", g.lora_rank}, {"lora_alpha", g.lora_alpha}});
  else
    cfg["glesam"]["decoder_iou"] = g.decoder_iou;
  return cfg;
}

// The tensors a stage trains, by name, with gradients on.
NamedTensors stage_params(const GlesamTrainOptions& g, Sam& sam, Enhancer& enh) {
  NamedTensors out;
  if (g.stage == "unet") {
    diffusion::add_lora(*enh.unet(), {g.lora_rank, g.lora_alpha, diffusion::glesam_lora_targets()}, g.base.seed);
    for (const auto& p : enh.unet()->named_parameters())
      if (p.key().find("lora_") != std::string::npos) out.emplace_back("unet." + p.key(), p.value());
  } else {
    for (const auto& p : sam->mask_decoder->named_parameters())
      if (g.decoder_iou || p.key().find("iou") == std::string::npos)
        out.emplace_back("mask_decoder." + p.key(), p.value());
  }
  for (auto& [k, t] : out) t.set_requires_grad(true);
  return out;
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const train::TrainOptions& o, const NamedTensors& params) {
  std::vector<Tensor> plist;
  for (const auto& [k, t] : params) plist.push_back(t);
  if (o.optimizer == "adamw")
    return std::make_unique<torch::optim::AdamW>(plist, torch::optim::AdamWOptions(o.lr).weight_decay(o.wd));
  return std::make_unique<torch::optim::Adam>(plist, torch::optim::AdamOptions(o.lr).weight_decay(o.wd));
}

// Everything one step reads.
struct Ctx {
  const GlesamTrainOptions& g;
  mutable Sam sam;  // forward passes are not const in torch's module API
  Enhancer& enh;
  bool bf16;
};

Tensor encode(const Ctx& c, const std::vector<Tensor>& imgs) {
  torch::NoGradGuard ng;
  Bf16Autocast ac(c.sam->device(), c.bf16);
  return c.sam->image_encoder->forward(torch::stack(imgs)).to(torch::kFloat32);
}

// Stage 1: MSE(x0, gamma z_H) over the batch.
Tensor unet_loss(const Ctx& c, const data::Batch& batch) {
  std::vector<Tensor> lq, hq;
  for (const auto& it : batch) {
    lq.push_back(train::model_input(c.sam, it.image));
    hq.push_back(train::model_input(c.sam, it.sample.image));
  }
  const Tensor z_low = encode(c, lq), z_high = encode(c, hq);
  const double gamma = c.enh.gamma();
  const Tensor x0 = c.enh.predict_x0(z_low * gamma, c.bf16);
  return torch::mse_loss(x0, z_high * gamma);
}

// Stage 2: focal + dice (1:1) of the single-mask output on the enhanced
// embedding, mean over the batch's objects.
Tensor decoder_loss(const Ctx& c, const data::Batch& batch) {
  std::vector<Tensor> lq;
  for (const auto& it : batch) lq.push_back(train::model_input(c.sam, it.image));
  const Tensor z = c.enh.enhance(encode(c, lq), c.bf16);
  const Tensor pe = c.sam->prompt_encoder->get_dense_pe();
  Tensor total = torch::zeros({}, z.options());
  for (size_t i = 0; i < batch.size(); ++i) {
    const auto s = train::to_model_sample(c.sam, batch[i].image, batch[i].sample.mask, batch[i].prompt, false);
    std::optional<std::pair<Tensor, Tensor>> pts;
    if (s.points.defined()) pts = std::make_pair(s.points, s.labels);
    std::optional<Tensor> box;
    if (s.box.defined()) box = s.box;
    Bf16Autocast ac(z.device(), c.bf16);
    auto [sparse, dense] = c.sam->prompt_encoder->forward(pts, box, std::nullopt);
    auto low = c.sam->mask_decoder->forward(z.narrow(0, int64_t(i), 1), pe, sparse, dense, false).first;
    const Tensor logits = low[0].to(torch::kFloat32), target = s.target.unsqueeze(0);
    total = total + train::sigmoid_focal_loss(logits, target).mean() + train::dice_loss(logits, target).mean();
  }
  return total / double(batch.size());
}

void plot_loss(const std::string& path, const std::vector<std::pair<int64_t, double>>& pts) {
  std::vector<std::pair<double, double>> xy;
  for (const auto& [step, loss] : pts) xy.emplace_back(double(step), loss);
  if (const auto img = viz::line_chart(xy, "loss vs step"); !img.empty()) io::write_image(path, img, false);
}

// The optimizer steps from h.step to run.total (or the data's end).
void run_steps(const Ctx& c, const train::detail::Run& run, train::detail::History& h, const NamedTensors& params) {
  const auto& o = c.g.base;
  auto& opt = *run.t.opt;
  std::vector<Tensor> plist;
  for (const auto& [k, t] : params) plist.push_back(t);
  while (h.step < run.total) {
    opt.zero_grad();
    double loss_sum = 0;
    int micro = 0;
    for (int a = 0; a < o.accum; ++a) {
      data::Batch batch;
      if (!run.loader.next(batch)) break;
      const Tensor loss = c.g.stage == "unet" ? unet_loss(c, batch) : decoder_loss(c, batch);
      (loss / double(o.accum)).backward();
      loss_sum += loss.item<double>();
      ++micro;
    }
    if (micro == 0) break;
    if (o.clip > 0) torch::nn::utils::clip_grad_norm_(plist, o.clip);
    const double lr = train::detail::lr_at(o, h.step, run.total);
    train::detail::set_lr(opt, o.optimizer, lr);
    opt.step();
    ++h.step;
    h.last_loss = loss_sum / micro;
    if (!std::isfinite(h.last_loss)) throw Error("training diverged: the loss is not finite at step " + std::to_string(h.step));
    const json line{{"step", h.step}, {"loss", h.last_loss}, {"lr", lr}, {"stage", c.g.stage}};
    run.metrics->write_line(line.dump());
    h.curve.emplace_back(h.step, h.last_loss);
    if (!run.quiet)
      log_progress("glesam " + c.g.stage + ": step " + std::to_string(h.step) + "/" + std::to_string(run.total) +
                   " loss " + std::to_string(h.last_loss));
    if (o.save_every > 0 && h.step % o.save_every == 0 && h.step < run.total) {
      train::detail::check_finite(params, h.step);
      train::detail::save_checkpoint(run.ckpt_path, {h.step, run.loader.state()}, params, opt, run.cfg_text,
                                     train::detail::rng_states(nullptr));
    }
  }
  if (!run.quiet) log_progress_end();
}

// The stage's weights and the enhancer that uses them.
void write_weights(const GlesamTrainOptions& g, Sam& sam, Enhancer& enh, EnhancerConfig e, const std::string& path) {
  if (g.stage == "unet") {
    diffusion::save_lora(*enh.unet(), path);
    e.lora = path;
  } else {
    io::save_safetensors(path, state_dict_of(*sam->mask_decoder));
    e.decoder = path;
  }
  const std::string json_path = in_out(g.base, "enhancer.json");
  io::write_text(json_path, e.to_json(g.base.out).dump(2) + "\n");
}

}  // namespace

GlesamTrainResult train_glesam(const GlesamTrainOptions& g) {
  check(g);
  const auto& o = g.base;
  const EnhancerConfig ecfg = EnhancerConfig::from_file(g.enhancer);
  if (g.stage == "unet" && !ecfg.lora.empty())
    throw Error(g.enhancer + ": stage 1 trains a fresh LoRA; give an enhancer without \"lora\"");
  const std::string weights = in_out(o, weights_name(g)), enh_out = in_out(o, "enhancer.json");
  io::check_outputs({{"the trained weights", weights}, {"the enhancer written", enh_out}},
                    {{"--enhancer", g.enhancer}, {"its LoRA", ecfg.lora}, {"its decoder", ecfg.decoder},
                     {"the checkpoint", o.checkpoint}});
  const json cfg = run_config(g, ecfg);
  std::optional<io::FolderLock> lock;
  train::detail::open_out(o, cfg, lock);
  set_threads(o.threads);
  torch::manual_seed(o.seed);

  train::detail::Trainee t;
  t.model = load_sam(o.checkpoint).model;
  t.model->eval();
  for (auto& p : t.model->parameters()) p.set_requires_grad(false);
  EnhancerOptions eo;
  eo.device = t.model->device();
  eo.channels = t.model->config.prompt_embed_dim;
  eo.read_decoder = g.stage == "decoder";
  Enhancer enh = Enhancer::load(ecfg, eo);
  enh.apply_decoder(t.model);  // stage 2 continues from a released decoder, if any
  t.params = stage_params(g, t.model, enh);
  for (const auto& [k, p] : t.params) t.plist.push_back(p);
  t.opt = make_optimizer(o, t.params);

  auto ds = data::open_dataset(o.data);
  const int64_t per_step = int64_t(o.batch) * o.accum;
  data::LoaderOptions lo = train::detail::loader_options(o);
  lo.on_skip = [&](const std::string& msg) {
    if (!o.quiet) log_warning("skipped: " + msg);
  };
  data::Loader loader(*ds, lo);
  train::detail::Run run(o, t, *ds, loader, lo.prompts[0]);
  run.quiet = o.quiet;
  run.bf16 = o.precision == Precision::BF16;
  run.total = o.steps > 0 ? o.steps : o.epochs * ((int64_t(ds->size()) + per_step - 1) / per_step);
  run.per_step = per_step;
  run.ckpt_path = in_out(o, "checkpoint.pt");
  run.metrics_path = in_out(o, "metrics.jsonl");
  run.cfg_text = cfg.dump();
  train::detail::History h;
  train::detail::resume(run, h);
  std::string kept;
  for (const auto& l : h.metric_lines) kept += l + "\n";
  io::write_atomic(run.metrics_path, kept.data(), kept.size());
  io::AppendFile metrics(run.metrics_path);
  run.metrics = &metrics;
  io::write_text(in_out(o, "config.json"), cfg.dump(2) + "\n");

  const Ctx ctx{g, t.model, enh, run.bf16};
  run_steps(ctx, run, h, t.params);

  train::detail::check_finite(t.params, h.step);
  const auto rngs = train::detail::rng_states(nullptr);
  train::detail::save_result(
      [&] { train::detail::save_checkpoint(run.ckpt_path, {h.step, loader.state()}, t.params, *t.opt, run.cfg_text, rngs); },
      [&] { write_weights(g, t.model, enh, ecfg, weights); }, weights);
  plot_loss(in_out(o, "loss.png"), h.curve);
  GlesamTrainResult r;
  r.steps = h.step;
  r.start_step = h.start_step;
  r.last_loss = h.last_loss;
  r.weights_path = weights;
  r.enhancer_path = enh_out;
  return r;
}

}  // namespace rsam::glesam
