// End-to-end tests of the `rsam` binary: the CLI contract (flags, outputs,
// JSON), and that bad input ends in one line on stderr and a non-zero exit.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "cli_util.h"
#include "io/npy.h"
#include "io/tensor_file.h"

using namespace rsam::cli_test;

TEST(Cli, SegmentWritesEveryOutput) {
  const auto mask = tmp("mask.png"), overlay = tmp("overlay.png"), logits = tmp("logits.npy"), emb = tmp("emb.npy");
  auto r = run("segment --checkpoint " + kData + "tiny_a.pth --image " + kData +
               "images/down150.png --point 60,40 --point 100,70,0 --multimask --threads 1 --json --out " + mask +
               " --overlay " + overlay + " --logits-out " + logits + " --embedding-out " + emb);
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["masks"].size(), 3u);
  EXPECT_TRUE(j["masks"][0].contains("score"));
  EXPECT_TRUE(j["masks"][0].contains("area"));
  EXPECT_TRUE(j["timings_ms"].contains("encode"));
  cv::Mat m = cv::imread(mask, cv::IMREAD_UNCHANGED);
  ASSERT_FALSE(m.empty());
  EXPECT_EQ(m.cols, 150);
  EXPECT_EQ(m.rows, 97);
  EXPECT_EQ(m.channels(), 1);
  EXPECT_EQ(cv::countNonZero(m), j["masks"][j["best"].get<int>()]["area"].get<int>());
  cv::Mat o = cv::imread(overlay, cv::IMREAD_COLOR);
  EXPECT_EQ(o.cols, 150);
  auto l = rsam::io::load_npy(logits);
  EXPECT_EQ(l.shape, (std::vector<int64_t>{3, 32, 32}));
  auto e = rsam::io::load_npy(emb);
  EXPECT_EQ(e.shape, (std::vector<int64_t>{1, 32, 8, 8}));
}

TEST(Cli, BenchSizesBothThreadPoolsAndWaitsPassively) {
  // --threads must bound OpenBLAS's pool too, and long commands re-execute
  // themselves with passive OpenMP waiting unless the user set a policy.
  for (int threads : {1, 2}) {
    auto r = run("bench --checkpoint " + kData + "tiny_a.pth --repeat 1 --decode-repeat 1 --json --threads " +
                 std::to_string(threads));
    ASSERT_EQ(r.code, 0) << r.err;
    auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["threads"], threads);
    EXPECT_EQ(j["blas_threads"], threads) << "is torch's BLAS OpenBLAS (libopenblas0-pthread)?";
    if (!std::getenv("OMP_WAIT_POLICY")) {
      EXPECT_EQ(j["omp_wait_policy"], "passive");
    }
  }
  auto active = run("bench --checkpoint " + kData + "tiny_a.pth --repeat 1 --decode-repeat 1 --json --threads 1",
                    "OMP_WAIT_POLICY=ACTIVE ");
  ASSERT_EQ(active.code, 0) << active.err;
  EXPECT_EQ(nlohmann::json::parse(active.out)["omp_wait_policy"], "default");
}

