// The automatic mask generator against the official one: fixtures from
// SamAutomaticMaskGenerator on rsam-tiny (scripts/make_amg_fixtures.py).
// Every case decodes hundreds of points, as the official code does, so these
// run as `slow`.
#include "amg_test_util.h"

using namespace rsam;
using namespace rsam::amg;
using namespace rsam::amg::test;

namespace {

void expect_matches_official(const std::string& name) {
  for (const auto& c : fixture()["cases"]) {
    if (c["name"] != name) continue;
    AmgProfile prof;
    const auto got = generate(tiny(), read(c["image"]), options_of(c["options"]), &prof);
    const auto& want = c["records"];
    ASSERT_GT(want.size(), 0u) << "a fixture without masks tests nothing";
    ASSERT_EQ(got.size(), want.size()) << name;
    for (size_t i = 0; i < got.size(); ++i) {
      const auto& w = want[i];
      // Same order: record i against official record i.
      EXPECT_GE(iou(record_mask(got[i]), data::rle_decode(rle_of(w))), 0.99) << name << " mask " << i;
      EXPECT_NEAR(got[i].predicted_iou, w["predicted_iou"].get<double>(), 1e-3) << name << " mask " << i;
      EXPECT_NEAR(got[i].stability_score, w["stability_score"].get<double>(), 1e-3) << name << " mask " << i;
      EXPECT_NEAR(got[i].point_coords[0], w["point_coords"][0].get<double>(), 1e-9) << name << " mask " << i;
      EXPECT_NEAR(got[i].point_coords[1], w["point_coords"][1].get<double>(), 1e-9) << name << " mask " << i;
      EXPECT_EQ(got[i].crop_box, (w["crop_box"].get<std::array<int64_t, 4>>())) << name << " mask " << i;
      for (int k = 0; k < 4; ++k) EXPECT_NEAR(got[i].bbox[k], w["bbox"][k].get<int64_t>(), 2) << name << " mask " << i;
      EXPECT_NEAR(double(got[i].area), w["area"].get<double>(), 0.01 * w["area"].get<double>() + 1) << name;
    }
  }
}

}  // namespace

TEST(AmgFidelity, DefaultsSceneA) { expect_matches_official("defaults_a"); }
TEST(AmgFidelity, DefaultsSceneB) { expect_matches_official("defaults_b"); }
TEST(AmgFidelity, LooseThresholdsSceneA) { expect_matches_official("loose_a"); }
TEST(AmgFidelity, OneCropLayer) { expect_matches_official("crops_a"); }
TEST(AmgFidelity, MinRegionArea) { expect_matches_official("min_area_b"); }
