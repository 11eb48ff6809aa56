// Batched, prefetching, deterministic iteration over a Dataset, with
// on-the-fly corruptions and prompts, for training and evaluation.
//
// Determinism: every Item is a pure function of (options, dataset, global
// position), so batches are byte-identical for any number of workers and a
// run resumed from a saved LoaderState continues exactly the uninterrupted
// sequence:
//   - epoch e visits the dataset in the permutation drawn from (seed, e)
//     (identity if !shuffle);
//   - the item at (e, position p) draws clean-or-not, corruption, severity
//     and corruption seed from (seed, e, p);
//   - prompt slot s of dataset sample i is sample_prompt(mask, prompts[s],
//     seed, derive_seed(i, s)): the same sample gets the same prompts in
//     every epoch and for every method compared with the same seed.
//
// Skipping: a sample whose get() throws (unreadable image, bad annotation) or
// whose mask is empty is skipped, counted in skipped() and reported through
// on_skip; it never ends the run. The batch is filled from the following
// positions instead. Batches never span epochs: an epoch's last batch may be
// short (dropped if drop_last). If a whole epoch's worth of consecutive
// positions is skipped, next() throws rsam::Error (nothing is readable).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <opencv2/core.hpp>

#include "data/dataset.h"
#include "data/prompts.h"

namespace rsam::degrade {
class Corruption;
}

namespace rsam::data {

struct LoaderOptions {
  size_t batch_size = 1;
  uint64_t seed = 0;
  bool shuffle = true;
  uint64_t epochs = 1;   // stop after this many epochs; 0 = no epoch limit
  uint64_t steps = 0;    // stop once LoaderState::step reaches this; 0 = no step limit
  bool drop_last = false;
  // Comma list of corruption names and sets for degrade::expand ("robustseg",
  // "lqseg", "gauss_noise,fog", ...); "none" or "" = every item clean.
  std::string corruptions = "none";
  int severity = 3;          // 1..5, or 0 = uniformly random 1..5 per item (see parse_severity)
  double clean_ratio = 0.0;  // probability that an item stays clean
  std::vector<PromptSpec> prompts;  // one SampledPrompt per spec in each Item
  int workers = 0;           // background threads; 0 = produce on the calling thread
  size_t prefetch = 0;       // items produced ahead at most; 0 = 2 * batch_size * max(workers, 1)
  bool warp_mask = false;    // geometric corruptions also move Sample::mask (default: image only)
  std::function<void(const std::string&)> on_skip;  // called on next()'s thread, one line per skip
};

// "1".."5" or "random" (= 0); rsam::Error otherwise.
int parse_severity(const std::string& s);
std::string severity_name(int severity);  // the inverse: "1".."5" or "random"

// Where the loader stands: the next global position to read is
// epoch * dataset.size() + position; `step` counts batches returned so far
// (what LoaderOptions::steps limits).
struct LoaderState {
  uint64_t epoch = 0;
  uint64_t position = 0;
  uint64_t step = 0;
};

struct Item {
  Sample sample;              // as read (mask warped if warp_mask and the corruption is geometric)
  cv::Mat image;              // CV_8UC3 RGB model input: sample.image corrupted, or sample.image itself when clean
  std::string corruption;     // "clean" or the corruption name
  int severity = 0;           // 0 when clean
  std::vector<SampledPrompt> prompts;  // one per LoaderOptions::prompts entry
  SampledPrompt prompt;       // prompts[0], or empty if no prompt spec was given
  uint64_t index = 0;         // global position epoch * size + position: unique and stable
  size_t dataset_index = 0;   // Dataset::get index
};

using Batch = std::vector<Item>;

class Loader {
 public:
  // `data` must outlive the loader. rsam::Error on bad options (batch size
  // 0, clean ratio outside 0..1, unknown corruption, severity outside 0..5).
  Loader(const Dataset& data, LoaderOptions options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // The next batch (never empty), or false when the epoch/step limit is reached.
  bool next(Batch& batch);

  LoaderState state() const;            // after the last batch next() returned
  void set_state(const LoaderState& s); // resume: the next batch starts there

  uint64_t skipped() const;             // samples skipped so far by this loader
  std::string last_skip() const;        // the latest skip's message ("" if none)

 private:
  struct Produced {
    bool ok = false;
    Item item;
    std::string error;
  };
  Produced produce(uint64_t seq) const;
  std::shared_ptr<const std::vector<size_t>> permutation(uint64_t epoch) const;
  Produced take(uint64_t seq);
  void start_workers();
  void stop_workers();
  void worker_loop();

  const Dataset& data_;
  LoaderOptions opt_;
  size_t n_ = 0;
  uint64_t end_seq_ = 0;  // first global position past the epoch limit
  size_t window_ = 0;
  std::vector<std::string> names_;
  std::map<std::pair<std::string, int>, std::unique_ptr<degrade::Corruption>> corruptions_;

  mutable std::mutex perm_mu_;
  mutable std::map<uint64_t, std::shared_ptr<const std::vector<size_t>>> perms_;

  // Consumer-side state (next()'s thread only).
  uint64_t consume_ = 0;
  uint64_t step_ = 0;
  uint64_t skipped_ = 0;
  uint64_t run_of_skips_ = 0;
  std::string last_skip_;

  // Shared with the workers, under mu_.
  std::mutex mu_;
  std::condition_variable cv_work_, cv_ready_;
  bool stop_ = false;
  uint64_t next_claim_ = 0;
  uint64_t consumed_ = 0;  // mirror of consume_ for the workers' window
  std::map<uint64_t, Produced> ready_;
  std::vector<std::thread> threads_;
};

}  // namespace rsam::data
