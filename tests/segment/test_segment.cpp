// segment::run, segment::demo and the model stack they share, on the tiny
// fixture checkpoint (tests/data/sam) and the fixture enhancer
// (tests/data/glesam, made for tiny_a's 32 channels).
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>

#include <filesystem>
#include <fstream>

#include "../common/error_of.h"
#include "adapt/tools.h"
#include "error.h"
#include "io/image_codec.h"
#include "io/npy.h"
#include "segment/demo.h"
#include "segment/segment.h"
#include "segment/stack.h"
#include "train/cv_tensor.h"

namespace fs = std::filesystem;
using namespace rsam;

namespace {

const std::string kData = RSAM_TEST_DATA "/";
const std::string kCkpt = kData + "sam/tiny_a.pth", kImage = kData + "sam/images/square64.png";
const std::string kEnhancer = kData + "glesam/enhancer.json";

std::string fresh_dir(const std::string& name) {
  const auto d = fs::path(::testing::TempDir()) / ("rsam_segment_" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d.string();
}

Image8 image() { return to_image8(io::read_image(kImage, io::ImageRead::Rgb)); }

Prompt point(float x, float y) {
  Prompt p;
  p.points = {{x, y}};
  p.labels = {1};
  return p;
}

}  // namespace

// The run decodes what the predictor decodes, and writes it.
TEST(Segment, RunWritesWhatThePredictorDecodes) {
  const auto d = fresh_dir("run");
  segment::SegmentRun r;
  r.checkpoint = kCkpt;
  r.precision = Precision::FP32;
  r.prompt = point(30, 30);
  r.image.path = kImage;
  r.out.path = d + "/m.png";
  r.logits_out.path = d + "/l.npy";
  const auto j = segment::run(r);
  EXPECT_EQ(j["picked_from"], 3);
  ASSERT_EQ(j["masks"].size(), 1u);

  SamPredictor pred(segment::load_stack(kCkpt).sam, Precision::FP32);
  pred.set_image(image());
  const auto want = pred.predict_one(point(30, 30));
  EXPECT_FLOAT_EQ(j["masks"][0]["score"].get<float>(), want.iou_predictions[0].item<float>());
  const cv::Mat png = cv::imread(r.out.path, cv::IMREAD_UNCHANGED);
  ASSERT_FALSE(png.empty());
  EXPECT_EQ(cv::countNonZero(png), want.masks[0].sum().item<int64_t>());
  EXPECT_EQ(j["masks"][0]["area"].get<int64_t>(), want.masks[0].sum().item<int64_t>());
  const auto logits = io::load_npy(r.logits_out.path);
  EXPECT_EQ(logits.shape, want.low_res_logits.sizes().vec());
}

// A bad argument costs no load: with a checkpoint that does not exist, the
// argument's own error comes first, named as the caller names the file.
TEST(Segment, ArgumentsAreCheckedBeforeTheModelLoads) {
  const auto d = fresh_dir("early");
  segment::SegmentRun r;
  r.checkpoint = d + "/missing.pth";
  r.image = {"--image", kImage};
  r.prompt = point(500, 10);
  EXPECT_NE(rsam::testing::error_of([&] { segment::run(r); }).find("outside the 64x64 image"), std::string::npos);
  r.prompt = point(10, 10);
  r.out = {"--out", kImage};
  EXPECT_NE(rsam::testing::error_of([&] { segment::run(r); }).find("same file as --image"), std::string::npos);
  r.out.path = d + "/m.jpg";
  EXPECT_NE(rsam::testing::error_of([&] { segment::run(r); }).find("losslessly"), std::string::npos);
  r.out.path.clear();
  r.gates_out.path = d + "/g.json";
  EXPECT_EQ(rsam::testing::error_of([&] { segment::run(r); }), "the gate report needs an adapter");
  r.gates_out.path.clear();
  r.masks = segment::MaskChoice::Multi;
  r.refine = 1;
  EXPECT_EQ(rsam::testing::error_of([&] { segment::run(r); }), "refinement gives one mask, not three");
}

// The demo's shared encode: an embedding set through the enhancer decodes
// exactly as the predictor with the enhancer attached.
TEST(Stack, ASharedEncodeDecodesAsTheAttachedEnhancer) {
  const auto plain = segment::load_stack(kCkpt);
  const auto enhanced = segment::load_stack(kCkpt, "", kEnhancer);
  ASSERT_TRUE(enhanced.enhancer);
  EXPECT_EQ(enhanced.describe()["enhancer"]["method"], "glesam");
  SamPredictor encoder = plain.predictor(Precision::FP32), attached = enhanced.predictor(Precision::FP32);
  SamPredictor shared(enhanced.sam, Precision::FP32);
  encoder.set_image(image());
  attached.set_image(image());
  enhanced.set_embedding(shared, encoder);
  EXPECT_TRUE(torch::equal(shared.embedding(), attached.embedding()));
  const auto a = attached.predict(point(30, 30)), b = shared.predict(point(30, 30));
  EXPECT_TRUE(torch::equal(a.low_res_logits, b.low_res_logits));
  EXPECT_TRUE(torch::equal(a.iou_predictions, b.iou_predictions));
  // The enhancement changes what the decoder sees.
  EXPECT_FALSE(torch::equal(shared.embedding(), encoder.embedding()));
}

TEST(Stack, TheAdapterComesBeforeTheEnhancer) {
  const auto d = fresh_dir("order");
  const auto ad = d + "/lora.safetensors";
  adapt::init_adapter_file(kCkpt, "lora", {"the adapter", ad}, 0);
  auto s = segment::load_stack(kCkpt, "", kEnhancer);
  EXPECT_NE(rsam::testing::error_of([&] { s.add_adapter(ad); }).find("before the enhancer"), std::string::npos);
  const auto both = segment::load_stack(kCkpt, ad, kEnhancer);
  EXPECT_EQ(both.describe()["adapter"], "lora");
}

// Four methods over every condition, means in [0, 1] over every prompted
// object, one picture: a row per condition (ground truth + one tile per
// method) and the table of means beneath.
TEST(Demo, MeansOverScenesForEveryMethodAndCondition) {
  const auto d = fresh_dir("demo");
  const auto ad = d + "/lora.safetensors";
  adapt::init_adapter_file(kCkpt, "lora", {"the adapter", ad}, 0);
  segment::DemoOptions o;
  o.checkpoint = kCkpt;
  o.adapter = ad;
  o.enhancer = kEnhancer;
  o.corruptions = {"fog", "gauss_noise", "fog"};  // a repeat counts once
  o.scenes = 2;
  o.objects = 2;
  o.size = 64;
  o.out.path = d + "/demo.png";
  const auto j = segment::demo(o);
  EXPECT_EQ(j["methods"], nlohmann::json({"base", "lora", "glesam", "lora+glesam"}));
  EXPECT_EQ(j["conditions"], nlohmann::json({"clean", "fog", "gauss_noise"}));
  EXPECT_EQ(j["scenes"], 2);
  EXPECT_GE(j["objects"].get<int>(), 2);
  EXPECT_LE(j["objects"].get<int>(), 4);
  for (const auto& m : j["methods"])
    for (const auto& c : j["conditions"]) {
      const double v = j["mean_iou"][m.get<std::string>()][c.get<std::string>()];
      EXPECT_GE(v, 0.0);
      EXPECT_LE(v, 1.0);
    }
  // An identity LoRA leaves the masks as they were.
  EXPECT_EQ(j["mean_iou"]["base"], j["mean_iou"]["lora"]);
  EXPECT_EQ(j["mean_iou"]["glesam"], j["mean_iou"]["lora+glesam"]);
  const cv::Mat pic = cv::imread(o.out.path, cv::IMREAD_COLOR);
  ASSERT_FALSE(pic.empty());
  // caption_tile enlarges a 64-pixel scene 6 times and adds a 28-pixel
  // caption; the table has a header and a row per method.
  EXPECT_EQ(pic.cols, 5 * 6 * 64);
  EXPECT_EQ(pic.rows, 3 * (6 * 64 + 28) + 5 * 30 + 8);
}

// What the options alone decide is refused before the model loads.
TEST(Demo, BadOptionsAreRefusedBeforeTheModelLoads) {
  const auto d = fresh_dir("demo_bad");
  segment::DemoOptions o;
  o.checkpoint = d + "/missing.pth";
  o.adapter = d + "/missing.safetensors";
  o.out.path = d + "/demo.png";
  o.corruptions = {"nonesuch"};
  EXPECT_NE(rsam::testing::error_of([&] { segment::demo(o); }).find("nonesuch"), std::string::npos);
  o.corruptions = {"fog"};
  o.out.path = d + "/nowhere/demo.png";
  EXPECT_NE(rsam::testing::error_of([&] { segment::demo(o); }).find("does not exist"), std::string::npos);
  o.out.path = d + "/demo.png";
  o.adapter.clear();
  EXPECT_NE(rsam::testing::error_of([&] { segment::demo(o); }).find("an adapter or an enhancer"), std::string::npos);
}
