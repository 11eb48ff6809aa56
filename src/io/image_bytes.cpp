#include "io/image_bytes.h"

#include <cctype>
#include <cstring>

#include "io/zip.h"  // crc32 (the same CRC as PNG's), printable

namespace rsam::io {
namespace {

const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};

uint32_t be32(const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }

// PNG: signature, then length/type/data/CRC chunks up to IEND. Critical
// chunks (uppercase first letter) must carry a correct CRC, as libpng
// requires; ancillary ones are not checked, as libpng only warns.
std::string png_problem(const uint8_t* d, size_t n) {
  size_t pos = 8;
  while (true) {
    if (n - pos < 12) return "truncated PNG (no IEND chunk)";
    const uint32_t len = be32(d + pos);
    if (len > 0x7FFFFFFFu) return "corrupt PNG (chunk length out of range)";
    if (n - pos - 12 < len) return "truncated PNG (a chunk runs past the end of the file)";
    const uint8_t* type = d + pos + 4;
    const bool critical = type[0] >= 'A' && type[0] <= 'Z';
    if (critical && detail::crc32(type, 4 + size_t(len)) != be32(type + 4 + len))
      return "corrupt PNG (bad CRC in chunk " + detail::printable(std::string(reinterpret_cast<const char*>(type), 4)) +
             ")";
    pos += 12 + size_t(len);
    if (std::memcmp(type, "IEND", 4) == 0) return {};
  }
}

// JPEG: SOI, then marker segments; after each SOS the entropy-coded data runs
// to the next marker that is not a stuffed byte (FF00) or a restart (RSTn).
// The file is complete when EOI (FFD9) is reached.
std::string jpeg_problem(const uint8_t* d, size_t n) {
  size_t pos = 2;
  while (true) {
    // Stray bytes between segments are tolerated (libjpeg only warns).
    while (pos < n && d[pos] != 0xFF) ++pos;
    while (pos < n && d[pos] == 0xFF) ++pos;  // fill bytes
    if (pos >= n) return "truncated JPEG (no end-of-image marker)";
    const uint8_t m = d[pos++];
    if (m == 0xD9) return {};
    if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD8)) continue;  // no length field
    if (n - pos < 2) return "truncated JPEG (no end-of-image marker)";
    const size_t len = size_t(d[pos]) << 8 | d[pos + 1];
    if (len < 2) return "corrupt JPEG (segment length below 2)";
    if (n - pos < len) return "truncated JPEG (a segment runs past the end of the file)";
    pos += len;
    if (m != 0xDA) continue;
    // Entropy-coded data: stop at FF followed by a real marker.
    while (true) {
      while (pos < n && d[pos] != 0xFF) ++pos;
      if (pos >= n) return "truncated JPEG (no end-of-image marker)";
      size_t q = pos + 1;
      while (q < n && d[q] == 0xFF) ++q;
      if (q >= n) return "truncated JPEG (no end-of-image marker)";
      if (d[q] == 0x00 || (d[q] >= 0xD0 && d[q] <= 0xD7)) {
        pos = q + 1;
        continue;
      }
      pos = q - 1;  // at the last FF before the marker byte
      break;
    }
  }
}

uint32_t le32(const uint8_t* p) { return uint32_t(p[3]) << 24 | uint32_t(p[2]) << 16 | uint32_t(p[1]) << 8 | p[0]; }
uint32_t le16(const uint8_t* p) { return uint32_t(p[1]) << 8 | p[0]; }
uint32_t be16(const uint8_t* p) { return uint32_t(p[0]) << 8 | p[1]; }

// The first frame header (SOFn) gives the size; markers are walked as in
// jpeg_problem, stopping at the first scan.
void jpeg_size(const uint8_t* d, size_t n, ImageHeader& h) {
  size_t pos = 2;
  while (pos < n) {
    while (pos < n && d[pos] != 0xFF) ++pos;
    while (pos < n && d[pos] == 0xFF) ++pos;
    if (pos >= n) return;
    const uint8_t m = d[pos++];
    if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD8)) continue;
    if (m == 0xD9 || m == 0xDA || n - pos < 2) return;
    const size_t len = be16(d + pos);
    const bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
    if (sof && len >= 7 && n - pos >= 7) {
      h.height = be16(d + pos + 3);
      h.width = be16(d + pos + 5);
      return;
    }
    if (len < 2) return;
    pos += len;
  }
}

