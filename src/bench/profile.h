// Per-op profile of what runs on the calling thread: the wall time of each
// top-level torch op (ops called from inside another op are part of their
// caller's time), from torch's RecordFunction callbacks. The decode benches
// print it so a claim about where time goes comes with the table.
#pragma once

#include <ATen/record_function.h>
#include <nlohmann/json.hpp>

#include <map>
#include <string>

namespace rsam {

class OpProfile {
 public:
  OpProfile();  // starts recording on this thread
  ~OpProfile();
  OpProfile(const OpProfile&) = delete;
  OpProfile& operator=(const OpProfile&) = delete;
  void stop();
  // Rows {op, calls, ms, share} sorted by time, ops under `min_share` of the
  // total folded into one "(other)" row; divided by `runs` (per call of the
  // profiled code).
  nlohmann::json table(int runs = 1, double min_share = 0.01) const;
  double total_ms() const;

  struct Row {
    int64_t calls = 0;
    double ms = 0;
  };

 private:
  at::CallbackHandle handle_ = 0;
  bool on_ = false;
};

// The table as aligned text lines, for the terminal.
std::string format_profile(const nlohmann::json& table);

}  // namespace rsam
