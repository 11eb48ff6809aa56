#include "model/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include "error.h"
#include "io/fs.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace rsam {

using io::DType;

namespace {

torch::ScalarType scalar_type(DType t) {
  switch (t) {
    case DType::F32: return torch::kFloat32;
    case DType::F16: return torch::kFloat16;
    case DType::BF16: return torch::kBFloat16;
    case DType::F64: return torch::kFloat64;
    case DType::I64: return torch::kInt64;
    case DType::I32: return torch::kInt32;
    case DType::I16: return torch::kInt16;
    case DType::I8: return torch::kInt8;
    case DType::U8: return torch::kUInt8;
    case DType::Bool: return torch::kBool;
  }
  throw Error("unknown dtype");
}

DType io_dtype(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32: return DType::F32;
    case torch::kFloat16: return DType::F16;
    case torch::kBFloat16: return DType::BF16;
    case torch::kFloat64: return DType::F64;
    case torch::kInt64: return DType::I64;
    case torch::kInt32: return DType::I32;
    case torch::kInt16: return DType::I16;
    case torch::kInt8: return DType::I8;
    case torch::kUInt8: return DType::U8;
    case torch::kBool: return DType::Bool;
    default: throw Error(std::string("cannot store tensors of dtype ") + c10::toString(t));
  }
}

const io::TensorData* find(const io::StateDict& sd, const std::string& key) {
  for (const auto& [k, v] : sd)
    if (k == key) return &v;
  return nullptr;
}

const io::TensorData& need(const io::StateDict& sd, const std::string& key) {
  auto* t = find(sd, key);
  if (!t) throw Error("checkpoint is not a SAM state dict: missing '" + key + "'");
  return *t;
}

int64_t dim(const io::TensorData& t, size_t i, const std::string& key) {
  if (t.shape.size() <= i) throw Error("tensor '" + key + "' has too few dimensions");
  return t.shape[i];
}

int count_indexed(const io::StateDict& sd, const std::string& prefix) {
  int n = 0;
  for (const auto& [k, v] : sd) {
    if (k.compare(0, prefix.size(), prefix) != 0) continue;
    const auto rest = k.substr(prefix.size());
    const auto dot = rest.find('.');
    if (dot == std::string::npos) continue;
    try {
      n = std::max(n, std::stoi(rest.substr(0, dot)) + 1);
    } catch (...) {
    }
  }
  return n;
}

}  // namespace

torch::Tensor to_torch(const io::TensorData& t) {
  const auto st = scalar_type(t.dtype);
  auto out = torch::empty(t.shape, torch::TensorOptions().dtype(st));
  const size_t bytes = size_t(out.numel()) * out.element_size();
  if (bytes != t.data.size()) throw Error("tensor byte size does not match its shape");
  if (bytes) std::memcpy(out.data_ptr(), t.data.data(), bytes);
  return out;
}

io::TensorData from_torch(const torch::Tensor& t_in) {
  auto t = t_in.detach().to(torch::kCPU).contiguous();
  io::TensorData d;
  d.dtype = io_dtype(t.scalar_type());
  d.shape = t.sizes().vec();
  d.data.resize(size_t(t.numel()) * t.element_size());
  if (!d.data.empty()) std::memcpy(d.data.data(), t.data_ptr(), d.data.size());
  return d;
}

