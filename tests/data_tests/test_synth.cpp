// The synthetic world: determinism, masks that agree with the reported
// objects, every kind drawn, and written sets that the dataset readers load
// back exactly.
#include <gtest/gtest.h>

#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "data/dataset.h"
#include "data/synth.h"
#include "error.h"
#include "io/fs.h"
#include "io/image_codec.h"

namespace fs = std::filesystem;
using namespace rsam::data;

namespace {

SynthOptions small(uint64_t seed = 7) {
  SynthOptions o;
  o.size = 96;
  o.seed = seed;
  o.photos = "none";  // the same scenes on every machine
  return o;
}

bool same(const cv::Mat& a, const cv::Mat& b) {
  return a.size() == b.size() && a.type() == b.type() && cv::countNonZero(a.reshape(1) != b.reshape(1)) == 0;
}

fs::path temp_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("rsam_synth_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  return d;
}

}  // namespace

TEST(Synth, SameSeedAndIndexSameBytesOtherwiseDifferent) {
  SynthWorld w(small()), w2(small()), w3(small(8));
  const auto a = w.scene(3), b = w2.scene(3), c = w.scene(4), d = w3.scene(3);
  EXPECT_TRUE(same(a.image, b.image));
  EXPECT_TRUE(same(a.ids, b.ids));
  EXPECT_FALSE(same(a.image, c.image));
  EXPECT_FALSE(same(a.image, d.image));
}

TEST(Synth, ObjectsMatchTheInstanceMap) {
  SynthWorld w(small());
  for (uint64_t i = 0; i < 20; ++i) {
    const auto s = w.scene(i);
    ASSERT_EQ(s.image.type(), CV_8UC3);
    ASSERT_EQ(s.ids.type(), CV_8UC1);
    ASSERT_EQ(s.image.size(), cv::Size(96, 96));
    double maxv;
    cv::minMaxLoc(s.ids, nullptr, &maxv);
    EXPECT_EQ(int(maxv), int(s.objects.size())) << "ids are 1..n with no gaps";
    for (size_t k = 0; k < s.objects.size(); ++k) {
      const auto& o = s.objects[k];
      EXPECT_EQ(o.id, int(k) + 1);
      const cv::Mat m = s.ids == o.id;
      EXPECT_EQ(cv::countNonZero(m), o.area);
      EXPECT_EQ(cv::boundingRect(m), o.bbox);
      EXPECT_GE(o.area, 30) << "tiny occluded remnants are dropped";
    }
  }
}

TEST(Synth, EveryKindAppearsAndObjectsStandOut) {
  SynthWorld w(small());
  std::map<std::string, int> count;
  double contrast_sum = 0;
  int n = 0;
  for (uint64_t i = 0; i < 80; ++i) {
    const auto s = w.scene(i);
    for (const auto& o : s.objects) {
      ++count[o.kind];
      if (o.area < 200) continue;
      // Mean colour inside vs a ring just outside the object.
      const cv::Mat in = s.ids == o.id;
      cv::Mat grown;
      cv::dilate(in, grown, cv::Mat(), {-1, -1}, 3);
      const cv::Mat ring = grown & ~in;
      if (cv::countNonZero(ring) == 0) continue;
      const cv::Scalar a = cv::mean(s.image, in), b = cv::mean(s.image, ring);
      contrast_sum +=
          std::sqrt((a[0] - b[0]) * (a[0] - b[0]) + (a[1] - b[1]) * (a[1] - b[1]) + (a[2] - b[2]) * (a[2] - b[2]));
      ++n;
    }
  }
  for (const auto& k : synth_kinds()) EXPECT_GT(count[k], 5) << k;
  ASSERT_GT(n, 20);
  // Objects differ visibly from their surroundings on average (RGB distance
  // of the means, 0..441), so a point or box prompt is answerable.
  EXPECT_GT(contrast_sum / n, 40.0);
}

TEST(Synth, BadOptionsAreOneLineErrors) {
  auto o = small();
  o.size = 8;
  EXPECT_THROW(SynthWorld{o}, rsam::Error);
  o = small();
  o.min_objects = 5;
  o.max_objects = 2;
  EXPECT_THROW(SynthWorld{o}, rsam::Error);
  o = small();
  o.photos = "/nonexistent/photos";
  EXPECT_THROW(SynthWorld{o}, rsam::Error);
}

TEST(Synth, WrittenSetReadsBackAsCocoAndInstanceFolders) {
  const auto dir = temp_dir("write");
  const auto sum = write_synth(dir.string(), 6, small(), 2);
  EXPECT_EQ(sum.scenes, 6u);
  auto coco = open_dataset("coco:" + (dir / "annotations.json").string() + "," + (dir / "images").string());
  auto folder = open_dataset("folder:" + (dir / "images").string() + "," + (dir / "masks").string() + ",instances");
  ASSERT_EQ(coco->size(), sum.objects);
  ASSERT_EQ(folder->size(), sum.objects);
  SynthWorld w(small());
  for (size_t i = 0; i < coco->size(); ++i) {
    const Sample a = coco->get(i), b = folder->get(i);
    EXPECT_TRUE(same(a.mask, b.mask)) << i;
    EXPECT_TRUE(same(a.image, b.image)) << i;
    EXPECT_TRUE(same(coco->get_mask(i), a.mask));
    // Objects of one image are grouped for multi-mask training.
    const auto sibs = coco->same_image(i);
    EXPECT_NE(std::find(sibs.begin(), sibs.end(), i), sibs.end());
    EXPECT_EQ(sibs, folder->same_image(i));
    for (size_t j : sibs) EXPECT_EQ(coco->get(j).image_path, a.image_path);
  }
  // The scene written is the scene generated.
  const cv::Mat img0 = read_rgb((dir / "images" / "000000.png").string());
  EXPECT_TRUE(same(img0, w.scene(0).image));
  // A rerun into the same folder keeps the files; other options are refused.
  EXPECT_NO_THROW(write_synth(dir.string(), 6, small(), 1));
  EXPECT_THROW(write_synth(dir.string(), 6, small(99), 1), rsam::Error);
  fs::remove_all(dir);
}

