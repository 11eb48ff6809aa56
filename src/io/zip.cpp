#include "io/zip.h"

#include <algorithm>
#include <array>
#include <unordered_set>

#include "error.h"

namespace rsam::io::detail {
namespace {

constexpr uint32_t kLocalSig = 0x04034b50;
constexpr uint32_t kCentralSig = 0x02014b50;
constexpr uint32_t kEocdSig = 0x06054b50;
constexpr uint32_t kEocd64Sig = 0x06064b50;
constexpr uint32_t kLocator64Sig = 0x07064b50;
constexpr size_t kLocalSize = 30, kCentralSize = 46, kEocdSize = 22, kEocd64Size = 56,
                 kLocatorSize = 20;
constexpr uint64_t kAlign = 64;

// Bounds-checked little-endian reads from the archive buffer.
struct Buf {
  const uint8_t* p;
  size_t n;
  void need(uint64_t off, uint64_t len, const char* what) const {
    if (off > n || len > n - off) throw Error(std::string("zip: truncated or corrupt ") + what);
  }
  uint16_t u16(uint64_t off) const { need(off, 2, "record"); return uint16_t(p[off] | p[off + 1] << 8); }
  uint32_t u32(uint64_t off) const {
    need(off, 4, "record");
    return uint32_t(p[off]) | uint32_t(p[off + 1]) << 8 | uint32_t(p[off + 2]) << 16 | uint32_t(p[off + 3]) << 24;
  }
  uint64_t u64(uint64_t off) const { return uint64_t(u32(off)) | uint64_t(u32(off + 4)) << 32; }
};

std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}

}  // namespace

std::string printable(const std::string& s) {
  constexpr size_t kMax = 120;
  std::string out;
  for (size_t i = 0; i < s.size() && i < kMax; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7F) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > kMax) out += "...";
  return out;
}

