#include <sys/stat.h>

#include <cstdio>

#include "io_test_util.h"

namespace rsam::io::test {
namespace {

bool exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

TEST(Fs, ReadMissingFileNamesThePath) {
  const std::string p = temp_path("does_not_exist.bin");
  try {
    read_file(p);
    FAIL() << "expected rsam::Error";
  } catch (const rsam::Error& e) {
    EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

TEST(Fs, ReadDirectoryIsAnError) { EXPECT_THROW(read_file(::testing::TempDir()), rsam::Error); }

TEST(Fs, WriteAtomicWritesAndLeavesNoTemp) {
  const std::string p = temp_path("atomic.bin");
  const std::string payload = "hello\0world";
  write_atomic(p, payload.data(), payload.size());
  const auto back = read_file(p);
  EXPECT_EQ(std::string(back.begin(), back.end()), payload);
  EXPECT_FALSE(exists(p + ".tmp." + std::to_string(::getpid())));
  // Overwrite replaces the content entirely.
  write_atomic(p, "x", 1);
  EXPECT_EQ(read_file(p).size(), 1u);
  std::remove(p.c_str());
}

TEST(Fs, WriteAtomicWithFailureKeepsOldFileAndRemovesTemp) {
  const std::string p = temp_path("keep.bin");
  write_atomic(p, "old", 3);
  std::string seen_tmp;
  EXPECT_THROW(write_atomic_with(p,
                                 [&](const std::string& tmp) {
                                   seen_tmp = tmp;
                                   std::FILE* f = std::fopen(tmp.c_str(), "wb");
                                   std::fputs("partial", f);
                                   std::fclose(f);
                                   throw rsam::Error("writer failed");
                                 }),
               rsam::Error);
  EXPECT_NE(seen_tmp.find(p + ".tmp."), std::string::npos);
  EXPECT_FALSE(exists(seen_tmp));
  const auto back = read_file(p);
  EXPECT_EQ(std::string(back.begin(), back.end()), "old");
  std::remove(p.c_str());
}

TEST(Fs, WriteIntoMissingDirectoryFails) {
  EXPECT_THROW(write_atomic(temp_path("no_such_dir") + "/x.bin", "a", 1), rsam::Error);
}

TEST(Fs, MappedFileSeesContentAndEmptyFiles) {
  const std::string p = temp_path("mapped.bin");
  write_atomic(p, "abc", 3);
  {
    MappedFile m(p);
    ASSERT_EQ(m.size(), 3u);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(m.data()), 3), "abc");
  }
  write_atomic(p, "", 0);
  MappedFile empty(p);
  EXPECT_EQ(empty.size(), 0u);
  std::remove(p.c_str());
  EXPECT_THROW({ MappedFile gone(p); }, rsam::Error);
}

}  // namespace
}  // namespace rsam::io::test
