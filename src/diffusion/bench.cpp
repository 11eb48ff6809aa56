#include "diffusion/bench.h"

#include <sys/resource.h>

#include <chrono>

#include "diffusion/layers.h"
#include "diffusion/sd.h"
#include "diffusion/unet.h"
#include "error.h"
#include "model/checkpoint.h"

namespace rsam::diffusion {

UNetBenchResult bench_unet(UNetConfig cfg, const UNetBenchOptions& o) {
  if (o.channels < 1 || o.size < 8 || o.repeat < 1)
    throw Error("U-Net bench: channels >= 1, a latent side >= 8 and at least one forward");
  UNet2DConditionModel unet{nullptr};
  if (o.unet_dir.empty()) {
    cfg.in_channels = cfg.out_channels = o.channels;
    unet = UNet2DConditionModel(cfg);
    init_random(*unet, 0);
    unet->eval();
  } else {
    unet = load_unet(o.unet_dir);
    cfg = unet->config;
    if (cfg.in_channels != o.channels)
      throw Error("U-Net bench: " + o.unet_dir + " has " + std::to_string(cfg.in_channels) + " input channels, not " +
                  std::to_string(o.channels));
  }
  UNetBenchResult r;
  r.parameters = parameter_count(*unet);
  const auto x = torch::randn({1, o.channels, o.size, o.size});
  const auto text = torch::randn({1, 77, cfg.cross_attention_dim.back()});
  const auto t = torch::tensor(1, torch::kLong);
  torch::NoGradGuard no_grad;
  for (int i = 0; i < o.repeat; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    {
      Bf16Autocast bf16(torch::kCPU, o.bf16);
      unet(x, t, text);
    }
    r.forward_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  r.peak_rss_gb = double(ru.ru_maxrss) / (1 << 20);
  return r;
}

}  // namespace rsam::diffusion
