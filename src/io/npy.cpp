#include "io/npy.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "error.h"
#include "io/fs.h"
#include "io/zip.h"

namespace rsam::io {
namespace {

[[noreturn]] void fail(const std::string& msg) { throw Error("npy: " + msg); }

// The header is a Python dict literal, e.g.
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// Only that grammar (strings, True/False, tuples of ints) is accepted.
class HeaderParser {
 public:
  explicit HeaderParser(const std::string& s) : s_(s) {}

  void parse(std::string& descr, bool& fortran, std::vector<int64_t>& shape) {
    bool have_descr = false, have_fortran = false, have_shape = false;
    expect('{');
    for (;;) {
      if (eat('}')) break;
      const std::string key = str();
      expect(':');
      if (key == "descr") {
        descr = str();
        have_descr = true;
      } else if (key == "fortran_order") {
        fortran = boolean();
        have_fortran = true;
      } else if (key == "shape") {
        shape = tuple();
        have_shape = true;
      } else {
        fail("unexpected header key '" + detail::printable(key) + "'");
      }
      if (eat('}')) break;
      expect(',');
    }
    if (!have_descr || !have_fortran || !have_shape) fail("header lacks descr, fortran_order or shape");
  }

 private:
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  bool eat(char c) {
    ws();
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!eat(c)) fail(std::string("malformed header (expected '") + c + "')");
  }
  std::string str() {
    ws();
    if (i_ >= s_.size() || (s_[i_] != '\'' && s_[i_] != '"')) fail("malformed header (expected a string)");
    const char q = s_[i_++];
    const size_t end = s_.find(q, i_);
    if (end == std::string::npos) fail("malformed header (unterminated string)");
    std::string out = s_.substr(i_, end - i_);
    i_ = end + 1;
    return out;
  }
  bool boolean() {
    ws();
    if (s_.compare(i_, 4, "True") == 0) {
      i_ += 4;
      return true;
    }
    if (s_.compare(i_, 5, "False") == 0) {
      i_ += 5;
      return false;
    }
    fail("malformed header (fortran_order must be True or False)");
  }
  std::vector<int64_t> tuple() {
    expect('(');
    std::vector<int64_t> out;
    for (;;) {
      if (eat(')')) break;
      ws();
      if (i_ >= s_.size() || s_[i_] < '0' || s_[i_] > '9') fail("malformed header (bad shape)");
      int64_t v = 0;
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') {
        if (v > (int64_t(1) << 56)) fail("shape dimension too large");
        v = v * 10 + (s_[i_++] - '0');
      }
      if (i_ < s_.size() && s_[i_] == 'L') ++i_;  // Python 2 longs
      if (out.size() >= 64) fail("too many dimensions");
      out.push_back(v);
      if (eat(')')) break;
      expect(',');
    }
    return out;
  }

  const std::string& s_;
  size_t i_ = 0;
};

float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F;
  uint32_t mant = h & 0x3FF;
  uint32_t bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);  // inf / nan
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: renormalize
    int e = 113;
    while (!(mant & 0x400)) {
      mant <<= 1;
      --e;
    }
    bits = sign | (uint32_t(e) << 23) | ((mant & 0x3FF) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

template <typename T>
T read_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));  // the host is little-endian (x86-64 / aarch64)
  return v;
}

float narrow(double d) {
  // Out-of-range double->float conversion is undefined; saturate to +-inf.
  if (d > std::numeric_limits<float>::max()) return std::numeric_limits<float>::infinity();
  if (d < -std::numeric_limits<float>::max()) return -std::numeric_limits<float>::infinity();
  return static_cast<float>(d);
}

}  // namespace

