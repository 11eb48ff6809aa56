// The output folder, checkpoints and resumption (issue 37's data safety):
// a run never writes over its inputs nor into another run's folder, and
// never saves non-finite weights over good ones.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <vector>

#include "error.h"
#include "train_helpers.h"
#include "io/fs.h"
#include "io/tensor_file.h"
#include "model/checkpoint.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using namespace rsam_test;

TEST(Train, ARunNeverWritesOverItsInputs) {
  const auto spec = make_scenes("same", 2);
  auto o = short_run(spec, 1, "rsam_train_same_out");
  fs::create_directories(o.out);
  o.adapter = o.out + "/config.json";  // the adapter config where the run writes its own
  {
    std::ofstream f(o.adapter);
    f << R"({"method": "lora", "rank": 2})";
  }
  const auto before = rsam::io::read_file(o.adapter);
  for (bool overwrite : {false, true}) {
    o.overwrite = overwrite;
    const auto e = error_of([&] { rsam::train::train(o); });
    EXPECT_NE(e.find("is the same file as the adapter config"), std::string::npos) << e;
    EXPECT_THROW(rsam::train::check_output_folder(o), rsam::Error);
  }
  EXPECT_EQ(rsam::io::read_file(o.adapter), before);
  // Pre-training from the folder's own weights.
  o.adapter = "lora";
  o.full = true;
  o.checkpoint = o.out + "/model.safetensors";
  rsam::save_sam(tiny(), o.checkpoint);
  const auto weights = rsam::io::read_file(o.checkpoint);
  EXPECT_NE(error_of([&] { rsam::train::train(o); }).find("same file as the checkpoint"), std::string::npos);
  EXPECT_EQ(rsam::io::read_file(o.checkpoint), weights);
  fs::remove_all(o.out);
}

TEST(Train, AFolderHoldingARunIsRefusedUnlessResumedOrOverwritten) {
  const auto spec = make_scenes("rerun", 2);
  auto o = short_run(spec, 1, "rsam_train_rerun_out");
  o.adapter = "lora";
  o.corruption = "none";
  rsam::train::train(o);
  const auto config = rsam::io::read_file(o.out + "/config.json");
  const auto metrics = rsam::io::read_file(o.out + "/metrics.jsonl");

  auto other = o;
  other.lr = 1e-2;
  const auto e = error_of([&] { rsam::train::train(other); });
  EXPECT_NE(e.find("already holds a training run (config.json, checkpoint.pt, metrics.jsonl, adapter.safetensors)"),
            std::string::npos)
      << e;
  EXPECT_THROW(rsam::train::check_output_folder(other), rsam::Error);
  other.resume = true;
  EXPECT_NE(error_of([&] { rsam::train::train(other); }).find("'lr' differs"), std::string::npos);
  EXPECT_EQ(rsam::io::read_file(o.out + "/config.json"), config);
  EXPECT_EQ(rsam::io::read_file(o.out + "/metrics.jsonl"), metrics);

  auto same = o;
  same.resume = true;
  EXPECT_NO_THROW(rsam::train::check_output_folder(same));
  EXPECT_EQ(rsam::train::train(same).start_step, 1);

  other.resume = false;
  other.overwrite = true;
  std::ofstream(o.out + "/loss.png") << "old";  // the old run's files go, whichever there are
  auto r = rsam::train::train(other);
  EXPECT_EQ(r.start_step, 0);
  EXPECT_NE(rsam::io::read_file(o.out + "/config.json"), config);
  EXPECT_FALSE(fs::exists(o.out + "/loss.png"));  // one step draws no curve
  fs::remove_all(o.out);
}

TEST(Train, AFolderInUseIsRefused) {
  const auto spec = make_scenes("locked", 2);
  auto o = short_run(spec, 1, "rsam_train_locked_out");
  fs::create_directories(o.out);
  {
    rsam::io::FolderLock other_run(o.out);
    const auto e = error_of([&] { rsam::train::train(o); });
    EXPECT_NE(e.find("is in use by another rsam run"), std::string::npos) << e;
    EXPECT_FALSE(fs::exists(o.out + "/config.json"));
  }
  EXPECT_NO_THROW(rsam::train::train(o));  // released
  fs::remove_all(o.out);
}

// A run whose weights turned NaN must not save them over good ones. The
// learning rate is checked, so the NaN comes from the checkpoint a finished
// run is resumed from: its last save is refused and its weights kept.
TEST(Train, NonFiniteWeightsAreNeverSaved) {
  const auto spec = make_scenes("diverge", 2);
  auto o = short_run(spec, 2, "rsam_train_diverge_out");
  o.adapter = "lora";
  o.corruption = "none";
  rsam::train::train(o);
  const std::string ckpt = o.out + "/checkpoint.pt", adapter = o.out + "/adapter.safetensors";
  const auto weights = rsam::io::read_file(adapter);

  // The same checkpoint with a NaN in its first trained tensor.
  {
    torch::serialize::InputArchive in;
    in.load_from(ckpt);
    torch::serialize::OutputArchive out;
    torch::Tensor step, loader, rng;
    c10::IValue config;
    in.read("step", step);
    in.read("loader", loader);
    in.read("config", config);
    in.read("rng", rng);
    out.write("step", step);
    out.write("loader", loader);
    out.write("config", config);
    out.write("rng", rng);
    std::vector<torch::Tensor> params;
    bool first = true;
    for (const auto& [name, t] : rsam::io::load_safetensors(adapter).tensors) {
      torch::Tensor v;
      in.read("param/" + name, v, /*is_buffer=*/true);
      if (first) v.view(-1)[0] = std::nan("");
      first = false;
      out.write("param/" + name, v, /*is_buffer=*/true);
      params.push_back(v);
    }
    torch::optim::Adam fresh(params);
    torch::serialize::OutputArchive opt;
    fresh.save(opt);
    out.write("optimizer", opt);
    out.save_to(ckpt);
  }
  const auto nan_ckpt = rsam::io::read_file(ckpt);
  o.resume = true;
  const auto e = error_of([&] { rsam::train::train(o); });
  EXPECT_NE(
      e.find("the weights hold NaN or Inf after step 2 (first: 'image_encoder.blocks.0.attn.qkv.adapter.lora_A')"),
      std::string::npos)
      << e;
  EXPECT_EQ(rsam::io::read_file(adapter), weights);
  EXPECT_EQ(rsam::io::read_file(ckpt), nan_ckpt);
  fs::remove_all(o.out);
}
