// `rsam segment`: one image, one prompt, masks out. The work is the
// predictor's (model/predictor.h); this file maps flags onto it and writes
// what was asked for.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "adapt/adapter.h"
#include "app/commands.h"
#include "app/image_io.h"
#include "error.h"
#include "glesam/enhancer.h"
#include "io/fs.h"
#include "io/image_codec.h"
#include "io/npy.h"
#include "model/bundled.h"
#include "model/checkpoint.h"
#include "model/predictor.h"
#include "viz/viz.h"

namespace rsam::app {

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

struct SegmentArgs {
  std::string checkpoint, image, box, mask_input, out, overlay, logits_out, embedding_out, precision = "auto";
  std::string adapter, enhancer, gates_out, pick = "score";
  std::vector<std::string> points;
  bool multimask = false, single_mask = false, json = false, no_adapter = false, flip = false;
  int threads = 0, refine = 0;
};

std::vector<double> parse_numbers(const std::string& s, const char* what, size_t min_n, size_t max_n) {
  std::vector<double> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      const double d = std::stod(item, &used);
      if (used != item.size()) throw std::invalid_argument(item);
      v.push_back(d);
    } catch (const std::exception&) {
      throw Error(std::string("bad ") + what + " '" + s + "': '" + item + "' is not a number");
    }
  }
  if (v.size() < min_n || v.size() > max_n)
    throw Error(std::string("bad ") + what + " '" + s + "': expected " + std::to_string(min_n) +
                (min_n == max_n ? "" : " or " + std::to_string(max_n)) + " comma-separated numbers");
  for (double d : v)
    if (!std::isfinite(d)) throw Error(std::string("bad ") + what + " '" + s + "': not finite");
  return v;
}

// The flags as a Prompt. Its checks against the image and the model (count,
// range, mask input shape) are the predictor's (check_prompt); here only
// what the flags' syntax decides: a label given on the command line is 1 or 0.
Prompt parse_prompt(const SegmentArgs& a) {
  Prompt prompt;
  for (const auto& s : a.points) {
    auto v = parse_numbers(s, "point", 2, 3);
    prompt.points.push_back({float(v[0]), float(v[1])});
    const double lab = v.size() == 3 ? v[2] : 1.0;
    if (lab != 0.0 && lab != 1.0) throw Error("bad point '" + s + "': label must be 1 (foreground) or 0 (background)");
    prompt.labels.push_back(int(lab));
  }
  if (!a.box.empty()) {
    auto v = parse_numbers(a.box, "box", 4, 4);
    prompt.box = std::array<float, 4>{float(v[0]), float(v[1]), float(v[2]), float(v[3])};
  }
  if (!a.mask_input.empty()) {
    auto arr = io::load_npy(a.mask_input);
    auto t = torch::from_blob(arr.data.data(), arr.shape, torch::kFloat32).clone();
    if (t.dim() == 2) t = t.unsqueeze(0);
    if (t.dim() == 4 && t.size(0) == 1) t = t.squeeze(0);
    prompt.mask_input = t;
  }
  if (prompt.points.empty() && !prompt.box && !prompt.mask_input.defined())
    throw Error("give a prompt: --point X,Y[,LABEL], --box X0,Y0,X1,Y1 or --mask-input M.npy");
  return prompt;
}

// Where the gate picture goes: the report's path with a .png extension.
std::string gates_picture_path(const std::string& path) {
  const auto slash = path.rfind('/');
  const auto dot = path.rfind('.');
  return (dot == std::string::npos || (slash != std::string::npos && dot < slash) ? path : path.substr(0, dot)) +
         ".png";
}

// Gate report of an adapted model: JSON at `path` and, for gated methods,
// the gate picture beside it.
void write_gates(const std::string& path, const nlohmann::json& gates) {
  const auto text = gates.dump(1);
  io::write_atomic(path, text.data(), text.size());
  const cv::Mat img = viz::gate_picture(gates);
  if (!img.empty()) io::write_image(gates_picture_path(path), img, /*rgb=*/false);
}

