// Each forward transcribes diffusers 0.27 (models/resnet.py, attention.py,
// attention_processor.py's AttnProcessor, transformers/transformer_2d.py,
// unets/unet_2d_blocks.py, unets/unet_2d_condition.py) in the same order of
// operations, so fp32 results agree to rounding.
#include "diffusion/unet.h"

#include <cmath>

#include "error.h"
#include "model/attention.h"
#include "model/gemm.h"

namespace rsam::diffusion {

namespace F = torch::nn::functional;
using torch::Tensor;

namespace {

torch::nn::GroupNorm group_norm(int64_t groups, int64_t channels, double eps) {
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, channels).eps(eps));
}

// Query rows per attention chunk so one chunk's score map stays near 2^26
// floats: SD's 64x64 latent has 4096 tokens, whose full map over 8 heads
// would be 512 MB (and the same again for the softmax).
constexpr int64_t kMaxScoreElems = int64_t(1) << 26;

}  // namespace

// ---- ResnetBlock2D -----------------------------------------------------------

ResnetBlock2DImpl::ResnetBlock2DImpl(int64_t in, int64_t out, int64_t temb, int64_t groups, double eps, Act a,
                                     double out_scale)
    : act(a), output_scale_factor(out_scale) {
  norm1 = register_module("norm1", group_norm(groups, in, eps));
  conv1 = register_module("conv1", Conv2d(in, out, 3, 1, 1));
  time_emb_proj = register_module("time_emb_proj", Linear(temb, out));
  norm2 = register_module("norm2", group_norm(groups, out, eps));
  conv2 = register_module("conv2", Conv2d(out, out, 3, 1, 1));
  if (in != out) conv_shortcut = register_module("conv_shortcut", Conv2d(in, out, 1));
}

Tensor ResnetBlock2DImpl::forward(const Tensor& input, const Tensor& temb) {
  auto h = apply_act(act, norm_fp32(norm1, input));
  h = conv1(h);
  auto t = time_emb_proj(apply_act(act, temb)).unsqueeze(-1).unsqueeze(-1);
  h = h + t;
  h = apply_act(act, norm_fp32(norm2, h));
  h = conv2(h);
  auto x = conv_shortcut.is_empty() ? input : conv_shortcut(input);
  return (x + h) / output_scale_factor;
}

// ---- attention -------------------------------------------------------------------

AttentionImpl::AttentionImpl(int64_t query_dim, int64_t context_dim, int64_t h, int64_t dim_head, bool up)
    : heads(h), scale(std::pow(double(dim_head), -0.5)), upcast(up) {
  const int64_t inner = h * dim_head;
  to_q = register_module("to_q", Linear(query_dim, inner, false));
  to_k = register_module("to_k", Linear(context_dim, inner, false));
  to_v = register_module("to_v", Linear(context_dim, inner, false));
  to_out = register_module("to_out", torch::nn::ModuleList());
  to_out->push_back(Linear(inner, query_dim, true));
}

Tensor AttentionImpl::forward(const Tensor& x, const Tensor& context_in) {
  const auto& ctx = context_in.defined() ? context_in : x;
  const int64_t B = x.size(0), N = x.size(1), M = ctx.size(1);
  auto q = to_q(x), k = to_k(ctx), v = to_v(ctx);
  const int64_t d = q.size(2) / heads;
  // head_to_batch_dim: [B, N, h*d] -> [B*h, N, d].
  auto split = [&](const Tensor& t, int64_t n) {
    return t.reshape({B, n, heads, d}).permute({0, 2, 1, 3}).reshape({B * heads, n, d});
  };
  q = split(q, N);
  auto kt = split(k, M).transpose(1, 2);
  auto vv = bf16_safe_rhs(split(v, M));
  // CPU bf16 (autocast): scores and softmax in fp32, where bf16 loses most;
  // upcast_attention asks the same of fp16 on GPUs. In fp32 a no-op.
  const bool fp32_scores = upcast || cpu_bf16(x);
  const int64_t rows = std::max<int64_t>(1, std::min<int64_t>(N, kMaxScoreElems / std::max<int64_t>(1, B * heads * M)));
  std::vector<Tensor> parts;
  for (int64_t r0 = 0; r0 < N; r0 += rows) {
    auto qc = q.narrow(1, r0, std::min(rows, N - r0));
    // baddbmm(.., beta=0, alpha=scale) as diffusers: scale applied to q k^T.
    auto s = gemm::matmul(qc, kt) * scale;
    auto p = fp32_scores ? s.to(torch::kFloat32).softmax(-1) : s.softmax(-1);
    parts.push_back(gemm::matmul(p.to(qc.scalar_type()), vv));  // probs back in q's dtype, as diffusers
  }
  auto o = parts.size() == 1 ? parts[0] : torch::cat(parts, 1);
  // batch_to_head_dim: [B*h, N, d] -> [B, N, h*d].
  o = o.reshape({B, heads, N, d}).permute({0, 2, 1, 3}).reshape({B, N, heads * d});
  return to_out[0]->as<Linear>()->forward(o);
}

