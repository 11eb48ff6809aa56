// `rsam segment`, `rsam info`, `rsam convert`, `rsam bench`: thin layers
// over the library (model/, io/), so everything here is also reachable from
// C++ without the CLI.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "adapt/adapter.h"
#include "app/commands.h"
#include "app/image_io.h"
#include "error.h"
#include "io/fs.h"
#include "io/image_codec.h"
#include "io/npy.h"
#include "io/tensor_file.h"
#include "model/attention.h"
#include "model/checkpoint.h"
#include "model/predictor.h"
#include "model/runtime.h"

namespace rsam::app {

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

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

void configure_runtime(int threads, const std::string& precision = "fp32") {
  set_threads(threads);
  if (const auto w = bf16_warning(); precision == "bf16" && !w.empty()) std::cerr << w << "\n";
  static bool warned = false;
  if (!warned) {
    warned = true;
    const auto w = blas_warning();
    if (!w.empty()) std::cerr << w << "\n";
  }
}

// Overlay: the image, the mask tinted, its outline, and the prompts drawn.
Image8 make_overlay(const Image8& img, const uint8_t* mask, const Prompt& p) {
  Image8 out = img;
  const int w = img.width, h = img.height;
  const uint8_t tint[3] = {30, 144, 255};
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const size_t i = size_t(y) * w + x;
      if (!mask[i]) continue;
      const bool edge =
          x == 0 || y == 0 || x == w - 1 || y == h - 1 || !mask[i - 1] || !mask[i + 1] || !mask[i - w] || !mask[i + w];
      uint8_t* px = out.data.data() + i * 3;
      for (int c = 0; c < 3; ++c) px[c] = edge ? 255 : uint8_t((px[c] * 2 + tint[c] * 3) / 5);
    }
  auto dot = [&](int cx, int cy, int r, const uint8_t col[3]) {
    for (int y = std::max(0, cy - r); y <= std::min(h - 1, cy + r); ++y)
      for (int x = std::max(0, cx - r); x <= std::min(w - 1, cx + r); ++x)
        if ((x - cx) * (x - cx) + (y - cy) * (y - cy) <= r * r) std::memcpy(&out.data[(size_t(y) * w + x) * 3], col, 3);
  };
  const uint8_t green[3] = {40, 220, 60}, red[3] = {230, 40, 40}, yellow[3] = {255, 220, 0};
  const int r = std::max(3, std::min(w, h) / 100);
  for (size_t i = 0; i < p.points.size(); ++i)
    dot(int(p.points[i][0]), int(p.points[i][1]), r, p.labels[i] == 1 ? green : red);
  if (p.box) {
    const auto& b = *p.box;
    const int x0 = std::clamp(int(b[0]), 0, w - 1), x1 = std::clamp(int(b[2]), 0, w - 1);
    const int y0 = std::clamp(int(b[1]), 0, h - 1), y1 = std::clamp(int(b[3]), 0, h - 1);
    for (int x = x0; x <= x1; ++x) {
      std::memcpy(&out.data[(size_t(y0) * w + x) * 3], yellow, 3);
      std::memcpy(&out.data[(size_t(y1) * w + x) * 3], yellow, 3);
    }
    for (int y = y0; y <= y1; ++y) {
      std::memcpy(&out.data[(size_t(y) * w + x0) * 3], yellow, 3);
      std::memcpy(&out.data[(size_t(y) * w + x1) * 3], yellow, 3);
    }
  }
  return out;
}

void save_tensor_npy(const std::string& path, const torch::Tensor& t) {
  auto c = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  io::save_npy(path, c.data_ptr<float>(), c.sizes().vec());
}

struct SegmentArgs {
  std::string checkpoint, image, box, mask_input, out, overlay, logits_out, embedding_out, precision = "fp32";
  std::string adapter, gates_out, pick = "score";
  std::vector<std::string> points;
  bool multimask = false, single_mask = false, json = false, no_adapter = false, flip = false;
  int threads = 0, refine = 0;
};

