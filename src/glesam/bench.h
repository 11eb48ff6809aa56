// The GleSAM figures of `rsam bench --enhancer-unet CONFIG` (issue 40):
// random weights of the real shapes (a SAM preset, a U-Net from a diffusers
// config widened by CRE to the SAM's embedding width), timed as a user runs
// them: encode, enhancement (once per image), decode per prompt with and
// without the enhanced embedding, peak memory, and one stage-1 training
// step (LoRA on the U-Net, MSE on x0, backward, Adam).
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace rsam::glesam {

struct EnhancerBenchOptions {
  std::string sam = "vit_b";  // a SamConfig preset
  std::string unet_config;    // diffusers unet/config.json (SD-2.1-base's for the paper's setting)
  bool bf16 = false;          // SAM encoder and U-Net under rsam's bf16 autocast
  int repeat = 2;             // encodes and enhancements (the first also faults memory in)
  int decode_repeat = 10;
  int train_steps = 1;  // 0: skip the training step
  int64_t lora_rank = 8;
};

// {sam, unet_parameters, channels, precision, threads, encode_ms[],
//  enhance_ms[], decode_ms[], decode_enhanced_ms[], decode_ratio_median,
//  peak_rss_gb_inference, train_step_ms[], lora_parameters, peak_rss_gb}
nlohmann::json bench_enhancer(const EnhancerBenchOptions& o);

}  // namespace rsam::glesam
