// `rsam bench`: encoder and decoder timings (bench/bench.h), or a diffusion
// U-Net's forward (diffusion/bench.h), printed.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

#include "app/commands.h"
#include "error.h"
#include "bench/bench.h"
#include "bench/profile.h"
#include "diffusion/bench.h"
#include "glesam/bench.h"
#include "model/runtime.h"
#include "model/config.h"

namespace rsam::app {

namespace {

struct BenchArgs {
  std::string checkpoint, model, precision = "fp32", adapter, unet, enhancer_unet;
  int train_steps = 1;
  int threads = 0, repeat = 3, decode_repeat = 20, unet_channels = 4, batch = 16;
  bool json = false, reference_attention = false, profile = false, no_compare = false;
};

// GleSAM's U-Net: forwards of one built from a diffusers unet/config.json
// with random weights of its real shapes.
void run_unet_bench(const BenchArgs& a) {
  diffusion::UNetBenchOptions o;
  o.channels = a.unet_channels;
  o.bf16 = a.precision == "bf16";
  o.repeat = a.repeat;
  const auto r = diffusion::bench_unet(diffusion::UNetConfig::from_file(a.unet), o);
  nlohmann::json j{{"unet", a.unet},          {"parameters", r.parameters}, {"channels", o.channels},
                   {"precision", a.precision}, {"threads", num_threads()}, {"forward_ms", r.forward_ms},
                   {"peak_rss_gb", r.peak_rss_gb}};
  if (a.json) {
    std::cout << j.dump() << "\n";
    return;
  }
  std::printf("U-Net %s (%lld parameters, %lld channels) %s, %d threads: last forward %.0f ms, peak RSS %.2f GB\n",
              a.unet.c_str(), (long long)r.parameters, (long long)o.channels, a.precision.c_str(), num_threads(),
              r.forward_ms.back(), r.peak_rss_gb);
}

void run_bench(const BenchArgs& a) {
  configure_runtime(a.threads, a.precision);
  if (a.repeat < 1) throw Error("--repeat must be >= 1");
  if (!a.unet.empty()) return run_unet_bench(a);
  if (!a.enhancer_unet.empty()) {
    // GleSAM (glesam/bench.h): SAM --model (default vit_b) + the CRE-widened U-Net.
    glesam::EnhancerBenchOptions o;
    if (!a.model.empty()) o.sam = a.model;
    o.unet_config = a.enhancer_unet;
    o.bf16 = a.precision == "bf16";
    o.repeat = a.repeat;
    o.decode_repeat = a.decode_repeat;
    o.train_steps = a.train_steps;
    std::cout << glesam::bench_enhancer(o).dump(a.json ? -1 : 1) << "\n";
    return;
  }
  if (a.checkpoint.empty() == a.model.empty()) throw Error("give exactly one of --checkpoint, --model or --unet");
  if (a.decode_repeat < 1) throw Error("--decode-repeat must be >= 1");
  if (!a.model.empty() && !SamConfig::find_preset(a.model))
    throw Error("unknown --model '" + a.model + "' (vit_b, vit_l, vit_h)");
  BenchOptions o;
  o.checkpoint = a.checkpoint;
  o.model = a.model;
  o.precision = parse_precision(a.precision);
  o.adapter = a.adapter;
  o.repeat = a.repeat;
  o.decode_repeat = a.decode_repeat;
  o.reference_attention = a.reference_attention;
  o.profile = a.profile;
  o.compare_decoder = !a.no_compare;
  o.batch = a.batch;
  const nlohmann::json j = run_bench(o);
  if (a.json) {
    std::cout << j.dump() << "\n";
    return;
  }
  std::printf("%s %s, %d threads: encode median %.0f ms, decode median %.1f ms\n",
              j["model"].get<std::string>().c_str(), a.precision.c_str(), j["threads"].get<int>(),
              j["encode_median_ms"].get<double>(), j["decode_median_ms"].get<double>());
  if (j.contains("load_ms")) std::printf("load %.0f ms\n", j["load_ms"].get<double>());
  for (const char* k : {"decode", "batch", "segment"}) {
    const std::string n = k;
    if (!j.contains(n + "_median_ms")) continue;
    std::printf("%-8s median %.1f ms%s", k, j[n + "_median_ms"].get<double>(), n == "batch" ? " per prompt" : "");
    if (j.contains(n + "_reference_median_ms"))
      std::printf(", reference decoder %.1f ms, ratio (pairwise median) %.3f", j[n + "_reference_median_ms"].get<double>(),
                  j[n + "_ratio_median"].get<double>());
    std::printf("\n");
  }
  std::printf("peak RSS %.0f MB\n", j["peak_rss_mb"].get<double>());
  if (j.contains("profile"))
    for (const auto& [name, table] : j["profile"].items())
      std::printf("per-op profile, %s (ms per call):\n%s", name.c_str(), format_profile(table).c_str());
  if (j.contains("adapter"))
    std::printf("with %s: encode median %.0f ms, overhead ratio (pairwise median) %.3f\n",
                j["adapter"].get<std::string>().c_str(), j["adapted_encode_median_ms"].get<double>(),
                j["overhead_ratio_median"].get<double>());
}

}  // namespace

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
  c->add_flag("--profile", a->profile, "Per-op tables of the decodes (top-level torch ops, wall time)");
  c->add_flag("--no-compare", a->no_compare, "Do not time the reference decoder beside the fast one");
  c->add_option("--batch", a->batch, "Prompts in the batched decode timing (0: skip)")->check(CLI::Range(0, 1024));
  c->add_option("--adapter", a->adapter, "Also time the encoder with this adapter method/config attached (ratio)");
  c->add_option("--unet", a->unet,
                "Time a diffusion U-Net instead: a diffusers unet/config.json, random weights of its shapes");
  c->add_option("--unet-channels", a->unet_channels, "The U-Net's in/out channels (256: GleSAM's widened one)")
      ->check(CLI::Range(1, 4096));
  c->add_option("--enhancer-unet", a->enhancer_unet,
                "GleSAM: time SAM (--model, default vit_b) with an enhancer whose U-Net is this diffusers "
                "unet/config.json (random weights, CRE-widened): encode, enhance, decode, one training step");
  c->add_option("--train-steps", a->train_steps, "With --enhancer-unet: stage-1 training steps timed (0: none)")
      ->check(CLI::Range(0, 100));
  c->add_flag("--json", a->json, "JSON output");
  c->callback([a] { run_bench(*a); });
}

}  // namespace rsam::app
