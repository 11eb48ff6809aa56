#include "degrade/runner.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <unistd.h>

#include <opencv2/core/utility.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "degrade/corruption.h"
#include "degrade/rng.h"
#include "error.h"
#include "io/image_bytes.h"

namespace fs = std::filesystem;

namespace rsam::degrade {
namespace {

using nlohmann::json;

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

const char* const kImageExtensions[] = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"};

std::vector<uchar> encode_png(const cv::Mat& img, bool rgb) {
  cv::Mat out = img;
  if (rgb) cv::cvtColor(img, out, cv::COLOR_RGB2BGR);
  std::vector<uchar> buf;
  if (!cv::imencode(".png", out, buf)) throw rsam::Error("degrade: PNG encoding failed");
  return buf;
}

// A cut JPEG would decode as grey-padded success: refuse it by name.
void check_complete(const fs::path& path, const std::vector<uchar>& bytes) {
  const std::string problem = rsam::io::image_bytes_problem(bytes.data(), bytes.size());
  if (!problem.empty()) throw rsam::Error("cannot decode '" + path.string() + "': " + problem);
}

// Reads an image as 8-bit RGB; empty Mat if undecodable, rsam::Error if cut
// short. imread is avoided so that a path with odd bytes cannot abort the run.
cv::Mat read_rgb(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::vector<uchar> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.empty()) return {};
  check_complete(path, bytes);
  cv::Mat bgr;
  try {
    bgr = cv::imdecode(bytes, cv::IMREAD_COLOR);
  } catch (const cv::Exception&) {
    return {};
  }
  if (bgr.empty()) return {};
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return rgb;
}

cv::Mat read_mask(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<uchar> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.empty()) return {};
  check_complete(path, bytes);
  try {
    return cv::imdecode(bytes, cv::IMREAD_GRAYSCALE);
  } catch (const cv::Exception&) {
    return {};
  }
}

// The mask of `rel` (relative image path) under `root`: same directory and
// stem, any image extension, .png first.
fs::path find_mask(const fs::path& root, const fs::path& rel) {
  const fs::path base = root / rel.parent_path() / rel.stem();
  for (const char* ext : {".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".webp", ".pgm", ".ppm"}) {
    fs::path p = base;
    p += ext;
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return p;
  }
  return {};
}

struct Item {
  fs::path abs;
  std::string rel;  // generic (forward-slash) path relative to the input root
};

std::vector<Item> collect_inputs(const fs::path& input, const fs::path& output) {
  std::vector<Item> items;
  std::error_code ec;
  if (fs::is_regular_file(input, ec)) {
    items.push_back({input, input.filename().generic_string()});
    return items;
  }
  if (!fs::is_directory(input, ec)) throw rsam::Error("degrade: input '" + input.string() + "' does not exist");
  const fs::path out_abs = fs::weakly_canonical(output, ec);
  for (auto it = fs::recursive_directory_iterator(input, fs::directory_options::skip_permission_denied, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    // Never read our own outputs when the output folder sits inside the input.
    if (it->is_directory(ec) && fs::weakly_canonical(it->path(), ec) == out_abs) {
      it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file(ec) || !is_image_path(it->path().string())) continue;
    items.push_back({it->path(), fs::relative(it->path(), input, ec).generic_string()});
  }
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.rel < b.rel; });
  return items;
}

std::string output_rel(const std::string& corruption, const std::string& rel) {
  fs::path p = fs::path(corruption) / rel;
  p.replace_extension(".png");
  return p.generic_string();
}

std::string done_key(const std::string& output, uint64_t seed, const json& params) {
  return output + "|" + std::to_string(seed) + "|" + params.dump();
}

// Completed outputs recorded in an existing manifest. A line torn by a kill
// does not parse and is ignored; its output is simply redone.
std::set<std::string> load_manifest(const fs::path& path) {
  std::set<std::string> done;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || !j.contains("output") || !j.contains("seed") || !j.contains("params"))
      continue;
    if (!j["output"].is_string() || !j["seed"].is_number_unsigned()) continue;
    done.insert(done_key(j["output"].get<std::string>(), j["seed"].get<uint64_t>(), j["params"]));
  }
  return done;
}

// Appends JSON lines, one writer at a time, flushed per line.
class Manifest {
 public:
  explicit Manifest(const fs::path& path) {
    bool needs_newline = false;
    {
      std::ifstream in(path, std::ios::binary | std::ios::ate);
      if (in && in.tellg() > 0) {
        in.seekg(-1, std::ios::end);
        needs_newline = in.get() != '\n';
      }
    }
    out_.open(path, std::ios::app | std::ios::binary);
    if (!out_) throw rsam::Error("degrade: cannot write manifest '" + path.string() + "'");
    if (needs_newline) out_ << '\n';
  }
  void append(const json& j) {
    std::lock_guard<std::mutex> lock(mu_);
    out_ << j.dump() << '\n';
    out_.flush();
    if (!out_) throw rsam::Error("degrade: writing the manifest failed");
  }

