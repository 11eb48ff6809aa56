// Torch-free readers and writers for the files SAM weights come in: the
// official `torch.save` checkpoints (zip and legacy formats) and safetensors.
// Kept free of LibTorch so they build fast and can be fuzzed cheaply; the
// model layer turns TensorData into torch tensors.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace rsam::io {

enum class DType { F32, F16, BF16, F64, I64, I32, I16, I8, U8, Bool };

const char* dtype_name(DType t);  // "F32", "F16", ... (safetensors spelling)
size_t dtype_size(DType t);

// One tensor, materialized contiguous (C order, little-endian bytes).
struct TensorData {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;  // numel * dtype_size bytes
  int64_t numel() const;
};

// Ordered like the file (the official state_dict order).
using StateDict = std::vector<std::pair<std::string, TensorData>>;

// Reads a `torch.save` file: zip container (PyTorch >= 1.6) or the legacy
// format. Only what a state dict needs is understood; any other pickle global
// or opcode is refused with rsam::Error. Unwraps {"model": sd} /
// {"state_dict": sd} and strips a leading "module." from every key.
StateDict load_pth(const std::string& path);
StateDict load_pth_bytes(const uint8_t* data, size_t size);  // for fuzzing

// Writes a zip-format file `torch.load` reads back as an OrderedDict.
void save_pth(const std::string& path, const StateDict& sd);

struct SafetensorsFile {
  StateDict tensors;
  std::map<std::string, std::string> metadata;  // "__metadata__"
};
SafetensorsFile load_safetensors(const std::string& path);
// The header of a safetensors buffer, checked as load_safetensors checks
// it, without copying any tensor: each entry's bytes are
// buffer[begin, end). For loaders that copy straight from a mapped file.
struct SafetensorsIndex {
  struct Entry {
    std::string name;
    DType dtype = DType::F32;
    std::vector<int64_t> shape;
    uint64_t begin = 0, end = 0;
  };
  std::vector<Entry> entries;  // file order
  std::map<std::string, std::string> metadata;
  const uint8_t* buffer = nullptr;
};
SafetensorsIndex index_safetensors(const uint8_t* data, size_t size);
SafetensorsFile load_safetensors_bytes(const uint8_t* data, size_t size);
void save_safetensors(const std::string& path, const StateDict& sd,
                      const std::map<std::string, std::string>& metadata = {});

// Picks the reader by content (zip magic, safetensors header, legacy pickle).
StateDict load_any(const std::string& path);

namespace detail {
// save_pth with every zip record in zip64 form (normally used only past
// 4 GiB); lets tests cover the zip64 paths of large checkpoints cheaply.
void save_pth_zip64(const std::string& path, const StateDict& sd);
}  // namespace detail

}  // namespace rsam::io