SamConfig detect_config(const io::StateDict& sd, const SamConfig* hint) {
  SamConfig c = hint ? *hint : SamConfig{};
  const std::string pe = "image_encoder.patch_embed.proj.weight";
  const auto& patch = need(sd, pe);
  c.encoder_embed_dim = int(dim(patch, 0, pe));
  c.in_chans = int(dim(patch, 1, pe));
  c.patch_size = int(dim(patch, 2, pe));
  const auto& pos = need(sd, "image_encoder.pos_embed");
  if (pos.shape.size() != 4) throw Error("tensor 'image_encoder.pos_embed' must be 4-D");
  const int grid = int(pos.shape[1]);
  c.img_size = grid * c.patch_size;
  c.encoder_depth = count_indexed(sd, "image_encoder.blocks.");
  if (c.encoder_depth == 0) throw Error("checkpoint has no image_encoder.blocks");
  const std::string rel0 = "image_encoder.blocks.0.attn.rel_pos_h";
  const int64_t head_dim = dim(need(sd, rel0), 1, rel0);
  if (head_dim <= 0 || c.encoder_embed_dim % head_dim) throw Error("rel_pos width does not divide encoder width");
  c.encoder_num_heads = int(c.encoder_embed_dim / head_dim);
  c.encoder_mlp_dim = int(dim(need(sd, "image_encoder.blocks.0.mlp.lin1.weight"), 0, "mlp.lin1"));
  // Global blocks have a table for the whole grid; windowed ones for the window.
  c.global_attn_indexes.clear();
  c.window_size = 0;
  for (int i = 0; i < c.encoder_depth; ++i) {
    const std::string key = "image_encoder.blocks." + std::to_string(i) + ".attn.rel_pos_h";
    const int64_t len = dim(need(sd, key), 0, key);
    if (len == 2 * grid - 1) {
      c.global_attn_indexes.push_back(i);
    } else {
      const int ws = int((len + 1) / 2);
      if (c.window_size && c.window_size != ws) throw Error("blocks disagree on the attention window size");
      c.window_size = ws;
    }
  }
  if (c.window_size == 0) c.window_size = hint ? hint->window_size : 14;
  c.prompt_embed_dim = int(dim(need(sd, "image_encoder.neck.0.weight"), 0, "neck.0"));
  c.mask_in_chans = int(dim(need(sd, "prompt_encoder.mask_downscaling.3.weight"), 0, "mask_downscaling.3"));
  c.decoder_depth = count_indexed(sd, "mask_decoder.transformer.layers.");
  c.decoder_mlp_dim =
      int(dim(need(sd, "mask_decoder.transformer.layers.0.mlp.lin1.weight"), 0, "decoder mlp.lin1"));
  const int64_t internal =
      dim(need(sd, "mask_decoder.transformer.final_attn_token_to_image.q_proj.weight"), 0, "q_proj");
  if (internal <= 0 || c.prompt_embed_dim % internal) throw Error("decoder attention width does not divide its input");
  c.attention_downsample_rate = int(c.prompt_embed_dim / internal);
  c.num_multimask_outputs = int(dim(need(sd, "mask_decoder.mask_tokens.weight"), 0, "mask_tokens")) - 1;
  c.iou_head_depth = count_indexed(sd, "mask_decoder.iou_prediction_head.layers.");
  c.iou_head_hidden_dim =
      int(dim(need(sd, "mask_decoder.iou_prediction_head.layers.0.weight"), 0, "iou_prediction_head"));
  if (internal % c.decoder_num_heads != 0)
    throw Error("decoder attention width " + std::to_string(internal) + " is not divisible by " +
                std::to_string(c.decoder_num_heads) +
                " heads; store the config in a .safetensors file (rsam convert) to load this model");
  c.validate();
  return c;
}

