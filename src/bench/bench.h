// Timing of the image encoder and the mask decoder (`rsam bench`), with an
// optional adapter timed against the plain model in interleaved pairs.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "model/attention.h"
#include "model/predictor.h"

namespace rsam {

struct BenchOptions {
  std::string checkpoint;  // the model timed, or else
  std::string model;       // a preset (vit_b, vit_l, vit_h) with random weights
  Precision precision = Precision::FP32;
  std::string adapter;  // method name or config file: also time the adapted encoder
  int repeat = 3, decode_repeat = 20;
  AttentionPath attention = AttentionPath::Fastest;  // model/attention.h
  bool reference_gemm = false;                       // torch's fp32 GEMMs instead of oneDNN's (model/gemm.h)
  // Decodes timed in pairs against the reference decoder (the official
  // formulation, set_reference_decoder) in the same run; per-op tables too.
  bool compare_decoder = true, profile = false;
  int batch = 16;  // prompts in the batched decode (predict_batch); 0: skip
};

// Runs the timings on a synthetic image of the model's input size and returns
// them: model, precision, threads, blas_threads, omp_wait_policy, image_size,
// attention, gemm, encode_ms[], decode_ms[], encode_median_ms, decode_median_ms and
// with an adapter: adapter, adapter_params, adapted_encode_ms[],
// adapted_encode_median_ms, overhead_ratio_median (median of per-pair ratios).
// Also: load_ms (a checkpoint's load_sam), segment_ms[] (what `rsam segment`
// decodes: one point, three masks, the picked one at 1024x768), batch_ms[]
// (per prompt of a predict_batch of `batch` points), each with its reference
// twin (*_reference_ms) and median ratio when compare_decoder, peak_rss_mb,
// and with profile: per-op tables {decode, segment, ...} (bench/profile.h).
nlohmann::json run_bench(const BenchOptions& o);

// Everything `rsam bench` can be asked, as its flags say it.
struct BenchRequest {
  std::string checkpoint, model;   // SAM: exactly one (or model for GleSAM's SAM)
  std::string precision = "fp32";  // fp32 or bf16
  std::string adapter;
  std::string unet;           // a diffusers unet/config.json (random weights) or a unet folder (its weights)
  std::string enhancer_unet;  // GleSAM: the enhancer's U-Net config
  int repeat = 3, decode_repeat = 20, batch = 16, train_steps = 1;
  int64_t unet_channels = 4;
  std::string attention = "fastest";  // fastest, chunked or reference
  bool reference_gemm = false, profile = false, compare_decoder = true;
};

// Runs what the request names, on the threads the caller set up:
// GleSAM's enhancer (glesam/bench.h) with enhancer_unet, a diffusion U-Net's
// forward (diffusion/bench.h) with unet, else run_bench. Returns the report.
nlohmann::json run_bench_request(const BenchRequest& r);

// A report of run_bench_request as the lines `rsam bench` prints.
std::string format_bench(const nlohmann::json& report);

}  // namespace rsam
