// File helpers: every output rsam writes goes through write_atomic (temp file
// in the same directory, then rename), so a killed job never leaves a
// half-written file under the final name.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace rsam::io {

std::vector<uint8_t> read_file(const std::string& path);  // rsam::Error if unreadable
void write_atomic(const std::string& path, const void* data, size_t size);
// For writers that stream: `fill` writes to the temp path it is given.
void write_atomic_with(const std::string& path, const std::function<void(const std::string& tmp)>& fill);

// Read-only view of a whole file (mmap, or a heap copy where mapping fails),
// so multi-GB checkpoints are parsed without first copying them into memory.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);  // rsam::Error if unreadable
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  void* map_ = nullptr;
  std::vector<uint8_t> fallback_;
};

}  // namespace rsam::io