namespace {

// Whether no element's exponent bits are all ones (NaN or Inf), n elements
// of U at data, in blocks so that a bad weight ends the scan early.
template <typename U>
bool exponents_finite(const void* data, size_t n, U mask) {
  const U* q = static_cast<const U*>(data);
  constexpr size_t kBlock = size_t(1) << 16;
  for (size_t i = 0; i < n; i += kBlock) {
    const size_t end = std::min(n, i + kBlock);
    U any = 0;
    for (size_t j = i; j < end; ++j) any |= U((q[j] & mask) == mask);
    if (any) return false;
  }
  return true;
}

// One read of a CPU tensor's bits on the calling thread. isfinite().all()
// built a bool tensor per weight and ran two parallel kernels per tensor,
// whose threads spin for a core the machine may not have free: most of a
// ViT-B load on a busy machine.
bool all_finite(const torch::Tensor& t) {
  if (!t.is_floating_point()) return true;
  if (t.device().is_cpu() && t.is_contiguous()) {
    const size_t n = size_t(t.numel());
    switch (t.scalar_type()) {
      case torch::kFloat32: return exponents_finite<uint32_t>(t.data_ptr(), n, 0x7f800000u);
      case torch::kFloat64: return exponents_finite<uint64_t>(t.data_ptr(), n, 0x7ff0000000000000ull);
      case torch::kFloat16: return exponents_finite<uint16_t>(t.data_ptr(), n, 0x7c00u);
      case torch::kBFloat16: return exponents_finite<uint16_t>(t.data_ptr(), n, 0x7f80u);
      default: break;
    }
  }
  return torch::isfinite(t).all().item<bool>();
}

// Names and shapes checked against the model first (every missing,
// unexpected or mis-shaped key named), then each tensor copied in from
// tensor_at(i), the i-th of `sd` (whose data may be empty: shapes only).
// With `alias`, a source tensor of the target's dtype on the CPU becomes
// the target's data instead of being copied into it.
void load_tensors(torch::nn::Module& model, const io::StateDict& sd,
                  const std::function<torch::Tensor(size_t)>& tensor_at, const std::string& origin,
                  bool alias = false) {
  std::map<std::string, torch::Tensor> targets;
  for (auto& p : model.named_parameters(true)) targets[p.key()] = p.value();
  for (auto& b : model.named_buffers(true)) targets[b.key()] = b.value();
  std::vector<std::string> missing, unexpected, mismatched;
  std::set<std::string> seen;
  for (const auto& [k, v] : sd) {
    auto it = targets.find(k);
    if (it == targets.end()) {
      unexpected.push_back(k);
      continue;
    }
    seen.insert(k);
    if (it->second.sizes().vec() != v.shape) {
      std::ostringstream os;
      os << k << " (file " << c10::IntArrayRef(v.shape) << ", model " << it->second.sizes() << ")";
      mismatched.push_back(os.str());
    }
  }
  for (const auto& [k, v] : targets)
    if (!seen.count(k)) missing.push_back(k);
  auto list = [](const std::vector<std::string>& xs) {
    std::string s;
    for (size_t i = 0; i < xs.size() && i < 5; ++i) s += (i ? ", " : "") + xs[i];
    if (xs.size() > 5) s += ", ... (" + std::to_string(xs.size()) + " in all)";
    return s;
  };
  if (!mismatched.empty()) throw Error(origin + ": shape mismatch: " + list(mismatched));
  if (!missing.empty()) throw Error(origin + ": missing keys: " + list(missing));
  if (!unexpected.empty()) throw Error(origin + ": unexpected keys: " + list(unexpected));
  torch::NoGradGuard ng;
  for (size_t i = 0; i < sd.size(); ++i) {
    const auto& k = sd[i].first;
    auto& dst = targets[k];
    auto src = tensor_at(i);
    if (!all_finite(src))
      throw Error(origin + ": tensor '" + k + "' holds NaN or Inf");
    if (alias && src.scalar_type() == dst.scalar_type() && dst.device().is_cpu())
      dst.set_data(src);
    else
      dst.copy_(src);
  }
}

bool is_safetensors_path(const std::string& path) {
  return path.size() > 12 && path.substr(path.size() - 12) == ".safetensors";
}

// A .safetensors checkpoint copied from the mapped file straight into the
// model's tensors: one copy, no intermediate buffers (each would be
// allocated, zero-filled and page-faulted in for the whole model).
// The file mapped copy-on-write: the weights' pages are the page cache's
// until someone writes to them (training), and the mapping lives as long as
// any tensor made from it. rsam replaces files by renaming (io::write_atomic),
// so the mapped inode does not change under a running model.
std::shared_ptr<uint8_t> map_private(const std::string& path, size_t& size) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return nullptr;
  struct stat st {};
  void* p = MAP_FAILED;
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
    size = size_t(st.st_size);
    p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  }
  ::close(fd);
  if (p == MAP_FAILED) return nullptr;
  const size_t n = size;
  return std::shared_ptr<uint8_t>(static_cast<uint8_t*>(p), [n](uint8_t* q) { ::munmap(q, n); });
}

