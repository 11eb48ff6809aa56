// Data-safety tests of the CLI (degrade): the user's command against a
// temporary tree.
#include <unistd.h>

#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "io/fs.h"

namespace fs = std::filesystem;

namespace rsam::cli_test {
namespace {

std::string last_line(const std::string& s) {
  const size_t end = s.find_last_not_of('\n');
  if (end == std::string::npos) return {};
  const size_t start = s.rfind('\n', end);
  return s.substr(start == std::string::npos ? 0 : start + 1, end - (start == std::string::npos ? 0 : start + 1) + 1);
}

std::vector<nlohmann::json> manifest(const std::string& dir) {
  std::vector<nlohmann::json> lines;
  std::ifstream in(dir + "/manifest.jsonl");
  for (std::string l; std::getline(in, l);) lines.push_back(nlohmann::json::parse(l));
  return lines;
}

std::set<int> ids_of(const cv::Mat& m) {
  std::set<int> ids;
  for (int y = 0; y < m.rows; ++y)
    for (int x = 0; x < m.cols; ++x) ids.insert(m.at<uint16_t>(y, x));
  return ids;
}

TEST(SafetyDegrade, SymlinkedInputDoesNotOverwriteItsTarget) {
  // The reproduction, verbatim.
  const std::string d = fresh_dir("dg_symlink");
  fs::create_directories(d + "/src");
  fs::create_directories(d + "/in");
  write_scene(d + "/src/a.png");
  fs::create_symlink("../src/a.png", d + "/in/a.png");
  const std::string source = slurp(d + "/src/a.png");
  const auto r = run("degrade --input " + d + "/in --output " + d + " --corruption fog --seed 7");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(slurp(d + "/src/a.png") == source) << "file bytes differ";
  EXPECT_TRUE(fs::exists(d + "/fog/a.png"));
  EXPECT_EQ(std::distance(fs::directory_iterator(d + "/fog"), fs::directory_iterator()), 1);
  const auto lines = manifest(d);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["source"], "a.png");
  EXPECT_EQ(lines[0]["output"], "fog/a.png");

