// Data-safety tests of `rsam train` and `rsam adapter`: outputs never land on
// inputs, one run per folder (refused, resumed or overwritten, never mixed,
// never two at once), a failed write is one line and keeps what was
// complete, and neither a bad number nor a bad adapter config trains silently.
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>

#include <memory>

#include "cli_util.h"

namespace rsam::cli_test {
namespace {

const std::string kCkpt = kData + "tiny_a.pth";

// A folder:IMAGES,MASKS spec of n small scenes (circle on noise).
std::string scenes(const std::string& name, int n) {
  const std::string dir = scene_folder(name, n);
  return "folder:" + dir + "/images," + dir + "/masks";
}

// A tiny adapter run: a few steps, one thread.
std::string train_cmd(const std::string& data, const std::string& out, const std::string& extra = "", int steps = 2) {
  return "train --checkpoint " + kCkpt + " --data " + data + " --adapter lora --corruption none --prompts box" +
         " --steps " + std::to_string(steps) + " --batch 1 --threads 1 --workers 0 --quiet --seed 3 --out " + out +
         " " + extra;
}

bool exists(const std::string& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

// The names in `dir` that are rsam temp files (".NAME.rsam-tmp.PID.XXXX").
std::vector<std::string> temp_files(const std::string& dir) {
  std::vector<std::string> v;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* e = ::readdir(d))
      if (std::string(e->d_name).find(".rsam-tmp.") != std::string::npos) v.push_back(e->d_name);
    ::closedir(d);
  }
  return v;
}

// A copy of the test checkpoint: a failing build must not destroy the original.
std::string copy_ckpt(const std::string& dir) {
  const std::string p = dir + "/base.pth";
  std::system(("cp '" + kCkpt + "' '" + p + "'").c_str());
  return p;
}

// ---- item 2: an output that is an input --------------------------------------

TEST(SafetyTrain, AdapterMergeOntoItsInputsIsRefused) {
  const std::string dir = fresh_dir("tr_merge");
  const std::string base = copy_ckpt(dir), ad = dir + "/lora.safetensors";
  ASSERT_EQ(run("adapter init --checkpoint " + base + " --adapter lora --out " + ad).code, 0);
  const std::string base_bytes = slurp(base), ad_bytes = slurp(ad);
  ASSERT_EQ(::symlink("base.pth", (dir + "/alias.pth").c_str()), 0);
  const std::string merge = "adapter merge --checkpoint " + base + " --adapter " + ad + " --out ";
  expect_one_line_error(run(merge + base), "same file as the checkpoint");
  expect_one_line_error(run(merge + dir + "/./alias.pth"), "same file as the checkpoint");
  expect_one_line_error(run(merge + ad), "same file as the adapter");
  EXPECT_EQ(slurp(base), base_bytes);
  EXPECT_EQ(slurp(ad), ad_bytes);
  // Elsewhere it merges.
  EXPECT_EQ(run(merge + dir + "/merged.safetensors").code, 0);
}

TEST(SafetyTrain, AdapterInitOntoItsInputsIsRefused) {
  const std::string dir = fresh_dir("tr_init");
  const std::string base = copy_ckpt(dir), cfg = dir + "/lora.json";
  std::ofstream(cfg) << R"({"method": "lora", "rank": 2})";
  const std::string base_bytes = slurp(base), cfg_bytes = slurp(cfg);
  const std::string init = "adapter init --checkpoint " + base + " --adapter " + cfg + " --out ";
  expect_one_line_error(run(init + base), "same file as the checkpoint");
  expect_one_line_error(run(init + cfg), "same file as the adapter config");
  EXPECT_EQ(slurp(base), base_bytes);
  EXPECT_EQ(slurp(cfg), cfg_bytes);
}

// The issue's case: pre-training on from D/model.safetensors into D would
// replace the starting weights; an adapter config kept as D/config.json
// would be replaced by the run's config.
TEST(SafetyTrain, TrainOntoItsCheckpointOrConfigIsRefused) {
  const std::string data = scenes("tr_same_data", 2);
  const std::string dir = fresh_dir("tr_same");
  const std::string lora = fresh_dir("tr_same_lora") + "/lora.safetensors";
  ASSERT_EQ(run("adapter init --checkpoint " + kCkpt + " --adapter lora --out " + lora).code, 0);
  ASSERT_EQ(
      run("adapter merge --checkpoint " + kCkpt + " --adapter " + lora + " --out " + dir + "/model.safetensors").code,
      0);
  const std::string model = dir + "/model.safetensors", model_bytes = slurp(model);
  ASSERT_FALSE(model_bytes.empty());
  const std::string full = "train --full --checkpoint " + model + " --data " + data +
                           " --corruption none --prompts box --steps 1 --threads 1 --workers 0 --quiet --out " + dir;
  expect_one_line_error(run(full), "same file as the checkpoint");
  expect_one_line_error(run(full + " --overwrite"), "same file as the checkpoint");
  EXPECT_EQ(slurp(model), model_bytes);

  const std::string dir2 = fresh_dir("tr_same_cfg");
  std::ofstream(dir2 + "/config.json") << R"({"method": "lora", "rank": 2})";
  const std::string cfg_bytes = slurp(dir2 + "/config.json");
  auto r = run("train --checkpoint " + kCkpt + " --adapter " + dir2 + "/config.json --data " + data +
               " --corruption none --prompts box --steps 1 --threads 1 --workers 0 --quiet --out " + dir2);
  expect_one_line_error(r, "same file as the adapter config");
  EXPECT_EQ(slurp(dir2 + "/config.json"), cfg_bytes);
}

// ---- item 3: a folder that holds a run --------------------------------------

TEST(SafetyTrain, AFolderHoldingARunIsRefusedUnlessResumedOrOverwritten) {
  const std::string data = scenes("tr_run_data", 2);
  const std::string dir = fresh_dir("tr_run");
  ASSERT_EQ(run(train_cmd(data, dir)).code, 0);
  const std::string cfg = slurp(dir + "/config.json"), metrics = slurp(dir + "/metrics.jsonl");
  const std::string weights = slurp(dir + "/adapter.safetensors");
  ASSERT_EQ(lines(metrics), 2);

  // Another run into it: refused, the run left as it was.
  expect_one_line_error(run(train_cmd(data, dir, "--lr 1e-2")), "already holds a training run");
  expect_one_line_error(run(train_cmd(data, dir)), "already holds a training run");
  // A resume must use the run's options.
  expect_one_line_error(run(train_cmd(data, dir, "--lr 1e-2 --resume")), "other options");
  expect_one_line_error(run(train_cmd(data, dir, "--resume --overwrite")), "exclude each other");
  EXPECT_EQ(slurp(dir + "/config.json"), cfg);
  EXPECT_EQ(slurp(dir + "/metrics.jsonl"), metrics);
  EXPECT_EQ(slurp(dir + "/adapter.safetensors"), weights);

  // The same run resumed: finished, it keeps its metrics and weights.
  auto resumed = run(train_cmd(data, dir, "--resume"));
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_EQ(slurp(dir + "/metrics.jsonl"), metrics);
  EXPECT_EQ(slurp(dir + "/adapter.safetensors"), weights);

  // Overwritten: a new run from scratch, with its own config and metrics only.
  auto over = run(train_cmd(data, dir, "--lr 1e-2 --overwrite", 1));
  ASSERT_EQ(over.code, 0) << over.err;
  EXPECT_NE(slurp(dir + "/config.json").find("0.01"), std::string::npos);
  EXPECT_EQ(lines(slurp(dir + "/metrics.jsonl")), 1);
  EXPECT_NE(slurp(dir + "/adapter.safetensors"), weights);
}

// A run killed before its first checkpoint left only config.json: a resume
// with other options must not start a different run under it.
TEST(SafetyTrain, AResumeWithOtherOptionsIsRefusedBeforeTheFirstCheckpoint) {
  const std::string data = scenes("tr_early_data", 2);
  const std::string dir = fresh_dir("tr_early");
  ASSERT_EQ(run(train_cmd(data, dir)).code, 0);
  std::remove((dir + "/checkpoint.pt").c_str());
  std::remove((dir + "/adapter.safetensors").c_str());
  const std::string cfg = slurp(dir + "/config.json");
  expect_one_line_error(run(train_cmd(data, dir, "--resume --lr 1e-2")), "'lr' differs");
  EXPECT_EQ(slurp(dir + "/config.json"), cfg);
  EXPECT_EQ(run(train_cmd(data, dir, "--resume")).code, 0);
}

// ---- item 4: two runs into one folder at once -------------------------------

TEST(SafetyTrain, ASecondRunIntoAFolderInUseFailsWithOneLine) {
  const std::string data = scenes("tr_lock_data", 2);
  const std::string dir = fresh_dir("tr_lock");
  // A long first run, in the background; it holds the folder once it trains.
  const std::string first = kBin + " " + train_cmd(data, dir, "--save-every 0", 100000) + " >/dev/null 2>&1";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + first).c_str(), (char*)nullptr);
    _exit(127);
  }
  // Whatever the test finds, the first run is stopped when it ends.
  struct Stop {
    pid_t pid;
    ~Stop() {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  };
  std::unique_ptr<Stop> stop(new Stop{pid});  // (a temporary Stop would kill it at once)
  for (int i = 0; i < 60000 && slurp(dir + "/metrics.jsonl").empty(); ++i) usleep(1000);
  ASSERT_FALSE(slurp(dir + "/metrics.jsonl").empty()) << "the first run did not start";
  const std::string metrics_at_start = slurp(dir + "/metrics.jsonl").substr(0, 20);

  // Another run into it (which old builds started at once) meets the lock
  // before anything else; --overwrite must not remove the running run's files.
  expect_one_line_error(run(train_cmd(data, dir, "", 1)), "is in use by another rsam run (pid ");
  expect_one_line_error(run(train_cmd(data, dir, "--overwrite", 1)), "in use by another rsam run");
  // With --nproc the rank that writes holds the lock (and the launcher none).
  auto n = run(train_cmd(data, dir, "--overwrite --nproc 2", 1));
  if (n.err.find("without c10d's Gloo") == std::string::npos) expect_one_line_error(n, "in use by another rsam run");
  EXPECT_TRUE(exists(dir + "/config.json"));
  EXPECT_EQ(slurp(dir + "/metrics.jsonl").substr(0, 20), metrics_at_start);  // not overwritten

  siginfo_t ended{};  // looked at, not reaped: Stop reaps it
  waitid(P_PID, id_t(pid), &ended, WEXITED | WNOHANG | WNOWAIT);
  EXPECT_EQ(ended.si_pid, 0) << "the first run ended early";
  stop.reset();
  // The kernel dropped the dead run's lock: the folder's checks are reached
  // (this resume has other steps), not the lock.
  auto after = run(train_cmd(data, dir, "--resume"));
  expect_one_line_error(after, "'steps' differs");
}

