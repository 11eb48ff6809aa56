// `rsam demo` as one library call: a handful of synthetic scenes, clean and
// under several corruptions, segmented from one interior point per object by
// the base model, the base with its adapter (GaRA for the bundled
// rsam-tiny) and, given a GleSAM enhancer, the enhanced base and the adapted
// encoder with the enhancer. The IoUs are means over every prompted object,
// so the picture (one example per method and condition, the means beneath)
// says what each method does rather than what it did to one scene.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

#include "io/fs.h"
#include "model/predictor.h"

namespace rsam::segment {

struct DemoOptions {
  std::string checkpoint, adapter;  // empty checkpoint: the bundled rsam-tiny and its GaRA adapter
  std::string enhancer;             // a GleSAM E.json: adds glesam and <adapter>+glesam; empty checkpoint:
                                    // the bundled rsam-tiny's own enhancer
  bool no_enhancer = false;         // without the bundled enhancer
  std::vector<std::string> corruptions = {"fog", "gauss_noise", "motion_blur"};
  int severity = 3;
  int scenes = 4;   // scenes the means run over
  int objects = 3;  // objects prompted per scene at most, the largest first
  int size = 256;   // scene side in pixels (rsam-tiny's training scenes)
  uint64_t seed = 0;
  std::optional<Precision> precision;  // unset: bf16 for the bundled model on native-bf16 CPUs, else fp32
  io::NamedPath out{"the picture", ""};
};

// Runs it and writes the picture; returns the summary: the methods, the
// conditions ("clean" then the corruptions), mean_iou[method][condition],
// the scene and object counts, and the files used. rsam::Error for a bad
// corruption, severity or count, or an unusable output, before any model
// is loaded.
nlohmann::json demo(const DemoOptions& o);

}  // namespace rsam::segment
