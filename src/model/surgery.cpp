// Model surgery: copies of a loaded model at a new input size, depth or
// decoder width that compute what the original did, as starting points for
// fine-tuning. Kept apart from the checkpoint loader: it builds models, it
// does not read or write files.
#include "model/surgery.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <regex>

#include "error.h"

namespace rsam {

namespace F = torch::nn::functional;

namespace {
using Tensors = torch::OrderedDict<std::string, torch::Tensor>;

// A model of `cfg` filled tensor by tensor: `take(key, dst, src)` returns
// what goes into `dst`, from `src` (the old model's tensors by name), or an
// undefined tensor to keep `dst` as built. Keeps the old model's device and mode.
template <class Take>
Sam rebuild(const Sam& model, const SamConfig& cfg, const char* what, Take take) {
  Sam out(cfg);
  torch::NoGradGuard no_grad;
  Tensors src = model->named_parameters(true);
  for (auto& b : model->named_buffers(true)) src.insert(b.key(), b.value());
  auto fill = [&](const std::string& key, torch::Tensor& dst) {
    const torch::Tensor s = take(key, dst, src);
    if (!s.defined()) return;
    if (s.sizes() != dst.sizes()) throw Error(std::string(what) + ": unexpected shape change in " + key);
    dst.copy_(s);
  };
  for (auto& p : out->named_parameters(true)) fill(p.key(), p.value());
  for (auto& b : out->named_buffers(true)) fill(b.key(), b.value());
  out->to_device(model->device());
  out->train(model->is_training());
  return out;
}
}  // namespace

Sam resize_input(const Sam& model, int img_size) {
  SamConfig cfg = model->config;
  cfg.img_size = img_size;
  cfg.validate();
  const int64_t grid = cfg.embedding_size();
  return rebuild(model, cfg, "resize_input", [&](const std::string& key, const torch::Tensor& dst, const Tensors& src) {
    auto s = src[key].detach().to(torch::kCPU);
    if (key == "image_encoder.pos_embed") {
      s = F::interpolate(s.permute({0, 3, 1, 2}), F::InterpolateFuncOptions()
                                                      .size(std::vector<int64_t>{grid, grid})
                                                      .mode(torch::kBilinear)
                                                      .align_corners(false))
              .permute({0, 2, 3, 1});
    } else if (s.dim() == 2 && dst.size(0) != s.size(0) && key.find(".attn.rel_pos_") != std::string::npos) {
      s = resize_rel_pos(s, dst.size(0));  // a global block: its table spans the grid
    }
    return s;
  });
}

std::vector<int> deepen_insert_after(int depth, int new_depth) {
  const int k = new_depth - depth;
  std::vector<int> after;
  for (int j = 0; j < k; ++j) after.push_back(int(int64_t(j + 1) * depth / k) - 1);
  return after;
}

Sam deepen_encoder(const Sam& model, int new_depth, uint64_t seed) {
  const SamConfig& old_cfg = model->config;
  const int depth = old_cfg.encoder_depth;
  if (new_depth <= depth)
    throw Error("deepen_encoder: the new depth (" + std::to_string(new_depth) + ") must exceed the current " +
                std::to_string(depth));
  if (new_depth > 128)  // ViT-H has 32; more is a typo, and each block allocates its weights
    throw Error("deepen_encoder: a depth of " + std::to_string(new_depth) + " is over the limit of 128");
  // source[i]: the old block that new block i copies, -1 for an inserted one.
  std::vector<int> source;
  const auto after = deepen_insert_after(depth, new_depth);
  size_t next = 0;
  for (; next < after.size() && after[next] < 0; ++next) source.push_back(-1);
  for (int b = 0; b < depth; ++b) {
    source.push_back(b);
    for (; next < after.size() && after[next] == b; ++next) source.push_back(-1);
  }
  SamConfig cfg = old_cfg;
  cfg.encoder_depth = new_depth;
  cfg.global_attn_indexes.clear();
  for (int i = 0; i < new_depth; ++i)
    if (source[i] >= 0 && std::count(old_cfg.global_attn_indexes.begin(), old_cfg.global_attn_indexes.end(), source[i]))
      cfg.global_attn_indexes.push_back(i);
  cfg.validate();
  // The new blocks' fresh init comes from `seed`; the caller's random stream
  // is left as it was.
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  const torch::Tensor saved = gen.get_state();
  torch::manual_seed(seed);
  struct Restore {
    at::Generator& g;
    const torch::Tensor& s;
    ~Restore() { g.set_state(s); }
  } restore{gen, saved};
  const std::string blocks = "image_encoder.blocks.";
  return rebuild(model, cfg, "deepen_encoder",
                 [&](const std::string& key, const torch::Tensor& dst, const Tensors& src) -> torch::Tensor {
                   if (key.compare(0, blocks.size(), blocks) != 0) return src[key].detach().to(torch::kCPU);
                   const size_t dot = key.find('.', blocks.size());
                   const int i = std::stoi(key.substr(blocks.size(), dot - blocks.size()));
                   const std::string rest = key.substr(dot);
                   if (source[i] >= 0) return src[blocks + std::to_string(source[i]) + rest].detach().to(torch::kCPU);
                   const bool output = rest == ".attn.proj.weight" || rest == ".attn.proj.bias" ||
                                       rest == ".mlp.lin2.weight" || rest == ".mlp.lin2.bias";
                   return output ? torch::zeros_like(dst) : torch::Tensor();  // the rest keeps its fresh init
                 });
}

namespace {
// One dimension of a widened tensor: new index j copies old index map[j]
// and is copy number copy[j] of the k.
struct Expansion {
  torch::Tensor map, copy;
};

// Copies side by side (j -> j mod n): an attention width tiled this way
// keeps every head whole, so each new head is a copy of an old one.
Expansion tiled(int64_t n, int64_t k) {
  auto j = torch::arange(k * n, torch::kLong);
  return {j.remainder(n), j.div(n, "floor")};
}

// The token width. The positional encoding is [sin(p) | cos(p)] for p =
// coords @ G; tiling G's columns tiles each half, so every other tensor in
// this space must be tiled half by half to line up with it.
Expansion halves_tiled(int64_t n, int64_t k) {
  const int64_t h = n / 2;
  auto j = torch::arange(k * h, torch::kLong);
  auto map = torch::cat({j.remainder(h), h + j.remainder(h)});
  auto copy = torch::cat({j.div(h, "floor"), j.div(h, "floor")});
  return {map, copy};
}

enum class Space { Token, Tiled };
// Out: an output (copied). In: an input whose readers' weights are split
// between the copies (so the sum is unchanged). OutShared: an output read
// by a dot product, so its copies carry the split.
enum class Role { Out, In, OutShared };
struct DimRule {
  int dim;
  Space space;
  Role role;
};

std::vector<DimRule> widen_rules(const std::string& key) {
  using S = Space;
  using R = Role;
  static const std::vector<std::pair<std::regex, std::vector<DimRule>>> rules = [] {
    std::vector<std::pair<std::regex, std::vector<DimRule>>> r;
    auto add = [&](const char* re, std::vector<DimRule> d) { r.emplace_back(std::regex(re), std::move(d)); };
    add(R"(prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix)", {{1, S::Tiled, R::Out}});
    add(R"(prompt_encoder\.(point_embeddings\.\d+|not_a_point_embed|no_mask_embed)\.weight)", {{1, S::Token, R::Out}});
    add(R"(prompt_encoder\.mask_downscaling\.6\.(weight|bias))", {{0, S::Token, R::Out}});
    add(R"(image_encoder\.neck\.[013]\.(weight|bias))", {{0, S::Token, R::Out}});
    add(R"(image_encoder\.neck\.2\.weight)", {{0, S::Token, R::Out}, {1, S::Token, R::In}});
    add(R"(mask_decoder\.(iou_token|mask_tokens)\.weight)", {{1, S::Token, R::Out}});
    add(R"(mask_decoder\.transformer\.(.*\.)?[qkv]_proj\.weight)", {{0, S::Tiled, R::Out}, {1, S::Token, R::In}});
    add(R"(mask_decoder\.transformer\.(.*\.)?[qkv]_proj\.bias)", {{0, S::Tiled, R::Out}});
    add(R"(mask_decoder\.transformer\.(.*\.)?out_proj\.weight)", {{0, S::Token, R::Out}, {1, S::Tiled, R::In}});
    add(R"(mask_decoder\.transformer\.(.*\.)?(out_proj\.bias|norm\w*\.(weight|bias)|mlp\.lin2\.bias))",
        {{0, S::Token, R::Out}});
    add(R"(mask_decoder\.transformer\.(.*\.)?mlp\.lin1\.weight)", {{0, S::Tiled, R::Out}, {1, S::Token, R::In}});
    add(R"(mask_decoder\.transformer\.(.*\.)?mlp\.lin1\.bias)", {{0, S::Tiled, R::Out}});
    add(R"(mask_decoder\.transformer\.(.*\.)?mlp\.lin2\.weight)", {{0, S::Token, R::Out}, {1, S::Tiled, R::In}});
    // ConvTranspose2d weights are [in, out, kh, kw].
    add(R"(mask_decoder\.output_upscaling\.0\.weight)", {{0, S::Token, R::In}, {1, S::Tiled, R::Out}});
    add(R"(mask_decoder\.output_upscaling\.3\.weight)", {{0, S::Tiled, R::In}, {1, S::Tiled, R::Out}});
    add(R"(mask_decoder\.output_upscaling\.[013]\.(weight|bias))", {{0, S::Tiled, R::Out}});
    add(R"(mask_decoder\.output_hypernetworks_mlps\.\d+\.layers\.0\.weight)",
        {{0, S::Tiled, R::Out}, {1, S::Token, R::In}});
    add(R"(mask_decoder\.output_hypernetworks_mlps\.\d+\.layers\.1\.weight)",
        {{0, S::Tiled, R::Out}, {1, S::Tiled, R::In}});
    add(R"(mask_decoder\.output_hypernetworks_mlps\.\d+\.layers\.[01]\.bias)", {{0, S::Tiled, R::Out}});
    // The masks are hyper_in . upscaled over the upscaled channels.
    add(R"(mask_decoder\.output_hypernetworks_mlps\.\d+\.layers\.2\.weight)",
        {{0, S::Tiled, R::OutShared}, {1, S::Tiled, R::In}});
    add(R"(mask_decoder\.output_hypernetworks_mlps\.\d+\.layers\.2\.bias)", {{0, S::Tiled, R::OutShared}});
    add(R"(mask_decoder\.iou_prediction_head\.layers\.0\.weight)", {{1, S::Token, R::In}});
    return r;
  }();
  for (const auto& [re, d] : rules)
    if (std::regex_match(key, re)) return d;
  return {};
}
}  // namespace

Sam widen_decoder(const Sam& model, int new_width) {
  const SamConfig& old_cfg = model->config;
  const int width = old_cfg.prompt_embed_dim;
  if (new_width <= width || new_width % width != 0)
    throw Error("widen_decoder: the new width (" + std::to_string(new_width) + ") must be a multiple of the current " +
                std::to_string(width) + " above it");
  const int64_t k = new_width / width;
  if (k > 16) throw Error("widen_decoder: at most 16 times the current width");
  SamConfig cfg = old_cfg;
  cfg.prompt_embed_dim = new_width;
  cfg.decoder_num_heads = int(old_cfg.decoder_num_heads * k);  // the same head size
  cfg.decoder_mlp_dim = int(old_cfg.decoder_mlp_dim * k);
  cfg.validate();
  // Unequal shares (1, 2, ..., k) / sum: equal ones would give the copies
  // equal gradients forever.
  const auto share = torch::arange(1, k + 1, torch::kFloat) / double(k * (k + 1) / 2);
  return rebuild(model, cfg, "widen_decoder",
                 [&](const std::string& key, const torch::Tensor& dst, const Tensors& src) -> torch::Tensor {
                   auto t = src[key].detach().to(torch::kCPU);
                   for (const auto& r : widen_rules(key)) {
                     const int64_t n = t.size(r.dim);
                     if (dst.size(r.dim) != n * k) throw Error("widen_decoder: unexpected shape of " + key);
                     const Expansion e = r.space == Space::Token ? halves_tiled(n, k) : tiled(n, k);
                     t = t.index_select(r.dim, e.map);
                     if (r.role != Role::Out) {
                       std::vector<int64_t> shape(size_t(t.dim()), 1);
                       shape[size_t(r.dim)] = t.size(r.dim);
                       t = t * share.index_select(0, e.copy).to(t.dtype()).view(shape);
                     }
                   }
                   return t;
                 });
}

}  // namespace rsam
