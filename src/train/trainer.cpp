#include "train/trainer.h"

#include <ATen/autocast_mode.h>
#include <sys/stat.h>
#include <unistd.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <sstream>

#include "adapt/adapter.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/metrics.h"
#include "degrade/rng.h"
#include "error.h"
#include "io/fs.h"
#include "model/checkpoint.h"
#include "model/image.h"
#include "model/predictor.h"
#include "model/runtime.h"
#include "train/cv_tensor.h"
#include "train/distributed.h"
#include "train/loss.h"

namespace rsam::train {

using torch::Tensor;
namespace fs = std::filesystem;

namespace {

// Up to n other samples on the same image as `it`, drawn without
// replacement by a generator of (seed, the item's global position): the same
// on a resumed run.
std::vector<size_t> more_masks(const data::Dataset& ds, const data::Item& it, int n, uint64_t seed) {
  if (n <= 0) return {};
  std::vector<size_t> others;
  for (size_t j : ds.same_image(it.dataset_index))
    if (j != it.dataset_index) others.push_back(j);
  degrade::Rng rng(degrade::derive_seed(seed ^ 0x5a5a5a5aULL, it.index));
  const size_t take = std::min(others.size(), size_t(n));
  for (size_t k = 0; k < take; ++k)
    std::swap(others[k], others[k + size_t(rng.uniform_int(0, int(others.size() - k) - 1))]);
  others.resize(take);
  return others;
}

// Random weights of an architecture, for pre-training: torch's default
// initialisers as in the official modules, except the absolute position
// embedding. The official code starts it at zero because it always loads MAE
// weights next; from scratch a small random start (ViT's 0.02) tells positions apart.
Sam init_sam(const std::string& spec, uint64_t seed) {
  SamConfig cfg;
  if (spec == "vit_b" || spec == "vit_l" || spec == "vit_h") {
    cfg = spec == "vit_b" ? SamConfig::vit_b() : spec == "vit_l" ? SamConfig::vit_l() : SamConfig::vit_h();
  } else {
    const auto bytes = io::read_file(spec);
    cfg = SamConfig::from_json(std::string(bytes.begin(), bytes.end()));
  }
  cfg.validate();
  torch::manual_seed(seed);
  Sam m(cfg);
  torch::NoGradGuard ng;
  m->image_encoder->pos_embed.normal_(0.0, 0.02);
  return m;
}

// ---- gradient checkpointing ------------------------------------------------

void set_autocast(bool on, bool cuda) {
  if (cuda) {
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    at::autocast::set_enabled(on);
  } else {
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    at::autocast::set_cpu_enabled(on);
  }
}

// Runs one encoder block without keeping its activations; the backward pass
// recomputes it with the same RNG state (GaRA's Gumbel noise, dropout) and
// the same autocast setting, then backpropagates through the recomputation.
struct BlockCheckpoint : torch::autograd::Function<BlockCheckpoint> {
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& x, const Tensor& anchor,
                        int64_t block_address) {
    auto gen = at::detail::getDefaultCPUGenerator();
    {
      std::lock_guard<std::mutex> lock(gen.mutex());
      ctx->saved_data["rng"] = gen.get_state();
    }
    ctx->saved_data["block"] = block_address;  // the module outlives the graph
    ctx->saved_data["autocast"] = x.is_cuda() ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
    ctx->save_for_backward({x});
    auto* block = reinterpret_cast<EncoderBlockImpl*>(block_address);
    return block->forward(x);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    auto* block = reinterpret_cast<EncoderBlockImpl*>(ctx->saved_data["block"].toInt());
    auto gen = at::detail::getDefaultCPUGenerator();
    Tensor now;
    {
      std::lock_guard<std::mutex> lock(gen.mutex());
      now = gen.get_state();
      gen.set_state(ctx->saved_data["rng"].toTensor());
    }
    const bool ac = ctx->saved_data["autocast"].toBool();
    const bool cuda = x.is_cuda();
    const bool prev = cuda ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
    Tensor y;
    {
      torch::AutoGradMode grad(true);
      set_autocast(ac, cuda);
      y = block->forward(x);
      set_autocast(prev, cuda);
    }
    {
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(now);
    }
    torch::autograd::backward({y}, {grads[0]});
    return {x.grad(), Tensor(), Tensor()};
  }
};

// ---- helpers ----------------------------------------------------------------

// "points:3,box" -> one kind drawn per sample.
std::string as_mix(const std::string& prompts) {
  if (prompts.find(',') == std::string::npos || prompts.rfind("mix:", 0) == 0) return prompts;
  std::string s = "mix:";
  for (char c : prompts) s += c == ',' ? '|' : c;
  return s;
}

double lr_at(const TrainOptions& o, int64_t step, int64_t total) {
  if (o.warmup > 0 && step < o.warmup) return o.lr * double(step + 1) / double(o.warmup);
  const double t = total > o.warmup ? double(step - o.warmup) / double(total - o.warmup) : 1.0;
  const double lo = o.lr * o.min_lr_ratio;
  return lo + (o.lr - lo) * 0.5 * (1.0 + std::cos(M_PI * std::min(1.0, t)));
}

std::string fmt_eta(double s) {
  char b[32];
  if (s >= 3600)
    std::snprintf(b, sizeof b, "%dh%02dm", int(s / 3600), int(std::fmod(s, 3600) / 60));
  else
    std::snprintf(b, sizeof b, "%dm%02ds", int(s / 60), int(std::fmod(s, 60)));
  return b;
}

void plot_loss(const std::string& path, const std::vector<std::pair<int64_t, double>>& pts) {
  if (pts.size() < 2) return;
  const int W = 640, H = 360, m = 40;
  cv::Mat img(H, W, CV_8UC3, cv::Scalar(255, 255, 255));
  double lo = 1e300, hi = -1e300;
  for (auto& [s, l] : pts) lo = std::min(lo, l), hi = std::max(hi, l);
  if (hi <= lo) hi = lo + 1;
  const double s0 = double(pts.front().first), s1 = std::max(s0 + 1, double(pts.back().first));
  auto P = [&](int64_t s, double l) {
    return cv::Point(int(m + (W - 2 * m) * (s - s0) / (s1 - s0)), int(H - m - (H - 2 * m) * (l - lo) / (hi - lo)));
  };
  cv::rectangle(img, cv::Point(m, m), cv::Point(W - m, H - m), cv::Scalar(200, 200, 200));
  for (size_t i = 1; i < pts.size(); ++i)
    cv::line(img, P(pts[i - 1].first, pts[i - 1].second), P(pts[i].first, pts[i].second), cv::Scalar(200, 90, 30), 1,
             cv::LINE_AA);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.4g", hi);
  cv::putText(img, buf, cv::Point(2, m + 4), cv::FONT_HERSHEY_PLAIN, 0.9, cv::Scalar(0, 0, 0));
  std::snprintf(buf, sizeof buf, "%.4g", lo);
  cv::putText(img, buf, cv::Point(2, H - m), cv::FONT_HERSHEY_PLAIN, 0.9, cv::Scalar(0, 0, 0));
  cv::putText(img, "loss vs step", cv::Point(W / 2 - 50, 20), cv::FONT_HERSHEY_PLAIN, 1.1, cv::Scalar(0, 0, 0));
  std::vector<uint8_t> png;
  cv::imencode(".png", img, png);
  io::write_atomic(path, png.data(), png.size());
}

struct Checkpoint {
  int64_t step = 0;
  data::LoaderState loader;
};

Tensor rng_state() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

// Every rank's generator state (rank 0's first): each rank draws its own
// corrective clicks and Gumbel noise, so a resumed rank needs its own.
std::vector<Tensor> rng_states(ProcessGroup* group) {
  const Tensor mine = rng_state();
  if (!group) return {mine};
  auto all = torch::zeros({group->size(), mine.numel()}, torch::kFloat64);
  all[group->rank()].copy_(mine.to(torch::kFloat64));
  std::vector<Tensor> v{all};
  group->all_reduce_sum(v);
  std::vector<Tensor> out;
  for (int r = 0; r < group->size(); ++r) out.push_back(all[r].to(torch::kUInt8).contiguous());
  return out;
}

// `rngs`: rng_states(), saved as "rng" (rank 0, as a single process) and "rng_rank<r>".
void save_checkpoint(const std::string& path, const Checkpoint& c,
                     const std::vector<std::pair<std::string, Tensor>>& params, torch::optim::Optimizer& opt,
                     const std::string& config, const std::vector<Tensor>& rngs) {
  torch::serialize::OutputArchive ar;
  ar.write("step", torch::tensor(c.step));
  ar.write("loader", torch::tensor({int64_t(c.loader.epoch), int64_t(c.loader.position), int64_t(c.loader.step)}));
  ar.write("config", c10::IValue(config));
  ar.write("rng", rngs.at(0));
  for (size_t r = 1; r < rngs.size(); ++r) ar.write("rng_rank" + std::to_string(r), rngs[r]);
  for (const auto& [k, t] : params) ar.write("param/" + k, t.detach(), /*is_buffer=*/true);
  torch::serialize::OutputArchive opt_ar;
  opt.save(opt_ar);
  ar.write("optimizer", opt_ar);
  // A failed write is recorded, not reported to torch: its zip writer then
  // throws from a destructor, which would end the process with a backtrace.
  int failed = 0;
  io::write_atomic_with(path, [&](std::FILE* f) {
    ar.save_to([&](const void* data, size_t n) -> size_t {
      if (failed == 0 && std::fwrite(data, 1, n, f) != n) failed = errno != 0 ? errno : EIO;
      return n;
    });
    if (failed != 0) throw Error("cannot write " + path + ": " + std::strerror(failed));
  });
}

// Restores this rank's generator; a checkpoint from a run with fewer ranks
// has no state for it and gives it rank 0's (the resume is then valid but
// not bit-identical to an uninterrupted run).
Checkpoint load_checkpoint(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& params,
                           torch::optim::Optimizer& opt, const std::string& config, int rank) {
  torch::serialize::InputArchive ar;
  try {
    ar.load_from(path);
  } catch (const c10::Error&) {
    throw Error("cannot read training checkpoint '" + path + "' (corrupt?)");
  }
  c10::IValue cfg;
  ar.read("config", cfg);
  if (!cfg.isString() || cfg.toStringRef() != config)
    throw Error("'" + path +
                "' was written by a run with other options: resume it with the same options, or "
                "overwrite it or use another output folder");
  Checkpoint c;
  // A fresh tensor per read: read() into a defined tensor would set_() it.
  Tensor step_t, loader_t, rng_t;
  ar.read("step", step_t);
  c.step = step_t.item<int64_t>();
  ar.read("loader", loader_t);
  c.loader.epoch = uint64_t(loader_t[0].item<int64_t>());
  c.loader.position = uint64_t(loader_t[1].item<int64_t>());
  c.loader.step = uint64_t(loader_t[2].item<int64_t>());
  torch::NoGradGuard ng;
  for (const auto& [k, p] : params) {
    Tensor v;
    ar.read("param/" + k, v, /*is_buffer=*/true);
    p.copy_(v);
  }
  torch::serialize::InputArchive opt_ar;
  ar.read("optimizer", opt_ar);
  opt.load(opt_ar);
  if (rank == 0 || !ar.try_read("rng_rank" + std::to_string(rank), rng_t)) ar.read("rng", rng_t);
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(rng_t);
  return c;
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

// The options that decide the result, as config.json and the checkpoint
// record them; a resume must use the same.
nlohmann::json run_config(const TrainOptions& o) {
  nlohmann::json cfg{{"checkpoint", o.checkpoint},
                     {"init", o.init},
                     {"data", o.data},
                     {"adapter", o.full ? "full" : o.adapter},
                     {"train_decoder", o.train_decoder},
                     {"corruption", o.corruption},
                     {"severity", o.severity},
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
                     {"precision", o.precision},
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

// ---- the output folder -----------------------------------------------------

// Every file a run writes into its folder; the first five mark the folder as
// holding a run (loss.png alone is only a picture).
const char* const kRunFiles[] = {"config.json",         "checkpoint.pt",     "metrics.jsonl",
                                 "adapter.safetensors", "model.safetensors", "loss.png"};
constexpr size_t kRunMarkers = 5;

std::string run_file(const TrainOptions& o, const char* name) { return (fs::path(o.out) / name).string(); }

bool present(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;  // a link counts, even a dangling one
}

// No file the run writes (or --overwrite removes) may be one of its inputs.
void check_not_inputs(const TrainOptions& o) {
  std::vector<io::NamedPath> outputs, inputs{{"the checkpoint", o.checkpoint}};
  // Named as adapt::load_config and init_sam tell a file from a method or preset.
  if (!o.full && o.adapter.find_first_of("./") != std::string::npos)
    inputs.push_back({"the adapter config", o.adapter});
  if (!o.init.empty() && o.init != "vit_b" && o.init != "vit_l" && o.init != "vit_h")
    inputs.push_back({"the init config", o.init});
  for (const char* f : kRunFiles) outputs.push_back({"the output", run_file(o, f)});
  io::check_outputs(outputs, inputs);
}

// The first top-level key whose value differs between two configs.
std::string first_difference(const nlohmann::json& a, const nlohmann::json& b) {
  for (const auto& [k, v] : a.items())
    if (!b.contains(k) || b[k] != v) return k;
  for (const auto& [k, v] : b.items())
    if (!a.contains(k)) return k;
  return "";
}

// A folder holding another run is refused (its config beside other weights
// would describe neither), unless the same run is resumed or it is replaced.
void check_folder_run(const TrainOptions& o, const nlohmann::json& cfg) {
  std::string found;
  for (size_t i = 0; i < kRunMarkers; ++i)
    if (present(run_file(o, kRunFiles[i]))) found += (found.empty() ? "" : ", ") + std::string(kRunFiles[i]);
  if (found.empty() || o.overwrite) return;
  if (!o.resume)
    throw Error("'" + o.out + "' already holds a training run (" + found +
                "): resume it (--resume, same options), replace it (--overwrite) or use another folder");
  // config.json names the options the run started with, before any checkpoint.
  const std::string path = run_file(o, "config.json");
  if (!present(path)) return;
  const auto bytes = io::read_file(path);
  const auto old = nlohmann::json::parse(bytes.begin(), bytes.end(), nullptr, /*allow_exceptions=*/false);
  if (old == cfg) return;
  const std::string key = old.is_object() ? first_difference(old, cfg) : "";
  throw Error("'" + o.out + "' holds a run started with other options (" +
              (key.empty() ? std::string("config.json") : "'" + key + "' differs from config.json") +
              "): resume it with the same options, or replace it (--overwrite)");
}

// Rank 0's hold on the output folder: checked, created, locked for the run,
// checked again under the lock, and emptied of the old run's files with overwrite.
void open_out(const TrainOptions& o, const nlohmann::json& cfg, std::optional<io::FolderLock>& lock) {
  check_not_inputs(o);
  std::error_code ec;
  fs::create_directories(o.out, ec);
  if (!fs::is_directory(o.out))
    throw Error("cannot create the output folder '" + o.out + "': " + (ec ? ec.message() : "not a folder"));
  lock.emplace(o.out);
  check_folder_run(o, cfg);
  if (!o.overwrite) return;
  for (const char* f : kRunFiles) {
    const std::string p = run_file(o, f);
    if (::unlink(p.c_str()) != 0 && errno != ENOENT)
      throw Error("cannot remove " + p + " of the run being overwritten: " + std::strerror(errno));
  }
}

// Before every save: non-finite weights would replace good ones on disk.
void check_finite(const std::vector<std::pair<std::string, Tensor>>& params, int64_t step) {
  torch::NoGradGuard ng;
  for (const auto& [name, t] : params)
    if (t.is_floating_point() && !torch::isfinite(t).all().item<bool>())
      throw Error("training diverged: the weights hold NaN or Inf after step " + std::to_string(step) + " (first: '" +
                  name + "'), so they were not saved; lower the learning rate");
}

// The finished run's checkpoint, then its weights. Each is written whole or
// not at all (io::write_atomic), and the weights are tried even when the
// checkpoint fails (a full disk): they are the result, and smaller. With the
// checkpoint written and the weights not, resuming the run writes them again.
void save_result(const std::function<void()>& checkpoint, const std::function<void()>& weights,
                 const std::string& weights_path) {
  std::string ckpt_error;
  try {
    checkpoint();
  } catch (const Error& e) {
    ckpt_error = e.what();
  }
  try {
    weights();
  } catch (const Error& e) {
    if (!ckpt_error.empty()) throw Error(ckpt_error + "; nor could the weights be written");
    throw Error(std::string(e.what()) +
                " (the finished run's checkpoint is saved: resume the run to write them again)");
  }
  if (!ckpt_error.empty()) throw Error(ckpt_error + " (the trained weights are saved in " + weights_path + ")");
}

}  // namespace

Tensor encode_for_training(Sam& model, const Tensor& images, bool grad_checkpoint) {
  auto& enc = model->image_encoder;
  auto x = enc->patch_embed->forward(images) + enc->pos_embed;
  // An anchor that requires grad keeps checkpointed blocks in the graph
  // even when their input does not (frozen patch embedding).
  auto anchor = torch::ones({1}, x.options().dtype(torch::kFloat32)).requires_grad_(true);
  for (const auto& m : *enc->blocks) {
    auto* block = m->as<EncoderBlock>();
    if (grad_checkpoint && torch::GradMode::is_enabled())
      x = BlockCheckpoint::apply(x, anchor, reinterpret_cast<int64_t>(block));
    else
      x = block->forward(x);
  }
  return enc->neck->forward(x.permute({0, 3, 1, 2}));
}

Tensor model_input(const Sam& model, const cv::Mat& rgb) {
  const auto [nh, nw] = preprocess_shape(rgb.rows, rgb.cols, model->config.img_size);
  auto resized = resize_bilinear_pil(to_image8(rgb), nw, nh);
  auto t = torch::from_blob(resized.data.data(), {nh, nw, 3}, torch::kUInt8)
               .permute({2, 0, 1})
               .to(torch::kFloat32)
               .unsqueeze(0);
  return model->preprocess(t.to(model->device()))[0];
}

bool in_pieces(const cv::Mat& mask) {
  cv::Mat labels;
  return cv::connectedComponents(mask > 0, labels, 4, CV_32S) > 2;  // background + two parts
}

ModelSample to_model_sample(const Sam& model, const cv::Mat& rgb, const cv::Mat& mask01,
                            const data::SampledPrompt& prompt, bool with_image) {
  const auto& cfg = model->config;
  const int S = cfg.img_size, low = 4 * cfg.embedding_size();
  const int oh = rgb.rows, ow = rgb.cols;
  const auto [nh, nw] = preprocess_shape(oh, ow, S);
  ModelSample s;
  if (with_image) s.image = model_input(model, rgb);
  // Target: the mask laid out like the image, then averaged down to the
  // decoder's low-res grid (soft values at edges).
  cv::Mat m;
  mask01.convertTo(m, CV_32F);
  cv::resize(m, m, cv::Size(nw, nh), 0, 0, cv::INTER_LINEAR);
  cv::Mat padded = cv::Mat::zeros(S, S, CV_32F);
  m.copyTo(padded(cv::Rect(0, 0, nw, nh)));
  s.input_target =
      torch::from_blob(m.ptr<float>(), {nh, nw}, torch::kFloat32).gt(0.5).to(model->device(), torch::kUInt8);
  cv::resize(padded, padded, cv::Size(low, low), 0, 0, cv::INTER_AREA);
  s.target = torch::from_blob(padded.ptr<float>(), {low, low}, torch::kFloat32).clone().to(model->device());
  const double sx = double(nw) / ow, sy = double(nh) / oh;
  if (!prompt.points.empty()) {
    std::vector<float> xy;
    for (const auto& p : prompt.points) {
      xy.push_back(float(p.x * sx));
      xy.push_back(float(p.y * sy));
    }
    s.points = torch::tensor(xy).view({1, -1, 2}).to(model->device());
    s.labels = torch::tensor(prompt.labels, torch::kInt32).view({1, -1}).to(model->device());
    s.ambiguous = prompt.points.size() == 1 && !prompt.has_box;
  }
  s.pieces = in_pieces(mask01);
  if (prompt.has_box) {
    const auto& b = prompt.box;
    s.box = torch::tensor({float(b[0] * sx), float(b[1] * sy), float(b[2] * sx), float(b[3] * sy)})
                .view({1, 4})
                .to(model->device());
  }
  return s;
}

bool corrective_click(const Tensor& logits, const Tensor& target, int img_size, Click* out) {
  torch::NoGradGuard ng;
  const auto pred = logits.detach() > 0, obj = target > 0.5;
  const auto err = (pred ^ obj).flatten().nonzero();
  if (err.size(0) == 0) return false;
  const int64_t W = logits.size(1);
  const int64_t k = err[torch::randint(err.size(0), {1}, torch::kLong).item<int64_t>()][0].item<int64_t>();
  const double cell = double(img_size) / double(W);  // the low-res grid spans the padded input square
  out->x = float((double(k % W) + 0.5) * cell);
  out->y = float((double(k / W) + 0.5) * cell);
  out->label = obj.flatten()[k].item<bool>() ? 1 : 0;  // missed object -> positive; false mask -> negative
  return true;
}

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
  if (o.checkpoint.empty() == o.init.empty()) throw Error("give exactly one of --checkpoint or --init");
  if (!o.init.empty() && !o.full) throw Error("--init (random weights) needs --full");
  if (o.data.empty()) throw Error("--data is required");
  if ((o.steps > 0) == (o.epochs > 0)) throw Error("give exactly one of --steps or --epochs");
  if (o.batch < 1 || o.accum < 1 || o.masks_per_image < 1)
    throw Error("--batch, --accum and --masks-per-image must be >= 1");
  if (o.iterative_points < 0) throw Error("--iterative-points must be >= 0");
  if (!(o.rank_loss >= 0)) throw Error("--rank-loss must be >= 0");
  if (!(o.occluded_weight > 0 && o.occluded_weight <= 100)) throw Error("--occluded-weight must be in (0, 100]");
  if (!(o.consistency >= 0 && o.consistency <= 1000)) throw Error("--consistency must be in [0, 1000]");
  if (o.consistency > 0 && o.full)
    throw Error("--consistency needs an adapter: it holds the adapted model to the frozen base, which --full trains");
  if (o.iou_target != "input" && o.iou_target != "lowres") throw Error("--iou-target must be input or lowres");
  if (!o.trainable.empty() && !o.full) throw Error("--trainable selects among all weights: it needs --full");
  if (o.optimizer != "adam" && o.optimizer != "adamw") throw Error("--optimizer must be adam or adamw");
  parse_precision(o.precision);
  check_ranges(o);
}

void check_output_folder(const TrainOptions& o) {
  check_not_inputs(o);
  if (present(o.out) && !fs::is_directory(o.out)) throw Error("the output folder '" + o.out + "' is not a folder");
  if (fs::is_directory(o.out)) check_folder_run(o, run_config(o));
}

TrainResult train(const TrainOptions& o) {
  check_options(o);
  const nlohmann::json cfg = run_config(o);
  const std::string cfg_text = cfg.dump();
  // Rank 0 holds the output folder for the whole run. It takes it before
  // the rendezvous, so a refused run ends while the other ranks still wait
  // there (silently, until the launcher stops them).
  std::optional<io::FolderLock> lock;
  if (!o.distributed || rank_from_env() == 0) open_out(o, cfg, lock);
  const bool bf16 = parse_precision(o.precision) == Precision::BF16;
  // Data-parallel ranks (torchrun's environment; `rsam train --nproc`): each
  // takes its share of every batch, the gradients are summed, and every rank
  // takes the same optimizer step. Rank 0 alone writes.
  const auto group = o.distributed ? ProcessGroup::from_env() : nullptr;
  const int rank = group ? group->rank() : 0, world = group ? group->size() : 1;
  const bool lead = rank == 0;
  if (lead && !lock) open_out(o, cfg, lock);
  const bool quiet = o.quiet || !lead;
  int threads = o.threads;
  if (threads <= 0 && group) threads = threads_per_process(group->local_size());
  set_threads(threads);
  if (const auto w = bf16_warning(); bf16 && lead && !w.empty()) std::cerr << w << "\n";

  Sam model = o.init.empty() ? load_sam(o.checkpoint).model : init_sam(o.init, o.seed);
  std::optional<adapt::AdaptedSam> adapted;
  std::vector<std::pair<std::string, Tensor>> params;
  if (o.full) {
    torch::manual_seed(o.seed);
    std::vector<std::string> prefixes;
    std::stringstream list(o.trainable);
    for (std::string p; std::getline(list, p, ',');)
      if (!p.empty()) prefixes.push_back(p);
    auto selected = [&](const std::string& name) {
      if (prefixes.empty()) return true;
      for (const auto& p : prefixes)
        if (name.compare(0, p.size(), p) == 0) return true;
      return false;
    };
    for (auto& p : model->named_parameters(true)) {
      // Frozen weights build no autograd graph: training only the IoU head
      // costs little more than the forward pass.
      const bool on = selected(p.key());
      p.value().set_requires_grad(on);
      if (on) params.emplace_back(p.key(), p.value());
    }
    if (params.empty()) throw Error("--trainable '" + o.trainable + "' matches no parameter of the model");
  } else {
    auto acfg = cfg["adapter_config"];
    if (o.train_decoder) acfg["train_decoder"] = true;
    adapted.emplace(model, acfg, o.seed);
    params = adapted->trainable();
  }
  // The frozen base, for --consistency: a second copy, so that no adapter
  // (nor a base tensor a method unfreezes) changes what it computes.
  std::optional<Sam> teacher;
  if (o.consistency > 0) {
    teacher = load_sam(o.checkpoint).model;
    (*teacher)->to(model->device());
    (*teacher)->eval();
    for (auto& p : (*teacher)->parameters(true)) p.set_requires_grad(false);
  }
  std::vector<Tensor> plist;
  for (auto& [k, t] : params) plist.push_back(t);
  std::unique_ptr<torch::optim::Optimizer> opt;
  if (o.optimizer == "adamw")
    opt = std::make_unique<torch::optim::AdamW>(plist, torch::optim::AdamWOptions(o.lr).weight_decay(o.wd));
  else
    opt = std::make_unique<torch::optim::Adam>(plist, torch::optim::AdamOptions(o.lr).weight_decay(o.wd));

  // Rank 0 draws as a single process would; the others get streams of
  // their own, or every rank would draw the same Gumbel noise and clicks.
  if (rank > 0) torch::manual_seed(degrade::derive_seed(o.seed, uint64_t(rank)));

  auto ds = data::open_dataset(o.data);
  const int64_t per_step = int64_t(o.batch) * o.accum;
  const int64_t total = o.steps > 0 ? o.steps : o.epochs * ((int64_t(ds->size()) + per_step - 1) / per_step);
  data::LoaderOptions lo;
  lo.batch_size = size_t(o.batch);
  lo.seed = o.seed;
  lo.shuffle = true;
  lo.epochs = o.steps > 0 ? 0 : uint64_t(o.epochs);
  lo.corruptions = o.corruption;
  lo.severity = data::parse_severity(o.severity);
  lo.clean_ratio = o.clean_ratio;
  lo.prompts = {data::parse_prompt(as_mix(o.prompts))};
  lo.workers = o.workers;
  uint64_t skipped_reported = 0;
  lo.on_skip = [&](const std::string& msg) {
    if (!quiet && skipped_reported++ < 5) std::cerr << "skipped: " << msg << "\n";
  };
  data::Loader loader(*ds, lo);

  const std::string ckpt_path = (fs::path(o.out) / "checkpoint.pt").string();
  const std::string metrics_path = (fs::path(o.out) / "metrics.jsonl").string();
  int64_t step = 0;
  int64_t start_step = 0;
  std::vector<std::string> metric_lines;
  std::vector<std::pair<int64_t, double>> curve;
  if (o.resume && fs::exists(ckpt_path)) {
    auto c = load_checkpoint(ckpt_path, params, *opt, cfg_text, rank);
    step = start_step = c.step;
    loader.set_state(c.loader);
    // Keep the metrics up to the checkpoint; later lines are redone.
    std::ifstream mf(metrics_path);
    std::string line;
    while (std::getline(mf, line)) {
      try {
        auto j = nlohmann::json::parse(line);
        if (j.value("step", int64_t(0)) <= step) {
          metric_lines.push_back(line);
          curve.emplace_back(j["step"].get<int64_t>(), j["loss"].get<double>());
        }
      } catch (...) {
      }
    }
    if (!quiet) std::cerr << "resumed from step " << step << " of " << total << "\n";
  } else if (o.resume && !quiet) {
    std::cerr << "no checkpoint in " << o.out << ": starting from scratch\n";
  }
  std::optional<io::AppendFile> metrics;
  if (lead) {
    std::string all;
    for (auto& l : metric_lines) all += l + "\n";
    io::write_atomic(metrics_path, all.data(), all.size());
    metrics.emplace(metrics_path);
    io::write_text((fs::path(o.out) / "config.json").string(), cfg.dump(2) + "\n");
  }
  if (group) {
    // The same starting weights everywhere, whatever each rank loaded.
    torch::NoGradGuard ng;
    std::vector<Tensor> w;
    for (auto& t : plist) w.push_back(t.detach());
    group->broadcast(w);
  }

  LossOptions loss_opts;
  loss_opts.rank_weight = o.rank_loss;
  loss_opts.input_size = model->config.img_size;
  const bool input_iou = o.iou_target == "input";
  model->train();
  const bool tty = isatty(2);
  auto t_start = std::chrono::steady_clock::now();
  const int64_t first = step;
  double last_loss = 0;
  data::Batch batch;
  bool exhausted = false;
  while (step < total && !exhausted) {
    const double lr = lr_at(o, step, total);
    for (auto& g : opt->param_groups()) {
      if (o.optimizer == "adamw")
        static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
      else
        static_cast<torch::optim::AdamOptions&>(g.options()).lr(lr);
    }
    opt->zero_grad();
    double loss_sum = 0, focal = 0, dice = 0, iou_mse = 0, iou_rank = 0, aux_sum = 0, cons_sum = 0;
    int64_t n_items = 0, n_terms = 0;  // objects; loss terms (objects x rounds)
    double n_weight = 0;               // the terms' summed weights (--occluded-weight)
    int64_t n_pieces = 0;              // objects whose mask is in several pieces
    for (int a = 0; a < o.accum; ++a) {
      if (!loader.next(batch)) {
        exhausted = true;
        break;
      }
      std::vector<ModelSample> samples;
      std::vector<int64_t> image_of;    // samples[k] decodes image image_of[k]
      std::vector<Tensor> imgs, clean;  // clean: the images uncorrupted (--consistency)
      for (size_t b = 0; b < batch.size(); ++b) {
        // Every rank reads the whole batch (so skips agree) and keeps its
        // share: together the ranks train on exactly one process's batch.
        if (int(b % size_t(world)) != rank) continue;
        const auto& it = batch[b];
        samples.push_back(to_model_sample(model, it.image, it.sample.mask, it.prompt));
        imgs.push_back(samples.back().image);
        image_of.push_back(int64_t(imgs.size()) - 1);
        if (teacher) clean.push_back(it.corruption == "clean" ? imgs.back() : model_input(model, it.sample.image));
        // More objects of the same image share its (expensive) encoding, as
        // SAM's own training decodes many masks per image.
        for (size_t j : more_masks(*ds, it, o.masks_per_image - 1, o.seed)) {
          const cv::Mat m = ds->get_mask(j);
          if (m.size() != it.sample.mask.size() || cv::countNonZero(m) == 0) continue;
          const auto p = data::sample_prompt(m, lo.prompts[0], o.seed, degrade::derive_seed(j, it.index));
          samples.push_back(to_model_sample(model, it.image, m, p, /*with_image=*/false));
          image_of.push_back(int64_t(imgs.size()) - 1);
        }
      }
      Tensor loss_acc, cons;
      int64_t mb_terms = 0;
      double mb_weight = 0;
      if (!samples.empty()) {
        // bf16 covers the encoder only; the decoder runs in fp32 as in the
        // predictor (it is cheap, and torch 1.13's CPU LayerNorm rejects a
        // bf16 input with fp32 weights).
        auto encode = [&](auto&& run) -> Tensor {
          if (!bf16) return run();
          set_autocast(true, model->device().is_cuda());
          Tensor e = run();
          set_autocast(false, model->device().is_cuda());
          at::autocast::clear_cache();
          return e.to(torch::kFloat32);
        };
        auto emb = encode([&] { return encode_for_training(model, torch::stack(imgs), o.grad_checkpoint); });
        if (teacher) {
          Tensor target;
          {
            torch::NoGradGuard ng;  // the target: no graph for the frozen pass
            target = encode([&] { return (*teacher)->image_encoder->forward(torch::stack(clean)); });
          }
          cons = torch::mse_loss(emb, target);
        }
        auto pe = model->prompt_encoder->get_dense_pe();
        auto iou_target = [&](const ModelSample& s) { return input_iou ? s.input_target : Tensor(); };
        auto add_term = [&](const LossParts& t, double w) {  // w: the object's weight (x 1.0 is exact)
          const Tensor term = t.total * w;
          loss_acc = loss_acc.defined() ? loss_acc + term : term;
          mb_weight += w;
          focal += t.focal;
          dice += t.dice;
          iou_mse += t.iou_mse;
          iou_rank += t.iou_rank;
          ++mb_terms;
        };
        for (size_t i = 0; i < samples.size(); ++i) {
          const auto& s = samples[i];
          const double w = s.pieces ? o.occluded_weight : 1.0;
          std::optional<std::pair<Tensor, Tensor>> pts;
          if (s.points.defined()) pts = std::make_pair(s.points, s.labels);
          std::optional<Tensor> box;
          if (s.box.defined()) box = s.box;
          auto [sparse, dense] = model->prompt_encoder->forward(pts, box, std::nullopt);
          auto [low, iou] = model->mask_decoder->forward(emb.narrow(0, image_of[i], 1), pe, sparse, dense, s.ambiguous);
          auto parts = sam_loss(low[0], iou[0], s.target, iou_target(s), loss_opts);
          add_term(parts, w);
          // Interactive rounds (SAM, sec. A): the previous mask (no gradient
          // through it) and a corrective click go back in; one mask out.
          Tensor prev = low[0][parts.best];
          Tensor points = s.points, labels = s.labels;
          for (int r = 0; r < o.iterative_points; ++r) {
            Click c;
            if (!corrective_click(prev, s.target, model->config.img_size, &c)) break;
            auto p = torch::tensor({c.x, c.y}).view({1, 1, 2}).to(emb.device());
            auto l = torch::full({1, 1}, c.label, torch::TensorOptions(torch::kInt32).device(emb.device()));
            points = points.defined() ? torch::cat({points, p}, 1) : p;
            labels = labels.defined() ? torch::cat({labels, l}, 1) : l;
            auto [sp, dn] = model->prompt_encoder->forward(std::make_pair(points, labels), box,
                                                           prev.detach().view({1, 1, prev.size(0), prev.size(1)}));
            auto [low_r, iou_r] = model->mask_decoder->forward(emb.narrow(0, image_of[i], 1), pe, sp, dn, false);
            add_term(sam_loss(low_r[0], iou_r[0], s.target, iou_target(s), loss_opts), w);
            prev = low_r[0][0];
          }
        }
      }
      auto aux = adapted && !samples.empty() ? adapted->aux_loss() : torch::zeros({});
      // Every mask weighs the same (or --occluded-weight): the weighted mean
      // over this micro-batch's masks (on all ranks), averaged over the
      // accumulated micro-batches.
      double all_weight = mb_weight;
      if (group) {
        std::vector<Tensor> c{torch::tensor({mb_weight}, torch::kFloat64)};
        group->all_reduce_sum(c);
        all_weight = c[0].item<double>();
      }
      if (loss_acc.defined()) {
        auto loss = (loss_acc / (std::max(1.0, all_weight) * o.accum)) + aux / double(o.accum * world);
        // A mean over this rank's images; the ranks' gradients are summed.
        if (cons.defined()) loss = loss + cons * (o.consistency / double(o.accum * world));
        loss.backward();
        loss_sum += loss_acc.item<double>();
      }
      if (cons.defined()) cons_sum += cons.item<double>();
      aux_sum += aux.item<double>();
      n_items += int64_t(samples.size());
      n_terms += mb_terms;
      n_weight += mb_weight;
      for (const auto& s : samples) n_pieces += s.pieces;
    }
    if (group) {
      // One sum for the gradients (a rank with no object adds zeros), one
      // for what the metrics report.
      torch::NoGradGuard ng;
      std::vector<Tensor> grads;
      for (auto& p : plist) {
        if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
        grads.push_back(p.grad());
      }
      group->all_reduce_sum(grads);
      std::vector<Tensor> m{torch::tensor({loss_sum, focal, dice, iou_mse, iou_rank, aux_sum / world, double(n_items),
                                           double(n_terms), n_weight, double(n_pieces), cons_sum / world},
                                          torch::kFloat64)};
      group->all_reduce_sum(m);
      auto v = m[0].accessor<double, 1>();
      loss_sum = v[0], focal = v[1], dice = v[2], iou_mse = v[3], iou_rank = v[4], aux_sum = v[5];
      n_items = int64_t(v[6]), n_terms = int64_t(v[7]), n_weight = v[8];
      n_pieces = int64_t(v[9]), cons_sum = v[10];
    }
    if (n_items == 0) break;
    if (!std::isfinite(loss_sum)) throw Error("loss became NaN/Inf at step " + std::to_string(step) + "; lower --lr");
    if (o.clip > 0) torch::nn::utils::clip_grad_norm_(plist, o.clip);
    opt->step();
    ++step;
    last_loss = loss_sum / n_weight;  // the weighted mean the step minimised
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    const double ips = double((step - first) * per_step) / std::max(secs, 1e-9);
    const double eta = double(total - step) * secs / double(std::max<int64_t>(1, step - first));
    nlohmann::json j{{"step", step},
                     {"loss", last_loss},
                     {"focal", focal / n_terms},
                     {"dice", dice / n_terms},
                     {"iou_mse", iou_mse / n_terms},
                     {"iou_rank", iou_rank / n_terms},
                     {"aux", aux_sum / o.accum},
                     {"lr", lr},
                     {"img_per_s", ips},
                     {"masks", n_items},
                     {"masks_in_pieces", n_pieces},
                     {"skipped", loader.skipped()}};
    if (teacher) j["consistency"] = cons_sum / o.accum;  // the embeddings' mean squared difference
    if (lead) metrics->write_line(j.dump());
    curve.emplace_back(step, last_loss);
    if (!quiet) {
      char line[200];
      std::snprintf(line, sizeof line, "step %lld/%lld  loss %.4f  %.2f img/s  ETA %s", (long long)step,
                    (long long)total, last_loss, ips, fmt_eta(eta).c_str());
      if (tty)
        std::cerr << "\r" << line << "   " << std::flush;
      else if (step % 10 == 0 || step == total)
        std::cerr << line << "\n";
    }
    if (o.save_every > 0 && step % o.save_every == 0 && step < total) {
      const auto rngs = rng_states(group.get());  // a collective: every rank
      if (lead) {
        check_finite(params, step);
        save_checkpoint(ckpt_path, {step, loader.state()}, params, *opt, cfg_text, rngs);
      }
    }
  }
  if (!quiet && tty) std::cerr << "\n";
  model->eval();
  TrainResult r;
  r.steps = step;
  r.start_step = start_step;
  r.last_loss = last_loss;
  r.wrote_outputs = lead;
  const auto rngs = rng_states(group.get());
  if (!lead) return r;  // the weights are rank 0's to write
  check_finite(params, step);
  r.weights_path = (fs::path(o.out) / (o.full ? "model.safetensors" : "adapter.safetensors")).string();
  save_result(
      [&] {
        save_checkpoint(ckpt_path, {step, loader.state()}, params, *opt, cfg_text, rngs);
      },
      [&] {
        if (o.full)
          save_sam(model, r.weights_path);
        else
          adapted->save(r.weights_path);
      },
      r.weights_path);
  plot_loss((fs::path(o.out) / "loss.png").string(), curve);
  if (!o.val.empty()) {
    torch::NoGradGuard ng;
    r.val_iou = validate(model, o.val, o.val_samples, o.seed);
    metrics->write_line(nlohmann::json{{"step", step}, {"val_box_iou", r.val_iou}}.dump());
  }
  return r;
}

}  // namespace rsam::train
