// `rsam serve`: SAM over HTTP with a JSON API (/v1) and a web page at /.
// An image is encoded once (POST /v1/images, cached by content hash); each
// prompt is then a cheap decode (POST /v1/images/{id}/segment). Built to face
// a lab network: loopback by default, every size bounded before work is done,
// encodes queued and bounded, one JSON error per bad request, never a crash.
// The API and the flags are documented in docs/serve.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace rsam::serve {

struct ServeOptions {
  std::string checkpoint, adapter;  // empty: the bundled rsam-tiny with its adapter
  bool no_adapter = false;
  std::string enhancer;             // GleSAM enhancer config (when built in)
  std::string device = "cpu";
  std::string precision = "auto";   // image encoder: fp32, bf16, or auto (as `rsam segment`)
  std::string host = "127.0.0.1";
  int port = 8080;                  // 0: an ephemeral port
  int http_threads = 32;            // connections served at once (keep-alive holds one)
  size_t cache_bytes = size_t(2048) << 20;
  size_t max_upload_bytes = size_t(32) << 20;
  uint64_t max_pixels = 50000000;
  size_t max_json_bytes = size_t(4) << 20;  // a segment request (a mask input is ~350 kB)
  int max_encodes = 1;              // encodes at once
  // Decodes at once; the others wait their turn. Each decode already uses
  // every intra-op thread: more at once only add memory, and their threads
  // then wait for each other (docs/serve.md, Load).
  int max_decodes = 1;
  int encode_queue = 4;             // encodes waiting for a slot; more get 503 at once
  int encode_wait_ms = 10000;       // a waiting encode gives up (503) after this
  std::string token;                // bearer token for /v1 and /metrics; empty: none
  std::string cors_origin;          // Access-Control-Allow-Origin; empty: no CORS
};

// Loads the models, binds, calls on_listening with the URL actually bound
// (e.g. "http://127.0.0.1:41234/"), and serves until SIGTERM or SIGINT, then
// finishes the requests in flight and returns. rsam::Error on bad options,
// models that do not load, or an address that cannot be bound.
void serve(const ServeOptions& options, const std::function<void(const std::string& url)>& on_listening);

}  // namespace rsam::serve
