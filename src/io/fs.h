// File helpers: the one layer through which rsam writes. Every output goes
// through write_atomic (an unpredictable temp file created in the destination
// folder without following links, then renamed), so a killed job never leaves
// a half-written file under the final name, and nobody who can write the
// folder can redirect the write by planting a link. The path checks below are
// what keep outputs inside their folder and off the command's inputs.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace rsam::io {

std::vector<uint8_t> read_file(const std::string& path);  // rsam::Error if unreadable

// Writes through ".<name>.rsam-tmp.<pid>.<random>" beside `path` (O_CREAT |
// O_EXCL | O_NOFOLLOW), synced, then renamed over `path`. Any failure (disk
// full included) is an rsam::Error "cannot write PATH: reason" and removes
// the temp file; whatever was at `path` before is left as it was.
void write_atomic(const std::string& path, const void* data, size_t size);
void write_text(const std::string& path, const std::string& text);
// For writers that stream: `fill` writes to the open temp file (it must not
// close it). Write errors are detected when the file is flushed.
void write_atomic_with(const std::string& path, const std::function<void(std::FILE* f)>& fill);

// A private working folder "PARENT/.<name>.rsam-tmp.<pid>.<random>" (mode
// 0700), for the caller to remove when done; a killed run's is removed by
// remove_stale_temps. rsam::Error if it cannot be made.
std::string make_temp_dir(const std::string& parent, const std::string& name);

// rsam's temp naming: true for ".<name>.rsam-tmp.<pid>.<random>", with the
// pid of the process that made it.
bool is_temp_name(const std::string& filename, long* pid = nullptr);
// Removes the temp files and folders in `dir` whose process is gone: what a
// killed run left. Folders only if they are this user's and not links.
// Returns how many. Never throws.
size_t remove_stale_temps(const std::string& dir);

// Appends lines to a log file (metrics.jsonl, manifest.jsonl), opened without
// following a link; every line is flushed. rsam::Error on any failure.
class AppendFile {
 public:
  explicit AppendFile(const std::string& path);
  ~AppendFile();
  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;
  void write_line(const std::string& line);  // appends line + '\n'
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

// True when both exist and are the same file (device and inode, links
// followed): what decides whether writing one destroys the other.
bool same_file(const std::string& a, const std::string& b);

struct NamedPath {
  std::string what;  // how the message names it: "--out", "the checkpoint", ...
  std::string path;
};
// rsam::Error "<output.what> 'P' is the same file as <input.what> 'Q'" when an
// output would land on an input, or two outputs on one file. Empty paths are
// skipped. Outputs that do not exist yet cannot be inputs; for them only the
// names are compared.
void check_outputs(const std::vector<NamedPath>& outputs, const std::vector<NamedPath>& inputs);

// Before long work, so a run does not fail at its end: rsam::Error when the
// folder a file `path` would be written into is missing or not a folder, or
// `path` itself is a folder. Also removes the temp files killed rsam runs
// left in that folder. An empty path passes.
void prepare_output(const std::string& path);

// `rel` joined under `root`, refused (rsam::Error naming both) when it is
// absolute, empty, climbs out with "..", or passes through a link or folder
// that resolves outside root. The result is root + "/" + the normalised rel.
std::string join_inside(const std::string& root, const std::string& rel);

// Exclusive hold on an output folder for the object's lifetime, so two runs
// cannot write one folder at once. The lock is an flock on ".rsam.lock" in
// the folder (created without following a link, holding the owner's pid);
// the kernel drops it when the process dies, so a killed run never leaves a
// stale lock. Taking it also removes stale temp files in the folder.
// rsam::Error "DIR is in use by another rsam run (pid N)" when held.
class FolderLock {
 public:
  explicit FolderLock(const std::string& dir);
  ~FolderLock();
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;

 private:
  int fd_ = -1;
};

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