TEST(Synth, OutputDoesNotDependOnJobs) {
  const auto d1 = temp_dir("j1"), d2 = temp_dir("j2");
  write_synth(d1.string(), 5, small(), 1);
  write_synth(d2.string(), 5, small(), 3);
  for (const char* f : {"annotations.json", "images/000004.png", "masks/000002.png"}) {
    std::ifstream a(d1 / f, std::ios::binary), b(d2 / f, std::ios::binary);
    std::string sa((std::istreambuf_iterator<char>(a)), {}), sb((std::istreambuf_iterator<char>(b)), {});
    EXPECT_FALSE(sa.empty());
    EXPECT_EQ(sa, sb) << f;
  }
  fs::remove_all(d1);
  fs::remove_all(d2);
}

TEST(Synth, PhotoFolderIsUsedWhenGiven) {
  const auto dir = temp_dir("photos");
  fs::create_directories(dir);
  cv::Mat photo(120, 160, CV_8UC3);
  cv::randu(photo, 0, 255);
  cv::imwrite((dir / "p.png").string(), photo);
  auto o = small();
  o.photos = dir.string();
  SynthWorld w(o);
  ASSERT_EQ(w.photo_paths().size(), 1u);
  EXPECT_FALSE(same(w.scene(0).image, SynthWorld(small()).scene(0).image));
  fs::remove_all(dir);
}

// Issue 37: a run killed before its end left scenes and no synth.json, so a
// re-run with another seed added its boxes and JSON to the first seed's
// images. The options are now written before any scene and checked.
TEST(Synth, KilledRunKeepsItsOptionsAndRefusesOthers) {
  const auto dir = temp_dir("killed");
  struct Kill {};
  // Stopped after the first scene, as a kill would.
  EXPECT_THROW(write_synth(dir.string(), 6, small(1), 1, [](size_t, size_t) { throw Kill{}; }), Kill);
  ASSERT_TRUE(fs::exists(dir / "images" / "000000.png"));
  ASSERT_FALSE(fs::exists(dir / "annotations.json"));
  std::ifstream meta(dir / "synth.json");
  ASSERT_TRUE(meta.good()) << "the options go first";
  try {
    write_synth(dir.string(), 6, small(2), 1);
    FAIL() << "expected rsam::Error";
  } catch (const rsam::Error& e) {
    EXPECT_NE(std::string(e.what()).find("other options (seed)"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir / "annotations.json"));
  // The same options complete the set, identical to one made in one go.
  write_synth(dir.string(), 6, small(1), 1);
  const auto whole = temp_dir("whole");
  write_synth(whole.string(), 6, small(1), 1);
  for (const char* f : {"annotations.json", "synth.json", "images/000000.png", "masks/000005.png"}) {
    std::ifstream a(dir / f, std::ios::binary), b(whole / f, std::ios::binary);
    std::string sa((std::istreambuf_iterator<char>(a)), {}), sb((std::istreambuf_iterator<char>(b)), {});
    EXPECT_FALSE(sa.empty()) << f;
    EXPECT_EQ(sa, sb) << f;
  }
  // Scenes with no record of their options (an older rsam's killed run) are refused too.
  fs::remove(dir / "synth.json");
  EXPECT_THROW(write_synth(dir.string(), 6, small(1), 1), rsam::Error);
  fs::remove_all(dir);
  fs::remove_all(whole);
}

// Issue 37: two synths into one folder at once interleaved silently.
TEST(Synth, FolderInUseIsRefused) {
  const auto dir = temp_dir("locked");
  fs::create_directories(dir);
  {
    const rsam::io::FolderLock other(dir.string());
    try {
      write_synth(dir.string(), 2, small(), 1);
      FAIL() << "expected rsam::Error";
    } catch (const rsam::Error& e) {
      EXPECT_NE(std::string(e.what()).find("in use by another rsam run"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(dir / "images"));
  }
  EXPECT_NO_THROW(write_synth(dir.string(), 2, small(), 1));
  fs::remove_all(dir);
}

// Issue 37: photos are read through the one codec (pixel limit, truncation).
TEST(Synth, PhotosObeyThePixelLimit) {
  const auto dir = temp_dir("bigphoto");
  fs::create_directories(dir);
  cv::Mat photo(120, 160, CV_8UC3, cv::Scalar(10, 200, 30));
  cv::imwrite((dir / "p.png").string(), photo);
  auto o = small();
  o.photos = dir.string();
  rsam::io::set_max_image_pixels(160 * 120 - 1);
  try {
    SynthWorld w(o);
    ADD_FAILURE() << "expected rsam::Error";
  } catch (const rsam::Error& e) {
    EXPECT_NE(std::string(e.what()).find("p.png"), std::string::npos) << e.what();
  }
  rsam::io::set_max_image_pixels(100'000'000);
  EXPECT_NO_THROW(SynthWorld{o});
  fs::remove_all(dir);
}
