// Flag checks shared by the commands, so each rule lives in one place.
#pragma once

#include <CLI/CLI.hpp>

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "error.h"

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

// A flag's comma-separated numbers ("--point 10,20,1"), min_n to max_n of
// them, each finite; rsam::Error naming `what` and the value otherwise.
inline std::vector<double> parse_numbers(const std::string& s, const char* what, size_t min_n, size_t max_n) {
  std::vector<double> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      const double d = std::stod(item, &used);
      if (used != item.size()) throw std::invalid_argument(item);
      v.push_back(d);
    } catch (const std::exception&) {
      throw Error(std::string("bad ") + what + " '" + s + "': '" + item + "' is not a number");
    }
  }
  if (v.size() < min_n || v.size() > max_n)
    throw Error(std::string("bad ") + what + " '" + s + "': expected " + std::to_string(min_n) +
                (min_n == max_n ? "" : " or " + std::to_string(max_n)) + " comma-separated numbers");
  for (double d : v)
    if (!std::isfinite(d)) throw Error(std::string("bad ") + what + " '" + s + "': not finite");
  return v;
}

}  // namespace rsam::app
