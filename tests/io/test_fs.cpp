#include <dirent.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <set>

#include <cstdio>

#include "io_test_util.h"

namespace rsam::io::test {
namespace {

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

// The names in a folder, sorted (dot files included).
std::vector<std::string> listing(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* e = ::readdir(d))
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) out.push_back(e->d_name);
    ::closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string fresh_dir(const std::string& name) {
  const std::string d = temp_path(name);
  EXPECT_EQ(std::system(("rm -rf '" + d + "' && mkdir -p '" + d + "'").c_str()), 0);
  return d;
}

std::string text_of(const std::string& path) {
  const auto b = read_file(path);
  return std::string(b.begin(), b.end());
}

TEST(Fs, WriteAtomicWritesAndLeavesNoTemp) {
  const std::string dir = fresh_dir("atomic");
  const std::string p = dir + "/atomic.bin";
  const std::string payload = std::string("hello\0world", 11);
  write_atomic(p, payload.data(), payload.size());
  EXPECT_EQ(text_of(p), payload);
  write_atomic(p, "x", 1);  // an overwrite replaces the content entirely
  EXPECT_EQ(read_file(p).size(), 1u);
  EXPECT_EQ(listing(dir), std::vector<std::string>{"atomic.bin"});
}

TEST(Fs, WriteAtomicWithFailureKeepsOldFileAndRemovesTemp) {
  const std::string dir = fresh_dir("keep");
  const std::string p = dir + "/keep.bin";
  write_atomic(p, "old", 3);
  std::vector<std::string> during;
  EXPECT_THROW(write_atomic_with(p,
                                 [&](std::FILE* f) {
                                   std::fputs("partial", f);
                                   during = listing(dir);
                                   throw rsam::Error("writer failed");
                                 }),
               rsam::Error);
  ASSERT_EQ(during.size(), 2u);  // the temp file existed beside the output
  EXPECT_TRUE(is_temp_name(during[0])) << during[0];
  EXPECT_EQ(listing(dir), std::vector<std::string>{"keep.bin"});
  EXPECT_EQ(text_of(p), "old");
}

// Issue: temp names were "OUT.tmp.<pid>", opened following links, so anyone
// able to write the folder could plant a link there and redirect the write.
TEST(Fs, PlantedLinksAtPredictableTempNamesAreNotFollowed) {
  const std::string dir = fresh_dir("plant");
  const std::string victim = dir + "/victim.txt", out = dir + "/out.bin";
  write_atomic(victim, "precious", 8);
  for (const std::string& guess : {out + ".tmp." + std::to_string(::getpid()),
                                   out + ".tmp-" + std::to_string(::getpid()) + "-0", dir + "/.out.bin.rsam-tmp"})
    ASSERT_EQ(::symlink(victim.c_str(), guess.c_str()), 0);
  write_atomic(out, "data", 4);
  EXPECT_EQ(text_of(victim), "precious");
  EXPECT_EQ(text_of(out), "data");
  // The output itself a link: rename replaces the link, never its target.
  const std::string linked = dir + "/linked.bin";
  ASSERT_EQ(::symlink(victim.c_str(), linked.c_str()), 0);
  write_atomic(linked, "new", 3);
  EXPECT_EQ(text_of(victim), "precious");
  EXPECT_EQ(text_of(linked), "new");
}

TEST(Fs, TempNamesAreUnpredictableAndRecognised) {
  const std::string dir = fresh_dir("names");
  std::set<std::string> seen;
  for (int i = 0; i < 20; ++i)
    write_atomic_with(dir + "/f.bin", [&](std::FILE*) {
      for (const auto& n : listing(dir))
        if (n != "f.bin") seen.insert(n);
    });
  EXPECT_EQ(seen.size(), 20u);
  long pid = 0;
  for (const auto& n : seen) {
    EXPECT_TRUE(is_temp_name(n, &pid)) << n;
    EXPECT_EQ(pid, long(::getpid()));
  }
  EXPECT_FALSE(is_temp_name("f.bin"));
  EXPECT_FALSE(is_temp_name(".f.bin.rsam-tmp.12."));
  EXPECT_FALSE(is_temp_name("f.bin.tmp.12"));
}

// Issue: a disk-full failure aborted training with a backtrace and left the
// temp checkpoint. Now: one rsam::Error, no temp, the old file intact.
TEST(Fs, WriteFailureIsAnErrorAndLeavesNoTemp) {
  const std::string dir = fresh_dir("full");
  const std::string p = dir + "/w.bin";
  write_atomic(p, "old", 3);
  struct rlimit saved {};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  auto* old_handler = std::signal(SIGXFSZ, SIG_IGN);  // write() then fails with EFBIG
  struct rlimit small = saved;
  small.rlim_cur = 1000;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  const std::vector<uint8_t> big(5000, 7);
  std::string what1, what2;
  try {
    write_atomic(p, big.data(), big.size());
  } catch (const rsam::Error& e) {
    what1 = e.what();
  }
  try {
    write_atomic_with(p, [&](std::FILE* f) { std::fwrite(big.data(), 1, big.size(), f); });
  } catch (const rsam::Error& e) {
    what2 = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &saved);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_NE(what1.find("cannot write " + p), std::string::npos) << what1;
  EXPECT_NE(what2.find("cannot write " + p), std::string::npos) << what2;
  EXPECT_EQ(listing(dir), std::vector<std::string>{"w.bin"});
  EXPECT_EQ(text_of(p), "old");
}

TEST(Fs, StaleTempsOfDeadProcessesAreRemovedLiveOnesKept) {
  const std::string dir = fresh_dir("stale");
  const pid_t child = ::fork();
  if (child == 0) _exit(0);
  ::waitpid(child, nullptr, 0);  // a pid that is surely gone now
  const std::string dead = ".a.png.rsam-tmp." + std::to_string(child) + ".abcdefghijkl";
  const std::string live = ".b.png.rsam-tmp." + std::to_string(::getpid()) + ".abcdefghijkl";
  for (const auto& n : {dead, live, std::string("keep.png")}) write_atomic(dir + "/" + n, "x", 1);
  // Temp folders too: a dead process's goes with its contents, a live one's stays.
  const std::string mine = make_temp_dir(dir, "eval");
  write_atomic(mine + "/rank0.json", "[]", 2);
  const std::string dead_dir = dir + "/.eval.rsam-tmp." + std::to_string(child) + ".abcdefghijkl";
  ASSERT_EQ(::mkdir(dead_dir.c_str(), 0700), 0);
  write_atomic(dead_dir + "/rank1.json", "[]", 2);
  EXPECT_EQ(remove_stale_temps(dir), 2u);
  EXPECT_EQ(listing(dir), (std::vector<std::string>{live, mine.substr(dir.size() + 1), "keep.png"}));
  struct stat st {};
  ASSERT_EQ(::stat(mine.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST(Fs, SameFileComparesInodesNotNames) {
  const std::string dir = fresh_dir("same");
  write_atomic(dir + "/a.png", "a", 1);
  ASSERT_EQ(::symlink("a.png", (dir + "/link.png").c_str()), 0);
  ASSERT_EQ(::link((dir + "/a.png").c_str(), (dir + "/hard.png").c_str()), 0);
  EXPECT_TRUE(same_file(dir + "/a.png", dir + "/./a.png"));
  EXPECT_TRUE(same_file(dir + "/a.png", dir + "/link.png"));
  EXPECT_TRUE(same_file(dir + "/a.png", dir + "/hard.png"));
  EXPECT_FALSE(same_file(dir + "/a.png", dir + "/missing.png"));
  try {
    check_outputs({{"--out", dir + "/../" + dir.substr(dir.rfind('/') + 1) + "/hard.png"}}, {{"the image", dir + "/a.png"}});
    FAIL() << "expected an error";
  } catch (const rsam::Error& e) {
    EXPECT_NE(std::string(e.what()).find("--out"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("the image"), std::string::npos) << e.what();
  }
  EXPECT_THROW(check_outputs({{"--out", dir + "/new.png"}, {"--overlay", dir + "/new.png"}}, {}), rsam::Error);
  EXPECT_NO_THROW(check_outputs({{"--out", dir + "/new.png"}, {"--overlay", ""}}, {{"the image", dir + "/a.png"}}));
}

TEST(Fs, FolderLockExcludesASecondHolderAndDiesWithItsProcess) {
  const std::string dir = fresh_dir("lock");
  {
    FolderLock first(dir);
    try {
      FolderLock second(dir);
      FAIL() << "a second lock was granted";
    } catch (const rsam::Error& e) {
      EXPECT_NE(std::string(e.what()).find("in use by another rsam run (pid " + std::to_string(::getpid()) + ")"),
                std::string::npos)
          << e.what();
    }
  }
  EXPECT_NO_THROW(FolderLock again(dir));
  // A holder killed with SIGKILL leaves the file but not the lock.
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  if (child == 0) {
    FolderLock held(dir);
    (void)!::write(ready[1], "x", 1);
    ::pause();
    _exit(0);
  }
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  EXPECT_THROW(FolderLock busy(dir), rsam::Error);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  EXPECT_NO_THROW(FolderLock after(dir));
}

TEST(Fs, AppendFileAddsWholeLinesAndRefusesLinks) {
  const std::string dir = fresh_dir("append");
  write_atomic(dir + "/log.jsonl", "torn", 4);  // a line cut by a kill
  {
    AppendFile f(dir + "/log.jsonl");
    f.write_line("{\"a\":1}");
  }
  EXPECT_EQ(text_of(dir + "/log.jsonl"), "torn\n{\"a\":1}\n");
  write_atomic(dir + "/victim", "v", 1);
  ASSERT_EQ(::symlink("victim", (dir + "/metrics.jsonl").c_str()), 0);
  EXPECT_THROW(AppendFile bad(dir + "/metrics.jsonl"), rsam::Error);
  EXPECT_EQ(text_of(dir + "/victim"), "v");
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
