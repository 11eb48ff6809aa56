// `rsam segment` as one library call: one image, one prompt, the masks out.
// The model is the bundled rsam-tiny (with its GaRA adapter) unless a
// checkpoint is given; arguments, outputs and the prompt's fit to the image
// are checked before the model is loaded; every file is written atomically,
// never onto an input.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

#include "io/fs.h"
#include "model/predictor.h"

namespace rsam::segment {

// Which masks: Auto decodes a lone point into three and keeps the picked one
// (predict_one, what `rsam eval` scores) and any other prompt into the
// single-mask output; Single always the single-mask output; Multi three.
enum class MaskChoice { Auto, Single, Multi };

struct SegmentRun {
  std::string checkpoint, adapter, enhancer;  // empty checkpoint: the bundled rsam-tiny (+ its adapter)
  bool no_adapter = false;
  std::optional<Precision> precision;  // unset: bf16 for the bundled model on native-bf16 CPUs, else fp32
  Prompt prompt;                       // points, labels, box; the mask input comes from `mask_input`
  MaskChoice masks = MaskChoice::Auto;
  Pick pick = Pick::Score;
  int refine = 0;     // rounds of post-refinement (one mask only)
  bool flip = false;  // test-time flip
  // The files, each with the name messages give it (the CLI: its flag).
  io::NamedPath image{"the image", ""};
  io::NamedPath mask_input{"the mask input", ""};  // low-res logits .npy, [S, S] or [1, S, S]
  io::NamedPath out{"the mask", ""};               // the picked mask, a lossless picture
  io::NamedPath overlay{"the overlay", ""};        // the image with the mask and the prompts drawn
  io::NamedPath logits_out{"the logits", ""};      // float32 [N, S, S] .npy
  io::NamedPath embedding_out{"the embedding", ""};  // the one the decoder sees (enhanced, with an enhancer)
  io::NamedPath gates_out{"the gate report", ""};  // gate JSON (+ its .png picture beside it)
};

// Runs it; returns the summary: model, precision, [adapter], [enhancer],
// image size, the masks (score, stability, area), the best one, how it was
// picked, and timings_ms (load, encode, decode, total).
nlohmann::json run(const SegmentRun& run);

// Where the gate picture of a gate report goes: its path with .png.
std::string gates_picture_path(const std::string& report);

}  // namespace rsam::segment