 private:
  std::mutex mu_;
  std::ofstream out_;
};

// Restores cv::getNumThreads() on scope exit.
struct CvThreadsGuard {
  int saved = cv::getNumThreads();
  ~CvThreadsGuard() { cv::setNumThreads(saved); }
};

}  // namespace

bool is_image_path(const std::string& path) {
  const std::string ext = lower(fs::path(path).extension().string());
  for (const char* e : kImageExtensions)
    if (ext == e) return true;
  return false;
}

uint64_t item_seed(uint64_t run_seed, const std::string& relative_path, const std::string& corruption, int severity) {
  return derive_seed(derive_seed(run_seed, hash_string(relative_path)),
                     hash_string(corruption + "@" + std::to_string(severity)));
}

void write_file_atomic(const std::string& path, const std::vector<uchar>& bytes) {
  static std::atomic<uint64_t> counter{0};
  const fs::path target(path);
  std::error_code ec;
  if (target.has_parent_path()) {
    fs::create_directories(target.parent_path(), ec);
    if (ec) throw rsam::Error("degrade: cannot create directory '" + target.parent_path().string() + "': " + ec.message());
  }
  const fs::path tmp = target.string() + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) {
      fs::remove(tmp, ec);
      throw rsam::Error("degrade: cannot write '" + path + "'");
    }
  }
  fs::rename(tmp, target, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw rsam::Error("degrade: cannot rename into '" + path + "'");
  }
}

RunSummary run(const RunOptions& o) {
  if (o.input.empty()) throw rsam::Error("degrade: no input given");
  if (o.output.empty()) throw rsam::Error("degrade: no output directory given");
  if (o.severity < kMinSeverity || o.severity > kMaxSeverity)
    throw rsam::Error("degrade: severity must be in 1..5, got " + std::to_string(o.severity));
  if (o.jobs < 1) throw rsam::Error("degrade: jobs must be at least 1");
  const std::vector<std::string> names = expand(o.corruption);
  std::vector<std::unique_ptr<Corruption>> corruptions;
  for (const auto& n : names) corruptions.push_back(create(n, o.severity));
  const fs::path mask_root = o.masks;
  std::error_code ec;
  if (!o.masks.empty() && !fs::is_directory(mask_root, ec))
    throw rsam::Error("degrade: mask directory '" + o.masks + "' does not exist");

  const fs::path out_root = o.output;
  fs::create_directories(out_root, ec);
  if (ec) throw rsam::Error("degrade: cannot create output directory '" + o.output + "': " + ec.message());
  const std::vector<Item> items = collect_inputs(o.input, out_root);
  if (items.empty()) throw rsam::Error("degrade: no images found in '" + o.input + "'");

  const fs::path manifest_path = out_root / "manifest.jsonl";
  const std::set<std::string> done = load_manifest(manifest_path);
  Manifest manifest(manifest_path);

  RunSummary summary;
  summary.images = items.size();
  summary.outputs = items.size() * corruptions.size();
  std::mutex mu;  // guards summary and the log
  std::atomic<size_t> next{0}, finished{0};

  auto process = [&](const Item& item) {
    // Work out what is left for this image before reading it, so a resumed
    // run over finished images costs a manifest lookup per output.
    struct Pending {
      const Corruption* c;
      uint64_t seed;
      std::string out_rel, mask_rel;
    };
    std::vector<Pending> pending;
    size_t skipped = 0;
    for (const auto& c : corruptions) {
      Pending t{c.get(), item_seed(o.seed, item.rel, c->name(), c->severity()), output_rel(c->name(), item.rel), {}};
      if (!o.masks.empty()) t.mask_rel = output_rel("masks/" + c->name(), item.rel);
      std::error_code e;
      const bool exists = fs::exists(out_root / t.out_rel, e) && (t.mask_rel.empty() || fs::exists(out_root / t.mask_rel, e));
      if (exists && done.count(done_key(t.out_rel, t.seed, c->params()))) {
        ++skipped;
        continue;
      }
      pending.push_back(std::move(t));
    }
    std::string failure;
    size_t written = 0;
    if (!pending.empty()) {
      try {
        const cv::Mat rgb = read_rgb(item.abs);
        if (rgb.empty()) throw rsam::Error("unreadable image");
        cv::Mat mask;
        if (!o.masks.empty()) {
          const fs::path mp = find_mask(mask_root, item.rel);
          if (mp.empty()) throw rsam::Error("no mask found under '" + o.masks + "'");
          mask = read_mask(mp);
          if (mask.empty()) throw rsam::Error("unreadable mask '" + mp.string() + "'");
          if (mask.size() != rgb.size()) throw rsam::Error("mask size differs from the image's");
        }
        for (const auto& t : pending) {
          const bool warp = !mask.empty() && o.warp_masks && spec(t.c->name()).geometric;
          Result r = t.c->run(rgb, t.seed, warp ? mask : cv::Mat());
          write_file_atomic((out_root / t.out_rel).string(), encode_png(r.image, true));
          if (!mask.empty()) write_file_atomic((out_root / t.mask_rel).string(), encode_png(warp ? r.mask : mask, false));
          json line = {{"source", item.rel},
                       {"output", t.out_rel},
                       {"corruption", t.c->name()},
                       {"severity", t.c->severity()},
                       {"seed", t.seed},
                       {"run_seed", o.seed},
                       {"params", t.c->params()},
                       {"drawn", r.drawn}};
          if (!mask.empty()) {
            line["mask"] = t.mask_rel;
            line["mask_warped"] = warp;
          }
          manifest.append(line);
          ++written;
        }
      } catch (const std::exception& e) {
        failure = item.rel + ": " + e.what();
      }
    }
    const size_t n = ++finished;
    std::lock_guard<std::mutex> lock(mu);
    summary.written += written;
    summary.skipped += skipped;
    if (!failure.empty()) {
      ++summary.failed;
      summary.failures.push_back(failure);
    }
    if (o.log) {
      *o.log << "[" << n << "/" << items.size() << "] " << item.rel;
      if (!failure.empty())
        *o.log << " FAILED: " << failure.substr(item.rel.size() + 2);
      else if (pending.empty())
        *o.log << " (done earlier)";
      else
        *o.log << " (" << written << " written" << (skipped ? ", " + std::to_string(skipped) + " done earlier" : "") << ")";
      *o.log << '\n' << std::flush;
    }
  };

  auto worker = [&] {
    for (size_t i = next++; i < items.size(); i = next++) process(items[i]);
  };
  CvThreadsGuard guard;
  if (o.jobs > 1) {
    // Parallel over images; OpenCV's own threads would only oversubscribe.
    cv::setNumThreads(1);
    std::vector<std::thread> threads;
    for (int j = 0; j < o.jobs; ++j) threads.emplace_back(worker);
    for (auto& t : threads) t.join();
  } else {
    worker();
  }
  std::sort(summary.failures.begin(), summary.failures.end());
  if (o.log) {
    *o.log << "degrade: " << summary.images << " images, " << summary.written << " outputs written, " << summary.skipped
           << " already done, " << summary.failed << " failed\n";
  }
  return summary;
}

