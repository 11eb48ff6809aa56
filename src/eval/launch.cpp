#include "eval/launch.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "data/dataset.h"
#include "error.h"
#include "train/distributed.h"

namespace rsam::eval {

namespace {

constexpr const char* kShardsVar = "RSAM_EVAL_SHARDS";
constexpr const char* kPhaseVar = "RSAM_STUDY_PHASE";

std::string rank_file(const std::string& dir, int k) { return dir + "/rank" + std::to_string(k) + ".json"; }

// One share: the launcher merges and reports.
void evaluate_share(EvalOptions o, int nproc, const std::string& dir) {
  o.shard = train::rank_from_env();
  o.shards = nproc;
  o.report.clear();
  o.quiet = o.quiet || o.shard != 0;
  if (o.threads <= 0) o.threads = train::threads_per_process(nproc);
  const auto part = evaluate(o);
  write_records(rank_file(dir, o.shard), part.records);
}

// Removed whatever happens here; a killed run's is found by the next.
struct TempDir {
  std::string path;
  ~TempDir() {
    std::error_code ec;
    if (!path.empty()) std::filesystem::remove_all(path, ec);
  }
};

LaunchedEval evaluate_shared_out(const EvalOptions& o, int nproc, char** argv) {
  if (!std::ifstream(o.checkpoint).good()) throw Error("cannot read checkpoint '" + o.checkpoint + "'");
  data::open_dataset(o.data);
  const TempDir dir{make_shard_dir(o.report)};
  setenv(kShardsVar, dir.path.c_str(), 1);
  std::fflush(stdout);
  LaunchedEval out;
  out.exit_code = train::launch_local(nproc, argv);
  if (out.exit_code != 0) return out;
  std::vector<EvalResult> parts(static_cast<size_t>(nproc));
  for (int k = 0; k < nproc; ++k) parts[size_t(k)].records = read_records(rank_file(dir.path, k));
  out.result = merge_shards(std::move(parts), o);
  if (!o.report.empty()) write_report(o.report, o, out.result);
  return out;
}

}  // namespace

LaunchedEval evaluate_launched(EvalOptions o, int nproc, char** argv) {
  if (nproc < 1) throw Error("the process count must be >= 1");
  const char* shards_dir = std::getenv(kShardsVar);
  if (shards_dir && train::started_as_rank()) {
    evaluate_share(o, nproc, shards_dir);
    LaunchedEval w;
    w.worker = true;
    return w;
  }
  // Before any loading; the process that writes the report holds its folder
  // (workers write only their shares).
  const auto lock = check_report(o, true);
  if (nproc > 1) return evaluate_shared_out(o, nproc, argv);
  LaunchedEval single;
  single.result = evaluate(o);
  return single;
}

int study_launched(StudyOptions o, int nproc, char** argv) {
  if (nproc < 1) throw Error("the process count must be >= 1");
  if (const char* phase = std::getenv(kPhaseVar); phase && train::started_as_rank()) {
    o.phase = phase;
    o.shard = train::rank_from_env();
    o.shards = nproc;
    if (o.threads <= 0) o.threads = train::threads_per_process(nproc);
    run_study(o);
    return 0;
  }
  // This process holds the run folder for the whole study; its copies work
  // inside the hold.
  const auto lock = lock_study(o);
  if (nproc > 1) {
    for (const char* phase : {"train", "eval"}) {
      setenv(kPhaseVar, phase, 1);
      std::fflush(stdout);
      if (const int code = train::launch_local(nproc, argv)) return code;
    }
    unsetenv(kPhaseVar);
    o.shards = nproc;
  }
  run_study(o);
  return 0;
}

}  // namespace rsam::eval
