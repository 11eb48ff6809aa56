#include "serve/engine.h"

#include <chrono>

#include "amg/amg.h"
#include "amg/output.h"
#include "error.h"
#include "io/image_bytes.h"
#include "io/image_codec.h"
#include "log.h"
#include "model/bundled.h"
#include "model/checkpoint.h"
#include "model/image.h"
#include "model/predictor.h"
#include "serve/wire.h"

namespace rsam::serve {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

std::string mb(size_t bytes) { return std::to_string((bytes + (1 << 19)) >> 20) + " MB"; }

// Points every tensor of `to` that equals the one of the same name in
// `from` at `from`'s storage: the variants are separate module trees (the
// adapter wraps encoder layers, the enhancer may bring its own decoder), but
// what they have in common is stored once.
size_t share_weights(const Sam& from, Sam& to) {
  torch::NoGradGuard ng;
  size_t shared = 0;
  auto share = [&](const torch::OrderedDict<std::string, torch::Tensor>& src,
                   torch::OrderedDict<std::string, torch::Tensor> dst) {
    for (auto& item : dst) {
      const torch::Tensor* t = src.find(item.key());
      if (!t || t->is_same(item.value()) || !t->sizes().equals(item.value().sizes()) ||
          t->dtype() != item.value().dtype() || t->device() != item.value().device() || !torch::equal(*t, item.value()))
        continue;
      item.value().set_data(*t);
      shared += t->nbytes();
    }
  };
  share(from->named_parameters(true), to->named_parameters(true));
  share(from->named_buffers(true), to->named_buffers(true));
  return shared;
}

// What a predictor made by set_embedding(embedding) holds beyond the
// embedding itself: the decoder's image terms, and its dense positional
// encoding (private; it has the embedding's shape and type).
size_t predictor_state_bytes(const SamPredictor& p, const torch::Tensor& embedding) {
  const auto& c = p.decoder_cache();
  size_t n = embedding.nbytes();  // the dense positional encoding
  for (const torch::Tensor* t : {&c.keys, &c.key_pe, &c.t2i_k, &c.t2i_v, &c.i2t_q})
    if (t->defined()) n += t->storage().nbytes();
  if (!p.embedding().is_same(embedding)) n += p.embedding().nbytes();
  return n;
}

// The same for every image of a model: measured once on a zero embedding.
size_t measure_predictor_bytes(const Sam& sam, const torch::Device& device) {
  const auto& c = sam->config;
  const int64_t g = c.embedding_size();
  const auto zero = torch::zeros({1, c.prompt_embed_dim, g, g}, torch::dtype(torch::kFloat32).device(device));
  SamPredictor p(sam);
  p.set_embedding(zero, {g, g});
  return predictor_state_bytes(p, zero);
}
}  // namespace

struct Engine::Model {
  std::string variant;  // the cache key's second half
  bool adapted = false;
  Sam sam{nullptr};
  std::shared_ptr<const glesam::Enhancer> enhancer;  // applied to every embedding it encodes
  std::mutex encode_mutex;  // the encoder's blocks keep per-call state (adapter context)
  size_t predictor_bytes = 0;  // a cached predictor's state beside its embedding
  size_t embedding_bytes() const {
    const auto& c = sam->config;
    return size_t(c.prompt_embed_dim) * c.embedding_size() * c.embedding_size() * sizeof(float);
  }
  // What one image costs in the cache for this variant, its bytes aside.
  size_t entry_bytes() const { return embedding_bytes() + predictor_bytes; }
};

// ---- cache ----

std::optional<EmbeddingCache::Entry> EmbeddingCache::get(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = slots_.find(id);
  if (it == slots_.end()) return std::nullopt;
  lru_.splice(lru_.begin(), lru_, it->second.pos);
  return it->second.entry;
}

void EmbeddingCache::put(const std::string& id, const std::shared_ptr<const std::string>& bytes, int width,
                         int height, const std::string& variant, const torch::Tensor& embedding) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = slots_.find(id);
  if (it == slots_.end()) {
    lru_.push_front(id);
    Slot s;
    s.entry.bytes = bytes;
    s.entry.width = width;
    s.entry.height = height;
    s.pos = lru_.begin();
    s.size = bytes->size();
    used_ += s.size;
    it = slots_.emplace(id, std::move(s)).first;
  } else {
    lru_.splice(lru_.begin(), lru_, it->second.pos);
  }
  auto& e = it->second;
  if (!e.entry.embeddings.count(variant)) {
    e.entry.embeddings[variant].embedding = embedding;
    e.size += embedding.nbytes();
    used_ += embedding.nbytes();
  }
  evict_locked();
}

