#include "data/prompts.h"

#include <algorithm>
#include <cstdlib>
#include <unordered_set>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "degrade/rng.h"
#include "error.h"

namespace rsam::data {

namespace {

using degrade::Rng;

int parse_count(const std::string& s, const std::string& whole, int min) {
  char* end = nullptr;
  const long v = s.empty() ? -1 : std::strtol(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || v < min || v > 1000)
    throw Error("prompt '" + whole + "': '" + s + "' is not a count in " + std::to_string(min) + "..1000");
  return static_cast<int>(v);
}

// Pixels of `mask` equal to (nonzero == want_object), as (x, y).
std::vector<cv::Point> pixels(const cv::Mat& mask, bool want_object) {
  std::vector<cv::Point> out;
  for (int y = 0; y < mask.rows; ++y) {
    const uint8_t* p = mask.ptr<uint8_t>(y);
    for (int x = 0; x < mask.cols; ++x)
      if ((p[x] != 0) == want_object) out.emplace_back(x, y);
  }
  return out;
}

// k indices into [0, n): distinct while n >= k, with replacement otherwise.
std::vector<size_t> pick(size_t n, int k, Rng& rng) {
  std::vector<size_t> out;
  std::unordered_set<size_t> used;
  for (int i = 0; i < k; ++i) {
    size_t j;
    do {
      j = static_cast<size_t>(rng.next() % n);  // modulo bias < n / 2^64: irrelevant
    } while (n >= static_cast<size_t>(k) && !used.insert(j).second);
    out.push_back(j);
  }
  return out;
}

SampledPrompt sample_with(const cv::Mat& mask, const PromptSpec& spec, Rng& rng, uint64_t seed, uint64_t key) {
  SampledPrompt out;
  out.kind = spec.text;
  switch (spec.kind) {
    case PromptSpec::Kind::Points: {
      const auto fg = pixels(mask, true);
      if (fg.empty()) throw Error("prompt: the mask is empty, no point can be drawn");
      for (size_t j : pick(fg.size(), spec.positives, rng)) {
        out.points.emplace_back(static_cast<float>(fg[j].x), static_cast<float>(fg[j].y));
        out.labels.push_back(1);
      }
      if (spec.negatives > 0) {
        const auto bg = pixels(mask, false);
        if (bg.empty()) throw Error("prompt: the mask covers the whole image, no negative point can be drawn");
        for (size_t j : pick(bg.size(), spec.negatives, rng)) {
          out.points.emplace_back(static_cast<float>(bg[j].x), static_cast<float>(bg[j].y));
          out.labels.push_back(0);
        }
      }
      break;
    }
    case PromptSpec::Kind::Center: {
      const cv::Point c = mask_center(mask);
      out.points.emplace_back(static_cast<float>(c.x), static_cast<float>(c.y));
      out.labels.push_back(1);
      break;
    }
    case PromptSpec::Kind::Box:
      out.has_box = true;
      out.box = mask_box(mask);
      break;
    case PromptSpec::Kind::NoisyBox: {
      const cv::Vec4f b = mask_box(mask);
      const double sw = std::max(1.0f, b[2] - b[0]), sh = std::max(1.0f, b[3] - b[1]);
      double c[4];
      for (int i = 0; i < 4; ++i) c[i] = b[i] + rng.normal() * spec.noise_scale * (i % 2 == 0 ? sw : sh);
      c[0] = std::clamp(c[0], 0.0, mask.cols - 1.0);
      c[2] = std::clamp(c[2], 0.0, mask.cols - 1.0);
      c[1] = std::clamp(c[1], 0.0, mask.rows - 1.0);
      c[3] = std::clamp(c[3], 0.0, mask.rows - 1.0);
      if (c[0] > c[2]) std::swap(c[0], c[2]);
      if (c[1] > c[3]) std::swap(c[1], c[3]);
      out.has_box = true;
      out.box = cv::Vec4f(static_cast<float>(c[0]), static_cast<float>(c[1]), static_cast<float>(c[2]),
                          static_cast<float>(c[3]));
      break;
    }
    case PromptSpec::Kind::Clicks: {
      // The first click is exactly the point plain points:1 draws for this key.
      const PromptSpec one = parse_prompt("points:1");
      Rng sub(degrade::derive_seed(degrade::derive_seed(seed, key), degrade::hash_string(one.text)));
      out = sample_with(mask, one, sub, seed, key);
      out.kind = spec.text;
      break;
    }
    case PromptSpec::Kind::Mix: {
      const PromptSpec& chosen = spec.choices[rng.next() % spec.choices.size()];
      // The pick's draws come from its own stream, so "mix:box|points:1"
      // choosing points:1 gives the prompt plain points:1 would for this key.
      Rng sub(degrade::derive_seed(degrade::derive_seed(seed, key), degrade::hash_string(chosen.text)));
      return sample_with(mask, chosen, sub, seed, key);
    }
  }
  return out;
}

}  // namespace

PromptSpec parse_prompt(const std::string& one) {
  PromptSpec s;
  if (one.rfind("mix:", 0) == 0) {
    s.kind = PromptSpec::Kind::Mix;
    std::string rest = one.substr(4), text;
    size_t b = 0;
    for (;;) {
      const size_t e = rest.find('|', b);
      const std::string alt = rest.substr(b, e == std::string::npos ? std::string::npos : e - b);
      if (alt.rfind("mix:", 0) == 0) throw Error("prompt '" + one + "': mix cannot nest");
      s.choices.push_back(parse_prompt(alt));
      text += (text.empty() ? "" : "|") + s.choices.back().text;
      if (e == std::string::npos) break;
      b = e + 1;
    }
    s.text = "mix:" + text;
    return s;
  }
  if (one == "center" || one == "point:center") {
    s.kind = PromptSpec::Kind::Center;
    s.text = "center";
    return s;
  }
  if (one == "box") {
    s.kind = PromptSpec::Kind::Box;
    s.text = "box";
    return s;
  }
  if (one == "noisy-box" || one.rfind("noisy-box:", 0) == 0) {
    s.kind = PromptSpec::Kind::NoisyBox;
    if (one.size() > 9) {
      const std::string v = one.substr(10);
      char* end = nullptr;
      s.noise_scale = v.empty() ? -1 : std::strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0' || !(s.noise_scale >= 0 && s.noise_scale <= 10))
        throw Error("prompt '" + one + "': noise scale must be a number in 0..10");
    }
    s.text = one.size() > 9 ? one : "noisy-box";
    return s;
  }
  if (one.rfind("clicks:", 0) == 0) {
    s.kind = PromptSpec::Kind::Clicks;
    s.clicks = parse_count(one.substr(7), one, 1);
    s.text = "clicks:" + std::to_string(s.clicks);
    return s;
  }
  for (const char* head : {"points:", "point:"}) {
    const std::string h = head;
    if (one.rfind(h, 0) != 0) continue;
    s.kind = PromptSpec::Kind::Points;
    const std::string rest = one.substr(h.size());
    const size_t plus = rest.find('+');
    s.positives = parse_count(rest.substr(0, plus), one, 1);
    if (plus != std::string::npos) {
      const std::string neg = rest.substr(plus + 1);
      if (neg.rfind("neg:", 0) != 0) throw Error("prompt '" + one + "': expected '+neg:J' after the point count");
      s.negatives = parse_count(neg.substr(4), one, 0);
    }
    s.text = "points:" + std::to_string(s.positives) + (s.negatives ? "+neg:" + std::to_string(s.negatives) : "");
    return s;
  }
  throw Error("prompt '" + one +
              "' is not one of points:K[+neg:J], point:K, center, box, noisy-box[:S], clicks:N, mix:A|B");
}

std::vector<PromptSpec> parse_prompts(const std::string& list) {
  std::vector<PromptSpec> out;
  size_t b = 0;
  for (;;) {
    const size_t e = list.find(',', b);
    std::string item = list.substr(b, e == std::string::npos ? std::string::npos : e - b);
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (item.empty()) throw Error("prompt list '" + list + "' has an empty element");
    out.push_back(parse_prompt(item));
    if (e == std::string::npos) return out;
    b = e + 1;
  }
}

bool next_click(const cv::Mat& pred, const cv::Mat& gt, cv::Point* at, int* label) {
  if (pred.type() != CV_8UC1 || gt.type() != CV_8UC1 || pred.size() != gt.size() || gt.empty())
    throw Error("next_click: prediction and ground truth must be CV_8UC1 masks of one size");
  const cv::Mat p = pred != 0, g = gt != 0;
  const cv::Mat fn = g & ~p, fp = p & ~g;
  // Distance to the nearest non-error pixel, with a zero border so that an
  // error touching the image edge is not treated as infinitely deep.
  auto deepest = [](const cv::Mat& err, cv::Point* where) {
    cv::Mat padded, dist;
    cv::copyMakeBorder(err, padded, 1, 1, 1, 1, cv::BORDER_CONSTANT, cv::Scalar(0));
    cv::distanceTransform(padded, dist, cv::DIST_L2, cv::DIST_MASK_PRECISE);
    double best = 0;
    cv::minMaxLoc(dist(cv::Rect(1, 1, err.cols, err.rows)), nullptr, &best, nullptr, where);
    return best;
  };
  cv::Point a, b;
  const double dn = deepest(fn, &a), dp = deepest(fp, &b);
  if (dn == 0 && dp == 0) return false;
  *label = dn >= dp ? 1 : 0;
  *at = dn >= dp ? a : b;
  return true;
}

cv::Point mask_center(const cv::Mat& mask) {
  if (mask.empty() || mask.type() != CV_8UC1) throw Error("prompt: the mask must be a non-empty CV_8UC1 image");
  cv::Point at;
  int label = 0;
  // Against an empty prediction the whole object is missed, so the standard
  // click lands where the object is deepest.
  if (!next_click(cv::Mat::zeros(mask.size(), CV_8UC1), mask, &at, &label))
    throw Error("prompt: the mask is empty, no center point can be placed");
  return at;
}

bool is_single_point(const PromptSpec& spec) {
  return spec.kind == PromptSpec::Kind::Center ||
         (spec.kind == PromptSpec::Kind::Points && spec.positives == 1 && spec.negatives == 0);
}

cv::Vec4f mask_box(const cv::Mat& mask) {
  if (mask.empty() || mask.type() != CV_8UC1) throw Error("prompt: the mask must be a non-empty CV_8UC1 image");
  const cv::Rect r = cv::boundingRect(mask);  // nonzero pixels of a single-channel 8-bit image
  if (r.area() == 0) throw Error("prompt: the mask is empty, no box can be drawn");
  return cv::Vec4f(static_cast<float>(r.x), static_cast<float>(r.y), static_cast<float>(r.x + r.width - 1),
                   static_cast<float>(r.y + r.height - 1));
}

SampledPrompt sample_prompt(const cv::Mat& mask, const PromptSpec& spec, uint64_t seed, uint64_t sample_key) {
  if (mask.empty() || mask.type() != CV_8UC1) throw Error("prompt: the mask must be a non-empty CV_8UC1 image");
  Rng rng(degrade::derive_seed(degrade::derive_seed(seed, sample_key), degrade::hash_string(spec.text)));
  return sample_with(mask, spec, rng, seed, sample_key);
}

}  // namespace rsam::data
