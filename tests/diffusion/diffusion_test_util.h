// Shared helpers of the diffusion tests: fixture paths, .npy -> tensor,
// error measures, scratch folders.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>

#include "error.h"
#include "../common/error_of.h"
#include "io/npy.h"

namespace rsam::diffusion::testing {

inline std::string data(const std::string& rel) { return std::string(RSAM_DIFFUSION_DATA) + "/" + rel; }

inline torch::Tensor npy(const std::string& rel) {
  auto a = io::load_npy(data(rel));
  return torch::from_blob(a.data.data(), a.shape, torch::kFloat32).clone();
}

// max |a - b| / max |b|: the error relative to the output's scale.
inline double rel_max(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max()).item<double>();
}
inline double abs_max(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

// A fresh, empty scratch folder for one test.
inline std::string scratch(const std::string& name) {
  static int counter = 0;
  const std::string p = ::testing::TempDir() + "rsam_diffusion_" + std::to_string(::getpid()) + "_" +
                        std::to_string(counter++) + "_" + name;
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

// Copies a fixture folder (e.g. "sd1") to a scratch folder a test may alter.
inline std::string copy_fixture(const std::string& rel) {
  const std::string dst = scratch(rel);
  std::filesystem::copy(data(rel), dst, std::filesystem::copy_options::recursive);
  return dst;
}

}  // namespace rsam::diffusion::testing
