// `rsam segment`: one image, one prompt, masks out. The work, the checks and
// the files are segment::run's (segment/segment.h); this file maps flags
// onto it and prints the summary.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

#include "app/commands.h"
#include "app/flags.h"
#include "error.h"
#include "glesam/enhancer.h"
#include "segment/segment.h"

namespace rsam::app {

namespace {

struct SegmentArgs {
  segment::SegmentRun run;
  std::string box, precision = "auto", pick = "score";
  std::vector<std::string> points;
  bool multimask = false, single_mask = false, json = false;
  int threads = 0;
};

// What the flags alone decide: their combinations and syntax (a label given
// on the command line is 1 or 0). The prompt's fit to the image and the
// model is the library's (check_prompt).
void map_flags(SegmentArgs& a) {
  auto& r = a.run;
  if (r.no_adapter && !r.adapter.empty()) throw Error("give --adapter or --no-adapter, not both");
  if (a.multimask && a.single_mask) throw Error("give --multimask or --single-mask, not both");
  if (a.multimask && r.refine > 0) throw Error("--refine gives one mask: not with --multimask");
  if (!r.enhancer.empty() && !glesam::is_enhancer_path(r.enhancer))
    throw Error("--enhancer expects an enhancer description (.json), got '" + r.enhancer + "'");
  for (const auto& s : a.points) {
    const auto v = parse_numbers(s, "point", 2, 3);
    r.prompt.points.push_back({float(v[0]), float(v[1])});
    const double lab = v.size() == 3 ? v[2] : 1.0;
    if (lab != 0.0 && lab != 1.0) throw Error("bad point '" + s + "': label must be 1 (foreground) or 0 (background)");
    r.prompt.labels.push_back(int(lab));
  }
  if (!a.box.empty()) {
    const auto v = parse_numbers(a.box, "box", 4, 4);
    r.prompt.box = std::array<float, 4>{float(v[0]), float(v[1]), float(v[2]), float(v[3])};
  }
  if (r.prompt.points.empty() && !r.prompt.box && r.mask_input.path.empty())
    throw Error("give a prompt: --point X,Y[,LABEL], --box X0,Y0,X1,Y1 or --mask-input M.npy");
  r.masks = a.multimask ? segment::MaskChoice::Multi
                        : a.single_mask ? segment::MaskChoice::Single : segment::MaskChoice::Auto;
  r.pick = parse_pick(a.pick);
  if (a.precision != "auto") r.precision = parse_precision(a.precision);
}

void run_segment(SegmentArgs& a) {
  configure_runtime(a.threads, a.precision);
  map_flags(a);
  const auto j = segment::run(a.run);
  if (a.json) {
    std::cout << j.dump() << "\n";
    return;
  }
  const auto best = j["best"].get<size_t>();
  for (size_t i = 0; i < j["masks"].size(); ++i)
    std::printf("mask %zu: score %.4f, area %lld px%s\n", i, j["masks"][i]["score"].get<float>(),
                (long long)j["masks"][i]["area"].get<int64_t>(), i == best ? " (best)" : "");
  std::printf("encode %.0f ms, decode %.0f ms\n", j["timings_ms"]["encode"].get<double>(),
              j["timings_ms"]["decode"].get<double>());
}

}  // namespace

void add_segment_command(CLI::App& app) {
  auto a = std::make_shared<SegmentArgs>();
  auto& r = a->run;
  // Messages name the files by their flags.
  r.image.what = "--image", r.mask_input.what = "--mask-input", r.out.what = "--out", r.overlay.what = "--overlay";
  r.logits_out.what = "--logits-out", r.embedding_out.what = "--embedding-out", r.gates_out.what = "--gates-out";
  auto* c = app.add_subcommand("segment", "Segment an image from point, box or mask prompts");
  c->add_option("--checkpoint", r.checkpoint, "SAM checkpoint (.pth or .safetensors); default: the bundled rsam-tiny");
  c->add_option("--image", r.image.path, "Input image")->required();
  c->add_option("--point", a->points, "X,Y[,LABEL] (LABEL 1 foreground, default; 0 background); repeatable");
  c->add_option("--box", a->box, "X0,Y0,X1,Y1");
  c->add_option("--mask-input", r.mask_input.path, "Low-res mask logits .npy [1,256,256]");
  c->add_flag("--multimask", a->multimask, "Return three masks (reference order)");
  c->add_flag("--single-mask", a->single_mask,
              "Use the decoder's single-mask output even for one point alone (by default one point is decoded "
              "into three masks and one is picked, see --pick)");
  c->add_option("--pick", a->pick,
                "How one of a lone point's three masks is picked: score (predicted IoU, default) or stability "
                "(SAM's stability score)")
      ->check(CLI::IsMember({"score", "stability"}));
  c->add_flag("--flip", r.flip,
              "Test-time flip: the image also encoded mirrored and the two views' logits averaged (twice the time)");
  c->add_option("--precision", a->precision,
                "auto, fp32 or bf16 (image encoder); auto: bf16 for the bundled model on CPUs with native bf16, "
                "else fp32")
      ->check(CLI::IsMember({"auto", "fp32", "bf16"}));
  c->add_option("--threads", a->threads, "Intra-op threads (default: all cores)");
  c->add_option("--out", r.out.path, "Binary mask PNG (the picked mask)");
  c->add_option("--overlay", r.overlay.path, "Image with the mask and prompts drawn");
  c->add_option("--logits-out", r.logits_out.path, "float32 [N,256,256] low-res logits .npy");
  c->add_option("--embedding-out", r.embedding_out.path, "float32 image embedding .npy (the one the decoder sees)");
  c->add_option("--adapter", r.adapter,
                "Adapter file (.safetensors) trained on this checkpoint; default with rsam-tiny: its bundled GaRA");
  c->add_flag("--no-adapter", r.no_adapter, "Run the base model alone");
  c->add_option("--enhancer", r.enhancer,
                "GleSAM enhancer (E.json): the embedding restored by one diffusion step before decoding");
  c->add_option("--gates-out", r.gates_out.path, "Gate decisions per layer as JSON (+ a .png picture)");
  c->add_option("--refine", r.refine, "Rounds of post-refinement: the mask decoded again with itself as the mask input")
      ->check(CLI::Range(0, 10));
  c->add_flag("--json", a->json, "Print a JSON summary on stdout");
  c->callback([a] { run_segment(*a); });
}

}  // namespace rsam::app
