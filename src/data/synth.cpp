#include "data/synth.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include "data/dataset.h"
#include "data/rle.h"
#include "degrade/rng.h"
#include "error.h"
#include "io/fs.h"
#include "io/image_codec.h"
#include "io/text.h"

namespace rsam::data {
namespace fs = std::filesystem;
using degrade::Rng;

namespace {

constexpr double kPi = 3.14159265358979323846;

cv::Vec3f hsv_color(Rng& rng) {
  // Hue anywhere; saturation and value kept away from 0 often enough that
  // objects are not all grey.
  const double h = rng.uniform(0, 6), s = rng.uniform(0.15, 1.0), v = rng.uniform(0.15, 1.0);
  const int i = int(h) % 6;
  const double f = h - std::floor(h), p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
  double r, g, b;
  switch (i) {
    case 0:
      r = v, g = t, b = p;
      break;
    case 1:
      r = q, g = v, b = p;
      break;
    case 2:
      r = p, g = v, b = t;
      break;
    case 3:
      r = p, g = q, b = v;
      break;
    case 4:
      r = t, g = p, b = v;
      break;
    default:
      r = v, g = p, b = q;
      break;
  }
  return {float(r), float(g), float(b)};
}

// t in [0,1] (CV_32F) to a blend of two colours (CV_32FC3).
cv::Mat blend(const cv::Mat& t, const cv::Vec3f& a, const cv::Vec3f& b) {
  cv::Mat out(t.size(), CV_32FC3);
  for (int y = 0; y < t.rows; ++y) {
    const float* tr = t.ptr<float>(y);
    auto* o = out.ptr<cv::Vec3f>(y);
    for (int x = 0; x < t.cols; ++x) o[x] = a + (b - a) * tr[x];
  }
  return out;
}

// Multi-octave value noise in [0,1]: random grids resized bicubically.
cv::Mat value_noise(Rng& rng, int w, int h) {
  cv::Mat acc = cv::Mat::zeros(h, w, CV_32F);
  int cells = rng.uniform_int(2, 5);
  double amp = 1.0;
  const int octaves = rng.uniform_int(2, 4);
  for (int o = 0; o < octaves; ++o, cells *= 2, amp *= rng.uniform(0.35, 0.65)) {
    cv::Mat g(cells + 1, cells + 1, CV_32F);
    for (int i = 0; i < g.rows * g.cols; ++i) g.at<float>(i) = float(rng.uniform());
    cv::Mat up;
    cv::resize(g, up, {w, h}, 0, 0, cv::INTER_CUBIC);
    acc += up * amp;
  }
  double lo, hi;
  cv::minMaxLoc(acc, &lo, &hi);
  acc = (acc - lo) / std::max(hi - lo, 1e-6);
  return acc;
}

// Oriented coordinate u = x cos(a) + y sin(a) (and its perpendicular v).
void oriented(int w, int h, double angle, cv::Mat& u, cv::Mat& v) {
  u.create(h, w, CV_32F);
  v.create(h, w, CV_32F);
  const float c = float(std::cos(angle)), s = float(std::sin(angle));
  for (int y = 0; y < h; ++y) {
    float* ur = u.ptr<float>(y);
    float* vr = v.ptr<float>(y);
    for (int x = 0; x < w; ++x) ur[x] = x * c + y * s, vr[x] = -x * s + y * c;
  }
}

cv::Mat photo_crop(Rng& rng, const std::vector<cv::Mat>& photos, int w, int h) {
  const cv::Mat& p = photos[size_t(rng.uniform_int(0, int(photos.size()) - 1))];
  // Zoom in up to 2x; never out beyond the photo.
  const double max_scale = std::min(double(p.cols) / w, double(p.rows) / h);
  const double scale = std::min(max_scale, rng.uniform(0.5, 2.0) * max_scale * 0.5);
  const int cw = std::max(1, std::min(p.cols, int(w * scale))), ch = std::max(1, std::min(p.rows, int(h * scale)));
  const int x0 = rng.uniform_int(0, p.cols - cw), y0 = rng.uniform_int(0, p.rows - ch);
  cv::Mat out;
  cv::resize(p(cv::Rect(x0, y0, cw, ch)), out, {w, h}, 0, 0, cv::INTER_AREA);
  if (rng.bernoulli(0.5)) cv::flip(out, out, 1);
  return out;
}

// A w x h CV_32FC3 texture in [0,1]: flat, value noise, stripes, checkers,
// gradient or a photograph crop.
cv::Mat texture(Rng& rng, int w, int h, int scale, const std::vector<cv::Mat>& photos, bool allow_flat) {
  const double r = rng.uniform();
  const int kind = !photos.empty() && r < 0.3 ? 5 : int(rng.uniform(allow_flat ? 0 : 1, 5));
  const cv::Vec3f a = hsv_color(rng), b = hsv_color(rng);
  cv::Mat out, u, v;
  switch (kind) {
    case 0:
      out = cv::Mat(h, w, CV_32FC3, cv::Scalar(a[0], a[1], a[2]));
      break;
    case 1:
      out = blend(value_noise(rng, w, h), a, b);
      break;
    case 2: {  // stripes, from soft waves to hard bars
      oriented(w, h, rng.uniform(0, kPi), u, v);
      const double period = rng.uniform(scale / 40.0, scale / 8.0) + 2, phase = rng.uniform(0, 2 * kPi);
      const double sharp = rng.uniform(1, 8);
      cv::Mat t(h, w, CV_32F);
      for (int i = 0; i < h * w; ++i) {
        const double s = 0.5 + 0.5 * std::sin(2 * kPi * u.at<float>(i) / period + phase);
        t.at<float>(i) = float(std::clamp((s - 0.5) * sharp + 0.5, 0.0, 1.0));
      }
      out = blend(t, a, b);
      break;
    }
    case 3: {  // rotated checkers
      oriented(w, h, rng.uniform(0, kPi), u, v);
      const double cell = rng.uniform(scale / 48.0, scale / 10.0) + 2;
      cv::Mat t(h, w, CV_32F);
      for (int i = 0; i < h * w; ++i)
        t.at<float>(i) =
            float((int64_t(std::floor(u.at<float>(i) / cell)) + int64_t(std::floor(v.at<float>(i) / cell))) & 1);
      out = blend(t, a, b);
      break;
    }
    case 4: {  // linear gradient
      oriented(w, h, rng.uniform(0, 2 * kPi), u, v);
      double lo, hi;
      cv::minMaxLoc(u, &lo, &hi);
      out = blend((u - lo) / std::max(hi - lo, 1.0), a, b);
      break;
    }
    default:
      out = photo_crop(rng, photos, w, h);
      break;
  }
  // Fine grain, so that no region is perfectly flat.
  cv::Mat grain(h, w, CV_32FC3);
  cv::RNG cvr(rng.next());
  const double sigma = rng.uniform(0.0, 0.03);
  cvr.fill(grain, cv::RNG::NORMAL, 0.0, sigma);
  return out + grain;
}

struct Kind {
  const char* name;
  double weight;
};
// Thin strokes are the hardest for a 256-pixel model; they come less often.
constexpr Kind kKinds[] = {{"polygon", 1.0}, {"concave", 1.0}, {"ellipse", 1.0},
                           {"star", 1.0},    {"ring", 0.8},    {"stroke", 0.6}};

int draw_kind(Rng& rng) {
  double total = 0;
  for (const auto& k : kKinds) total += k.weight;
  double x = rng.uniform(0, total);
  for (int i = 0; i < int(std::size(kKinds)); ++i) {
    if (x < kKinds[i].weight) return i;
    x -= kKinds[i].weight;
  }
  return int(std::size(kKinds)) - 1;
}

std::vector<cv::Point> radial_polygon(Rng& rng, cv::Point2d c, double r, int n, double rmin, bool alternate,
                                      double inner) {
  std::vector<double> angles(static_cast<size_t>(n));
  const double rot = rng.uniform(0, 2 * kPi);
  for (int i = 0; i < n; ++i)
    angles[size_t(i)] = alternate ? rot + 2 * kPi * i / n : rot + 2 * kPi * (i + rng.uniform(-0.35, 0.35)) / n;
  std::vector<cv::Point> pts;
  for (int i = 0; i < n; ++i) {
    const double rr = alternate ? (i % 2 ? r * inner : r) : r * rng.uniform(rmin, 1.0);
    pts.emplace_back(int(std::lround(c.x + rr * std::cos(angles[size_t(i)]))),
                     int(std::lround(c.y + rr * std::sin(angles[size_t(i)]))));
  }
  return pts;
}

// The object's silhouette on a size x size canvas.
cv::Mat shape_mask(Rng& rng, int kind, int size) {
  cv::Mat1b m = cv::Mat1b::zeros(size, size);
  const double r = size * rng.uniform(0.06, 0.2);
  const cv::Point2d c(rng.uniform(-0.05, 1.05) * size, rng.uniform(-0.05, 1.05) * size);
  const std::string name = kKinds[kind].name;
  if (name == "polygon") {
    std::vector<cv::Point> hull;
    cv::convexHull(radial_polygon(rng, c, r, rng.uniform_int(3, 8), 0.75, false, 0), hull);
    cv::fillPoly(m, std::vector<std::vector<cv::Point>>{hull}, 255);
  } else if (name == "concave") {
    cv::fillPoly(
        m, std::vector<std::vector<cv::Point>>{radial_polygon(rng, c, r, rng.uniform_int(6, 14), 0.35, false, 0)}, 255);
  } else if (name == "star") {
    const int tips = rng.uniform_int(4, 8);
    cv::fillPoly(
        m, std::vector<std::vector<cv::Point>>{radial_polygon(rng, c, r, 2 * tips, 0, true, rng.uniform(0.35, 0.6))},
        255);
  } else if (name == "ellipse" || name == "ring") {
    const double ar = rng.uniform(0.35, 1.0), angle = rng.uniform(0, 180);
    const cv::Size axes(int(r), std::max(2, int(r * ar)));
    cv::ellipse(m, cv::Point(int(c.x), int(c.y)), axes, angle, 0, 360, 255, cv::FILLED);
    if (name == "ring") {
      const double k = rng.uniform(0.45, 0.75);
      cv::ellipse(m, cv::Point(int(c.x), int(c.y)), cv::Size(int(axes.width * k), int(axes.height * k)), angle, 0, 360,
                  0, cv::FILLED);
    }
  } else {  // stroke: a thick cubic Bezier curve
    const double len = size * rng.uniform(0.2, 0.5);
    cv::Point2d p[4];
    p[0] = c;
    for (int i = 1; i < 4; ++i) {
      const double a = rng.uniform(0, 2 * kPi);
      p[i] = p[i - 1] + cv::Point2d(std::cos(a), std::sin(a)) * (len / 3);
    }
    std::vector<cv::Point> curve;
    for (int i = 0; i <= 64; ++i) {
      const double t = i / 64.0, s = 1 - t;
      const cv::Point2d q = s * s * s * p[0] + 3 * s * s * t * p[1] + 3 * s * t * t * p[2] + t * t * t * p[3];
      curve.emplace_back(int(std::lround(q.x)), int(std::lround(q.y)));
    }
    const int thick = std::max(2, int(std::lround(size * rng.uniform(0.01, 0.025))));
    cv::polylines(m, curve, false, 255, thick, cv::LINE_8);
  }
  return m;
}

// Light falling across an object (or the scene): 1 + a * (signed distance
// along a random direction, normalised to the extent).
cv::Mat shading(Rng& rng, int w, int h, double strength) {
  cv::Mat u, v;
  oriented(w, h, rng.uniform(0, 2 * kPi), u, v);
  double lo, hi;
  cv::minMaxLoc(u, &lo, &hi);
  const double a = rng.uniform(-strength, strength);
  cv::Mat s = (u - (lo + hi) / 2) * (2 * a / std::max(hi - lo, 1.0)) + 1.0;
  cv::Mat s3;
  cv::merge(std::vector<cv::Mat>{s, s, s}, s3);
  return s3;
}

std::vector<cv::Mat> load_photos(const std::vector<std::string>& paths, int size) {
  std::vector<cv::Mat> out;
  for (const auto& p : paths) {
    cv::Mat rgb = read_rgb(p);
    // Shorter side = 1.5 x the scene, enough to crop and zoom.
    const double s = 1.5 * size / std::min(rgb.cols, rgb.rows);
    cv::Mat small, f;
    cv::resize(rgb, small, {}, s, s, s < 1 ? cv::INTER_AREA : cv::INTER_LINEAR);
    small.convertTo(f, CV_32FC3, 1.0 / 255);
    out.push_back(f);
  }
  return out;
}

// Photos for textures: only .jpg/.jpeg/.png (the formats synth documents),
// not every extension of io::image_extensions().
bool is_image_file(const fs::path& p) {
  const std::string e = io::lower(p.extension().string());
  return e == ".jpg" || e == ".jpeg" || e == ".png";
}

std::vector<std::string> list_photos(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_regular_file() && is_image_file(it->path())) out.push_back(it->path().string());
  std::sort(out.begin(), out.end());
  // Wallpaper packages ship one picture at several resolutions; a few dozen
  // distinct photos are plenty.
  if (out.size() > 48) out.resize(48);
  return out;
}

}  // namespace

