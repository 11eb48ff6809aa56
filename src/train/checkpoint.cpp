// Training checkpoints (weights, optimizer, generators, loader position) and
// the finished run's files: written whole or not at all, never with
// non-finite weights, and read back so a resumed run ends as an
// uninterrupted one would.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>

#include "error.h"
#include "log.h"
#include "train/trainer_internal.h"

namespace rsam::train::detail {

using torch::Tensor;
namespace fs = std::filesystem;

namespace {

Tensor rng_state() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

}  // namespace

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

namespace {

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

}  // namespace

void resume(const Run& run, History& h) {
  const TrainOptions& o = run.o;
  if (!o.resume) return;
  if (!fs::exists(run.ckpt_path)) {
    if (!run.quiet) log_info("no checkpoint in " + o.out + ": starting from scratch");
    return;
  }
  auto c = load_checkpoint(run.ckpt_path, run.t.params, *run.t.opt, run.cfg_text, run.rank);
  h.step = h.start_step = c.step;
  run.loader.set_state(c.loader);
  // Keep the metrics up to the checkpoint; later lines are redone.
  std::ifstream mf(run.metrics_path);
  std::string line;
  while (std::getline(mf, line)) {
    try {
      auto j = nlohmann::json::parse(line);
      if (j.value("step", int64_t(0)) <= h.step) {
        h.metric_lines.push_back(line);
        h.curve.emplace_back(j["step"].get<int64_t>(), j["loss"].get<double>());
      }
    } catch (...) {
    }
  }
  if (!run.quiet) log_info("resumed from step " + std::to_string(h.step) + " of " + std::to_string(run.total));
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

}  // namespace rsam::train::detail
