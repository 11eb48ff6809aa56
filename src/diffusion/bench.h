// The U-Net figure of `rsam bench` (issue 39): forwards of a U-Net built from
// a config with random weights of the real shapes (timing does not depend on
// the values), at GleSAM's timestep and an SD-shaped text embedding.
#pragma once

#include <string>
#include <vector>

#include "diffusion/config.h"

namespace rsam::diffusion {

struct UNetBenchOptions {
  int64_t channels = 4;   // 256: the CRE-widened U-Net GleSAM runs
  int64_t size = 64;      // latent side: SAM's embedding is 64x64
  bool bf16 = false;      // CPU bf16 autocast (norms stay fp32)
  int repeat = 2;         // the first forward also faults memory in
  // A diffusers unet folder: its config and weights instead of random ones
  // (bench/unet_compare.sh times diffusers on the same files). `channels`
  // must then be the folder's.
  std::string unet_dir;
};

struct UNetBenchResult {
  int64_t parameters = 0;
  std::vector<double> forward_ms;
  double peak_rss_gb = 0;  // the process's peak, read after the forwards
};

UNetBenchResult bench_unet(UNetConfig cfg, const UNetBenchOptions& options);

}  // namespace rsam::diffusion