const std::vector<std::string>& synth_kinds() {
  static const std::vector<std::string> k = [] {
    std::vector<std::string> v;
    for (const auto& x : kKinds) v.push_back(x.name);
    return v;
  }();
  return k;
}

std::vector<std::string> default_photo_dirs() {
  // mate-backgrounds' nature photographs are real photos; other wallpaper
  // packages are mostly renders, used only if nothing better is installed.
  return {"/usr/share/backgrounds/mate/nature", "/usr/share/backgrounds", "/usr/share/wallpapers"};
}

SynthWorld::SynthWorld(SynthOptions o) : opts_(std::move(o)) {
  if (opts_.size < 32 || opts_.size > 8192) throw Error("synth: the scene size must be in 32..8192");
  if (opts_.min_objects < 1 || opts_.max_objects < opts_.min_objects || opts_.max_objects > 250)
    throw Error("synth: object counts must satisfy 1 <= min <= max <= 250");
  if (opts_.photos == "auto") {
    for (const auto& d : default_photo_dirs())
      if (fs::is_directory(d) && !(photo_paths_ = list_photos(d)).empty()) break;
  } else if (opts_.photos != "none" && !opts_.photos.empty()) {
    if (!fs::is_directory(opts_.photos)) throw Error("synth: photo directory not found: " + opts_.photos);
    photo_paths_ = list_photos(opts_.photos);
    if (photo_paths_.empty()) throw Error("synth: no .jpg/.png photos in " + opts_.photos);
  }
  photos_ = load_photos(photo_paths_, opts_.size);
}