LoadedSam load_sam_mapped(const std::string& path, const torch::Device& device) {
  size_t mapped_size = 0;
  const std::shared_ptr<uint8_t> mapped = map_private(path, mapped_size);
  std::optional<io::MappedFile> file;  // where mapping fails: MappedFile's own fallback, copied from
  if (!mapped) file.emplace(path);
  const uint8_t* data = mapped ? mapped.get() : file->data();
  const size_t size = mapped ? mapped_size : file->size();
  io::SafetensorsIndex index;
  try {
    index = io::index_safetensors(data, size);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
  io::StateDict shapes;  // names and shapes only, for detection and checks
  for (const auto& e : index.entries) {
    io::TensorData t;
    t.dtype = e.dtype;
    t.shape = e.shape;
    shapes.emplace_back(e.name, std::move(t));
  }
  std::optional<SamConfig> hint;
  auto it = index.metadata.find("rsam.config");
  if (it != index.metadata.end()) hint = SamConfig::from_json(it->second);
  LoadedSam out;
  {
    SkipLinearInit skip;  // every weight is replaced below (or the load fails)
    out.model = Sam(detect_config(shapes, hint ? &*hint : nullptr));
  }
  load_tensors(
      *out.model, shapes,
      [&](size_t i) {
        const auto& e = index.entries[i];
        const auto st = scalar_type(e.dtype);
        const uint8_t* p = index.buffer + e.begin;
        const auto esize = io::dtype_size(e.dtype);
        if (!mapped || reinterpret_cast<uintptr_t>(p) % esize != 0) {  // a foreign file's odd offset: copy
          auto t = torch::empty(e.shape, torch::TensorOptions().dtype(st));
          if (e.end > e.begin) std::memcpy(t.data_ptr(), p, e.end - e.begin);
          return t;
        }
        auto keep = mapped;
        return torch::from_blob(const_cast<uint8_t*>(p), e.shape, [keep](void*) {},
                                torch::TensorOptions().dtype(st));
      },
      path, /*alias=*/true);
  out.model->eval();
  out.model->to_device(device);
  out.path = path;
  out.num_params = parameter_count(*out.model);
  return out;
}

}  // namespace

void load_state_dict(torch::nn::Module& model, const io::StateDict& sd, const std::string& origin) {
  load_tensors(model, sd, [&](size_t i) { return to_torch(sd[i].second); }, origin);
}

io::StateDict state_dict_of(const torch::nn::Module& model) {
  io::StateDict sd;
  // Parameters and buffers in registration order, like PyTorch's state_dict.
  std::function<void(const torch::nn::Module&, const std::string&)> walk =
      [&](const torch::nn::Module& m, const std::string& prefix) {
        for (const auto& p : m.named_parameters(false)) sd.emplace_back(prefix + p.key(), from_torch(p.value()));
        for (const auto& b : m.named_buffers(false)) sd.emplace_back(prefix + b.key(), from_torch(b.value()));
        for (const auto& c : m.named_children()) walk(*c.value(), prefix + c.key() + ".");
      };
  walk(model, "");
  return sd;
}

int64_t parameter_count(const torch::nn::Module& model) {
  int64_t n = 0;
  for (const auto& p : model.parameters()) n += p.numel();
  return n;
}

int64_t parameter_count(const io::StateDict& sd) {
  int64_t n = 0;
  for (const auto& [k, t] : sd)
    if (k.find("positional_encoding_gaussian_matrix") == std::string::npos) n += t.numel();
  return n;
}

SamWeights read_sam_weights(const std::string& path) {
  io::StateDict sd;
  std::optional<SamConfig> hint;
  if (path.size() > 12 && path.substr(path.size() - 12) == ".safetensors") {
    auto f = io::load_safetensors(path);
    sd = std::move(f.tensors);
    auto it = f.metadata.find("rsam.config");
    if (it != f.metadata.end()) hint = SamConfig::from_json(it->second);
  } else {
    sd = io::load_any(path);
  }
  SamConfig cfg = detect_config(sd, hint ? &*hint : nullptr);
  return {std::move(sd), std::move(cfg)};
}

LoadedSam load_sam(const std::string& path, const torch::Device& device) {
  if (is_safetensors_path(path)) return load_sam_mapped(path, device);
  const SamWeights w = read_sam_weights(path);
  LoadedSam out;
  out.model = Sam(w.config);
  load_state_dict(*out.model, w.tensors, path);
  out.model->eval();
  out.model->to_device(device);
  out.path = path;
  out.num_params = parameter_count(*out.model);
  return out;
}

void save_sam(const Sam& model, const std::string& path) {
  auto sd = state_dict_of(*model);
  if (path.size() > 4 && path.substr(path.size() - 4) == ".pth") {
    io::save_pth(path, sd);
  } else {
    io::save_safetensors(path, sd, {{"rsam.config", model->config.to_json()}, {"format", "pt"}});
  }
}

}  // namespace rsam
