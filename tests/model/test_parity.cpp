// Holds rsam's SAM to the official implementation: every case in
// tests/data/sam/cases.json was produced by the official SamPredictor
// (scripts/make_fixtures.py) on the same checkpoint, image and prompts.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include <fstream>
#include <map>

#include "error.h"
#include "io/npy.h"
#include "model/checkpoint.h"
#include "model/predictor.h"

namespace {

const std::string kData = RSAM_TEST_DATA_DIR "/sam/";

nlohmann::json cases() {
  std::ifstream f(kData + "cases.json");
  return nlohmann::json::parse(f);
}

torch::Tensor npy(const std::string& name) {
  auto a = rsam::io::load_npy(kData + "expected/" + name);
  return torch::from_blob(a.data.data(), a.shape, torch::kFloat32).clone();
}

rsam::Image8 read_png(const std::string& path) {
  cv::Mat m = cv::imread(path, cv::IMREAD_COLOR);
  if (m.empty()) throw std::runtime_error("cannot read " + path);
  cv::cvtColor(m, m, cv::COLOR_BGR2RGB);
  rsam::Image8 img(m.cols, m.rows, 3);
  for (int y = 0; y < m.rows; ++y) std::memcpy(img.row(y), m.ptr(y), size_t(m.cols) * 3);
  return img;
}

double mask_iou(const torch::Tensor& a, const torch::Tensor& b) {
  auto x = a.to(torch::kBool), y = b.to(torch::kBool);
  const double inter = (x & y).sum().item<double>(), uni = (x | y).sum().item<double>();
  return uni == 0 ? 1.0 : inter / uni;
}

rsam::Sam model(const std::string& name) {
  static std::map<std::string, rsam::Sam> cache;
  auto it = cache.find(name);
  if (it == cache.end()) it = cache.emplace(name, rsam::load_sam(kData + name + ".pth").model).first;
  return it->second;
}

double max_abs(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

// The prompt of a fixture case, in original-image coordinates.
rsam::Prompt prompt_of(const nlohmann::json& c) {
  rsam::Prompt p;
  for (const auto& pt : c["points"]) p.points.push_back({pt[0].get<float>(), pt[1].get<float>()});
  p.labels = c["labels"].get<std::vector<int>>();
  if (!c["box"].is_null()) {
    auto b = c["box"].get<std::vector<float>>();
    p.box = std::array<float, 4>{b[0], b[1], b[2], b[3]};
  }
  return p;
}

}  // namespace

TEST(Parity, ResizeMatchesPilBitExactly) {
  for (const char* name : {"square64", "wide64", "down150", "up37"}) {
    auto img = read_png(kData + "images/" + name + ".png");
    auto expected = read_png(kData + "expected/resized_" + name + ".png");
    auto [h, w] = rsam::preprocess_shape(img.height, img.width, 64);
    auto got = rsam::resize_bilinear_pil(img, w, h);
    ASSERT_EQ(got.width, expected.width) << name;
    ASSERT_EQ(got.height, expected.height) << name;
    EXPECT_EQ(got.data, expected.data) << name;
  }
}

TEST(Parity, EveryOfficialCase) {
  torch::set_num_threads(1);
  auto meta = cases();
  std::map<std::string, rsam::SamPredictor> preds;
  int n = 0;
  double worst_emb = 0, worst_low = 0, worst_iou = 0, worst_mask = 1;
  for (const auto& c : meta["cases"]) {
    const std::string key = c["model"].get<std::string>() + "/" + c["image"].get<std::string>();
    SCOPED_TRACE(key + " " + c["prompt"].get<std::string>());
    auto it = preds.find(key);
    if (it == preds.end()) {
      rsam::SamPredictor p(model(c["model"]));
      p.set_image(read_png(kData + "images/" + c["image"].get<std::string>() + ".png"));
      it = preds.emplace(key, std::move(p)).first;
      worst_emb = std::max(worst_emb, max_abs(it->second.embedding(), npy(c["embedding"])));
      EXPECT_LE(max_abs(it->second.embedding(), npy(c["embedding"])), 1e-3);
    }
    const auto& pred = it->second;
    rsam::Prediction r;
    if (c.contains("boxes")) {
      std::vector<torch::Tensor> rows;
      for (const auto& b : c["boxes"]) rows.push_back(torch::tensor(b.get<std::vector<float>>()));
      r = pred.predict_batch({}, {}, torch::stack(rows), {}, c["multimask"]);
    } else {
      rsam::Prompt p = prompt_of(c);
      if (!c["mask_input"].is_null()) p.mask_input = npy(c["mask_input"]);
      r = pred.predict(p, c["multimask"]);
    }
    auto low = npy(c["lowres"]), iou = npy(c["iou"]), masks = npy(c["masks"]);
    ASSERT_EQ(r.low_res_logits.sizes(), low.sizes());
    ASSERT_EQ(r.masks.sizes(), masks.sizes());
    EXPECT_LE(max_abs(r.low_res_logits, low), 1e-3);
    EXPECT_LE(max_abs(r.iou_predictions, iou), 1e-3);
    worst_low = std::max(worst_low, max_abs(r.low_res_logits, low));
    worst_iou = std::max(worst_iou, max_abs(r.iou_predictions, iou));
    const std::string img = c["image"];
    const double need = (img == "square64" || img == "wide64") ? 0.999 : 0.99;
    const auto flat_got = r.masks.reshape({-1, r.masks.size(-2), r.masks.size(-1)});
    const auto flat_exp = masks.reshape({-1, masks.size(-2), masks.size(-1)});
    for (int64_t m = 0; m < flat_got.size(0); ++m) {
      EXPECT_GE(mask_iou(flat_got[m], flat_exp[m]), need) << "mask " << m;
      worst_mask = std::min(worst_mask, mask_iou(flat_got[m], flat_exp[m]));
    }
    ++n;
  }
  std::printf("parity over %d cases: max |d embedding| %.2e, max |d logits| %.2e, max |d iou| %.2e, min mask IoU %.5f\n",
              n, worst_emb, worst_low, worst_iou, worst_mask);
  EXPECT_EQ(n, 48);
}

TEST(Parity, LegacyAndWrappedFilesLoadTheSameWeights) {
  auto ref = rsam::state_dict_of(*model("tiny_b"));
  for (const char* f : {"tiny_b_legacy.pth", "tiny_b_wrapped.pth"}) {
    auto other = rsam::state_dict_of(*rsam::load_sam(kData + f).model);
    ASSERT_EQ(other.size(), ref.size()) << f;
    for (size_t i = 0; i < ref.size(); ++i) {
      EXPECT_EQ(other[i].first, ref[i].first);
      EXPECT_EQ(other[i].second.data, ref[i].second.data) << f << " " << ref[i].first;
    }
  }
}

// Runs every fixture prompt through both precisions.
TEST(Parity, Bf16MasksAgreeWithFp32) {
  auto meta = cases();
  std::map<std::string, std::pair<rsam::SamPredictor, rsam::SamPredictor>> preds;
  double worst = 1.0, sum = 0.0;
  int n = 0;
  for (const auto& c : meta["cases"]) {
    if (c.contains("boxes") || !c["mask_input"].is_null()) continue;
    const std::string key = c["model"].get<std::string>() + "/" + c["image"].get<std::string>();
    auto it = preds.find(key);
    if (it == preds.end()) {
      auto img = read_png(kData + "images/" + c["image"].get<std::string>() + ".png");
      rsam::SamPredictor f32(model(c["model"]), rsam::Precision::FP32), b16(model(c["model"]), rsam::Precision::BF16);
      f32.set_image(img);
      b16.set_image(img);
      it = preds.emplace(key, std::make_pair(std::move(f32), std::move(b16))).first;
    }
    const rsam::Prompt p = prompt_of(c);
    auto a = it->second.first.predict(p, c["multimask"]), b = it->second.second.predict(p, c["multimask"]);
    for (int64_t m = 0; m < a.masks.size(0); ++m) {
      const double iou = mask_iou(a.masks[m], b.masks[m]);
      worst = std::min(worst, iou);
      sum += iou;
      ++n;
    }
  }
  const auto& off = meta["official_bf16_vs_fp32"];
  std::printf("bf16 vs fp32 over %d masks: rsam mean IoU %.4f (worst %.4f); official %.4f (worst %.4f)\n", n,
              sum / n, worst, off["mean_iou"].get<double>(), off["worst_iou"].get<double>());
  // Random-weight tiny models have logits of order 1 around the threshold,
  // so bf16 flips small masks in the official code too (its worst mask here
  // is ~0.38). What rsam must show is agreement no worse than the
  // reference's own bf16 path. The fixture's figure was measured with
  // oneDNN's bf16 kernels (AVX-512); on a CPU without them the official
  // code gets 0.9245 (torch's fallback gemm accumulates in bf16), but rsam
  // avoids that path (bf16_safe_rhs, conv_fp32_on_cpu), so it is held to
  // the better figure on every CPU.
  EXPECT_EQ(n, off["masks"].get<int>());
  EXPECT_GE(sum / n, off["mean_iou"].get<double>() - 0.005);
}