SynthScene SynthWorld::scene(uint64_t index) const {
  Rng rng(degrade::derive_seed(opts_.seed, index));
  const int S = opts_.size;
  cv::Mat img = texture(rng, S, S, S, photos_, false);
  if (rng.bernoulli(0.5)) img = img.mul(shading(rng, S, S, 0.3));
  cv::Mat1b ids = cv::Mat1b::zeros(S, S);
  const int n = rng.uniform_int(opts_.min_objects, opts_.max_objects);
  std::vector<std::string> kinds;
  for (int k = 0; k < n; ++k) {
    const int kind = draw_kind(rng);
    cv::Mat m = shape_mask(rng, kind, S);
    const cv::Rect box = cv::boundingRect(m);
    if (box.area() == 0) continue;
    // Work on the box grown by the blur/shadow reach only.
    const int pad = 4 + S / 32;
    const cv::Rect roi = (box + cv::Size(2 * pad, 2 * pad) - cv::Point(pad, pad)) & cv::Rect(0, 0, S, S);
    cv::Mat mf;
    m(roi).convertTo(mf, CV_32F, 1.0 / 255);
    cv::Mat region = img(roi);
    if (rng.bernoulli(0.35)) {  // soft cast shadow, offset from the object
      const double a = rng.uniform(0, 2 * kPi), d = rng.uniform(0.01, 0.03) * S;
      cv::Mat warp = (cv::Mat_<double>(2, 3) << 1, 0, d * std::cos(a), 0, 1, d * std::sin(a));
      cv::Mat sh;
      cv::warpAffine(mf, sh, warp, mf.size());
      cv::GaussianBlur(sh, sh, {0, 0}, 1 + S / 200.0);
      cv::Mat sh3;
      cv::merge(std::vector<cv::Mat>{sh, sh, sh}, sh3);
      region = region.mul(cv::Scalar::all(1.0) - sh3 * rng.uniform(0.2, 0.5));
    }
    // An object texture that stands out from what is behind it, mostly:
    // some low-contrast objects stay (real scenes have them).
    const cv::Scalar behind = cv::mean(region, m(roi));
    const double min_contrast = rng.bernoulli(0.85) ? 0.18 : 0.0;
    cv::Mat tex;
    for (int tries = 0; tries < 8; ++tries) {
      tex = texture(rng, roi.width, roi.height, S, photos_, true);
      const cv::Scalar mean = cv::mean(tex, m(roi));
      const double d = std::sqrt(std::pow(mean[0] - behind[0], 2) + std::pow(mean[1] - behind[1], 2) +
                                 std::pow(mean[2] - behind[2], 2));
      if (d >= min_contrast) break;
    }
    tex = tex.mul(shading(rng, roi.width, roi.height, 0.35));
    cv::Mat alpha;
    cv::GaussianBlur(mf, alpha, {0, 0}, 0.7);
    cv::Mat a3;
    cv::merge(std::vector<cv::Mat>{alpha, alpha, alpha}, a3);
    cv::Mat painted = region.mul(cv::Scalar::all(1.0) - a3) + tex.mul(a3);
    painted.copyTo(img(roi));
    ids.setTo(int(kinds.size()) + 1, m);
    kinds.push_back(kKinds[kind].name);
  }
  // Scene-wide light and sensor grain.
  if (rng.bernoulli(0.4)) img = img.mul(shading(rng, S, S, 0.2));
  SynthScene sc;
  img.convertTo(sc.image, CV_8UC3, 255.0);
  // Keep objects with enough visible area; relabel them 1..n in painting order.
  const int64_t min_area = std::max<int64_t>(30, int64_t(S) * S / 2000);
  std::vector<int64_t> area(kinds.size() + 1, 0);
  for (int y = 0; y < S; ++y)
    for (int x = 0; x < S; ++x) ++area[ids(y, x)];
  std::vector<uint8_t> relabel(kinds.size() + 1, 0);
  for (size_t k = 1; k <= kinds.size(); ++k) {
    if (area[k] < min_area) continue;
    relabel[k] = uint8_t(sc.objects.size() + 1);
    SynthObject o;
    o.id = relabel[k];
    o.kind = kinds[k - 1];
    o.area = area[k];
    sc.objects.push_back(o);
  }
  for (int y = 0; y < S; ++y)
    for (int x = 0; x < S; ++x) ids(y, x) = relabel[ids(y, x)];
  for (auto& o : sc.objects) o.bbox = cv::boundingRect(ids == o.id);
  sc.ids = ids;
  return sc;
}

