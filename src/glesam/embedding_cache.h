// A disk cache of the frozen SAM encoder's embeddings of clean images
// (issue 40 allows it: the encoder never changes during GleSAM's training,
// and the clean image of a scene is the same every epoch). One safetensors
// file per image, named by a hash of the image's pixels and size; the
// folder's cache.json records the encoder's fingerprint and precision, and
// a cache made with another model or precision is refused.
#pragma once

#include <opencv2/core.hpp>
#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

#include "model/sam.h"

namespace rsam::glesam {

class EmbeddingCache {
 public:
  // dir empty: no cache (encode() always computes). Creates dir; rsam::Error
  // if its cache.json names another model or precision.
  EmbeddingCache(const std::string& dir, const Sam& model, bool bf16);
  // The embeddings [B, C, h, w] float32 of `images` (RGB uint8 as read):
  // cached ones read, the others computed by encode_fn one image at a time
  // ([1, 3, S, S] model inputs) and stored.
  using EncodeFn = std::function<torch::Tensor(const std::vector<torch::Tensor>&)>;
  torch::Tensor encode(const std::vector<cv::Mat>& images, const EncodeFn& encode_fn);
  int64_t hits() const { return hits_; }
  int64_t misses() const { return misses_; }
  bool enabled() const { return !dir_.empty(); }

 private:
  std::string path_of(const cv::Mat& img) const;
  std::string dir_;
  const Sam& model_;
  torch::Device device_;
  int64_t hits_ = 0, misses_ = 0;
};

}  // namespace rsam::glesam
