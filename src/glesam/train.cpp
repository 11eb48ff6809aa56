#include "glesam/train.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <optional>

#include "data/dataset.h"
#include "data/loader.h"
#include "diffusion/lora.h"
#include "error.h"
#include "diffusion/schedule.h"
#include "glesam/embedding_cache.h"
#include "glesam/enhancer.h"
#include "glesam/prior.h"
#include "io/npy.h"
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
  if (g.stage == "prior") return "unet/diffusion_pytorch_model.safetensors";
  return g.stage == "unet" ? "lora.safetensors" : "decoder.safetensors";
}
// Scenes whose clean embeddings set the prior's latent scale.
constexpr size_t kScaleImages = 16;

void check(const GlesamTrainOptions& g) {
  const auto& o = g.base;
  if (g.stage != "unet" && g.stage != "decoder" && g.stage != "prior")
    throw Error("the GleSAM stage must be prior, unet (1) or decoder (2)");
  if (g.stage == "prior") {
    if (g.prior_init.empty())
      throw Error("the GleSAM prior needs its template folder (unet/config.json, scheduler/, text_embedding.npy)");
    if (!g.enhancer.empty()) throw Error("the GleSAM prior makes the SD folder an enhancer names; give no enhancer");
    if (g.prior_crop < 0 || g.prior_crop == 1 || g.prior_crop > 4096)
      throw Error("the prior's latent crop must be 0 (whole) or 2..4096");
  } else {
    if (g.enhancer.empty()) throw Error("GleSAM training needs --enhancer E.json (the SD folder, gamma, timestep)");
    if (!g.prior_init.empty() || g.prior_crop != 0)
      throw Error("a prior template and crop are for the prior stage only");
  }
  if (o.checkpoint.empty()) throw Error("GleSAM training needs the SAM checkpoint its encoder is frozen from");
  if (o.full || o.train_decoder || o.consistency != 0 || o.masks_per_image != 1 || o.iterative_points != 0 ||
      o.rank_loss != 0 || !o.trainable.empty())
    throw Error("GleSAM training takes none of the adapter trainer's --full, --train-decoder, --consistency, "
                "--masks-per-image, --iterative-points, --rank-loss, --trainable");
  if (o.grad_checkpoint && g.stage == "decoder")
    throw Error("gradient checkpointing recomputes the U-Net, which GleSAM's decoder stage does not train");
  if (g.lora_rank < 1 || g.lora_rank > 1024) throw Error("the LoRA rank must be in 1..1024");
  if (!std::isfinite(g.lora_alpha) || g.lora_alpha <= 0) throw Error("the LoRA alpha must be finite and > 0");
  train::check_options(o);
}

// The options checked, the enhancer read, and no output onto an input.
EnhancerConfig checked_config(const GlesamTrainOptions& g) {
  check(g);
  const auto& o = g.base;
  EnhancerConfig ecfg = g.stage == "prior" ? EnhancerConfig{} : EnhancerConfig::from_file(g.enhancer);
  if (g.stage == "unet" && !ecfg.lora.empty())
    throw Error(g.enhancer + ": stage 1 trains a fresh LoRA; give an enhancer without \"lora\"");
  if (g.stage == "unet" && !ecfg.in_out.empty())
    throw Error(g.enhancer + ": stage 1 trains fresh in/out convolutions; give an enhancer without \"in_out\"");
  io::check_outputs({{"the trained weights", in_out(o, weights_name(g))},
                     {"the enhancer written", in_out(o, "enhancer.json")}},
                    {{"--enhancer", g.enhancer}, {"its LoRA", ecfg.lora}, {"its decoder", ecfg.decoder},
                     {"its in/out convolutions", ecfg.in_out}, {"the checkpoint", o.checkpoint}});
  return ecfg;
}

json run_config(const GlesamTrainOptions& g, const EnhancerConfig& e) {
  json cfg = train::detail::run_config(g.base);
  for (const char* k : {"adapter", "adapter_config", "train_decoder", "init"}) cfg.erase(k);
  if (!g.base.grad_checkpoint) cfg.erase("grad_checkpoint");  // as the runs from before the option
  cfg["glesam"] = {{"stage", g.stage}};
  if (g.stage == "prior")
    cfg["glesam"].update({{"prior_init", g.prior_init}, {"prior_crop", g.prior_crop}});
  else
    cfg["glesam"]["enhancer"] = e.to_json();
  if (g.stage == "unet")
    cfg["glesam"].update({{"lora_rank", g.lora_rank}, {"lora_alpha", g.lora_alpha}});
  else
    cfg["glesam"]["decoder_iou"] = g.decoder_iou;
  return cfg;
}