GEGLUImpl::GEGLUImpl(int64_t in, int64_t inner) { proj = register_module("proj", Linear(in, inner * 2)); }

Tensor GEGLUImpl::forward(const Tensor& x) {
  auto hg = proj(x).chunk(2, -1);
  return hg[0] * torch::gelu(hg[1]);
}

FeedForwardImpl::FeedForwardImpl(int64_t dim) {
  const int64_t inner = dim * 4;
  net = register_module("net", torch::nn::ModuleList());
  net->push_back(GEGLU(dim, inner));
  net->push_back(torch::nn::Dropout(0.0));  // net.1: keeps net.2's index
  net->push_back(Linear(inner, dim));
}

Tensor FeedForwardImpl::forward(const Tensor& x) {
  return net[2]->as<Linear>()->forward(net[0]->as<GEGLU>()->forward(x));
}

BasicTransformerBlockImpl::BasicTransformerBlockImpl(int64_t dim, int64_t heads, int64_t dim_head,
                                                     int64_t context_dim, bool upcast) {
  auto ln = [&] { return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-5)); };
  norm1 = register_module("norm1", ln());
  attn1 = register_module("attn1", Attention(dim, dim, heads, dim_head, upcast));
  norm2 = register_module("norm2", ln());
  attn2 = register_module("attn2", Attention(dim, context_dim, heads, dim_head, upcast));
  norm3 = register_module("norm3", ln());
  ff = register_module("ff", FeedForward(dim));
}

Tensor BasicTransformerBlockImpl::forward(Tensor x, const Tensor& context) {
  x = attn1(norm_fp32(norm1, x)) + x;
  x = attn2(norm_fp32(norm2, x), context) + x;
  return ff(norm_fp32(norm3, x)) + x;
}

Transformer2DModelImpl::Transformer2DModelImpl(int64_t ch, int64_t heads, int64_t layers, int64_t context_dim,
                                               int64_t groups, bool linear, bool upcast) {
  const int64_t dim_head = ch / heads, inner = heads * dim_head;
  // The transformer's GroupNorm has a fixed eps, unlike the resnets'.
  norm = register_module("norm", group_norm(groups, ch, 1e-6));
  if (linear)
    proj_in_linear = register_module("proj_in", Linear(ch, inner));
  else
    proj_in_conv = register_module("proj_in", Conv2d(ch, inner, 1));
  transformer_blocks = register_module("transformer_blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < layers; ++i)
    transformer_blocks->push_back(BasicTransformerBlock(inner, heads, dim_head, context_dim, upcast));
  if (linear)
    proj_out_linear = register_module("proj_out", Linear(inner, ch));
  else
    proj_out_conv = register_module("proj_out", Conv2d(inner, ch, 1));
}

Tensor Transformer2DModelImpl::forward(const Tensor& x, const Tensor& context) {
  const int64_t B = x.size(0), H = x.size(2), W = x.size(3);
  auto to_tokens = [&](const Tensor& t) { return t.permute({0, 2, 3, 1}).reshape({B, H * W, t.size(1)}); };
  auto to_map = [&](const Tensor& t) { return t.reshape({B, H, W, t.size(2)}).permute({0, 3, 1, 2}).contiguous(); };
  auto h = norm_fp32(norm, x);
  h = proj_in_linear.is_empty() ? to_tokens(proj_in_conv(h)) : proj_in_linear(to_tokens(h));
  for (auto& blk : *transformer_blocks) h = blk->as<BasicTransformerBlock>()->forward(h, context);
  h = proj_out_linear.is_empty() ? proj_out_conv(to_map(h)) : to_map(proj_out_linear(h));
  return h + x;
}

// ---- samplers ----------------------------------------------------------------------

Downsample2DImpl::Downsample2DImpl(int64_t ch, int64_t pad) : padding(pad) {
  conv = register_module("conv", Conv2d(ch, ch, 3, 2, pad));
}

Tensor Downsample2DImpl::forward(const Tensor& x) {
  // Padding 0 means "pad right and bottom by one" (diffusers' asymmetric pad).
  if (padding == 0) return conv(F::pad(x, F::PadFuncOptions({0, 1, 0, 1})));
  return conv(x);
}

Upsample2DImpl::Upsample2DImpl(int64_t ch) { conv = register_module("conv", Conv2d(ch, ch, 3, 1, 1)); }

Tensor Upsample2DImpl::forward(const Tensor& x_in, const std::vector<int64_t>& size) {
  // diffusers upsamples bf16 in fp32 (nearest interpolation lacked bf16).
  const auto dtype = x_in.scalar_type();
  auto x = dtype == torch::kBFloat16 ? x_in.to(torch::kFloat32) : x_in;
  auto opts = F::InterpolateFuncOptions().mode(torch::kNearest);
  if (size.empty())
    opts.scale_factor(std::vector<double>{2.0, 2.0});
  else
    opts.size(size);
  x = F::interpolate(x, opts);
  if (dtype == torch::kBFloat16) x = x.to(dtype);
  return conv(x);
}

// ---- blocks ------------------------------------------------------------------------

namespace {
ResnetBlock2D resnet(const UNetConfig& c, int64_t in, int64_t out, double scale = 1.0) {
  return ResnetBlock2D(in, out, c.time_embed_dim(), c.norm_num_groups, c.norm_eps, parse_act(c.act_fn), scale);
}
Transformer2DModel transformer(const UNetConfig& c, int64_t ch, int64_t heads, int64_t layers, int64_t ctx) {
  return Transformer2DModel(ch, heads, layers, ctx, c.norm_num_groups, c.use_linear_projection, c.upcast_attention);
}
}  // namespace

DownBlockImpl::DownBlockImpl(const UNetConfig& c, size_t i, int64_t in, int64_t out, bool add_downsample) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  const bool cross = c.down_cross(i);
  if (cross) attentions = register_module("attentions", torch::nn::ModuleList());
  for (int64_t l = 0; l < c.layers_per_block[i]; ++l) {
    resnets->push_back(resnet(c, l == 0 ? in : out, out));
    if (cross)
      attentions->push_back(transformer(c, out, c.attention_head_dim[i], c.transformer_layers_per_block[i],
                                        c.cross_attention_dim[i]));
  }
  if (add_downsample) {
    downsamplers = register_module("downsamplers", torch::nn::ModuleList());
    downsamplers->push_back(Downsample2D(out, c.downsample_padding));
  }
}

