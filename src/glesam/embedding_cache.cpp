#include "glesam/embedding_cache.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstring>
#include <filesystem>

#include "adapt/adapter.h"
#include "diffusion/config.h"
#include "error.h"
#include "io/fs.h"
#include "io/tensor_file.h"
#include "model/checkpoint.h"
#include "train/trainer.h"

namespace rsam::glesam {

namespace fs = std::filesystem;
using torch::Tensor;

namespace {

uint64_t fnv1a(uint64_t h, const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

}  // namespace

EmbeddingCache::EmbeddingCache(const std::string& dir, const Sam& model, bool bf16)
    : dir_(dir), model_(model), device_(model->device()) {
  if (dir_.empty()) return;
  fs::create_directories(dir_);
  const nlohmann::json want{{"model", adapt::base_fingerprint(*model)}, {"precision", bf16 ? "bf16" : "fp32"}};
  const std::string meta = (fs::path(dir_) / "cache.json").string();
  if (fs::exists(meta)) {
    const auto have = nlohmann::json::parse(diffusion::read_text_file(meta), nullptr, false);
    if (have != want)
      throw Error("embedding cache " + dir_ + " was made with another model or precision (use a new folder)");
  } else {
    io::write_text(meta, want.dump() + "\n");
  }
}

std::string EmbeddingCache::path_of(const cv::Mat& img) const {
  const cv::Mat c = img.isContinuous() ? img : img.clone();
  uint64_t h = 1469598103934665603ull;
  const int dims[3] = {c.rows, c.cols, c.type()};
  h = fnv1a(h, dims, sizeof(dims));
  h = fnv1a(h, c.data, c.total() * c.elemSize());
  char name[40];
  std::snprintf(name, sizeof(name), "%016llx.safetensors", (unsigned long long)h);
  return (fs::path(dir_) / name).string();
}

Tensor EmbeddingCache::encode(const std::vector<cv::Mat>& images, const EncodeFn& encode_fn) {
  std::vector<Tensor> out(images.size());
  std::vector<size_t> missing;
  std::vector<Tensor> inputs;
  for (size_t i = 0; i < images.size(); ++i) {
    if (enabled()) {
      const std::string p = path_of(images[i]);
      if (fs::is_regular_file(p)) {
        auto sd = io::load_any(p);
        if (sd.size() != 1 || sd[0].first != "embedding") throw Error(p + ": not an embedding cache file");
        out[i] = to_torch(sd[0].second).to(device_);
        ++hits_;
        continue;
      }
    }
    missing.push_back(i);
    inputs.push_back(train::model_input(model_, images[i]));
  }
  // One image at a time, so that a cached embedding is bit-identical to the
  // one computed without the cache (batched kernels may round differently).
  for (size_t k = 0; k < missing.size(); ++k) {
    const Tensor z = encode_fn({inputs[k]})[0];
    out[missing[k]] = z;
    if (!enabled()) continue;
    ++misses_;
    io::save_safetensors(path_of(images[missing[k]]), {{"embedding", from_torch(z.detach())}});
  }
  return torch::stack(out);
}

}  // namespace rsam::glesam