// Everything a user can get wrong, refused before the seconds of loading and
// encoding: flag combinations, output names and folders, outputs that would
// land on an input or on each other.
void check_segment_args(const SegmentArgs& a, const std::string& checkpoint, const std::string& adapter) {
  if (a.no_adapter && !a.adapter.empty()) throw Error("give --adapter or --no-adapter, not both");
  if (a.multimask && a.single_mask) throw Error("give --multimask or --single-mask, not both");
  if (a.multimask && a.refine > 0) throw Error("--refine gives one mask: not with --multimask");
  if (!a.gates_out.empty() && adapter.empty()) throw Error("--gates-out needs --adapter");
  if (!a.enhancer.empty() && !glesam::is_enhancer_path(a.enhancer))
    throw Error("--enhancer expects an enhancer description (.json), got '" + a.enhancer + "'");
  if (!a.out.empty()) io::check_image_name(a.out, /*lossless=*/true);
  if (!a.overlay.empty()) io::check_image_name(a.overlay, /*lossless=*/false);
  std::vector<io::NamedPath> outputs = {{"--out", a.out},
                                        {"--overlay", a.overlay},
                                        {"--logits-out", a.logits_out},
                                        {"--embedding-out", a.embedding_out},
                                        {"--gates-out", a.gates_out}};
  if (!a.gates_out.empty()) outputs.push_back({"the gate picture", gates_picture_path(a.gates_out)});
  for (const auto& o : outputs) io::prepare_output(o.path);
  io::check_outputs(outputs, {{"--image", a.image},
                              {"the checkpoint", checkpoint},
                              {"the adapter", adapter},
                              {"the enhancer", a.enhancer},
                              {"--mask-input", a.mask_input}});
}

void save_tensor_npy(const std::string& path, const torch::Tensor& t) {
  auto c = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  io::save_npy(path, c.data_ptr<float>(), c.sizes().vec());
}

void write_overlay(const std::string& path, const Image8& img, const uint8_t* mask, const Prompt& p) {
  const cv::Mat rgb(img.height, img.width, CV_8UC3, const_cast<uint8_t*>(img.data.data()));
  io::write_image(path, viz::mask_overlay(rgb, mask, {p.points, p.labels, p.box}), /*rgb=*/true);
}

// The summary printed on stdout (and its JSON form).
nlohmann::json summary(const SegmentArgs& a, const Prediction& r, int64_t best, bool picked) {
  nlohmann::json j;
  if (picked) j["picked_from"] = 3;  // one of three, not the single-mask output
  if (picked || a.multimask) j["pick"] = a.pick;
  if (a.refine > 0) j["refine"] = a.refine;
  if (a.flip) j["flip"] = true;
  j["best"] = best;
  j["masks"] = nlohmann::json::array();
  auto masks = r.masks.to(torch::kCPU).to(torch::kUInt8).contiguous();
  auto iou = r.iou_predictions.to(torch::kCPU).contiguous();
  const auto stability = stability_scores(r.low_res_logits.to(torch::kCPU));
  for (int64_t i = 0; i < masks.size(0); ++i)
    j["masks"].push_back({{"score", iou[i].item<float>()},
                          {"stability", stability[i].item<float>()},
                          {"area", masks[i].sum().item<int64_t>()}});
  return j;
}

void run_segment(const SegmentArgs& a) {
  configure_runtime(a.threads, a.precision);
  const Pick rule = parse_pick(a.pick);
  // auto: bf16 only for the bundled model, whose bf16 masks were measured
  // against fp32 (docs/performance.md), and only on native-bf16 CPUs.
  const Precision prec = resolve_precision(a.precision, a.checkpoint.empty());
  const auto t0 = Clock::now();
  const auto [checkpoint, adapter] = resolve_model(a.checkpoint, a.adapter, a.no_adapter);
  check_segment_args(a, checkpoint, adapter);
  Prompt prompt = parse_prompt(a);
  const Image8 img = read_rgb(a.image);
  check_prompt(prompt, img.width, img.height);
  auto loaded = load_sam(checkpoint);
  const double load_ms = ms_since(t0);
  check_prompt(prompt, img.width, img.height, 4 * loaded.model->config.embedding_size());  // the mask input's shape
  std::optional<adapt::AdaptedSam> adapted;
  if (!adapter.empty()) adapted.emplace(adapt::AdaptedSam::load(loaded.model, adapter));
  Sam model = adapted ? adapted->model() : loaded.model;
  // GleSAM: the (adapted) encoder's embedding enhanced once, before the
  // decodes; --embedding-out then writes the enhanced one.
  std::shared_ptr<const glesam::Enhancer> enhancer;
  if (!a.enhancer.empty()) enhancer = glesam::load_for(model, a.enhancer);
  SamPredictor pred(model, prec, a.flip);
  if (enhancer) glesam::attach(pred, enhancer);
  auto t1 = Clock::now();
  pred.set_image(img);
  const double encode_ms = ms_since(t1);
  if (!a.gates_out.empty()) write_gates(a.gates_out, adapted->gates());
  // By default one mask, picked from three for a lone point (predict_one),
  // which is what `rsam eval` scores; on clean rsam-tiny scenes the
  // single-mask output is worse, under corruption it can be ahead (README).
  const bool pick = !a.multimask && !a.single_mask && is_ambiguous(prompt);
  t1 = Clock::now();
  auto r = a.multimask || a.single_mask ? pred.predict(prompt, a.multimask) : pred.predict_one(prompt, false, rule);
  if (a.refine > 0) r = pred.refine(prompt, r, a.refine);
  const double decode_ms = ms_since(t1);

  auto masks = r.masks.to(torch::kCPU).to(torch::kUInt8).contiguous();
  const int64_t best = best_index(r, rule);
  const uint8_t* best_mask = masks[best].data_ptr<uint8_t>();
  if (!a.out.empty()) write_mask_png(a.out, best_mask, img.width, img.height);
  if (!a.overlay.empty()) write_overlay(a.overlay, img, best_mask, prompt);
  if (!a.logits_out.empty()) save_tensor_npy(a.logits_out, r.low_res_logits);
  if (!a.embedding_out.empty()) save_tensor_npy(a.embedding_out, pred.embedding());

  nlohmann::json j;
  j["model"] = loaded.model->config.type_name();
  j["precision"] = precision_name(prec);
  if (adapted) j["adapter"] = adapted->method();
  if (enhancer) j["enhancer"] = {{"method", "glesam"}, {"gamma", enhancer->gamma()}, {"timestep", enhancer->timestep()}};
  j["image"] = {{"width", img.width}, {"height", img.height}};
  j.update(summary(a, r, best, pick));
  j["timings_ms"] = {{"load", load_ms}, {"encode", encode_ms}, {"decode", decode_ms}, {"total", ms_since(t0)}};
  if (a.json) {
    std::cout << j.dump() << "\n";
    return;
  }
  for (size_t i = 0; i < j["masks"].size(); ++i)
    std::printf("mask %zu: score %.4f, area %lld px%s\n", i, j["masks"][i]["score"].get<float>(),
                (long long)j["masks"][i]["area"].get<int64_t>(), int64_t(i) == best ? " (best)" : "");
  std::printf("encode %.0f ms, decode %.0f ms\n", encode_ms, decode_ms);
}

}  // namespace

