// Records reduced to the numbers the reports show: means per method,
// corruption and prompt, and the rank oracle over compared adapters.
#pragma once

#include <nlohmann/json.hpp>

#include <vector>

#include "eval/records.h"

namespace rsam::eval {

// method -> corruption -> prompt -> metrics, with a "degraded (mean)"
// corruption per method over everything but clean.
nlohmann::json summarize(const std::vector<Record>& records);
// GaRA Fig. 2 over the methods (null with fewer than two).
nlohmann::json rank_oracle(const std::vector<Record>& records);

}  // namespace rsam::eval
