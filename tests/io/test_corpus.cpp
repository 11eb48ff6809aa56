// Replays every fuzz seed (and any crash reproducer added since) through its
// loader, so regressions found by the fuzzers stay fixed without clang.
#include <dirent.h>

#include "io/image_bytes.h"
#include "io/npy.h"
#include "io_test_util.h"

namespace rsam::io::test {
namespace {

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name != "." && name != "..") out.push_back(dir + "/" + name);
    }
    ::closedir(d);
  }
  return out;
}

void replay(const std::string& kind, const std::function<void(const uint8_t*, size_t)>& load) {
  const auto files = files_in(std::string(RSAM_FUZZ_CORPUS) + "/" + kind);
  EXPECT_FALSE(files.empty()) << "no seeds for " << kind;
  for (const auto& f : files) {
    SCOPED_TRACE(f);
    const auto bytes = read_file(f);
    try {
      load(bytes.data(), bytes.size());
    } catch (const rsam::Error&) {
      // Rejecting is fine; anything else (crash, other exception) is not.
    }
  }
}

TEST(FuzzCorpus, Pth) { replay("pth", [](const uint8_t* d, size_t n) { load_pth_bytes(d, n); }); }
TEST(FuzzCorpus, Safetensors) {
  replay("safetensors", [](const uint8_t* d, size_t n) { load_safetensors_bytes(d, n); });
}
TEST(FuzzCorpus, Npy) { replay("npy", [](const uint8_t* d, size_t n) { load_npy_bytes(d, n); }); }

// Image seeds named whole_* are complete files and cut_* are truncated ones:
// besides not crashing, the check must tell them apart.
TEST(FuzzCorpus, Image) {
  const auto files = files_in(std::string(RSAM_FUZZ_CORPUS) + "/image");
  EXPECT_FALSE(files.empty());
  int whole = 0, cut = 0;
  for (const auto& f : files) {
    SCOPED_TRACE(f);
    const auto bytes = read_file(f);
    const std::string problem = image_bytes_problem(bytes.data(), bytes.size());
    const ImageHeader header = image_header(bytes.data(), bytes.size());
    const std::string name = f.substr(f.rfind('/') + 1);
    if (name.rfind("whole_", 0) == 0) {
      EXPECT_EQ(problem, "");
      EXPECT_GT(header.width * header.height, 0u) << header.format;
      ++whole;
    } else if (name.rfind("cut_", 0) == 0) {
      EXPECT_NE(problem.find("truncated"), std::string::npos) << problem;
      ++cut;
    }
  }
  EXPECT_GT(whole, 0);
  EXPECT_GT(cut, 0);
}

}  // namespace
}  // namespace rsam::io::test