Prompt parse_prompt(const SegmentArgs& a) {
  Prompt prompt;
  if (a.points.size() > kMaxPromptPoints)
    throw Error(std::to_string(a.points.size()) + " points given: at most " + std::to_string(kMaxPromptPoints));
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

// Everything a user can get wrong, refused before the seconds of loading and
// encoding: flag combinations, output names and folders, outputs that would
// land on an input or on each other.
void check_segment_args(const SegmentArgs& a, const std::string& checkpoint, const std::string& adapter) {
  if (a.no_adapter && !a.adapter.empty()) throw Error("give --adapter or --no-adapter, not both");
  if (a.multimask && a.single_mask) throw Error("give --multimask or --single-mask, not both");
  if (a.multimask && a.refine > 0) throw Error("--refine gives one mask: not with --multimask");
  if (!a.gates_out.empty() && adapter.empty()) throw Error("--gates-out needs --adapter");
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
                              {"--mask-input", a.mask_input}});
}

void run_segment(const SegmentArgs& a) {
  configure_runtime(a.threads, a.precision);
  const Pick rule = parse_pick(a.pick);
  const Precision prec = parse_precision(a.precision);
  const auto t0 = Clock::now();
  const auto [checkpoint, adapter] = resolve_model(a.checkpoint, a.adapter, a.no_adapter);
  check_segment_args(a, checkpoint, adapter);
  Prompt prompt = parse_prompt(a);
  const Image8 img = read_rgb(a.image);
  check_prompt(prompt, img.width, img.height);
  auto loaded = load_sam(checkpoint);
  const double load_ms = ms_since(t0);
  if (prompt.mask_input.defined()) {
    const int64_t m = 4 * loaded.model->config.embedding_size();
    if (prompt.mask_input.dim() != 3 || prompt.mask_input.size(1) != m || prompt.mask_input.size(2) != m)
      throw Error("--mask-input must be a [1," + std::to_string(m) + "," + std::to_string(m) + "] array");
  }
  std::optional<adapt::AdaptedSam> adapted;
  if (!adapter.empty()) adapted.emplace(adapt::AdaptedSam::load(loaded.model, adapter));
  SamPredictor pred(adapted ? adapted->model() : loaded.model, prec, a.flip);
  auto t1 = Clock::now();
  pred.set_image(img);
  const double encode_ms = ms_since(t1);
  if (!a.gates_out.empty()) write_gates(a.gates_out, adapted->gates());
  // By default one mask, picked from three for a lone point (predict_one),
  // which is what `rsam eval` scores. On clean rsam-tiny scenes the
  // single-mask output is worse (73.0 against 74.5 on 300 held-out
  // objects); under corruption it can be ahead (README).
  const bool pick = !a.multimask && !a.single_mask && is_ambiguous(prompt);
  t1 = Clock::now();
  auto r = a.multimask || a.single_mask ? pred.predict(prompt, a.multimask) : pred.predict_one(prompt, false, rule);
  if (a.refine > 0) r = pred.refine(prompt, r, a.refine);
  const double decode_ms = ms_since(t1);

  auto masks = r.masks.to(torch::kCPU).to(torch::kUInt8).contiguous();
  auto iou = r.iou_predictions.to(torch::kCPU).contiguous();
  const int64_t M = masks.size(0);
  const int64_t best = best_index(r, rule);
  const uint8_t* best_mask = masks[best].data_ptr<uint8_t>();
  if (!a.out.empty()) write_mask_png(a.out, best_mask, img.width, img.height);
  if (!a.overlay.empty()) write_image(a.overlay, make_overlay(img, best_mask, prompt));
  if (!a.logits_out.empty()) save_tensor_npy(a.logits_out, r.low_res_logits);
  if (!a.embedding_out.empty()) save_tensor_npy(a.embedding_out, pred.embedding());

  nlohmann::json j;
  j["model"] = loaded.model->config.type_name();
  if (adapted) j["adapter"] = adapted->method();
  j["image"] = {{"width", img.width}, {"height", img.height}};
  j["best"] = best;
  if (pick) j["picked_from"] = 3;  // one of three, not the single-mask output
  if (pick || a.multimask) j["pick"] = a.pick;
  if (a.refine > 0) j["refine"] = a.refine;
  if (a.flip) j["flip"] = true;
  j["masks"] = nlohmann::json::array();
  const auto stability = stability_scores(r.low_res_logits.to(torch::kCPU));
  for (int64_t i = 0; i < M; ++i)
    j["masks"].push_back({{"score", iou[i].item<float>()},
                          {"stability", stability[i].item<float>()},
                          {"area", masks[i].sum().item<int64_t>()}});
  j["timings_ms"] = {{"load", load_ms}, {"encode", encode_ms}, {"decode", decode_ms}, {"total", ms_since(t0)}};
  if (a.json) {
    std::cout << j.dump() << "\n";
  } else {
    for (int64_t i = 0; i < M; ++i)
      std::printf("mask %lld: score %.4f, area %lld px%s\n", (long long)i, iou[i].item<float>(),
                  (long long)masks[i].sum().item<int64_t>(), i == best ? " (best)" : "");
    std::printf("encode %.0f ms, decode %.0f ms\n", encode_ms, decode_ms);
  }
}

