#include "amg/run.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>

#include "adapt/adapter.h"
#include "amg/output.h"
#include "error.h"
#include "io/fs.h"
#include "io/image_codec.h"
#include "log.h"
#include "model/bundled.h"
#include "model/checkpoint.h"
#include "viz/viz.h"

namespace rsam::amg {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

bool is_dir(const std::string& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

bool exists(const std::string& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

// The options that decide the results: what a resumed folder must share.
nlohmann::json options_json(const AmgRun& a, OutputMode mode, const std::string& checkpoint, const std::string& adapter) {
  const auto& o = a.options;
  return {{"checkpoint", fs::path(checkpoint).filename().string()},
          {"adapter", adapter.empty() ? "" : fs::path(adapter).filename().string()},
          {"precision", a.precision},
          {"points_per_side", o.points_per_side ? *o.points_per_side : 0},
          {"points_per_batch", o.points_per_batch},
          {"pred_iou_thresh", o.pred_iou_thresh},
          {"stability_score_thresh", o.stability_score_thresh},
          {"stability_score_offset", o.stability_score_offset},
          {"box_nms_thresh", o.box_nms_thresh},
          {"crop_n_layers", o.crop_n_layers},
          {"crop_nms_thresh", o.crop_nms_thresh},
          {"crop_overlap_ratio", o.crop_overlap_ratio},
          {"crop_n_points_downscale_factor", o.crop_n_points_downscale_factor},
          {"min_mask_region_area", o.min_mask_region_area},
          {"output_mode", output_mode_name(mode)},
          {"overlay", !a.overlay.empty()}};
}

struct Job {
  std::string image, stem;
};

// The images of the run: the one given, or the folder's pictures by name.
std::vector<Job> list_jobs(const std::string& input, bool folder) {
  if (!folder) return {{input, fs::path(input).stem().string()}};
  std::vector<Job> jobs;
  std::map<std::string, std::string> seen;
  for (const auto& e : fs::directory_iterator(input)) {
    if (!e.is_regular_file() || !io::has_image_extension(e.path().string())) continue;
    const auto stem = e.path().stem().string();
    if (seen.count(stem))
      throw Error("'" + seen[stem] + "' and '" + e.path().filename().string() + "' would write the same outputs");
    seen[stem] = e.path().filename().string();
    jobs.push_back({e.path().string(), stem});
  }
  std::sort(jobs.begin(), jobs.end(), [](const Job& x, const Job& y) { return x.image < y.image; });
  return jobs;
}

OutputMode pick_mode(const AmgRun& a, bool folder) {
  if (!a.out.empty() && !a.out_dir.empty()) throw Error("give --out or --out-dir, not both");
  if (folder && !a.out.empty()) throw Error("a folder of images writes into --out-dir, not --out");
  if (folder && a.out_dir.empty()) throw Error("a folder of images needs --out-dir");
  const OutputMode mode = a.mode ? *a.mode : (a.out.empty() ? OutputMode::BinaryMask : OutputMode::CocoRle);
  if (!a.out.empty() && mode == OutputMode::BinaryMask)
    throw Error("binary_mask is written as PNGs with --out-dir; --out takes uncompressed_rle or coco_rle");
  if (!folder && !a.out_dir.empty() && mode != OutputMode::BinaryMask)
    throw Error("for one image, --out-dir holds binary_mask PNGs; write RLE records with --out");
  return mode;
}

Image8 read_rgb(const std::string& path) {
  const cv::Mat m = io::read_image(path, io::ImageRead::Rgb);
  return image8_from_rows(m.data, m.cols, m.rows, m.step);
}

cv::Mat overlay_of(const Image8& img, const std::vector<MaskRecord>& records) {
  std::vector<cv::Mat> masks;
  for (const auto& r : records) masks.push_back(record_mask(r));
  const cv::Mat rgb(img.height, img.width, CV_8UC3, const_cast<uint8_t*>(img.data.data()));
  return viz::masks_overlay(rgb, masks);
}

struct Outputs {
  std::string records;  // the file whose presence says the image is done
  std::string folder;   // binary_mask: where the PNGs go
  std::string overlay;
};

Outputs outputs_for(const AmgRun& a, const Job& j, OutputMode mode, bool folder) {
  Outputs o;
  if (!folder) {
    if (!a.out_dir.empty()) o.folder = a.out_dir, o.records = io::join_inside(a.out_dir, "metadata.csv");
    if (!a.out.empty()) o.records = a.out;
    o.overlay = a.overlay;
    return o;
  }
  if (mode == OutputMode::BinaryMask) {
    o.folder = io::join_inside(a.out_dir, j.stem);
    o.records = io::join_inside(o.folder, "metadata.csv");
  } else {
    o.records = io::join_inside(a.out_dir, j.stem + ".json");
  }
  if (!a.overlay.empty()) o.overlay = io::join_inside(a.overlay, j.stem + ".png");
  return o;
}

void write_outputs(const Outputs& o, const Image8& img, const std::vector<MaskRecord>& recs, OutputMode mode) {
  if (!o.overlay.empty()) io::write_image(o.overlay, overlay_of(img, recs), true);
  if (!o.folder.empty()) {
    std::error_code ec;
    fs::create_directory(o.folder, ec);
    if (!is_dir(o.folder)) throw Error("cannot create folder '" + o.folder + "'");
    write_masks_to_folder(recs, o.folder);  // metadata.csv last: the mark of a complete image
  } else if (!o.records.empty()) {
    io::write_text(o.records, records_json(recs, mode).dump());
  }
}

// A folder run's options file: written by the first run, compared by the next.
void check_resume(const AmgRun& a, const nlohmann::json& opts) {
  const auto path = io::join_inside(a.out_dir, "amg-options.json");
  if (exists(path)) {
    nlohmann::json old;
    try {
      const auto bytes = io::read_file(path);
      old = nlohmann::json::parse(std::string(bytes.begin(), bytes.end()));
    } catch (const nlohmann::json::exception&) {
      throw Error("'" + path + "' is not valid JSON: not an rsam amg output folder?");
    }
    if (old != opts) throw Error("'" + a.out_dir + "' holds results made with other options (amg-options.json)");
  } else {
    io::write_text(path, opts.dump(1));
  }
}

}  // namespace

nlohmann::json run(const AmgRun& a) {
  const auto t0 = Clock::now();
  check_options(a.options);
  if (a.input.empty()) throw Error("give an image (or a folder of images)");
  if (!exists(a.input)) throw Error("'" + a.input + "' does not exist");
  const bool folder = is_dir(a.input);
  const OutputMode mode = pick_mode(a, folder);
  const auto [checkpoint, adapter] = resolve_model(a.checkpoint, a.adapter, a.no_adapter);
  for (const auto& d : {a.out_dir, folder ? a.overlay : std::string()})
    if (!d.empty() && !is_dir(d)) {
      io::prepare_output(d);  // the parent must exist
      std::error_code ec;
      fs::create_directory(d, ec);
      if (!is_dir(d)) throw Error("cannot create folder '" + d + "'");
    }
  if (!a.out.empty()) io::prepare_output(a.out);
  if (!folder && !a.overlay.empty()) {
    io::check_image_name(a.overlay, false);
    io::prepare_output(a.overlay);
  }
  io::check_outputs({{"--out", a.out}, {"--out-dir", a.out_dir}, {"--overlay", a.overlay}},
                    {{"the image", a.input}, {"the checkpoint", checkpoint}, {"the adapter", adapter}});
  std::optional<io::FolderLock> lock;
  if (!a.out_dir.empty()) lock.emplace(a.out_dir);
  const auto jobs = list_jobs(a.input, folder);
  if (folder) check_resume(a, options_json(a, mode, checkpoint, adapter));

  auto loaded = load_sam(checkpoint);
  std::optional<adapt::AdaptedSam> adapted;
  if (!adapter.empty()) adapted.emplace(adapt::AdaptedSam::load(loaded.model, adapter));
  SamPredictor pred(adapted ? adapted->model() : loaded.model, parse_precision(a.precision));
  const double load_ms = ms_since(t0);

  nlohmann::json summary = {{"model", loaded.model->config.type_name()}, {"output_mode", output_mode_name(mode)}};
  if (adapted) summary["adapter"] = adapted->method();
  int64_t done = 0, skipped = 0, unreadable = 0, total_masks = 0;
  for (size_t i = 0; i < jobs.size(); ++i) {
    const auto outs = outputs_for(a, jobs[i], mode, folder);
    const std::string tag = "[" + std::to_string(i + 1) + "/" + std::to_string(jobs.size()) + "] " + jobs[i].stem;
    if (folder && exists(outs.records) && (outs.overlay.empty() || exists(outs.overlay))) {
      ++skipped;
      log_info(tag + ": done before, skipped");
      continue;
    }
    Image8 img;
    try {
      img = read_rgb(jobs[i].image);
    } catch (const Error& e) {
      if (!folder) throw;
      ++unreadable;  // as the official script: a file that is not a picture is skipped
      log_warning(tag + ": skipped (" + e.what() + ")");
      continue;
    }
    const auto t1 = Clock::now();
    AmgProfile prof;
    const auto recs = generate(pred, img, a.options, &prof);
    const double gen_ms = ms_since(t1);
    write_outputs(outs, img, recs, mode);
    ++done;
    total_masks += int64_t(recs.size());
    if (folder) log_info(tag + ": " + std::to_string(recs.size()) + " masks");
    if (!folder) {
      summary["image"] = {{"width", img.width}, {"height", img.height}};
      summary["masks"] = recs.size();
      summary["timings_ms"] = {{"load", load_ms},
                               {"encode", prof.encode_ms},
                               {"generate", gen_ms - prof.encode_ms},
                               {"total", ms_since(t0)}};
      summary["profile"] = {{"decode_ms", prof.decode_ms},     {"upsample_ms", prof.upsample_ms},
                            {"masks_ms", prof.masks_ms},       {"nms_ms", prof.nms_ms},
                            {"postprocess_ms", prof.postprocess_ms}, {"crops", prof.crops},
                            {"points", prof.points},           {"decoded", prof.decoded},
                            {"after_iou", prof.after_iou},     {"after_stability", prof.after_stability},
                            {"after_edge", prof.after_edge},   {"kept", prof.kept}};
    }
  }
  if (folder)
    summary.update({{"images", jobs.size()}, {"done", done}, {"skipped", skipped}, {"unreadable", unreadable},
                    {"masks", total_masks}, {"timings_ms", {{"total", ms_since(t0)}}}});
  return summary;
}

}  // namespace rsam::amg
