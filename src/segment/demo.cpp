#include "segment/demo.h"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cstdio>

#include "data/metrics.h"
#include "data/synth.h"
#include "degrade/corruption.h"
#include "degrade/rng.h"
#include "error.h"
#include "glesam/enhancer.h"
#include "io/image_codec.h"
#include "model/bundled.h"
#include "model/checkpoint.h"
#include "segment/stack.h"
#include "train/cv_tensor.h"
#include "viz/viz.h"

namespace rsam::segment {

namespace {

// One prompted object: its scene, its mask, the click.
struct Target {
  size_t scene;
  cv::Mat gt;  // CV_8UC1 0/1
  cv::Point pt;
};

struct Scenes {
  std::vector<data::SynthScene> scenes;
  std::vector<Target> targets;  // the first is the picture's example
};

// The first `o.scenes` scenes holding an object big enough to judge by eye;
// their largest such objects, each clicked at its most interior pixel, as a
// person would.
Scenes pick_scenes(const DemoOptions& o) {
  data::SynthOptions so;
  so.size = o.size;
  so.seed = o.seed;
  const data::SynthWorld world(so);
  const int64_t min_area = int64_t(o.size) * o.size / 60;
  const uint64_t tries = 64 * uint64_t(o.scenes);
  Scenes out;
  for (uint64_t i = 0; i < tries && out.scenes.size() < size_t(o.scenes); ++i) {
    auto scene = world.scene(i);
    std::vector<data::SynthObject> objs;
    for (const auto& ob : scene.objects)
      if (ob.kind != "stroke" && ob.area >= min_area) objs.push_back(ob);
    if (objs.empty()) continue;
    std::stable_sort(objs.begin(), objs.end(), [](const auto& a, const auto& b) { return a.area > b.area; });
    for (size_t k = 0; k < objs.size() && k < size_t(o.objects); ++k) {
      const cv::Mat gt = (scene.ids == objs[k].id) / 255;
      cv::Mat dist;
      cv::distanceTransform(gt * 255, dist, cv::DIST_L2, 5);
      cv::Point pt;
      cv::minMaxLoc(dist, nullptr, nullptr, nullptr, &pt);
      out.targets.push_back({out.scenes.size(), gt, pt});
    }
    out.scenes.push_back(std::move(scene));
  }
  if (out.scenes.size() < size_t(o.scenes))
    throw Error("demo: only " + std::to_string(out.scenes.size()) + " of the first " + std::to_string(tries) +
                " scenes hold a large object (seed " + std::to_string(o.seed) + ")");
  return out;
}

// A method and the encoder whose embedding it decodes: its own (index of
// itself) or, for an enhanced one, the plain method's with the same encoder,
// so each image is encoded once per encoder.
struct Method {
  std::string label;
  Stack stack;
  size_t encoder;
};

std::vector<Method> load_methods(const std::string& checkpoint, const std::string& adapter,
                                 const std::string& enhancer) {
  std::vector<Method> ms;
  ms.push_back({"base", load_stack(checkpoint), 0});
  if (!adapter.empty()) {
    Stack s = load_stack(checkpoint, adapter);
    const std::string name = s.adapted->method();
    ms.push_back({name, std::move(s), 1});
  }
  if (!enhancer.empty()) {
    ms.push_back({"glesam", load_stack(checkpoint, "", enhancer), 0});
    if (!adapter.empty()) ms.push_back({ms[1].label + "+glesam", load_stack(checkpoint, adapter, enhancer), 1});
  }
  return ms;
}

// The image under a condition; each (scene, corruption) draws its own seed,
// as `rsam eval` does.
cv::Mat condition_image(const cv::Mat& clean, size_t scene, const std::string& c, const DemoOptions& o) {
  if (c == "clean") return clean;
  const uint64_t key = degrade::derive_seed(degrade::derive_seed(o.seed, scene), degrade::hash_string(c));
  return degrade::create(c, o.severity)->run(clean, key).image;
}

// Every method's predictor set on the image: the encoders run once, the
// enhanced methods take their encoder's embedding through their enhancer.
void set_image(const std::vector<Method>& ms, std::vector<SamPredictor>& preds, const Image8& img) {
  for (size_t m = 0; m < ms.size(); ++m)
    if (ms[m].encoder == m) preds[m].set_image(img);
  for (size_t m = 0; m < ms.size(); ++m)
    if (ms[m].encoder != m) ms[m].stack.set_embedding(preds[m], preds[ms[m].encoder]);
}

// IoUs summed per [method][condition], and the example's pictures.
struct Tally {
  std::vector<std::vector<double>> sum;
  std::vector<std::vector<cv::Mat>> example;  // [method][condition] the first target's mask
  std::vector<std::vector<double>> example_iou;
  std::vector<cv::Mat> example_image;  // [condition]
};

Tally score(const DemoOptions& o, const Scenes& sc, const std::vector<Method>& ms,
            const std::vector<std::string>& conds, Precision prec) {
  std::vector<SamPredictor> preds;
  for (const auto& m : ms) preds.emplace_back(m.stack.sam, prec);
  Tally t;
  t.sum.assign(ms.size(), std::vector<double>(conds.size(), 0.0));
  t.example.assign(ms.size(), std::vector<cv::Mat>(conds.size()));
  t.example_iou.assign(ms.size(), std::vector<double>(conds.size(), 0.0));
  t.example_image.resize(conds.size());
  for (size_t c = 0; c < conds.size(); ++c) {
    for (size_t s = 0; s < sc.scenes.size(); ++s) {
      const cv::Mat img = condition_image(sc.scenes[s].image, s, conds[c], o);
      set_image(ms, preds, to_image8(img));
      if (s == 0) t.example_image[c] = img;
      for (size_t k = 0; k < sc.targets.size(); ++k) {
        if (sc.targets[k].scene != s) continue;
        Prompt p;
        p.points = {{float(sc.targets[k].pt.x), float(sc.targets[k].pt.y)}};
        p.labels = {1};
        for (size_t m = 0; m < ms.size(); ++m) {
          // Best-scored of SAM's three masks for one point, as `rsam eval` scores it.
          const cv::Mat mask = mask_to_mat(preds[m].predict_one(p).masks[0]);
          const double iou = data::mask_metrics(mask, sc.targets[k].gt).iou;
          t.sum[m][c] += iou;
          if (k == 0) t.example[m][c] = mask, t.example_iou[m][c] = iou;
        }
      }
    }
  }
  return t;
}

std::string fixed3(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3f", v);
  return b;
}

// One row per condition (its ground truth, then each method's mask on the
// example object, captioned with that IoU and the mean), the table of means
// beneath.
cv::Mat picture(const Scenes& sc, const Tally& t, const std::vector<std::string>& labels,
                const std::vector<std::string>& names, const nlohmann::json& means, const std::string& counts) {
  const Target& ex = sc.targets[0];
  std::vector<cv::Mat> rows;
  for (size_t c = 0; c < names.size(); ++c) {
    std::vector<cv::Mat> tiles{
        viz::caption_tile(t.example_image[c], ex.gt, ex.pt, names[c] + ": ground truth", cv::Scalar(255, 200, 0))};
    for (size_t m = 0; m < labels.size(); ++m)
      tiles.push_back(viz::caption_tile(t.example_image[c], t.example[m][c], ex.pt,
                                        labels[m] + ": IoU " + fixed3(t.example_iou[m][c]) + " (mean " +
                                            fixed3(means[m][c].get<double>()) + ")",
                                        cv::Scalar(30, 144, 255)));
    rows.emplace_back();
    cv::hconcat(tiles, rows.back());
  }
  std::vector<std::vector<std::string>> table{{"mean IoU, " + counts}};
  for (const auto& n : names) table[0].push_back(n);
  for (size_t m = 0; m < labels.size(); ++m) {
    table.push_back({labels[m]});
    for (const auto& v : means[m]) table.back().push_back(fixed3(v.get<double>()));
  }
  rows.push_back(viz::text_table(table, rows[0].cols));
  cv::Mat sheet;
  cv::vconcat(rows, sheet);
  return sheet;
}

// Refused before the scenes are made and the models loaded.
void check_options(const DemoOptions& o, const std::string& checkpoint, const std::string& adapter) {
  if (adapter.empty() && o.enhancer.empty())
    throw Error("the demo compares the model with an adapter or an enhancer: give one");
  if (!o.enhancer.empty() && !glesam::is_enhancer_path(o.enhancer))
    throw Error("an enhancer is described by a .json file, got '" + o.enhancer + "'");
  if (o.scenes < 1 || o.objects < 1) throw Error("the demo needs at least one scene and one object per scene");
  for (const auto& c : o.corruptions) degrade::create(c, o.severity);  // a bad name or severity, now
  io::check_image_name(o.out.path, /*lossless=*/false);
  io::prepare_output(o.out.path);
  io::check_outputs({o.out}, {{"the checkpoint", checkpoint}, {"the adapter", adapter}, {"the enhancer", o.enhancer}});
}

}  // namespace

nlohmann::json demo(const DemoOptions& given) {
  if (given.no_enhancer && !given.enhancer.empty()) throw Error("an enhancer was given and turned off");
  DemoOptions o = given;
  // The bundled model comes with the GleSAM enhancer trained on it.
  if (o.enhancer.empty() && o.checkpoint.empty() && !o.no_enhancer) o.enhancer = bundled_enhancer();
  const auto [checkpoint, adapter] = resolve_model(o.checkpoint, o.adapter, false);
  check_options(o, checkpoint, adapter);
  std::vector<std::string> conds{"clean"}, names{"clean"};
  for (const auto& c : o.corruptions)
    if (std::find(conds.begin(), conds.end(), c) == conds.end())
      conds.push_back(c), names.push_back(c + " s" + std::to_string(o.severity));
  const Scenes sc = pick_scenes(o);
  const auto ms = load_methods(checkpoint, adapter, o.enhancer);
  const Precision prec = o.precision ? *o.precision : resolve_precision("auto", o.checkpoint.empty());
  const Tally t = score(o, sc, ms, conds, prec);

  nlohmann::json means = nlohmann::json::array(), by_method = nlohmann::json::object();
  std::vector<std::string> labels;
  for (size_t m = 0; m < ms.size(); ++m) {
    labels.push_back(ms[m].label);
    means.push_back(nlohmann::json::array());
    for (size_t c = 0; c < conds.size(); ++c) {
      means[m].push_back(t.sum[m][c] / double(sc.targets.size()));
      by_method[ms[m].label][conds[c]] = means[m][c];
    }
  }
  const std::string counts = std::to_string(sc.targets.size()) + " objects in " + std::to_string(sc.scenes.size()) +
                             " scenes";
  io::write_image(o.out.path, picture(sc, t, labels, names, means, counts), /*rgb=*/true);
  nlohmann::json j{{"checkpoint", checkpoint}, {"adapter", adapter},     {"methods", labels},
                   {"conditions", conds},      {"severity", o.severity}, {"seed", o.seed},
                   {"scenes", sc.scenes.size()}, {"objects", sc.targets.size()}, {"precision", precision_name(prec)},
                   {"mean_iou", by_method},    {"picture", o.out.path}};
  if (!o.enhancer.empty()) j["enhancer"] = o.enhancer;
  return j;
}

}  // namespace rsam::segment
