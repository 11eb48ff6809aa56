// `rsam segment/eval --enhancer` and GleSAM in --compare lists (issue 40),
// on the tiny test SAM (tests/data/sam/tiny_a.pth, 32-channel embeddings)
// and the miniature enhancer of tests/data/glesam (a 4-channel U-Net
// widened by CRE to 32 channels).
#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "io/npy.h"

using namespace rsam::cli_test;

namespace {

const std::string kEnh = RSAM_TEST_DATA_DIR "/glesam/enhancer.json";

std::string make_scenes(const std::string& name, int n) {
  const std::string dir = ::testing::TempDir() + "rsam_glesam_scenes_" + name;
  std::system(("rm -rf " + dir + " && mkdir -p " + dir + "/images " + dir + "/masks").c_str());
  for (int i = 0; i < n; ++i) {
    cv::Mat img(56, 64, CV_8UC3, cv::Scalar(90, 80, 70)), mask = cv::Mat::zeros(56, 64, CV_8UC1);
    cv::randu(img, cv::Scalar(50, 50, 50), cv::Scalar(130, 130, 130));
    const cv::Point c(20 + 3 * i, 18 + 2 * i);
    cv::circle(img, c, 8 + i % 5, cv::Scalar(30, 210, 240), cv::FILLED);
    cv::circle(mask, c, 8 + i % 5, cv::Scalar(255), cv::FILLED);
    cv::imwrite(dir + "/images/s" + std::to_string(i) + ".png", img);
    cv::imwrite(dir + "/masks/s" + std::to_string(i) + ".png", mask);
  }
  return "folder:" + dir + "/images," + dir + "/masks";
}

double max_abs_diff(const rsam::io::NpyArray& a, const rsam::io::NpyArray& b) {
  double m = 0;
  for (size_t i = 0; i < a.data.size(); ++i) m = std::max(m, double(std::abs(a.data[i] - b.data[i])));
  return m;
}

}  // namespace

TEST(GlesamCli, SegmentWithEnhancerWritesTheEnhancedEmbedding) {
  const std::string seg = "segment --checkpoint " + kData + "tiny_a.pth --image " + kData +
                          "images/square64.png --point 30,30 --json --threads 1";
  const auto plain_emb = tmp("glesam_plain.npy"), enh_emb = tmp("glesam_enh.npy"), bf_emb = tmp("glesam_bf.npy");
  auto plain = run(seg + " --embedding-out " + plain_emb);
  ASSERT_EQ(plain.code, 0) << plain.err;
  auto enh = run(seg + " --enhancer " + kEnh + " --embedding-out " + enh_emb);
  ASSERT_EQ(enh.code, 0) << enh.err;
  const auto j = nlohmann::json::parse(enh.out);
  EXPECT_EQ(j["enhancer"]["method"], "glesam");
  EXPECT_EQ(j["enhancer"]["gamma"], 5.0);
  EXPECT_EQ(j["enhancer"]["timestep"], 1);
  const auto p = rsam::io::load_npy(plain_emb), e = rsam::io::load_npy(enh_emb);
  ASSERT_EQ(e.shape, (std::vector<int64_t>{1, 32, 8, 8}));
  // Enhanced, and not beyond what one step at t = 1 can move it.
  const double d = max_abs_diff(p, e);
  EXPECT_GT(d, 1e-4);
  EXPECT_LT(d, 1.0);
  // The fine-tuned decoder and the enhanced embedding change the masks.
  EXPECT_NE(j["masks"], nlohmann::json::parse(plain.out)["masks"]);
  // bf16: close to fp32.
  auto bf = run(seg + " --enhancer " + kEnh + " --precision bf16 --embedding-out " + bf_emb);
  ASSERT_EQ(bf.code, 0) << bf.err;
  EXPECT_LT(max_abs_diff(rsam::io::load_npy(bf_emb), e), 0.2);
}

