#include "segment/segment.h"

#include <torch/torch.h>

#include <chrono>

#include "error.h"
#include "io/image_codec.h"
#include "io/npy.h"
#include "model/bundled.h"
#include "model/checkpoint.h"
#include "segment/stack.h"
#include "train/cv_tensor.h"
#include "viz/viz.h"

namespace rsam::segment {

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

// Everything a caller can get wrong, refused before the seconds of loading
// and encoding: outputs that could not be written, that would land on an
// input or on each other.
void check_run(const SegmentRun& r, const std::string& checkpoint, const std::string& adapter) {
  if (r.masks == MaskChoice::Multi && r.refine > 0) throw Error("refinement gives one mask, not three");
  if (!r.gates_out.path.empty() && adapter.empty()) throw Error(r.gates_out.what + " needs an adapter");
  if (!r.out.path.empty()) io::check_image_name(r.out.path, /*lossless=*/true);
  if (!r.overlay.path.empty()) io::check_image_name(r.overlay.path, /*lossless=*/false);
  std::vector<io::NamedPath> outputs = {r.out, r.overlay, r.logits_out, r.embedding_out, r.gates_out};
  if (!r.gates_out.path.empty()) outputs.push_back({"the gate picture", gates_picture_path(r.gates_out.path)});
  for (const auto& o : outputs) io::prepare_output(o.path);
  io::check_outputs(outputs, {r.image,
                              {"the checkpoint", checkpoint},
                              {"the adapter", adapter},
                              {"the enhancer", r.enhancer},
                              r.mask_input});
}

// Low-res logits [S, S], [1, S, S] or [1, 1, S, S] as the prompt's [1, S, S]
// (the shape itself is check_prompt's).
torch::Tensor read_mask_input(const std::string& path) {
  auto arr = io::load_npy(path);
  auto t = torch::from_blob(arr.data.data(), arr.shape, torch::kFloat32).clone();
  if (t.dim() == 2) t = t.unsqueeze(0);
  if (t.dim() == 4 && t.size(0) == 1) t = t.squeeze(0);
  return t;
}

// Gate report of an adapted model: JSON and, for gated methods, the picture.
void write_gates(const std::string& path, const nlohmann::json& gates) {
  io::write_text(path, gates.dump(1));
  const cv::Mat img = viz::gate_picture(gates);
  if (!img.empty()) io::write_image(gates_picture_path(path), img, /*rgb=*/false);
}

void save_tensor_npy(const std::string& path, const torch::Tensor& t) {
  auto c = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  io::save_npy(path, c.data_ptr<float>(), c.sizes().vec());
}

// The picked mask, the overlay, the logits and the embedding, as asked.
void write_outputs(const SegmentRun& r, const Image8& img, const Prediction& p, int64_t best,
                   const SamPredictor& pred) {
  const auto masks = p.masks.to(torch::kCPU).to(torch::kUInt8).contiguous();
  const cv::Mat mask(img.height, img.width, CV_8UC1, masks[best].data_ptr<uint8_t>());
  if (!r.out.path.empty()) io::write_image(r.out.path, mask != 0, /*rgb=*/false);
  if (!r.overlay.path.empty()) {
    const cv::Mat rgb(img.height, img.width, CV_8UC3, const_cast<uint8_t*>(img.data.data()));
    const auto& q = r.prompt;
    io::write_image(r.overlay.path, viz::mask_overlay(rgb, mask.data, {q.points, q.labels, q.box}), /*rgb=*/true);
  }
  if (!r.logits_out.path.empty()) save_tensor_npy(r.logits_out.path, p.low_res_logits);
  if (!r.embedding_out.path.empty()) save_tensor_npy(r.embedding_out.path, pred.embedding());
}

// The masks' scores, stabilities and areas, the best one and how it was picked.
nlohmann::json masks_summary(const SegmentRun& r, const Prediction& p, int64_t best, bool picked) {
  nlohmann::json j;
  if (picked) j["picked_from"] = 3;  // one of three, not the single-mask output
  if (picked || r.masks == MaskChoice::Multi) j["pick"] = pick_name(r.pick);
  if (r.refine > 0) j["refine"] = r.refine;
  if (r.flip) j["flip"] = true;
  j["best"] = best;
  j["masks"] = nlohmann::json::array();
  auto masks = p.masks.to(torch::kCPU).to(torch::kUInt8).contiguous();
  auto iou = p.iou_predictions.to(torch::kCPU).contiguous();
  const auto stability = stability_scores(p.low_res_logits.to(torch::kCPU));
  for (int64_t i = 0; i < masks.size(0); ++i)
    j["masks"].push_back({{"score", iou[i].item<float>()},
                          {"stability", stability[i].item<float>()},
                          {"area", masks[i].sum().item<int64_t>()}});
  return j;
}

}  // namespace

