// NPY v1.0 files (little-endian, C order), the interchange format of the CLI
// (--logits-out, --embedding-out, --mask-input).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rsam::io {

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<float> data;  // always converted to float32 on read
};

// Reads f4/f8/f2/u1/b1/i4/i8 arrays (little-endian, C order) as float32;
// Fortran order, big-endian or other dtypes are refused with rsam::Error.
NpyArray load_npy(const std::string& path);
NpyArray load_npy_bytes(const uint8_t* data, size_t size);

// Writes float32 '<f4' v1.0, atomically.
void save_npy(const std::string& path, const float* data, const std::vector<int64_t>& shape);

}  // namespace rsam::io