// ------------------------------------------------------------ preview
cv::Mat contact_sheet(const cv::Mat& rgb, const std::vector<std::string>& names, int severity, uint64_t seed, int tile,
                      int columns, int work_size) {
  if (rgb.empty() || rgb.type() != CV_8UC3) throw rsam::Error("degrade: preview needs an 8-bit RGB image");
  if (tile < 32) throw rsam::Error("degrade: preview tiles must be at least 32 px");
  cv::Mat work = rgb;
  const int longest = std::max(rgb.cols, rgb.rows);
  if (longest > work_size) {
    const double s = static_cast<double>(work_size) / longest;
    cv::resize(rgb, work, cv::Size(std::max(1, static_cast<int>(std::lround(rgb.cols * s))),
                                   std::max(1, static_cast<int>(std::lround(rgb.rows * s)))),
               0, 0, cv::INTER_AREA);
  }
  const int th = std::max(1, static_cast<int>(std::lround(static_cast<double>(tile) * work.rows / work.cols)));
  const int n = static_cast<int>(names.size()) + 1;
  int cols = columns;
  if (cols <= 0) {  // about square, preferring a width that leaves no empty cells
    const int base = static_cast<int>(std::ceil(std::sqrt(static_cast<double>(n))));
    cols = base;
    for (int c = base; c <= base + 3; ++c)
      if ((n + c - 1) / c * c - n < (n + cols - 1) / cols * cols - n) cols = c;
  }
  const int rows = (n + cols - 1) / cols;
  const int gap = 4;
  cv::Mat sheet(rows * (th + gap) + gap, cols * (tile + gap) + gap, CV_8UC3, cv::Scalar::all(255));
  auto place = [&](int i, const cv::Mat& img, const std::string& label) {
    cv::Mat t;
    cv::resize(img, t, cv::Size(tile, th), 0, 0, cv::INTER_AREA);
    const double font = std::max(0.35, tile / 600.0);
    int base = 0;
    const cv::Size ts = cv::getTextSize(label, cv::FONT_HERSHEY_SIMPLEX, font, 1, &base);
    cv::Mat strip = t(cv::Rect(0, 0, std::min(tile, ts.width + 8), std::min(th, ts.height + base + 6)));
    strip *= 0.35;  // darken behind the label so it reads on any tile
    cv::putText(t, label, cv::Point(4, ts.height + 3), cv::FONT_HERSHEY_SIMPLEX, font, cv::Scalar::all(255), 1,
                cv::LINE_AA);
    t.copyTo(sheet(cv::Rect(gap + (i % cols) * (tile + gap), gap + (i / cols) * (th + gap), tile, th)));
  };
  place(0, work, "original");
  for (size_t i = 0; i < names.size(); ++i) {
    auto c = create(names[i], severity);
    const Spec& s = spec(names[i]);
    const std::string label = names[i] + (s.levels.size() == 1 ? "" : " s" + std::to_string(c->severity()));
    place(static_cast<int>(i) + 1, c->run(work, item_seed(seed, "preview", names[i], c->severity())).image, label);
  }
  return sheet;
}