void run_info(const std::string& path, bool json) {
  auto sd = io::load_any(path);
  std::optional<SamConfig> hint;
  if (path.size() > 12 && path.substr(path.size() - 12) == ".safetensors") {
    auto f = io::load_safetensors(path);
    auto it = f.metadata.find("rsam.config");
    if (it != f.metadata.end()) hint = SamConfig::from_json(it->second);
  }
  const SamConfig cfg = detect_config(sd, hint ? &*hint : nullptr);
  const int64_t params = parameter_count(sd);
  if (json) {
    nlohmann::json j;
    j["model"] = cfg.type_name();
    j["config"] = nlohmann::json::parse(cfg.to_json());
    j["parameters"] = params;
    j["tensors"] = nlohmann::json::array();
    for (const auto& [k, t] : sd)
      j["tensors"].push_back({{"name", k}, {"dtype", io::dtype_name(t.dtype)}, {"shape", t.shape}});
    std::cout << j.dump(2) << "\n";
    return;
  }
  std::printf("model: %s\nparameters: %lld (%.2f M)\ntensors: %zu\nconfig: %s\n", cfg.type_name().c_str(),
              (long long)params, params / 1e6, sd.size(), cfg.to_json().c_str());
  for (const auto& [k, t] : sd) {
    std::string shape;
    for (size_t i = 0; i < t.shape.size(); ++i) shape += (i ? "x" : "") + std::to_string(t.shape[i]);
    std::printf("  %-70s %-5s %s\n", k.c_str(), io::dtype_name(t.dtype), shape.c_str());
  }
}

bool ends_with(const std::string& s, const std::string& e) {
  return s.size() >= e.size() && s.compare(s.size() - e.size(), e.size(), e) == 0;
}

struct ConvertArgs {
  std::string in, out, adapter, adapter_out;
  int img_size = 0, encoder_depth = 0, decoder_width = 0;
};

