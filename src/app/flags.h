// Flag checks shared by the commands, so each rule lives in one place.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

namespace rsam::app {

// A seed is a whole number in [0, 2^64 - 1], written in decimal. CLI11 alone
// would let "-1", "2^64" and "1e23" collapse silently onto other seeds.
inline const CLI::Validator kSeed(
    [](std::string& s) -> std::string {
      const std::string max = "18446744073709551615";
      const bool digits = !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
      const size_t nonzero = s.find_first_not_of('0');
      const std::string trimmed = nonzero == std::string::npos ? "0" : s.substr(nonzero);
      if (!digits || trimmed.size() > max.size() || (trimmed.size() == max.size() && trimmed > max))
        return "a seed is a whole number from 0 to " + max + ", got '" + s + "'";
      return {};
    },
    "SEED", "seed");

}  // namespace rsam::app
