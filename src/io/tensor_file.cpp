#include "io/tensor_file.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "error.h"
#include "io/fs.h"
#include "io/pickle.h"
#include "io/zip.h"

namespace rsam::io {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F64: return "F64";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::Bool: return "BOOL";
  }
  return "?";
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F64:
    case DType::I64: return 8;
    case DType::F32:
    case DType::I32: return 4;
    case DType::F16:
    case DType::BF16:
    case DType::I16: return 2;
    case DType::I8:
    case DType::U8:
    case DType::Bool: return 1;
  }
  return 1;
}

int64_t TensorData::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {

using detail::printable;
using detail::PyValue;
using Kind = PyValue::Kind;

// numel * element size for a shape read from a file, or throws: the product
// must neither overflow nor name more bytes than a size_t can address.
uint64_t checked_bytes(const std::vector<int64_t>& shape, size_t esize, const std::string& what) {
  uint64_t n = esize;
  for (int64_t d : shape) {
    if (d < 0) throw Error(what + " has a negative dimension");
    if (d != 0 && n > (uint64_t(1) << 62) / static_cast<uint64_t>(d))
      throw Error(what + " is impossibly large");
    n *= static_cast<uint64_t>(d);
  }
  return n;
}

std::string key_text(const std::string& key) { return "'" + printable(key) + "'"; }

// ---------------------------------------------------------------- torch.save

struct Span {
  const uint8_t* p = nullptr;
  uint64_t bytes = 0;
};

// Copies a strided view out of its storage into a contiguous C-order tensor.
// `budget` caps the total bytes materialized (views with zero or overlapping
// strides can otherwise expand a tiny file into gigabytes).
TensorData materialize(const PyValue& t, const std::map<std::string, Span>& spans, const std::string& key,
                       uint64_t& budget) {
  const PyValue& st = *t.storage;
  const size_t es = dtype_size(st.dtype);
  const auto it = spans.find(st.s);
  if (it == spans.end()) throw Error("pth: no data for storage " + key_text(st.s) + " of tensor " + key_text(key));
  const uint8_t* base = it->second.p;
  uint64_t avail = it->second.bytes / es;  // elements
  if (st.is_view) {
    const uint64_t off = static_cast<uint64_t>(st.view_offset), len = static_cast<uint64_t>(st.view_numel);
    if (off > avail || len > avail - off) throw Error("pth: storage view of tensor " + key_text(key) + " is out of range");
    base += off * es;
    avail = len;
  }

  TensorData out;
  out.dtype = st.dtype;
  out.shape = t.shape;
  const uint64_t bytes = checked_bytes(t.shape, es, "pth: tensor " + key_text(key));
  if (bytes == 0) return out;
  if (t.storage_offset < 0) throw Error("pth: tensor " + key_text(key) + " has a negative storage offset");
  uint64_t last = static_cast<uint64_t>(t.storage_offset);  // index of the furthest element
  for (size_t d = 0; d < t.shape.size(); ++d) {
    if (t.shape[d] == 1) continue;
    if (t.stride[d] < 0) throw Error("pth: tensor " + key_text(key) + " has a negative stride");
    const uint64_t span = static_cast<uint64_t>(t.shape[d] - 1), s = static_cast<uint64_t>(t.stride[d]);
    if (s != 0 && span > (uint64_t(1) << 62) / s) throw Error("pth: tensor " + key_text(key) + " has an impossible stride");
    last += span * s;
    if (last >= (uint64_t(1) << 62)) throw Error("pth: tensor " + key_text(key) + " has an impossible stride");
  }
  if (last >= avail)
    throw Error("pth: tensor " + key_text(key) + " reads past the end of its storage (needs " +
                std::to_string(last + 1) + " elements, storage has " + std::to_string(avail) + ")");
  if (bytes > budget) throw Error("pth: tensor " + key_text(key) + " expands beyond the size of the file's storages");
  budget -= bytes;

  out.data.resize(static_cast<size_t>(bytes));
  const uint8_t* src = base + static_cast<uint64_t>(t.storage_offset) * es;
  bool contiguous = true;
  int64_t expect = 1;
  for (size_t d = t.shape.size(); d-- > 0;) {
    if (t.shape[d] != 1 && t.stride[d] != expect) contiguous = false;
    expect *= t.shape[d];
  }
  if (contiguous) {
    std::memcpy(out.data.data(), src, static_cast<size_t>(bytes));
    return out;
  }
  // Odometer over all but the last dimension; the last is a strided inner loop.
  // Size-1 dimensions never move, so their (unchecked) strides are zeroed.
  const size_t nd = t.shape.size();
  std::vector<int64_t> stride = t.stride;
  for (size_t d = 0; d < nd; ++d)
    if (t.shape[d] == 1) stride[d] = 0;
  const int64_t inner = t.shape[nd - 1], inner_stride = stride[nd - 1];
  std::vector<int64_t> idx(nd, 0);
  uint8_t* dst = out.data.data();
  int64_t off = 0;
  for (;;) {
    for (int64_t k = 0; k < inner; ++k) {
      std::memcpy(dst, src + static_cast<uint64_t>(off + k * inner_stride) * es, es);
      dst += es;
    }
    size_t d = nd - 1;
    for (;;) {
      if (d == 0) return out;
      --d;
      off += stride[d];
      if (++idx[d] < t.shape[d]) break;
      off -= stride[d] * t.shape[d];
      idx[d] = 0;
    }
  }
}

const PyValue* dict_get(const PyValue& dict, const std::string& key) {
  const auto it = dict.str_keys.find(key);
  return it == dict.str_keys.end() ? nullptr : dict.items[it->second + 1];
}

StateDict extract_state_dict(const PyValue* root, const std::map<std::string, Span>& spans) {
  if (root->kind != Kind::Dict)
    throw Error(std::string("pth: top-level object is a ") + detail::kind_name(root->kind) + ", not a state dict");
  // Training checkpoints wrap the weights: {"model": sd, "optimizer": ...}.
  for (const char* wrapper : {"model", "state_dict"}) {
    const PyValue* inner = dict_get(*root, wrapper);
    if (inner != nullptr && inner->kind == Kind::Dict) {
      root = inner;
      break;
    }
  }
  uint64_t storage_bytes = 0;
  for (const auto& kv : spans) storage_bytes += kv.second.bytes;
  uint64_t budget = 4 * storage_bytes + (uint64_t(64) << 20);

  StateDict sd;
  std::unordered_set<std::string> seen;
  for (size_t k = 0; k < root->items.size(); k += 2) {
    const PyValue* key = root->items[k];
    const PyValue* value = root->items[k + 1];
    if (key->kind != Kind::Str) throw Error(std::string("pth: state dict has a ") + detail::kind_name(key->kind) + " key");
    if (value->kind != Kind::Tensor)
      throw Error("pth: value of " + key_text(key->s) + " is a " + detail::kind_name(value->kind) + ", not a tensor");
    std::string name = key->s;
    if (name.rfind("module.", 0) == 0) name.erase(0, 7);  // saved from DataParallel
    if (!seen.insert(name).second) throw Error("pth: duplicate key " + key_text(name) + " after stripping 'module.'");
    sd.emplace_back(name, materialize(*value, spans, key->s, budget));
  }
  return sd;
}

StateDict load_zip_pth(const uint8_t* data, size_t size) {
  const std::vector<detail::ZipEntry> entries = detail::read_zip_directory(data, size);
  std::map<std::string, const detail::ZipEntry*> by_name;
  for (const auto& e : entries) by_name.emplace(e.name, &e);
  // Records live under one folder whose name varies ("archive", the file stem...).
  std::string prefix;
  const detail::ZipEntry* pkl = nullptr;
  for (const auto& e : entries) {
    const size_t slash = e.name.find('/');
    if (slash != std::string::npos && e.name.compare(slash, std::string::npos, "/data.pkl") == 0) {
      prefix = e.name.substr(0, slash + 1);
      pkl = &e;
      break;
    }
  }
  if (pkl == nullptr) throw Error("pth: zip archive has no <folder>/data.pkl record (not a torch.save checkpoint)");
  const auto bo = by_name.find(prefix + "byteorder");
  if (bo != by_name.end()) {
    const std::string order(reinterpret_cast<const char*>(data + bo->second->offset), bo->second->size);
    if (order != "little") throw Error("pth: byte order '" + printable(order) + "' is not supported");
  }

  detail::PickleContext ctx;
  size_t pos = 0;
  const PyValue* root = detail::unpickle(data + pkl->offset, pkl->size, pos, ctx, true);

  std::map<std::string, Span> spans;
  for (const auto& [key, dtype] : ctx.storages) {
    const auto e = by_name.find(prefix + "data/" + key);
    if (e == by_name.end()) throw Error("pth: storage record data/" + printable(key) + " is missing");
    spans[key] = Span{data + e->second->offset, e->second->size};
  }
  return extract_state_dict(root, spans);
}

StateDict load_legacy_pth(const uint8_t* data, size_t size) {
  detail::PickleContext ctx;
  size_t pos = 0;
  // torch.serialization.MAGIC_NUMBER = 0x1950a86a20f9469cfc6c, little-endian.
  static const std::string kMagic("\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 10);
  const PyValue* magic = detail::unpickle(data, size, pos, ctx, false);
  if (magic->kind != Kind::BigInt || magic->s != kMagic) throw Error("pth: bad magic number (not a torch.save checkpoint)");
  const PyValue* proto = detail::unpickle(data, size, pos, ctx, false);
  if (proto->kind != Kind::Int || proto->i != 1001) throw Error("pth: unsupported legacy protocol version");
  const PyValue* sys_info = detail::unpickle(data, size, pos, ctx, false);
  if (sys_info->kind != Kind::Dict) throw Error("pth: legacy sys_info is not a dict");
  const PyValue* le = dict_get(*sys_info, "little_endian");
  if (le != nullptr && le->kind == Kind::Bool && le->i == 0) throw Error("pth: big-endian legacy checkpoints are not supported");

  const PyValue* root = detail::unpickle(data, size, pos, ctx, true);
  const PyValue* keys = detail::unpickle(data, size, pos, ctx, false);
  if (keys->kind != Kind::List) throw Error("pth: legacy storage key list is not a list");

  // Storages follow in key-list order: int64 element count, then raw bytes.
  std::map<std::string, Span> spans;
  for (const PyValue* k : keys->items) {
    if (k->kind != Kind::Str) throw Error("pth: legacy storage key is not a string");
    const auto st = ctx.storages.find(k->s);
    if (st == ctx.storages.end()) throw Error("pth: legacy storage " + key_text(k->s) + " is not used by any tensor");
    if (size - pos < 8) throw Error("pth: truncated legacy storage " + key_text(k->s));
    uint64_t count = 0;
    for (int b = 7; b >= 0; --b) count = count << 8 | data[pos + b];
    pos += 8;
    const uint64_t es = dtype_size(st->second);
    if (count > (size - pos) / es) throw Error("pth: truncated legacy storage " + key_text(k->s));
    if (!spans.emplace(k->s, Span{data + pos, count * es}).second)
      throw Error("pth: legacy storage " + key_text(k->s) + " is listed twice");
    pos += count * es;
  }
  return extract_state_dict(root, spans);
}

bool is_zip(const uint8_t* data, size_t size) {
  return size >= 4 && data[0] == 'P' && data[1] == 'K' &&
         ((data[2] == 3 && data[3] == 4) || (data[2] == 5 && data[3] == 6));
}

// Legacy files open with the pickled magic number: PROTO (protocol >= 2) or
// a text LONG (protocols 0 and 1).
bool is_legacy(const uint8_t* data, size_t size) { return size > 0 && (data[0] == 0x80 || data[0] == 'L'); }

bool looks_like_safetensors(const uint8_t* data, size_t size) {
  if (size < 9) return false;
  uint64_t n = 0;
  for (int b = 7; b >= 0; --b) n = n << 8 | data[b];
  return n <= size - 8 && data[8] == '{';
}

template <typename F>
auto with_path(const std::string& path, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  } catch (const std::bad_alloc&) {
    throw Error(path + ": out of memory while loading");
  }
}

void check_tensor(const std::string& key, const TensorData& t) {
  const uint64_t bytes = checked_bytes(t.shape, dtype_size(t.dtype), "tensor " + key_text(key));
  if (bytes != t.data.size())
    throw Error("tensor " + key_text(key) + " holds " + std::to_string(t.data.size()) + " bytes but its shape needs " +
                std::to_string(bytes));
}

void save_pth_impl(const std::string& path, const StateDict& sd, bool force_zip64) {
  for (const auto& [key, t] : sd) check_tensor(key, t);
  const std::vector<uint8_t> pkl = detail::pickle_state_dict(sd);
  write_atomic_with(path, [&](std::FILE* f) {
    detail::ZipWriter zip(f, force_zip64);
    zip.add("archive/data.pkl", pkl.data(), pkl.size());
    zip.add("archive/byteorder", reinterpret_cast<const uint8_t*>("little"), 6);
    for (size_t i = 0; i < sd.size(); ++i)
      zip.add("archive/data/" + std::to_string(i), sd[i].second.data.data(), sd[i].second.data.size());
    zip.add("archive/version", reinterpret_cast<const uint8_t*>("3\n"), 2);
    zip.finish();
  });
}

// ---------------------------------------------------------------- safetensors

bool dtype_from_name(const std::string& s, DType& out) {
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::F64, DType::I64, DType::I32, DType::I16, DType::I8,
                  DType::U8, DType::Bool}) {
    if (s == dtype_name(t)) {
      out = t;
      return true;
    }
  }
  return false;
}

