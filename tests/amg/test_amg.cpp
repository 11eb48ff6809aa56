// The automatic mask generator's pieces: the official helpers' semantics,
// torchvision's NMS tie-breaking, output forms, bad input. The comparison
// with the official generator is test_amg_fidelity.cpp.
#include "amg_test_util.h"

#include <opencv2/imgproc.hpp>

#include <cmath>
#include <random>

#include "error.h"

using namespace rsam;
using namespace rsam::amg;
using namespace rsam::amg::test;

TEST(AmgHelpers, PointGridIsNumpyLinspace) {
  const auto g = build_point_grid(3);
  ASSERT_EQ(g.size(), 9u);
  EXPECT_DOUBLE_EQ(g[0][0], 1.0 / 6);
  EXPECT_DOUBLE_EQ(g[1][0], 0.5);
  EXPECT_DOUBLE_EQ(g[2][0], 5.0 / 6);
  EXPECT_DOUBLE_EQ(g[3][1], 0.5);  // x varies fastest
  EXPECT_DOUBLE_EQ(build_point_grid(1)[0][0], 0.5);
  const auto layers = build_all_layer_point_grids(32, 2, 2);
  EXPECT_EQ(layers[2].size(), 64u);
}

TEST(AmgHelpers, CropBoxesAsOfficial) {
  std::vector<int> layers;
  const auto b = generate_crop_boxes(120, 160, 1, 512.0 / 1500.0, &layers);
  const std::vector<std::array<int64_t, 4>> want = {
      {0, 0, 160, 120}, {0, 0, 100, 80}, {0, 40, 100, 120}, {60, 0, 160, 80}, {60, 40, 160, 120}};
  EXPECT_EQ(b, want);
  EXPECT_EQ(layers, (std::vector<int>{0, 1, 1, 1, 1}));
}

TEST(AmgHelpers, TorchUnstableSortIsReproduced) {
  // batched_nms above 1000 boxes orders ties as torch's CPU sort does.
  std::mt19937 rng(3);
  std::vector<float> v(3000);
  for (auto& x : v) x = float(rng() % 5);
  const auto t = torch::from_blob(v.data(), {int64_t(v.size())}, torch::kFloat32);
  const auto idx = std::get<1>(t.sort(/*dim=*/0, /*descending=*/true));
  const auto mine = torch_sort_descending(v);
  for (size_t i = 0; i < v.size(); ++i) ASSERT_EQ(mine[i], idx[int64_t(i)].item<int64_t>()) << i;
}