std::shared_ptr<const SamPredictor> EmbeddingCache::keep_predictor(const std::string& id, const std::string& variant,
                                                                   std::shared_ptr<const SamPredictor> p,
                                                                   size_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = slots_.find(id);
  if (it == slots_.end()) return p;
  auto v = it->second.entry.embeddings.find(variant);
  if (v == it->second.entry.embeddings.end()) return p;
  if (v->second.predictor) return v->second.predictor;  // another decode made one first
  v->second.predictor = p;
  it->second.size += bytes;
  used_ += bytes;
  lru_.splice(lru_.begin(), lru_, it->second.pos);
  evict_locked();
  return p;
}

void EmbeddingCache::evict_locked() {
  // Least recently used images go first; the one just stored stays.
  while (used_ > bound_ && lru_.size() > 1) {
    auto victim = slots_.find(lru_.back());
    used_ -= victim->second.size;
    slots_.erase(victim);
    lru_.pop_back();
  }
}

bool EmbeddingCache::remove(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = slots_.find(id);
  if (it == slots_.end()) return false;
  used_ -= it->second.size;
  lru_.erase(it->second.pos);
  slots_.erase(it);
  return true;
}

size_t EmbeddingCache::bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return used_;
}

size_t EmbeddingCache::images() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return slots_.size();
}

// ---- encode gate ----

std::unique_ptr<EncodeGate::Slot> EncodeGate::acquire() {
  std::unique_lock<std::mutex> lock(mutex_);
  if (active_ >= slots_) {
    if (waiting_ >= queue_)
      throw HttpError(503, "encoder busy: " + std::to_string(active_) + " encoding, " + std::to_string(waiting_) +
                               " waiting; retry later", 1);
    ++waiting_;
    const bool ok = cv_.wait_for(lock, std::chrono::milliseconds(wait_ms_), [&] { return active_ < slots_; });
    --waiting_;
    if (!ok) throw HttpError(503, "encoder busy: waited " + std::to_string(wait_ms_) + " ms; retry later", 2);
  }
  ++active_;
  return std::make_unique<Slot>(this);
}

void EncodeGate::release() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    --active_;
  }
  cv_.notify_one();
}

int EncodeGate::active() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return active_;
}

int EncodeGate::waiting() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return waiting_;
}

// ---- decode gate ----

DecodeGate::Turn::Turn(DecodeGate& g) : gate_(g) {
  std::unique_lock<std::mutex> lock(g.mutex_);
  g.cv_.wait(lock, [&] { return g.active_ < g.slots_; });
  ++g.active_;
}

DecodeGate::Turn::~Turn() {
  {
    std::lock_guard<std::mutex> lock(gate_.mutex_);
    --gate_.active_;
  }
  gate_.cv_.notify_one();
}

int DecodeGate::active() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return active_;
}

// ---- engine ----