// TIFF: the first image file directory's ImageWidth (256) and ImageLength (257).
void tiff_size(const uint8_t* d, size_t n, ImageHeader& h) {
  if (n < 8) return;
  const bool le = d[0] == 'I';
  auto u16 = [&](size_t o) { return le ? le16(d + o) : be16(d + o); };
  auto u32 = [&](size_t o) { return le ? le32(d + o) : be32(d + o); };
  const size_t ifd = u32(4);
  if (ifd > n || n - ifd < 2) return;
  const size_t count = u16(ifd);
  for (size_t i = 0; i < count; ++i) {
    const size_t e = ifd + 2 + 12 * i;
    if (e > n || n - e < 12) return;
    const uint32_t tag = u16(e), type = u16(e + 2);
    if (tag != 256 && tag != 257) continue;
    const uint64_t v = type == 3 ? u16(e + 8) : type == 4 ? u32(e + 8) : 0;
    (tag == 256 ? h.width : h.height) = v;
  }
}

void webp_size(const uint8_t* d, size_t n, ImageHeader& h) {
  if (n < 30) return;
  if (std::memcmp(d + 12, "VP8X", 4) == 0) {
    h.width = 1 + (le32(d + 24) & 0xFFFFFF);
    h.height = 1 + (le32(d + 27) & 0xFFFFFF);
  } else if (std::memcmp(d + 12, "VP8L", 4) == 0 && d[20] == 0x2F) {
    const uint32_t bits = le32(d + 21);
    h.width = 1 + (bits & 0x3FFF);
    h.height = 1 + ((bits >> 14) & 0x3FFF);
  } else if (std::memcmp(d + 12, "VP8 ", 4) == 0 && d[23] == 0x9D && d[24] == 0x01 && d[25] == 0x2A) {
    h.width = le16(d + 26) & 0x3FFF;
    h.height = le16(d + 28) & 0x3FFF;
  }
}

// PBM/PGM/PPM: "Pn", then width and height as decimal text, with
// whitespace and '#' comments between.
void pnm_size(const uint8_t* d, size_t n, ImageHeader& h) {
  size_t pos = 2;
  uint64_t v[2] = {0, 0};
  for (uint64_t& out : v) {
    while (pos < n && (std::isspace(d[pos]) || d[pos] == '#')) {
      if (d[pos] == '#')
        while (pos < n && d[pos] != '\n') ++pos;
      else
        ++pos;
    }
    size_t digits = 0;
    while (pos < n && std::isdigit(d[pos]) && digits < 10) out = out * 10 + (d[pos++] - '0'), ++digits;
    if (digits == 0) return;
  }
  h.width = v[0];
  h.height = v[1];
}

}  // namespace

ImageHeader image_header(const uint8_t* d, size_t n) {
  ImageHeader h;
  if (n >= 8 && std::memcmp(d, kPng, 8) == 0) {
    h.format = "png";
    if (n >= 24 && std::memcmp(d + 12, "IHDR", 4) == 0) {
      h.width = be32(d + 16);
      h.height = be32(d + 20);
    }
  } else if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) {
    h.format = "jpeg";
    jpeg_size(d, n, h);
  } else if (n >= 2 && d[0] == 'B' && d[1] == 'M') {
    h.format = "bmp";
    if (n >= 26) {
      const bool core = le32(d + 14) == 12;  // OS/2 header: 16-bit sizes
      const int64_t w = core ? int64_t(le16(d + 18)) : int64_t(int32_t(le32(d + 18)));
      const int64_t ht = core ? int64_t(le16(d + 20)) : int64_t(int32_t(le32(d + 22)));
      h.width = uint64_t(w < 0 ? -w : w);
      h.height = uint64_t(ht < 0 ? -ht : ht);  // negative: stored top-down
    }
  } else if (n >= 4 && (std::memcmp(d, "II*\0", 4) == 0 || std::memcmp(d, "MM\0*", 4) == 0)) {
    h.format = "tiff";
    tiff_size(d, n, h);
  } else if (n >= 12 && std::memcmp(d, "RIFF", 4) == 0 && std::memcmp(d + 8, "WEBP", 4) == 0) {
    h.format = "webp";
    webp_size(d, n, h);
  } else if (n >= 2 && d[0] == 'P' && d[1] >= '1' && d[1] <= '6') {
    h.format = "pnm";
    pnm_size(d, n, h);
  }
  return h;
}

std::string image_bytes_problem(const uint8_t* data, size_t size) {
  if (size >= 8 && std::memcmp(data, kPng, 8) == 0) return png_problem(data, size);
  if (size >= 2 && data[0] == 0xFF && data[1] == 0xD8) return jpeg_problem(data, size);
  if (size > 0 && size < 8 && std::memcmp(data, kPng, size) == 0) return "truncated PNG (shorter than its signature)";
  return {};
}

}  // namespace rsam::io
