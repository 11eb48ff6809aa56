// `rsam demo`: the main job on the bundled default. Makes a synthetic scene,
// corrupts it, segments one object from one point with rsam-tiny alone and
// with its GaRA adapter, and writes one side-by-side picture with the IoUs.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <cstdio>
#include <iostream>

#include "adapt/adapter.h"
#include "app/commands.h"
#include "app/flags.h"
#include "app/image_io.h"
#include "data/metrics.h"
#include "data/synth.h"
#include "degrade/corruption.h"
#include "error.h"
#include "io/fs.h"
#include "model/bundled.h"
#include "model/checkpoint.h"
#include "model/image.h"
#include "model/predictor.h"
#include "model/runtime.h"
#include "train/cv_tensor.h"
#include "viz/viz.h"

namespace rsam::app {

namespace {

struct DemoArgs {
  std::string checkpoint, adapter, out = "rsam-demo.png", corruption = "fog";
  int severity = 3, threads = 0;
  uint64_t seed = 0;
  int size = 256;  // the scene size rsam-tiny was trained on
  bool json = false;
};

// Best-scored of SAM's three masks for one point, as the evaluation does.
cv::Mat segment(Sam model, const cv::Mat& rgb, cv::Point pt) {
  SamPredictor pred(model, Precision::FP32);
  pred.set_image(to_image8(rgb));
  Prompt p;
  p.points = {{float(pt.x), float(pt.y)}};
  p.labels = {1};
  return mask_to_mat(pred.predict_one(p).masks[0]);
}

void run_demo(const DemoArgs& a) {
  set_threads(a.threads);
  const auto [checkpoint, adapter] = resolve_model(a.checkpoint, a.adapter, false);
  if (adapter.empty()) throw Error("demo compares the model with and without an adapter: give --adapter");
  io::check_outputs({{"--out", a.out}}, {{"the checkpoint", checkpoint}, {"the adapter", adapter}});
  Sam base = load_sam(checkpoint).model;
  const int S = a.size;

  // A scene with an object big enough to judge by eye; its most interior
  // pixel is the prompt, as a person would click.
  data::SynthOptions so;
  so.size = S;
  so.seed = a.seed;
  data::SynthWorld world(so);
  data::SynthScene scene;
  const data::SynthObject* obj = nullptr;
  for (uint64_t i = 0; i < 64 && !obj; ++i) {
    scene = world.scene(i);
    for (const auto& o : scene.objects)
      if (o.kind != "stroke" && o.area >= int64_t(S) * S / 60 && (!obj || o.area > obj->area)) obj = &o;
  }
  if (!obj) throw Error("demo: no scene with a large object among the first 64 (seed " + std::to_string(a.seed) + ")");
  const cv::Mat gt = (scene.ids == obj->id) / 255;
  cv::Mat dist;
  cv::distanceTransform(gt * 255, dist, cv::DIST_L2, 5);
  cv::Point pt;
  cv::minMaxLoc(dist, nullptr, nullptr, nullptr, &pt);

  const auto corr = degrade::create(a.corruption, a.severity);
  const cv::Mat bad = corr->run(scene.image, a.seed).image;

  const cv::Mat m_base = segment(base, bad, pt);
  auto adapted = adapt::AdaptedSam::load(load_sam(checkpoint).model, adapter);
  const cv::Mat m_adapted = segment(adapted.model(), bad, pt);
  const cv::Mat m_clean = segment(base, scene.image, pt);
  const double iou_base = data::mask_metrics(m_base, gt).iou, iou_adapted = data::mask_metrics(m_adapted, gt).iou;
  const double iou_clean = data::mask_metrics(m_clean, gt).iou;

  char c1[96], c2[96], c3[96];
  std::snprintf(c1, sizeof c1, "clean, rsam-tiny: IoU %.3f", iou_clean);
  std::snprintf(c2, sizeof c2, "%s s%d, rsam-tiny: IoU %.3f", a.corruption.c_str(), a.severity, iou_base);
  std::snprintf(c3, sizeof c3, "%s s%d, + %s: IoU %.3f", a.corruption.c_str(), a.severity, adapted.method().c_str(),
                iou_adapted);
  std::vector<cv::Mat> tiles{viz::caption_tile(scene.image, gt, pt, "ground truth", cv::Scalar(255, 200, 0)),
                             viz::caption_tile(scene.image, m_clean, pt, c1, cv::Scalar(30, 144, 255)),
                             viz::caption_tile(bad, m_base, pt, c2, cv::Scalar(30, 144, 255)),
                             viz::caption_tile(bad, m_adapted, pt, c3, cv::Scalar(30, 144, 255))};
  cv::Mat sheet;
  cv::hconcat(tiles, sheet);
  write_image(a.out, to_image8(sheet));

  nlohmann::json j{{"checkpoint", checkpoint},   {"adapter", adapter},     {"corruption", a.corruption},
                   {"severity", a.severity},     {"seed", a.seed},         {"point", {pt.x, pt.y}},
                   {"object", obj->kind},        {"iou_clean", iou_clean}, {"iou_base", iou_base},
                   {"iou_adapted", iou_adapted}, {"picture", a.out}};
  if (a.json) {
    std::cout << j.dump() << "\n";
  } else {
    std::printf("scene %dx%d, object: %s, point (%d, %d)\n", S, S, obj->kind.c_str(), pt.x, pt.y);
    std::printf("clean                      rsam-tiny        IoU %.3f\n", iou_clean);
    std::printf("%-12s severity %d    rsam-tiny        IoU %.3f\n", a.corruption.c_str(), a.severity, iou_base);
    std::printf("%-12s severity %d    rsam-tiny + %-4s IoU %.3f\n", a.corruption.c_str(), a.severity,
                adapted.method().c_str(), iou_adapted);
    std::printf("picture: %s\n", a.out.c_str());
  }
}

}  // namespace

void add_demo_command(CLI::App& app) {
  auto a = std::make_shared<DemoArgs>();
  auto* c = app.add_subcommand("demo", "Make a scene, corrupt it, segment it with and without the adapter, draw it");
  c->add_option("--out", a->out, "Side-by-side picture (PNG)")->capture_default_str();
  c->add_option("--corruption", a->corruption, "Corruption name (rsam degrade --list)")->capture_default_str();
  c->add_option("--severity", a->severity, "1..5")->check(CLI::Range(1, 5))->capture_default_str();
  c->add_option("--seed", a->seed, "Scene and corruption seed")->check(kSeed)->capture_default_str();
  c->add_option("--size", a->size, "Scene size in pixels (the model resizes it to its input)")
      ->check(CLI::Range(64, 4096))
      ->capture_default_str();
  c->add_option("--checkpoint", a->checkpoint, "Base model (default: the bundled rsam-tiny)");
  c->add_option("--adapter", a->adapter, "Adapter (default: the bundled GaRA of rsam-tiny)");
  c->add_option("--threads", a->threads, "Intra-op threads (default: all cores)");
  c->add_flag("--json", a->json, "Print a JSON summary on stdout");
  c->callback([a] { run_demo(*a); });
}

}  // namespace rsam::app
