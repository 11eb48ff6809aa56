// Data-parallel training over processes with torch's c10d (Gloo), and a
// local launcher. The processes find each other the way torchrun's do
// (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so they can be started by
// `rsam train --nproc N`, by hand or by another launcher, on several hosts.
//
// Why processes and not threads: rsam-tiny's operations are too small for
// two intra-op threads to help (the encoder takes about as long on one
// thread as on two), while two single-thread processes each at full speed
// nearly double the images per second (docs/performance.md).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

namespace rsam::train {

class ProcessGroup {
 public:
  // The group this process belongs to per the environment, or null when it
  // runs alone (WORLD_SIZE unset or 1). rsam::Error on an inconsistent
  // environment or if the rendezvous fails.
  static std::unique_ptr<ProcessGroup> from_env();
  ~ProcessGroup();

  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_size() const { return local_size_; }

  // In place: every tensor becomes the sum over the ranks. One collective
  // over a flat buffer of them all, so they must share a dtype and device.
  void all_reduce_sum(std::vector<torch::Tensor>& tensors);
  // In place: every tensor becomes rank 0's.
  void broadcast(std::vector<torch::Tensor>& tensors);

 private:
  struct Impl;
  ProcessGroup(std::unique_ptr<Impl> impl, int rank, int size, int local_size);
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, size_ = 1, local_size_ = 1;
};

// True if the build includes c10d's Gloo backend.
bool distributed_available();

// Runs this program (argv as given, via /proc/self/exe) as n processes on
// this machine with the torchrun variables set (MASTER_ADDR 127.0.0.1, a
// free port), waits for them, and returns the exit code: the first non-zero
// one, after stopping the others. SIGINT/SIGTERM are passed on, and the
// ranks die with the launcher (so a killed run can be resumed). Needs no
// process group: `rsam eval --nproc` shares out samples with it.
int launch_local(int n, char** argv);

// True when this process was started as a rank (RANK is set).
bool started_as_rank();
// RANK as a number (rsam::Error if it is not one), 0 when unset.
int rank_from_env();
// Intra-op threads for one of `local_processes` processes sharing this
// machine's cores: the cores split evenly, at least one each.
int threads_per_process(int local_processes);

}  // namespace rsam::train