TEST(GlesamCli, SegmentWithAdapterAndEnhancerComposes) {
  const auto ad = tmp("glesam_gara.safetensors"), cfg = tmp("glesam_gara.json");
  std::ofstream(cfg) << R"({"method": "gara", "r_low": 2, "r_high": 6, "gate_hidden": 8})";
  auto init = run("adapter init --checkpoint " + kData + "tiny_a.pth --adapter " + cfg + " --out " + ad);
  ASSERT_EQ(init.code, 0) << init.err;
  const std::string seg = "segment --checkpoint " + kData + "tiny_a.pth --image " + kData +
                          "images/square64.png --point 30,30 --json --threads 1 --enhancer " + kEnh;
  auto enh = run(seg);
  ASSERT_EQ(enh.code, 0) << enh.err;
  auto both = run(seg + " --adapter " + ad);
  ASSERT_EQ(both.code, 0) << both.err;
  const auto j = nlohmann::json::parse(both.out);
  EXPECT_EQ(j["adapter"], "gara");
  EXPECT_EQ(j["enhancer"]["method"], "glesam");
  // A fresh adapter is the identity, so the composition equals the enhancer alone.
  EXPECT_EQ(j["masks"], nlohmann::json::parse(enh.out)["masks"]);
}

TEST(GlesamCli, BadEnhancersAreOneLineErrors) {
  const std::string seg = "segment --checkpoint " + kData + "tiny_a.pth --image " + kData +
                          "images/square64.png --point 30,30 --threads 1 --enhancer ";
  const auto bad = tmp("glesam_bad.json"), far = tmp("glesam_t.json");
  std::ofstream(bad) << R"({"method": "glesam", "sd": "x", "gama": 5})";
  expect_one_line_error(run(seg + bad), "unknown key \"gama\"");
  std::ofstream(far) << R"({"method": "glesam", "sd": ")" << RSAM_TEST_DATA_DIR << R"(/glesam/sd", "timestep": 1000})";
  expect_one_line_error(run(seg + far), "out of range");
  expect_one_line_error(run(seg + tmp("glesam_none.json")), "glesam_none.json");
  expect_one_line_error(run(seg + kData + "tiny_a.pth"), "--enhancer expects");
  // tiny_b has 32-channel embeddings too (the U-Net fits) but another
  // decoder shape: the enhancer's fine-tuned decoder is refused.
  expect_one_line_error(run("segment --checkpoint " + kData + "tiny_b.pth --image " + kData +
                            "images/square64.png --point 30,30 --threads 1 --enhancer " + kEnh),
                        "mask decoder");
  // The embedding must not be written onto the enhancer.
  const auto copy = tmp("glesam_copy.json");
  std::system(("cp " + kEnh + " " + copy).c_str());
  expect_one_line_error(run(seg + copy + " --embedding-out " + copy), "enhancer");
}

TEST(GlesamCli, EvalPutsTheEnhancerInTheSameReport) {
  const auto data = make_scenes("eval", 3);
  const auto dir = tmp("glesam_eval");
  std::system(("rm -rf " + dir).c_str());
  auto r = run("eval --checkpoint " + kData + "tiny_a.pth --data " + data + " --compare none," + kEnh +
               " --corruption clean,fog --prompts box --threads 1 --quiet --report " + dir);
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string md = slurp(dir + "/report.md");
  EXPECT_NE(md.find("enhancer"), std::string::npos) << md;
  const auto csv = slurp(dir + "/records.csv");
  EXPECT_NE(csv.find("enhancer"), std::string::npos);
  EXPECT_NE(csv.find("sam"), std::string::npos);
  // --enhancer alone is the same method as in the list; compare pairs them.
  const auto one = tmp("glesam_eval_one");
  std::system(("rm -rf " + one).c_str());
  auto e = run("eval --checkpoint " + kData + "tiny_a.pth --data " + data + " --enhancer " + kEnh +
               " --corruption clean,fog --prompts box --threads 1 --quiet --report " + one);
  ASSERT_EQ(e.code, 0) << e.err;
  auto cmp = run("compare " + dir + " " + one + " --base-method sam --json");
  ASSERT_EQ(cmp.code, 0) << cmp.err;
  const auto j = nlohmann::json::parse(cmp.out);
  ASSERT_EQ(j["rows"].size(), 2u);
  for (const auto& row : j["rows"]) EXPECT_EQ(row["n"].get<int>(), 3) << row.dump();
  // Same method, same objects: the enhancer's scores in both reports agree.
  auto same = run("compare " + dir + " " + one + " --base-method enhancer --json");
  ASSERT_EQ(same.code, 0) << same.err;
  for (const auto& row : nlohmann::json::parse(same.out)["rows"]) EXPECT_EQ(row["diff"].get<double>(), 0.0);
  expect_one_line_error(run("eval --checkpoint " + kData + "tiny_a.pth --data " + data + " --enhancer " + kEnh +
                            " --compare none --quiet"),
                        "not both");
}

