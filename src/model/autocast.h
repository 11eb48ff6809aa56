// bf16 autocast for a scope, on `device`'s backend (CPU or CUDA), restoring
// the previous state on exit: how the SAM encoder and the diffusion models
// run in bf16. Convolutions and attention scores stay fp32 on the CPU in
// those models; this only switches autocast.
#pragma once

#include <torch/torch.h>

namespace rsam {

class Bf16Autocast {
 public:
  explicit Bf16Autocast(const torch::Device& device, bool on = true);
  ~Bf16Autocast();
  Bf16Autocast(const Bf16Autocast&) = delete;
  Bf16Autocast& operator=(const Bf16Autocast&) = delete;

 private:
  bool on_, cuda_, prev_ = false;
};

}  // namespace rsam
