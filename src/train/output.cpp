// The output folder of a run: no file it writes may be one of its inputs,
// and a folder holding another run is refused unless that run is resumed
// (with the same options) or overwritten.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "error.h"
#include "model/config.h"
#include "train/trainer_internal.h"

namespace rsam::train {

namespace fs = std::filesystem;

namespace {

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
  if (!o.init.empty() && !SamConfig::find_preset(o.init)) inputs.push_back({"the init config", o.init});
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
                "): resume it (same options), replace it (overwrite) or use another folder");
  // config.json names the options the run started with, before any checkpoint.
  const std::string path = run_file(o, "config.json");
  if (!present(path)) return;
  const auto bytes = io::read_file(path);
  const auto old = nlohmann::json::parse(bytes.begin(), bytes.end(), nullptr, /*allow_exceptions=*/false);
  if (old == cfg) return;
  const std::string key = old.is_object() ? first_difference(old, cfg) : "";
  throw Error("'" + o.out + "' holds a run started with other options (" +
              (key.empty() ? std::string("config.json") : "'" + key + "' differs from config.json") +
              "): resume it with the same options, or replace it (overwrite)");
}

}  // namespace

namespace detail {

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

}  // namespace detail

void check_output_folder(const TrainOptions& o) {
  check_not_inputs(o);
  if (present(o.out) && !fs::is_directory(o.out)) throw Error("the output folder '" + o.out + "' is not a folder");
  if (fs::is_directory(o.out)) check_folder_run(o, detail::run_config(o));
}

}  // namespace rsam::train
