// `rsam synth`: synthetic scenes with instance masks and COCO annotations.
// The work is data/synth.h's; this file maps flags onto it and draws its
// progress on a terminal.
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>
#include <string>

#include "app/commands.h"
#include "app/flags.h"
#include "data/synth.h"
#include "log.h"

namespace rsam::app {

void add_synth_command(CLI::App& app) {
  auto o = std::make_shared<data::SynthOptions>();
  auto out = std::make_shared<std::string>();
  auto count = std::make_shared<size_t>(0);
  auto jobs = std::make_shared<int>(1);
  auto* c = app.add_subcommand("synth", "Generate synthetic scenes: images, instance masks and COCO annotations");
  c->add_option("--out", *out, "Output folder (images/, masks/, annotations.json, synth.json)")->required();
  c->add_option("--count", *count, "Number of scenes")->required()->check(CLI::PositiveNumber);
  c->add_option("--size", o->size, "Scene width and height in px")->check(CLI::Range(32, 8192))->capture_default_str();
  c->add_option("--seed", o->seed, "Seed; scene i depends only on (seed, i) and the options")->check(kSeed)->capture_default_str();
  c->add_option("--min-objects", o->min_objects, "Fewest objects painted per scene")->capture_default_str();
  c->add_option("--max-objects", o->max_objects, "Most objects painted per scene")->capture_default_str();
  c->add_option("--photos", o->photos,
                "Photo folder for textures/backgrounds, auto (Debian-packaged if present) or none")
      ->capture_default_str();
  c->add_option("--jobs", *jobs, "Scenes generated in parallel (outputs do not depend on it)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  c->callback([o, out, count, jobs] {
    const bool tty = isatty(2);
    auto s = data::write_synth(*out, *count, *o, *jobs, [&](size_t d, size_t n) {
      if (tty && (d % 50 == 0 || d == n)) log_progress("synth " + std::to_string(d) + "/" + std::to_string(n));
    });
    if (tty) log_progress_end();
    std::printf("%zu scenes, %zu objects, %zu photos -> %s\n", s.scenes, s.objects, s.photos.size(), out->c_str());
  });
}

}  // namespace rsam::app