// ---- training (rsam train --enhancer) ------------------------------------------

#include <signal.h>

#include "io/tensor_file.h"

namespace {

// An enhancer with the fixture's SD folder and no LoRA/decoder: stage 1's start.
std::string bare_enhancer(const std::string& name) {
  const auto path = tmp(name + ".json");
  std::ofstream(path) << R"({"method": "glesam", "sd": ")" << RSAM_TEST_DATA_DIR << R"(/glesam/sd", "gamma": 5})";
  return path;
}

bool all_zero(const rsam::io::TensorData& t) {
  for (uint8_t b : t.data)
    if (b != 0) return false;
  return true;
}

}  // namespace

TEST(GlesamTrain, Stage1TrainsOnlyTheUNetLora) {
  const auto data = make_scenes("stage1", 4);
  const auto out = tmp("glesam_stage1");
  std::system(("rm -rf " + out).c_str());
  auto r = run("train --checkpoint " + kData + "tiny_a.pth --data " + data + " --enhancer " +
               bare_enhancer("stage1") + " --glesam-stage unet --lora-rank 2 --lora-alpha 2 --corruption gauss_noise"
               " --steps 3 --batch 2 --lr 1e-3 --threads 1 --workers 0 --quiet --out " + out);
  ASSERT_EQ(r.code, 0) << r.err;
  // The LoRA file holds the U-Net's LoRA and nothing else: 130 modules x (A, B).
  const auto lora = rsam::io::load_safetensors(out + "/lora.safetensors");
  EXPECT_EQ(lora.tensors.size(), 260u);
  int moved_b = 0;
  for (const auto& [k, t] : lora.tensors) {
    EXPECT_EQ(k.rfind("unet.", 0), 0u) << k;
    EXPECT_TRUE(k.find(".lora_A.") != std::string::npos || k.find(".lora_B.") != std::string::npos) << k;
    if (k.find(".lora_B.") != std::string::npos && !all_zero(t)) ++moved_b;  // B starts at zero
  }
  EXPECT_GT(moved_b, 100);
  EXPECT_FALSE(std::ifstream(out + "/decoder.safetensors").good());  // the decoder is not stage 1's
  // The written enhancer uses the LoRA, and segment runs with it.
  const auto e = nlohmann::json::parse(slurp(out + "/enhancer.json"));
  EXPECT_EQ(e["lora"], "lora.safetensors");
  EXPECT_EQ(e["gamma"], 5.0);
  EXPECT_FALSE(e.contains("decoder"));
  int lines_n = lines(slurp(out + "/metrics.jsonl"));
  EXPECT_EQ(lines_n, 3);
  auto seg = run("segment --checkpoint " + kData + "tiny_a.pth --image " + kData +
                 "images/square64.png --point 30,30 --threads 1 --enhancer " + out + "/enhancer.json");
  EXPECT_EQ(seg.code, 0) << seg.err;
  // A LoRA already in the enhancer is refused for stage 1.
  expect_one_line_error(run("train --checkpoint " + kData + "tiny_a.pth --data " + data + " --enhancer " + kEnh +
                            " --glesam-stage unet --steps 1 --quiet --out " + tmp("glesam_s1bad")),
                        "fresh LoRA");
}