void add_segment_command(CLI::App& app) {
  auto a = std::make_shared<SegmentArgs>();
  auto* c = app.add_subcommand("segment", "Segment an image from point, box or mask prompts");
  c->add_option("--checkpoint", a->checkpoint, "SAM checkpoint (.pth or .safetensors); default: the bundled rsam-tiny");
  c->add_option("--image", a->image, "Input image")->required();
  c->add_option("--point", a->points, "X,Y[,LABEL] (LABEL 1 foreground, default; 0 background); repeatable");
  c->add_option("--box", a->box, "X0,Y0,X1,Y1");
  c->add_option("--mask-input", a->mask_input, "Low-res mask logits .npy [1,256,256]");
  c->add_flag("--multimask", a->multimask, "Return three masks (reference order)");
  c->add_flag("--single-mask", a->single_mask,
              "Use the decoder's single-mask output even for one point alone (by default one point is decoded "
              "into three masks and one is picked, see --pick)");
  c->add_option("--pick", a->pick,
                "How one of a lone point's three masks is picked: score (predicted IoU, default) or stability "
                "(SAM's stability score)")
      ->check(CLI::IsMember({"score", "stability"}));
  c->add_flag("--flip", a->flip,
              "Test-time flip: the image also encoded mirrored and the two views' logits averaged (twice the time)");
  c->add_option("--precision", a->precision,
                "auto, fp32 or bf16 (image encoder); auto: bf16 for the bundled model on CPUs with native bf16, "
                "else fp32")
      ->check(CLI::IsMember({"auto", "fp32", "bf16"}));
  c->add_option("--threads", a->threads, "Intra-op threads (default: all cores)");
  c->add_option("--out", a->out, "Binary mask PNG (the picked mask)");
  c->add_option("--overlay", a->overlay, "Image with the mask and prompts drawn");
  c->add_option("--logits-out", a->logits_out, "float32 [N,256,256] low-res logits .npy");
  c->add_option("--embedding-out", a->embedding_out, "float32 image embedding .npy (the one the decoder sees)");
  c->add_option("--adapter", a->adapter,
                "Adapter file (.safetensors) trained on this checkpoint; default with rsam-tiny: its bundled GaRA");
  c->add_flag("--no-adapter", a->no_adapter, "Run the base model alone");
  c->add_option("--enhancer", a->enhancer,
                "GleSAM enhancer (E.json): the embedding restored by one diffusion step before decoding");
  c->add_option("--gates-out", a->gates_out, "Gate decisions per layer as JSON (+ a .png picture)");
  c->add_option("--refine", a->refine,
                "Rounds of post-refinement: the mask decoded again with itself as the mask input")
      ->check(CLI::Range(0, 10));
  c->add_flag("--json", a->json, "Print a JSON summary on stdout");
  c->callback([a] { run_segment(*a); });
}

}  // namespace rsam::app