Engine::Engine(const ServeOptions& o, Metrics& metrics)
    : options_(o), metrics_(metrics), cache_(o.cache_bytes), gate_(o.max_encodes, o.encode_queue, o.encode_wait_ms),
      decodes_(o.max_decodes) {
  if (o.max_encodes < 1) throw Error("at most 0 encodes at once: give 1 or more");
  if (o.max_decodes < 1) throw Error("at most 0 decodes at once: give 1 or more");
  if (o.encode_queue < 0 || o.encode_wait_ms < 0) throw Error("the encode queue and its wait must not be negative");
  if (o.max_pixels < 1) throw Error("--max-pixels must be positive");
  if (!o.enhancer.empty() && !glesam::is_enhancer_path(o.enhancer))
    throw Error("--enhancer expects an enhancer description (.json), got '" + o.enhancer + "'");
  io::set_max_image_pixels(o.max_pixels);
  const auto [checkpoint, adapter] = resolve_model(o.checkpoint, o.adapter, o.no_adapter);
  // auto: bf16 only where measured to agree (the bundled model), as `rsam segment`.
  precision_ = resolve_precision(o.precision, o.checkpoint.empty());
  const torch::Device device(o.device);
  size_t shared = 0;
  for (bool with_adapter : {false, true})
    for (bool with_enhancer : {false, true}) {
      if ((with_adapter && adapter.empty()) || (with_enhancer && o.enhancer.empty())) continue;
      auto m = std::make_unique<Model>();
      m->variant = std::string(with_adapter ? "adapted" : "plain") + (with_enhancer ? "+glesam" : "");
      m->adapted = with_adapter;
      m->sam = load_sam(checkpoint, device).model;
      if (with_adapter) {
        adapters_.push_back(adapt::AdaptedSam::load(m->sam, adapter));
        adapter_method_ = adapters_.back().method();
      }
      if (with_enhancer) {
        // One U-Net for both enhanced variants; its decoder (if any) goes
        // into each, after the adapter (whose fingerprint names the base).
        if (!enhancer_) {
          glesam::EnhancerOptions eo;
          eo.device = device;
          eo.channels = m->sam->config.prompt_embed_dim;
          enhancer_ = std::make_shared<const glesam::Enhancer>(glesam::Enhancer::load(o.enhancer, eo));
        }
        enhancer_->apply_decoder(m->sam);
        m->enhancer = enhancer_;
      }
      for (const auto& [name, other] : models_) shared += share_weights(other->sam, m->sam);
      m->predictor_bytes = measure_predictor_bytes(m->sam, device);
      models_[m->variant] = std::move(m);
    }
  const Model& plain = *models_.at("plain");
  log_info("serve: model " + plain.sam->config.type_name() + " from " + checkpoint +
           (adapter.empty() ? "" : "; adapter " + adapter_method_ + " from " + adapter) +
           (o.enhancer.empty() ? "" : "; enhancer " + o.enhancer) + "; " + std::to_string(models_.size()) +
           " variant(s), " + mb(shared) + " of weights shared between them; encoder " +
           precision_name(precision_));
  if (plain.entry_bytes() > o.cache_bytes)
    throw Error("a cache of " + mb(o.cache_bytes) + " holds not even one image's embedding and decoder state (" +
                mb(plain.entry_bytes()) + ")");
}

Engine::~Engine() = default;

Engine::Model& Engine::model(std::optional<bool> adapter, std::optional<bool> enhancer) {
  const bool a = adapter.value_or(!adapter_method_.empty()), e = enhancer.value_or(enhancer_ != nullptr);
  if (a && adapter_method_.empty()) throw HttpError(400, "this server runs without an adapter: send adapter false");
  if (e && !enhancer_) throw HttpError(400, "this server runs without an enhancer: send enhancer false");
  return *models_.at(std::string(a ? "adapted" : "plain") + (e ? "+glesam" : ""));
}

std::unique_ptr<EncodeGate::Slot> Engine::encode_slot() {
  try {
    return gate_.acquire();
  } catch (const HttpError&) {
    metrics_.busy();
    throw;
  }
}

Image8 Engine::decode_rgb(const std::string& bytes) {
  cv::Mat rgb;
  try {
    rgb = io::decode_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), io::ImageRead::Rgb, "upload");
  } catch (const Error& e) {
    throw HttpError(400, e.what());
  }
  return image8_from_rows(rgb.data, rgb.cols, rgb.rows, rgb.step);
}

Engine::Encoded Engine::ensure_embedding(const std::string& id, std::shared_ptr<const std::string> bytes, Model& m) {
  auto lookup = [&]() -> std::optional<Encoded> {
    auto e = cache_.get(id);
    if (!e) return std::nullopt;
    if (!bytes) bytes = e->bytes;
    auto it = e->embeddings.find(m.variant);
    if (it == e->embeddings.end()) return std::nullopt;
    Encoded r;
    r.embedded = it->second;
    r.entry = std::move(*e);
    r.cached = true;
    return r;
  };
  if (auto hit = lookup()) {
    metrics_.cache(true);
    return *hit;
  }
  metrics_.cache(false);
  if (!bytes) throw HttpError(404, "unknown image id (never uploaded, deleted or evicted): upload the image again");
  if (bytes->size() + m.entry_bytes() > options_.cache_bytes)
    throw HttpError(413, "this image and its embedding need " + mb(bytes->size() + m.entry_bytes()) +
                             ", more than the cache's " + mb(options_.cache_bytes));
  const auto slot = encode_slot();
  std::lock_guard<std::mutex> lock(m.encode_mutex);
  if (auto hit = lookup()) return *hit;  // encoded by a request that held the lock before us
  const Image8 img = decode_rgb(*bytes);
  const auto t0 = Clock::now();
  SamPredictor pred(m.sam, precision_);
  if (m.enhancer) glesam::attach(pred, m.enhancer);
  pred.set_image(img);
  Encoded r;
  r.embedded.embedding = pred.embedding();
  r.encode_ms = ms_since(t0);
  metrics_.work("encode", r.encode_ms / 1000);
  // The predictor is not kept here: many uploads are never clicked, and
  // their entries stay small until the first decode.
  cache_.put(id, bytes, img.width, img.height, m.variant, r.embedded.embedding);
  r.entry.bytes = bytes;
  r.entry.width = img.width;
  r.entry.height = img.height;
  return r;
}