// nlohmann's parser is iterative, but bounding nesting first keeps hostile
// headers from building huge deep trees: a safetensors header is depth 3.
void check_json_depth(const char* p, size_t n) {
  int depth = 0;
  bool in_str = false;
  for (size_t i = 0; i < n; ++i) {
    const char c = p[i];
    if (in_str) {
      if (c == '\\') ++i;
      else if (c == '"') in_str = false;
    } else if (c == '"') {
      in_str = true;
    } else if (c == '{' || c == '[') {
      if (++depth > 16) throw Error("safetensors: header nests too deeply");
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
}

}  // namespace

StateDict load_pth_bytes(const uint8_t* data, size_t size) {
  if (is_zip(data, size)) return load_zip_pth(data, size);
  if (is_legacy(data, size)) return load_legacy_pth(data, size);
  throw Error("pth: not a torch.save checkpoint (neither a zip archive nor a legacy pickle)");
}

StateDict load_pth(const std::string& path) {
  const MappedFile file(path);
  return with_path(path, [&] { return load_pth_bytes(file.data(), file.size()); });
}

void save_pth(const std::string& path, const StateDict& sd) {
  with_path(path, [&] { save_pth_impl(path, sd, false); });
}

namespace detail {
void save_pth_zip64(const std::string& path, const StateDict& sd) {
  with_path(path, [&] { save_pth_impl(path, sd, true); });
}
}  // namespace detail

SafetensorsIndex index_safetensors(const uint8_t* data, size_t size) {
  // A std::map-backed json keeps hostile headers with millions of keys
  // O(n log n); the file's key order is recorded by the parse callback.
  using json = nlohmann::json;
  if (size < 8) throw Error("safetensors: file too small for the header length");
  uint64_t n = 0;
  for (int b = 7; b >= 0; --b) n = n << 8 | data[b];
  if (n > size - 8) {
    // A torch.save file where safetensors is expected (an adapter, say)
    // reads as an absurd header length; name it instead. Only here: a
    // valid header length can begin with these bytes.
    if (std::memcmp(data, "PK\x03\x04", 4) == 0 || (data[0] == 0x80 && data[1] >= 2 && data[1] <= 5))
      throw Error(
          "safetensors: this looks like a torch.save (.pth) file, not safetensors (rsam convert turns one into the "
          "other)");
    throw Error("safetensors: header length " + std::to_string(n) +
                " exceeds the file (not safetensors, or cut short)");
  }
  const char* text = reinterpret_cast<const char*>(data + 8);
  check_json_depth(text, static_cast<size_t>(n));
  std::vector<std::string> order;
  const json::parser_callback_t on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1) order.push_back(parsed.get<std::string>());
    return true;
  };
  const json header = json::parse(text, text + n, on_event, false);
  if (header.is_discarded()) throw Error("safetensors: header is not valid JSON");
  if (!header.is_object()) throw Error("safetensors: header is not a JSON object");
  if (order.size() != header.size()) throw Error("safetensors: header repeats a key");
  const uint8_t* buf = data + 8 + n;
  const uint64_t buf_size = size - 8 - n;

  SafetensorsIndex out;
  out.buffer = buf;
  struct Range {
    uint64_t begin, end;
    std::string name;
  };
  std::vector<Range> ranges;
  for (const std::string& name : order) {
    const json& info = header.at(name);
    if (name == "__metadata__") {
      if (!info.is_object()) throw Error("safetensors: __metadata__ is not an object");
      for (const auto& [k, v] : info.items()) {
        if (!v.is_string()) throw Error("safetensors: metadata value " + key_text(k) + " is not a string");
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string what = "safetensors: tensor " + key_text(name);
    if (!info.is_object()) throw Error(what + " is not an object");
    const auto dt = info.find("dtype");
    const auto sh = info.find("shape");
    const auto of = info.find("data_offsets");
    if (dt == info.end() || sh == info.end() || of == info.end())
      throw Error(what + " lacks dtype, shape or data_offsets");
    SafetensorsIndex::Entry t;
    t.name = name;
    if (!dt->is_string() || !dtype_from_name(dt->get<std::string>(), t.dtype))
      throw Error(what + " has unsupported dtype " + printable(dt->dump()));
    if (!sh->is_array()) throw Error(what + " has a non-array shape");
    for (const auto& d : *sh) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > (uint64_t(1) << 62)) throw Error(what + " has a bad dimension");
      t.shape.push_back(static_cast<int64_t>(d.get<uint64_t>()));
    }
    if (!of->is_array() || of->size() != 2 || !(*of)[0].is_number_unsigned() || !(*of)[1].is_number_unsigned())
      throw Error(what + " has bad data_offsets");
    const uint64_t begin = (*of)[0].get<uint64_t>(), end = (*of)[1].get<uint64_t>();
    if (begin > end || end > buf_size) throw Error(what + " has data_offsets outside the data buffer");
    if (checked_bytes(t.shape, dtype_size(t.dtype), what) != end - begin)
      throw Error(what + " has data_offsets that do not match its shape and dtype");
    t.begin = begin;
    t.end = end;
    ranges.push_back({begin, end, name});
    out.entries.push_back(std::move(t));
  }
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
  uint64_t covered = 0;
  for (const Range& r : ranges) {
    if (r.begin == r.end) continue;
    if (r.begin < covered) throw Error("safetensors: tensor " + key_text(r.name) + " overlaps another tensor");
    covered = r.end;
  }
  return out;
}

