// `rsam serve`: the HTTP API and the web page (serve/server.h). This file maps
// flags onto ServeOptions and prints the URL, one line on stdout, so scripts
// and tests started with --port 0 can read where it listens.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>

#include "app/commands.h"
#include "error.h"
#include "serve/server.h"

namespace rsam::app {

namespace {

struct ServeArgs {
  serve::ServeOptions o;
  double cache_mb = 2048, max_upload_mb = 32;
  int threads = 0;
};

size_t megabytes(double mb, const char* flag) {
  if (!(mb > 0) || mb > 1e7) throw Error(std::string(flag) + " must be a positive number of megabytes");
  return size_t(mb * 1024 * 1024);
}

void run_serve(ServeArgs& a) {
  configure_runtime(a.threads, a.o.precision);
  a.o.cache_bytes = megabytes(a.cache_mb, "--cache-mb");
  a.o.max_upload_bytes = megabytes(a.max_upload_mb, "--max-upload-mb");
  serve::serve(a.o, [](const std::string& url) {
    std::printf("%s\n", url.c_str());
    std::fflush(stdout);
  });
}

}  // namespace

void add_serve_command(CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  auto& o = a->o;
  auto* c = app.add_subcommand("serve", "Segment over HTTP: a JSON API (/v1) and a web page at / (docs/serve.md)");
  c->add_option("--checkpoint", o.checkpoint, "SAM checkpoint; default: the bundled rsam-tiny");
  c->add_option("--adapter", o.adapter,
                "Adapter file; default with rsam-tiny: its bundled GaRA. Requests choose with \"adapter\": true|false");
  c->add_flag("--no-adapter", o.no_adapter, "Serve the base model alone");
  c->add_option("--enhancer", o.enhancer, "GleSAM enhancer config (JSON)");
  c->add_option("--device", o.device, "Torch device (cpu, cuda, cuda:1)");
  c->add_option("--precision", o.precision,
                "Image encoder: fp32, bf16, or auto (bf16 where the CPU runs it natively and the model is the "
                "bundled one, as rsam segment)")
      ->check(CLI::IsMember({"auto", "fp32", "bf16"}))
      ->capture_default_str();
  c->add_option("--host", o.host, "Address to bind; anything but loopback is reachable from the network")
      ->capture_default_str();
  c->add_option("--port", o.port, "Port; 0: any free port (the URL is printed on stdout)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  c->add_option("--threads", a->threads, "Torch intra-op threads (default: all cores)")->check(CLI::Range(0, 1024));
  c->add_option("--http-threads", o.http_threads, "Connections served at once")
      ->check(CLI::Range(2, 1024))
      ->capture_default_str();
  c->add_option("--cache-mb", a->cache_mb, "Embedding cache bound (images' bytes and embeddings), LRU")
      ->capture_default_str();
  c->add_option("--max-upload-mb", a->max_upload_mb, "Largest request body")->capture_default_str();
  c->add_option("--max-pixels", o.max_pixels, "Largest image (width x height), checked from the header")
      ->check(CLI::Range(uint64_t(1), uint64_t(1) << 40))
      ->capture_default_str();
  c->add_option("--max-encodes", o.max_encodes, "Image encodes at once")->check(CLI::Range(1, 64))->capture_default_str();
  c->add_option("--max-decodes", o.max_decodes, "Prompt decodes at once (the others wait their turn)")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  c->add_option("--encode-queue", o.encode_queue, "Encodes that may wait for a slot; more get 503")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  c->add_option("--encode-wait-ms", o.encode_wait_ms, "How long an encode waits before 503")
      ->check(CLI::Range(0, 600000))
      ->capture_default_str();
  c->add_option("--token", o.token, "Require 'Authorization: Bearer TOKEN' on /v1 and /metrics");
  c->add_option("--cors-origin", o.cors_origin, "Allow this origin to call the API from its pages (default: none)");
  c->callback([a] { run_serve(*a); });
}

}  // namespace rsam::app
