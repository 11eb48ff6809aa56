// Minimal zip support for PyTorch checkpoints: torch.save stores every record
// uncompressed, so only "stored" entries are read or written. Internal to
// src/io (no other layer should need zip).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace rsam::io::detail {

// Names from files end up in one-line error messages: escape control bytes
// and cap the length so a hostile name cannot forge or flood the message.
std::string printable(const std::string& s);

uint32_t crc32(const uint8_t* data, size_t size, uint32_t crc = 0);

struct ZipEntry {
  std::string name;
  uint64_t offset = 0;  // absolute offset of the entry's data in the archive
  uint64_t size = 0;
};

// Parses the (zip64-aware) central directory and resolves every entry's data
// span through its local header. Throws rsam::Error on any inconsistency,
// compressed or encrypted entries, or spans outside the buffer.
std::vector<ZipEntry> read_zip_directory(const uint8_t* data, size_t size);

// Streams stored entries to `f`, each entry's data aligned to 64 bytes like
// PyTorch's writer does (so readers can mmap tensors). Uses zip64 records
// only where sizes or offsets need them, or everywhere when force_zip64.
class ZipWriter {
 public:
  explicit ZipWriter(std::FILE* f, bool force_zip64 = false) : f_(f), force64_(force_zip64) {}
  void add(const std::string& name, const uint8_t* data, size_t size);
  void finish();  // writes the central directory; call once

 private:
  struct Central {
    std::string name;
    uint32_t crc;
    uint64_t size;
    uint64_t offset;
  };
  void put(const void* p, size_t n);
  std::FILE* f_;
  bool force64_;
  uint64_t pos_ = 0;
  std::vector<Central> entries_;
};

}  // namespace rsam::io::detail
