// Flags whose values are library enums: the library's options hold the enum,
// the command line holds its name.
#pragma once

#include <CLI/CLI.hpp>

#include <map>
#include <string>

#include "model/predictor.h"

namespace rsam::app {

inline CLI::Validator precision_names() {
  return CLI::CheckedTransformer(std::map<std::string, Precision>{{"fp32", Precision::FP32}, {"bf16", Precision::BF16}})
      .description("{fp32,bf16}");
}

inline CLI::Validator pick_names() {
  return CLI::CheckedTransformer(std::map<std::string, Pick>{{"score", Pick::Score}, {"stability", Pick::Stability}})
      .description("{score,stability}");
}

// 0 stands for a severity drawn at random per item (data::parse_severity).
inline CLI::Validator severity_names() {
  return CLI::CheckedTransformer(
             std::map<std::string, int>{{"1", 1}, {"2", 2}, {"3", 3}, {"4", 4}, {"5", 5}, {"random", 0}})
      .description("{1..5,random}");
}

}  // namespace rsam::app
