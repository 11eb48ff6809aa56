// diffusers' UNet2DConditionModel (v0.27) for Stable Diffusion 1.x/2.x, on
// LibTorch. Module and parameter names equal diffusers' state-dict keys one
// to one ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"),
// so a diffusion_pytorch_model.safetensors loads by name with no table.
// Each forward follows diffusers operation by operation.
#pragma once

#include <torch/torch.h>

#include <functional>

#include <optional>
#include <utility>
#include <vector>

#include "diffusion/config.h"
#include "diffusion/layers.h"

namespace rsam::diffusion {

struct ResnetBlock2DImpl : torch::nn::Module {
  ResnetBlock2DImpl(int64_t in, int64_t out, int64_t temb, int64_t groups, double eps, Act act, double out_scale);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb);
  torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  Conv2d conv1{nullptr}, conv2{nullptr}, conv_shortcut{nullptr};
  Linear time_emb_proj{nullptr};
  Act act;
  double output_scale_factor;
};
TORCH_MODULE(ResnetBlock2D);

// diffusers' Attention with the default processor: q/k/v without bias,
// to_out.0 with bias, `heads` heads of width dim_head.
struct AttentionImpl : torch::nn::Module {
  AttentionImpl(int64_t query_dim, int64_t context_dim, int64_t heads, int64_t dim_head, bool upcast);
  // context: encoder_hidden_states for cross-attention, undefined for self.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context = {});
  Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};
  torch::nn::ModuleList to_out{nullptr};
  int64_t heads;
  double scale;
  bool upcast;
};
TORCH_MODULE(Attention);

// FeedForward with GEGLU: net.0.proj gives twice the inner width (value and
// gate), net.2 projects back; net.1 is a dropout.
struct GEGLUImpl : torch::nn::Module {
  GEGLUImpl(int64_t in, int64_t inner);
  torch::Tensor forward(const torch::Tensor& x);
  Linear proj{nullptr};
};
TORCH_MODULE(GEGLU);

struct FeedForwardImpl : torch::nn::Module {
  explicit FeedForwardImpl(int64_t dim);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::ModuleList net{nullptr};
};
TORCH_MODULE(FeedForward);

struct BasicTransformerBlockImpl : torch::nn::Module {
  BasicTransformerBlockImpl(int64_t dim, int64_t heads, int64_t dim_head, int64_t context_dim, bool upcast);
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& context);
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr}, norm3{nullptr};
  Attention attn1{nullptr}, attn2{nullptr};
  FeedForward ff{nullptr};
};
TORCH_MODULE(BasicTransformerBlock);

struct Transformer2DModelImpl : torch::nn::Module {
  Transformer2DModelImpl(int64_t channels, int64_t heads, int64_t layers, int64_t context_dim, int64_t groups,
                         bool linear_projection, bool upcast);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context);
  torch::nn::GroupNorm norm{nullptr};
  // proj_in / proj_out are Linear (SD-2.x, use_linear_projection) or 1x1
  // Conv2d (SD-1.x); one of each pair is set.
  Linear proj_in_linear{nullptr}, proj_out_linear{nullptr};
  Conv2d proj_in_conv{nullptr}, proj_out_conv{nullptr};
  torch::nn::ModuleList transformer_blocks{nullptr};
};
TORCH_MODULE(Transformer2DModel);

struct Downsample2DImpl : torch::nn::Module {
  Downsample2DImpl(int64_t channels, int64_t padding);
  torch::Tensor forward(const torch::Tensor& x);
  Conv2d conv{nullptr};
  int64_t padding;
};
TORCH_MODULE(Downsample2D);

struct Upsample2DImpl : torch::nn::Module {
  explicit Upsample2DImpl(int64_t channels);
  // size: the output size when the latent is not a multiple of the
  // network's total downsampling, else doubled.
  torch::Tensor forward(const torch::Tensor& x, const std::vector<int64_t>& size = {});
  Conv2d conv{nullptr};
};
TORCH_MODULE(Upsample2D);

// CrossAttnDownBlock2D (with attentions) or DownBlock2D (without).
struct DownBlockImpl : torch::nn::Module {
  DownBlockImpl(const UNetConfig& c, size_t i, int64_t in, int64_t out, bool add_downsample);
  // Returns the block output and the states the up path reads as skips.
  std::pair<torch::Tensor, std::vector<torch::Tensor>> forward(torch::Tensor x, const torch::Tensor& temb,
                                                               const torch::Tensor& context);
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr}, downsamplers{nullptr};
};
TORCH_MODULE(DownBlock);

struct MidBlockImpl : torch::nn::Module {
  MidBlockImpl(const UNetConfig& c, int64_t channels);
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context);
  torch::nn::ModuleList attentions{nullptr}, resnets{nullptr};
};
TORCH_MODULE(MidBlock);

// CrossAttnUpBlock2D or UpBlock2D: each resnet reads cat([x, skip]).
struct UpBlockImpl : torch::nn::Module {
  UpBlockImpl(const UNetConfig& c, size_t i, int64_t in, int64_t prev_out, int64_t out, bool add_upsample);
  // skips: the down path's states; this block consumes from the back.
  torch::Tensor forward(torch::Tensor x, std::vector<torch::Tensor>& skips, const torch::Tensor& temb,
                        const torch::Tensor& context, const std::vector<int64_t>& upsample_size);
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr}, upsamplers{nullptr};
};
TORCH_MODULE(UpBlock);

struct TimestepEmbeddingImpl : torch::nn::Module {
  TimestepEmbeddingImpl(int64_t in, int64_t dim, Act act, std::optional<Act> post_act);
  torch::Tensor forward(const torch::Tensor& x);
  Linear linear_1{nullptr}, linear_2{nullptr};
  Act act;
  std::optional<Act> post_act;
};
TORCH_MODULE(TimestepEmbedding);

// diffusers' get_timestep_embedding: [N] timesteps -> [N, dim] sinusoids.
torch::Tensor timestep_embedding(const torch::Tensor& timesteps, int64_t dim, bool flip_sin_to_cos,
                                 double freq_shift);

struct UNet2DConditionModelImpl : torch::nn::Module {
  explicit UNet2DConditionModelImpl(const UNetConfig& cfg);
  // sample [B, in, H, W]; timesteps: a scalar or [B] (long or float);
  // encoder_hidden_states [B or 1, S, cross_attention_dim]. Returns
  // diffusers' `.sample` [B, out, H, W].
  torch::Tensor forward(torch::Tensor sample, const torch::Tensor& timesteps,
                        const torch::Tensor& encoder_hidden_states);
  UNetConfig config;
  // Runs each down, mid and up block (fn on the block's tensors) while
  // gradients are recorded; empty: directly. A trainer sets one that
  // recomputes the block in the backward pass instead of keeping its
  // activations (diffusers' enable_gradient_checkpointing; train::grad_checkpoint).
  using BlockFn = std::function<std::vector<torch::Tensor>(const std::vector<torch::Tensor>&)>;
  std::function<std::vector<torch::Tensor>(const BlockFn&, const std::vector<torch::Tensor>&)> gradient_checkpointing;
  Conv2d conv_in{nullptr}, conv_out{nullptr};
  TimestepEmbedding time_embedding{nullptr};
  torch::nn::ModuleList down_blocks{nullptr}, up_blocks{nullptr};
  MidBlock mid_block{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};
  std::optional<Act> time_embed_act;
};
TORCH_MODULE(UNet2DConditionModel);

}  // namespace rsam::diffusion
