#include "model/image.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "error.h"

namespace rsam {

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

struct Coeffs {
  int ksize = 0;
  std::vector<int> bounds;  // (xmin, count) per output pixel
  std::vector<int32_t> kk;  // ksize fixed-point weights per output pixel
};

double bilinear_filter(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for the bilinear filter
// over the whole input extent [0, in_size).
Coeffs precompute(int in_size, int out_size) {
  const double in0 = 0.0, in1 = double(in_size);
  double scale = (in1 - in0) / out_size;
  double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = 1.0 * filterscale;
  Coeffs c;
  c.ksize = int(std::ceil(support)) * 2 + 1;
  c.bounds.resize(size_t(out_size) * 2);
  std::vector<double> pre(size_t(out_size) * c.ksize, 0.0);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = int(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = int(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double* k = &pre[size_t(xx) * c.ksize];
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double w = bilinear_filter((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (int x = 0; x < xmax; ++x)
      if (ww != 0.0) k[x] /= ww;
    c.bounds[size_t(xx) * 2] = xmin;
    c.bounds[size_t(xx) * 2 + 1] = xmax;
  }
  c.kk.resize(pre.size());
  for (size_t i = 0; i < pre.size(); ++i)
    c.kk[i] = pre[i] < 0 ? int32_t(-0.5 + pre[i] * (1 << kPrecisionBits))
                         : int32_t(0.5 + pre[i] * (1 << kPrecisionBits));
  return c;
}

inline uint8_t clip8(int32_t v) {
  v >>= kPrecisionBits;
  return uint8_t(v < 0 ? 0 : (v > 255 ? 255 : v));
}

}  // namespace

Image8 image8_from_rows(const uint8_t* data, int width, int height, size_t row_step) {
  Image8 img(width, height, 3);
  for (int y = 0; y < height; ++y) std::memcpy(img.row(y), data + size_t(y) * row_step, size_t(width) * 3);
  return img;
}

std::pair<int, int> preprocess_shape(int h, int w, int long_side) {
  const double scale = long_side * 1.0 / std::max(h, w);
  const double newh = h * scale, neww = w * scale;
  return {int(newh + 0.5), int(neww + 0.5)};
}

Image8 resize_bilinear_pil(const Image8& in, int out_w, int out_h) {
  if (in.width <= 0 || in.height <= 0 || out_w <= 0 || out_h <= 0) throw Error("resize: empty image");
  const int ch = in.channels;
  const bool need_h = out_w != in.width, need_v = out_h != in.height;
  if (!need_h && !need_v) return in;
  const Coeffs ch_h = precompute(in.width, out_w);
  Coeffs cv = precompute(in.height, out_h);
  const Image8* src = &in;
  Image8 tmp;
  if (need_h) {
    // Only the rows the vertical pass will read, as Pillow does.
    const int first = cv.bounds[0];
    const int last = cv.bounds[size_t(out_h) * 2 - 2] + cv.bounds[size_t(out_h) * 2 - 1];
    for (int i = 0; i < out_h; ++i) cv.bounds[size_t(i) * 2] -= first;
    tmp = Image8(out_w, last - first, ch);
    for (int y = 0; y < tmp.height; ++y) {
      const uint8_t* s = in.row(y + first);
      uint8_t* d = tmp.row(y);
      for (int xx = 0; xx < out_w; ++xx) {
        const int xmin = ch_h.bounds[size_t(xx) * 2], xmax = ch_h.bounds[size_t(xx) * 2 + 1];
        const int32_t* k = &ch_h.kk[size_t(xx) * ch_h.ksize];
        for (int c = 0; c < ch; ++c) {
          int32_t ss = 1 << (kPrecisionBits - 1);
          for (int x = 0; x < xmax; ++x) ss += int32_t(s[(x + xmin) * ch + c]) * k[x];
          d[xx * ch + c] = clip8(ss);
        }
      }
    }
    src = &tmp;
  }
  if (!need_v) return tmp;
  Image8 out(out_w, out_h, ch);
  const int row_len = out_w * ch;
  for (int yy = 0; yy < out_h; ++yy) {
    const int ymin = cv.bounds[size_t(yy) * 2], ymax = cv.bounds[size_t(yy) * 2 + 1];
    const int32_t* k = &cv.kk[size_t(yy) * cv.ksize];
    uint8_t* d = out.row(yy);
    for (int i = 0; i < row_len; ++i) {
      int32_t ss = 1 << (kPrecisionBits - 1);
      for (int y = 0; y < ymax; ++y) ss += int32_t(src->row(y + ymin)[i]) * k[y];
      d[i] = clip8(ss);
    }
  }
  return out;
}

}  // namespace rsam