namespace {

std::string stem(size_t i) {
  char b[32];
  std::snprintf(b, sizeof b, "%06zu", i);
  return std::string(b);
}

bool holds_files(const fs::path& dir) {
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (!io::is_temp_name(it->path().filename().string())) return true;
  return false;
}

// The options go to synth.json before any scene, so a run killed half-way
// still says what its scenes were made with; every later run into the
// folder must match them, or two worlds would mix in one set.
void claim_options(const std::string& out, const nlohmann::json& meta) {
  const fs::path root(out), file = root / "synth.json";
  std::error_code ec;
  if (fs::exists(file, ec)) {
    auto old = nlohmann::json::parse(io::read_file(file.string()), nullptr, false);
    for (const char* k : {"size", "seed", "min_objects", "max_objects", "photos"})
      if (old.is_discarded() || !old.contains(k) || old[k] != meta[k])
        throw Error("synth: " + out + " holds scenes made with other options (" + k + "); use a new output folder");
    return;
  }
  if (holds_files(root / "images") || holds_files(root / "masks"))
    throw Error("synth: " + out +
                " holds scenes without a synth.json saying how they were made; use a new output folder");
  io::write_text(file.string(), meta.dump(2) + "\n");
}

void make_dirs(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir, ec))
    throw Error("synth: cannot make folder '" + dir.string() + "'" +
                (ec ? ": " + ec.message() : ": a file is in the way"));
}

}  // namespace

