#include "degrade/runner.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include <opencv2/core/utility.hpp>
#include <opencv2/imgproc.hpp>

#include "degrade/corruption.h"
#include "degrade/rng.h"
#include "error.h"
#include "io/fs.h"
#include "io/image_codec.h"
#include "io/text.h"

namespace fs = std::filesystem;

namespace rsam::degrade {
namespace {

using nlohmann::json;

// For one-line messages: file names are bytes, not necessarily UTF-8.
std::string printable(const std::string& s) { return rsam::io::escape_bytes(s); }

// Instance masks are label maps: read as stored, so a 16-bit mask keeps its
// ids (converting it to 8 bits would scramble them). 8-bit colour masks are
// read as grey, as they always were.
cv::Mat read_mask(const fs::path& path) {
  const std::vector<uint8_t> bytes = io::read_file(path.string());
  cv::Mat m = io::decode_image(bytes.data(), bytes.size(), io::ImageRead::Unchanged, path.string());
  if (m.depth() == CV_8U && m.channels() != 1)
    m = io::decode_image(bytes.data(), bytes.size(), io::ImageRead::Gray, path.string());
  if ((m.depth() != CV_8U && m.depth() != CV_16U) || m.channels() != 1)
    throw rsam::Error("mask '" + printable(path.string()) + "' is not a single-channel 8- or 16-bit image");
  return m;
}

// The corruptions move 8-bit label maps by nearest-neighbour sampling and
// per-pixel majority only, never blending, so a 16-bit mask is warped exactly
// through an 8-bit index of its distinct ids (0 kept as 0) and mapped back.
Result corrupt(const Corruption& c, const cv::Mat& rgb, uint64_t seed, const cv::Mat& mask) {
  if (mask.empty() || mask.depth() == CV_8U) return c.run(rgb, seed, mask);
  std::vector<uint8_t> seen(65536, 0);
  seen[0] = 1;
  for (int y = 0; y < mask.rows; ++y) {
    const uint16_t* p = mask.ptr<uint16_t>(y);
    for (int x = 0; x < mask.cols; ++x) seen[p[x]] = 1;
  }
  std::vector<uint16_t> ids;
  std::vector<uint8_t> index_of(65536, 0);
  for (size_t v = 0; v < seen.size(); ++v)
    if (seen[v]) {
      index_of[v] = static_cast<uint8_t>(ids.size());
      ids.push_back(static_cast<uint16_t>(v));
    }
  if (ids.size() > 256)
    throw rsam::Error("warping masks can move a 16-bit mask with at most 255 instance ids, this one has " +
                      std::to_string(ids.size() - 1) + " (without warping, masks are copied unchanged)");
  cv::Mat index(mask.size(), CV_8U);
  for (int y = 0; y < mask.rows; ++y) {
    const uint16_t* p = mask.ptr<uint16_t>(y);
    uint8_t* q = index.ptr<uint8_t>(y);
    for (int x = 0; x < mask.cols; ++x) q[x] = index_of[p[x]];
  }
  Result r = c.run(rgb, seed, index);
  cv::Mat back(mask.size(), CV_16U);
  for (int y = 0; y < mask.rows; ++y) {
    const uint8_t* p = r.mask.ptr<uint8_t>(y);
    uint16_t* q = back.ptr<uint16_t>(y);
    for (int x = 0; x < mask.cols; ++x) q[x] = ids[p[x]];
  }
  r.mask = back;
  return r;
}

// The mask of `rel` (relative image path) under `root`: same directory and
// stem, any image extension, .png first.
fs::path find_mask(const fs::path& root, const fs::path& rel) {
  const fs::path base = root / rel.parent_path() / rel.stem();
  // The extensions of io::image_extensions(), in the order a mask is
  // preferred when a stem has several (lossless first): not that list's order.
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

struct Inputs {
  std::vector<Item> items;
  std::vector<std::string> skipped;  // folders left out: an earlier degrade's output
};

Inputs collect_inputs(const fs::path& input, const fs::path& output) {
  Inputs found;
  std::error_code ec;
  if (fs::is_regular_file(input, ec)) {
    found.items.push_back({input, input.filename().generic_string()});
    return found;
  }
  if (!fs::is_directory(input, ec))
    throw rsam::Error("degrade: input '" + printable(input.string()) + "' does not exist");
  const fs::path out_abs = fs::weakly_canonical(output, ec);
  for (auto it = fs::recursive_directory_iterator(input, fs::directory_options::skip_permission_denied, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    // Lexical, never fs::relative: a link 'in/a.png -> ../src/a.png' is
    // 'a.png', not the target's path (which named an output outside --output).
    const std::string rel = it->path().lexically_relative(input).generic_string();
    if (it->is_directory(ec)) {
      // Never read our own outputs, nor an earlier degrade's (a folder
      // holding a manifest), when they sit inside the input.
      const bool ours = fs::weakly_canonical(it->path(), ec) == out_abs;
      if (ours || fs::exists(it->path() / "manifest.jsonl", ec)) {
        if (!ours) found.skipped.push_back(rel);
        it.disable_recursion_pending();
      }
      continue;
    }
    if (!it->is_regular_file(ec) || !is_image_path(it->path().string())) continue;
    found.items.push_back({it->path(), rel});
  }
  std::sort(found.items.begin(), found.items.end(), [](const Item& a, const Item& b) { return a.rel < b.rel; });
  return found;
}

std::string output_rel(const std::string& corruption, const std::string& rel) {
  fs::path p = fs::path(corruption) / rel;
  p.replace_extension(".png");
  return p.generic_string();
}

// Refusals that need the list of inputs, made before anything is written: a
// name the JSON manifest cannot hold (it used to be written, then counted as
// failed on every run), and two inputs that would share an output.
void check_names(const std::vector<Item>& items, const std::string& input) {
  for (const Item& item : items) {
    if (!rsam::io::is_utf8(item.rel))
      throw rsam::Error("degrade: the file name '" + printable(item.rel) + "' in '" + printable(input) +
                        "' is not valid UTF-8 and cannot be recorded in the manifest; rename it");
  }
  std::map<std::string, const std::string*> by_output;
  for (const Item& item : items) {
    const std::string out = output_rel("", item.rel);
    const auto [at, fresh] = by_output.emplace(out, &item.rel);
    if (!fresh)
      throw rsam::Error("degrade: '" + printable(*at->second) + "' and '" + printable(item.rel) + "' in '" +
                        printable(input) + "' would both be written as '" + printable(out) +
                        "' (outputs are PNG files named by stem); rename one of them");
  }
}

bool lies_inside(const fs::path& path, const fs::path& root) {
  std::error_code ec;
  const fs::path p = fs::weakly_canonical(path, ec), r = fs::weakly_canonical(root, ec);
  const auto mismatch = std::mismatch(r.begin(), r.end(), p.begin(), p.end());
  return mismatch.first == r.end();
}

// --output must not be --input or --masks (its outputs would be degraded
// again on the next run), and when a source tree lies inside --output no
// output may land on a source (--input OUT/fog --output OUT).
void check_folders(const RunOptions& o, const std::vector<Item>& items, const std::vector<std::string>& names) {
  const std::pair<std::string, std::string> sources[] = {{"the input folder", o.input}, {"the mask folder", o.masks}};
  for (const auto& [flag, path] : sources)
    if (io::same_file(o.output, path))
      throw rsam::Error("degrade: the output folder '" + printable(o.output) + "' is " + flag + " itself (" +
                        printable(path) + "); write the outputs to another folder");
  const bool sources_inside = lies_inside(o.input, o.output) || (!o.masks.empty() && lies_inside(o.masks, o.output));
  if (!sources_inside) return;
  for (const Item& item : items) {
    const fs::path mask = o.masks.empty() ? fs::path() : find_mask(o.masks, item.rel);
    for (const std::string& name : names) {
      const fs::path out = fs::path(o.output) / output_rel(name, item.rel);
      const fs::path out_mask = fs::path(o.output) / output_rel("masks/" + name, item.rel);
      const std::pair<fs::path, fs::path> pairs[] = {{out, item.abs}, {out_mask, mask}};
      for (const auto& [written, source] : pairs)
        if (io::same_file(written.string(), source.string()))
          throw rsam::Error("degrade: the output '" + printable(written.string()) + "' would overwrite its source '" +
                            printable(source.string()) + "'; choose an output folder outside the sources");
    }
  }
}

// How a manifest line's mask was made: "" (none), "copied" or "warped". Part
// of what makes an output "the same job".
std::string done_key(uint64_t seed, const json& params, const std::string& mask) {
  return std::to_string(seed) + "|" + params.dump() + "|" + mask;
}

// Each output's done key from its LATEST line in an existing manifest: an
// earlier line (seed 1, then seed 2 over it) describes bytes that are gone. A
// line torn by a kill does not parse and is ignored; its output is redone.
std::map<std::string, std::string> load_manifest(const fs::path& path) {
  std::map<std::string, std::string> latest;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || !j.contains("output") || !j.contains("seed") || !j.contains("params"))
      continue;
    if (!j["output"].is_string() || !j["seed"].is_number_unsigned()) continue;
    std::string mask;
    if (j.contains("mask_warped") && j["mask_warped"].is_boolean()) mask = j["mask_warped"].get<bool>() ? "warped" : "copied";
    latest[j["output"].get<std::string>()] = done_key(j["seed"].get<uint64_t>(), j["params"], mask);
  }
  return latest;
}

// Appends JSON lines, one writer at a time, each line whole.
class Manifest {
 public:
  explicit Manifest(const fs::path& path) : file_(path.string()) {}
  void append(const json& j) {
    const std::string line = j.dump();
    std::lock_guard<std::mutex> lock(mu_);
    file_.write_line(line);
  }

