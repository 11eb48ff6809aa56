// A Linear layer that an adapter can be attached to without changing the
// state-dict names ("qkv.weight", "qkv.bias"): the adapter is a child module
// named "adapter" that computes the layer's output from (x, W, b).
// The base model owns these layers; adapters live in adapt/.
#pragma once

#include <torch/torch.h>

#include <string>

namespace rsam {

// What an input-dependent adapter may look at besides x. `pooled` is one
// feature vector per image ([B, C_in]); x's leading dimension is B * groups
// (groups = attention windows per image in windowed blocks, else 1).
struct AdapterContext {
  torch::Tensor pooled;
  int64_t images = 0;
};

struct LinearAdapter : torch::nn::Module {
  // Returns the adapted layer output for x [..., C_in].
  virtual torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                                const AdapterContext& ctx) = 0;
  // True when the adapter wants ctx.pooled (input-dependent gates).
  virtual bool needs_pooled() const { return false; }
};

// While one is alive on this thread, AdaptableLinear leaves its weights
// uninitialized (torch::empty touches no page): for a loader that replaces
// every weight right after building the model (load_sam), where the random
// initialization of ~90 M ViT-B weights was most of a load.
class SkipLinearInit {
 public:
  SkipLinearInit();
  ~SkipLinearInit();
  SkipLinearInit(const SkipLinearInit&) = delete;
  SkipLinearInit& operator=(const SkipLinearInit&) = delete;

 private:
  bool previous_;
};

struct AdaptableLinearImpl : torch::nn::Module {
  AdaptableLinearImpl(int64_t in, int64_t out, bool bias = true);
  torch::Tensor forward(const torch::Tensor& x);
  void attach(std::shared_ptr<LinearAdapter> a);
  void detach();
  bool has_adapter() const { return adapter != nullptr; }
  bool wants_pooled() const { return adapter && adapter->needs_pooled(); }

  torch::Tensor weight, bias;
  std::shared_ptr<LinearAdapter> adapter;
  AdapterContext context;  // set by the owning block before each call
  int64_t in_features, out_features;
};
TORCH_MODULE(AdaptableLinear);

}  // namespace rsam
