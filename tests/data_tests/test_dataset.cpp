// Datasets: folder (binary and instance maps), plain directory, paired, COCO
// on the pycocotools fixtures, SA-1B layout, and the failure modes.
#include <algorithm>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "data/rle.h"
#include "data_test_util.h"
#include "error.h"
#include "io/image_bytes.h"
#include "io/image_codec.h"

namespace rsam::data {
namespace {

using test::make_rgb;
using test::same_bytes;
using test::TempDir;
using test::write_rgb;
const std::string kCoco = RSAM_DATA_FIXTURES;

cv::Mat rect_mask(int w, int h, cv::Rect r, uchar value = 255) {
  cv::Mat m(h, w, CV_8UC1, cv::Scalar(0));
  m(r).setTo(value);
  return m;
}

TEST(FolderDataset, BinaryMasksSortedAndLazy) {
  TempDir t;
  const std::string im = t.mkdir("im"), mk = t.mkdir("mk");
  write_rgb(im + "/b.png", make_rgb(20, 10, 2));
  write_rgb(im + "/a.jpg", make_rgb(20, 10, 1));
  write_rgb(im + "/c.png", make_rgb(20, 10, 3));  // no mask: left out
  test::write_bytes(im + "/notes.txt", "not an image");
  cv::imwrite(mk + "/a.png", rect_mask(20, 10, {2, 3, 4, 5}));
  cv::imwrite(mk + "/b.bmp", rect_mask(20, 10, {0, 0, 1, 1}, 7));  // any nonzero value is object
  const auto ds = open_dataset("folder:" + im + "," + mk);
  ASSERT_EQ(ds->size(), 2u);
  EXPECT_NE(ds->describe().find("1 images without a mask"), std::string::npos) << ds->describe();
  const Sample a = ds->get(0), b = ds->get(1);
  EXPECT_EQ(a.id, "a");
  EXPECT_EQ(b.id, "b");
  EXPECT_EQ(a.image.type(), CV_8UC3);
  EXPECT_TRUE(same_bytes(b.image, make_rgb(20, 10, 2)));  // PNG: exact, and RGB order
  EXPECT_TRUE(same_bytes(a.mask, rect_mask(20, 10, {2, 3, 4, 5}, 1)));
  EXPECT_TRUE(same_bytes(b.mask, rect_mask(20, 10, {0, 0, 1, 1}, 1)));
  EXPECT_TRUE(a.clean.empty());
  EXPECT_THROW(ds->get(2), Error);

  // Lazy: a file broken after opening fails in get(), naming the file.
  test::write_bytes(im + "/b.png", "garbage");
  try {
    ds->get(1);
    FAIL() << "expected rsam::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("b.png"), std::string::npos) << e.what();
  }
}

TEST(FolderDataset, PlainDirectoryAndDegradedAlias) {
  TempDir t;
  t.mkdir("images");
  t.mkdir("masks");
  write_rgb(t / "images/x.png", make_rgb(8, 8, 0));
  cv::imwrite(t / "masks/x.png", rect_mask(8, 8, {1, 1, 2, 2}));
  const auto plain = open_dataset(t.str());
  ASSERT_EQ(plain->size(), 1u);
  EXPECT_EQ(plain->get(0).id, "x");
  const auto degraded = open_dataset("degraded:" + (t / "images") + "," + (t / "masks"));
  ASSERT_EQ(degraded->size(), 1u);
  EXPECT_TRUE(same_bytes(degraded->get(0).mask, plain->get(0).mask));
}

TEST(FolderDataset, InstanceMaps8And16Bit) {
  TempDir t;
  const std::string im = t.mkdir("im"), mk = t.mkdir("mk");
  write_rgb(im + "/p.png", make_rgb(12, 9, 0));
  write_rgb(im + "/q.png", make_rgb(12, 9, 1));
  cv::Mat m8(9, 12, CV_8UC1, cv::Scalar(0));
  m8(cv::Rect(0, 0, 3, 3)).setTo(5);
  m8(cv::Rect(6, 6, 2, 2)).setTo(2);
  cv::Mat m16(9, 12, CV_16UC1, cv::Scalar(0));
  m16(cv::Rect(1, 1, 4, 4)).setTo(1000);
  m16(cv::Rect(8, 2, 2, 5)).setTo(300);
  cv::imwrite(mk + "/p.png", m8);
  cv::imwrite(mk + "/q.png", m16);
  const auto ds = open_dataset("folder:" + im + "," + mk + ",instances");
  ASSERT_EQ(ds->size(), 4u);
  const std::vector<std::string> ids = {"p#2", "p#5", "q#300", "q#1000"};
  const std::vector<int> areas = {4, 9, 10, 16};
  for (size_t i = 0; i < 4; ++i) {
    const Sample s = ds->get(i);
    EXPECT_EQ(s.id, ids[i]);
    EXPECT_EQ(cv::countNonZero(s.mask), areas[i]) << ids[i];
    double mx;
    cv::minMaxLoc(s.mask, nullptr, &mx);
    EXPECT_EQ(mx, 1.0);
  }
  EXPECT_TRUE(same_bytes(ds->get(3).mask, rect_mask(12, 9, {1, 1, 4, 4}, 1)));
}

TEST(FolderDataset, PairedCarriesTheCleanReference) {
  TempDir t;
  const std::string cl = t.mkdir("clean"), dg = t.mkdir("deg"), mk = t.mkdir("mk");
  for (int i = 0; i < 3; ++i) {
    const std::string s = std::to_string(i);
    if (i != 1) write_rgb(cl + "/" + s + ".png", make_rgb(10, 10, i));  // 1 has no clean twin
    write_rgb(dg + "/" + s + ".png", make_rgb(10, 10, i + 10));
    cv::imwrite(mk + "/" + s + ".png", rect_mask(10, 10, {i, i, 3, 3}));
  }
  const auto ds = open_dataset("paired:" + cl + "," + dg + "," + mk);
  ASSERT_EQ(ds->size(), 2u);
  const Sample s = ds->get(1);
  EXPECT_EQ(s.id, "2");
  EXPECT_TRUE(same_bytes(s.image, make_rgb(10, 10, 12)));
  EXPECT_TRUE(same_bytes(s.clean, make_rgb(10, 10, 2)));
}

TEST(FolderDataset, MaskOfAnotherSizeIsAnError) {
  TempDir t;
  const std::string im = t.mkdir("im"), mk = t.mkdir("mk");
  write_rgb(im + "/a.png", make_rgb(10, 10, 0));
  cv::imwrite(mk + "/a.png", rect_mask(11, 10, {0, 0, 2, 2}));
  EXPECT_THROW(open_dataset("folder:" + im + "," + mk)->get(0), Error);
}

std::vector<uchar> encode(const std::string& ext, const cv::Mat& img, const std::vector<int>& params = {}) {
  std::vector<uchar> buf;
  EXPECT_TRUE(cv::imencode(ext, img, buf, params)) << ext;
  return buf;
}

// libjpeg pads a cut JPEG with grey and reports success, so the container
// check is what stands between a half-downloaded file and a wrong mask.
TEST(ImageBytes, WholeImagesPassAndEveryCutIsCaught) {
  const cv::Mat img = make_rgb(48, 40, 5);
  struct Case {
    std::string name;
    std::vector<uchar> bytes;
    size_t min_cut;  // shorter prefixes are not recognisable as the format
  };
  const std::vector<Case> cases = {
      {"jpg", encode(".jpg", img), 2},
      {"progressive jpg", encode(".jpg", img, {cv::IMWRITE_JPEG_PROGRESSIVE, 1}), 2},
      {"restart-interval jpg", encode(".jpg", img, {cv::IMWRITE_JPEG_RST_INTERVAL, 1}), 2},
      {"png", encode(".png", img), 1},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const auto& b = c.bytes;
    EXPECT_EQ(io::image_bytes_problem(b.data(), b.size()), "");
    auto trailing = b;
    trailing.insert(trailing.end(), {0, 1, 2, 3});
    EXPECT_EQ(io::image_bytes_problem(trailing.data(), trailing.size()), "");
    std::vector<size_t> missed;  // cut lengths that passed as complete or got another verdict
    for (size_t n = c.min_cut; n < b.size(); ++n)
      if (io::image_bytes_problem(b.data(), n).find("truncated") == std::string::npos) missed.push_back(n);
    EXPECT_TRUE(missed.empty()) << missed.size() << " of " << b.size() - c.min_cut << " cuts missed, first at "
                                << missed.front() << " of " << b.size();
  }
  // A flipped bit inside the image data of a PNG breaks its chunk's CRC.
  auto png = encode(".png", img);
  const auto idat = std::search(png.begin(), png.end(), std::begin("IDAT"), std::end("IDAT") - 1);
  ASSERT_NE(idat, png.end());
  idat[8] ^= 0x10;
  EXPECT_NE(io::image_bytes_problem(png.data(), png.size()).find("bad CRC in chunk IDAT"), std::string::npos);
  // Other formats are left to the decoder.
  const auto bmp = encode(".bmp", img);
  EXPECT_EQ(io::image_bytes_problem(bmp.data(), bmp.size() / 2), "");

  // Through a dataset: the cut JPEG is an error naming the cause, not a grey image.
  TempDir t;
  const std::string im = t.mkdir("im"), mk = t.mkdir("mk");
  const auto jpg = encode(".jpg", img);
  test::write_bytes(im + "/cut.jpg", std::string(jpg.begin(), jpg.begin() + long(jpg.size() / 2)));
  cv::imwrite(mk + "/cut.png", rect_mask(48, 40, {2, 3, 4, 5}));
  const auto ds = open_dataset("folder:" + im + "," + mk);
  ASSERT_EQ(ds->size(), 1u);
  try {
    ds->get(0);
    FAIL() << "expected rsam::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated JPEG"), std::string::npos) << e.what();
  }
}

