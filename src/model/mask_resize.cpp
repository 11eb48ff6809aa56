#include "model/mask_resize.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace rsam {

namespace {

// torch's upsample_bilinear2d source taps (align_corners=false, size given).
struct Tap {
  int64_t i0, i1;
  double w0, w1;
};

Tap bilinear_tap(int64_t dst, int64_t in, int64_t out) {
  const double scale = double(in) / double(out);
  const double src = std::max(0.0, scale * (double(dst) + 0.5) - 0.5);
  const int64_t i0 = std::min<int64_t>(int64_t(src), in - 1);
  const int64_t i1 = i0 + (i0 < in - 1 ? 1 : 0);
  const double l1 = src - double(i0);
  return {i0, i1, 1.0 - l1, l1};
}

// One axis of the composed map: output index -> up to four (input, weight).
struct Axis {
  std::vector<int64_t> idx;  // [out * 4]
  std::vector<float> w;      // [out * 4], unused taps weigh 0
  int64_t lo = 0, hi = 0;    // input range used
};

Axis compose(int64_t in, int64_t side, int64_t crop, int64_t out) {
  Axis a;
  a.idx.assign(size_t(out) * 4, 0);
  a.w.assign(size_t(out) * 4, 0.f);
  a.lo = in;
  for (int64_t o = 0; o < out; ++o) {
    const Tap t2 = bilinear_tap(o, crop, out);  // into the cropped side x side frame
    int64_t k = 0;
    for (auto [j, wj] : {std::make_pair(t2.i0, t2.w0), std::make_pair(t2.i1, t2.w1)}) {
      const Tap t1 = bilinear_tap(j, in, side);
      for (auto [i, wi] : {std::make_pair(t1.i0, t1.w0), std::make_pair(t1.i1, t1.w1)}) {
        // Merge repeated inputs so each output has at most four taps.
        int64_t m = 0;
        while (m < k && a.idx[o * 4 + m] != i) ++m;
        if (m == k) {
          a.idx[o * 4 + k] = i;
          ++k;
        }
        a.w[o * 4 + m] += float(wj * wi);
        a.lo = std::min(a.lo, i);
        a.hi = std::max(a.hi, i + 1);
      }
    }
    // Unused taps read the first one's input with weight 0: in bounds.
    for (int64_t m = k; m < 4; ++m) a.idx[o * 4 + m] = a.idx[o * 4];
  }
  return a;
}

}  // namespace

torch::Tensor resize_masks_composed(const torch::Tensor& masks_in, int64_t side, std::pair<int64_t, int64_t> crop,
                                    std::pair<int64_t, int64_t> out) {
  TORCH_CHECK(masks_in.device().is_cpu() && masks_in.scalar_type() == torch::kFloat32 && masks_in.dim() >= 2,
              "resize_masks_composed: float CPU masks [..., h, w]");
  const auto lead = masks_in.sizes().slice(0, masks_in.dim() - 2).vec();
  const int64_t h = masks_in.size(-2), w = masks_in.size(-1), H = out.first, W = out.second;
  const auto masks = masks_in.reshape({-1, h, w}).contiguous();
  const int64_t n = masks.size(0);
  const Axis ay = compose(h, side, crop.first, H), ax = compose(w, side, crop.second, W);
  auto result = torch::empty({n, H, W}, masks.options());
  const int64_t rows = ay.hi - ay.lo;
  // Columns first on the rows that are used ([rows, W] per mask), then rows.
  auto tmp = torch::empty({n, rows, W}, masks.options());
  const float* src = masks.data_ptr<float>();
  float* t = tmp.data_ptr<float>();
  float* dst = result.data_ptr<float>();
  at::parallel_for(0, n * rows, 16, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float* in = src + (r / rows) * h * w + (ay.lo + r % rows) * w;
      float* o = t + r * W;
      for (int64_t x = 0; x < W; ++x) {
        const int64_t* i = &ax.idx[x * 4];
        const float* c = &ax.w[x * 4];
        o[x] = c[0] * in[i[0]] + c[1] * in[i[1]] + c[2] * in[i[2]] + c[3] * in[i[3]];
      }
    }
  });
  at::parallel_for(0, n * H, 16, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t m = r / H, y = r % H;
      const int64_t* i = &ay.idx[y * 4];
      const float* c = &ay.w[y * 4];
      const float* r0 = t + (m * rows + i[0] - ay.lo) * W;
      const float* r1 = t + (m * rows + i[1] - ay.lo) * W;
      const float* r2 = t + (m * rows + i[2] - ay.lo) * W;
      const float* r3 = t + (m * rows + i[3] - ay.lo) * W;
      float* o = dst + r * W;
      for (int64_t x = 0; x < W; ++x) o[x] = c[0] * r0[x] + c[1] * r1[x] + c[2] * r2[x] + c[3] * r3[x];
    }
  });
  auto shape = lead;
  shape.push_back(H);
  shape.push_back(W);
  return result.view(shape);
}

}  // namespace rsam
