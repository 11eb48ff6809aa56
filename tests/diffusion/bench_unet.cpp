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
#include <cstdio>
#include <cstring>
#include <string>

#include "diffusion/bench.h"
#include "error.h"
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
  UNetBenchOptions o;
  o.channels = channels;
  o.size = size;
  o.bf16 = precision == "bf16";
  o.repeat = int(repeat);
  const UNetBenchResult r = bench_unet(UNetConfig::from_file(argv[1]), o);
  std::printf("U-Net: %lld parameters, latent [1, %lld, %lld, %lld], %s, %d threads\n", (long long)r.parameters,
              (long long)channels, (long long)size, (long long)size, precision.c_str(), num_threads());
  for (size_t i = 0; i < r.forward_ms.size(); ++i) std::printf("forward %zu: %.2f s\n", i, r.forward_ms[i] / 1e3);
  std::printf("peak RSS: %.2f GB\n", r.peak_rss_gb);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_unet: error: %s\n", e.what());
  return 1;
}