SafetensorsFile load_safetensors_bytes(const uint8_t* data, size_t size) {
  SafetensorsIndex index = index_safetensors(data, size);
  SafetensorsFile out;
  out.metadata = std::move(index.metadata);
  for (auto& e : index.entries) {
    TensorData t;
    t.dtype = e.dtype;
    t.shape = std::move(e.shape);
    t.data.assign(index.buffer + e.begin, index.buffer + e.end);
    out.tensors.emplace_back(std::move(e.name), std::move(t));
  }
  return out;
}

SafetensorsFile load_safetensors(const std::string& path) {
  const MappedFile file(path);
  return with_path(path, [&] { return load_safetensors_bytes(file.data(), file.size()); });
}

void save_safetensors(const std::string& path, const StateDict& sd, const std::map<std::string, std::string>& metadata) {
  using json = nlohmann::ordered_json;
  with_path(path, [&] {
    json header = json::object();
    if (!metadata.empty()) header["__metadata__"] = metadata;
    uint64_t offset = 0;
    for (const auto& [key, t] : sd) {
      check_tensor(key, t);
      if (key == "__metadata__" || header.contains(key)) throw Error("safetensors: duplicate or reserved key " + key_text(key));
      header[key] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.data.size()}}};
      offset += t.data.size();
    }
    std::string text;
    try {
      text = header.dump();
    } catch (const json::exception&) {
      throw Error("safetensors: a key or metadata value is not valid UTF-8");
    }
    text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data buffer 8-byte aligned
    uint8_t len[8];
    for (int b = 0; b < 8; ++b) len[b] = uint8_t(uint64_t(text.size()) >> (8 * b));
    write_atomic_with(path, [&](std::FILE* f) {
      bool ok = std::fwrite(len, 1, 8, f) == 8 && std::fwrite(text.data(), 1, text.size(), f) == text.size();
      for (const auto& kv : sd) {
        const auto& d = kv.second.data;
        ok = ok && (d.empty() || std::fwrite(d.data(), 1, d.size(), f) == d.size());
      }
      if (!ok) throw Error("cannot write " + path + ": " + std::strerror(errno));
    });
  });
}

StateDict load_any(const std::string& path) {
  const MappedFile file(path);
  return with_path(path, [&]() -> StateDict {
    const uint8_t* d = file.data();
    const size_t n = file.size();
    if (is_zip(d, n)) return load_zip_pth(d, n);
    if (looks_like_safetensors(d, n)) return load_safetensors_bytes(d, n).tensors;
    if (is_legacy(d, n)) return load_legacy_pth(d, n);
    throw Error("unrecognized weights format (expected a torch.save checkpoint or safetensors)");
  });
}

}  // namespace rsam::io