void run_convert(const ConvertArgs& a) {
  // Goes through the model so the output is known to load, and carries the
  // full config (including the decoder head count) into safetensors.
  if (a.adapter.empty() != a.adapter_out.empty()) throw Error("--adapter and --adapter-out go together");
  // Deepening moves blocks and widening changes shapes: only a re-size keeps
  // every adapter tensor meaningful.
  if (!a.adapter.empty() && (!a.img_size || a.encoder_depth || a.decoder_width))
    throw Error("--adapter carries an adapter over --img-size only");
  if (!ends_with(a.out, ".safetensors") && !ends_with(a.out, ".pth"))
    throw Error("output must end in .safetensors or .pth");
  for (const auto& o : {a.out, a.adapter_out}) io::prepare_output(o);
  io::check_outputs({{"the output", a.out}, {"--adapter-out", a.adapter_out}},
                    {{"the input", a.in}, {"--adapter", a.adapter}});
  auto loaded = load_sam(a.in);
  const Sam source = loaded.model;
  if (a.img_size) loaded.model = resize_input(loaded.model, a.img_size);  // validates the new config
  if (a.encoder_depth) loaded.model = deepen_encoder(loaded.model, a.encoder_depth);
  if (a.decoder_width) loaded.model = widen_decoder(loaded.model, a.decoder_width);
  save_sam(loaded.model, a.out);
  const int64_t params = parameter_count(*loaded.model);  // a new input size, depth or width changes it
  std::printf("wrote %s (%s, %lld parameters, %d px input)\n", a.out.c_str(), loaded.model->config.type_name().c_str(),
              (long long)params, loaded.model->config.img_size);
  if (!a.adapter.empty()) {
    // After save_sam: this attaches the adapters to both models.
    adapt::rebase_adapter(source, loaded.model, a.adapter, a.adapter_out);
    std::printf("wrote %s (%s carried over to the converted model)\n", a.adapter_out.c_str(), a.adapter.c_str());
  }
}

struct BenchArgs {
  std::string checkpoint, model, precision = "fp32", adapter;
  int threads = 0, repeat = 3, decode_repeat = 20;
  bool json = false, reference_attention = false;
};