std::pair<Tensor, std::vector<Tensor>> DownBlockImpl::forward(Tensor x, const Tensor& temb, const Tensor& ctx) {
  std::vector<Tensor> states;
  for (size_t l = 0; l < resnets->size(); ++l) {
    x = resnets[l]->as<ResnetBlock2D>()->forward(x, temb);
    if (!attentions.is_empty()) x = attentions[l]->as<Transformer2DModel>()->forward(x, ctx);
    states.push_back(x);
  }
  if (!downsamplers.is_empty()) {
    x = downsamplers[0]->as<Downsample2D>()->forward(x);
    states.push_back(x);
  }
  return {x, states};
}

MidBlockImpl::MidBlockImpl(const UNetConfig& c, int64_t ch) {
  const size_t last = c.num_blocks() - 1;
  attentions = register_module("attentions", torch::nn::ModuleList());
  resnets = register_module("resnets", torch::nn::ModuleList());
  // The mid block takes the last entry of every per-block setting.
  resnets->push_back(resnet(c, ch, ch, c.mid_block_scale_factor));
  attentions->push_back(transformer(c, ch, c.attention_head_dim[last], c.transformer_layers_per_block[last],
                                    c.cross_attention_dim[last]));
  resnets->push_back(resnet(c, ch, ch, c.mid_block_scale_factor));
}

Tensor MidBlockImpl::forward(Tensor x, const Tensor& temb, const Tensor& ctx) {
  x = resnets[0]->as<ResnetBlock2D>()->forward(x, temb);
  x = attentions[0]->as<Transformer2DModel>()->forward(x, ctx);
  return resnets[1]->as<ResnetBlock2D>()->forward(x, temb);
}

UpBlockImpl::UpBlockImpl(const UNetConfig& c, size_t i, int64_t in, int64_t prev_out, int64_t out, bool add_upsample) {
  // Up block i mirrors down block n-1-i: its settings are the lists reversed.
  const size_t r = c.num_blocks() - 1 - i;
  const int64_t layers = c.layers_per_block[r] + 1;
  const bool cross = c.up_cross(i);
  resnets = register_module("resnets", torch::nn::ModuleList());
  if (cross) attentions = register_module("attentions", torch::nn::ModuleList());
  for (int64_t l = 0; l < layers; ++l) {
    const int64_t skip = l == layers - 1 ? in : out;
    const int64_t res_in = l == 0 ? prev_out : out;
    resnets->push_back(resnet(c, res_in + skip, out));
    if (cross)
      attentions->push_back(transformer(c, out, c.attention_head_dim[r], c.transformer_layers_per_block[r],
                                        c.cross_attention_dim[r]));
  }
  if (add_upsample) {
    upsamplers = register_module("upsamplers", torch::nn::ModuleList());
    upsamplers->push_back(Upsample2D(out));
  }
}

