// The logic behind `rsam degrade`: corrupt a file or a folder tree with a
// manifest and resume, draw a contact sheet, list the corruptions. Kept free
// of CLI11 so tests drive it directly.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

namespace rsam::degrade {

struct RunOptions {
  std::string input;                      // an image file or a directory (walked recursively)
  std::string output;                     // output directory (created)
  std::string corruption = "robustseg";   // a corruption name or a set: robustseg, lqseg, extras, all
  int severity = 3;                       // 1..5 (ignored by the fixed LQ presets)
  uint64_t seed = 0;                      // run seed; each output gets item_seed(...)
  int jobs = 1;                           // images processed in parallel
  std::string masks;                      // optional mask tree mirroring `input` (same stem, any image extension)
  bool warp_masks = false;                // geometric corruptions move masks too (default: copy, as the reference)
  std::ostream* log = nullptr;            // progress and failure lines; null = silent
};

struct RunSummary {
  size_t images = 0;       // source images found
  size_t outputs = 0;      // (image, corruption) outputs expected
  size_t written = 0;      // outputs written by this run
  size_t skipped = 0;      // outputs already done by an earlier run (resume)
  size_t failed = 0;       // source images that could not be read or processed
  std::vector<std::string> failures;  // "relative/path: reason", one per failed image
};

// Output layout under `output`:
//   <corruption>/<relative dir>/<stem>.png        degraded image (always PNG: lossless)
//   masks/<corruption>/<relative dir>/<stem>.png  its mask, if --masks was given (16-bit masks stay 16-bit)
//   manifest.jsonl                                one JSON object per output
// The relative path is the input's own path inside `input` (a symlinked
// input is named by the link, never by its target), and every output is
// checked to lie inside `output`. Every file is written to a temporary name
// and renamed into place. A rerun skips an output whose files exist and
// whose LATEST manifest line has the same seed, parameters and mask
// handling, so a killed run resumes where it stopped. Outputs are the same
// for any `jobs`; only the manifest's line order varies. The output folder is
// locked for the run (a second run into it is refused); folders inside
// `input` that hold a manifest.jsonl (an earlier degrade's output) are skipped.
// Throws rsam::Error, before writing anything, for unusable options (missing
// input, bad name or severity, no images, output == input), input names that
// are not UTF-8 or that share an output (a.png, a.jpg); unreadable images are
// counted in `failed` instead.
RunSummary run(const RunOptions& options);

// The seed one output is made with: a function of the run seed, the source's
// path relative to the input root, the corruption and the severity only.
uint64_t item_seed(uint64_t run_seed, const std::string& relative_path, const std::string& corruption, int severity);

// Image extensions the runner picks up (lower case, with the dot).
bool is_image_path(const std::string& path);

// Contact sheet: the original, then one labelled tile per corruption at
// `severity`, `columns` per row (0: about square). The image is first
// shrunk so its longest side is at most `work_size`, corrupted at that size,
// then each tile is shrunk to `tile` px wide.
cv::Mat contact_sheet(const cv::Mat& rgb, const std::vector<std::string>& corruptions, int severity, uint64_t seed,
                      int tile = 256, int columns = 0, int work_size = 512);

struct PreviewOptions {
  std::string image;               // source image
  std::string output;              // PNG to write
  std::string corruption = "all";  // a name or a set
  int severity = 3;
  uint64_t seed = 0;
  int tile = 256;
};
// rsam::Error if the image is unreadable or `output` is the image itself.
void preview(const PreviewOptions& options);

// Every corruption with its group, summary, flags and parameter levels.
nlohmann::json list_json();
// The same, as text for `rsam degrade --list`.
std::string list_text();
// The severity table of docs/degradations.md (Markdown).
std::string levels_markdown();

// Writes `bytes` to `path` through a temporary file in the same directory
// and a rename; creates parent directories. rsam::Error on failure.
void write_file_atomic(const std::string& path, const std::vector<uchar>& bytes);

}  // namespace rsam::degrade
