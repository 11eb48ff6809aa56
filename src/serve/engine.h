// The server's work without HTTP: the model variants, the embedding cache,
// the bounded encoder queue. Each call returns the JSON answer or throws
// HttpError (or rsam::Error / anything else, which the server maps to 4xx/5xx).
#pragma once

#include <nlohmann/json.hpp>

#include <condition_variable>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "adapt/adapter.h"
#include "glesam/enhancer.h"
#include "model/image.h"
#include "model/predictor.h"
#include "model/sam.h"
#include "serve/metrics.h"
#include "serve/server.h"

namespace rsam::serve {

// Images by content id, each with its uploaded bytes (to encode it again for
// another model variant) and, per variant encoded so far, the embedding and
// (from the first decode on) a predictor holding the decoder's image terms,
// so that later decodes skip preparing them. LRU over images, bounded in
// bytes (bytes + embeddings + predictors). An evicted entry stays alive while
// a request still holds it.
class EmbeddingCache {
 public:
  struct Embedded {
    torch::Tensor embedding;
    // Only const methods are called on it, by any number of decodes at once.
    std::shared_ptr<const SamPredictor> predictor;
  };
  struct Entry {
    std::shared_ptr<const std::string> bytes;
    int width = 0, height = 0;
    std::unordered_map<std::string, Embedded> embeddings;  // by variant
  };
  explicit EmbeddingCache(size_t bound) : bound_(bound) {}
  std::optional<Entry> get(const std::string& id);  // marks it recently used
  void put(const std::string& id, const std::shared_ptr<const std::string>& bytes, int width, int height,
           const std::string& variant, const torch::Tensor& embedding);
  // Stores `p` (`bytes` more) beside the variant's embedding unless one is
  // there already; returns the stored predictor, or `p` itself when the
  // image was evicted meanwhile (it then serves this request only).
  std::shared_ptr<const SamPredictor> keep_predictor(const std::string& id, const std::string& variant,
                                                     std::shared_ptr<const SamPredictor> p, size_t bytes);
  bool remove(const std::string& id);
  size_t bytes() const;
  size_t images() const;
  size_t bound() const { return bound_; }

 private:
  struct Slot {
    Entry entry;
    std::list<std::string>::iterator pos;
    size_t size = 0;
  };
  mutable std::mutex mutex_;
  std::list<std::string> lru_;  // front: most recent
  std::unordered_map<std::string, Slot> slots_;
  size_t used_ = 0, bound_;
  void evict_locked();  // down to the bound; the most recent image stays
};

// At most `slots` encodes at once and `queue` waiting (each at most wait_ms);
// the rest are refused with 503 + Retry-After, so uploads cannot take every
// connection or all the memory. Decodes never pass through here.
class EncodeGate {
 public:
  EncodeGate(int slots, int queue, int wait_ms) : slots_(slots), queue_(queue), wait_ms_(wait_ms) {}
  struct Slot {
    explicit Slot(EncodeGate* g) : gate(g) {}
    Slot(const Slot&) = delete;
    ~Slot() { gate->release(); }
    EncodeGate* gate;
  };
  std::unique_ptr<Slot> acquire();  // HttpError 503 when busy
  int active() const;
  int waiting() const;

 private:
  void release();
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  int slots_, queue_, wait_ms_, active_ = 0, waiting_ = 0;
};

// Bounds the decodes running at once; a decode waits for its turn (decodes
// are short, so no request is refused for it).
class DecodeGate {
 public:
  explicit DecodeGate(int slots) : slots_(slots) {}
  class Turn {
   public:
    explicit Turn(DecodeGate& g);
    Turn(const Turn&) = delete;
    ~Turn();

   private:
    DecodeGate& gate_;
  };
  int active() const;

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  int slots_, active_ = 0;
};

class Engine {
 public:
  Engine(const ServeOptions& options, Metrics& metrics);
  ~Engine();
  // POST /v1/images: the image's bytes; adapter, enhancer: which variant to
  // encode with (default: every component the server was started with).
  nlohmann::json upload(const std::string& bytes, std::optional<bool> adapter, std::optional<bool> enhancer);
  // POST /v1/images/{id}/segment with its JSON body (wire.h).
  nlohmann::json segment(const std::string& id, const std::string& body);
  // POST /v1/images/{id}/everything: the automatic mask generator (amg/).
  nlohmann::json everything(const std::string& id, const std::string& body);
  nlohmann::json remove(const std::string& id);
  nlohmann::json health() const;
  Gauges gauges() const;

 private:
  struct Model;
  struct Encoded {
    EmbeddingCache::Entry entry;
    EmbeddingCache::Embedded embedded;
    double encode_ms = 0;
    bool cached = false;
  };
  // The variant asked for; 400 for a component the server was not given.
  Model& model(std::optional<bool> adapter, std::optional<bool> enhancer);
  // An encode slot (503 when busy, counted).
  std::unique_ptr<EncodeGate::Slot> encode_slot();
  static Image8 decode_rgb(const std::string& bytes);
  // The cached predictor of image `id` for m's variant, made (and kept in
  // the cache) by the first decode that needs it; ms: time spent making it.
  std::shared_ptr<const SamPredictor> predictor(const std::string& id, const Encoded& e, Model& m, double& ms);
  // The variant's embedding of image `id`, encoded now if missing (bytes:
  // the upload's, or null to use the cached bytes; 404 if there are none).
  Encoded ensure_embedding(const std::string& id, std::shared_ptr<const std::string> bytes, Model& m);

  ServeOptions options_;
  Precision precision_ = Precision::FP32;
  Metrics& metrics_;
  // "plain", "adapted", "plain+glesam", "adapted+glesam": those the flags
  // make possible. Each is its own module tree; equal tensors are shared.
  std::map<std::string, std::unique_ptr<Model>> models_;
  std::list<adapt::AdaptedSam> adapters_;  // keep the adapted trees' owners
  std::string adapter_method_;
  std::shared_ptr<const glesam::Enhancer> enhancer_;
  EmbeddingCache cache_;
  EncodeGate gate_;
  DecodeGate decodes_;
};

}  // namespace rsam::serve