uint32_t crc32(const uint8_t* data, size_t size, uint32_t crc) {
  static const std::array<uint32_t, 256> table = make_crc_table();
  crc = ~crc;
  for (size_t i = 0; i < size; ++i) crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

std::vector<ZipEntry> read_zip_directory(const uint8_t* data, size_t size) {
  const Buf b{data, size};
  if (size < kEocdSize) throw Error("zip: file too small for an end-of-central-directory record");

  // The EOCD sits at the end, followed by a comment of at most 64 KiB.
  size_t eocd = SIZE_MAX;
  const size_t lowest = size - kEocdSize > 0xFFFF ? size - kEocdSize - 0xFFFF : 0;
  for (size_t i = size - kEocdSize + 1; i-- > lowest;) {
    if (b.u32(i) == kEocdSig && i + kEocdSize + b.u16(i + 20) <= size) {
      eocd = i;
      break;
    }
  }
  if (eocd == SIZE_MAX) throw Error("zip: end-of-central-directory record not found");

  uint64_t count = b.u16(eocd + 10);
  uint64_t cd_size = b.u32(eocd + 12);
  uint64_t cd_off = b.u32(eocd + 16);
  if (b.u16(eocd + 4) != 0 || b.u16(eocd + 6) != 0) throw Error("zip: multi-disk archives are not supported");

  if (eocd >= kLocatorSize && b.u32(eocd - kLocatorSize) == kLocator64Sig) {
    const uint64_t e64 = b.u64(eocd - kLocatorSize + 8);
    b.need(e64, kEocd64Size, "zip64 end-of-central-directory record");
    if (b.u32(e64) != kEocd64Sig) throw Error("zip: bad zip64 end-of-central-directory signature");
    count = b.u64(e64 + 32);
    cd_size = b.u64(e64 + 40);
    cd_off = b.u64(e64 + 48);
  } else if (count == 0xFFFF || cd_size == 0xFFFFFFFF || cd_off == 0xFFFFFFFF) {
    throw Error("zip: zip64 archive without a zip64 locator");
  }
  b.need(cd_off, cd_size, "central directory");
  if (count > cd_size / kCentralSize) throw Error("zip: entry count does not fit the central directory");

  std::vector<ZipEntry> out;
  out.reserve(static_cast<size_t>(count));
  std::unordered_set<std::string> seen;
  uint64_t pos = cd_off;
  const uint64_t cd_end = cd_off + cd_size;
  for (uint64_t i = 0; i < count; ++i) {
    if (pos > cd_end || cd_end - pos < kCentralSize) throw Error("zip: central directory overruns its size");
    if (b.u32(pos) != kCentralSig) throw Error("zip: bad central directory signature");
    const uint16_t flags = b.u16(pos + 8);
    const uint16_t method = b.u16(pos + 10);
    uint64_t csize = b.u32(pos + 20);
    uint64_t usize = b.u32(pos + 24);
    const uint16_t name_len = b.u16(pos + 28);
    const uint16_t extra_len = b.u16(pos + 30);
    const uint16_t comment_len = b.u16(pos + 32);
    uint64_t local = b.u32(pos + 42);
    const uint64_t var_len = uint64_t(name_len) + extra_len + comment_len;
    if (cd_end - pos - kCentralSize < var_len) throw Error("zip: central directory entry overruns its size");
    std::string name(reinterpret_cast<const char*>(data + pos + kCentralSize), name_len);

    // zip64 extra field: only the fields saturated in the fixed record appear, in this order.
    uint64_t x = pos + kCentralSize + name_len;
    const uint64_t x_end = x + extra_len;
    while (x + 4 <= x_end) {
      const uint16_t id = b.u16(x), len = b.u16(x + 2);
      if (len > x_end - x - 4) throw Error("zip: bad extra field in entry " + printable(name));
      if (id == 0x0001) {
        uint64_t f = x + 4;
        const uint64_t f_end = f + len;
        auto take = [&](uint64_t& v) {
          if (f + 8 > f_end) throw Error("zip: short zip64 extra field in entry " + printable(name));
          v = b.u64(f);
          f += 8;
        };
        if (usize == 0xFFFFFFFF) take(usize);
        if (csize == 0xFFFFFFFF) take(csize);
        if (local == 0xFFFFFFFF) take(local);
      }
      x += 4 + uint64_t(len);
    }
    if (flags & 0x1) throw Error("zip: entry " + printable(name) + " is encrypted");
    if (method != 0) throw Error("zip: entry " + printable(name) + " is compressed (method " + std::to_string(method) + "); only stored entries are supported");
    if (csize != usize) throw Error("zip: stored entry " + printable(name) + " has mismatched sizes");

    b.need(local, kLocalSize, "local header");
    if (b.u32(local) != kLocalSig) throw Error("zip: bad local header signature for entry " + printable(name));
    const uint64_t data_off = local + kLocalSize + b.u16(local + 26) + b.u16(local + 28);
    if (data_off > size || usize > size - data_off) throw Error("zip: data of entry " + printable(name) + " lies outside the file");
    if (!seen.insert(name).second) throw Error("zip: duplicate entry " + printable(name));
    out.push_back({std::move(name), data_off, usize});
    pos += kCentralSize + var_len;
  }
  return out;
}

namespace {
void le16(std::vector<uint8_t>& v, uint16_t x) { v.push_back(uint8_t(x)); v.push_back(uint8_t(x >> 8)); }
void le32(std::vector<uint8_t>& v, uint32_t x) { le16(v, uint16_t(x)); le16(v, uint16_t(x >> 16)); }
void le64(std::vector<uint8_t>& v, uint64_t x) { le32(v, uint32_t(x)); le32(v, uint32_t(x >> 32)); }
constexpr uint16_t kDosDate = (0 << 9) | (1 << 5) | 1;  // 1980-01-01: reproducible output
}  // namespace

void ZipWriter::put(const void* p, size_t n) {
  if (n != 0 && std::fwrite(p, 1, n, f_) != n) throw Error("zip: write failed");
  pos_ += n;
}

void ZipWriter::add(const std::string& name, const uint8_t* data, size_t size) {
  if (name.size() > 0xFFFF) throw Error("zip: entry name too long");
  const uint32_t crc = crc32(data, size);
  const bool z64 = force64_ || size >= 0xFFFFFFFF;
  std::vector<uint8_t> h;
  le32(h, kLocalSig);
  le16(h, z64 ? 45 : 20);
  le16(h, 0);  // flags
  le16(h, 0);  // stored
  le16(h, 0);  // time
  le16(h, kDosDate);
  le32(h, crc);
  le32(h, z64 ? 0xFFFFFFFF : uint32_t(size));
  le32(h, z64 ? 0xFFFFFFFF : uint32_t(size));
  le16(h, uint16_t(name.size()));
  const size_t extra_len_at = h.size();
  le16(h, 0);
  h.insert(h.end(), name.begin(), name.end());
  if (z64) {
    le16(h, 0x0001);
    le16(h, 16);
    le64(h, size);
    le64(h, size);
  }
  // Pad with a private "FB" extra field (PyTorch's choice) so data starts on a 64-byte boundary.
  const uint64_t start = pos_ + h.size() + 4;
  const uint16_t pad = uint16_t((kAlign - start % kAlign) % kAlign);
  h.push_back('F');
  h.push_back('B');
  le16(h, pad);
  h.insert(h.end(), pad, 'Z');
  const size_t extra_len = h.size() - kLocalSize - name.size();
  h[extra_len_at] = uint8_t(extra_len);
  h[extra_len_at + 1] = uint8_t(extra_len >> 8);
  entries_.push_back({name, crc, size, pos_});
  put(h.data(), h.size());
  put(data, size);
}

void ZipWriter::finish() {
  const uint64_t cd_off = pos_;
  std::vector<uint8_t> cd;
  for (const Central& e : entries_) {
    const bool big_size = force64_ || e.size >= 0xFFFFFFFF;
    const bool big_off = force64_ || e.offset >= 0xFFFFFFFF;
    std::vector<uint8_t> x;
    if (big_size || big_off) {
      le16(x, 0x0001);
      le16(x, uint16_t((big_size ? 16 : 0) + (big_off ? 8 : 0)));
      if (big_size) {
        le64(x, e.size);
        le64(x, e.size);
      }
      if (big_off) le64(x, e.offset);
    }
    le32(cd, kCentralSig);
    le16(cd, x.empty() ? 20 : 45);  // made by
    le16(cd, x.empty() ? 20 : 45);  // needed
    le16(cd, 0);
    le16(cd, 0);
    le16(cd, 0);
    le16(cd, kDosDate);
    le32(cd, e.crc);
    le32(cd, big_size ? 0xFFFFFFFF : uint32_t(e.size));
    le32(cd, big_size ? 0xFFFFFFFF : uint32_t(e.size));
    le16(cd, uint16_t(e.name.size()));
    le16(cd, uint16_t(x.size()));
    le16(cd, 0);  // comment
    le16(cd, 0);  // disk
    le16(cd, 0);  // internal attributes
    le32(cd, 0);  // external attributes
    le32(cd, big_off ? 0xFFFFFFFF : uint32_t(e.offset));
    cd.insert(cd.end(), e.name.begin(), e.name.end());
    cd.insert(cd.end(), x.begin(), x.end());
  }
  put(cd.data(), cd.size());
  const uint64_t cd_size = cd.size();
  const uint64_t n = entries_.size();
  const bool z64 = force64_ || n >= 0xFFFF || cd_off >= 0xFFFFFFFF || cd_size >= 0xFFFFFFFF;
  std::vector<uint8_t> t;
  if (z64) {
    const uint64_t e64 = pos_;
    le32(t, kEocd64Sig);
    le64(t, kEocd64Size - 12);
    le16(t, 45);
    le16(t, 45);
    le32(t, 0);
    le32(t, 0);
    le64(t, n);
    le64(t, n);
    le64(t, cd_size);
    le64(t, cd_off);
    le32(t, kLocator64Sig);
    le32(t, 0);
    le64(t, e64);
    le32(t, 1);
  }
  le32(t, kEocdSig);
  le16(t, 0);
  le16(t, 0);
  le16(t, z64 ? 0xFFFF : uint16_t(n));
  le16(t, z64 ? 0xFFFF : uint16_t(n));
  le32(t, z64 ? 0xFFFFFFFF : uint32_t(cd_size));
  le32(t, z64 ? 0xFFFFFFFF : uint32_t(cd_off));
  le16(t, 0);
  put(t.data(), t.size());
}

}  // namespace rsam::io::detail
