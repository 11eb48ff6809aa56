// Data-safety tests of the CLI (data): synth, eval, compare, study and demo,
// each the user's command against a temporary tree.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "io/fs.h"

namespace fs = std::filesystem;

namespace rsam::cli_test {
namespace {

const std::string kCkpt = kData + "tiny_a.pth";

std::string eval_cmd(const std::string& scenes) {
  return "eval --checkpoint " + kCkpt + " --data folder:" + scenes + "/images," + scenes +
         "/masks --corruption clean --prompts box --threads 1 --quiet";
}

// The pid of a process that has exited (and been reaped).
long dead_pid() {
  const pid_t pid = fork();
  if (pid == 0) _exit(0);
  int status = 0;
  waitpid(pid, &status, 0);
  return long(pid);
}

std::vector<std::string> entries_starting(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind(prefix, 0) == 0) out.push_back(e.path().filename().string());
  return out;
}

// Issue 37 item 2: `compare A B --out B/results.json` replaced a compared
// report with the table. Same file by device and inode, so a link is caught.
TEST(SafetyData, CompareOutOntoAComparedReportIsRefused) {
  const std::string scenes = scene_folder("cmp_scenes", 2), d = fresh_dir("cmp");
  const auto e = run(eval_cmd(scenes) + " --report " + d + "/A");
  ASSERT_EQ(e.code, 0) << e.err;
  fs::copy(d + "/A", d + "/B", fs::copy_options::recursive);
  const std::string before = slurp(d + "/B/results.json");
  expect_one_line_error(run("compare " + d + "/A " + d + "/B --out " + d + "/B/results.json"), "is the same file as");
  EXPECT_EQ(slurp(d + "/B/results.json"), before);
  fs::create_symlink(d + "/A/results.json", d + "/table.md");
  expect_one_line_error(run("compare " + d + "/A " + d + "/B --out " + d + "/table.md"), "is the same file as");
  EXPECT_EQ(slurp(d + "/A/results.json"), before);
  const auto ok = run("compare " + d + "/A " + d + "/B --out " + d + "/other.md");
  EXPECT_EQ(ok.code, 0) << ok.err;
  EXPECT_FALSE(slurp(d + "/other.md").empty());
}

// Issue 37 item 2: eval's report files must not land on its inputs (COCO
// result files are often called results.json).
TEST(SafetyData, EvalReportOntoTheAnnotationsIsRefused) {
  const std::string d = scene_folder("eval_onto_ann", 1);
  const std::string ann = R"({"images":[{"id":1,"file_name":"s0.png","width":64,"height":56}],)"
                          R"("annotations":[{"id":1,"image_id":1,"segmentation":[[15,12,27,12,27,24,15,24]]}]})";
  std::ofstream(d + "/results.json") << ann;
  const auto r = run("eval --checkpoint " + kCkpt + " --data coco:" + d + "/results.json," + d +
                     "/images --corruption clean --prompts box --threads 1 --quiet --report " + d);
  expect_one_line_error(r, "is the same file as the dataset file");
  EXPECT_EQ(slurp(d + "/results.json"), ann);
}

// Issue 37 item 2: `demo --out` onto the adapter it runs.
TEST(SafetyData, DemoOutOntoTheAdapterIsRefused) {
  const std::string d = fresh_dir("demo_onto");
  std::ofstream(d + "/lora.json") << R"({"method": "lora", "rank": 2})";
  // Adapters are recognised by content, so a picture's name does not stop one loading.
  const auto init = run("adapter init --checkpoint " + kCkpt + " --adapter " + d + "/lora.json --out " + d + "/ad.png");
  ASSERT_EQ(init.code, 0) << init.err;
  const std::string before = slurp(d + "/ad.png");
  const auto r =
      run("demo --checkpoint " + kCkpt + " --adapter " + d + "/ad.png --out " + d + "/ad.png --threads 1 --size 64");
  expect_one_line_error(r, "is the same file as the adapter");
  EXPECT_EQ(slurp(d + "/ad.png"), before);
}

// Issue 37 item 4: a second synth, eval or study into a folder another run
// holds is refused instead of interleaving with it.
TEST(SafetyData, FoldersInUseAreRefused) {
  const std::string scenes = scene_folder("inuse_scenes", 2), d = fresh_dir("inuse");
  for (const char* sub : {"synth", "report", "study"}) fs::create_directories(d + "/" + sub);
  const io::FolderLock a(d + "/synth"), b(d + "/report"), c(d + "/study");
  expect_one_line_error(run("synth --out " + d + "/synth --count 2 --size 64 --photos none"),
                        "in use by another rsam run");
  EXPECT_FALSE(fs::exists(d + "/synth/images"));
  expect_one_line_error(run(eval_cmd(scenes) + " --report " + d + "/report"), "in use by another rsam run");
  EXPECT_FALSE(fs::exists(d + "/report/results.json"));
  const std::string spec = "folder:" + scenes + "/images," + scenes + "/masks";
  expect_one_line_error(run("study --checkpoint " + kCkpt + " --train " + spec + " --val " + spec +
                            " --method l=lora --seeds 1 --steps 1 --batch 1 --max-samples 1 --gate-images 1"
                            " --corruption clean,gauss_noise --prompts box --quiet --threads 1 --out " +
                            d + "/study --doc " + d + "/study.md"),
                        "in use by another rsam run");
  EXPECT_FALSE(fs::exists(d + "/study.md"));
}

// Issue 37 item 5: a synth killed half-way, then run again with another
// seed, mixed two datasets. Its options are on disk before any scene.
TEST(SafetyData, SynthKilledThenRerunWithOtherSeedIsRefused) {
  const std::string d = fresh_dir("synth_killed"), set = d + "/set";
  const std::string common = " --size 320 --photos none";
  const pid_t pid = fork();
  if (pid == 0) {
    execl(kBin.c_str(), kBin.c_str(), "synth", "--out", set.c_str(), "--count", "400", "--size", "320", "--photos",
          "none", "--seed", "1", static_cast<char*>(nullptr));
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!fs::exists(set + "/masks/000001.png") && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(fs::exists(set + "/masks/000001.png"));
  ASSERT_FALSE(fs::exists(set + "/annotations.json")) << "killed before its end";

  expect_one_line_error(run("synth --out " + set + " --count 3 --seed 2" + common), "other options (seed)");
  EXPECT_FALSE(fs::exists(set + "/annotations.json"));
  // The same options resume: the set is the one a single run makes.
  const auto resumed = run("synth --out " + set + " --count 3 --seed 1" + common);
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  const auto whole = run("synth --out " + d + "/whole --count 3 --seed 1" + common);
  ASSERT_EQ(whole.code, 0) << whole.err;
  for (const char* f : {"/annotations.json", "/images/000000.png", "/masks/000001.png", "/images/000002.png"})
    EXPECT_EQ(slurp(set + f), slurp(d + "/whole" + f)) << f;
}

// Issue 37 item 13: a study re-run with other options reported them over
// the adapters trained with the old ones.
TEST(SafetyData, StudyRerunWithOtherOptionsIsRefused) {
  const std::string d = fresh_dir("study_opts");
  const auto s = run("synth --out " + d + "/scenes --count 2 --size 64 --photos none");
  ASSERT_EQ(s.code, 0) << s.err;
  const std::string spec = "coco:" + d + "/scenes/annotations.json," + d + "/scenes/images";
  const std::string study = "study --checkpoint " + kCkpt + " --train " + spec + " --val " + spec +
                            " --method l=lora --seeds 1 --batch 1 --max-samples 1 --gate-images 1"
                            " --corruption clean,gauss_noise --prompts box --quiet --threads 1 --out " +
                            d + "/runs --doc " + d + "/results.md";
  const auto first = run(study + " --steps 1");
  ASSERT_EQ(first.code, 0) << first.err;
  const std::string adapter = slurp(d + "/runs/s0/l.safetensors");
  expect_one_line_error(run(study + " --steps 2"), "was made with other options (steps 1, now 2)");
  EXPECT_EQ(slurp(d + "/runs/s0/l.safetensors"), adapter);
  // The same options reuse the run.
  const auto again = run(study + " --steps 1");
  EXPECT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(slurp(d + "/runs/s0/l.safetensors"), adapter);
}

// Issue 37 item 17, through the CLI: the id is named, nothing is evaluated.
TEST(SafetyData, CocoDuplicatedImageIdIsRefused) {
  const std::string d = scene_folder("coco_dup", 2);
  std::ofstream(d + "/ann.json") << R"({"images":[{"id":3,"file_name":"s0.png","width":64,"height":56},)"
                                 << R"({"id":3,"file_name":"s1.png","width":64,"height":56}],)"
                                 << R"("annotations":[{"id":1,"image_id":3,"segmentation":[[15,12,27,12,27,24]]}]})";
  expect_one_line_error(run("eval --checkpoint " + kCkpt + " --data coco:" + d + "/ann.json," + d +
                            "/images --corruption clean --prompts box --threads 1 --quiet"),
                        "image id 3 twice");
}

// Issue 37 item 19: a bad --report is found before any loading or scoring
// (here the checkpoint does not even exist: its error would come first if
// the folder were checked last).
TEST(SafetyData, EvalChecksItsReportFolderFirst) {
  const std::string scenes = scene_folder("report_first", 1), d = fresh_dir("report_first_out");
  const std::string cmd = "eval --checkpoint " + d + "/missing.pth --data folder:" + scenes + "/images," + scenes +
                          "/masks --corruption clean --prompts box --threads 1 --quiet --report ";
  std::ofstream(d + "/file") << "x";
  expect_one_line_error(run(cmd + d + "/file"), "is a file, not a folder");
  expect_one_line_error(run(cmd + "/proc/rsam-report"), "cannot make the report folder");
  expect_one_line_error(run(cmd + "/proc"), "cannot write in the report folder");
}

// Issue 37 item 19: file names that are not UTF-8 (the sample ids come from
// them) broke the JSON writer after all the scoring; they are escaped.
TEST(SafetyData, NonUtf8NamesDoNotBreakTheEvalReport) {
  const std::string d = scene_folder("non_utf8", 1);
  fs::rename(d + "/images/s0.png", d + "/images/s\xff.png");
  fs::rename(d + "/masks/s0.png", d + "/masks/s\xff.png");
  const std::string report = d + "/rep\xfe";
  const auto r = run(eval_cmd(d) + " --report '" + report + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(slurp(report + "/results.json"));
  ASSERT_EQ(j["records"].size(), 1u);
  EXPECT_EQ(j["records"][0]["sample"], "s\\xff");
  EXPECT_NE(slurp(report + "/report.md").find("| clean |"), std::string::npos);
}

// Issue 37 item 20: a killed `eval --nproc` left its temp folder for good.
// They carry rsam's temp naming with the owner's pid and are cleaned by the
// next run once that process is gone; they live in the report folder, or in
// $TMPDIR without one.
TEST(SafetyData, KilledEvalTempFoldersAreCleaned) {
  const std::string scenes = scene_folder("nproc_scenes", 2), report = fresh_dir("nproc_report"),
                    tmpdir = fresh_dir("nproc_tmp");
  const std::string dead = std::to_string(dead_pid()), alive = std::to_string(getpid());
  for (const std::string& stale :
       {report + "/.eval.rsam-tmp." + dead + ".abcdefghijkl", tmpdir + "/.eval.rsam-tmp." + dead + ".abcdefghijkl",
        tmpdir + "/.eval.rsam-tmp." + alive + ".qwertyuiopas"}) {
    fs::create_directories(stale);
    std::ofstream(stale + "/rank0.json") << "[]";
  }
  const auto a = run(eval_cmd(scenes) + " --nproc 2 --report " + report);
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_TRUE(fs::exists(report + "/results.json"));
  EXPECT_TRUE(entries_starting(report, ".eval.rsam-tmp.").empty());
  const auto b = run(eval_cmd(scenes) + " --nproc 2", "TMPDIR=" + tmpdir + " ");
  ASSERT_EQ(b.code, 0) << b.err;
  const auto left = entries_starting(tmpdir, ".eval.rsam-tmp.");
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0], ".eval.rsam-tmp." + alive + ".qwertyuiopas") << "a live process's folder stays";
}

}  // namespace
}  // namespace rsam::cli_test
