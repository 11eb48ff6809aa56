// Data-safety tests of `rsam segment`, `convert`, `bench` and the flags every
// command shares: outputs never land on inputs, every argument is checked
// before the model is loaded, hostile pictures are refused by their header.
#include <sys/stat.h>

#include "cli_util.h"
#include "io/zip.h"  // crc32, to forge a PNG header

namespace rsam::cli_test {
namespace {

const std::string kCkpt = kData + "tiny_a.pth";
const std::string kImage = kData + "images/down150.png";

std::string copy_image(const std::string& dir) {
  const std::string p = dir + "/a.png";
  std::system(("cp '" + kImage + "' '" + p + "'").c_str());
  return p;
}

TEST(SafetySegment, AnOutputOnTheInputIsRefusedAndTheInputKept) {
  const std::string dir = fresh_dir("seg_same");
  const std::string img = copy_image(dir);
  const std::string before = slurp(img);
  for (const std::string flag : {"--out", "--overlay", "--logits-out", "--embedding-out"}) {
    SCOPED_TRACE(flag);
    auto r = run("segment --checkpoint " + kCkpt + " --image " + img + " --point 60,40 --threads 1 " + flag + " " +
                 dir + "/./a.png");
    expect_one_line_error(r, "same file as --image");
    EXPECT_EQ(slurp(img), before);
  }
  // Through a link too, and onto the checkpoint.
  ASSERT_EQ(::symlink(img.c_str(), (dir + "/link.png").c_str()), 0);
  expect_one_line_error(run("segment --checkpoint " + kCkpt + " --image " + img + " --point 60,40 --out " + dir +
                            "/link.png"),
                        "same file");
  expect_one_line_error(run("segment --checkpoint " + kCkpt + " --image " + img + " --point 60,40 --logits-out " +
                            kCkpt),
                        "same file as the checkpoint");
  expect_one_line_error(run("segment --checkpoint " + kCkpt + " --image " + img + " --point 60,40 --out " + dir +
                            "/m.png --overlay " + dir + "/m.png"),
                        "are the same file");
  EXPECT_EQ(slurp(img), before);
}

// A bad argument must not cost the user the load and the encode: with a
// checkpoint that does not exist, the argument's own error must come first.
TEST(SafetySegment, ArgumentsAreCheckedBeforeTheModelIsLoaded) {
  const std::string dir = fresh_dir("seg_early");
  const std::string img = copy_image(dir);
  const std::string base = "segment --checkpoint " + dir + "/missing.pth --image " + img;
  expect_one_line_error(run(base + " --point 9999,10"), "outside the 150x97 image");
  expect_one_line_error(run(base + " --point 10,10 --out " + dir + "/nowhere/m.png"), "does not exist");
  expect_one_line_error(run(base + " --point 10,10 --out " + dir), "is a folder");
  expect_one_line_error(run(base + " --point 10,10 --out " + dir + "/m.jpg"), "losslessly");
  expect_one_line_error(run(base + " --point 10,10 --overlay " + dir + "/o.xyz"), "no image encoder");
  std::string many;
  for (int i = 0; i < 10000; ++i) many += " --point 5,5";
  expect_one_line_error(run(base + many), "at most 256");
}

TEST(SafetySegment, MaskNamesWithoutExtensionOrWithADotFolderArePng) {
  const std::string dir = fresh_dir("seg_names");
  const std::string img = copy_image(dir);
  ASSERT_EQ(::mkdir((dir + "/d.v2").c_str(), 0755), 0);
  auto r = run("segment --checkpoint " + kCkpt + " --image " + img + " --point 60,40 --threads 1 --out " + dir +
               "/d.v2/mask --overlay " + dir + "/d.v2/over");
  ASSERT_EQ(r.code, 0) << r.err;
  for (const auto& p : {dir + "/d.v2/mask", dir + "/d.v2/over"}) {
    const std::string b = slurp(p);
    ASSERT_GT(b.size(), 8u) << p;
    EXPECT_EQ(b.substr(1, 3), "PNG") << p;
  }
}

// Issue: an 875 KB PNG claiming 30000x30000 took more than 15 GB.
TEST(SafetySegment, ADecompressionBombIsRefusedFromItsHeader) {
  const std::string dir = fresh_dir("seg_bomb");
  cv::Mat small(4, 4, CV_8UC3, cv::Scalar::all(9));
  std::vector<uint8_t> b;
  cv::imencode(".png", small, b);
  for (int i = 0; i < 4; ++i) b[16 + i] = b[20 + i] = uint8_t(30000u >> (24 - 8 * i));
  const uint32_t crc = io::detail::crc32(&b[12], 17);
  for (int i = 0; i < 4; ++i) b[29 + i] = uint8_t(crc >> (24 - 8 * i));
  std::ofstream(dir + "/bomb.png", std::ios::binary).write(reinterpret_cast<const char*>(b.data()), b.size());
  expect_one_line_error(run("segment --checkpoint " + kCkpt + " --image " + dir + "/bomb.png --point 5,5"),
                        "30000x30000");
  // The limit is configurable.
  const std::string img = copy_image(dir);
  expect_one_line_error(run("segment --checkpoint " + kCkpt + " --image " + img + " --point 5,5", "RSAM_MAX_PIXELS=100 "),
                        "above the limit");
}

TEST(SafetySegment, AThinImageSaysSo) {
  const std::string dir = fresh_dir("seg_thin");
  cv::imwrite(dir + "/thin.png", cv::Mat(1, 100000, CV_8UC3, cv::Scalar::all(50)));
  expect_one_line_error(run("segment --checkpoint " + kCkpt + " --image " + dir + "/thin.png --point 5,0 --threads 1"),
                        "too thin");
}

TEST(SafetySegment, ThreadsBeyondTheCoresAreCappedWithANote) {
  const std::string dir = fresh_dir("seg_threads");
  auto r = run("segment --checkpoint " + kCkpt + " --image " + kImage + " --point 60,40 --threads 1000 --out " + dir +
               "/m.png");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("1000 threads asked for"), std::string::npos) << r.err;
  expect_one_line_error(run("segment --checkpoint " + kCkpt + " --image " + kImage + " --point 60,40 --threads -3"),
                        "thread count");
}

TEST(SafetySegment, StaleTempFilesOfKilledRunsAreCleanedUp) {
  const std::string dir = fresh_dir("seg_stale");
  const pid_t child = fork();
  if (child == 0) _exit(0);
  waitpid(child, nullptr, 0);
  const std::string stale = dir + "/.m.png.rsam-tmp." + std::to_string(child) + ".abcdefghijkl";
  std::ofstream(stale) << "left by a killed run";
  auto r = run("segment --checkpoint " + kCkpt + " --image " + kImage + " --point 60,40 --threads 1 --out " + dir +
               "/m.png");
  ASSERT_EQ(r.code, 0) << r.err;
  struct stat st {};
  EXPECT_NE(::stat(stale.c_str(), &st), 0);
}

TEST(SafetySegment, ConvertRefusesToWriteOntoItsInput) {
  const std::string dir = fresh_dir("convert_same");
  ASSERT_EQ(run("convert " + kCkpt + " " + dir + "/m.safetensors").code, 0);
  const std::string before = slurp(dir + "/m.safetensors");
  expect_one_line_error(run("convert " + dir + "/m.safetensors " + dir + "/./m.safetensors"), "same file");
  EXPECT_EQ(slurp(dir + "/m.safetensors"), before);
}

TEST(SafetySegment, BenchNamesTheFlagItRefuses) {
  expect_one_line_error(run("bench --model vit_b --decode-repeat 0"), "--decode-repeat");
}

// Issue: -1, 2^64 and 1e23 collapsed silently onto other seeds.
TEST(SafetySegment, SeedsOutsideTheUnsigned64BitRangeAreUsageErrors) {
  const std::string dir = fresh_dir("seeds");
  for (const std::string seed : {"-1", "18446744073709551616", "1e23", "0x10", ""}) {
    SCOPED_TRACE(seed);
    auto r = run("synth --out " + dir + "/s --count 1 --size 64 --seed '" + seed + "'");
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_NE(r.err.find("seed"), std::string::npos) << r.err;
  }
  auto r = run("synth --out " + dir + "/ok --count 1 --size 64 --photos none --seed 18446744073709551615");
  EXPECT_EQ(r.code, 0) << r.err;
}

}  // namespace
}  // namespace rsam::cli_test
