// One forward of a U-Net built from a config.json with random weights: the
// figure `rsam bench` is to report for GleSAM's U-Net (not a test).
//
//   bench_unet CONFIG.json [--size 64] [--channels 4] [--threads 2]
//              [--precision fp32|bf16] [--repeat 2] [--cache 1]
//
// --channels 256 builds the CRE-widened U-Net (conv_in/conv_out at 256).
// --cache 0 leaves torch's allocator as it is (the CLI installs rsam's
// caching allocator; without it each forward faults its memory in again).
// Prints the time of each forward and the process's peak RSS.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "diffusion/sd.h"
#include "error.h"
#include "model/checkpoint.h"
#include "model/runtime.h"

using namespace rsam;
using namespace rsam::diffusion;

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_unet CONFIG.json [--size N] [--channels C] [--threads T] "
                         "[--precision fp32|bf16] [--repeat R] [--cache 0|1]\n");
    return 2;
  }
  int64_t size = 64, channels = 4, threads = 2, repeat = 2, cache = 1;
  std::string precision = "fp32";
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--size") size = std::stoll(v);
    else if (k == "--channels") channels = std::stoll(v);
    else if (k == "--threads") threads = std::stoll(v);
    else if (k == "--precision") precision = v;
    else if (k == "--repeat") repeat = std::stoll(v);
    else if (k == "--cache") cache = std::stoll(v);
    else throw Error("unknown option " + k);
  }
  set_threads(int(threads));
  if (cache) use_caching_cpu_allocator();
  auto cfg = UNetConfig::from_file(argv[1]);
  cfg.in_channels = cfg.out_channels = channels;
  UNet2DConditionModel unet(cfg);
  init_random(*unet, 0);
  unet->eval();
  std::printf("U-Net: %lld parameters, latent [1, %lld, %lld, %lld], %s, %d threads\n",
              (long long)parameter_count(*unet), (long long)channels, (long long)size, (long long)size,
              precision.c_str(), num_threads());
  const auto x = torch::randn({1, channels, size, size});
  const auto ehs = torch::randn({1, 77, cfg.cross_attention_dim.back()});
  const auto t = torch::tensor(1, torch::kLong);
  torch::NoGradGuard ng;
  for (int64_t r = 0; r < repeat; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    torch::Tensor y;
    {
      Bf16Autocast bf16(torch::kCPU, precision == "bf16");
      y = unet(x, t, ehs);
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("forward %lld: %.2f s (output mean |y| %.4f)\n", (long long)r, s,
                y.abs().mean().item<double>());
  }
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  std::printf("peak RSS: %.2f GB\n", double(ru.ru_maxrss) / (1 << 20));
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_unet: error: %s\n", e.what());
  return 1;
}
