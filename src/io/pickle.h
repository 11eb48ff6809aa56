// A restricted pickle virtual machine for torch.save state dicts. It builds a
// plain value tree and never executes anything: the only callables are a
// whitelist of torch/collections globals, interpreted here (OrderedDict,
// _rebuild_tensor_v2, _rebuild_parameter, storage types and dtypes).
// Internal to src/io.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "io/tensor_file.h"

namespace rsam::io::detail {

enum class PyGlobal {
  OrderedDict,
  RebuildTensorV2,
  RebuildTensor,
  RebuildParameter,
  RebuildParameterWithState,
  StorageType,  // torch.FloatStorage etc.; `dtype` says which
  DTypeObject,  // torch.float32 etc.
};

struct PyValue {
  enum class Kind { None, Bool, Int, BigInt, Float, Str, Bytes, Tuple, List, Dict, Global, Storage, Tensor };
  Kind kind = Kind::None;
  int64_t i = 0;                // Bool, Int
  double f = 0;                 // Float
  std::string s;                // Str, Bytes, BigInt (raw little-endian bytes), Storage key
  std::vector<PyValue*> items;  // Tuple, List; Dict as key, value, key, value...
  std::unordered_map<std::string, size_t> str_keys;  // Dict: str key -> index into items
  PyGlobal global = PyGlobal::OrderedDict;            // Global
  DType dtype = DType::U8;                            // Global (storage/dtype), Storage
  // Storage: a legacy view covers [view_offset, view_offset + view_numel) of its root.
  int64_t numel = 0;
  bool is_view = false;
  int64_t view_offset = 0, view_numel = 0;
  // Tensor: a strided view into `storage` (elements, not bytes).
  PyValue* storage = nullptr;
  int64_t storage_offset = 0;
  std::vector<int64_t> shape, stride;
};

const char* kind_name(PyValue::Kind k);

// Owns every value of one file (values are referenced by raw pointers, so
// cycles built through the memo cannot leak and deep nesting never recurses).
struct PickleContext {
  std::deque<PyValue> arena;
  // Storages named by persistent ids, with the element type each was saved as.
  std::map<std::string, DType> storages;
};

// Runs one pickle starting at data[pos] until STOP; advances pos past it.
// Persistent ids are accepted only when `allow_persistent`.
PyValue* unpickle(const uint8_t* data, size_t size, size_t& pos, PickleContext& ctx, bool allow_persistent);

// Protocol-2 pickle of an OrderedDict of tensors whose storage i is the
// zip record data/<i> (the layout torch.load expects).
std::vector<uint8_t> pickle_state_dict(const StateDict& sd);

}  // namespace rsam::io::detail
