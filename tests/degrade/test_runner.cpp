// The folder runner behind `rsam degrade`: tree mirroring, masks, manifest,
// resume, failures, jobs, preview and listing.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "degrade/corruption.h"
#include "degrade/runner.h"
#include "error.h"
#include "io/fs.h"
#include "scene.h"

namespace fs = std::filesystem;

namespace rsam::degrade {
namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("rsam_degrade_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
                                        "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

void write_rgb(const fs::path& p, const cv::Mat& rgb) {
  fs::create_directories(p.parent_path());
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  ASSERT_TRUE(cv::imwrite(p.string(), bgr));
}

cv::Mat read_rgb(const fs::path& p) {
  cv::Mat bgr = cv::imread(p.string(), cv::IMREAD_COLOR), rgb;
  if (bgr.empty()) return bgr;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return rgb;
}

std::vector<nlohmann::json> manifest(const fs::path& out) {
  std::vector<nlohmann::json> lines;
  std::ifstream in(out / "manifest.jsonl");
  std::string line;
  while (std::getline(in, line))
    if (auto j = nlohmann::json::parse(line, nullptr, false); !j.is_discarded()) lines.push_back(j);
  return lines;
}

// in/a.png, in/sub/b.jpg, in/sub/deep/c.png, in/broken.jpg (garbage),
// in/notes.txt; masks/ mirrors the images.
void make_tree(const fs::path& root) {
  write_rgb(root / "in/a.png", testing::make_scene(48, 40, 1).rgb);
  write_rgb(root / "in/sub/b.jpg", testing::make_scene(40, 32, 2).rgb);
  write_rgb(root / "in/sub/deep/c.png", testing::make_scene(36, 36, 3).rgb);
  std::ofstream(root / "in/broken.jpg") << "not a jpeg at all";
  std::ofstream(root / "in/notes.txt") << "ignored";
  for (auto [rel, size, seed] : {std::tuple{"a", cv::Size(48, 40), 1}, {"sub/b", cv::Size(40, 32), 2},
                                  {"sub/deep/c", cv::Size(36, 36), 3}}) {
    const fs::path p = root / "masks" / (std::string(rel) + ".png");
    fs::create_directories(p.parent_path());
    cv::imwrite(p.string(), testing::make_scene(size.width, size.height, static_cast<uint64_t>(seed)).mask);
  }
}

TEST(Runner, MirrorsTheTreeWritesAManifestAndReportsFailures) {
  TempDir t;
  make_tree(t.path);
  // A JPEG cut in half: libjpeg would decode it grey-padded and succeed.
  std::vector<uchar> jpg;
  ASSERT_TRUE(cv::imencode(".jpg", testing::make_scene(48, 40, 4).rgb, jpg));
  std::ofstream(t.path / "in/cut.jpg", std::ios::binary)
      .write(reinterpret_cast<const char*>(jpg.data()), std::streamsize(jpg.size() / 2));
  RunOptions o;
  o.input = (t.path / "in").string();
  o.output = (t.path / "out").string();
  o.corruption = "brightness";
  o.seed = 9;
  o.masks = (t.path / "masks").string();
  std::ostringstream log;
  o.log = &log;
  RunSummary s = run(o);
  EXPECT_EQ(s.images, 5u);
  EXPECT_EQ(s.written, 3u);
  EXPECT_EQ(s.failed, 2u);
  ASSERT_EQ(s.failures.size(), 2u);
  std::sort(s.failures.begin(), s.failures.end());
  EXPECT_NE(s.failures[0].find("broken.jpg"), std::string::npos) << s.failures[0];
  EXPECT_NE(s.failures[1].find("cut.jpg"), std::string::npos) << s.failures[1];
  EXPECT_NE(s.failures[1].find("truncated JPEG"), std::string::npos) << s.failures[1];
  EXPECT_NE(log.str().find("2 failed"), std::string::npos);
  for (const char* rel : {"brightness/a.png", "brightness/sub/b.png", "brightness/sub/deep/c.png",
                          "masks/brightness/a.png", "masks/brightness/sub/deep/c.png"})
    EXPECT_TRUE(fs::exists(t.path / "out" / rel)) << rel;
  // No temporary files are left behind.
  for (const auto& e : fs::recursive_directory_iterator(t.path / "out"))
    EXPECT_FALSE(io::is_temp_name(e.path().filename().string())) << e.path();

  // Every manifest line regenerates its output exactly.
  const auto lines = manifest(t.path / "out");
  ASSERT_EQ(lines.size(), 3u);
  for (const auto& j : lines) {
    EXPECT_EQ(j["run_seed"], 9u);
    EXPECT_EQ(j["seed"].get<uint64_t>(), item_seed(9, j["source"], "brightness", 3));
    auto c = create(j["corruption"], j["severity"], j["params"]);
    const cv::Mat src = read_rgb(t.path / "in" / j["source"].get<std::string>());
    const cv::Mat again = c->run(src, j["seed"]).image;
    const cv::Mat written = read_rgb(t.path / "out" / j["output"].get<std::string>());
    EXPECT_EQ(cv::norm(again, written, cv::NORM_INF), 0) << j["output"];
    EXPECT_TRUE(j["drawn"].contains("factor"));
    EXPECT_EQ(j["mask_warped"], false);
  }
}

TEST(Runner, ResumesWithoutRedoingFinishedOutputs) {
  TempDir t;
  make_tree(t.path);
  fs::remove(t.path / "in/broken.jpg");
  RunOptions o;
  o.input = (t.path / "in").string();
  o.output = (t.path / "out").string();
  o.corruption = "robustseg";
  o.severity = 2;
  EXPECT_EQ(run(o).written, 45u);
  const auto stamp = fs::last_write_time(t.path / "out/fog/a.png");

  // A second run has nothing to do.
  RunSummary again = run(o);
  EXPECT_EQ(again.written, 0u);
  EXPECT_EQ(again.skipped, 45u);

  // Simulate a kill: one output missing, one never recorded, a torn last line.
  fs::remove(t.path / "out/snow/sub/b.png");
  std::vector<std::string> kept;
  {
    std::ifstream in(t.path / "out/manifest.jsonl");
    for (std::string l; std::getline(in, l);)
      if (l.find("\"output\":\"rain/a.png\"") == std::string::npos) kept.push_back(l);
  }
  {
    std::ofstream out(t.path / "out/manifest.jsonl", std::ios::trunc);
    for (const auto& l : kept) out << l << '\n';
    out << "{\"source\":\"a.png\",\"outp";  // torn
  }
  const RunSummary resumed = run(o);
  EXPECT_EQ(resumed.written, 2u);
  EXPECT_EQ(resumed.skipped, 43u);
  EXPECT_EQ(fs::last_write_time(t.path / "out/fog/a.png"), stamp);
  // The torn line is ignored; snow/sub/b.png now has two entries (last wins).
  std::set<std::string> outputs;
  for (const auto& j : manifest(t.path / "out")) outputs.insert(j["output"].get<std::string>());
  EXPECT_EQ(outputs.size(), 45u);

  // A different seed is a different job: everything is redone.
  o.seed = 1;
  EXPECT_EQ(run(o).written, 45u);
}

TEST(Runner, SameBytesForAnyNumberOfJobs) {
  TempDir t;
  make_tree(t.path);
  RunOptions o;
  o.input = (t.path / "in").string();
  o.corruption = "all";
  o.output = (t.path / "one").string();
  run(o);
  o.output = (t.path / "two").string();
  o.jobs = 2;
  run(o);
  int compared = 0;
  for (const auto& e : fs::recursive_directory_iterator(t.path / "one")) {
    if (e.path().extension() != ".png") continue;
    const fs::path rel = fs::relative(e.path(), t.path / "one");
    const cv::Mat a = read_rgb(e.path()), b = read_rgb(t.path / "two" / rel);
    ASSERT_FALSE(b.empty()) << rel;
    EXPECT_EQ(cv::norm(a, b, cv::NORM_INF), 0) << rel;
    ++compared;
  }
  EXPECT_EQ(compared, 60);
}

TEST(Runner, WarpsMasksOnlyWhenAskedAndOnlyForGeometricCorruptions) {
  TempDir t;
  make_tree(t.path);
  RunOptions o;
  o.input = (t.path / "in/a.png").string();  // a single file
  o.masks = (t.path / "masks").string();
  o.corruption = "elastic_transform";
  o.output = (t.path / "copy").string();
  run(o);
  o.output = (t.path / "warp").string();
  o.warp_masks = true;
  run(o);
  const cv::Mat orig = cv::imread((t.path / "masks/a.png").string(), cv::IMREAD_GRAYSCALE);
  const cv::Mat copied = cv::imread((t.path / "copy/masks/elastic_transform/a.png").string(), cv::IMREAD_GRAYSCALE);
  const cv::Mat warped = cv::imread((t.path / "warp/masks/elastic_transform/a.png").string(), cv::IMREAD_GRAYSCALE);
  EXPECT_EQ(cv::norm(orig, copied, cv::NORM_INF), 0);
  EXPECT_GT(cv::norm(orig, warped, cv::NORM_L1), 0);
  EXPECT_EQ(manifest(t.path / "warp")[0]["mask_warped"], true);
  // The images are identical either way.
  EXPECT_EQ(cv::norm(read_rgb(t.path / "copy/elastic_transform/a.png"), read_rgb(t.path / "warp/elastic_transform/a.png"),
                     cv::NORM_INF),
            0);
}

TEST(Runner, SkipsItsOwnOutputInsideTheInputAndRejectsBadOptions) {
  TempDir t;
  make_tree(t.path);
  fs::remove(t.path / "in/broken.jpg");
  RunOptions o;
  o.input = (t.path / "in").string();
  o.output = (t.path / "in/degraded").string();
  o.corruption = "contrast";
  EXPECT_EQ(run(o).written, 3u);
  EXPECT_EQ(run(o).images, 3u);  // outputs are not picked up as inputs

  RunOptions bad = o;
  bad.input = (t.path / "nowhere").string();
  EXPECT_THROW(run(bad), rsam::Error);
  bad = o;
  bad.corruption = "blizzard";
  EXPECT_THROW(run(bad), rsam::Error);
  bad = o;
  bad.severity = 7;
  EXPECT_THROW(run(bad), rsam::Error);
  bad = o;
  bad.masks = (t.path / "no_masks").string();
  EXPECT_THROW(run(bad), rsam::Error);
  bad = o;
  bad.input = (t.path / "masks/sub").string();
  fs::remove_all(t.path / "masks/sub/deep");
  fs::remove(t.path / "masks/sub/b.png");
  EXPECT_THROW(run(bad), rsam::Error);  // no images
}

TEST(Preview, WritesALabelledSheetWithOneTilePerCorruption) {
  TempDir t;
  write_rgb(t.path / "img.png", testing::make_scene(200, 150, 5).rgb);
  PreviewOptions p;
  p.image = (t.path / "img.png").string();
  p.output = (t.path / "sheet.png").string();
  p.tile = 64;
  preview(p);
  const cv::Mat sheet = cv::imread(p.output);
  ASSERT_FALSE(sheet.empty());
  // 21 tiles (original + 20) of 64x48 with 4 px gaps, 7 per row.
  EXPECT_EQ(sheet.cols, 7 * (64 + 4) + 4);
  EXPECT_EQ(sheet.rows, 3 * (48 + 4) + 4);
  p.image = (t.path / "missing.png").string();
  EXPECT_THROW(preview(p), rsam::Error);
}

TEST(Listing, NamesEveryCorruptionWithItsLevels) {
  const std::string text = list_text();
  for (const auto& s : registry()) EXPECT_NE(text.find(s.name), std::string::npos) << s.name;
  const nlohmann::json j = list_json();
  ASSERT_EQ(j.size(), 20u);
  EXPECT_EQ(j[0]["name"], "snow");
  EXPECT_EQ(j[0]["levels"].size(), 5u);
  const std::string md = levels_markdown();
  EXPECT_NE(md.find("| `gauss_noise` | var | 40–50 | 120–130 | **250–260** |"), std::string::npos) << md;
}

// ------------------------------------------------------------ data safety (issue 37)

std::string bytes_of(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string error_of(const RunOptions& o) {
  try {
    run(o);
  } catch (const rsam::Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(RunnerSafety, SymlinkedInputIsNamedByItsOwnPathNeverItsTarget) {
  // The reproduction: in/a.png -> ../src/a.png, --output the parent.
  TempDir t;
  const fs::path d = t.path / "d";
  write_rgb(d / "src/a.png", testing::make_scene(48, 40, 1).rgb);
  fs::create_directories(d / "in");
  fs::create_symlink("../src/a.png", d / "in/a.png");
  fs::create_directories(d / "masks");
  ASSERT_TRUE(cv::imwrite((d / "masks/a.png").string(), testing::make_scene(48, 40, 1).mask));
  const std::string source = bytes_of(d / "src/a.png");
  RunOptions o;
  o.input = (d / "in").string();
  o.output = d.string();
  o.corruption = "fog";
  o.seed = 7;
  o.masks = (d / "masks").string();
  const RunSummary s = run(o);
  EXPECT_EQ(s.written, 1u);
  EXPECT_EQ(s.failed, 0u) << (s.failures.empty() ? "" : s.failures[0]);
  EXPECT_TRUE(bytes_of(d / "src/a.png") == source) << "file bytes differ";  // the user's image is untouched
  EXPECT_TRUE(fs::exists(d / "fog/a.png"));
  // The mask is looked up at MASKS/a.png (the old code read MASKS/../src/a.png, the image).
  const cv::Mat mask = cv::imread((d / "masks/fog/a.png").string(), cv::IMREAD_UNCHANGED);
  ASSERT_FALSE(mask.empty());
  EXPECT_EQ(cv::norm(mask, testing::make_scene(48, 40, 1).mask, cv::NORM_INF), 0);
  const auto lines = manifest(d);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["source"], "a.png");
  EXPECT_EQ(lines[0]["output"], "fog/a.png");
  EXPECT_EQ(lines[0]["seed"].get<uint64_t>(), item_seed(7, "a.png", "fog", 3));
}

TEST(RunnerSafety, AnOutputFolderLinkedOutsideTheOutputIsNotFollowed) {
  TempDir t;
  write_rgb(t.path / "in/a.png", testing::make_scene(48, 40, 1).rgb);
  fs::create_directories(t.path / "elsewhere");
  fs::create_directories(t.path / "out");
  fs::create_directory_symlink("../elsewhere", t.path / "out/brightness");
  RunOptions o;
  o.input = (t.path / "in").string();
  o.output = (t.path / "out").string();
  o.corruption = "brightness";
  const RunSummary s = run(o);
  EXPECT_EQ(s.written, 0u);
  ASSERT_EQ(s.failed, 1u);
  EXPECT_NE(s.failures[0].find("leads outside"), std::string::npos) << s.failures[0];
  EXPECT_TRUE(fs::is_empty(t.path / "elsewhere"));
}

TEST(RunnerSafety, PreviewRefusesToWriteOverItsImage) {
  TempDir t;
  write_rgb(t.path / "pv.png", testing::make_scene(64, 48, 5).rgb);
  fs::create_symlink("pv.png", t.path / "link.png");
  const std::string before = bytes_of(t.path / "pv.png");
  PreviewOptions p;
  p.image = (t.path / "pv.png").string();
  p.tile = 64;
  for (const char* out : {"pv.png", "link.png"}) {
    p.output = (t.path / out).string();
    EXPECT_THROW(preview(p), rsam::Error) << out;
  }
  EXPECT_TRUE(bytes_of(t.path / "pv.png") == before) << "file bytes differ";
  EXPECT_TRUE(fs::is_symlink(t.path / "link.png"));
}

TEST(RunnerSafety, ASecondRunIntoAnOutputFolderInUseIsRefused) {
  TempDir t;
  make_tree(t.path);
  fs::create_directories(t.path / "out");
  RunOptions o;
  o.input = (t.path / "in").string();
  o.output = (t.path / "out").string();
  o.corruption = "brightness";
  {
    const io::FolderLock other(o.output);  // another run holding the folder
    EXPECT_NE(error_of(o).find("in use by another rsam run"), std::string::npos) << error_of(o);
    EXPECT_FALSE(fs::exists(t.path / "out/brightness"));
  }
  EXPECT_EQ(run(o).written, 3u);  // free again once the holder is gone
}

TEST(RunnerSafety, OnlyTheLatestManifestLineOfAnOutputCounts) {
  TempDir t;
  write_rgb(t.path / "in/a.png", testing::make_scene(48, 40, 1).rgb);
  RunOptions o;
  o.input = (t.path / "in").string();
  o.output = (t.path / "out").string();
  o.corruption = "gauss_noise";
  o.seed = 1;
  EXPECT_EQ(run(o).written, 1u);
  const std::string seed1 = bytes_of(t.path / "out/gauss_noise/a.png");
  o.seed = 2;
  EXPECT_EQ(run(o).written, 1u);
  ASSERT_TRUE(bytes_of(t.path / "out/gauss_noise/a.png") != seed1) << "file bytes are equal";
  o.seed = 1;  // seed 2's bytes are on disk: not done
  const RunSummary again = run(o);
  EXPECT_EQ(again.written, 1u);
  EXPECT_EQ(again.skipped, 0u);
  EXPECT_TRUE(bytes_of(t.path / "out/gauss_noise/a.png") == seed1) << "file bytes differ";
  EXPECT_EQ(run(o).skipped, 1u);  // and now it is
}

TEST(RunnerSafety, InputsSharingAnOutputAreRefusedUpFront) {
  TempDir t;
  write_rgb(t.path / "in/sub/a.png", testing::make_scene(48, 40, 1).rgb);
  write_rgb(t.path / "in/sub/a.jpg", testing::make_scene(48, 40, 2).rgb);
  write_rgb(t.path / "in/b.png", testing::make_scene(48, 40, 3).rgb);
  RunOptions o;
  o.input = (t.path / "in").string();
  o.output = (t.path / "out").string();
  o.corruption = "contrast";
  const std::string e = error_of(o);
  EXPECT_NE(e.find("'sub/a.jpg' and 'sub/a.png'"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(t.path / "out"));  // nothing written, not even the folder
  fs::remove(t.path / "in/sub/a.jpg");
  EXPECT_EQ(run(o).written, 2u);  // the layout is unchanged otherwise
  EXPECT_TRUE(fs::exists(t.path / "out/contrast/sub/a.png"));
}

TEST(RunnerSafety, OutputIsNeverTheInputNorAnEarlierOutput) {
  TempDir t;
  make_tree(t.path);
  fs::remove(t.path / "in/broken.jpg");
  RunOptions o;
  o.input = (t.path / "in").string();
  o.corruption = "gauss_noise";
  for (const std::string& out : {(t.path / "in").string(), (t.path / "in/").string(), (t.path / "in/sub/..").string()}) {
    o.output = out;
    EXPECT_NE(error_of(o).find("is the input folder itself"), std::string::npos) << out << ": " << error_of(o);
  }
  EXPECT_FALSE(fs::exists(t.path / "in/manifest.jsonl"));
  EXPECT_FALSE(fs::exists(t.path / "in/gauss_noise"));
  o.output = (t.path / "masks").string();
  o.masks = (t.path / "masks").string();
  EXPECT_NE(error_of(o).find("is the mask folder itself"), std::string::npos) << error_of(o);
  o.masks.clear();

  // An earlier degrade's output inside the input is not degraded again.
  o.output = (t.path / "in/first").string();
  EXPECT_EQ(run(o).written, 3u);
  o.output = (t.path / "in/second").string();
  std::ostringstream log;
  o.log = &log;
  const RunSummary s = run(o);
  EXPECT_EQ(s.images, 3u);
  EXPECT_FALSE(fs::exists(t.path / "in/second/gauss_noise/first"));
  EXPECT_NE(log.str().find("skipping 'first'"), std::string::npos) << log.str();

  // A source inside the output's corruption folders would be overwritten.
  o.log = nullptr;
  o.input = (t.path / "in/first/gauss_noise").string();
  o.output = (t.path / "in/first").string();
  const std::string before = bytes_of(t.path / "in/first/gauss_noise/a.png");
  EXPECT_NE(error_of(o).find("would overwrite its source"), std::string::npos) << error_of(o);
  EXPECT_TRUE(bytes_of(t.path / "in/first/gauss_noise/a.png") == before) << "file bytes differ";
}

// An 8-bit label map and the same labels as 16-bit ids (3 -> 300).
std::pair<cv::Mat, cv::Mat> label_masks(int w, int h) {
  cv::Mat m8(h, w, CV_8U, cv::Scalar(0));
  cv::rectangle(m8, cv::Rect(2, 2, w / 3, h / 3), cv::Scalar(1), cv::FILLED);
  cv::circle(m8, cv::Point(w / 2, h / 2), h / 4, cv::Scalar(2), cv::FILLED);
  cv::rectangle(m8, cv::Rect(w / 2, 3, w / 3, h / 2), cv::Scalar(3), cv::FILLED);
  cv::Mat m16;
  m8.convertTo(m16, CV_16U);
  m16.setTo(300, m8 == 3);
  return {m8, m16};
}

TEST(RunnerSafety, SixteenBitMasksKeepTheirIdsCopiedOrWarped) {
  TempDir t;
  write_rgb(t.path / "in/a.png", testing::make_scene(48, 40, 1).rgb);
  const auto [m8, m16] = label_masks(48, 40);
  fs::create_directories(t.path / "m8");
  fs::create_directories(t.path / "m16");
  ASSERT_TRUE(cv::imwrite((t.path / "m8/a.png").string(), m8));
  ASSERT_TRUE(cv::imwrite((t.path / "m16/a.png").string(), m16));
  RunOptions o;
  o.input = (t.path / "in").string();
  o.warp_masks = true;
  for (const char* c : {"brightness", "zoom_blur", "elastic_transform", "frosted_glass_blur"}) {
    o.corruption = c;
    o.masks = (t.path / "m8").string();
    o.output = (t.path / "o8").string();
    ASSERT_EQ(run(o).failed, 0u) << c;
    o.masks = (t.path / "m16").string();
    o.output = (t.path / "o16").string();
    const RunSummary s = run(o);
    ASSERT_EQ(s.failed, 0u) << c << ": " << s.failures[0];
    const std::string rel = std::string("masks/") + c + "/a.png";
    const cv::Mat w8 = cv::imread((t.path / "o8" / rel).string(), cv::IMREAD_UNCHANGED);
    const cv::Mat w16 = cv::imread((t.path / "o16" / rel).string(), cv::IMREAD_UNCHANGED);
    ASSERT_EQ(w16.type(), CV_16UC1) << c;
    // The 16-bit result is the 8-bit one with id 3 read as 300: the same warp, no id scrambled.
    cv::Mat expect;
    w8.convertTo(expect, CV_16U);
    expect.setTo(300, w8 == 3);
    EXPECT_EQ(cv::norm(w16, expect, cv::NORM_INF), 0) << c;
    if (std::string(c) == "brightness") {
      EXPECT_EQ(cv::norm(w16, m16, cv::NORM_INF), 0);
    }
    // The images do not depend on the mask.
    EXPECT_TRUE(bytes_of(t.path / "o8" / c / "a.png") == bytes_of(t.path / "o16" / c / "a.png")) << "file bytes differ: " << c;
  }
}

TEST(RunnerSafety, SixteenBitMasksWithTooManyIdsToWarpAreRefusedClearly) {
  TempDir t;
  write_rgb(t.path / "in/a.png", testing::make_scene(48, 40, 1).rgb);
  cv::Mat ids(40, 48, CV_16U);
  for (int y = 0; y < ids.rows; ++y)
    for (int x = 0; x < ids.cols; ++x) ids.at<uint16_t>(y, x) = static_cast<uint16_t>(1 + (y * 48 + x) % 400);
  fs::create_directories(t.path / "m");
  ASSERT_TRUE(cv::imwrite((t.path / "m/a.png").string(), ids));
  RunOptions o;
  o.input = (t.path / "in").string();
  o.output = (t.path / "out").string();
  o.masks = (t.path / "m").string();
  o.corruption = "elastic_transform";
  o.warp_masks = true;
  const RunSummary s = run(o);
  ASSERT_EQ(s.failed, 1u);
  EXPECT_NE(s.failures[0].find("at most 255 instance ids, this one has 400"), std::string::npos) << s.failures[0];
  o.warp_masks = false;  // copying keeps every id
  o.output = (t.path / "copy").string();
  ASSERT_EQ(run(o).failed, 0u);
  const cv::Mat copied = cv::imread((t.path / "copy/masks/elastic_transform/a.png").string(), cv::IMREAD_UNCHANGED);
  EXPECT_EQ(cv::norm(copied, ids, cv::NORM_INF), 0);
}

TEST(RunnerSafety, NonUtf8FileNamesAreRefusedUpFrontWithTheNameEscaped) {
  TempDir t;
  write_rgb(t.path / "in/a.png", testing::make_scene(48, 40, 1).rgb);
  write_rgb(t.path / "in/sub/b\xff.png", testing::make_scene(48, 40, 2).rgb);
  RunOptions o;
  o.input = (t.path / "in").string();
  o.output = (t.path / "out").string();
  o.corruption = "contrast";
  const std::string e = error_of(o);
  EXPECT_NE(e.find("'sub/b\\xff.png'"), std::string::npos) << e;
  EXPECT_NE(e.find("not valid UTF-8"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(t.path / "out"));
}

}  // namespace
}  // namespace rsam::degrade

namespace rsam::degrade {
namespace {

// Regenerates docs/degradations_sheet.png and prints the severity table of
// docs/degradations.md:
//   test_degrade --gtest_also_run_disabled_tests --gtest_filter='*WriteDocsAssets'
TEST(Docs, DISABLED_WriteDocsAssets) {
  const cv::Mat scene = testing::make_scene(512, 384, 7).rgb;
  const cv::Mat sheet = contact_sheet(scene, expand("all"), 3, 0, 224, 7, 512);
  cv::Mat bgr;
  cv::cvtColor(sheet, bgr, cv::COLOR_RGB2BGR);
  std::vector<uchar> png;
  ASSERT_TRUE(cv::imencode(".png", bgr, png, {cv::IMWRITE_PNG_COMPRESSION, 9}));
  write_file_atomic(std::string(RSAM_SOURCE_DIR) + "/docs/degradations_sheet.png", png);
  std::cout << levels_markdown();
}

}  // namespace
}  // namespace rsam::degrade