std::string gates_picture_path(const std::string& report) {
  const auto slash = report.rfind('/');
  const auto dot = report.rfind('.');
  return (dot == std::string::npos || (slash != std::string::npos && dot < slash) ? report : report.substr(0, dot)) +
         ".png";
}

nlohmann::json run(const SegmentRun& r) {
  const auto t0 = Clock::now();
  // auto: bf16 only for the bundled model, whose bf16 masks were measured
  // against fp32 (docs/performance.md), and only on native-bf16 CPUs.
  const Precision prec = r.precision ? *r.precision : resolve_precision("auto", r.checkpoint.empty());
  const auto [checkpoint, adapter] = resolve_model(r.checkpoint, r.adapter, r.no_adapter);
  check_run(r, checkpoint, adapter);
  Prompt prompt = r.prompt;
  if (!r.mask_input.path.empty()) prompt.mask_input = read_mask_input(r.mask_input.path);
  const Image8 img = to_image8(io::read_image(r.image.path, io::ImageRead::Rgb));
  check_prompt(prompt, img.width, img.height);
  Stack stack(load_sam(checkpoint).model);
  const double load_ms = ms_since(t0);
  check_prompt(prompt, img.width, img.height, 4 * stack.base->config.embedding_size());  // the mask input's shape
  if (!adapter.empty()) stack.add_adapter(adapter);
  // GleSAM: the (adapted) encoder's embedding enhanced once, before the
  // decodes; the embedding output is then the enhanced one.
  if (!r.enhancer.empty()) stack.add_enhancer(r.enhancer);
  SamPredictor pred = stack.predictor(prec, r.flip);
  auto t1 = Clock::now();
  pred.set_image(img);
  const double encode_ms = ms_since(t1);
  if (!r.gates_out.path.empty()) write_gates(r.gates_out.path, stack.adapted->gates());
  // By default one mask, picked from three for a lone point (predict_one),
  // which is what `rsam eval` scores; on clean rsam-tiny scenes the
  // single-mask output is worse, under corruption it can be ahead (README).
  const bool picked = r.masks == MaskChoice::Auto && is_ambiguous(prompt);
  t1 = Clock::now();
  auto p = r.masks == MaskChoice::Auto ? pred.predict_one(prompt, false, r.pick)
                                       : pred.predict(prompt, r.masks == MaskChoice::Multi);
  if (r.refine > 0) p = pred.refine(prompt, p, r.refine);
  const double decode_ms = ms_since(t1);

  const int64_t best = best_index(p, r.pick);
  write_outputs(r, img, p, best, pred);
  nlohmann::json j = stack.describe();
  j["precision"] = precision_name(prec);
  j["image"] = {{"width", img.width}, {"height", img.height}};
  j.update(masks_summary(r, p, best, picked));
  j["timings_ms"] = {{"load", load_ms}, {"encode", encode_ms}, {"decode", decode_ms}, {"total", ms_since(t0)}};
  return j;
}

}  // namespace rsam::segment
