// The differentiable image-encoder pass, with optional gradient
// checkpointing (each block recomputed in the backward pass); the same
// checkpointing runs GleSAM's U-Net blocks (diffusion/unet.h).
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

// The block a checkpoint recomputes, held by the graph until its backward pass.
struct BlockHolder : torch::CustomClassHolder {
  explicit BlockHolder(BlockFn f) : fn(std::move(f)) {}
  BlockFn fn;
};

// Runs one block without keeping its activations; the backward pass
// recomputes it with the same RNG state (GaRA's Gumbel noise, dropout) and
// the same autocast setting, then backpropagates through the recomputation.
// The last input is an anchor that requires grad: it keeps the block in the
// graph even when no other input does (a frozen patch embedding).
struct BlockCheckpoint : torch::autograd::Function<BlockCheckpoint> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, at::TensorList inputs,
                                                const c10::intrusive_ptr<BlockHolder>& block) {
    auto gen = at::detail::getDefaultCPUGenerator();
    {
      std::lock_guard<std::mutex> lock(gen.mutex());
      ctx->saved_data["rng"] = gen.get_state();
    }
    const std::vector<Tensor> in(inputs.begin(), inputs.end() - 1);
    c10::List<bool> needs;
    for (const auto& t : in) needs.push_back(t.requires_grad());
    ctx->saved_data["needs_grad"] = needs;
    ctx->saved_data["block"] = c10::IValue::make_capsule(block);
    ctx->saved_data["autocast"] = in[0].is_cuda() ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
    ctx->save_for_backward(in);
    return block->fn(in);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto needs = ctx->saved_data["needs_grad"].toBoolList();
    std::vector<Tensor> in;
    for (const auto& t : ctx->get_saved_variables()) {
      in.push_back(t.detach());
      if (needs.get(in.size() - 1)) in.back().requires_grad_(true);
    }
    const auto block = c10::static_intrusive_pointer_cast<BlockHolder>(ctx->saved_data["block"].toCapsule());
    auto gen = at::detail::getDefaultCPUGenerator();
    Tensor now;
    {
      std::lock_guard<std::mutex> lock(gen.mutex());
      now = gen.get_state();
      gen.set_state(ctx->saved_data["rng"].toTensor());
    }
    const bool ac = ctx->saved_data["autocast"].toBool();
    const bool cuda = in[0].is_cuda();
    const bool prev = cuda ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
    std::vector<Tensor> out;
    {
      torch::AutoGradMode grad(true);
      detail::set_autocast(ac, cuda);
      // A scope of its own: the casts it caches (trainable weights) must not
      // outlive it, or the next step's forward pass would reuse them stale.
      at::autocast::increment_nesting();
      out = block->fn(in);
      if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
      detail::set_autocast(prev, cuda);
    }
    {
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(now);
    }
    std::vector<Tensor> ys, gs;
    for (size_t i = 0; i < out.size(); ++i)
      if (out[i].requires_grad() && grads[i].defined()) ys.push_back(out[i]), gs.push_back(grads[i]);
    if (!ys.empty()) torch::autograd::backward(ys, gs);
    torch::autograd::variable_list result;
    for (const auto& t : in) result.push_back(t.requires_grad() ? t.grad() : Tensor());
    result.push_back(Tensor());  // the anchor
    result.push_back(Tensor());  // the block
    return result;
  }
};

}  // namespace

std::vector<Tensor> grad_checkpoint(const BlockFn& fn, const std::vector<Tensor>& inputs) {
  std::vector<Tensor> all = inputs;
  all.push_back(torch::ones({1}, inputs.at(0).options().dtype(torch::kFloat32)).requires_grad_(true));
  return BlockCheckpoint::apply(at::TensorList(all), c10::make_intrusive<BlockHolder>(fn));
}

Tensor encode_for_training(Sam& model, const Tensor& images, bool grad_checkpoint) {
  auto& enc = model->image_encoder;
  auto x = enc->patch_embed->forward(images) + enc->pos_embed;
  for (const auto& m : *enc->blocks) {
    auto* block = m->as<EncoderBlock>();  // the module outlives the graph
    if (grad_checkpoint && torch::GradMode::is_enabled())
      x = train::grad_checkpoint(
          [block](const std::vector<Tensor>& in) { return std::vector<Tensor>{block->forward(in[0])}; }, {x})[0];
    else
      x = block->forward(x);
  }
  return enc->neck->forward(x.permute({0, 3, 1, 2}));
}

}  // namespace rsam::train