TEST(Cli, MaskInputAndBoxAreAccepted) {
  auto r =
      run("segment --checkpoint " + kData + "tiny_b.pth --image " + kData + "images/square64.png --box 5,5,40,50 " +
          "--mask-input " + kData + "expected/tiny_b_square64_mask_input_mask_in.npy --json --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["masks"].size(), 1u);
}

TEST(Cli, InfoAndConvertRoundTrip) {
  auto info = run("info " + kData + "tiny_a.pth --json");
  ASSERT_EQ(info.code, 0) << info.err;
  auto j = nlohmann::json::parse(info.out);
  EXPECT_EQ(j["model"], "custom");
  EXPECT_EQ(j["tensors"][0]["name"], "image_encoder.pos_embed");
  const auto st = tmp("conv.safetensors"), back = tmp("back.pth");
  ASSERT_EQ(run("convert " + kData + "tiny_a_legacy.pth " + st).code, 0);
  ASSERT_EQ(run("convert " + st + " " + back).code, 0);
  // The same mask from all three files.
  const std::string args = " --image " + kData + "images/up37.png --point 20,25 --json --threads 1";
  auto a = nlohmann::json::parse(run("segment --checkpoint " + kData + "tiny_a.pth" + args).out);
  auto b = nlohmann::json::parse(run("segment --checkpoint " + st + args).out);
  auto c = nlohmann::json::parse(run("segment --checkpoint " + back + args).out);
  EXPECT_EQ(a["masks"], b["masks"]);
  EXPECT_EQ(a["masks"], c["masks"]);
  // --img-size re-sizes the input: the config follows, and the model segments.
  const auto big = tmp("big.safetensors");
  ASSERT_EQ(run("convert " + st + " " + big + " --img-size 96").code, 0);
  auto bi = nlohmann::json::parse(run("info " + big + " --json").out);
  EXPECT_EQ(bi["config"]["img_size"], 96) << bi.dump();
  EXPECT_EQ(run("segment --checkpoint " + big + args).code, 0);
  // An adapter follows the re-size with --adapter; the original no longer fits.
  const auto ad = tmp("conv_gara.safetensors"), ad_big = tmp("conv_gara_big.safetensors");
  ASSERT_EQ(run("adapter init --checkpoint " + st + " --adapter gara --out " + ad).code, 0);
  auto moved = run("convert " + st + " " + big + " --img-size 96 --adapter " + ad + " --adapter-out " + ad_big);
  ASSERT_EQ(moved.code, 0) << moved.err;
  EXPECT_EQ(run("segment --checkpoint " + big + args + " --adapter " + ad_big).code, 0);
  auto refused = run("segment --checkpoint " + big + args + " --adapter " + ad);
  EXPECT_EQ(refused.code, 1);
  EXPECT_NE(refused.err.find("different base"), std::string::npos) << refused.err;
  EXPECT_NE(run("convert " + st + " " + big + " --adapter " + ad + " --adapter-out " + ad_big).code, 0)
      << "an adapter is carried over a re-size only";
  // --decoder-width widens the decoder without changing the mask.
  const auto wide = tmp("wide.safetensors");
  ASSERT_EQ(run("convert " + st + " " + wide + " --decoder-width 64").code, 0);
  auto wi = nlohmann::json::parse(run("info " + wide + " --json").out);
  EXPECT_EQ(wi["config"]["prompt_embed_dim"], 64) << wi.dump();
  auto w = nlohmann::json::parse(run("segment --checkpoint " + wide + args).out);
  ASSERT_EQ(w["masks"].size(), a["masks"].size()) << w.dump();
  EXPECT_EQ(w["masks"][0]["area"], a["masks"][0]["area"]);
  EXPECT_NEAR(w["masks"][0]["score"].get<double>(), a["masks"][0]["score"].get<double>(), 1e-4);
}

TEST(Cli, BadInputIsOneLineAndNonZero) {
  const std::string ck = " --checkpoint " + kData + "tiny_a.pth";
  const std::string img = " --image " + kData + "images/square64.png";
  const auto garbage = tmp("garbage.png");
  std::ofstream(garbage) << "not an image";
  // The test image re-encoded and cut to 3/4: libjpeg would pad the JPEG with
  // grey and succeed, libpng would print its own line before ours.
  const cv::Mat square = cv::imread(kData + "images/square64.png");
  ASSERT_FALSE(square.empty());
  for (const std::string ext : {".png", ".jpg"}) {
    std::vector<uchar> buf;
    ASSERT_TRUE(cv::imencode(ext, square, buf));
    const auto cut = tmp("cut" + ext);
    std::ofstream(cut, std::ios::binary).write(reinterpret_cast<const char*>(buf.data()), long(buf.size() * 3 / 4));
  }
  const std::vector<std::string> cases = {
      "segment" + ck + img + " --point 500,10",                        // outside the image
      "segment" + ck + img + " --point nan,10",                        // NaN
      "segment" + ck + img + " --point 10",                            // malformed
      "segment" + ck + img + " --point 10,10,3",                       // bad label
      "segment" + ck + img + " --box 30,30,10,10",                     // inverted box
      "segment" + ck + img,                                            // no prompt
      "segment" + ck + " --image /nonexistent.png --point 1,1",        // missing image
      "segment" + ck + " --image " + garbage + " --point 1,1",         // corrupt image
      "segment" + ck + " --image " + tmp("cut.png") + " --point 1,1",  // truncated PNG
      "segment" + ck + " --image " + tmp("cut.jpg") + " --point 1,1",  // truncated JPEG
      "segment --checkpoint /nonexistent.pth" + img + " --point 1,1",  // missing checkpoint
      "segment --checkpoint " + garbage + img + " --point 1,1",        // corrupt checkpoint
      "segment" + ck + img + " --point 1,1 --mask-input " + kData + "expected/tiny_a_square64_embedding.npy",
      "info " + garbage,
      "convert " + kData + "tiny_a.pth " + tmp("odd.safetensors") + " --img-size 100",  // not a multiple of the patch
      "convert " + kData + "tiny_a.pth " + tmp("odd.safetensors") + " --decoder-width 40",  // not a multiple of 32
  };
  for (const auto& c : cases) {
    auto r = run(c);
    EXPECT_NE(r.code, 0) << c;
    EXPECT_LT(r.code, 128) << "crashed: " << c;
    EXPECT_EQ(lines(r.err), 1) << c << "\n" << r.err;
    EXPECT_EQ(r.err.rfind("rsam: error: ", 0), 0u) << r.err;
  }
  EXPECT_NE(run("segment" + ck + " --image " + tmp("cut.jpg") + " --point 1,1").err.find("truncated JPEG"),
            std::string::npos);
  // A bad cache setting is caught before any command runs.
  for (const std::string v : {"abc", "-1", "2x", "''"}) {
    auto r = run("info " + kData + "tiny_a.pth", "RSAM_CPU_CACHE=" + v + " ");
    EXPECT_EQ(r.code, 1) << v;
    EXPECT_EQ(lines(r.err), 1) << v << "\n" << r.err;
    EXPECT_NE(r.err.find("RSAM_CPU_CACHE"), std::string::npos) << r.err;
  }
  EXPECT_EQ(run("info " + kData + "tiny_a.pth", "RSAM_CPU_CACHE=0.5 ").code, 0);
}

TEST(Cli, UsageErrorsExitTwoAndHelpZero) {
  for (const char* c : {"", "segment --point 1,1", "segment --image a.png --no-such-option", "bench --threads x",
                        "eval --refine 11 --checkpoint a --data b", "frobnicate"})
    EXPECT_EQ(run(c).code, 2) << c;
  EXPECT_EQ(run("--help").code, 0);
  EXPECT_EQ(run("segment --help").code, 0);
  EXPECT_EQ(run("--version").code, 0);
}

TEST(Cli, OutputsAreWrittenAtomically) {
  // A failing run must not leave a partial file behind under the final name.
  const auto out = tmp("never.png");
  std::remove(out.c_str());
  auto r = run("segment --checkpoint " + kData + "tiny_a.pth --image " + kData +
               "images/square64.png --point 999,1 --out " + out);
  EXPECT_NE(r.code, 0);
  EXPECT_FALSE(std::ifstream(out).good());
}

TEST(Cli, AdapterInitInfoSegmentAndGates) {
  const auto ad = tmp("gara.safetensors"), cfg = tmp("gara.json"), gates = tmp("gates.json");
  std::ofstream(cfg) << R"({"method": "gara", "r_low": 2, "r_high": 6, "gate_hidden": 8})";
  auto init = run("adapter init --checkpoint " + kData + "tiny_a.pth --adapter " + cfg + " --out " + ad);
  ASSERT_EQ(init.code, 0) << init.err;
  auto info = run("adapter info " + ad + " --json");
  ASSERT_EQ(info.code, 0) << info.err;
  auto j = nlohmann::json::parse(info.out);
  EXPECT_EQ(j["method"], "gara");
  EXPECT_GT(j["parameters"].get<int64_t>(), 0);
  EXPECT_GT(j["percent_of_base"].get<double>(), 0.0);
  const std::string seg = "segment --checkpoint " + kData + "tiny_a.pth --image " + kData +
                          "images/square64.png --point 30,30 --json --threads 1";
  auto plain = nlohmann::json::parse(run(seg).out);
  auto adapted = run(seg + " --adapter " + ad + " --gates-out " + gates);
  ASSERT_EQ(adapted.code, 0) << adapted.err;
  // A fresh adapter is the identity.
  EXPECT_EQ(nlohmann::json::parse(adapted.out)["masks"], plain["masks"]);
  std::ifstream gf(gates);
  auto g = nlohmann::json::parse(gf);
  EXPECT_EQ(g.size(), 2u);  // two blocks' qkv
  EXPECT_TRUE(cv::imread(tmp("gates.png")).data != nullptr);
  // An adapter made for another base is refused.
  auto other = run("segment --checkpoint " + kData + "tiny_b.pth --image " + kData +
                   "images/square64.png --point 30,30 --adapter " + ad);
  EXPECT_EQ(other.code, 1);
  EXPECT_NE(other.err.find("different base"), std::string::npos) << other.err;
}

TEST(Cli, AdapterMergeMatchesAdapted) {
  const auto ad = tmp("lora.safetensors"), merged = tmp("merged.safetensors");
  ASSERT_EQ(run("adapter init --checkpoint " + kData + "tiny_a.pth --adapter lora --out " + ad).code, 0);
  auto m = run("adapter merge --checkpoint " + kData + "tiny_a.pth --adapter " + ad + " --out " + merged);
  ASSERT_EQ(m.code, 0) << m.err;
  // GaRA is input-dependent: merging it is refused with an error.
  const auto gara = tmp("gara_for_merge.safetensors");
  ASSERT_EQ(run("adapter init --checkpoint " + kData + "tiny_a.pth --adapter gara --out " + gara).code, 0);
  auto g =
      run("adapter merge --checkpoint " + kData + "tiny_a.pth --adapter " + gara + " --out " + tmp("nope.safetensors"));
  EXPECT_EQ(g.code, 1);
  EXPECT_NE(g.err.find("cannot be merged"), std::string::npos) << g.err;
  // The merged checkpoint segments exactly like base + adapter.
  const std::string seg = "segment --image " + kData + "images/square64.png --point 30,30 --json --threads 1";
  auto a = nlohmann::json::parse(run(seg + " --checkpoint " + kData + "tiny_a.pth --adapter " + ad).out);
  auto b = nlohmann::json::parse(run(seg + " --checkpoint " + merged).out);
  EXPECT_EQ(a["masks"], b["masks"]);
}

namespace {

std::string make_scene_folder(const std::string& name, int n) {
  const std::string dir = ::testing::TempDir() + "rsam_cli_scenes_" + name;
  std::system(("rm -rf " + dir + " && mkdir -p " + dir + "/images " + dir + "/masks").c_str());
  for (int i = 0; i < n; ++i) {
    cv::Mat img(56, 64, CV_8UC3, cv::Scalar(90, 80, 70)), mask = cv::Mat::zeros(56, 64, CV_8UC1);
    cv::randu(img, cv::Scalar(50, 50, 50), cv::Scalar(130, 130, 130));
    const cv::Point c(20 + 3 * i, 18 + 2 * i);
    cv::circle(img, c, 8 + i % 5, cv::Scalar(30, 210, 240), cv::FILLED);
    cv::circle(mask, c, 8 + i % 5, cv::Scalar(255), cv::FILLED);
    const std::string stem = "/s" + std::to_string(i) + ".png";
    cv::imwrite(dir + "/images" + stem, img);
    cv::imwrite(dir + "/masks" + stem, mask);
  }
  return "folder:" + dir + "/images," + dir + "/masks";
}


// A training run killed once it has checkpointed and then resumed ends
// with the adapter of the uninterrupted run.
void expect_resume_matches(const std::string& common, const std::string& name) {
  expect_resume_identical(common, name, "/adapter.safetensors", 30, false);
}

}  // namespace

TEST(Cli, TrainKilledAndResumedEndsWithTheSameWeights) {
  const auto data = make_scene_folder("resume", 8);
  expect_resume_matches("train --checkpoint " + kData + "tiny_a.pth --data " + data +
                            " --adapter gara --corruption gauss_noise,fog --prompts points:1,box --steps 30 --batch 2"
                            " --save-every 2 --threads 1 --workers 2 --seed 5 --quiet --lr 1e-3",
                        "train");
}

// The same on two processes: killing the launcher stops its ranks, and each
// rank resumes its own random stream (GaRA's Gumbel noise, the clicks). With
// 3 images a batch the ranks take 2 and 1, so their streams drift apart; a
// build that gave rank 1 rank 0's stream on resume failed this.
TEST(Cli, TrainOnTwoProcessesKilledAndResumedEndsWithTheSameWeights) {
#ifndef RSAM_HAS_GLOO
  GTEST_SKIP() << "built without c10d's Gloo headers (libgloo-dev)";
#endif
  const auto data = make_scene_folder("resume2", 8);
  expect_resume_matches("train --checkpoint " + kData + "tiny_a.pth --data " + data +
                            " --adapter gara --corruption gauss_noise,fog --prompts points:1,box --iterative-points 1"
                            " --steps 20 --batch 3 --save-every 2 --nproc 2 --threads 1 --workers 1 --seed 5 --quiet"
                            " --lr 1e-3",
                        "train2");
}

// Two data-parallel processes (c10d Gloo) train on exactly the batch one
// process would: the same losses step by step, and weights that differ only
// by the order of float sums (where a gradient is ~0 that can flip the sign
// of Adam's step, so a few weights may differ by up to lr per step).
TEST(Cli, TrainOnTwoProcessesMatchesOneProcess) {
#ifndef RSAM_HAS_GLOO
  GTEST_SKIP() << "built without c10d's Gloo headers (libgloo-dev)";
#endif
  const auto data = make_scene_folder("ddp", 8);
  const std::string common = "train --checkpoint " + kData + "tiny_a.pth --data " + data +
                             " --adapter lora --corruption none --prompts points:1,box --steps 3 --batch 4"
                             " --threads 1 --workers 0 --quiet --lr 1e-3";
  const std::string one = tmp("ddp_one"), two = tmp("ddp_two");
  std::system(("rm -rf " + one + " " + two).c_str());
  auto a = run(common + " --seed 5 --out " + one);
  ASSERT_EQ(a.code, 0) << a.err;
  auto b = run(common + " --seed 5 --nproc 2 --out " + two);
  ASSERT_EQ(b.code, 0) << b.err;
  EXPECT_EQ(lines(b.out), 1) << b.out;  // rank 0 reports; rank 1 is silent

  auto metrics = [](const std::string& dir) {
    std::vector<nlohmann::json> v;
    std::ifstream f(dir + "/metrics.jsonl");
    for (std::string l; std::getline(f, l);) v.push_back(nlohmann::json::parse(l));
    return v;
  };
  const auto ma = metrics(one), mb = metrics(two);
  ASSERT_EQ(ma.size(), 3u);
  ASSERT_EQ(mb.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(ma[i]["masks"], mb[i]["masks"]);
    EXPECT_NEAR(ma[i]["loss"].get<double>(), mb[i]["loss"].get<double>(), 1e-5 * ma[i]["loss"].get<double>())
        << "step " << i + 1;
  }
  EXPECT_FALSE(std::ifstream(two + "/checkpoint.pt").fail());

  auto mean_abs_diff = [](const std::string& x, const std::string& y, double* max_diff) {
    const auto fx = rsam::io::load_safetensors(x), fy = rsam::io::load_safetensors(y);
    EXPECT_EQ(fx.tensors.size(), fy.tensors.size());
    double sum = 0, mx = 0;
    int64_t n = 0;
    for (size_t t = 0; t < std::min(fx.tensors.size(), fy.tensors.size()); ++t) {
      const auto &tx = fx.tensors[t].second, &ty = fy.tensors[t].second;
      EXPECT_EQ(fx.tensors[t].first, fy.tensors[t].first);
      EXPECT_EQ(tx.shape, ty.shape);
      const float* px = reinterpret_cast<const float*>(tx.data.data());
      const float* py = reinterpret_cast<const float*>(ty.data.data());
      for (int64_t k = 0; k < std::min(tx.numel(), ty.numel()); ++k) {
        const double d = std::abs(double(px[k]) - double(py[k]));
        sum += d, mx = std::max(mx, d), ++n;
      }
    }
    *max_diff = mx;
    return n ? sum / double(n) : 0.0;
  };
  // An Adam step moves a weight by up to lr (1e-3). One process stepping on
  // half of each batch (--batch 2) ends 7e-4 from it on average; two
  // processes end 1.3e-8 from it (max 3.5e-6).
  double max_diff = 0;
  const double mean_diff = mean_abs_diff(one + "/adapter.safetensors", two + "/adapter.safetensors", &max_diff);
  EXPECT_LT(mean_diff, 1e-6);
  EXPECT_LT(max_diff, 3 * 1e-3);

  // Bad input fails once, before any rank starts.
  auto bad = run("train --checkpoint " + kData +
                 "tiny_a.pth --data folder:/nope,/nope --adapter lora --steps 3 "
                 "--nproc 2 --quiet --out " +
                 two);
  EXPECT_EQ(bad.code, 1);
  EXPECT_EQ(lines(bad.err), 1) << bad.err;
  auto zero = run(common + " --nproc 0 --out " + two);
  EXPECT_EQ(zero.code, 1);
  EXPECT_EQ(lines(zero.err), 1) << zero.err;
}

// Shared out over two processes, an evaluation writes the same report: the
// records in the same order, byte for byte, and the same table.
TEST(Cli, EvalOnTwoProcessesWritesTheSameReport) {
  const auto data = make_scene_folder("eval2", 5);
  const auto ad = tmp("eval2_gara.safetensors"), cfg = tmp("eval2_gara.json");
  std::ofstream(cfg) << R"({"method": "gara", "r_low": 2, "r_high": 6, "gate_hidden": 8})";
  auto init = run("adapter init --checkpoint " + kData + "tiny_a.pth --adapter " + cfg + " --out " + ad);
  ASSERT_EQ(init.code, 0) << init.err;
  const std::string common = "eval --checkpoint " + kData + "tiny_a.pth --data " + data + " --compare none," + ad +
                             " --corruption clean,fog --prompts box,point:1 --threads 1 --quiet --oracle --report ";
  const auto one = tmp("eval_one"), two = tmp("eval_two");
  std::system(("rm -rf " + one + " " + two).c_str());
  auto a = run(common + one);
  ASSERT_EQ(a.code, 0) << a.err;
  auto b = run(common + two + " --nproc 2");
  ASSERT_EQ(b.code, 0) << b.err;
  EXPECT_EQ(a.out.substr(0, a.out.rfind("report:")), b.out.substr(0, b.out.rfind("report:")));
  EXPECT_EQ(slurp(one + "/records.csv"), slurp(two + "/records.csv"));
  EXPECT_GT(lines(slurp(two + "/records.csv")), 20);
  // results.json names its options, which are the same: the whole file matches.
  EXPECT_EQ(slurp(one + "/results.json"), slurp(two + "/results.json"));
  // rsam compare pairs two reports object by object (here the adapter of one
  // against the base of the other), as a table or JSON.
  const auto table = tmp("compare.md");
  auto cmp =
      run("compare " + one + " " + two + " --base-method sam --method rsam_cli_eval2_gara --json --out " + table);
  ASSERT_EQ(cmp.code, 0) << cmp.err;
  const auto j = nlohmann::json::parse(cmp.out);
  ASSERT_EQ(j["rows"].size(), 4u);  // box and one point, clean and fog
  for (const auto& row : j["rows"]) EXPECT_EQ(row["n"].get<int>(), 5) << row.dump();
  EXPECT_NE(slurp(table).find("| box | fog | 5 |"), std::string::npos) << slurp(table);
  for (const std::string& c : {"compare " + one + " " + two,  // two methods, none named
                              "compare /nonexistent " + two, "compare " + one + " " + two + " --method nope"}) {
    auto bad = run(c);
    EXPECT_EQ(bad.code, 1) << c;
    EXPECT_EQ(lines(bad.err), 1) << c << "\n" << bad.err;
  }
  auto bad = run("eval --checkpoint /nope.pth --data " + data + " --nproc 2 --quiet");
  EXPECT_EQ(bad.code, 1);
  EXPECT_EQ(lines(bad.err), 1) << bad.err;
}

TEST(Cli, EvalWritesAReport) {
  const auto data = make_scene_folder("eval", 3);
  const auto dir = tmp("eval_report");
  auto r = run("eval --checkpoint " + kData + "tiny_a.pth --data " + data +
               " --corruption clean,brightness --prompts box,point:1 --threads 1 --quiet --report " + dir);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(slurp(dir + "/report.md").find("| corruption |"), std::string::npos);
  EXPECT_NE(slurp(dir + "/records.csv").find("brightness"), std::string::npos);
  auto bad = run("eval --checkpoint " + kData + "tiny_a.pth --data folder:/nope,/nope --quiet");
  EXPECT_EQ(bad.code, 1);
  EXPECT_EQ(lines(bad.err), 1) << bad.err;
  // A polygon with no area: the sample is skipped and the reason said.
  const auto coco = tmp("empty_mask.json");
  std::ofstream(coco) << R"({"images":[{"id":1,"file_name":"square64.png","width":64,"height":64}],)"
                      << R"("annotations":[{"id":1,"image_id":1,"segmentation":[[0,0,5,0]],"bbox":[0,0,5,1]}]})";
  auto empty = run("eval --checkpoint " + kData + "tiny_a.pth --data coco:" + coco + "," + kData +
                   "images --corruption clean --prompts box --threads 1");
  EXPECT_EQ(empty.code, 1);
  EXPECT_NE(empty.err.find("skipped sample 0: its mask is empty"), std::string::npos) << empty.err;
  EXPECT_NE(empty.err.find("rsam: error: no sample"), std::string::npos) << empty.err;
}

// The bundled default: `rsam segment --image IMG --point X,Y` with no other
// argument uses rsam-tiny and its GaRA adapter; --no-adapter turns it off.
TEST(Cli, SegmentWithNoCheckpointUsesTheBundledModel) {
  const auto img = tmp("bundled_scene.png");
  cv::Mat scene(200, 240, CV_8UC3, cv::Scalar(40, 90, 160));
  cv::circle(scene, {120, 100}, 45, cv::Scalar(230, 220, 40), cv::FILLED);
  cv::imwrite(img, scene);
  auto r = run("segment --image " + img + " --point 120,100 --json --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["adapter"], "gara");
  const int area = j["masks"][j["best"].get<int>()]["area"].get<int>();
  // A trained model finds the disc (area pi*45^2 ~ 6360 px), not noise.
  EXPECT_GT(area, 4500);
  EXPECT_LT(area, 8500);
  auto plain = run("segment --image " + img + " --point 120,100 --json --threads 1 --no-adapter");
  ASSERT_EQ(plain.code, 0) << plain.err;
  EXPECT_FALSE(nlohmann::json::parse(plain.out).contains("adapter"));
  auto both = run("segment --image " + img + " --point 1,1 --no-adapter --adapter x.safetensors");
  EXPECT_EQ(both.code, 1);
  EXPECT_EQ(lines(both.err), 1) << both.err;
  // Its own low-res logits fed back as a mask input (it is trained for that:
  // BundledModel.CorrectiveClicksRefineItsMasks measures the refinement).
  const auto logits = tmp("bundled_logits.npy");
  ASSERT_EQ(run("segment --image " + img + " --point 120,100 --threads 1 --logits-out " + logits).code, 0);
  auto refined = run("segment --image " + img + " --point 120,100 --threads 1 --json --mask-input " + logits);
  ASSERT_EQ(refined.code, 0) << refined.err;
  EXPECT_EQ(refined.err.find("warning"), std::string::npos) << refined.err;
}

// One point alone: by default the best-scored of the three multimask
// outputs (what `rsam eval` scores), not the single-mask output.
TEST(Cli, OnePointReturnsTheBestOfThreeMasks) {
  const auto img = tmp("onepoint_scene.png");
  cv::Mat scene(200, 240, CV_8UC3, cv::Scalar(40, 90, 160));
  cv::circle(scene, {120, 100}, 45, cv::Scalar(230, 220, 40), cv::FILLED);
  cv::rectangle(scene, {20, 20}, {70, 180}, cv::Scalar(20, 200, 90), cv::FILLED);
  cv::imwrite(img, scene);
  const std::string seg = "segment --image " + img + " --json --threads 1 --no-adapter";
  for (const char* pt : {" --point 120,100", " --point 45,60", " --point 160,100"}) {
    auto one = run(seg + pt), three = run(seg + pt + " --multimask"), single = run(seg + pt + " --single-mask");
    ASSERT_EQ(one.code, 0) << one.err;
    ASSERT_EQ(three.code, 0) << three.err;
    ASSERT_EQ(single.code, 0) << single.err;
    const auto j1 = nlohmann::json::parse(one.out), j3 = nlohmann::json::parse(three.out),
               js = nlohmann::json::parse(single.out);
    ASSERT_EQ(j1["masks"].size(), 1u);
    ASSERT_EQ(j3["masks"].size(), 3u);
    ASSERT_EQ(js["masks"].size(), 1u);
    EXPECT_EQ(j1["picked_from"], 3);
    EXPECT_FALSE(js.contains("picked_from"));
    EXPECT_EQ(j1["masks"][0], j3["masks"][j3["best"].get<int>()]) << pt;
    float top = 0;
    for (const auto& m : j3["masks"]) top = std::max(top, m["score"].get<float>());
    EXPECT_EQ(j1["masks"][0]["score"].get<float>(), top) << pt;
  }
  // A second point, a box or a mask input is not ambiguous: one mask, as before.
  auto two = nlohmann::json::parse(run(seg + " --point 120,100 --point 130,100").out);
  EXPECT_FALSE(two.contains("picked_from"));
  auto both = run(seg + " --point 120,100 --multimask --single-mask");
  EXPECT_EQ(both.code, 1);
  EXPECT_EQ(lines(both.err), 1) << both.err;
  // --refine: one mask, decoded again with itself as the mask input; the
  // logits it writes are what the library's refine gives (test_model).
  const auto refined = run(seg + " --point 120,100 --refine 2");
  ASSERT_EQ(refined.code, 0) << refined.err;
  const auto jr = nlohmann::json::parse(refined.out);
  EXPECT_EQ(jr["masks"].size(), 1u);
  EXPECT_EQ(jr["refine"], 2);
  EXPECT_EQ(jr["picked_from"], 3);
  const auto with_three = run(seg + " --point 120,100 --refine 1 --multimask");
  EXPECT_EQ(with_three.code, 1);
  EXPECT_EQ(lines(with_three.err), 1) << with_three.err;
  for (const char* bad : {" --refine -1", " --refine x", " --pick area"})  // usage errors
    EXPECT_EQ(run(seg + " --point 120,100" + bad).code, 2) << bad;
  // --pick stability: the most stable of the same three masks.
  for (const char* pt : {" --point 120,100", " --point 45,60", " --point 160,100"}) {
    const auto one = run(seg + pt + " --pick stability"), three = run(seg + pt + " --multimask --pick stability");
    ASSERT_EQ(one.code, 0) << one.err;
    ASSERT_EQ(three.code, 0) << three.err;
    const auto j1 = nlohmann::json::parse(one.out), j3 = nlohmann::json::parse(three.out);
    EXPECT_EQ(j1["pick"], "stability");
    int most = 0;
    for (int i = 1; i < 3; ++i)
      if (j3["masks"][i]["stability"].get<float>() > j3["masks"][most]["stability"].get<float>()) most = i;
    EXPECT_EQ(j3["best"].get<int>(), most) << pt;
    EXPECT_EQ(j1["masks"][0], j3["masks"][most]) << pt;
  }
  // --flip: the answer of two views (the library's flip, test_model); it
  // says so, and the mirrored view moves the score.
  const auto plain = nlohmann::json::parse(run(seg + " --box 70,50,170,150").out);
  const auto flipped = run(seg + " --box 70,50,170,150 --flip");
  ASSERT_EQ(flipped.code, 0) << flipped.err;
  const auto jf = nlohmann::json::parse(flipped.out);
  EXPECT_EQ(jf["flip"], true);
  EXPECT_FALSE(plain.contains("flip"));
  EXPECT_NE(jf["masks"][0]["score"].get<float>(), plain["masks"][0]["score"].get<float>());
}

TEST(Cli, DemoWritesThePictureAndMeanIous) {
  const auto pic = tmp("demo.png");
  std::remove(pic.c_str());
  auto r = run("demo --out " + pic + " --json --threads 1 --seed 3 --scenes 2 --corruption fog");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  // The bundled model brings its adapter and its GleSAM enhancer.
  EXPECT_EQ(j["methods"], nlohmann::json({"base", "gara", "glesam", "gara+glesam"}));
  EXPECT_EQ(j["conditions"], nlohmann::json({"clean", "fog"}));
  EXPECT_EQ(j["scenes"], 2);
  for (const auto& m : j["methods"])
    for (const auto& c : j["conditions"]) {
      const double v = j["mean_iou"][m.get<std::string>()][c.get<std::string>()];
      EXPECT_GE(v, 0.0) << m << c;
      EXPECT_LE(v, 1.0) << m << c;
    }
  // rsam-tiny finds (part of) the objects; how well it does over many
  // scenes is measured in docs/rsam-tiny.md, not asserted here.
  EXPECT_GT(j["mean_iou"]["base"]["clean"].get<double>(), 0.2);
  cv::Mat m = cv::imread(pic, cv::IMREAD_COLOR);
  ASSERT_FALSE(m.empty());
  // A row per condition: the ground truth and one tile per method.
  EXPECT_EQ(m.cols, 5 * 512);
  EXPECT_GT(m.rows, 2 * 512);
  auto plain = run("demo --out " + pic + " --json --threads 1 --seed 3 --scenes 1 --objects 1 --corruption fog"
                   " --no-enhancer");
  ASSERT_EQ(plain.code, 0) << plain.err;
  EXPECT_EQ(nlohmann::json::parse(plain.out)["methods"], nlohmann::json({"base", "gara"}));
  expect_one_line_error(run("demo --out " + pic + " --no-enhancer --enhancer x.json"), "turned off");
  auto bad = run("demo --corruption nonesuch --out " + pic);
  EXPECT_EQ(bad.code, 1);
  EXPECT_EQ(lines(bad.err), 1) << bad.err;
}

TEST(Cli, SynthWritesATrainableSet) {
  const auto dir = tmp("synth_set");
  std::system(("rm -rf " + dir).c_str());
  auto r = run("synth --out " + dir + " --count 4 --size 64 --photos none --jobs 2");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("4 scenes"), std::string::npos) << r.out;
  auto ann = nlohmann::json::parse(slurp(dir + "/annotations.json"));
  EXPECT_EQ(ann["images"].size(), 4u);
  EXPECT_GT(ann["annotations"].size(), 4u);
  auto bad = run("synth --out " + dir + " --count 4 --size 64 --photos /nonexistent");
  EXPECT_EQ(bad.code, 1);
  EXPECT_EQ(lines(bad.err), 1) << bad.err;
}

// The study end to end at toy scale: two methods, two seeds, one step each.
TEST(Cli, StudyWritesTheReport) {
  const auto dir = tmp("study");
  std::system(("rm -rf " + dir).c_str());
  auto s = run("synth --out " + dir + "/scenes --count 3 --size 64 --photos none");
  ASSERT_EQ(s.code, 0) << s.err;
  const std::string spec = "coco:" + dir + "/scenes/annotations.json," + dir + "/scenes/images";
  const std::string study = "study --checkpoint " + kData + "tiny_a.pth --train " + spec + " --val " + spec +
                            " --method lora-r2=lora --method gara=gara --seeds 2 --steps 1 --batch 1 --max-samples 3"
                            " --gate-images 1 --corruption clean,gauss_noise --prompts point:1,box --quiet";
  auto r = run(study + " --threads 1 --out " + dir + "/runs --doc " + dir + "/results.md");
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string md = slurp(dir + "/results.md");
  for (const char* k : {"## Summary", "lora-r2", "gara", "## Per corruption", "GaRA's gates", "## Cost", "± ",
                        "1 of 15 Robust-Seg types (gauss_noise)", "0 of 3 LQ levels"})
    EXPECT_NE(md.find(k), std::string::npos) << k;
  EXPECT_FALSE(cv::imread(dir + "/results_iou_per_corruption.png").empty());
  EXPECT_EQ(md.find("runs) |"), std::string::npos) << "every run timed";
  // A run finished from its checkpoint (resumed) is not timed, and the report says how many were.
  std::remove((dir + "/runs/s1/gara.safetensors").c_str());
  std::remove((dir + "/runs/s1/gara.seconds").c_str());
  ASSERT_EQ(run(study + " --threads 1 --out " + dir + "/runs --doc " + dir + "/results.md").code, 0);
  EXPECT_FALSE(std::ifstream(dir + "/runs/s1/gara.seconds").good());
  const std::string md1 = slurp(dir + "/results.md");
  EXPECT_NE(md1.find("(1 of 2 runs) |"), std::string::npos) << md1;

  // Shared out over two processes (runs, then samples): the same adapters
  // and the same per-seed records.
  auto two = run(study + " --nproc 2 --out " + dir + "/runs2 --doc " + dir + "/results2.md");
  ASSERT_EQ(two.code, 0) << two.err;
  for (const char* f :
       {"/s0/gara.safetensors", "/s1/lora-r2.safetensors", "/s0/report/records.csv", "/s1/report/records.csv"}) {
    EXPECT_FALSE(slurp(dir + "/runs" + f).empty()) << f;
    EXPECT_EQ(slurp(dir + "/runs" + f), slurp(dir + "/runs2" + f)) << f;
  }
  EXPECT_FALSE(std::ifstream(dir + "/runs2/s0/shard0.json").good());  // merged, then removed
  EXPECT_NE(slurp(dir + "/results2.md").find("## Summary"), std::string::npos);
}

// Issue 39: `rsam info` recognises a Stable Diffusion folder and its files;
// something that is neither SAM nor SD keeps SAM's error.
TEST(Cli, InfoDescribesStableDiffusionFoldersAndFiles) {
  const std::string sd = RSAM_TEST_DATA_DIR "/diffusion/sd2";
  auto r = run("info --json " + sd);
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_NE(j.dump().find("unet"), std::string::npos) << r.out;
  r = run("info --json " + sd + "/unet/diffusion_pytorch_model.safetensors");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("parameters"), std::string::npos) << r.out;
  const std::string junk = tmp("junk.safetensors");
  std::ofstream(junk) << "not a checkpoint";
  r = run("info " + junk);
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(lines(r.err), 1) << r.err;
}

// Issue 39: `rsam bench --unet` times a diffusion U-Net from its config.
TEST(Cli, BenchTimesAUNetFromItsConfig) {
  auto r = run("bench --unet " RSAM_TEST_DATA_DIR "/diffusion/sd2/unet/config.json --threads 1 --repeat 1 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["forward_ms"].size(), 1u);
  EXPECT_GT(j["parameters"].get<int64_t>(), 0);
  EXPECT_EQ(run("bench --unet " RSAM_TEST_DATA_DIR "/diffusion/sd2/unet/config.json --unet-channels 0").code, 2);
}