  // --masks looks the mask up by the link's own path (not MASKS/../src/a.png).
  fs::create_directories(d + "/masks");
  cv::Mat mask(56, 64, CV_8U, cv::Scalar(0));
  cv::rectangle(mask, cv::Rect(5, 5, 20, 20), cv::Scalar(1), cv::FILLED);
  ASSERT_TRUE(cv::imwrite(d + "/masks/a.png", mask));
  const auto m = run("degrade --input " + d + "/in --output " + d + "/o2 --masks " + d + "/masks --corruption fog");
  ASSERT_EQ(m.code, 0) << m.err;
  const cv::Mat written = cv::imread(d + "/o2/masks/fog/a.png", cv::IMREAD_UNCHANGED);
  ASSERT_FALSE(written.empty());
  EXPECT_EQ(cv::norm(written, mask, cv::NORM_INF), 0);
}

TEST(SafetyDegrade, PreviewRefusesToWriteOverItsImage) {
  const std::string d = fresh_dir("dg_preview");
  write_scene(d + "/pv.png", 96, 64);
  const std::string before = slurp(d + "/pv.png");
  const auto r = run("degrade --preview " + d + "/pv.png --out " + d + "/pv.png --tile 64");
  expect_one_line_error(r, "is the same file as the image");
  EXPECT_TRUE(slurp(d + "/pv.png") == before) << "file bytes differ";
  // Through another name of the same file too.
  const auto r2 = run("degrade --preview " + d + "/pv.png --out " + d + "/../rsam_cli_dg_preview/pv.png --tile 64");
  expect_one_line_error(r2, "is the same file as the image");
  EXPECT_TRUE(slurp(d + "/pv.png") == before) << "file bytes differ";
}

TEST(SafetyDegrade, ASecondRunIntoAFolderInUseIsRefused) {
  const std::string d = fresh_dir("dg_lock");
  fs::create_directories(d + "/in");
  fs::create_directories(d + "/out");
  write_scene(d + "/in/a.png");
  const io::FolderLock other(d + "/out");  // a run in progress (this process)
  const auto r = run("degrade --input " + d + "/in --output " + d + "/out --corruption contrast");
  expect_one_line_error(r, "in use by another rsam run (pid " + std::to_string(::getpid()) + ")");
  EXPECT_FALSE(fs::exists(d + "/out/contrast"));
  EXPECT_FALSE(fs::exists(d + "/out/manifest.jsonl"));
}

TEST(SafetyDegrade, ReRunsWithAnotherSeedAndBackRedoTheOutput) {
  const std::string d = fresh_dir("dg_seeds");
  fs::create_directories(d + "/in");
  write_scene(d + "/in/a.png");
  const std::string cmd = "degrade --input " + d + "/in --output " + d + "/out --corruption gauss_noise --seed ";
  ASSERT_EQ(run(cmd + "1").code, 0);
  const std::string seed1 = slurp(d + "/out/gauss_noise/a.png");
  ASSERT_EQ(run(cmd + "2").code, 0);
  ASSERT_TRUE(slurp(d + "/out/gauss_noise/a.png") != seed1) << "file bytes are equal";
  const auto r = run(cmd + "1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("1 outputs written, 0 already done"), std::string::npos) << r.err;
  EXPECT_TRUE(slurp(d + "/out/gauss_noise/a.png") == seed1) << "file bytes differ";
  EXPECT_EQ(manifest(d + "/out").back()["run_seed"], 1u);
}

TEST(SafetyDegrade, InputsWithTheSameStemAreRefused) {
  const std::string d = fresh_dir("dg_stem");
  fs::create_directories(d + "/in");
  write_scene(d + "/in/a.png", 64, 56, 1);
  write_scene(d + "/in/a.jpg", 64, 56, 2);
  const auto r = run("degrade --input " + d + "/in --output " + d + "/out --corruption contrast --jobs 2");
  expect_one_line_error(r, "'a.jpg' and 'a.png'");
  EXPECT_FALSE(fs::exists(d + "/out"));
}

TEST(SafetyDegrade, OutputIsNeverTheInputAndEarlierOutputsAreNotDegradedAgain) {
  const std::string d = fresh_dir("dg_self");
  fs::create_directories(d + "/x");
  write_scene(d + "/x/a.png");
  const auto r = run("degrade --input " + d + "/x --output " + d + "/x --corruption gauss_noise");
  expect_one_line_error(r, "is the input folder itself");
  EXPECT_FALSE(fs::exists(d + "/x/gauss_noise"));

  ASSERT_EQ(run("degrade --input " + d + "/x --output " + d + "/x/deg1 --corruption gauss_noise").code, 0);
  const auto second = run("degrade --input " + d + "/x --output " + d + "/x/deg2 --corruption gauss_noise");
  ASSERT_EQ(second.code, 0) << second.err;
  EXPECT_TRUE(fs::exists(d + "/x/deg2/gauss_noise/a.png"));
  EXPECT_FALSE(fs::exists(d + "/x/deg2/gauss_noise/deg1")) << second.err;
  EXPECT_NE(second.err.find("skipping 'deg1'"), std::string::npos) << second.err;
}

TEST(SafetyDegrade, SixteenBitMasksKeepTheirIds) {
  const std::string d = fresh_dir("dg_mask16");
  fs::create_directories(d + "/in");
  fs::create_directories(d + "/masks");
  write_scene(d + "/in/a.png");
  cv::Mat ids(56, 64, CV_16U, cv::Scalar(0));
  cv::rectangle(ids, cv::Rect(4, 4, 20, 20), cv::Scalar(1), cv::FILLED);
  cv::rectangle(ids, cv::Rect(30, 4, 20, 20), cv::Scalar(2), cv::FILLED);
  cv::rectangle(ids, cv::Rect(10, 30, 40, 20), cv::Scalar(300), cv::FILLED);
  ASSERT_TRUE(cv::imwrite(d + "/masks/a.png", ids));
  const auto copy = run("degrade --input " + d + "/in --output " + d + "/copy --masks " + d + "/masks --corruption fog");
  ASSERT_EQ(copy.code, 0) << copy.err;
  const cv::Mat copied = cv::imread(d + "/copy/masks/fog/a.png", cv::IMREAD_UNCHANGED);
  ASSERT_EQ(copied.type(), CV_16UC1);
  EXPECT_EQ(cv::norm(copied, ids, cv::NORM_INF), 0);

  const auto warp = run("degrade --input " + d + "/in --output " + d + "/warp --masks " + d +
                       "/masks --corruption elastic_transform --warp-masks");
  ASSERT_EQ(warp.code, 0) << warp.err;
  const cv::Mat warped = cv::imread(d + "/warp/masks/elastic_transform/a.png", cv::IMREAD_UNCHANGED);
  ASSERT_EQ(warped.type(), CV_16UC1);
  EXPECT_EQ(ids_of(warped), (std::set<int>{0, 1, 2, 300}));
  EXPECT_GT(cv::norm(warped, ids, cv::NORM_L1), 0);  // it did move
}

TEST(SafetyDegrade, NonUtf8FileNamesAreRefusedBeforeAnyWork) {
  const std::string d = fresh_dir("dg_utf8");
  fs::create_directories(d + "/in");
  write_scene(d + "/in/a.png");
  write_scene(d + "/in/b\xff.png");
  const auto r = run("degrade --input " + d + "/in --output " + d + "/out --corruption contrast");
  expect_one_line_error(r, "'b\\xff.png'");
  EXPECT_FALSE(fs::exists(d + "/out"));
}

TEST(SafetyDegrade, JobsRangeIsAnIntegerRange) {
  const std::string d = fresh_dir("dg_jobs");
  const auto r = run("degrade --input " + d + " --output " + d + "/out --jobs 0");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_EQ(r.err.find("1.79"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("256"), std::string::npos) << r.err;
}

TEST(SafetyDegrade, TheFinalLineSaysWhatWasWritten) {
  const std::string d = fresh_dir("dg_final");
  fs::create_directories(d + "/in");
  std::ofstream(d + "/in/broken.png") << "not a png";
  const auto r = run("degrade --input " + d + "/in --output " + d + "/out --corruption contrast");
  EXPECT_EQ(r.code, 1) << r.err;
  const std::string last = last_line(r.err);
  EXPECT_EQ(last.find("the others were written"), std::string::npos) << last;
  EXPECT_NE(last.find("1 of 1 images failed (listed above); nothing was written"), std::string::npos) << last;

  write_scene(d + "/in/good.png");
  const auto r2 = run("degrade --input " + d + "/in --output " + d + "/out --corruption contrast");
  EXPECT_NE(last_line(r2.err).find("1 of 2 images failed (listed above); 1 output was written"), std::string::npos)
      << r2.err;
  const auto r3 = run("degrade --input " + d + "/in --output " + d + "/out --corruption contrast");
  EXPECT_NE(last_line(r3.err).find("nothing new was written (1 output was done earlier)"), std::string::npos)
      << r3.err;
}

}  // namespace
}  // namespace rsam::cli_test
