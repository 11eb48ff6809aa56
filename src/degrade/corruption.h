// Corruptions as named, registered components.
//
// A corruption is built from a name, a severity (1..5; 3 is the reference
// strength) and optional parameter overrides, in the tiny-cuda-nn style:
//
//   auto c = rsam::degrade::create("gauss_noise", 3);
//   rsam::degrade::Result r = c->run(rgb, /*seed=*/42);
//
// run() is a pure function of (parameters, image, seed): same seed, same
// bytes, whatever cv::setNumThreads says. Every random draw is recorded in
// Result::drawn so a manifest can say exactly what was done.
//
// Adding a corruption = one class and one register_corruption() call in its
// group's file (robustseg.cpp, lqseg.cpp, extras.cpp).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include "degrade/rng.h"

namespace rsam::degrade {

constexpr int kMinSeverity = 1;
constexpr int kMaxSeverity = 5;
constexpr int kReferenceSeverity = 3;

struct Result {
  cv::Mat image;         // CV_8UC3 RGB, same size as the input
  cv::Mat mask;          // the mask passed to run(), warped if the corruption is geometric
  nlohmann::json drawn;  // every random value drawn for this call
};

class Corruption {
 public:
  virtual ~Corruption() = default;

  // `rgb` must be CV_8UC3 (RGB order) and non-empty. If `mask` is given
  // (any 8-bit single-channel label or binary mask of the image's size),
  // geometric corruptions move it with exactly the image's displacement
  // (nearest-neighbour, labels are never blended); others return it as is.
  // Passing a mask never changes the image bytes.
  Result run(const cv::Mat& rgb, uint64_t seed, const cv::Mat& mask = cv::Mat()) const;

  const std::string& name() const { return name_; }
  int severity() const { return severity_; }
  // The parameters this instance was built with (level table + overrides).
  const nlohmann::json& params() const { return params_; }

 protected:
  // `mask` is null or a clone the corruption may warp in place.
  virtual cv::Mat apply(const cv::Mat& rgb, Rng& rng, nlohmann::json& drawn, cv::Mat* mask) const = 0;

 private:
  friend std::unique_ptr<Corruption> create(const std::string&, int, const nlohmann::json&);
  std::string name_;
  int severity_ = kReferenceSeverity;
  nlohmann::json params_;
};

// What the registry knows about a corruption.
struct Spec {
  std::string name;
  std::string group;    // "robustseg", "lqseg" or "extra"
  std::string summary;  // one line, for --list
  bool geometric = false;   // moves pixels; can warp masks
  bool stochastic = true;   // false: output does not depend on the seed
  // Parameters per severity 1..5 (index 0 = severity 1). A preset without a
  // severity scale (the LQ levels) has exactly one entry, used for every severity.
  std::vector<nlohmann::json> levels;
  std::function<std::unique_ptr<Corruption>(const nlohmann::json& params)> make;
};

void register_corruption(Spec spec);  // rsam::Error on a duplicate name

// All registered corruptions, in registration order (Robust-Seg's 15 in the
// reference order, then LQ-1..3, then the extras).
const std::vector<Spec>& registry();
const Spec& spec(const std::string& name);  // rsam::Error if unknown

// Builds a corruption. `overrides` is a JSON object whose keys must be
// parameters of the level table (rsam::Error otherwise); values replace the
// table's. Severity outside 1..5 is an rsam::Error.
std::unique_ptr<Corruption> create(const std::string& name, int severity = kReferenceSeverity,
                                   const nlohmann::json& overrides = nlohmann::json::object());

// Expands a corruption name or a set name into corruption names:
// "robustseg" (the 15), "lqseg" (lq1, lq2, lq3), "extras", "all", or one name.
std::vector<std::string> expand(const std::string& name_or_set);

// The names of the 15 Robust-Seg corruptions, in RobustSAM's order.
const std::vector<std::string>& robustseg_names();

}  // namespace rsam::degrade