void run_bench(const BenchArgs& a) {
  configure_runtime(a.threads, a.precision);
  if (a.checkpoint.empty() == a.model.empty()) throw Error("give exactly one of --checkpoint or --model");
  if (a.repeat < 1) throw Error("--repeat must be >= 1");
  if (a.decode_repeat < 1) throw Error("--decode-repeat must be >= 1");
  set_reference_attention(a.reference_attention);
  Sam model{nullptr};
  if (!a.checkpoint.empty()) {
    model = load_sam(a.checkpoint).model;
  } else {
    // Random weights of the official shapes: timing does not depend on values.
    SamConfig cfg = a.model == "vit_b"   ? SamConfig::vit_b()
                    : a.model == "vit_l" ? SamConfig::vit_l()
                    : a.model == "vit_h" ? SamConfig::vit_h()
                                         : throw Error("unknown --model '" + a.model + "' (vit_b, vit_l, vit_h)");
    torch::manual_seed(0);
    model = Sam(cfg);
    model->eval();
  }
  SamPredictor pred(model, parse_precision(a.precision));
  const int S = model->config.img_size;
  Image8 img(S, S, 3);
  for (size_t i = 0; i < img.data.size(); ++i) img.data[i] = uint8_t((i * 2654435761u) >> 24);
  std::vector<double> enc, dec, enc_adapted;
  // With --adapter, plain and adapted encodes run in pairs (time_pairs) so
  // the overhead ratio holds even when the machine's speed drifts.
  std::optional<adapt::AdaptedSam> adapted;
  std::vector<std::pair<AdaptableLinear, std::shared_ptr<adapt::Adapter>>> hooks;
  if (!a.adapter.empty()) {
    adapted.emplace(model, adapt::load_config(a.adapter), 0);
    {
      // Trained-looking weights: non-zero updates, gates as initialized.
      torch::NoGradGuard ng;
      for (auto& [k, t] : adapted->trainable())
        if (k.find(".adapter.") != std::string::npos && k.find(".g_") == std::string::npos &&
            k.find("gate") == std::string::npos)
          t.add_(torch::randn_like(t) * 0.01);
    }
    adapted->model()->eval();
    for (auto& [name, lin] : adapt::adaptable_layers(*model))
      if (lin->has_adapter()) hooks.emplace_back(lin, std::dynamic_pointer_cast<adapt::Adapter>(lin->adapter));
  }
  auto set_attached = [&](bool on) {
    for (auto& [lin, ad] : hooks) {
      if (on)
        lin->attach(ad);
      else
        lin->detach();
    }
  };
  if (adapted) {
    // Detaching and attaching swap a pointer per layer: microseconds in the
    // timed calls, against milliseconds of encoding.
    const PairTimes t = time_pairs(
        a.repeat,
        [&] {
          set_attached(false);
          pred.set_image(img);
        },
        [&] {
          set_attached(true);
          pred.set_image(img);
        });
    for (double s : t.a) enc.push_back(1e3 * s);
    for (double s : t.b) enc_adapted.push_back(1e3 * s);
  } else {
    for (int i = 0; i < a.repeat; ++i) {
      const auto t = Clock::now();
      pred.set_image(img);
      enc.push_back(ms_since(t));
    }
  }
  Prompt p;
  p.points = {{float(S / 2), float(S / 2)}};
  p.labels = {1};
  for (int i = 0; i < a.decode_repeat; ++i) {
    auto t = Clock::now();
    pred.predict(p, true);
    dec.push_back(ms_since(t));
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  nlohmann::json j{{"model", model->config.type_name()},
                   {"precision", a.precision},
                   {"threads", num_threads()},
                   {"blas_threads", blas_threads()},
                   {"omp_wait_policy", omp_waits_passively() ? "passive" : "default"},
                   {"image_size", S},
                   {"attention", a.reference_attention ? "reference" : "chunked"},
                   {"encode_ms", enc},
                   {"decode_ms", dec},
                   {"encode_median_ms", median(enc)},
                   {"decode_median_ms", median(dec)}};
  if (adapted) {
    std::vector<double> ratios;
    for (size_t i = 0; i < enc.size(); ++i) ratios.push_back(enc_adapted[i] / enc[i]);
    j["adapter"] = adapted->method();
    j["adapter_params"] = adapted->trainable_count();
    j["adapted_encode_ms"] = enc_adapted;
    j["adapted_encode_median_ms"] = median(enc_adapted);
    j["overhead_ratio_median"] = median(ratios);
  }
  if (a.json) {
    std::cout << j.dump() << "\n";
  } else {
    std::printf("%s %s, %d threads: encode median %.0f ms, decode median %.1f ms\n",
                j["model"].get<std::string>().c_str(), a.precision.c_str(), num_threads(), median(enc), median(dec));
    if (adapted)
      std::printf("with %s: encode median %.0f ms, overhead ratio (pairwise median) %.3f\n", adapted->method().c_str(),
                  median(enc_adapted), j["overhead_ratio_median"].get<double>());
  }
}

}  // namespace

std::string bundled_model(const std::string& file) {
  std::vector<std::string> dirs;
  if (const char* env = std::getenv("RSAM_MODELS")) dirs.emplace_back(env);
  // Installed layout (bin/rsam beside share/rsam/models), then the source
  // tree this binary was built from.
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) dirs.push_back((exe.parent_path().parent_path() / "share" / "rsam" / "models").string());
  dirs.emplace_back(RSAM_SOURCE_DIR "/models");
  for (const auto& d : dirs) {
    const auto p = std::filesystem::path(d) / file;
    if (std::filesystem::exists(p)) return p.string();
  }
  return {};
}

