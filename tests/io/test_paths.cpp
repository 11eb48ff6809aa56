// join_inside, the function every output path under an output folder goes
// through: unit cases, then a property test on random trees of folders,
// dot files, unicode names and links (relative, absolute, dangling, chains).
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <random>

#include "io_test_util.h"

namespace rsam::io::test {
namespace {

namespace fs = std::filesystem;

std::string fresh(const std::string& name) {
  const std::string d = temp_path(name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

TEST(Paths, JoinInsideNormalisesAndRefusesEscapes) {
  const std::string root = fresh("join");
  EXPECT_EQ(join_inside(root, "fog/a.png"), root + "/fog/a.png");
  EXPECT_EQ(join_inside(root, "./fog//b/../a.png"), root + "/fog/a.png");
  EXPECT_EQ(join_inside(root + "/", ".hidden"), root + "/.hidden");
  for (const std::string bad : {"", ".", "fog/..", "../a.png", "fog/../../a.png", "/etc/passwd"}) {
    SCOPED_TRACE(bad);
    EXPECT_THROW(join_inside(root, bad), rsam::Error);
  }
}

TEST(Paths, JoinInsideRefusesFoldersThatLinkOutside) {
  const std::string root = fresh("joinlink"), outside = fresh("joinoutside");
  fs::create_symlink(outside, root + "/abs");
  fs::create_symlink("../" + fs::path(outside).filename().string(), root + "/rel");
  fs::create_directories(root + "/sub");
  fs::create_symlink("sub", root + "/inner");
  EXPECT_THROW(join_inside(root, "abs/a.png"), rsam::Error);
  EXPECT_THROW(join_inside(root, "rel/x/a.png"), rsam::Error);
  EXPECT_EQ(join_inside(root, "inner/a.png"), root + "/inner/a.png");  // a link that stays inside
  EXPECT_EQ(join_inside(root, "abs"), root + "/abs");  // the file itself: rename replaces the link
}

// Random trees: whatever join_inside accepts, a file written there lands
// inside the root and nothing outside changes; whatever it refuses would
// have left the root (or names no file).
TEST(Paths, PropertyAcceptedPathsStayInsideRefusedOnesWouldEscape) {
  std::mt19937 rng(20261206);
  const std::vector<std::string> names = {"a", "b.png", ".hidden", "é", "日本", "x y", "..", ".", "l1", "l2", "l3"};
  for (int tree = 0; tree < 40; ++tree) {
    const std::string base = fresh("prop" + std::to_string(tree));
    const std::string root = base + "/root", outside = base + "/outside";
    fs::create_directories(root + "/a/é");
    fs::create_directories(root + "/.hidden");
    fs::create_directories(outside + "/deep");
    write_atomic(outside + "/keep.txt", "k", 1);
    // Links of every kind, placed at random in the tree.
    const std::vector<std::string> targets = {outside, "../outside", "../../outside", "a", "é", "/", "missing",
                                              "../root/a", "l2", ".."};
    const std::vector<std::string> dirs = {root, root + "/a", root + "/a/é", root + "/.hidden"};
    for (const char* l : {"l1", "l2", "l3"}) {
      const std::string at = dirs[rng() % dirs.size()] + "/" + l;
      std::error_code ec;
      fs::create_symlink(targets[rng() % targets.size()], at, ec);
    }
    const auto before = [&] {
      std::vector<std::string> v;
      for (const auto& e : fs::recursive_directory_iterator(outside)) v.push_back(e.path().string());
      std::sort(v.begin(), v.end());
      return v;
    }();
    const std::string real_root = fs::canonical(root).string();
    for (int q = 0; q < 60; ++q) {
      std::string rel;
      const int depth = 1 + int(rng() % 4);
      for (int i = 0; i < depth; ++i) rel += (i ? "/" : "") + names[rng() % names.size()];
      if (rng() % 10 == 0) rel = "/" + rel;
      rel += "/out" + std::to_string(q) + ".bin";
      SCOPED_TRACE(rel);
      std::string joined;
      bool accepted = true;
      try {
        joined = join_inside(root, rel);
      } catch (const rsam::Error&) {
        accepted = false;
      }
      const fs::path lexical = fs::path(rel).lexically_normal();
      if (accepted) {
        std::error_code ec;
        fs::create_directories(fs::path(joined).parent_path(), ec);
        if (ec) continue;  // e.g. a dangling link inside the root in the way: nothing written
        write_atomic(joined, "o", 1);
        const std::string real = fs::canonical(joined).string();
        EXPECT_EQ(real.rfind(real_root + "/", 0), 0u) << joined << " -> " << real;
      } else {
        const bool lexical_escape = rel[0] == '/' || lexical.empty() || *lexical.begin() == "..";
        const fs::path physical = fs::weakly_canonical(fs::path(root) / lexical.parent_path());
        const bool physical_escape = physical.string().rfind(real_root, 0) != 0;
        EXPECT_TRUE(lexical_escape || physical_escape) << "refused a path that stays inside: " << physical;
      }
    }
    const auto after = [&] {
      std::vector<std::string> v;
      for (const auto& e : fs::recursive_directory_iterator(outside)) v.push_back(e.path().string());
      std::sort(v.begin(), v.end());
      return v;
    }();
    EXPECT_EQ(before, after);
    fs::remove_all(base);
  }
}

}  // namespace
}  // namespace rsam::io::test
