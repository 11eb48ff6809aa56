#include "data/rle.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include <opencv2/core.hpp>

#include "error.h"

namespace rsam::data {

Rle rle_from_polygon(const std::vector<double>& xy, int h, int w) {
  // Transcribed step for step from rleFrPoly, integer types included: the
  // result must match pycocotools exactly, so no "cleaner" geometry here.
  const size_t k = xy.size() / 2;
  // maskApi walks every upsampled boundary point, so a far-off vertex means a
  // huge allocation (and int overflow past ~4e8): refuse absurd coordinates.
  for (size_t j = 0; j < 2 * k; ++j)
    if (!(std::fabs(xy[j]) <= 1e6)) throw Error("COCO polygon coordinate " + std::to_string(xy[j]) + " is out of range");
  const double scale = 5;
  std::vector<int> x(k + 1), y(k + 1);
  for (size_t j = 0; j < k; ++j) x[j] = static_cast<int>(scale * xy[j * 2 + 0] + .5);
  for (size_t j = 0; j < k; ++j) y[j] = static_cast<int>(scale * xy[j * 2 + 1] + .5);
  if (k > 0) {
    x[k] = x[0];
    y[k] = y[0];
  }
  // Upsampled points densely along the whole boundary.
  std::vector<int> u, v;
  for (size_t j = 0; j < k; ++j) {
    int xs = x[j], xe = x[j + 1], ys = y[j], ye = y[j + 1];
    const int dx = std::abs(xe - xs), dy = std::abs(ys - ye);
    const bool flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
    if (flip) {
      std::swap(xs, xe);
      std::swap(ys, ye);
    }
    const double s = dx >= dy ? static_cast<double>(ye - ys) / dx : static_cast<double>(xe - xs) / dy;
    if (dx >= dy) {
      for (int d = 0; d <= dx; ++d) {
        const int t = flip ? dx - d : d;
        u.push_back(t + xs);
        v.push_back(static_cast<int>(ys + s * t + .5));
      }
    } else {
      for (int d = 0; d <= dy; ++d) {
        const int t = flip ? dy - d : d;
        v.push_back(t + ys);
        u.push_back(static_cast<int>(xs + s * t + .5));
      }
    }
  }
  // Points where the boundary crosses a pixel-centre column, downsampled.
  std::vector<uint32_t> a;
  for (size_t j = 1; j < u.size(); ++j) {
    if (u[j] == u[j - 1]) continue;
    double xd = static_cast<double>(u[j] < u[j - 1] ? u[j] : u[j] - 1);
    xd = (xd + .5) / scale - .5;
    if (std::floor(xd) != xd || xd < 0 || xd > static_cast<double>(static_cast<uint64_t>(w) - 1)) continue;
    double yd = static_cast<double>(v[j] < v[j - 1] ? v[j] : v[j - 1]);
    yd = (yd + .5) / scale - .5;
    if (yd < 0) yd = 0;
    else if (yd > h) yd = h;
    yd = std::ceil(yd);
    a.push_back(static_cast<uint32_t>(static_cast<int>(xd) * h + static_cast<int>(yd)));
  }
  a.push_back(static_cast<uint32_t>(static_cast<uint64_t>(h) * w));
  std::sort(a.begin(), a.end());
  uint32_t p = 0;
  for (auto& t : a) {
    const uint32_t cur = t;
    t -= p;
    p = cur;
  }
  // Equal boundary points toggle twice: fold a zero run into its neighbours.
  Rle r{h, w, {}};
  size_t j = 0;
  r.counts.push_back(a[j++]);
  while (j < a.size()) {
    if (a[j] > 0) {
      r.counts.push_back(a[j++]);
    } else {
      ++j;
      if (j < a.size()) r.counts.back() += a[j++];
    }
  }
  return r;
}

Rle rle_from_bbox(const double bb[4], int h, int w) {
  const double xs = bb[0], xe = xs + bb[2], ys = bb[1], ye = ys + bb[3];
  return rle_from_polygon({xs, ys, xs, ye, xe, ye, xe, ys}, h, w);
}

Rle rle_from_string(const std::string& s, int h, int w) {
  Rle r{h, w, {}};
  size_t p = 0;
  while (p < s.size()) {
    int64_t x = 0;
    int k = 0;
    bool more = true;
    while (more) {
      if (p >= s.size()) throw Error("compressed RLE string ends inside a count");
      const int c = static_cast<unsigned char>(s[p]) - 48;
      if (c < 0 || c > 63) throw Error("compressed RLE string has a character outside '0'..'o'");
      if (k > 11) throw Error("compressed RLE string has an oversized count");
      x |= static_cast<int64_t>(c & 0x1f) << (5 * k);
      more = (c & 0x20) != 0;
      ++p;
      ++k;
      if (!more && (c & 0x10)) x |= static_cast<int64_t>(-1) * (int64_t{1} << (5 * k));
    }
    if (r.counts.size() > 2) x += static_cast<int64_t>(r.counts[r.counts.size() - 2]);
    r.counts.push_back(static_cast<uint32_t>(x));
  }
  return r;
}

std::string rle_to_string(const Rle& rle) {
  std::string s;
  for (size_t i = 0; i < rle.counts.size(); ++i) {
    int64_t x = rle.counts[i];
    if (i > 2) x -= static_cast<int64_t>(rle.counts[i - 2]);
    bool more = true;
    while (more) {
      int c = static_cast<int>(x & 0x1f);
      x >>= 5;  // arithmetic shift, as on every platform maskApi runs on
      more = (c & 0x10) ? x != -1 : x != 0;
      if (more) c |= 0x20;
      s.push_back(static_cast<char>(c + 48));
    }
  }
  return s;
}

Rle rle_encode(const cv::Mat& mask) {
  if (mask.empty() || mask.type() != CV_8UC1) throw Error("rle_encode needs a non-empty CV_8UC1 mask");
  cv::Mat t;
  cv::transpose(mask, t);  // rows of t are columns of mask: column-major walk
  Rle r{mask.rows, mask.cols, {}};
  uint8_t prev = 0;
  uint32_t run = 0;
  for (int i = 0; i < t.rows; ++i) {
    const uint8_t* p = t.ptr<uint8_t>(i);
    for (int j = 0; j < t.cols; ++j) {
      const uint8_t b = p[j] != 0;
      if (b != prev) {
        r.counts.push_back(run);
        run = 0;
        prev = b;
      }
      ++run;
    }
  }
  r.counts.push_back(run);
  return r;
}

cv::Mat rle_decode(const Rle& rle) {
  if (rle.h <= 0 || rle.w <= 0) throw Error("RLE has an empty size");
  const uint64_t total = static_cast<uint64_t>(rle.h) * rle.w;
  cv::Mat t(rle.w, rle.h, CV_8UC1, cv::Scalar(0));  // transposed: continuous column-major buffer
  uint8_t* out = t.ptr<uint8_t>(0);
  uint64_t pos = 0;
  uint8_t v = 0;
  for (uint32_t c : rle.counts) {
    if (c > total - pos) throw Error("RLE counts cover more than h*w pixels");
    if (v) std::fill(out + pos, out + pos + c, uint8_t{1});
    pos += c;
    v = !v;
  }
  cv::Mat m;
  cv::transpose(t, m);
  return m;
}

uint64_t rle_area(const Rle& rle) {
  uint64_t a = 0;
  for (size_t j = 1; j < rle.counts.size(); j += 2) a += rle.counts[j];
  return a;
}

namespace {

std::vector<double> numbers(const nlohmann::json& part) {
  if (!part.is_array()) throw Error("COCO polygon part is not a list of numbers");
  std::vector<double> xy;
  xy.reserve(part.size());
  for (const auto& v : part) {
    if (!v.is_number()) throw Error("COCO polygon part is not a list of numbers");
    xy.push_back(v.get<double>());
  }
  return xy;
}

std::pair<int, int> rle_size(const nlohmann::json& segm) {
  const auto& size = segm.at("size");
  if (!size.is_array() || size.size() != 2) throw Error("COCO RLE \"size\" is not [h, w]");
  return {size[0].get<int>(), size[1].get<int>()};
}

}  // namespace

cv::Mat decode_segmentation(const nlohmann::json& segm, int h, int w) {
  try {
    if (segm.is_array()) {
      if (segm.empty()) throw Error("COCO segmentation is an empty polygon list");
      // frPyObjects decides on the first part alone.
      const bool boxes = segm[0].is_array() && segm[0].size() == 4;
      cv::Mat out(h, w, CV_8UC1, cv::Scalar(0));
      for (const auto& part : segm) {
        const std::vector<double> xy = numbers(part);
        Rle r;
        if (boxes) {
          if (xy.size() != 4) throw Error("COCO box segmentation part does not have 4 numbers");
          r = rle_from_bbox(xy.data(), h, w);
        } else {
          r = rle_from_polygon(xy, h, w);
        }
        out |= rle_decode(r);  // union == rleMerge(intersect=0) decoded
      }
      return out;
    }
    if (!segm.is_object()) throw Error("COCO segmentation is neither polygons nor RLE");
    const auto [rh, rw] = rle_size(segm);
    if (rh != h || rw != w)
      throw Error("COCO RLE size " + std::to_string(rh) + "x" + std::to_string(rw) + " differs from the image's " +
                  std::to_string(h) + "x" + std::to_string(w));
    const auto& counts = segm.at("counts");
    if (counts.is_string()) return rle_decode(rle_from_string(counts.get<std::string>(), rh, rw));
    if (!counts.is_array()) throw Error("COCO RLE \"counts\" is neither a list nor a string");
    Rle r{rh, rw, {}};
    r.counts.reserve(counts.size());
    for (const auto& c : counts) {
      if (!c.is_number_integer() || c.get<int64_t>() < 0) throw Error("COCO RLE count is not a non-negative integer");
      r.counts.push_back(static_cast<uint32_t>(c.get<int64_t>()));
    }
    return rle_decode(r);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("malformed COCO segmentation: ") + e.what());
  }
}

}  // namespace rsam::data
