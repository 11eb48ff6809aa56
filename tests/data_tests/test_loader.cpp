// Loader: identical output for any worker count, exact resume, corruption
// spec, skipping of unreadable samples, epoch/step limits.
#include <set>

#include <gtest/gtest.h>

#include "data/loader.h"
#include "data_test_util.h"
#include "degrade/corruption.h"
#include "error.h"

namespace rsam::data {
namespace {

using test::same_bytes;
using test::TempDir;

// 10 images with masks; with `broken`, image 04 is not a decodable file.
std::string make_set(const TempDir& t, bool broken) {
  const std::string im = t.mkdir("im"), mk = t.mkdir("mk");
  for (int i = 0; i < 10; ++i) {
    char stem[8];
    std::snprintf(stem, sizeof(stem), "%02d", i);
    if (broken && i == 4) test::write_bytes(im + "/" + stem + ".png", "\x89PNG truncated");
    else test::write_rgb(im + "/" + stem + ".png", test::make_rgb(32, 24, i));
    cv::Mat m(24, 32, CV_8UC1, cv::Scalar(0));
    m(cv::Rect(i, 2 + i, 10, 8)).setTo(255);
    cv::imwrite(mk + "/" + stem + ".png", m);
  }
  return "folder:" + im + "," + mk;
}

std::vector<Batch> drain(Loader& l, size_t max_batches = 1000) {
  std::vector<Batch> out;
  Batch b;
  while (out.size() < max_batches && l.next(b)) out.push_back(b);
  return out;
}

void expect_same(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].size(), b[i].size()) << "batch " << i;
    for (size_t j = 0; j < a[i].size(); ++j) {
      const Item &x = a[i][j], &y = b[i][j];
      EXPECT_EQ(x.index, y.index);
      EXPECT_EQ(x.dataset_index, y.dataset_index);
      EXPECT_EQ(x.sample.id, y.sample.id);
      EXPECT_EQ(x.corruption, y.corruption);
      EXPECT_EQ(x.severity, y.severity);
      EXPECT_TRUE(same_bytes(x.image, y.image)) << "batch " << i << " item " << j;
      EXPECT_TRUE(same_bytes(x.sample.mask, y.sample.mask));
      ASSERT_EQ(x.prompts.size(), y.prompts.size());
      for (size_t k = 0; k < x.prompts.size(); ++k) {
        EXPECT_EQ(x.prompts[k].points, y.prompts[k].points);
        EXPECT_EQ(x.prompts[k].box, y.prompts[k].box);
        EXPECT_EQ(x.prompts[k].kind, y.prompts[k].kind);
      }
    }
  }
}

LoaderOptions base_options() {
  LoaderOptions o;
  o.batch_size = 3;
  o.seed = 77;
  o.epochs = 2;
  o.corruptions = "gauss_noise,fog,motion_blur,elastic_transform";
  o.severity = 0;
  o.clean_ratio = 0.25;
  o.prompts = parse_prompts("points:2+neg:1,noisy-box,mix:box|points:1");
  return o;
}

TEST(Loader, SameBytesForAnyWorkerCount) {
  TempDir t;
  const auto ds = open_dataset(make_set(t, true));
  LoaderOptions o = base_options();
  Loader sync(*ds, o);
  const auto want = drain(sync);
  // 9 readable per epoch, batches of 3, never spanning epochs.
  ASSERT_EQ(want.size(), 6u);
  EXPECT_EQ(sync.skipped(), 2u);
  for (int workers : {1, 3}) {
    o.workers = workers;
    Loader l(*ds, o);
    expect_same(drain(l), want);
    EXPECT_EQ(l.skipped(), 2u);
  }
}

TEST(Loader, ResumeEqualsTheUninterruptedRun) {
  TempDir t;
  const auto ds = open_dataset(make_set(t, false));
  LoaderOptions o = base_options();
  o.epochs = 3;
  o.workers = 2;
  Loader whole(*ds, o);
  const auto want = drain(whole);
  ASSERT_EQ(want.size(), 12u);  // 10 per epoch -> 3 + 3 + 3 + 1
  for (size_t stop_after : {1u, 4u, 5u, 9u}) {
    Loader first(*ds, o);
    auto got = drain(first, stop_after);
    const LoaderState saved = first.state();
    EXPECT_EQ(saved.step, stop_after);
    Loader second(*ds, o);  // a fresh process, as after a restart
    second.set_state(saved);
    for (auto& b : drain(second)) got.push_back(std::move(b));
    expect_same(got, want);
  }
  // set_state on a running loader rewinds it, workers included.
  Loader again(*ds, o);
  drain(again, 7);
  again.set_state({});
  expect_same(drain(again), want);
}

TEST(Loader, EpochsArePermutationsAndStepsLimit) {
  TempDir t;
  const auto ds = open_dataset(make_set(t, false));
  LoaderOptions o;
  o.batch_size = 4;
  o.seed = 5;
  o.epochs = 2;
  Loader l(*ds, o);
  const auto batches = drain(l);
  ASSERT_EQ(batches.size(), 6u);  // 4 + 4 + 2 per epoch
  EXPECT_EQ(batches[2].size(), 2u);
  std::vector<size_t> e0, e1;
  for (size_t i = 0; i < batches.size(); ++i)
    for (const auto& it : batches[i]) (i < 3 ? e0 : e1).push_back(it.dataset_index);
  EXPECT_NE(e0, e1);  // reshuffled per epoch
  EXPECT_EQ(std::set<size_t>(e0.begin(), e0.end()).size(), 10u);
  EXPECT_EQ(std::set<size_t>(e1.begin(), e1.end()).size(), 10u);
  EXPECT_EQ(batches[3][0].index, 10u);  // global position

  o.drop_last = true;
  o.epochs = 0;  // unlimited: the step limit ends it
  o.steps = 5;
  Loader s(*ds, o);
  const auto limited = drain(s);
  ASSERT_EQ(limited.size(), 5u);
  for (const auto& b : limited) EXPECT_EQ(b.size(), 4u);
  EXPECT_EQ(s.state().step, 5u);

  o.shuffle = false;
  o.steps = 1;
  Loader plain(*ds, o);
  Batch b;
  ASSERT_TRUE(plain.next(b));
  for (size_t i = 0; i < b.size(); ++i) EXPECT_EQ(b[i].dataset_index, i);
}