Tensor UpBlockImpl::forward(Tensor x, std::vector<Tensor>& skips, const Tensor& temb, const Tensor& ctx,
                            const std::vector<int64_t>& upsample_size) {
  for (size_t l = 0; l < resnets->size(); ++l) {
    x = torch::cat({x, skips.back()}, 1);
    skips.pop_back();
    x = resnets[l]->as<ResnetBlock2D>()->forward(x, temb);
    if (!attentions.is_empty()) x = attentions[l]->as<Transformer2DModel>()->forward(x, ctx);
  }
  if (!upsamplers.is_empty()) x = upsamplers[0]->as<Upsample2D>()->forward(x, upsample_size);
  return x;
}

// ---- time embedding ----------------------------------------------------------------

Tensor timestep_embedding(const Tensor& timesteps, int64_t dim, bool flip_sin_to_cos, double freq_shift) {
  const int64_t half = dim / 2;
  auto exponent = torch::arange(0, half, torch::TensorOptions().dtype(torch::kFloat32).device(timesteps.device())) *
                  (-std::log(10000.0));
  exponent = exponent / (double(half) - freq_shift);
  auto emb = timesteps.unsqueeze(1).to(torch::kFloat32) * torch::exp(exponent).unsqueeze(0);
  emb = torch::cat({torch::sin(emb), torch::cos(emb)}, -1);
  if (flip_sin_to_cos) emb = torch::cat({emb.narrow(1, half, half), emb.narrow(1, 0, half)}, -1);
  if (dim % 2 == 1) emb = F::pad(emb, F::PadFuncOptions({0, 1, 0, 0}));
  return emb;
}

TimestepEmbeddingImpl::TimestepEmbeddingImpl(int64_t in, int64_t dim, Act a, std::optional<Act> post)
    : act(a), post_act(post) {
  linear_1 = register_module("linear_1", Linear(in, dim));
  linear_2 = register_module("linear_2", Linear(dim, dim));
}

Tensor TimestepEmbeddingImpl::forward(const Tensor& x) {
  auto h = linear_2(apply_act(act, linear_1(x)));
  return post_act ? apply_act(*post_act, h) : h;
}

// ---- the U-Net -----------------------------------------------------------------------

namespace {
// The cross_attention_dim of every block that attends to the text (up block
// i reads the entry of down block n-1-i; the mid block the last entry).
std::vector<int64_t> context_widths(const UNetConfig& c) {
  const size_t n = c.num_blocks();
  std::vector<int64_t> w;
  for (size_t i = 0; i < n; ++i) {
    if (c.down_cross(i)) w.push_back(c.cross_attention_dim[i]);
    if (c.up_cross(i)) w.push_back(c.cross_attention_dim[n - 1 - i]);
  }
  if (c.mid_block) w.push_back(c.cross_attention_dim[n - 1]);
  return w;
}
}  // namespace

UNet2DConditionModelImpl::UNet2DConditionModelImpl(const UNetConfig& cfg) : config(cfg) {
  config.validate();
  const auto& c = config;
  const auto& ch = c.block_out_channels;
  const size_t n = c.num_blocks();
  conv_in = register_module("conv_in", Conv2d(c.in_channels, ch[0], c.conv_in_kernel, 1, (c.conv_in_kernel - 1) / 2));
  std::optional<Act> post;
  if (!c.timestep_post_act.empty()) post = parse_act(c.timestep_post_act);
  time_embedding = register_module("time_embedding", TimestepEmbedding(ch[0], c.time_embed_dim(), parse_act(c.act_fn), post));
  if (!c.time_embedding_act_fn.empty()) time_embed_act = parse_act(c.time_embedding_act_fn);
  down_blocks = register_module("down_blocks", torch::nn::ModuleList());
  for (size_t i = 0; i < n; ++i) down_blocks->push_back(DownBlock(c, i, ch[i == 0 ? 0 : i - 1], ch[i], i + 1 < n));
  if (c.mid_block) mid_block = register_module("mid_block", MidBlock(c, ch[n - 1]));
  up_blocks = register_module("up_blocks", torch::nn::ModuleList());
  int64_t prev = ch[n - 1];
  for (size_t i = 0; i < n; ++i) {
    const int64_t out = ch[n - 1 - i], in = ch[n - 1 - std::min(i + 1, n - 1)];
    up_blocks->push_back(UpBlock(c, i, in, prev, out, i + 1 < n));
    prev = out;
  }
  conv_norm_out = register_module("conv_norm_out", group_norm(c.norm_num_groups, ch[0], c.norm_eps));
  conv_out = register_module("conv_out", Conv2d(ch[0], c.out_channels, c.conv_out_kernel, 1, (c.conv_out_kernel - 1) / 2));
}