json Engine::upload(const std::string& body, std::optional<bool> adapter, std::optional<bool> enhancer) {
  const auto t0 = Clock::now();
  if (body.empty()) throw HttpError(400, "empty body: send the image file's bytes");
  const auto* d = reinterpret_cast<const uint8_t*>(body.data());
  // All from the header, before any pixel is decoded.
  const auto header = io::image_header(d, body.size());
  if (header.format.empty()) throw HttpError(415, "not an image rsam reads (PNG, JPEG, BMP, TIFF, WebP, PNM)");
  if (header.width > 0 && header.height > 0 && header.width * header.height > options_.max_pixels)
    throw HttpError(413, "image of " + std::to_string(header.width) + "x" + std::to_string(header.height) +
                             " pixels: at most " + std::to_string(options_.max_pixels) + " pixels");
  if (const auto p = io::image_bytes_problem(d, body.size()); !p.empty()) throw HttpError(400, "bad image: " + p);
  Model& m = model(adapter, enhancer);
  const std::string id = content_id(d, body.size());
  auto e = ensure_embedding(id, std::make_shared<const std::string>(body), m);
  return {{"id", id},
          {"width", e.entry.width},
          {"height", e.entry.height},
          {"encode_ms", e.encode_ms},
          {"cached", e.cached},
          {"adapter", m.adapted},
          {"enhancer", m.enhancer != nullptr},
          {"total_ms", ms_since(t0)}};
}

std::shared_ptr<const SamPredictor> Engine::predictor(const std::string& id, const Encoded& e, Model& m, double& ms) {
  if (e.embedded.predictor) return e.embedded.predictor;
  const auto t0 = Clock::now();
  auto p = std::make_shared<SamPredictor>(m.sam, precision_);
  p->set_embedding(e.embedded.embedding, {e.entry.height, e.entry.width});
  ms = ms_since(t0);
  return cache_.keep_predictor(id, m.variant, std::move(p), m.predictor_bytes);
}

json Engine::segment(const std::string& id, const std::string& body) {
  const auto t0 = Clock::now();
  if (!is_content_id(id)) throw HttpError(404, "unknown image id (an id is 32 hex digits, from POST /v1/images)");
  const int64_t mask_side = 4 * models_.at("plain")->sam->config.embedding_size();
  const SegmentRequest req = parse_segment_request(body, options_.max_json_bytes, mask_side);
  Model& m = model(req.adapter, req.enhancer);
  const auto e = ensure_embedding(id, nullptr, m);
  const int w = e.entry.width, h = e.entry.height;
  try {
    check_prompt(req.prompt, w, h, mask_side);
  } catch (const Error& ex) {
    throw HttpError(400, ex.what());
  }
  const auto t_wait = Clock::now();
  DecodeGate::Turn turn(decodes_);
  const double wait_ms = ms_since(t_wait);
  double prepare_ms = 0;
  const auto pred = predictor(id, e, m, prepare_ms);
  const auto t1 = Clock::now();
  const Prediction r = req.multimask ? pred->predict(req.prompt, true) : pred->predict_one(req.prompt);
  const auto masks = r.masks.to(torch::kCPU).to(torch::kUInt8).contiguous();
  const auto iou = r.iou_predictions.to(torch::kCPU).contiguous();
  const auto low = r.low_res_logits.to(torch::kCPU, torch::kFloat32).contiguous();
  const auto stability = stability_scores(low);
  const double decode_ms = ms_since(t1);
  metrics_.work("decode", decode_ms / 1000);
  json out;
  out["id"] = id;
  out["width"] = w;
  out["height"] = h;
  out["adapter"] = m.adapted;
  out["enhancer"] = m.enhancer != nullptr;
  if (!req.multimask && is_ambiguous(req.prompt)) out["picked_from"] = 3;  // predict_one's pick
  out["best"] = best_index(r);
  out["masks"] = json::array();
  for (int64_t i = 0; i < masks.size(0); ++i) {
    json mj = mask_json(masks[i].data_ptr<uint8_t>(), w, h, req.rle, req.png);
    mj["score"] = iou[i].item<float>();
    mj["stability"] = stability[i].item<float>();
    if (req.logits) mj["logits"] = base64_encode(reinterpret_cast<const uint8_t*>(low[i].data_ptr<float>()),
                                                 size_t(low[i].numel()) * sizeof(float));
    out["masks"].push_back(std::move(mj));
  }
  out["timings_ms"] = {{"encode", e.encode_ms}, {"wait", wait_ms},        {"prepare", prepare_ms},
                       {"decode", decode_ms},   {"total", ms_since(t0)}};
  out["cached"] = e.cached;
  return out;
}