void preview(const PreviewOptions& o) {
  if (o.output.empty()) throw rsam::Error("degrade: --preview needs --out SHEET.png");
  const cv::Mat rgb = read_rgb(o.image);
  if (rgb.empty()) throw rsam::Error("degrade: cannot read image '" + o.image + "'");
  const cv::Mat sheet = contact_sheet(rgb, expand(o.corruption), o.severity, o.seed, o.tile);
  write_file_atomic(o.output, encode_png(sheet, true));
}

// ------------------------------------------------------------ listing
json list_json() {
  json out = json::array();
  for (const auto& s : registry()) {
    json levels = json::array();
    for (const auto& l : s.levels) levels.push_back(l);
    out.push_back({{"name", s.name},
                   {"group", s.group},
                   {"summary", s.summary},
                   {"geometric", s.geometric},
                   {"stochastic", s.stochastic},
                   {"levels", levels}});
  }
  return out;
}

std::string list_text() {
  std::ostringstream os;
  std::string group;
  for (const auto& s : registry()) {
    if (s.group != group) {
      group = s.group;
      os << (group == "robustseg" ? "Robust-Seg (RobustSAM), severity 1..5, 3 = reference strength"
             : group == "lqseg"   ? "LQSeg (GleSAM), fixed levels; --severity does not apply"
                                  : "Extras, severity 1..5")
         << ":\n";
    }
    os << "  " << s.name << " - " << s.summary;
    if (s.geometric) os << " [geometric: --warp-masks moves masks too]";
    if (!s.stochastic) os << " [deterministic]";
    os << "\n";
    if (s.levels.size() == 1) {
      os << "      params: " << s.levels[0].dump() << "\n";
    } else {
      for (size_t i = 0; i < s.levels.size(); ++i) os << "      " << i + 1 << ": " << s.levels[i].dump() << "\n";
    }
  }
  os << "Sets: robustseg (the 15 above), lqseg (lq1 lq2 lq3), extras, all\n";
  return os.str();
}

std::string levels_markdown() {
  std::ostringstream os;
  auto cell = [](const json& v) {
    if (v.is_array()) {
      std::string s;
      const bool negative = v.size() == 2 && v[0].is_number() && v[0].get<double>() < 0;
      for (size_t i = 0; i < v.size(); ++i)
        s += (i ? (v.size() == 2 ? (negative ? " to " : "–") : ", ") : "") + json(v[i]).dump();
      return v.size() == 2 ? s : "[" + s + "]";
    }
    return v.dump();
  };
  os << "| corruption | parameter | 1 | 2 | **3 (reference)** | 4 | 5 |\n";
  os << "|---|---|---|---|---|---|---|\n";
  for (const auto& s : registry()) {
    if (s.levels.size() != 5) continue;
    bool first = true;
    for (auto it = s.levels[0].begin(); it != s.levels[0].end(); ++it) {
      os << "| " << (first ? "`" + s.name + "`" : "") << " | " << it.key();
      for (size_t i = 0; i < 5; ++i) {
        const std::string c = cell(s.levels[i].at(it.key()));
        os << " | " << (i == 2 ? "**" + c + "**" : c);
      }
      os << " |\n";
      first = false;
    }
  }
  os << "\nLQSeg presets (no severity scale):\n\n| parameter | lq1 | lq2 | lq3 |\n|---|---|---|---|\n";
  const json& l1 = spec("lq1").levels[0];
  for (auto it = l1.begin(); it != l1.end(); ++it)
    os << "| " << it.key() << " | " << cell(*it) << " | " << cell(spec("lq2").levels[0].at(it.key())) << " | "
       << cell(spec("lq3").levels[0].at(it.key())) << " |\n";
  return os.str();
}

}  // namespace rsam::degrade