TEST(AmgHelpers, NmsKeepsTheFirstOfEqualScores) {
  const std::vector<BoxXYXY> boxes = {{0, 0, 10, 10}, {0, 0, 10, 10}, {50, 50, 60, 60}, {1, 0, 10, 10}};
  const auto keep = nms(boxes, {0.5f, 0.5f, 0.2f, 0.9f}, 0.7);
  EXPECT_EQ(keep, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(nms(boxes, {0.5f, 0.5f, 0.2f, 0.1f}, 0.7), (std::vector<int64_t>{0, 2}));
}

TEST(AmgHelpers, CropMaskRleEqualsPaddedMask) {
  std::mt19937 rng(5);
  for (int t = 0; t < 20; ++t) {
    const int h = 30 + int(rng() % 20), w = 30 + int(rng() % 20);
    const int ch = 1 + int(rng() % h), cw = 1 + int(rng() % w);
    const int y0 = int(rng() % (h - ch + 1)), x0 = int(rng() % (w - cw + 1));
    cv::Mat crop(ch, cw, CV_8UC1);
    for (int i = 0; i < ch * cw; ++i) crop.data[i] = (t % 4 == 0) ? 0 : uint8_t(rng() % 3 == 0);
    cv::Mat full = cv::Mat::zeros(h, w, CV_8UC1);
    crop.copyTo(full(cv::Rect(x0, y0, cw, ch)));
    const auto enc = encode_crop_mask(crop, x0, y0, h, w);
    EXPECT_EQ(enc.rle.counts, data::rle_encode(full).counts);
    EXPECT_EQ(enc.box, mask_to_box(crop));
  }
}

TEST(AmgHelpers, OutputForms) {
  MaskRecord r;
  cv::Mat m = cv::Mat::zeros(4, 5, CV_8UC1);
  m.at<uint8_t>(1, 2) = 1;
  r.rle = data::rle_encode(m);
  r.area = 1;
  r.predicted_iou = 0.5;
  r.point_coords = {2.0, 1.25};
  const auto j = record_json(r, OutputMode::UncompressedRle);
  EXPECT_EQ(j["segmentation"]["size"], nlohmann::json::array({4, 5}));
  const auto back = records_from_json(records_json({r}, OutputMode::CocoRle));
  EXPECT_EQ(back[0].rle.counts, r.rle.counts);
  EXPECT_THROW(record_json(r, OutputMode::BinaryMask), Error);
  const auto csv = metadata_csv({r});
  EXPECT_NE(csv.find("\n0,1,0,0,0,0,2.0,1.25,0.5,0.0,0,0,0,0"), std::string::npos) << csv;
  EXPECT_EQ(csv.back(), '0');  // no trailing newline, as the official file
}

TEST(AmgBadInput, OptionsAreCheckedWithOneLineErrors) {
  auto bad = [](auto edit) {
    AmgOptions o;
    edit(o);
    EXPECT_THROW(check_options(o), Error);
  };
  bad([](AmgOptions& o) { o.points_per_side = 0; });
  bad([](AmgOptions& o) { o.points_per_side.reset(); });
  bad([](AmgOptions& o) { o.point_grids = {{{0.5, 0.5}}}; });  // both given
  bad([](AmgOptions& o) { o.pred_iou_thresh = 1.5; });
  bad([](AmgOptions& o) { o.stability_score_thresh = -0.1; });
  bad([](AmgOptions& o) { o.box_nms_thresh = std::nan(""); });
  bad([](AmgOptions& o) { o.points_per_batch = 0; });
  bad([](AmgOptions& o) { o.crop_n_layers = -1; });
  bad([](AmgOptions& o) { o.points_per_side = 2, o.crop_n_layers = 2, o.crop_n_points_downscale_factor = 2; });
  bad([](AmgOptions& o) {
    o.points_per_side.reset();
    o.point_grids = {{}};
  });
  AmgOptions ok;
  EXPECT_NO_THROW(check_options(ok));
}

TEST(AmgBadInput, EmptyImageIsAnErrorAndNothingSurvivingIsEmpty) {
  EXPECT_THROW(generate(tiny(), Image8(0, 0, 3), AmgOptions{}), Error);
  EXPECT_THROW(generate(tiny(), Image8(4, 4, 1), AmgOptions{}), Error);
  AmgOptions none;
  none.points_per_side = 4;
  none.pred_iou_thresh = 1.0;  // no predicted IoU is above 1
  EXPECT_TRUE(generate(tiny(), read("scene_a.png"), none).empty());
  // A 1x1 image runs as the official one does (every point at its centre).
  Image8 one(1, 1, 3);
  one.data = {120, 30, 200};
  AmgOptions few;
  few.points_per_side = 2;
  for (const auto& r : generate(tiny(), one, few)) EXPECT_LE(r.area, 1);
  // An explicit grid instead of points_per_side.
  AmgOptions grid;
  grid.points_per_side.reset();
  grid.point_grids = {{{0.5, 0.5}, {0.25, 0.75}}};
  grid.pred_iou_thresh = 0.0, grid.stability_score_thresh = 0.0;
  AmgProfile prof;
  generate(tiny(), read("scene_a.png"), grid, &prof);
  EXPECT_EQ(prof.points, 2);
  EXPECT_EQ(prof.decoded, 6);
}

// The official post-processing alone (fixture from postprocess_small_regions).
TEST(AmgPostprocess, EqualsOfficial) {
  const auto& pp = fixture()["postprocess"];
  std::vector<MaskRecord> recs;
  for (size_t i = 0; i < pp["input"].size(); ++i) {
    MaskRecord r;
    r.rle = rle_of(pp["input"][i]);
    r.predicted_iou = double(i);  // carries the input index through
    const auto b = mask_to_box(data::rle_decode(r.rle));
    r.bbox = {b[0], b[1], b[2] - b[0], b[3] - b[1]};
    recs.push_back(r);
  }
  postprocess_small_regions(recs, pp["min_area"].get<int64_t>(), pp["nms_thresh"].get<double>());
  ASSERT_EQ(recs.size(), pp["kept"].size());
  for (size_t i = 0; i < recs.size(); ++i) {
    EXPECT_EQ(int(recs[i].predicted_iou), pp["kept"][i].get<int>()) << "order at " << i;
    EXPECT_EQ(recs[i].rle.counts, rle_of(pp["output"][i]).counts) << "mask " << i;
    const auto& b = pp["output"][i]["bbox_xyxy"];
    EXPECT_EQ(recs[i].bbox, (std::array<int64_t, 4>{b[0], b[1], b[2].get<int64_t>() - b[0].get<int64_t>(),
                                                    b[3].get<int64_t>() - b[1].get<int64_t>()}));
  }
}

