// Timing of the image encoder and the mask decoder (`rsam bench`), with an
// optional adapter timed against the plain model in interleaved pairs.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "model/predictor.h"

namespace rsam {

struct BenchOptions {
  std::string checkpoint;  // the model timed, or else
  std::string model;       // a preset (vit_b, vit_l, vit_h) with random weights
  Precision precision = Precision::FP32;
  std::string adapter;  // method name or config file: also time the adapted encoder
  int repeat = 3, decode_repeat = 20;
  bool reference_attention = false;
  // Decodes timed in pairs against the reference decoder (the official
  // formulation, set_reference_decoder) in the same run; per-op tables too.
  bool compare_decoder = true, profile = false;
  int batch = 16;  // prompts in the batched decode (predict_batch); 0: skip
};

// Runs the timings on a synthetic image of the model's input size and returns
// them: model, precision, threads, blas_threads, omp_wait_policy, image_size,
// attention, encode_ms[], decode_ms[], encode_median_ms, decode_median_ms and
// with an adapter: adapter, adapter_params, adapted_encode_ms[],
// adapted_encode_median_ms, overhead_ratio_median (median of per-pair ratios).
// Also: load_ms (a checkpoint's load_sam), segment_ms[] (what `rsam segment`
// decodes: one point, three masks, the picked one at 1024x768), batch_ms[]
// (per prompt of a predict_batch of `batch` points), each with its reference
// twin (*_reference_ms) and median ratio when compare_decoder, peak_rss_mb,
// and with profile: per-op tables {decode, segment, ...} (bench/profile.h).
nlohmann::json run_bench(const BenchOptions& o);

}  // namespace rsam
