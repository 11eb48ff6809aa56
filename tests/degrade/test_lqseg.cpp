// LQSeg levels: the documented pipeline draws, and the level ordering.
#include <gtest/gtest.h>

#include "degrade/corruption.h"
#include "error.h"
#include "metrics.h"
#include "scene.h"

namespace rsam::degrade {
namespace {

TEST(LqSeg, KeepsTheInputSizeAndWorksAtTheLevelsResolution) {
  const cv::Mat img = testing::make_scene(160, 120, 1).rgb;
  const int scale[] = {1, 2, 4};
  for (int level = 1; level <= 3; ++level) {
    const Result r = create("lq" + std::to_string(level))->run(img, 3);
    EXPECT_EQ(r.image.size(), img.size());
    EXPECT_EQ(r.drawn["low_res_size"], nlohmann::json({160 / scale[level - 1], 120 / scale[level - 1]}));
  }
}

TEST(LqSeg, StageTwoDrawsItsOwnKernelFromTheStageTwoRanges) {
  const cv::Mat img = testing::make_scene(64, 48, 2).rgb;
  int gaussian2 = 0, differing = 0;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    const Result r = create("lq1")->run(img, seed);
    const auto& b1 = r.drawn["stage1"]["blur"];
    const auto& b2 = r.drawn["stage2"]["blur"];
    if (b2.is_null() || b2["type"] == "sinc") continue;
    ++gaussian2;
    for (double s : b2["sigma"]) {
      EXPECT_GE(s, 0.2);
      EXPECT_LE(s, 1.5);
    }
    differing += b1 != b2;
    const int k = b2["size"];
    EXPECT_TRUE(k >= 7 && k <= 21 && k % 2 == 1);
  }
  EXPECT_GT(gaussian2, 15);
  EXPECT_EQ(differing, gaussian2);
}

TEST(LqSeg, DrawsFollowGleSamsParameters) {
  const cv::Mat img = testing::make_scene(64, 48, 3).rgb;
  for (uint64_t seed = 0; seed < 30; ++seed) {
    const Result r = create("lq2")->run(img, seed);
    const auto& s1 = r.drawn["stage1"];
    const auto& s2 = r.drawn["stage2"];
    EXPECT_GE(s1["jpeg_quality"].get<int>(), 30);
    EXPECT_LE(s1["jpeg_quality"].get<int>(), 95);
    EXPECT_GE(s2["jpeg_quality"].get<int>(), 30);
    const double sc1 = s1["resize"]["scale"], sc2 = s2["resize"]["scale"];
    EXPECT_TRUE(sc1 >= 0.15 && sc1 <= 1.5);
    EXPECT_TRUE(sc2 >= 0.3 && sc2 <= 1.2);
    const auto& n1 = s1["noise"];
    if (n1["type"] == "gaussian") {
      EXPECT_TRUE(n1["sigma"].get<double>() >= 1 && n1["sigma"].get<double>() <= 30);
    } else {
      EXPECT_TRUE(n1["scale"].get<double>() >= 0.05 && n1["scale"].get<double>() <= 3);
    }
    const auto& n2 = s2["noise"];
    if (n2["type"] == "gaussian") EXPECT_LE(n2["sigma"].get<double>(), 25);
    else EXPECT_LE(n2["scale"].get<double>(), 2.5);
  }
}

TEST(LqSeg, HigherLevelsAreMoreDamagedOnAverage) {
  // Dead-leaves images stand in for photos (natural-image statistics, detail
  // at every scale). Same seed per image across levels: only the level's
  // factor differs. (On smooth images SSIM can rank LQ-1 lowest: its noise
  // stays at full resolution while LQ-3's is smoothed by the upsampling.)
  double psnr[3] = {}, ssim[3] = {};
  const int n = 8;
  for (int i = 0; i < n; ++i) {
    const cv::Mat img = testing::dead_leaves(192, 144, 100 + i);
    for (int level = 0; level < 3; ++level) {
      const cv::Mat out = create("lq" + std::to_string(level + 1))->run(img, 1000 + i).image;
      psnr[level] += testing::psnr(img, out) / n;
      ssim[level] += testing::ssim(img, out) / n;
    }
  }
  EXPECT_GT(psnr[0], psnr[1]);
  EXPECT_GT(psnr[1], psnr[2]);
  EXPECT_GT(ssim[0], ssim[1]);
  EXPECT_GT(ssim[1], ssim[2]);
  RecordProperty("psnr", std::to_string(psnr[0]) + " " + std::to_string(psnr[1]) + " " + std::to_string(psnr[2]));
  RecordProperty("ssim", std::to_string(ssim[0]) + " " + std::to_string(ssim[1]) + " " + std::to_string(ssim[2]));
}

TEST(LqSeg, ScaleCanBeOverridden) {
  const cv::Mat img = testing::make_scene(64, 64, 4).rgb;
  const Result r = create("lq1", 3, {{"scale", 8}})->run(img, 1);
  EXPECT_EQ(r.drawn["low_res_size"], nlohmann::json({8, 8}));
  EXPECT_THROW(create("lq1", 3, {{"kernel_prob", {1, 2}}}), rsam::Error);
}

}  // namespace
}  // namespace rsam::degrade