SynthSummary write_synth(const std::string& out, size_t count, const SynthOptions& opts, int jobs,
                         const std::function<void(size_t, size_t)>& progress) {
  if (count == 0) throw Error("synth: the scene count must be >= 1");
  SynthWorld world(opts);
  const fs::path root(out), images = root / "images", masks = root / "masks";
  nlohmann::json meta{{"size", opts.size},
                      {"seed", opts.seed},
                      {"min_objects", opts.min_objects},
                      {"max_objects", opts.max_objects},
                      {"photos", world.photo_paths()}};
  make_dirs(root);
  // Held to the end: two synths into one folder would interleave.
  const io::FolderLock lock(out);
  claim_options(out, meta);
  make_dirs(images);
  make_dirs(masks);
  io::remove_stale_temps(images.string());
  io::remove_stale_temps(masks.string());
  std::vector<std::vector<SynthObject>> objects(count);
  std::atomic<size_t> next{0}, done{0};
  std::mutex mu;
  std::string failure;
  auto work = [&] {
    for (size_t i; (i = next++) < count;) {
      try {
        SynthScene sc = world.scene(i);
        objects[i] = sc.objects;
        const auto ip = (images / (stem(i) + ".png")).string(), mp = (masks / (stem(i) + ".png")).string();
        if (!fs::exists(ip) || !fs::exists(mp)) {
          io::write_image(ip, sc.image, true);
          io::write_image(mp, sc.ids, false);
        }
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lk(mu);
        if (failure.empty()) failure = e.what();
        next = count;
      }
      const size_t d = ++done;
      if (progress) {
        std::lock_guard<std::mutex> lk(mu);
        progress(d, count);
      }
    }
  };
  std::vector<std::thread> pool;
  for (int j = 1; j < std::max(1, jobs); ++j) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (!failure.empty()) throw Error("synth: " + failure);

  nlohmann::json coco{{"info", {{"description", "rsam synthetic segmentation world"}, {"seed", opts.seed}}},
                      {"images", nlohmann::json::array()},
                      {"annotations", nlohmann::json::array()},
                      {"categories", nlohmann::json::array()}};
  const auto& kinds = synth_kinds();
  for (size_t k = 0; k < kinds.size(); ++k) coco["categories"].push_back({{"id", k + 1}, {"name", kinds[k]}});
  SynthSummary sum;
  sum.scenes = count;
  sum.photos = world.photo_paths();
  int64_t ann_id = 1;
  for (size_t i = 0; i < count; ++i) {
    coco["images"].push_back(
        {{"id", i + 1}, {"file_name", stem(i) + ".png"}, {"width", opts.size}, {"height", opts.size}});
    if (objects[i].empty()) continue;
    // RLEs come from the written mask, so annotations and masks agree by construction.
    const cv::Mat ids = io::read_image((masks / (stem(i) + ".png")).string(), io::ImageRead::Unchanged);
    if (ids.type() != CV_8UC1) throw Error("synth: cannot read back " + stem(i) + ".png");
    for (const auto& o : objects[i]) {
      const Rle rle = rle_encode(ids == o.id);
      const auto kind = size_t(std::find(kinds.begin(), kinds.end(), o.kind) - kinds.begin()) + 1;
      coco["annotations"].push_back({{"id", ann_id++},
                                     {"image_id", i + 1},
                                     {"category_id", kind},
                                     {"segmentation", {{"size", {rle.h, rle.w}}, {"counts", rle_to_string(rle)}}},
                                     {"area", o.area},
                                     {"bbox", {o.bbox.x, o.bbox.y, o.bbox.width, o.bbox.height}},
                                     {"iscrowd", 0}});
      ++sum.objects;
    }
  }
  io::write_text((root / "annotations.json").string(), coco.dump());
  meta["count"] = count;
  meta["objects"] = sum.objects;
  io::write_text((root / "synth.json").string(), meta.dump(2) + "\n");
  return sum;
}

}  // namespace rsam::data