// ---- item 6: a write failure ------------------------------------------------

// The files may grow to `blocks` * 512 bytes (dash counts -f in 512-byte
// blocks); SIGXFSZ ignored, so write() fails with EFBIG as on a full disk.
std::string file_limit(int blocks) { return "trap '' XFSZ; ulimit -f " + std::to_string(blocks) + "; "; }

TEST(SafetyTrain, AWriteFailureIsOneLineAndKeepsWhatWasComplete) {
  const std::string data = scenes("tr_full_data", 2);
  // Sizes of this run's files, from a run without a limit.
  const std::string ref = fresh_dir("tr_full_ref");
  ASSERT_EQ(run(train_cmd(data, ref)).code, 0);
  const size_t ckpt_size = slurp(ref + "/checkpoint.pt").size(),
               weights_size = slurp(ref + "/adapter.safetensors").size();
  ASSERT_GT(ckpt_size, weights_size + 1024) << "the checkpoint must be the larger file";
  const int blocks = int((weights_size + 1023) / 512) + 1;  // the weights fit, the checkpoint does not
  ASSERT_LT(size_t(blocks) * 512, ckpt_size);

  // The checkpoint cannot be written: one line, no temp file, and the
  // weights (the result) are on disk.
  const std::string dir = fresh_dir("tr_full");
  auto r = run(train_cmd(data, dir), file_limit(blocks));
  expect_one_line_error(r, "cannot write " + dir + "/checkpoint.pt");
  EXPECT_NE(r.err.find("File too large"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("weights are saved"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("terminate"), std::string::npos) << r.err;
  EXPECT_TRUE(temp_files(dir).empty()) << temp_files(dir)[0];
  EXPECT_FALSE(exists(dir + "/checkpoint.pt"));
  EXPECT_EQ(slurp(dir + "/adapter.safetensors"), slurp(ref + "/adapter.safetensors"));
  EXPECT_EQ(lines(slurp(dir + "/metrics.jsonl")), 2);

  // A finished run resumed under the limit: its good checkpoint and weights stay.
  const std::string ckpt = slurp(ref + "/checkpoint.pt"), weights = slurp(ref + "/adapter.safetensors");
  auto again = run(train_cmd(data, ref, "--resume"), file_limit(blocks));
  expect_one_line_error(again, "cannot write " + ref + "/checkpoint.pt");
  EXPECT_TRUE(temp_files(ref).empty());
  EXPECT_EQ(slurp(ref + "/checkpoint.pt"), ckpt);
  EXPECT_EQ(slurp(ref + "/adapter.safetensors"), weights);

  // Nothing fits: the weights' own error, and still no temp file.
  const std::string dir2 = fresh_dir("tr_full2");
  auto none = run(train_cmd(data, dir2), file_limit(2));
  EXPECT_EQ(none.code, 1) << none.err;
  EXPECT_EQ(lines(none.err), 1) << none.err;
  EXPECT_EQ(none.err.rfind("rsam: error: cannot write", 0), 0u) << none.err;
  EXPECT_TRUE(temp_files(dir2).empty());
}

// ---- item 14: numbers that trained silently wrong ---------------------------

TEST(SafetyTrain, NonFiniteOrNegativeNumbersAreRefused) {
  const std::string data = scenes("tr_nan_data", 2);
  const std::string dir = fresh_dir("tr_nan");
  expect_one_line_error(run(train_cmd(data, dir + "/a", "--lr inf")), "learning rate must be a finite number");
  expect_one_line_error(run(train_cmd(data, dir + "/a", "--lr 1e39")), "learning rate");  // overflows float weights
  expect_one_line_error(run(train_cmd(data, dir + "/a", "--lr nan")), "learning rate");
  expect_one_line_error(run(train_cmd(data, dir + "/a", "--clip nan")), "gradient clip");
  expect_one_line_error(run(train_cmd(data, dir + "/a", "--clip -1")), "gradient clip");
  expect_one_line_error(run(train_cmd(data, dir + "/a", "--warmup -5")), "warm-up");
  expect_one_line_error(run(train_cmd(data, dir + "/a", "--wd inf")), "weight decay");
  EXPECT_FALSE(exists(dir + "/a/adapter.safetensors"));
}

// ---- item 16: adapter configs -----------------------------------------------

TEST(SafetyTrain, AdapterConfigsAreCheckedStrictly) {
  const std::string data = scenes("tr_cfg_data", 2);
  const std::string dir = fresh_dir("tr_cfg");
  auto cfg = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir + "/" + name) << text;
    return dir + "/" + name;
  };
  const std::string typo = cfg("typo.json", R"({"method": "lora", "rnak": 16})");
  const std::string frac = cfg("frac.json", R"({"method": "lora", "rank": 8.7})");
  const std::string order = cfg("order.json", R"({"method": "gara", "r_low": 64, "r_high": 32})");
  const std::string tau = cfg("tau.json", R"({"method": "gara", "tau": 0})");
  auto train = [&](const std::string& c) {
    return run("train --checkpoint " + kCkpt + " --data " + data + " --adapter " + c +
               " --steps 1 --threads 1 --quiet --out " + dir + "/run");
  };
  auto r = train(typo);
  expect_one_line_error(r, "unknown key \"rnak\"");
  EXPECT_NE(r.err.find("allowed: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("rank"), std::string::npos) << r.err;
  expect_one_line_error(train(frac), "\"rank\" must be an integer");
  expect_one_line_error(train(order), "\"r_low\" (64) must not exceed \"r_high\" (32)");
  expect_one_line_error(train(tau), "\"tau\" must be a finite number > 0");
  EXPECT_FALSE(exists(dir + "/run/adapter.safetensors"));
  // adapter init reads configs the same way.
  expect_one_line_error(run("adapter init --checkpoint " + kCkpt + " --adapter " + typo + " --out " + dir + "/a.st"),
                        "unknown key \"rnak\"");
  EXPECT_FALSE(exists(dir + "/a.st"));
}

}  // namespace
}  // namespace rsam::cli_test