TEST(CocoDataset, FixturesMatchPycocotools) {
  const auto ds = open_dataset("coco:" + kCoco + "/instances.json," + kCoco + "/images");
  ASSERT_EQ(ds->size(), 6u);  // annotation 13 is a crowd
  const std::vector<std::string> ids = {"a#11", "a#12", "b#21", "b#22", "c#31", "c#32"};
  for (size_t i = 0; i < ds->size(); ++i) {
    const Sample s = ds->get(i);
    EXPECT_EQ(s.id, ids[i]);
    const std::string ann = ids[i].substr(2);
    const cv::Mat want = cv::imread(kCoco + "/expected/" + ann + ".png", cv::IMREAD_GRAYSCALE);
    EXPECT_TRUE(same_bytes(s.mask, want / 255)) << ids[i];
    EXPECT_EQ(s.image.size(), s.mask.size());
  }
  EXPECT_EQ(cv::countNonZero(ds->get(5).mask), 0);  // degenerate polygon: empty, returned as is
  const auto crowd = open_dataset("coco:" + kCoco + "/instances.json," + kCoco + "/images,crowd");
  ASSERT_EQ(crowd->size(), 7u);
  EXPECT_EQ(crowd->get(2).id, "a#13");
  EXPECT_TRUE(same_bytes(crowd->get(2).mask, cv::imread(kCoco + "/expected/13.png", cv::IMREAD_GRAYSCALE) / 255));
}

