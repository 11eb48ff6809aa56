// `rsam bench`: encoder and decoder timings, a diffusion U-Net's forward or
// GleSAM's enhancer (bench/bench.h: run_bench_request), printed.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <iostream>

#include "app/commands.h"
#include "bench/bench.h"
#include "error.h"

namespace rsam::app {

namespace {

struct BenchArgs {
  BenchRequest request;
  int threads = 0;
  bool json = false, no_compare = false;
};

void run_bench(BenchArgs a) {
  configure_runtime(a.threads, a.request.precision);
  auto& r = a.request;
  if (r.repeat < 1) throw Error("--repeat must be >= 1");
  if (r.unet.empty() && r.enhancer_unet.empty()) {
    if (r.checkpoint.empty() == r.model.empty()) throw Error("give exactly one of --checkpoint, --model or --unet");
    if (r.decode_repeat < 1) throw Error("--decode-repeat must be >= 1");
  }
  r.compare_decoder = !a.no_compare;
  const nlohmann::json j = run_bench_request(r);
  if (a.json)
    std::cout << j.dump() << "\n";
  else
    std::cout << format_bench(j);
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  auto& r = a->request;
  auto* c = app.add_subcommand("bench", "Time the image encoder and the mask decoder");
  c->add_option("--checkpoint", r.checkpoint, "Checkpoint to time");
  c->add_option("--model", r.model, "Random weights of an official shape instead: vit_b, vit_l, vit_h");
  c->add_option("--precision", r.precision, "fp32 or bf16")->check(CLI::IsMember({"fp32", "bf16"}));
  c->add_option("--threads", a->threads, "Intra-op threads (default: all cores)");
  c->add_option("--repeat", r.repeat, "Encoder runs");
  c->add_option("--decode-repeat", r.decode_repeat, "Decoder runs");
  c->add_option("--attention", r.attention,
                "Encoder attention: fastest (fused where the CPU has AVX-512), chunked, or reference (unchunked)")
      ->check(CLI::IsMember({"fastest", "chunked", "reference"}));
  c->add_flag("--reference-gemm", r.reference_gemm, "fp32 products on torch's BLAS instead of oneDNN");
  c->add_flag("--profile", r.profile, "Per-op tables of the decodes (top-level torch ops, wall time)");
  c->add_flag("--no-compare", a->no_compare, "Do not time the reference decoder beside the fast one");
  c->add_option("--batch", r.batch, "Prompts in the batched decode timing (0: skip)")->check(CLI::Range(0, 1024));
  c->add_option("--adapter", r.adapter, "Also time the encoder with this adapter method/config attached (ratio)");
  c->add_option("--unet", r.unet,
                "Time a diffusion U-Net instead: a diffusers unet/config.json (random weights of its shapes) "
                "or a unet folder (its weights)");
  c->add_option("--unet-channels", r.unet_channels, "The U-Net's in/out channels (256: GleSAM's widened one)")
      ->check(CLI::Range(1, 4096));
  c->add_option("--enhancer-unet", r.enhancer_unet,
                "GleSAM: time SAM (--model, default vit_b) with an enhancer whose U-Net is this diffusers "
                "unet/config.json (random weights, CRE-widened): encode, enhance, decode, one training step");
  c->add_option("--train-steps", r.train_steps, "With --enhancer-unet: stage-1 training steps timed (0: none)")
      ->check(CLI::Range(0, 100));
  c->add_flag("--json", a->json, "JSON output");
  c->callback([a] { run_bench(*a); });
}

}  // namespace rsam::app
