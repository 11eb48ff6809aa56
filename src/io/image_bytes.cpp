#include "io/image_bytes.h"

#include <cstring>

#include "io/zip.h"  // crc32 (the same CRC as PNG's), printable

namespace rsam::io {
namespace {

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

}  // namespace

std::string image_bytes_problem(const uint8_t* data, size_t size) {
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (size >= 8 && std::memcmp(data, kPng, 8) == 0) return png_problem(data, size);
  if (size >= 2 && data[0] == 0xFF && data[1] == 0xD8) return jpeg_problem(data, size);
  if (size > 0 && size < 8 && std::memcmp(data, kPng, size) == 0) return "truncated PNG (shorter than its signature)";
  return {};
}

}  // namespace rsam::io
