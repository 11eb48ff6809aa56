// COCO RLE and polygon decoding against pycocotools' own output
// (tests/data/coco, written by scripts/make_data_fixtures.py from maskApi.c).
#include <cmath>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "data/rle.h"
#include "data_test_util.h"
#include "error.h"

namespace rsam::data {
namespace {

using nlohmann::json;
const std::string kDir = RSAM_DATA_FIXTURES;

json load(const std::string& name) {
  std::ifstream in(kDir + "/" + name);
  EXPECT_TRUE(in.good()) << name;
  return json::parse(in);
}

TEST(Rle, RandomPolygonsMatchPycocotoolsBitForBit) {
  const json expected = load("expected.json");
  ASSERT_GE(expected["polygons"].size(), 50u);
  for (const auto& c : expected["polygons"]) {
    const Rle r = rle_from_polygon(c["xy"].get<std::vector<double>>(), c["h"], c["w"]);
    EXPECT_EQ(rle_to_string(r), c["rle"].get<std::string>()) << c.dump();
    EXPECT_EQ(rle_area(r), c["area"].get<uint64_t>());
  }
}

TEST(Rle, CompressedStringsRoundTrip) {
  const json expected = load("expected.json");
  for (const auto& c : expected["strings"]) {
    const Rle r = rle_from_string(c["rle"], c["h"], c["w"]);
    EXPECT_EQ(r.counts, c["counts"].get<std::vector<uint32_t>>());
    EXPECT_EQ(rle_to_string(r), c["rle"].get<std::string>());
    const cv::Mat m = rle_decode(r);
    EXPECT_EQ(rle_encode(m).counts, r.counts);  // encode inverts decode
  }
}

TEST(Rle, AnnotationsDecodeLikeAnnToMask) {
  const json doc = load("instances.json");
  const json expected = load("expected.json");
  std::map<int, std::pair<int, int>> size;
  for (const auto& im : doc["images"]) size[im["id"]] = {im["height"], im["width"]};
  int checked = 0;
  for (const auto& a : doc["annotations"]) {
    const auto [h, w] = size.at(a["image_id"]);
    const cv::Mat mask = decode_segmentation(a["segmentation"], h, w);
    const std::string id = std::to_string(a["id"].get<int>());
    const cv::Mat want = cv::imread(kDir + "/expected/" + id + ".png", cv::IMREAD_GRAYSCALE);
    ASSERT_FALSE(want.empty()) << id;
    EXPECT_TRUE(test::same_bytes(mask, want / 255)) << "annotation " << id;
    EXPECT_EQ(rle_to_string(rle_encode(mask)), expected["annotations"][id]["rle"].get<std::string>()) << id;
    ++checked;
  }
  EXPECT_EQ(checked, 7);
}

TEST(Rle, DecodeIsColumnMajor) {
  // h=2, w=3, counts 1 zero, 2 ones, 3 zeros: walking down column 0 then 1.
  const cv::Mat m = rle_decode({2, 3, {1, 2, 3}});
  const cv::Mat want = (cv::Mat_<uint8_t>(2, 3) << 0, 1, 0,  //
                        1, 0, 0);
  EXPECT_TRUE(test::same_bytes(m, want));
  EXPECT_EQ(rle_encode(want).counts, (std::vector<uint32_t>{1, 2, 3}));
  // A mask starting with an object pixel starts with a zero-length background run.
  const cv::Mat full(2, 2, CV_8UC1, cv::Scalar(1));
  EXPECT_EQ(rle_encode(full).counts, (std::vector<uint32_t>{0, 4}));
}

TEST(Rle, HandCheckedSquarePolygons) {
  // maskApi keeps the pixels whose centre (x, y) lies inside the polygon,
  // left/top edges inclusive and right/bottom exclusive: the square with
  // corners (1,1) and (3,3) holds centres x, y in {1, 2} -> 2x2 pixels.
  EXPECT_EQ(rle_from_polygon({1, 1, 3, 1, 3, 3, 1, 3}, 5, 5).counts, (std::vector<uint32_t>{6, 2, 3, 2, 12}));
  // Shifting by half a pixel moves no centre across an edge: same mask.
  EXPECT_EQ(rle_from_polygon({0.5, 0.5, 2.5, 0.5, 2.5, 2.5, 0.5, 2.5}, 5, 5).counts,
            (std::vector<uint32_t>{6, 2, 3, 2, 12}));
  // The pixel-edge outline of a 5x5 image covers it all.
  EXPECT_EQ(rle_from_polygon({-0.5, -0.5, 4.5, -0.5, 4.5, 4.5, -0.5, 4.5}, 5, 5).counts,
            (std::vector<uint32_t>{0, 25}));
  // [x, y, w, h] box (1, 1, 2, 2) is that first square.
  const double bb[4] = {1, 1, 2, 2};
  EXPECT_EQ(rle_from_bbox(bb, 5, 5).counts, (std::vector<uint32_t>{6, 2, 3, 2, 12}));
}

TEST(Rle, MalformedInputIsAnError) {
  EXPECT_THROW(rle_decode({2, 2, {1, 5}}), Error);                       // more than h*w
  EXPECT_THROW(rle_from_string("0~", 2, 2), Error);                      // '~' outside 48..111
  EXPECT_THROW(rle_from_string("0" "\x60", 2, 2), Error);                // ends inside a count
  EXPECT_THROW(decode_segmentation(json::parse(R"({"size":[3,3],"counts":[9]})"), 4, 4), Error);  // size mismatch
  EXPECT_THROW(decode_segmentation(json::parse(R"({"size":[2,2],"counts":[-1]})"), 2, 2), Error);
  EXPECT_THROW(decode_segmentation(json::parse(R"([])"), 2, 2), Error);
  EXPECT_THROW(decode_segmentation(json::parse(R"([["a",1,2,3,4,5]])"), 2, 2), Error);
  EXPECT_THROW(decode_segmentation(json::parse(R"({"counts":[4]})"), 2, 2), Error);
  EXPECT_THROW(rle_from_polygon({0, 0, 1e9, 0, 0, 5}, 8, 8), Error);  // would walk 5e9 points
  EXPECT_THROW(rle_from_polygon({0, 0, std::nan(""), 0, 0, 5}, 8, 8), Error);
}

}  // namespace
}  // namespace rsam::data
