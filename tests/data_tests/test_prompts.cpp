// Prompt parsing and sampling: grammar, determinism, geometry, noise statistics.
#include <cmath>

#include <gtest/gtest.h>

#include <opencv2/imgproc.hpp>

#include "data/prompts.h"
#include "error.h"

namespace rsam::data {
namespace {

cv::Mat blob() {
  cv::Mat m(60, 80, CV_8UC1, cv::Scalar(0));
  m(cv::Rect(10, 20, 30, 15)).setTo(1);
  m(cv::Rect(35, 5, 4, 20)).setTo(1);  // an arm: tight box is x 10..39, y 5..34
  return m;
}

bool same(const SampledPrompt& a, const SampledPrompt& b) {
  return a.points == b.points && a.labels == b.labels && a.has_box == b.has_box && a.box == b.box && a.kind == b.kind;
}

TEST(Prompts, ParsesTheGrammar) {
  const auto specs = parse_prompts("points:3, box,noisy-box,point:1,points:2+neg:1,noisy-box:0.1,mix:points:1|box");
  ASSERT_EQ(specs.size(), 7u);
  EXPECT_EQ(specs[0].kind, PromptSpec::Kind::Points);
  EXPECT_EQ(specs[0].positives, 3);
  EXPECT_EQ(specs[1].kind, PromptSpec::Kind::Box);
  EXPECT_EQ(specs[2].kind, PromptSpec::Kind::NoisyBox);
  EXPECT_DOUBLE_EQ(specs[2].noise_scale, 0.2);
  EXPECT_EQ(specs[3].text, "points:1");  // point: and points: are one kind
  EXPECT_EQ(specs[4].negatives, 1);
  EXPECT_EQ(specs[4].text, "points:2+neg:1");
  EXPECT_DOUBLE_EQ(specs[5].noise_scale, 0.1);
  EXPECT_EQ(specs[6].kind, PromptSpec::Kind::Mix);
  ASSERT_EQ(specs[6].choices.size(), 2u);
  EXPECT_EQ(specs[6].text, "mix:points:1|box");
  for (const char* bad : {"", "points", "points:0", "points:x", "points:2+pos:1", "boxes", "noisy-box:-1",
                          "mix:box|mix:box", "box,,box", "points:1+neg:"})
    EXPECT_THROW(parse_prompts(bad), Error) << bad;
}

TEST(Prompts, BoxIsTheTightInclusiveBox) {
  const SampledPrompt p = sample_prompt(blob(), parse_prompt("box"), 1, 2);
  ASSERT_TRUE(p.has_box);
  EXPECT_EQ(p.box, cv::Vec4f(10, 5, 39, 34));
  EXPECT_TRUE(p.points.empty());
  cv::Mat one(5, 5, CV_8UC1, cv::Scalar(0));
  one.at<uint8_t>(3, 2) = 1;
  EXPECT_EQ(sample_prompt(one, parse_prompt("box"), 0, 0).box, cv::Vec4f(2, 3, 2, 3));
}

TEST(Prompts, PointsInsideNegativesOutside) {
  const cv::Mat m = blob();
  const PromptSpec spec = parse_prompt("points:5+neg:3");
  for (uint64_t key = 0; key < 200; ++key) {
    const SampledPrompt p = sample_prompt(m, spec, 9, key);
    ASSERT_EQ(p.points.size(), 8u);
    ASSERT_EQ(p.labels, (std::vector<int>{1, 1, 1, 1, 1, 0, 0, 0}));
    for (size_t i = 0; i < p.points.size(); ++i) {
      const cv::Point2f q = p.points[i];
      ASSERT_EQ(q.x, std::floor(q.x));  // pixel indices
      ASSERT_EQ(m.at<uint8_t>(static_cast<int>(q.y), static_cast<int>(q.x)) != 0, p.labels[i] == 1);
    }
    for (size_t i = 0; i < 5; ++i)  // distinct positives while the mask has enough pixels
      for (size_t j = i + 1; j < 5; ++j) ASSERT_NE(p.points[i], p.points[j]);
  }
  // More points than pixels: repeats rather than failing.
  cv::Mat one(4, 4, CV_8UC1, cv::Scalar(0));
  one.at<uint8_t>(1, 1) = 1;
  const SampledPrompt p = sample_prompt(one, parse_prompt("points:3"), 0, 0);
  ASSERT_EQ(p.points.size(), 3u);
  for (const auto& q : p.points) EXPECT_EQ(q, cv::Point2f(1, 1));
}

TEST(Prompts, DeterministicAndIndependentOfCallOrder) {
  const cv::Mat m = blob();
  const auto specs = parse_prompts("points:3+neg:1,noisy-box,mix:points:1|box|noisy-box");
  std::vector<SampledPrompt> forward;
  for (uint64_t key = 0; key < 30; ++key)
    for (const auto& s : specs) forward.push_back(sample_prompt(m, s, 5, key));
  size_t i = forward.size();
  for (uint64_t key = 30; key-- > 0;)
    for (size_t s = specs.size(); s-- > 0;) EXPECT_TRUE(same(sample_prompt(m, specs[s], 5, key), forward[--i]));
  // Different keys and seeds give different draws.
  EXPECT_FALSE(same(sample_prompt(m, specs[0], 5, 0), sample_prompt(m, specs[0], 5, 1)));
  EXPECT_FALSE(same(sample_prompt(m, specs[0], 5, 0), sample_prompt(m, specs[0], 6, 0)));
}

TEST(Prompts, MixPicksEveryAlternativeAndReportsIt) {
  const cv::Mat m = blob();
  const PromptSpec mix = parse_prompt("mix:points:1|box");
  int points = 0, boxes = 0;
  for (uint64_t key = 0; key < 400; ++key) {
    const SampledPrompt p = sample_prompt(m, mix, 3, key);
    if (p.kind == "points:1") {
      ++points;
      EXPECT_EQ(p.points.size(), 1u);
      // The pick draws as the plain spec would for the same key.
      EXPECT_TRUE(same(p, sample_prompt(m, parse_prompt("points:1"), 3, key)));
    } else {
      ASSERT_EQ(p.kind, "box");
      ++boxes;
    }
  }
  EXPECT_GT(points, 150);
  EXPECT_GT(boxes, 150);
}

TEST(Prompts, ClicksStartWithThePointPoints1Draws) {
  const PromptSpec c = parse_prompt("clicks:3");
  EXPECT_EQ(c.kind, PromptSpec::Kind::Clicks);
  EXPECT_EQ(c.clicks, 3);
  EXPECT_EQ(c.text, "clicks:3");
  for (const char* bad : {"clicks:0", "clicks:", "clicks:x"}) EXPECT_THROW(parse_prompt(bad), Error) << bad;
  const cv::Mat m = blob();
  for (uint64_t key = 0; key < 20; ++key) {
    SampledPrompt p = sample_prompt(m, c, 3, key), q = sample_prompt(m, parse_prompt("points:1"), 3, key);
    EXPECT_EQ(p.kind, "clicks:3");
    q.kind = p.kind;
    EXPECT_TRUE(same(p, q));
  }
}

TEST(Prompts, NextClickGoesDeepestIntoTheLargerError) {
  cv::Mat gt(20, 30, CV_8UC1, cv::Scalar(0));
  gt(cv::Rect(4, 4, 9, 9)).setTo(1);  // a 9x9 square: centre (8, 8)
  cv::Mat empty(gt.size(), CV_8UC1, cv::Scalar(0));
  cv::Point at;
  int label = -1;
  // Nothing predicted: a positive click at the centre of the missed square.
  ASSERT_TRUE(next_click(empty, gt, &at, &label));
  EXPECT_EQ(label, 1);
  EXPECT_EQ(at, cv::Point(8, 8));
  // The square found plus a larger false region on the right: a negative
  // click inside the false region, away from its edges (the image border
  // counts as an edge).
  cv::Mat pred = gt.clone();
  pred(cv::Rect(16, 2, 14, 16)).setTo(1);
  ASSERT_TRUE(next_click(pred, gt, &at, &label));
  EXPECT_EQ(label, 0);
  EXPECT_GE(at.x, 20);
  EXPECT_LE(at.x, 25);
  EXPECT_GE(at.y, 7);
  EXPECT_LE(at.y, 12);
  // A perfect mask needs no click; masks of other sizes are an error.
  EXPECT_FALSE(next_click(gt, gt, &at, &label));
  EXPECT_THROW(next_click(cv::Mat(10, 10, CV_8UC1, cv::Scalar(0)), gt, &at, &label), Error);
}

TEST(Prompts, CenterIsTheDeepestPixelOfTheObject) {
  // blob(): a 30x15 bar (x 10..39, y 20..34) with a 4-wide arm; on the bar's
  // middle row, y 27, the pixels x 17..32 are 8 from the background, deeper
  // than any other, so the first maximum in raster order is (17, 27).
  const cv::Mat m = blob();
  for (const char* spelling : {"center", "point:center"}) {
    const PromptSpec spec = parse_prompt(spelling);
    EXPECT_EQ(spec.kind, PromptSpec::Kind::Center);
    EXPECT_EQ(spec.text, "center");
    EXPECT_TRUE(is_single_point(spec));
    const SampledPrompt p = sample_prompt(m, spec, 1, 7);
    ASSERT_EQ(p.points.size(), 1u);
    EXPECT_EQ(p.labels, std::vector<int>{1});
    EXPECT_FALSE(p.has_box);
    EXPECT_EQ(p.points[0], cv::Point2f(17, 27));
    // No draw: any seed and key give the same point.
    EXPECT_TRUE(same(p, sample_prompt(m, spec, 99, 3)));
  }
  EXPECT_EQ(mask_center(m), cv::Point(17, 27));
  // A ring's center is on the ring, never in its hole.
  cv::Mat ring(41, 41, CV_8UC1, cv::Scalar(0));
  cv::circle(ring, cv::Point(20, 20), 15, cv::Scalar(1), 6);
  const cv::Point c = mask_center(ring);
  EXPECT_NE(ring.at<uint8_t>(c), 0);
  EXPECT_TRUE(is_single_point(parse_prompt("points:1")));
  EXPECT_FALSE(is_single_point(parse_prompt("points:1+neg:1")));
  EXPECT_FALSE(is_single_point(parse_prompt("points:3")));
  EXPECT_FALSE(is_single_point(parse_prompt("box")));
  EXPECT_THROW(mask_center(cv::Mat(10, 10, CV_8UC1, cv::Scalar(0))), Error);
  EXPECT_THROW(parse_prompt("center:2"), Error);
}

TEST(Prompts, NoisyBoxStatistics) {
  // A box well inside a large image, so clipping never bites: offsets are
  // N(0, 0.2 * side) with side = 40 for x and 20 for y.
  cv::Mat m(400, 400, CV_8UC1, cv::Scalar(0));
  m(cv::Rect(180, 190, 41, 21)).setTo(1);  // box 180,190 .. 220,210
  const cv::Vec4f box(180, 190, 220, 210);
  const double side[4] = {40, 20, 40, 20};
  const PromptSpec spec = parse_prompt("noisy-box");
  const int n = 4000;
  double sum[4] = {}, sq[4] = {};
  for (int k = 0; k < n; ++k) {
    const SampledPrompt p = sample_prompt(m, spec, 17, static_cast<uint64_t>(k));
    ASSERT_TRUE(p.has_box);
    ASSERT_LE(p.box[0], p.box[2]);
    ASSERT_LE(p.box[1], p.box[3]);
    for (int c = 0; c < 4; ++c) {
      const double d = (p.box[c] - box[c]) / side[c];
      sum[c] += d;
      sq[c] += d * d;
    }
  }
  for (int c = 0; c < 4; ++c) {
    const double mean = sum[c] / n, sd = std::sqrt(sq[c] / n - mean * mean);
    EXPECT_NEAR(mean, 0.0, 0.015) << c;  // standard error 0.2/sqrt(4000) = 0.003
    EXPECT_NEAR(sd, 0.2, 0.012) << c;
  }
  // Clipped to the image near the border.
  cv::Mat edge(30, 30, CV_8UC1, cv::Scalar(0));
  edge(cv::Rect(0, 0, 30, 30)).setTo(1);
  for (uint64_t k = 0; k < 100; ++k) {
    const SampledPrompt p = sample_prompt(edge, spec, 1, k);
    for (int c = 0; c < 4; ++c) {
      EXPECT_GE(p.box[c], 0.0f);
      EXPECT_LE(p.box[c], 29.0f);
    }
  }
}

TEST(Prompts, ImpossibleDrawsAreErrors) {
  const cv::Mat empty(5, 5, CV_8UC1, cv::Scalar(0)), full(5, 5, CV_8UC1, cv::Scalar(1));
  for (const char* s : {"points:1", "box", "noisy-box", "mix:box|points:1"})
    EXPECT_THROW(sample_prompt(empty, parse_prompt(s), 0, 0), Error) << s;
  EXPECT_THROW(sample_prompt(full, parse_prompt("points:1+neg:1"), 0, 0), Error);
  EXPECT_NO_THROW(sample_prompt(full, parse_prompt("points:1"), 0, 0));
  EXPECT_THROW(sample_prompt(cv::Mat(5, 5, CV_32F, cv::Scalar(1)), parse_prompt("box"), 0, 0), Error);
}

}  // namespace
}  // namespace rsam::data
