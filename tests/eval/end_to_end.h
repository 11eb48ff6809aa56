// The setup the end-to-end tests share: a short LoRA run on generated
// scenes, then an evaluation of the base model and the adapter with a report
// and the rank oracle. Each test makes its own (under its own names, so
// ctest may run them at once); a run takes seconds on the tiny model.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "eval/evaluator.h"
#include "train_helpers.h"
#include "train/trainer.h"

namespace rsam_test {

struct Evaluated {
  std::string spec;  // the scenes (6 of them)
  rsam::train::TrainOptions train;
  rsam::train::TrainResult trained;
  rsam::eval::EvalOptions eval;  // base model and adapter, report in TempDir()/rsam_eval_report_<name>
  rsam::eval::EvalResult result;
};

// The evaluation every test starts from: the tiny model alone on `spec`,
// three corruptions and three prompt types, no report, no oracle.
inline rsam::eval::EvalOptions eval_options(const std::string& spec) {
  rsam::eval::EvalOptions e;
  e.checkpoint = kData + "tiny_a.pth";
  e.adapters = {"none"};
  e.data = spec;
  e.corruptions = "clean,gauss_noise,lq1";
  e.prompts = "point:1,box,clicks:3";
  e.threads = 1;
  e.quiet = true;
  return e;
}

inline Evaluated train_and_evaluate(const std::string& name) {
  Evaluated x;
  x.spec = make_scenes("e2e_" + name, 6);
  auto& o = x.train;
  o = short_run(x.spec, 4, "rsam_train_e2e_" + name + "_out");
  o.val = x.spec;
  o.adapter = "lora";
  o.train_decoder = true;
  o.corruption = "gauss_noise,brightness";
  o.lr = 1e-3;
  x.trained = rsam::train::train(o);
  auto& e = x.eval;
  e = eval_options(x.spec);
  e.adapters = {"none", x.trained.weights_path};
  e.oracle = true;
  e.report = (fs::path(::testing::TempDir()) / ("rsam_eval_report_" + name)).string();
  x.result = rsam::eval::evaluate(e);
  return x;
}

// The same evaluation of the base model alone, without report or oracle.
inline rsam::eval::EvalOptions base_only(rsam::eval::EvalOptions e) {
  e.adapters = {"none"};
  e.report.clear();
  e.oracle = false;
  return e;
}

}  // namespace rsam_test
