// `rsam amg`: segment everything, the official automatic mask generator
// (amg/amg.h). The work, file handling and resuming are amg::run's; this
// file maps flags onto it and prints the summary.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

#include "amg/run.h"
#include "app/commands.h"

namespace rsam::app {

namespace {

struct AmgArgs {
  amg::AmgRun run;
  int points_per_side = 32, threads = 0;
  std::string output_mode;
  bool json = false;
};

void run_amg(AmgArgs& a) {
  configure_runtime(a.threads, a.run.precision);
  a.run.options.points_per_side = a.points_per_side;
  if (!a.output_mode.empty()) a.run.mode = amg::parse_output_mode(a.output_mode);
  a.run.options.output_mode = a.run.mode ? *a.run.mode : amg::OutputMode::BinaryMask;
  const auto j = amg::run(a.run);
  if (a.json) {
    std::cout << j.dump() << "\n";
    return;
  }
  if (j.contains("image")) {
    std::printf("%d masks; encode %.0f ms, generate %.0f ms\n", j["masks"].get<int>(),
                j["timings_ms"]["encode"].get<double>(), j["timings_ms"]["generate"].get<double>());
  } else {
    std::printf("%d images: %d segmented, %d done before, %d unreadable; %d masks\n", j["images"].get<int>(),
                j["done"].get<int>(), j["skipped"].get<int>(), j["unreadable"].get<int>(), j["masks"].get<int>());
  }
}

}  // namespace

void add_amg_command(CLI::App& app) {
  auto a = std::make_shared<AmgArgs>();
  auto& r = a->run;
  auto& o = r.options;
  auto* c = app.add_subcommand("amg", "Segment everything: SAM's automatic mask generator (official parameters)");
  c->add_option("--checkpoint", r.checkpoint, "SAM checkpoint (.pth or .safetensors); default: the bundled rsam-tiny");
  c->add_option("--image", r.input, "Input image, or a folder of images (resumable)")->required();
  c->add_option("--adapter", r.adapter,
                "Adapter file (.safetensors) trained on this checkpoint; default with rsam-tiny: its bundled GaRA");
  c->add_flag("--no-adapter", r.no_adapter, "Run the base model alone");
  c->add_option("--points-per-side", a->points_per_side, "Points sampled along each side (points_per_side)");
  c->add_option("--points-per-batch", o.points_per_batch, "Points decoded at once (points_per_batch)");
  c->add_option("--pred-iou-thresh", o.pred_iou_thresh, "Keep masks whose predicted IoU is above this");
  c->add_option("--stability-thresh", o.stability_score_thresh, "Keep masks whose stability score is at least this");
  c->add_option("--stability-offset", o.stability_score_offset, "Logit offset of the stability score");
  c->add_option("--box-nms-thresh", o.box_nms_thresh, "Box IoU above which duplicates in a crop are removed");
  c->add_option("--crop-layers", o.crop_n_layers, "Crop layers (crop_n_layers): layer i runs on (2^i)^2 crops");
  c->add_option("--crop-nms-thresh", o.crop_nms_thresh, "Box IoU above which duplicates between crops are removed");
  c->add_option("--crop-overlap-ratio", o.crop_overlap_ratio, "Overlap of the first crop layer's crops");
  c->add_option("--crop-points-downscale", o.crop_n_points_downscale_factor,
                "Points per side divided by this in each further crop layer");
  c->add_option("--min-region-area", o.min_mask_region_area,
                "Remove holes and islands smaller than this many pixels (min_mask_region_area)");
  c->add_option("--output-mode", a->output_mode,
                "binary_mask (PNGs, --out-dir), uncompressed_rle or coco_rle (JSON, --out); default by output")
      ->check(CLI::IsMember({"binary_mask", "uncompressed_rle", "coco_rle"}));
  c->add_option("--out", r.out, "The mask records as JSON (as the official scripts/amg.py writes them)");
  c->add_option("--out-dir", r.out_dir,
                "One PNG per mask + metadata.csv (for a folder input: a subfolder or a .json per image)");
  c->add_option("--overlay", r.overlay, "Picture with every mask in its own colour (for a folder input: a folder)");
  c->add_option("--precision", r.precision, "fp32 or bf16 (image encoder)")->check(CLI::IsMember({"fp32", "bf16"}));
  c->add_option("--threads", a->threads, "Intra-op threads (default: all cores)");
  c->add_flag("--json", a->json, "Print a JSON summary on stdout");
  c->callback([a] { run_amg(*a); });
}

}  // namespace rsam::app