json Engine::everything(const std::string& id, const std::string& body) {
  const auto t0 = Clock::now();
  if (!is_content_id(id)) throw HttpError(404, "unknown image id (an id is 32 hex digits, from POST /v1/images)");
  const EverythingRequest req = parse_everything_request(body, options_.max_json_bytes);
  Model& m = model(req.adapter, req.enhancer);
  const auto e = ensure_embedding(id, nullptr, m);
  // Hundreds of decodes: bounded like an encode, so a few of these cannot
  // take the CPU from the clicks.
  const auto slot = encode_slot();
  const Image8 img = decode_rgb(*e.entry.bytes);
  SamPredictor pred(m.sam, precision_);
  if (m.enhancer) glesam::attach(pred, m.enhancer);
  // The whole image's embedding is the cached one; other crops (crop
  // layers are not offered here) would be encoded.
  const amg::CropEncoder encode = [&](SamPredictor& p, const Image8& crop) {
    if (crop.width == img.width && crop.height == img.height)
      p.set_embedding(e.embedded.embedding, {img.height, img.width});
    else
      p.set_image(crop);
  };
  amg::AmgProfile profile;
  const auto t1 = Clock::now();
  const auto records = amg::generate(pred, img, req.options, &profile, encode);
  const double generate_ms = ms_since(t1);
  metrics_.work("everything", generate_ms / 1000);
  json out = {{"id", id}, {"width", img.width}, {"height", img.height}, {"adapter", m.adapted},
              {"enhancer", m.enhancer != nullptr}, {"masks", json::array()}};
  for (const auto& r : records)
    out["masks"].push_back({{"rle", amg::segmentation_json(r, amg::OutputMode::CocoRle)},
                            {"area", r.area},
                            {"bbox", r.bbox},
                            {"score", r.predicted_iou},
                            {"stability", r.stability_score},
                            {"point", r.point_coords}});
  out["points"] = profile.points;
  out["timings_ms"] = {{"encode", e.encode_ms}, {"generate", generate_ms}, {"total", ms_since(t0)}};
  out["cached"] = e.cached;
  return out;
}

json Engine::remove(const std::string& id) {
  if (!is_content_id(id) || !cache_.remove(id)) throw HttpError(404, "unknown image id");
  return {{"deleted", id}};
}

json Engine::health() const {
  const auto& plain = models_.at("plain")->sam->config;
  json variants = json::array();
  for (const auto& [name, m] : models_) variants.push_back(name);
  json j = {{"status", "ok"},
            {"model", plain.type_name()},
            {"adapter", adapter_method_.empty() ? json(nullptr) : json(adapter_method_)},
            {"enhancer", enhancer_ ? json("glesam") : json(nullptr)},
            {"variants", variants},
            {"precision", precision_name(precision_)},
            {"everything", true},
            {"images", cache_.images()},
            {"cache_bytes", cache_.bytes()},
            {"cache_bound_bytes", cache_.bound()},
            // What the first decode of an image adds to its cache entry.
            {"decoder_state_bytes", models_.at("plain")->predictor_bytes},
            {"max_upload_bytes", options_.max_upload_bytes},
            {"max_pixels", options_.max_pixels},
            {"max_points", kMaxPromptPoints},
            {"mask_input_side", 4 * plain.embedding_size()}};
  return j;
}

Gauges Engine::gauges() const {
  Gauges g;
  g.cache_bytes = cache_.bytes();
  g.cache_bound = cache_.bound();
  g.cache_images = cache_.images();
  g.encodes_active = gate_.active();
  g.encodes_waiting = gate_.waiting();
  g.decodes_active = decodes_.active();
  read_process_memory(g);
  return g;
}

}  // namespace rsam::serve
