// The `rsam adapter` jobs on files, as library calls: fold an adapter into
// its base, write a freshly initialised one, and size every method on a
// model (the parameter table of the papers).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "io/fs.h"
#include "model/config.h"

namespace rsam::adapt {

// The checkpoint with the adapter folded in, saved to `out` (.safetensors or
// .pth). Returns the adapter's method. rsam::Error for a method that cannot
// merge, an adapter of another base, or `out` on an input.
std::string merge_adapter_file(const std::string& checkpoint, const std::string& adapter, const io::NamedPath& out);

// A fresh adapter (identity: the masks unchanged) of `config` (a method name
// or a JSON config file) on the checkpoint, saved to `out`.
struct InitResult {
  std::string method;
  int64_t trainable = 0;
};
InitResult init_adapter_file(const std::string& checkpoint, const std::string& config, const io::NamedPath& out,
                             uint64_t seed);

// Every method at the papers' settings on a model of `config`:
// [{"method": "lora rank=4", "params": N, "ratio_percent": P}, ...].
nlohmann::json parameter_table(const SamConfig& config);

}  // namespace rsam::adapt