NpyArray load_npy_bytes(const uint8_t* data, size_t size) {
  static const uint8_t kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (size < 10 || std::memcmp(data, kMagic, 6) != 0) fail("not an .npy file (bad magic)");
  const uint8_t major = data[6];
  size_t header_len, header_at;
  if (major == 1) {
    header_len = size_t(data[8]) | size_t(data[9]) << 8;
    header_at = 10;
  } else if (major == 2 || major == 3) {
    if (size < 12) fail("truncated header");
    header_len = size_t(data[8]) | size_t(data[9]) << 8 | size_t(data[10]) << 16 | size_t(data[11]) << 24;
    header_at = 12;
  } else {
    fail("unsupported format version " + std::to_string(major));
  }
  if (header_len > size - header_at) fail("truncated header");
  const std::string header(reinterpret_cast<const char*>(data + header_at), header_len);
  std::string descr;
  bool fortran = false;
  NpyArray out;
  HeaderParser(header).parse(descr, fortran, out.shape);
  if (fortran) fail("Fortran-order arrays are not supported");

  if (descr.size() == 3 && descr[0] == '>' && descr != ">u1" && descr != ">b1") fail("big-endian dtype " + descr + " is not supported");
  size_t itemsize = 0;
  char kind = 0;
  if (descr == "<f4") kind = 'f', itemsize = 4;
  else if (descr == "<f8") kind = 'f', itemsize = 8;
  else if (descr == "<f2") kind = 'f', itemsize = 2;
  else if (descr == "|u1" || descr == "<u1" || descr == ">u1") kind = 'u', itemsize = 1;
  else if (descr == "|b1" || descr == "<b1" || descr == ">b1") kind = 'b', itemsize = 1;
  else if (descr == "<i4") kind = 'i', itemsize = 4;
  else if (descr == "<i8") kind = 'i', itemsize = 8;
  else fail("unsupported dtype '" + detail::printable(descr) + "'");

  uint64_t numel = 1;
  for (int64_t d : out.shape) {
    if (d != 0 && numel > (uint64_t(1) << 56) / static_cast<uint64_t>(d)) fail("shape is impossibly large");
    numel *= static_cast<uint64_t>(d);
  }
  const size_t at = header_at + header_len;
  if (numel * itemsize != size - at)
    fail("data holds " + std::to_string(size - at) + " bytes but the shape needs " + std::to_string(numel * itemsize));

  out.data.resize(static_cast<size_t>(numel));
  const uint8_t* p = data + at;
  for (size_t i = 0; i < out.data.size(); ++i, p += itemsize) {
    float v = 0;
    if (kind == 'f' && itemsize == 4) v = read_le<float>(p);
    else if (kind == 'f' && itemsize == 8) v = narrow(read_le<double>(p));
    else if (kind == 'f') v = half_to_float(read_le<uint16_t>(p));
    else if (kind == 'u') v = static_cast<float>(*p);
    else if (kind == 'b') v = *p != 0 ? 1.0f : 0.0f;
    else if (itemsize == 4) v = static_cast<float>(read_le<int32_t>(p));
    else v = static_cast<float>(read_le<int64_t>(p));
    out.data[i] = v;
  }
  return out;
}

NpyArray load_npy(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file(path);
  try {
    return load_npy_bytes(bytes.data(), bytes.size());
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
}

void save_npy(const std::string& path, const float* data, const std::vector<int64_t>& shape) {
  uint64_t numel = 1;
  std::string dims;
  for (int64_t d : shape) {
    if (d < 0) throw Error(path + ": npy: negative dimension in shape");
    if (d != 0 && numel > (uint64_t(1) << 56) / static_cast<uint64_t>(d)) throw Error(path + ": npy: shape too large");
    numel *= static_cast<uint64_t>(d);
    dims += std::to_string(d) + ", ";
  }
  if (shape.size() == 1) dims.pop_back();  // "(3,)"
  else if (!dims.empty()) dims.resize(dims.size() - 2);
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  // Like numpy: pad with spaces and end with '\n' so the data starts 64-byte aligned.
  size_t preamble = 10;
  if (header.size() + 1 + preamble > 0xFFFF) preamble = 12;  // needs format 2.0
  header.append((64 - (preamble + header.size() + 1) % 64) % 64, ' ');
  header += '\n';

  std::vector<uint8_t> out = {0x93, 'N', 'U', 'M', 'P', 'Y', uint8_t(preamble == 10 ? 1 : 2), 0};
  for (size_t b = 0; b < preamble - 8; ++b) out.push_back(uint8_t(header.size() >> (8 * b)));
  out.insert(out.end(), header.begin(), header.end());
  const size_t at = out.size();
  out.resize(at + numel * 4);
  if (numel != 0) std::memcpy(out.data() + at, data, numel * 4);
  write_atomic(path, out.data(), out.size());
}

}  // namespace rsam::io