TEST(GlesamTrain, Stage2TrainsTheDecoderButItsIouHead) {
  const auto data = make_scenes("stage2", 4);
  const auto out = tmp("glesam_stage2");
  std::system(("rm -rf " + out).c_str());
  auto r = run("train --checkpoint " + kData + "tiny_a.pth --data " + data + " --enhancer " + kEnh +
               " --glesam-stage decoder --prompts points:3 --corruption gauss_noise --steps 2 --batch 2 --lr 1e-3"
               " --threads 1 --workers 0 --quiet --out " + out);
  ASSERT_EQ(r.code, 0) << r.err;
  // Against the decoder it started from (the enhancer's ft-decoder.pth).
  const auto before = rsam::io::load_pth(RSAM_TEST_DATA_DIR "/glesam/ft-decoder.pth");
  const auto after = rsam::io::load_safetensors(out + "/decoder.safetensors").tensors;
  ASSERT_EQ(after.size(), before.size());
  int changed = 0, iou = 0;
  for (size_t i = 0; i < after.size(); ++i) {
    const auto& [k, t] = after[i];
    const auto it = std::find_if(before.begin(), before.end(), [&](const auto& kv) { return kv.first == k; });
    ASSERT_NE(it, before.end()) << k;
    const bool same = it->second.data == t.data;
    if (k.find("iou") != std::string::npos) {
      ++iou;
      EXPECT_TRUE(same) << k << " (the IoU token and head stay frozen)";
    } else {
      changed += !same;
    }
  }
  EXPECT_GT(iou, 0);
  EXPECT_GT(changed, int(after.size()) / 2);
  // The written enhancer keeps the LoRA it was given and adds the decoder.
  const auto e = nlohmann::json::parse(slurp(out + "/enhancer.json"));
  EXPECT_EQ(e["decoder"], "decoder.safetensors");
  EXPECT_NE(e["lora"].get<std::string>().find("pytorch_lora_weights.safetensors"), std::string::npos);
  EXPECT_FALSE(std::ifstream(out + "/lora.safetensors").good());
}

TEST(GlesamTrain, KilledAndResumedEndsWithTheSameWeights) {
  const auto data = make_scenes("resume", 6);
  const std::string common = "train --checkpoint " + kData + "tiny_a.pth --data " + data + " --enhancer " +
                             bare_enhancer("resume") +
                             " --glesam-stage unet --lora-rank 2 --corruption gauss_noise,fog --severity random"
                             " --steps 150 --save-every 3 --batch 2 --lr 1e-3 --threads 1 --workers 1 --quiet";
  const std::string ref_dir = tmp("glesam_resume_ref"), kill_dir = tmp("glesam_resume_kill");
  std::system(("rm -rf " + ref_dir + " " + kill_dir).c_str());
  auto ref = run(common + " --out " + ref_dir);
  ASSERT_EQ(ref.code, 0) << ref.err;
  kill_after_first_checkpoint(common, kill_dir);
  if (::testing::Test::HasFatalFailure()) return;
  EXPECT_LT(lines(slurp(kill_dir + "/metrics.jsonl")), 150);
  auto resumed = run(common + " --out " + kill_dir + " --resume");
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_EQ(slurp(ref_dir + "/lora.safetensors"), slurp(kill_dir + "/lora.safetensors"));
  EXPECT_EQ(slurp(ref_dir + "/metrics.jsonl"), slurp(kill_dir + "/metrics.jsonl"));
  // Another run's options into the same folder are refused.
  expect_one_line_error(run(common + " --out " + kill_dir + " --resume --lora-alpha 4"), "other options");
}