TEST(CocoDataset, BadFilesAreErrors) {
  TempDir t;
  EXPECT_THROW(open_dataset("coco:" + (t / "missing.json") + "," + t.str()), Error);
  test::write_bytes(t / "bad.json", "{not json");
  EXPECT_THROW(open_dataset("coco:" + (t / "bad.json") + "," + t.str()), Error);
  test::write_bytes(t / "odd.json", R"({"images": 3})");
  EXPECT_THROW(open_dataset("coco:" + (t / "odd.json") + "," + t.str()), Error);
  // An annotation whose image file is missing opens, then fails in get().
  test::write_bytes(t / "ok.json",
                    R"({"images":[{"id":1,"file_name":"nope.png","height":4,"width":4}],)"
                    R"("annotations":[{"id":5,"image_id":1,"segmentation":[[0,0,3,0,3,3]]}]})");
  const auto ds = open_dataset("coco:" + (t / "ok.json") + "," + t.str());
  ASSERT_EQ(ds->size(), 1u);
  EXPECT_THROW(ds->get(0), Error);
}

// Issue 37: a repeated image id moved the first image's annotations onto the
// second without a word.
TEST(CocoDataset, DuplicatedImageIdIsRefusedByName) {
  TempDir t;
  write_rgb(t / "a.png", make_rgb(4, 4, 0));
  write_rgb(t / "b.png", make_rgb(4, 4, 1));
  test::write_bytes(t / "dup.json",
                    R"({"images":[{"id":7,"file_name":"a.png","height":4,"width":4},)"
                    R"({"id":7,"file_name":"b.png","height":4,"width":4}],)"
                    R"("annotations":[{"id":5,"image_id":7,"segmentation":[[0,0,3,0,3,3]]}]})");
  try {
    open_dataset("coco:" + (t / "dup.json") + "," + t.str());
    FAIL() << "expected rsam::Error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("image id 7 twice"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

// Issue 37: every picture a dataset reads goes through the one codec, so the
// pixel limit (a decompression bomb's defence) applies to images and masks.
TEST(FolderDataset, ImagesAndMasksObeyThePixelLimit) {
  TempDir t;
  const std::string im = t.mkdir("im"), mk = t.mkdir("mk");
  write_rgb(im + "/a.png", make_rgb(48, 40, 0));
  cv::imwrite(mk + "/a.png", rect_mask(48, 40, {2, 3, 4, 5}));
  const auto ds = open_dataset("folder:" + im + "," + mk);
  ASSERT_EQ(ds->size(), 1u);
  EXPECT_NO_THROW(ds->get(0));
  io::set_max_image_pixels(48 * 40 - 1);
  try {
    ds->get(0);
    ADD_FAILURE() << "expected rsam::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("above the limit"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ds->get_mask(0), Error);
  EXPECT_THROW(read_rgb(im + "/a.png"), Error);
  io::set_max_image_pixels(48 * 40);
  EXPECT_NO_THROW(ds->get(0));
  io::set_max_image_pixels(100'000'000);
}

TEST(Sa1bDataset, CountsAnnotationsAndDecodesRle) {
  TempDir t;
  const cv::Mat m1 = rect_mask(16, 12, {2, 2, 5, 4}, 1), m2 = rect_mask(16, 12, {9, 1, 3, 9}, 1);
  nlohmann::json doc = {{"image", {{"image_id", 1}, {"width", 16}, {"height", 12}, {"file_name", "sa_1.jpg"}}},
                        {"annotations", nlohmann::json::array()}};
  int id = 100;
  for (const cv::Mat* m : {&m1, &m2})
    doc["annotations"].push_back({{"id", id++},
                                  {"segmentation", {{"size", {12, 16}}, {"counts", rle_to_string(rle_encode(*m))}}},
                                  {"area", cv::countNonZero(*m)}});
  write_rgb(t / "sa_1.jpg", make_rgb(16, 12, 0));
  test::write_bytes(t / "sa_1.json", doc.dump());
  write_rgb(t / "sa_2.jpg", make_rgb(16, 12, 1));  // no json: left out
  const auto ds = open_dataset("sa1b:" + t.str());
  ASSERT_EQ(ds->size(), 2u);
  EXPECT_EQ(ds->get(0).id, "sa_1#100");
  EXPECT_TRUE(same_bytes(ds->get(0).mask, m1));
  EXPECT_TRUE(same_bytes(ds->get(1).mask, m2));
}

TEST(OpenDataset, BadSpecsAreOneLineErrors) {
  TempDir t;
  const std::vector<std::string> specs = {"nope:" + t.str(), "folder:" + t.str(), "folder:/no/such,/dir",
                                         "coco:a.json", "paired:a,b", t.str(), "folder:" + t.str() + "," + t.str() + ",x"};
  for (const std::string& spec : specs) {
    try {
      open_dataset(spec);
      ADD_FAILURE() << spec;
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    }
  }
}

}  // namespace
}  // namespace rsam::data
