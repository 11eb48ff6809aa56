// Reading corruption parameters from their JSON level tables (internal).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "degrade/rng.h"
#include "error.h"

namespace rsam::degrade {

// A parameter given either as a number (fixed) or as [lo, hi] (drawn
// uniformly per image, as the references do).
struct Interval {
  double lo = 0.0, hi = 0.0;
  // A fixed value consumes no random numbers.
  double draw(Rng& rng) const { return lo == hi ? lo : rng.uniform(lo, hi); }
  // Integer parameters: uniform over the integers in [lo, hi].
  int draw_int(Rng& rng) const {
    return rng.uniform_int(static_cast<int>(std::lround(lo)), static_cast<int>(std::lround(hi)));
  }
};

inline Interval interval(const nlohmann::json& p, const char* key) {
  const nlohmann::json& v = p.at(key);
  if (v.is_number()) return {v.get<double>(), v.get<double>()};
  if (v.is_array() && v.size() == 2 && v[0].is_number() && v[1].is_number()) {
    Interval r{v[0].get<double>(), v[1].get<double>()};
    if (r.lo <= r.hi) return r;
  }
  throw rsam::Error(std::string("degrade: parameter '") + key + "' must be a number or [lo, hi] with lo <= hi");
}

inline double number(const nlohmann::json& p, const char* key) {
  const nlohmann::json& v = p.at(key);
  if (!v.is_number()) throw rsam::Error(std::string("degrade: parameter '") + key + "' must be a number");
  return v.get<double>();
}

inline double number_in(const nlohmann::json& p, const char* key, double lo, double hi) {
  const double v = number(p, key);
  if (!(v >= lo && v <= hi))
    throw rsam::Error(std::string("degrade: parameter '") + key + "' must be in [" + std::to_string(lo) + ", " +
                      std::to_string(hi) + "]");
  return v;
}

inline Interval interval_in(const nlohmann::json& p, const char* key, double lo, double hi) {
  Interval r = interval(p, key);
  if (r.lo < lo || r.hi > hi)
    throw rsam::Error(std::string("degrade: parameter '") + key + "' must lie in [" + std::to_string(lo) + ", " +
                      std::to_string(hi) + "]");
  return r;
}

}  // namespace rsam::degrade
