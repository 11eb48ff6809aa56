// `rsam amg` as one library call: the model (bundled default, checkpoint,
// adapter) loaded once, one image or a folder of images segmented, the
// outputs written safely. A folder run resumes: images whose outputs are
// complete are skipped, and a folder made with other options is refused.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

#include "amg/amg.h"

namespace rsam::amg {

struct AmgRun {
  std::string checkpoint, adapter;  // empty checkpoint: the bundled rsam-tiny (+ its adapter)
  bool no_adapter = false;
  std::string input;   // an image, or a folder of images
  std::string out;     // one image: the records as JSON (RLE modes)
  std::string out_dir; // one image: <i>.png + metadata.csv; a folder: <stem>/ or <stem>.json per image
  std::string overlay; // one image: the overlay picture; a folder: a folder of <stem>.png
  std::optional<OutputMode> mode;  // default: binary_mask with --out-dir, coco_rle with --out
  std::string precision = "fp32";
  AmgOptions options;
};

// Runs it; returns the summary (one image: its mask count, timings and
// profile; a folder: counts of done, skipped and unreadable images).
// rsam::Error for bad flags, inputs or outputs, before the model is loaded.
nlohmann::json run(const AmgRun& run);

}  // namespace rsam::amg