std::pair<std::string, std::string> resolve_model(const std::string& checkpoint, const std::string& adapter,
                                                  bool no_adapter) {
  if (!checkpoint.empty()) return {checkpoint, no_adapter ? "" : adapter};
  const std::string base = bundled_model("rsam-tiny.safetensors");
  if (base.empty())
    throw Error("no --checkpoint given and the bundled rsam-tiny.safetensors was not found (set RSAM_MODELS)");
  std::string ad = adapter;
  // The bundled adapter belongs to the bundled base only.
  if (ad.empty() && !no_adapter) ad = bundled_model("rsam-tiny-gara.safetensors");
  return {base, no_adapter ? "" : ad};
}

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
  c->add_option("--precision", a->precision, "fp32 or bf16 (image encoder)")->check(CLI::IsMember({"fp32", "bf16"}));
  c->add_option("--threads", a->threads, "Intra-op threads (default: all cores)");
  c->add_option("--out", a->out, "Binary mask PNG (the picked mask)");
  c->add_option("--overlay", a->overlay, "Image with the mask and prompts drawn");
  c->add_option("--logits-out", a->logits_out, "float32 [N,256,256] low-res logits .npy");
  c->add_option("--embedding-out", a->embedding_out, "float32 image embedding .npy");
  c->add_option("--adapter", a->adapter,
                "Adapter file (.safetensors) trained on this checkpoint; default with rsam-tiny: its bundled GaRA");
  c->add_flag("--no-adapter", a->no_adapter, "Run the base model alone");
  c->add_option("--gates-out", a->gates_out, "Gate decisions per layer as JSON (+ a .png picture)");
  c->add_option("--refine", a->refine,
                "Rounds of post-refinement: the mask decoded again with itself as the mask input")
      ->check(CLI::Range(0, 10));
  c->add_flag("--json", a->json, "Print a JSON summary on stdout");
  c->callback([a] { run_segment(*a); });
}

void add_info_command(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  auto* c = app.add_subcommand("info", "Show a checkpoint's model type, parameters and tensors");
  c->add_option("checkpoint", *path, "Checkpoint (.pth or .safetensors)")->required();
  c->add_flag("--json", *json, "JSON output");
  c->callback([path, json] { run_info(*path, *json); });
}

void add_convert_command(CLI::App& app) {
  auto a = std::make_shared<ConvertArgs>();
  auto* c = app.add_subcommand("convert", "Convert a checkpoint between .pth and .safetensors");
  c->add_option("input", a->in, "Input checkpoint")->required();
  c->add_option("output", a->out, "Output (.safetensors or .pth)")->required();
  c->add_option("--img-size", a->img_size,
                "Re-size the model's input: resamples the position embedding and the global blocks' "
                "rel-pos tables (start of a fine-tune at that size)");
  c->add_option("--encoder-depth", a->encoder_depth,
                "Deepen the image encoder to this many blocks: new windowed blocks with zero output "
                "projections (the identity) spread between the old ones, so the model is unchanged until "
                "trained (start of a fine-tune with more capacity)");
  c->add_option("--decoder-width", a->decoder_width,
                "Widen the prompt encoder and mask decoder to this many channels (a multiple of the current "
                "width): every channel copied, the readers' weights split unevenly between the copies, so "
                "the masks are unchanged until trained (start of a fine-tune with a larger decoder)");
  c->add_option("--adapter", a->adapter,
                "With --img-size: an adapter trained on the input checkpoint, carried over to the re-sized "
                "model (same tensors, the new model's fingerprint), written to --adapter-out");
  c->add_option("--adapter-out", a->adapter_out, "Where --adapter's carried-over file goes (.safetensors)");
  c->callback([a] { run_convert(*a); });
}

void add_bench_command(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  auto* c = app.add_subcommand("bench", "Time the image encoder and the mask decoder");
  c->add_option("--checkpoint", a->checkpoint, "Checkpoint to time");
  c->add_option("--model", a->model, "Random weights of an official shape instead: vit_b, vit_l, vit_h");
  c->add_option("--precision", a->precision, "fp32 or bf16")->check(CLI::IsMember({"fp32", "bf16"}));
  c->add_option("--threads", a->threads, "Intra-op threads (default: all cores)");
  c->add_option("--repeat", a->repeat, "Encoder runs");
  c->add_option("--decode-repeat", a->decode_repeat, "Decoder runs");
  c->add_flag("--reference-attention", a->reference_attention, "Use the unchunked reference attention");
  c->add_option("--adapter", a->adapter, "Also time the encoder with this adapter method/config attached (ratio)");
  c->add_flag("--json", a->json, "JSON output");
  c->callback([a] { run_bench(*a); });
}

}  // namespace rsam::app