Tensor UNet2DConditionModelImpl::forward(Tensor sample, const Tensor& timesteps, const Tensor& ehs_in) {
  const auto& c = config;
  if (sample.dim() != 4 || sample.size(1) != c.in_channels)
    throw Error("U-Net input must be [B, " + std::to_string(c.in_channels) + ", H, W]");
  const int64_t B = sample.size(0);
  if (ehs_in.dim() != 3 || (ehs_in.size(0) != B && ehs_in.size(0) != 1))
    throw Error("encoder_hidden_states must be [B or 1, tokens, width]");
  for (const int64_t w : context_widths(c))
    if (ehs_in.size(2) != w)
      throw Error("encoder_hidden_states are " + std::to_string(ehs_in.size(2)) +
                  " wide; this U-Net's cross_attention_dim is " + std::to_string(w));
  // One text embedding may serve the whole batch (GleSAM passes [1, 77, D]).
  const auto ehs = ehs_in.size(0) == B ? ehs_in : ehs_in.expand({B, ehs_in.size(1), ehs_in.size(2)});
  const int64_t factor = int64_t(1) << (c.num_blocks() - 1);
  const bool forward_upsample_size = sample.size(2) % factor != 0 || sample.size(3) % factor != 0;
  if (c.center_input_sample) sample = 2 * sample - 1.0;

  auto t = timesteps.dim() == 0 ? timesteps.reshape({1}) : timesteps;
  if (t.dim() != 1 || (t.size(0) != B && t.size(0) != 1)) throw Error("timesteps must be a scalar or [B]");
  t = t.to(sample.device()).expand({B});
  auto emb = time_embedding(timestep_embedding(t, c.block_out_channels[0], c.flip_sin_to_cos, c.freq_shift)
                                .to(sample.scalar_type()));
  if (time_embed_act) emb = apply_act(*time_embed_act, emb);

  const auto run = [&](const BlockFn& fn, const std::vector<Tensor>& in) {
    return gradient_checkpointing && torch::GradMode::is_enabled() ? gradient_checkpointing(fn, in) : fn(in);
  };
  sample = conv_in(sample);
  std::vector<Tensor> skips{sample};
  for (auto& m : *down_blocks) {
    // A down block's output is its last state.
    auto* blk = m->as<DownBlock>();
    const auto states = run([blk](const std::vector<Tensor>& in) { return blk->forward(in[0], in[1], in[2]).second; },
                            {sample, emb, ehs});
    sample = states.back();
    skips.insert(skips.end(), states.begin(), states.end());
  }
  if (!mid_block.is_empty()) {
    auto* mid = mid_block.get();
    const auto fn = [mid](const std::vector<Tensor>& in) {
      return std::vector<Tensor>{mid->forward(in[0], in[1], in[2])};
    };
    sample = run(fn, {sample, emb, ehs})[0];
  }
  for (size_t i = 0; i < up_blocks->size(); ++i) {
    auto* blk = up_blocks[i]->as<UpBlock>();
    std::vector<int64_t> size;
    const size_t used = blk->resnets->size();
    // The upsampler matches the skip the next block reads first.
    if (i + 1 < up_blocks->size() && forward_upsample_size) size = skips[skips.size() - used - 1].sizes().slice(2).vec();
    // The block's inputs: x, emb, context, then the skips it consumes.
    std::vector<Tensor> in{sample, emb, ehs};
    in.insert(in.end(), skips.end() - int64_t(used), skips.end());
    skips.resize(skips.size() - used);
    sample = run(
        [blk, size](const std::vector<Tensor>& in) {
          std::vector<Tensor> own(in.begin() + 3, in.end());
          return std::vector<Tensor>{blk->forward(in[0], own, in[1], in[2], size)};
        },
        in)[0];
  }
  sample = apply_act(parse_act(c.act_fn), norm_fp32(conv_norm_out, sample));
  return conv_out(sample);
}

}  // namespace rsam::diffusion
