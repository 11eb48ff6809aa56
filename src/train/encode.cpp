// The differentiable image-encoder pass, with optional gradient
// checkpointing (each block recomputed in the backward pass).
#include <ATen/autocast_mode.h>

#include <mutex>

#include "train/trainer_internal.h"

namespace rsam::train {

using torch::Tensor;

namespace detail {

void set_autocast(bool on, bool cuda) {
  if (cuda) {
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    at::autocast::set_enabled(on);
  } else {
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    at::autocast::set_cpu_enabled(on);
  }
}

}  // namespace detail

namespace {

// Runs one encoder block without keeping its activations; the backward pass
// recomputes it with the same RNG state (GaRA's Gumbel noise, dropout) and
// the same autocast setting, then backpropagates through the recomputation.
struct BlockCheckpoint : torch::autograd::Function<BlockCheckpoint> {
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& x, const Tensor& anchor,
                        int64_t block_address) {
    auto gen = at::detail::getDefaultCPUGenerator();
    {
      std::lock_guard<std::mutex> lock(gen.mutex());
      ctx->saved_data["rng"] = gen.get_state();
    }
    ctx->saved_data["block"] = block_address;  // the module outlives the graph
    ctx->saved_data["autocast"] = x.is_cuda() ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
    ctx->save_for_backward({x});
    auto* block = reinterpret_cast<EncoderBlockImpl*>(block_address);
    return block->forward(x);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    auto* block = reinterpret_cast<EncoderBlockImpl*>(ctx->saved_data["block"].toInt());
    auto gen = at::detail::getDefaultCPUGenerator();
    Tensor now;
    {
      std::lock_guard<std::mutex> lock(gen.mutex());
      now = gen.get_state();
      gen.set_state(ctx->saved_data["rng"].toTensor());
    }
    const bool ac = ctx->saved_data["autocast"].toBool();
    const bool cuda = x.is_cuda();
    const bool prev = cuda ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
    Tensor y;
    {
      torch::AutoGradMode grad(true);
      detail::set_autocast(ac, cuda);
      y = block->forward(x);
      detail::set_autocast(prev, cuda);
    }
    {
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(now);
    }
    torch::autograd::backward({y}, {grads[0]});
    return {x.grad(), Tensor(), Tensor()};
  }
};

}  // namespace

Tensor encode_for_training(Sam& model, const Tensor& images, bool grad_checkpoint) {
  auto& enc = model->image_encoder;
  auto x = enc->patch_embed->forward(images) + enc->pos_embed;
  // An anchor that requires grad keeps checkpointed blocks in the graph
  // even when their input does not (frozen patch embedding).
  auto anchor = torch::ones({1}, x.options().dtype(torch::kFloat32)).requires_grad_(true);
  for (const auto& m : *enc->blocks) {
    auto* block = m->as<EncoderBlock>();
    if (grad_checkpoint && torch::GradMode::is_enabled())
      x = BlockCheckpoint::apply(x, anchor, reinterpret_cast<int64_t>(block));
    else
      x = block->forward(x);
  }
  return enc->neck->forward(x.permute({0, 3, 1, 2}));
}

}  // namespace rsam::train
