// Shared by the CLI test files: run the `rsam` binary as a user would and
// collect its exit code, stdout and stderr; temp paths private to the test.
#pragma once

#include <gtest/gtest.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace rsam::cli_test {

inline const std::string kBin = RSAM_BINARY;
inline const std::string kData = RSAM_TEST_DATA_DIR "/sam/";

struct Run {
  int code = -1;
  std::string out, err;
};

inline Run run(const std::string& args, const std::string& env = "") {
  // ctest runs these tests in parallel processes: a private stderr file each.
  static int counter = 0;
  const std::string err_path =
      ::testing::TempDir() + "rsam_cli_stderr_" + std::to_string(getpid()) + "_" + std::to_string(counter++) + ".txt";
  const std::string cmd = env + kBin + " " + args + " 2>" + err_path;
  Run r;
  FILE* p = popen(cmd.c_str(), "r");
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::ifstream f(err_path);
  std::stringstream ss;
  ss << f.rdbuf();
  r.err = ss.str();
  std::remove(err_path.c_str());
  return r;
}

inline std::string tmp(const std::string& name) { return ::testing::TempDir() + "rsam_cli_" + name; }

// A fresh empty folder under the test temp dir.
inline std::string fresh_dir(const std::string& name) {
  const std::string d = tmp(name);
  std::system(("rm -rf '" + d + "' && mkdir -p '" + d + "'").c_str());
  return d;
}

inline int lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The failure contract: exit 1 and exactly one line "rsam: error: ..." that
// contains `needle`.
inline void expect_one_line_error(const Run& r, const std::string& needle) {
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_EQ(lines(r.err), 1) << r.err;
  EXPECT_EQ(r.err.rfind("rsam: error: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << "expected '" << needle << "' in: " << r.err;
}

// A small scene picture (circle on noise) written as PNG.
inline void write_scene(const std::string& path, int w = 64, int h = 56, int seed = 0) {
  cv::Mat img(h, w, CV_8UC3);
  cv::theRNG().state = 1234 + seed;
  cv::randu(img, cv::Scalar(50, 50, 50), cv::Scalar(130, 130, 130));
  cv::circle(img, cv::Point(w / 3, h / 3), std::max(3, w / 8), cv::Scalar(30, 210, 240), cv::FILLED);
  cv::imwrite(path, img);
}

// DIR/images and DIR/masks with n small scenes (a disc on noise, the disc as
// the mask), in a fresh DIR under the test temp dir; returns DIR.
inline std::string scene_folder(const std::string& name, int n) {
  const std::string dir = fresh_dir(name);
  std::system(("mkdir -p '" + dir + "/images' '" + dir + "/masks'").c_str());
  for (int i = 0; i < n; ++i) {
    const std::string file = "/s" + std::to_string(i) + ".png";
    write_scene(dir + "/images" + file, 64, 56, i);
    cv::Mat mask = cv::Mat::zeros(56, 64, CV_8UC1);
    cv::circle(mask, cv::Point(64 / 3, 56 / 3), 8, cv::Scalar(255), cv::FILLED);
    cv::imwrite(dir + "/masks" + file, mask);
  }
  return dir;
}

// Starts `rsam COMMON --out DIR` and SIGKILLs it once it has written its
// first checkpoint (the training tests' kill-and-resume case). A fatal
// failure if the run ended before it could be killed.
inline void kill_after_first_checkpoint(const std::string& common, const std::string& dir) {
  const std::string cmd = kBin + " " + common + " --out " + dir + " >/dev/null 2>&1";
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), (char*)nullptr);
    _exit(127);
  }
  const std::string ckpt = dir + "/checkpoint.pt";
  for (int i = 0; i < 20000 && !std::ifstream(ckpt).good(); ++i) usleep(1000);
  usleep(20000);
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run finished before it could be killed";
}

// Runs `common` to the end in one folder, and again SIGKILLed after its first
// checkpoint (with fewer than `max_lines_at_kill` metrics lines by then) and
// resumed in another: the `weights` file (a path inside the run folder) must
// be identical, and with `same_metrics` the metrics log too.
inline void expect_resume_identical(const std::string& common, const std::string& name, const std::string& weights,
                                    int max_lines_at_kill, bool same_metrics) {
  const std::string ref_dir = tmp(name + "_ref"), kill_dir = tmp(name + "_kill");
  std::system(("rm -rf " + ref_dir + " " + kill_dir).c_str());
  auto ref = run(common + " --out " + ref_dir);
  ASSERT_EQ(ref.code, 0) << ref.err;
  kill_after_first_checkpoint(common, kill_dir);
  if (::testing::Test::HasFatalFailure()) return;
  EXPECT_LT(lines(slurp(kill_dir + "/metrics.jsonl")), max_lines_at_kill);
  auto resumed = run(common + " --out " + kill_dir + " --resume");
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  // The files differ only if the weights do.
  EXPECT_TRUE(slurp(ref_dir + weights) == slurp(kill_dir + weights)) << weights;
  if (same_metrics) {
    EXPECT_EQ(slurp(ref_dir + "/metrics.jsonl"), slurp(kill_dir + "/metrics.jsonl"));
  }
  EXPECT_FALSE(slurp(kill_dir + "/metrics.jsonl").empty());
}

}  // namespace rsam::cli_test
