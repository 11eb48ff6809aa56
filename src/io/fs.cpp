#include "io/fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>

#include "error.h"

namespace rsam::io {
namespace {

const char kTempTag[] = ".rsam-tmp.";

std::string errno_text() { return std::strerror(errno); }

std::string dir_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string base_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// Twelve letters from the kernel's random source: the temp name cannot be
// guessed, so it cannot be pre-planted as a link (O_EXCL is the guarantee,
// the randomness keeps an attacker from making the create fail on purpose).
std::string random_suffix() {
  static const char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  unsigned char bytes[12];
  size_t got = 0;
  while (got < sizeof bytes) {
    const ssize_t n = ::getrandom(bytes + got, sizeof bytes - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error("cannot draw a temp file name: " + errno_text());
    got += size_t(n);
  }
  std::string s;
  for (unsigned char b : bytes) s += kAlphabet[b % 36];
  return s;
}

std::string temp_name_for(const std::string& path) {
  const std::string prefix = path.find('/') == std::string::npos ? std::string() : dir_of(path) + "/";
  return prefix + "." + base_of(path) + kTempTag + std::to_string(::getpid()) + "." + random_suffix();
}

// Creates the temp file for `path`: returns its fd and name.
int create_temp(const std::string& path, std::string& tmp) {
  for (int attempt = 0; attempt < 16; ++attempt) {
    tmp = temp_name_for(path);
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd >= 0) return fd;
    if (errno != EEXIST) throw Error("cannot write " + path + ": " + errno_text());
  }
  throw Error("cannot write " + path + ": no free temp file name in " + dir_of(path));
}

void write_all(int fd, const void* data, size_t size, const std::string& path) {
  const auto* p = static_cast<const uint8_t*>(data);
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, p + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw Error("cannot write " + path + ": " + (n < 0 ? errno_text() : std::string("short write")));
    done += size_t(n);
  }
}

// Renames the synced temp file over `path`. rename() replaces a link at
// `path` itself, never the file it points to.
void publish(const std::string& tmp, const std::string& path) {
  if (::rename(tmp.c_str(), path.c_str()) != 0) throw Error("cannot write " + path + ": " + errno_text());
  // Best effort: make the rename itself durable.
  const int dfd = ::open(dir_of(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

bool process_alive(long pid) { return pid > 0 && (::kill(pid_t(pid), 0) == 0 || errno == EPERM); }

// Lexical normalisation of a relative path: "." and empty parts dropped,
// ".." cancels the part before it; a ".." with nothing to cancel is refused.
bool normalise_relative(const std::string& rel, std::vector<std::string>& parts) {
  size_t start = 0;
  while (start <= rel.size()) {
    const size_t slash = rel.find('/', start);
    const std::string part = rel.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (part == "..") {
      if (parts.empty()) return false;
      parts.pop_back();
    } else if (!part.empty() && part != ".") {
      parts.push_back(part);
    }
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return true;
}

std::string real_path(const std::string& p) {
  char* r = ::realpath(p.c_str(), nullptr);
  if (r == nullptr) return {};
  std::string out(r);
  std::free(r);
  return out;
}

bool inside(const std::string& real_root, const std::string& real_child) {
  if (real_child == real_root) return true;
  const std::string prefix = real_root == "/" ? real_root : real_root + "/";
  return real_child.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

std::vector<uint8_t> read_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open " + path + ": " + errno_text());
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error("cannot read " + path + ": not a regular file");
  }
  std::vector<uint8_t> out;
  try {
    out.resize(static_cast<size_t>(st.st_size));
  } catch (const std::bad_alloc&) {
    ::close(fd);
    throw Error("cannot read " + path + ": out of memory");
  }
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::read(fd, out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string why = n < 0 ? errno_text() : "file shrank while reading";
      ::close(fd);
      throw Error("cannot read " + path + ": " + why);
    }
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  return out;
}

MappedFile::MappedFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open " + path + ": " + errno_text());
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error("cannot read " + path + ": not a regular file");
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      // Some filesystems cannot map; fall back to reading into memory.
      ::close(fd);
      fallback_ = read_file(path);
      size_ = fallback_.size();
      data_ = fallback_.data();
      return;
    }
    map_ = p;
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (map_ != nullptr) ::munmap(map_, size_);
}

void write_atomic(const std::string& path, const void* data, size_t size) {
  if (path.empty()) throw Error("cannot write: empty output path");
  std::string tmp;
  const int fd = create_temp(path, tmp);
  try {
    write_all(fd, data, size, path);
    if (::fsync(fd) != 0) throw Error("cannot write " + path + ": " + errno_text());
    if (::close(fd) != 0) {
      ::unlink(tmp.c_str());
      throw Error("cannot write " + path + ": " + errno_text());
    }
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  try {
    publish(tmp, path);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
}

void write_text(const std::string& path, const std::string& text) { write_atomic(path, text.data(), text.size()); }

void write_atomic_with(const std::string& path, const std::function<void(std::FILE* f)>& fill) {
  if (path.empty()) throw Error("cannot write: empty output path");
  std::string tmp;
  const int fd = create_temp(path, tmp);
  std::FILE* f = ::fdopen(fd, "wb");
  if (f == nullptr) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw Error("cannot write " + path + ": " + errno_text());
  }
  try {
    fill(f);
    if (std::fflush(f) != 0 || std::ferror(f)) throw Error("cannot write " + path + ": " + errno_text());
    if (::fsync(::fileno(f)) != 0) throw Error("cannot write " + path + ": " + errno_text());
  } catch (...) {
    std::fclose(f);
    ::unlink(tmp.c_str());
    throw;
  }
  if (std::fclose(f) != 0) {
    const std::string why = errno_text();
    ::unlink(tmp.c_str());
    throw Error("cannot write " + path + ": " + why);
  }
  try {
    publish(tmp, path);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
}

bool is_temp_name(const std::string& name, long* pid) {
  const size_t tag = name.rfind(kTempTag);
  if (name.empty() || name[0] != '.' || tag == std::string::npos || tag < 2) return false;
  const size_t num = tag + sizeof kTempTag - 1;
  const size_t dot = name.find('.', num);
  if (dot == std::string::npos || dot == num || dot + 13 != name.size()) return false;
  long value = 0;
  for (size_t i = num; i < dot; ++i) {
    if (name[i] < '0' || name[i] > '9' || value > std::numeric_limits<long>::max() / 10 - 10) return false;
    value = value * 10 + (name[i] - '0');
  }
  if (pid != nullptr) *pid = value;
  return true;
}

std::string make_temp_dir(const std::string& parent, const std::string& name) {
  const std::string base = (parent.empty() ? std::string(".") : parent) + "/" + name;
  for (int attempt = 0; attempt < 16; ++attempt) {
    const std::string dir = temp_name_for(base);
    if (::mkdir(dir.c_str(), 0700) == 0) return dir;
    if (errno != EEXIST) throw Error("cannot make a temporary folder in " + parent + ": " + errno_text());
  }
  throw Error("cannot make a temporary folder in " + parent + ": no free name");
}

size_t remove_stale_temps(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return 0;
  std::vector<std::string> stale;
  while (const dirent* e = ::readdir(d)) {
    long pid = 0;
    if (is_temp_name(e->d_name, &pid) && !process_alive(pid)) stale.push_back(e->d_name);
  }
  ::closedir(d);
  size_t removed = 0;
  for (const auto& name : stale) {
    const std::string path = dir + "/" + name;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) continue;
    std::error_code ec;
    if (S_ISDIR(st.st_mode)) {
      if (st.st_uid == ::geteuid() && std::filesystem::remove_all(path, ec) > 0 && !ec) ++removed;
    } else if (::unlink(path.c_str()) == 0) {
      ++removed;
    }
  }
  return removed;
}

AppendFile::AppendFile(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error("cannot write " + path + ": " + errno_text());
  struct stat st {};
  if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd_);
    throw Error("cannot write " + path + ": not a regular file");
  }
  // A line torn by a kill must not glue itself to the next one.
  if (st.st_size > 0) {
    char last = '\n';
    if (::pread(fd_, &last, 1, st.st_size - 1) == 1 && last != '\n') {
      try {
        write_all(fd_, "\n", 1, path_);
      } catch (...) {
        ::close(fd_);
        throw;
      }
    }
  }
}

AppendFile::~AppendFile() {
  if (fd_ >= 0) ::close(fd_);
}

void AppendFile::write_line(const std::string& line) {
  // One write per line: O_APPEND makes it land whole even with other writers.
  const std::string buf = line + "\n";
  write_all(fd_, buf.data(), buf.size(), path_);
}

bool same_file(const std::string& a, const std::string& b) {
  struct stat sa {}, sb {};
  if (a.empty() || b.empty() || ::stat(a.c_str(), &sa) != 0 || ::stat(b.c_str(), &sb) != 0) return false;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

void check_outputs(const std::vector<NamedPath>& outputs, const std::vector<NamedPath>& inputs) {
  for (size_t i = 0; i < outputs.size(); ++i) {
    const NamedPath& o = outputs[i];
    if (o.path.empty()) continue;
    for (const NamedPath& in : inputs)
      if (same_file(o.path, in.path))
        throw Error(o.what + " '" + o.path + "' is the same file as " + in.what + " '" + in.path +
                    "': it would be overwritten");
    for (size_t j = 0; j < i; ++j) {
      const NamedPath& p = outputs[j];
      if (p.path.empty()) continue;
      if (p.path == o.path || same_file(p.path, o.path))
        throw Error(o.what + " '" + o.path + "' and " + p.what + " '" + p.path + "' are the same file");
    }
  }
}

void prepare_output(const std::string& path) {
  if (path.empty()) return;
  struct stat st {};
  if (path.back() == '/' || (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)))
    throw Error("cannot write " + path + ": it is a folder, not a file name");
  const std::string dir = dir_of(path);
  if (::stat(dir.c_str(), &st) != 0) throw Error("cannot write " + path + ": folder " + dir + " does not exist");
  if (!S_ISDIR(st.st_mode)) throw Error("cannot write " + path + ": " + dir + " is not a folder");
  remove_stale_temps(dir);
}

std::string join_inside(const std::string& root, const std::string& rel) {
  std::vector<std::string> parts;
  if (rel.empty() || rel[0] == '/' || !normalise_relative(rel, parts) || parts.empty())
    throw Error("'" + rel + "' does not name a file inside '" + root + "'");
  std::string out = root.empty() ? "." : root;
  if (out.size() > 1 && out.back() == '/') out.pop_back();
  std::string joined = out;
  for (const auto& p : parts) joined += (joined == "/" ? "" : "/") + p;
  // Links: every existing folder on the way must resolve inside root. The
  // last part itself may be a link: rename() replaces a link, not its target.
  const std::string real_root = real_path(out);
  if (!real_root.empty()) {
    std::string prefix = out;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      prefix += (prefix == "/" ? "" : "/") + parts[i];
      struct stat st {};
      if (::lstat(prefix.c_str(), &st) != 0) break;
      const std::string real = real_path(prefix);
      if (!inside(real_root, real.empty() ? prefix : real))
        throw Error("'" + rel + "' leads outside '" + root + "' (through '" + prefix + "')");
    }
  }
  return joined;
}

FolderLock::FolderLock(const std::string& dir) {
  const std::string path = (dir.empty() ? std::string(".") : dir) + "/.rsam.lock";
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error("cannot lock " + dir + ": " + errno_text());
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[32] = {};
    const ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK) {
      std::string pid = n > 0 ? std::string(buf, size_t(n)) : "";
      while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
      throw Error(dir + " is in use by another rsam run" + (pid.empty() ? "" : " (pid " + pid + ")"));
    }
    throw Error("cannot lock " + dir + ": " + std::strerror(err));
  }
  const std::string me = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) == 0) {
    if (::pwrite(fd_, me.data(), me.size(), 0) < 0) {
      // The pid only serves the message of a second run; the lock holds without it.
    }
  }
  remove_stale_temps(dir.empty() ? "." : dir);
}

FolderLock::~FolderLock() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace rsam::io