// The tensors a stage trains, by name, with gradients on.
NamedTensors stage_params(const GlesamTrainOptions& g, Sam& sam, Enhancer& enh) {
  NamedTensors out;
  if (g.stage == "prior") {
    for (const auto& p : enh.unet()->named_parameters()) out.emplace_back("unet." + p.key(), p.value());
  } else if (g.stage == "unet") {
    diffusion::add_lora(*enh.unet(), {g.lora_rank, g.lora_alpha, diffusion::glesam_lora_targets()}, g.base.seed);
    // Without CRE the fresh in/out convolutions are trained too (the ablation).
    const bool convs = !enh.config().cre;
    for (const auto& p : enh.unet()->named_parameters()) {
      const std::string& k = p.key();
      const bool conv = convs && (k.rfind("conv_in.", 0) == 0 || k.rfind("conv_out.", 0) == 0);
      if (conv || k.find("lora_") != std::string::npos) out.emplace_back("unet." + k, p.value());
    }
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
  EmbeddingCache& cache;
  double latent_scale = 1;  // prior
};

Tensor encode(const Ctx& c, const std::vector<Tensor>& imgs) {
  torch::NoGradGuard ng;
  Bf16Autocast ac(c.sam->device(), c.bf16);
  return c.sam->image_encoder->forward(torch::stack(imgs)).to(torch::kFloat32);
}

// The frozen encoder's embeddings of the batch's clean images, through the cache.
Tensor encode_clean(const Ctx& c, const data::Batch& batch) {
  std::vector<cv::Mat> hq;
  for (const auto& it : batch) hq.push_back(it.sample.image);
  return c.cache.encode(hq, [&](const std::vector<Tensor>& imgs) { return encode(c, imgs); });
}

// This rank's items of a batch that every rank reads whole (so that skips
// agree), shared out as the adapter trainer does: together the ranks train
// on exactly one process's batch.
std::vector<size_t> share_of(size_t n, int rank, int world) {
  std::vector<size_t> mine;
  for (size_t b = 0; b < n; ++b)
    if (int(b % size_t(world)) == rank) mine.push_back(b);
  return mine;
}

// A mean over `mine` as its part of the mean over the n items of the batch.
Tensor part_of_mean(const Tensor& loss, size_t mine, size_t n) {
  return mine == n ? loss : loss * (double(mine) / double(n));
}

// Stage 1: MSE(x0, gamma z_H) over the batch.
Tensor unet_loss(const Ctx& c, const data::Batch& batch) {
  std::vector<Tensor> lq;
  for (const auto& it : batch) lq.push_back(train::model_input(c.sam, it.image));
  const Tensor z_low = encode(c, lq), z_high = encode_clean(c, batch);
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

// The prior: the DDPM loss on the clean latents (random crops if asked),
// t ~ U[0, T), noise and crops from torch's generator (checkpointed). Every
// rank draws them for the whole batch and keeps its share's, so the ranks
// draw what one process would.
Tensor prior_step_loss(const Ctx& c, const data::Batch& batch, int rank, int world) {
  const int64_t n = int64_t(batch.size()), e = c.sam->config.embedding_size();
  const int64_t side = c.g.prior_crop > 0 && c.g.prior_crop < e ? c.g.prior_crop : e;
  std::vector<std::pair<int64_t, int64_t>> at;
  for (int64_t i = 0; side < e && i < n; ++i) {
    const int64_t y = torch::randint(e - side + 1, {1}).item<int64_t>();
    at.emplace_back(y, torch::randint(e - side + 1, {1}).item<int64_t>());
  }
  const int64_t T = c.enh.alphas_cumprod().numel();
  const Tensor t_all = torch::randint(T, {n}, torch::TensorOptions().dtype(torch::kLong));
  const Tensor noise_all = torch::randn({n, 4, side, side}, torch::TensorOptions().device(c.sam->device()));
  const auto mine = share_of(batch.size(), rank, world);
  if (mine.empty()) return torch::zeros({});
  data::Batch items;
  for (size_t b : mine) items.push_back(batch[b]);
  Tensor x0 = latents_from_embedding(encode_clean(c, items), c.latent_scale);
  if (side < e) {
    std::vector<Tensor> crops;
    for (size_t k = 0; k < mine.size(); ++k)
      crops.push_back(x0[int64_t(k)].narrow(1, at[mine[k]].first, side).narrow(2, at[mine[k]].second, side));
    x0 = torch::stack(crops);
  }
  const Tensor sel = torch::tensor(std::vector<int64_t>(mine.begin(), mine.end()), torch::kLong);
  const Tensor t = t_all.index_select(0, sel).to(x0.device()), noise = noise_all.index_select(0, sel.to(x0.device()));
  const Tensor loss = prior_loss(c.enh.unet(), c.enh.alphas_cumprod(), c.enh.text_embedding(), x0, t, noise, c.bf16);
  return part_of_mean(loss, mine.size(), batch.size());
}

// The prior's latent scale: the root mean square of the unscaled latents of
// up to kScaleImages scenes spread over the data set.
double latent_scale(const Ctx& c, const data::Dataset& ds) {
  const size_t n = std::min(kScaleImages, ds.size());
  double sum = 0;
  int64_t count = 0;
  for (size_t k = 0; k < n; ++k) {
    data::Item it;
    it.sample = ds.get(k * ds.size() / n);
    const Tensor l = latents_from_embedding(encode_clean(c, {it}));
    sum += l.pow(2).sum().item<double>();
    count += l.numel();
  }
  const double s = std::sqrt(sum / double(std::max<int64_t>(count, 1)));
  if (!std::isfinite(s) || s <= 0) throw Error("the prior's latents are all zero or not finite");
  return s;
}

// This rank's part of the micro-batch's mean loss (zero without items).
Tensor step_loss(const Ctx& c, const data::Batch& batch, int rank, int world) {
  if (c.g.stage == "prior") return prior_step_loss(c, batch, rank, world);
  const auto mine = share_of(batch.size(), rank, world);
  if (mine.empty()) return torch::zeros({});
  data::Batch items;
  for (size_t b : mine) items.push_back(batch[b]);
  const Tensor loss = c.g.stage == "unet" ? unet_loss(c, items) : decoder_loss(c, items);
  return part_of_mean(loss, mine.size(), batch.size());
}

void plot_loss(const std::string& path, const std::vector<std::pair<int64_t, double>>& pts) {
  std::vector<std::pair<double, double>> xy;
  for (const auto& [step, loss] : pts) xy.emplace_back(double(step), loss);
  if (const auto img = viz::line_chart(xy, "loss vs step"); !img.empty()) io::write_image(path, img, false);
}

// The optimizer steps from h.step to run.total (or the data's end). With
// ranks, the gradients and losses are summed over them (reduce_step).
void run_steps(const Ctx& c, const train::detail::Run& run, train::detail::History& h, const NamedTensors& params) {
  const auto& o = c.g.base;
  auto& opt = *run.t.opt;
  while (h.step < run.total) {
    opt.zero_grad();
    train::detail::StepStats st;
    int micro = 0;  // the same on every rank: they all read every batch
    for (int a = 0; a < o.accum; ++a) {
      data::Batch batch;
      if (!run.loader.next(batch)) break;
      const Tensor loss = step_loss(c, batch, run.rank, run.world);
      if (loss.requires_grad()) (loss / double(o.accum)).backward();
      st.loss_sum += loss.item<double>();
      ++micro;
    }
    train::detail::reduce_step(run, st);
    const double loss_sum = st.loss_sum;
    if (micro == 0) break;
    if (o.clip > 0) torch::nn::utils::clip_grad_norm_(run.t.plist, o.clip);
    const double lr = train::detail::lr_at(o, h.step, run.total);
    train::detail::set_lr(opt, o.optimizer, lr);
    opt.step();
    ++h.step;
    h.last_loss = loss_sum / micro;
    if (!std::isfinite(h.last_loss)) throw Error("training diverged: the loss is not finite at step " + std::to_string(h.step));
    const json line{{"step", h.step}, {"loss", h.last_loss}, {"lr", lr}, {"stage", c.g.stage}};
    if (run.lead) run.metrics->write_line(line.dump());
    h.curve.emplace_back(h.step, h.last_loss);
    if (!run.quiet)
      log_progress("glesam " + c.g.stage + ": step " + std::to_string(h.step) + "/" + std::to_string(run.total) +
                   " loss " + std::to_string(h.last_loss));
    if (o.save_every > 0 && h.step % o.save_every == 0 && h.step < run.total) {
      const auto rngs = train::detail::rng_states(run.group);  // a collective: every rank
      if (run.lead) {
        train::detail::check_finite(params, h.step);
        train::detail::save_checkpoint(run.ckpt_path, {h.step, run.loader.state()}, params, opt, run.cfg_text, rngs);
      }
    }
  }
  if (!run.quiet) log_progress_end();
}

// The stage's weights and the enhancer that uses them.
void write_weights(const GlesamTrainOptions& g, Sam& sam, Enhancer& enh, EnhancerConfig e, const std::string& path) {
  if (g.stage == "prior") {
    write_sd_folder(g.base.out, enh.unet(), read_prior_template(g.prior_init));
    e = EnhancerConfig{};
    e.sd = g.base.out;
    e.text_embedding = in_out(g.base, "text_embedding.npy");
  } else if (g.stage == "unet") {
    diffusion::save_lora(*enh.unet(), path);
    e.lora = path;
    if (!e.cre) {
      e.in_out = in_out(g.base, "in_out.safetensors");
      io::save_safetensors(e.in_out, in_out_tensors(enh.unet()), {{"format", "pt"}});
    }
  } else {
    io::save_safetensors(path, state_dict_of(*sam->mask_decoder));
    e.decoder = path;
  }
  const std::string json_path = in_out(g.base, "enhancer.json");
  io::write_text(json_path, e.to_json(g.base.out).dump(2) + "\n");
}


// The prior's starting point: the template's U-Net from random weights,
// its schedule and text embedding (gamma and timestep unused).
Enhancer prior_start(const GlesamTrainOptions& g, const torch::Device& device) {
  const PriorTemplate tpl = read_prior_template(g.prior_init);
  const auto ucfg = diffusion::UNetConfig::from_json(tpl.unet_config_text, tpl.folder);
  if (ucfg.in_channels != 4 || ucfg.out_channels != 4)
    throw Error(tpl.folder + ": the prior's U-Net must have 4 input and output channels (CRE widens it)");
  diffusion::UNet2DConditionModel unet(ucfg);
  init_unet(unet);
  unet->to(device);
  const auto sched = diffusion::SchedulerConfig::from_json(tpl.scheduler_text, tpl.folder);
  auto arr = io::load_npy(tpl.text_embedding_path);
  Tensor text = torch::from_blob(arr.data.data(), arr.shape, torch::kFloat32).clone();
  if (text.dim() == 2) text = text.unsqueeze(0);
  return Enhancer(unet, diffusion::alphas_cumprod(sched).to(device), text.to(device), 5, 1);
}

// The enhancer a stage trains on: the prior's fresh U-Net, or the JSON's.
Enhancer stage_enhancer(const GlesamTrainOptions& g, const EnhancerConfig& ecfg, const Sam& sam) {
  if (g.stage == "prior") return prior_start(g, sam->device());
  EnhancerOptions eo;
  eo.device = sam->device();
  eo.channels = sam->config.prompt_embed_dim;
  eo.read_decoder = g.stage == "decoder";
  eo.fresh_in_out = g.stage == "unet";
  return Enhancer::load(ecfg, eo);
}

// The prior's latent scale, rank 0's on every rank; rank 0 writes latents.json.
double lead_latent_scale(const Ctx& c, const train::detail::Run& run, const data::Dataset& ds) {
  double s = latent_scale(c, ds);
  if (run.group) {
    std::vector<Tensor> v{torch::tensor({s}, torch::kFloat64)};
    run.group->broadcast(v);
    s = v[0].item<double>();
  }
  if (run.lead) {
    const json lat{{"latent", "channel j = mean of the embedding channels c with c mod 4 == j, divided by scale"},
                   {"scale", s}, {"scale_images", std::min(kScaleImages, ds.size())}};
    io::write_text(in_out(run.o, "latents.json"), lat.dump(2) + "\n");
  }
  return s;
}

}  // namespace

void check_train_options(const GlesamTrainOptions& g) { checked_config(g); }

GlesamTrainResult train_glesam(const GlesamTrainOptions& g) {
  const EnhancerConfig ecfg = checked_config(g);
  const auto& o = g.base;
  const std::string weights = in_out(o, weights_name(g)), enh_out = in_out(o, "enhancer.json");
  const json cfg = run_config(g, ecfg);
  // Data-parallel ranks as the adapter trainer's: each takes its share of
  // every batch, the gradients are summed, rank 0 alone writes.
  std::optional<io::FolderLock> lock;
  const auto group = train::detail::open_out_and_join(o, cfg, lock);
  torch::manual_seed(o.seed);  // the same on every rank (prior_step_loss)

  train::detail::Trainee t;
  t.model = load_sam(o.checkpoint).model;
  t.model->eval();
  for (auto& p : t.model->parameters()) p.set_requires_grad(false);
  Enhancer enh = stage_enhancer(g, ecfg, t.model);
  if (o.grad_checkpoint) enh.unet()->gradient_checkpointing = train::grad_checkpoint;
  enh.apply_decoder(t.model);  // stage 2 continues from a released decoder, if any
  t.params = stage_params(g, t.model, enh);
  for (const auto& [k, p] : t.params) t.plist.push_back(p);
  t.opt = make_optimizer(o, t.params);
  EmbeddingCache cache(g.embedding_cache, t.model, o.precision == Precision::BF16);

  auto ds = data::open_dataset(o.data);
  const int64_t per_step = int64_t(o.batch) * o.accum;
  data::LoaderOptions lo = train::detail::loader_options(o);
  const bool lead = !group || group->rank() == 0;
  lo.on_skip = [&](const std::string& msg) {
    if (!o.quiet && lead) log_warning("skipped: " + msg);
  };
  data::Loader loader(*ds, lo);
  train::detail::Run run(o, t, *ds, loader, lo.prompts[0]);
  run.group = group.get();
  run.rank = group ? group->rank() : 0, run.world = group ? group->size() : 1;
  run.lead = lead, run.quiet = o.quiet || !lead;
  run.bf16 = o.precision == Precision::BF16;
  run.total = o.steps > 0 ? o.steps : o.epochs * ((int64_t(ds->size()) + per_step - 1) / per_step);
  run.per_step = per_step;
  run.ckpt_path = in_out(o, "checkpoint.pt");
  run.metrics_path = in_out(o, "metrics.jsonl");
  run.cfg_text = cfg.dump();
  train::detail::History h;
  train::detail::resume(run, h);
  std::optional<io::AppendFile> metrics;
  if (lead) train::detail::start_metrics(o, cfg, h, run.metrics_path, metrics);
  run.metrics = metrics ? &*metrics : nullptr;

  Ctx ctx{g, t.model, enh, run.bf16, cache};
  if (g.stage == "prior") ctx.latent_scale = lead_latent_scale(ctx, run, *ds);
  train::detail::broadcast_params(run);
  run_steps(ctx, run, h, t.params);
  if (cache.enabled() && !run.quiet)
    log_info("embedding cache " + g.embedding_cache + ": " + std::to_string(cache.hits()) + " read, " +
             std::to_string(cache.misses()) + " computed");

  GlesamTrainResult r;
  r.steps = h.step;
  r.start_step = h.start_step;
  r.last_loss = h.last_loss;
  r.weights_path = weights;
  r.enhancer_path = enh_out;
  const auto rngs = train::detail::rng_states(run.group);  // a collective: every rank
  r.wrote_outputs = lead;
  if (!lead) return r;
  train::detail::check_finite(t.params, h.step);
  train::detail::save_result(
      [&] {
        train::detail::save_checkpoint(run.ckpt_path, {h.step, loader.state()}, t.params, *t.opt, run.cfg_text, rngs);
      },
      [&] { write_weights(g, t.model, enh, ecfg, weights); }, weights);
  plot_loss(in_out(o, "loss.png"), h.curve);
  return r;
}

}  // namespace rsam::glesam
