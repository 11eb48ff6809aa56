// Shared helpers for the src/io tests.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "error.h"
#include "io/fs.h"
#include "io/tensor_file.h"

namespace rsam::io::test {

inline std::string data_path(const std::string& name) { return std::string(RSAM_IO_TEST_DATA) + "/" + name; }

inline std::vector<uint8_t> fixture(const std::string& name) { return read_file(data_path(name)); }

// A fresh path in gtest's temp dir, unique per process and call.
inline std::string temp_path(const std::string& name) {
  static int counter = 0;
  return ::testing::TempDir() + "rsam_io_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" + name;
}

inline std::string to_hex(const std::vector<uint8_t>& b) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (uint8_t c : b) {
    s += d[c >> 4];
    s += d[c & 15];
  }
  return s;
}

inline TensorData make_tensor(DType t, std::vector<int64_t> shape, uint32_t seed) {
  TensorData x;
  x.dtype = t;
  x.shape = std::move(shape);
  x.data.resize(static_cast<size_t>(x.numel()) * dtype_size(t));
  std::mt19937 rng(seed);
  for (auto& b : x.data) b = static_cast<uint8_t>(rng());
  if (t == DType::Bool)
    for (auto& b : x.data) b &= 1;
  return x;
}

// Every proper prefix of `bytes` must be rejected with rsam::Error.
inline void expect_all_prefixes_fail(const std::vector<uint8_t>& bytes,
                                     const std::function<void(const uint8_t*, size_t)>& load) {
  for (size_t n = 0; n < bytes.size(); ++n) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_THROW(load(cut.data(), cut.size()), rsam::Error) << "prefix length " << n;
  }
}

// Random single/multi byte corruption must load or throw rsam::Error, nothing else.
inline void expect_flips_safe(const std::vector<uint8_t>& bytes, uint32_t seed, int rounds,
                              const std::function<void(const uint8_t*, size_t)>& load) {
  std::mt19937 rng(seed);
  for (int r = 0; r < rounds; ++r) {
    std::vector<uint8_t> bad = bytes;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) bad[rng() % bad.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
    try {
      load(bad.data(), bad.size());
    } catch (const rsam::Error& e) {
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "multi-line message: " << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "round " << r << " threw a non-rsam exception: " << e.what();
    }
  }
}

}  // namespace rsam::io::test
