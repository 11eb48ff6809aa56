// What the training and end-to-end tests share: the tiny test model, a few
// generated scenes, a short quiet run and an error's message.
#pragma once

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <random>
#include <string>

#include "error.h"
#include "model/checkpoint.h"
#include "train/trainer.h"

namespace rsam_test {

namespace fs = std::filesystem;

inline const std::string kData = RSAM_TEST_DATA_DIR "/sam/";

// A few ellipses on textured backgrounds, as images/ + masks/ under
// TempDir()/rsam_train_<name> (a name per test: ctest may run them at once).
inline std::string make_scenes(const std::string& name, int n) {
  const auto dir = fs::path(::testing::TempDir()) / ("rsam_train_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir / "images");
  fs::create_directories(dir / "masks");
  std::mt19937 rng(7);
  for (int i = 0; i < n; ++i) {
    cv::Mat img(48 + 8 * (i % 3), 64, CV_8UC3), mask = cv::Mat::zeros(img.size(), CV_8UC1);
    cv::randu(img, cv::Scalar(60, 60, 60), cv::Scalar(120, 120, 120));
    const cv::Point c(16 + int(rng() % 32), 16 + int(rng() % 16));
    const cv::Size axes(6 + int(rng() % 10), 5 + int(rng() % 8));
    cv::ellipse(img, c, axes, 0, 0, 360, cv::Scalar(40, 200, 230), cv::FILLED);
    cv::ellipse(mask, c, axes, 0, 0, 360, cv::Scalar(255), cv::FILLED);
    char stem[32];
    std::snprintf(stem, sizeof stem, "s%02d.png", i);
    cv::imwrite((dir / "images" / stem).string(), img);
    cv::imwrite((dir / "masks" / stem).string(), mask);
  }
  return "folder:" + (dir / "images").string() + "," + (dir / "masks").string();
}

inline rsam::Sam tiny() { return rsam::load_sam(kData + "tiny_a.pth").model; }

// A short, quiet, single-threaded run of the tiny test model into a fresh
// TempDir()/out_name.
inline rsam::train::TrainOptions short_run(const std::string& data, int steps, const std::string& out_name) {
  rsam::train::TrainOptions o;
  o.checkpoint = kData + "tiny_a.pth";
  o.data = data;
  o.steps = steps;
  o.batch = 2;
  o.workers = 1;
  o.threads = 1;
  o.quiet = true;
  o.out = (fs::path(::testing::TempDir()) / out_name).string();
  fs::remove_all(o.out);
  return o;
}

// The message of the rsam::Error f throws, "" if none.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const rsam::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace rsam_test
