// `rsam demo`: the main job on the bundled default. A handful of synthetic
// scenes, clean and corrupted, segmented from one point per object by the
// base model and with its adapter (and, given --enhancer, with GleSAM and
// both); one picture with an example per method and condition and the mean
// IoUs. The work is segment::demo's (segment/demo.h).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

#include "app/commands.h"
#include "app/flags.h"
#include "io/text.h"
#include "segment/demo.h"

namespace rsam::app {

namespace {

struct DemoArgs {
  segment::DemoOptions o;
  std::string corruptions = "fog,gauss_noise,motion_blur", precision = "auto";
  int threads = 0;
  bool json = false;
};

void run_demo(DemoArgs& a) {
  configure_runtime(a.threads, a.precision);
  a.o.corruptions = io::split(a.corruptions, ',', /*skip_empty=*/true);
  if (a.precision != "auto") a.o.precision = parse_precision(a.precision);
  const auto j = segment::demo(a.o);
  if (a.json) {
    std::cout << j.dump() << "\n";
    return;
  }
  std::printf("mean IoU over %d objects in %d scenes, one point each (severity %d)\n", j["objects"].get<int>(),
              j["scenes"].get<int>(), a.o.severity);
  std::printf("%-16s", "");
  for (const auto& c : j["conditions"]) std::printf(" %13s", c.get<std::string>().c_str());
  std::printf("\n");
  for (const auto& m : j["methods"]) {
    std::printf("%-16s", m.get<std::string>().c_str());
    for (const auto& c : j["conditions"])
      std::printf(" %13.3f", j["mean_iou"][m.get<std::string>()][c.get<std::string>()].get<double>());
    std::printf("\n");
  }
  std::printf("picture: %s\n", a.o.out.path.c_str());
}

}  // namespace

void add_demo_command(CLI::App& app) {
  auto a = std::make_shared<DemoArgs>();
  auto& o = a->o;
  o.out = {"--out", "rsam-demo.png"};
  auto* c = app.add_subcommand(
      "demo", "Segment corrupted synthetic scenes with and without the adapter (and enhancer); one picture, mean IoUs");
  c->add_option("--out", o.out.path, "The picture (PNG)")->capture_default_str();
  c->add_option("--corruption", a->corruptions, "Corruptions, comma-separated (rsam degrade --list)")
      ->capture_default_str();
  c->add_option("--severity", o.severity, "1..5")->check(CLI::Range(1, 5))->capture_default_str();
  c->add_option("--scenes", o.scenes, "Scenes the mean IoUs run over")->check(CLI::Range(1, 100))->capture_default_str();
  c->add_option("--objects", o.objects, "Objects prompted per scene at most, the largest first")
      ->check(CLI::Range(1, 20))
      ->capture_default_str();
  c->add_option("--seed", o.seed, "Scene and corruption seed")->check(kSeed)->capture_default_str();
  c->add_option("--size", o.size, "Scene size in pixels (the model resizes it to its input)")
      ->check(CLI::Range(64, 4096))
      ->capture_default_str();
  c->add_option("--checkpoint", o.checkpoint, "Base model (default: the bundled rsam-tiny)");
  c->add_option("--adapter", o.adapter, "Adapter (default: the bundled GaRA of rsam-tiny)");
  c->add_option("--enhancer", o.enhancer,
                "GleSAM enhancer (E.json): adds glesam and adapter+glesam (default: the bundled rsam-tiny's)");
  c->add_flag("--no-enhancer", o.no_enhancer, "Without the bundled GleSAM enhancer");
  c->add_option("--precision", a->precision, "auto, fp32 or bf16 (image encoder), as for segment")
      ->check(CLI::IsMember({"auto", "fp32", "bf16"}));
  c->add_option("--threads", a->threads, "Intra-op threads (default: all cores)");
  c->add_flag("--json", a->json, "Print a JSON summary on stdout");
  c->callback([a] { run_demo(*a); });
}

}  // namespace rsam::app