TEST(Loader, CorruptionSpecIsApplied) {
  TempDir t;
  const auto ds = open_dataset(make_set(t, false));
  LoaderOptions o;
  o.batch_size = 10;
  o.corruptions = "robustseg";
  o.clean_ratio = 1.0;
  Loader clean(*ds, o);
  Batch b;
  ASSERT_TRUE(clean.next(b));
  for (const auto& it : b) {
    EXPECT_EQ(it.corruption, "clean");
    EXPECT_EQ(it.severity, 0);
    EXPECT_TRUE(same_bytes(it.image, it.sample.image));
  }

  o.clean_ratio = 0.0;
  o.corruptions = "gauss_noise,lqseg";
  o.severity = 4;
  o.epochs = 3;
  Loader dirty(*ds, o);
  std::set<std::string> seen;
  const std::set<std::string> allowed = {"gauss_noise", "lq1", "lq2", "lq3"};
  for (const auto& batch : drain(dirty))
    for (const auto& it : batch) {
      EXPECT_TRUE(allowed.count(it.corruption)) << it.corruption;
      seen.insert(it.corruption);
      if (it.corruption == "gauss_noise") {
        EXPECT_EQ(it.severity, 4);
      }
      EXPECT_FALSE(same_bytes(it.image, it.sample.image)) << it.corruption;
      EXPECT_EQ(it.image.size(), it.sample.image.size());
    }
  EXPECT_EQ(seen, allowed);

  o.corruptions = "none";
  Loader none(*ds, o);
  ASSERT_TRUE(none.next(b));
  for (const auto& it : b) EXPECT_EQ(it.corruption, "clean");

  o.corruptions = "no_such_corruption";
  EXPECT_THROW(Loader(*ds, o), Error);
}

TEST(Loader, GeometricCorruptionMovesTheMaskOnlyWhenAsked) {
  TempDir t;
  const auto ds = open_dataset(make_set(t, false));
  LoaderOptions o;
  o.batch_size = 10;
  o.corruptions = "elastic_transform";
  o.severity = 5;
  for (bool warp : {false, true}) {
    o.warp_mask = warp;
    Loader l(*ds, o);
    Batch b;
    ASSERT_TRUE(l.next(b));
    int moved = 0;
    for (const auto& it : b) moved += !same_bytes(it.sample.mask, ds->get(it.dataset_index).mask);
    if (warp) {
      EXPECT_GT(moved, 0);
    } else {
      EXPECT_EQ(moved, 0);
    }
  }
}

TEST(Loader, UnreadableSamplesAreSkippedAndCounted) {
  TempDir t;
  const auto ds = open_dataset(make_set(t, true));
  LoaderOptions o;
  o.batch_size = 4;
  o.shuffle = false;
  std::vector<std::string> messages;
  o.on_skip = [&](const std::string& m) { messages.push_back(m); };
  for (int workers : {0, 2}) {
    messages.clear();
    o.workers = workers;
    Loader l(*ds, o);
    const auto batches = drain(l);
    ASSERT_EQ(batches.size(), 3u);
    EXPECT_EQ(batches[1].size(), 4u);  // refilled from the following positions
    EXPECT_EQ(batches[1][0].dataset_index, 5u);
    EXPECT_EQ(batches[2].size(), 1u);
    EXPECT_EQ(l.skipped(), 1u);
    ASSERT_EQ(messages.size(), 1u);
    EXPECT_NE(messages[0].find("04.png"), std::string::npos) << messages[0];
    EXPECT_EQ(l.last_skip(), messages[0]);
  }
}

TEST(Loader, NothingReadableIsAnErrorNotAHang) {
  TempDir t;
  const std::string im = t.mkdir("im"), mk = t.mkdir("mk");
  test::write_bytes(im + "/a.png", "junk");
  cv::imwrite(mk + "/a.png", cv::Mat(4, 4, CV_8UC1, cv::Scalar(255)));
  const auto ds = open_dataset("folder:" + im + "," + mk);
  LoaderOptions o;
  o.epochs = 0;
  Loader l(*ds, o);
  Batch b;
  EXPECT_THROW(l.next(b), Error);
}

TEST(Loader, BadOptionsAreErrors) {
  TempDir t;
  const auto ds = open_dataset(make_set(t, false));
  LoaderOptions o;
  o.batch_size = 0;
  EXPECT_THROW(Loader(*ds, o), Error);
  o = LoaderOptions();
  o.clean_ratio = 1.5;
  EXPECT_THROW(Loader(*ds, o), Error);
  o = LoaderOptions();
  o.severity = 6;
  EXPECT_THROW(Loader(*ds, o), Error);
  EXPECT_EQ(parse_severity("random"), 0);
  EXPECT_EQ(parse_severity("2"), 2);
  EXPECT_THROW(parse_severity("7"), Error);
  Loader l(*ds, LoaderOptions());
  EXPECT_THROW(l.set_state({0, 10, 0}), Error);
}

}  // namespace
}  // namespace rsam::data