 private:
  std::mutex mu_;
  io::AppendFile file_;
};

// Restores cv::getNumThreads() on scope exit.
struct CvThreadsGuard {
  int saved = cv::getNumThreads();
  ~CvThreadsGuard() { cv::setNumThreads(saved); }
};

struct Pending {
  const Corruption* c;
  uint64_t seed;
  bool warp;                     // the mask moves with the image
  std::string out_rel, mask_rel;  // mask_rel empty without --masks
};

// What one run shares between its workers.
struct Context {
  const RunOptions& o;
  const std::vector<std::unique_ptr<Corruption>>& corruptions;
  std::map<std::string, std::string> latest;  // output -> done key of its latest manifest line
  Manifest& manifest;
};

// What is left to do for one image, decided before it is read, so a resumed
// run over finished images costs a manifest lookup per output.
std::vector<Pending> plan(const Context& cx, const Item& item, size_t& skipped) {
  std::vector<Pending> pending;
  for (const auto& c : cx.corruptions) {
    Pending t{c.get(), item_seed(cx.o.seed, item.rel, c->name(), c->severity()),
              !cx.o.masks.empty() && cx.o.warp_masks && spec(c->name()).geometric, output_rel(c->name(), item.rel), {}};
    if (!cx.o.masks.empty()) t.mask_rel = output_rel("masks/" + c->name(), item.rel);
    const std::string mask_state = cx.o.masks.empty() ? "" : t.warp ? "warped" : "copied";
    std::error_code e;
    const bool exists = fs::exists(io::join_inside(cx.o.output, t.out_rel), e) &&
                        (t.mask_rel.empty() || fs::exists(io::join_inside(cx.o.output, t.mask_rel), e));
    const auto line = cx.latest.find(t.out_rel);
    if (exists && line != cx.latest.end() && line->second == done_key(t.seed, c->params(), mask_state)) {
      ++skipped;
      continue;
    }
    pending.push_back(std::move(t));
  }
  return pending;
}

// Writes `image` at `rel` under the output folder, which it is checked to lie
// in (a link inside the output cannot send it elsewhere).
void write_output(const std::string& root, const std::string& rel, const cv::Mat& image, bool rgb) {
  write_file_atomic(io::join_inside(root, rel), io::encode_image(image, rel, rgb));
}

// Reads the image (and its mask) and writes its pending outputs, counting
// them in `written`; throws on the first failure.
void make_outputs(const Context& cx, const Item& item, const std::vector<Pending>& pending, size_t& written) {
  const cv::Mat rgb = io::read_image(item.abs.string(), io::ImageRead::Rgb);
  cv::Mat mask;
  if (!cx.o.masks.empty()) {
    const fs::path mp = find_mask(cx.o.masks, item.rel);
    if (mp.empty()) throw rsam::Error("no mask found under '" + printable(cx.o.masks) + "'");
    mask = read_mask(mp);
    if (mask.size() != rgb.size()) throw rsam::Error("mask size differs from the image's");
  }
  for (const auto& t : pending) {
    Result r = corrupt(*t.c, rgb, t.seed, t.warp ? mask : cv::Mat());
    write_output(cx.o.output, t.out_rel, r.image, true);
    if (!mask.empty()) write_output(cx.o.output, t.mask_rel, t.warp ? r.mask : mask, false);
    json line = {{"source", item.rel},
                 {"output", t.out_rel},
                 {"corruption", t.c->name()},
                 {"severity", t.c->severity()},
                 {"seed", t.seed},
                 {"run_seed", cx.o.seed},
                 {"params", t.c->params()},
                 {"drawn", r.drawn}};
    if (!mask.empty()) {
      line["mask"] = t.mask_rel;
      line["mask_warped"] = t.warp;
    }
    cx.manifest.append(line);
    ++written;
  }
}

}  // namespace

bool is_image_path(const std::string& path) { return io::has_image_extension(path); }

uint64_t item_seed(uint64_t run_seed, const std::string& relative_path, const std::string& corruption, int severity) {
  return derive_seed(derive_seed(run_seed, hash_string(relative_path)),
                     hash_string(corruption + "@" + std::to_string(severity)));
}

void write_file_atomic(const std::string& path, const std::vector<uchar>& bytes) {
  const fs::path target(path);
  std::error_code ec;
  if (target.has_parent_path()) {
    fs::create_directories(target.parent_path(), ec);
    if (ec) throw rsam::Error("degrade: cannot create directory '" + target.parent_path().string() + "': " + ec.message());
  }
  rsam::io::write_atomic(path, bytes.data(), bytes.size());
}

namespace {

// Checks the options and the input tree, then takes the output folder:
// everything that can be refused is refused before anything is written.
Inputs prepare(const RunOptions& o, const std::vector<std::string>& names) {
  if (o.input.empty()) throw rsam::Error("degrade: no input given");
  if (o.output.empty()) throw rsam::Error("degrade: no output directory given");
  if (o.severity < kMinSeverity || o.severity > kMaxSeverity)
    throw rsam::Error("degrade: severity must be in 1..5, got " + std::to_string(o.severity));
  if (o.jobs < 1) throw rsam::Error("degrade: jobs must be at least 1");
  std::error_code ec;
  if (!o.masks.empty() && !fs::is_directory(o.masks, ec))
    throw rsam::Error("degrade: mask directory '" + printable(o.masks) + "' does not exist");
  Inputs found = collect_inputs(o.input, o.output);
  if (found.items.empty()) throw rsam::Error("degrade: no images found in '" + printable(o.input) + "'");
  check_names(found.items, o.input);
  check_folders(o, found.items, names);
  fs::create_directories(o.output, ec);
  if (ec) throw rsam::Error("degrade: cannot create output directory '" + printable(o.output) + "': " + ec.message());
  return found;
}

}  // namespace

RunSummary run(const RunOptions& o) {
  const std::vector<std::string> names = expand(o.corruption);
  std::vector<std::unique_ptr<Corruption>> corruptions;
  for (const auto& n : names) corruptions.push_back(create(n, o.severity));
  const Inputs found = prepare(o, names);
  const std::vector<Item>& items = found.items;
  // Held for the whole run: a second degrade into this folder would
  // interleave its outputs and manifest lines with ours.
  const io::FolderLock lock(o.output);
  if (o.log)
    for (const auto& dir : found.skipped)
      *o.log << "degrade: skipping '" << printable(dir) << "' (holds a manifest.jsonl: an earlier degrade's output)\n";

  const fs::path manifest_path = fs::path(o.output) / "manifest.jsonl";
  Manifest manifest(manifest_path);
  const Context cx{o, corruptions, load_manifest(manifest_path), manifest};

  RunSummary summary;
  summary.images = items.size();
  summary.outputs = items.size() * corruptions.size();
  std::mutex mu;  // guards summary and the log
  std::atomic<size_t> next{0}, finished{0};

  auto process = [&](const Item& item) {
    std::string failure;
    size_t written = 0, skipped = 0;
    std::vector<Pending> pending;
    try {
      pending = plan(cx, item, skipped);
      if (!pending.empty()) make_outputs(cx, item, pending, written);
    } catch (const std::exception& e) {
      failure = item.rel + ": " + e.what();
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
  if (o.output.empty()) throw rsam::Error("degrade: a preview needs an output picture (SHEET.png)");
  io::check_outputs({{"the preview sheet", o.output}}, {{"the image", o.image}});
  io::check_image_name(o.output, false);
  const cv::Mat rgb = io::read_image(o.image, io::ImageRead::Rgb);
  const cv::Mat sheet = contact_sheet(rgb, expand(o.corruption), o.severity, o.seed, o.tile);
  write_file_atomic(o.output, io::encode_image(sheet, o.output, true));
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
             : group == "lqseg"   ? "LQSeg (GleSAM), fixed levels; severity does not apply"
                                  : "Extras, severity 1..5")
         << ":\n";
    }
    os << "  " << s.name << " - " << s.summary;
    if (s.geometric) os << " [geometric: warping moves masks too]";
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
