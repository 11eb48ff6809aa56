#include "amg/mask_ops.h"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "error.h"

namespace rsam::amg {

namespace {

// torch's CPU sort comparator for descending order (NaN first).
bool desc_key(float a, float b) { return (std::isnan(a) && !std::isnan(b)) || (a > b); }

}  // namespace

std::vector<int64_t> nms(const std::vector<BoxXYXY>& boxes, const std::vector<float>& scores, double thr) {
  const size_t n = boxes.size();
  if (scores.size() != n) throw Error("nms: one score per box");
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return desc_key(scores[a], scores[b]); });
  // torchvision's kernel works in the boxes' dtype (float32 here).
  std::vector<std::array<float, 4>> b(n);
  std::vector<float> area(n);
  for (size_t i = 0; i < n; ++i) {
    for (int k = 0; k < 4; ++k) b[i][k] = float(boxes[i][k]);
    area[i] = (b[i][2] - b[i][0]) * (b[i][3] - b[i][1]);
  }
  std::vector<char> suppressed(n, 0);
  std::vector<int64_t> keep;
  for (size_t oi = 0; oi < n; ++oi) {
    const int64_t i = order[oi];
    if (suppressed[i]) continue;
    keep.push_back(i);
    for (size_t oj = oi + 1; oj < n; ++oj) {
      const int64_t j = order[oj];
      if (suppressed[j]) continue;
      const float xx1 = std::max(b[i][0], b[j][0]), yy1 = std::max(b[i][1], b[j][1]);
      const float xx2 = std::min(b[i][2], b[j][2]), yy2 = std::min(b[i][3], b[j][3]);
      const float w = std::max(0.0f, xx2 - xx1), h = std::max(0.0f, yy2 - yy1);
      const float inter = w * h;
      const float ovr = inter / (area[i] + area[j] - inter);
      if (double(ovr) > thr) suppressed[j] = 1;
    }
  }
  return keep;
}

std::vector<int64_t> torch_sort_descending(const std::vector<float>& values) {
  std::vector<std::pair<float, int64_t>> kv(values.size());
  for (size_t i = 0; i < values.size(); ++i) kv[i] = {values[i], int64_t(i)};
  std::sort(kv.begin(), kv.end(), [](const auto& a, const auto& b) { return desc_key(a.first, b.first); });
  std::vector<int64_t> out(kv.size());
  for (size_t i = 0; i < kv.size(); ++i) out[i] = kv[i].second;
  return out;
}

std::vector<int64_t> batched_nms(const std::vector<BoxXYXY>& boxes, const std::vector<float>& scores, double thr) {
  auto keep = nms(boxes, scores, thr);
  // torchvision switches paths on boxes.numel() > 4000 on the CPU.
  if (boxes.size() * 4 <= 4000) return keep;
  std::sort(keep.begin(), keep.end());  // torch.where(keep_mask)
  std::vector<float> s(keep.size());
  for (size_t i = 0; i < keep.size(); ++i) s[i] = scores[keep[i]];
  const auto perm = torch_sort_descending(s);
  std::vector<int64_t> out(keep.size());
  for (size_t i = 0; i < perm.size(); ++i) out[i] = keep[perm[i]];
  return out;
}

BoxXYXY mask_to_box(const cv::Mat& mask) {
  int64_t top = -1, bottom = -1, left = mask.cols, right = -1;
  for (int y = 0; y < mask.rows; ++y) {
    const uint8_t* p = mask.ptr<uint8_t>(y);
    int first = -1, last = -1;
    for (int x = 0; x < mask.cols; ++x)
      if (p[x]) {
        if (first < 0) first = x;
        last = x;
      }
    if (first < 0) continue;
    if (top < 0) top = y;
    bottom = y;
    left = std::min<int64_t>(left, first);
    right = std::max<int64_t>(right, last);
  }
  if (top < 0) return {0, 0, 0, 0};
  return {left, top, right, bottom};
}

CropMask encode_crop_mask(const cv::Mat& m, int64_t x0, int64_t y0, int h, int w) {
  if (m.type() != CV_8UC1 || x0 < 0 || y0 < 0 || x0 + m.cols > w || y0 + m.rows > h)
    throw Error("encode_crop_mask: the crop does not fit the image");
  cv::Mat t;
  cv::transpose(m, t);  // rows of t are the crop's columns: the column-major walk
  CropMask out;
  out.rle.h = h;
  out.rle.w = w;
  auto& counts = out.rle.counts;
  uint8_t cur = 0;
  uint64_t run = 0;
  auto add = [&](uint8_t v, uint64_t n) {
    if (n == 0) return;
    if (v != cur) {
      counts.push_back(uint32_t(run));
      cur = v;
      run = 0;
    }
    run += n;
  };
  int64_t top = -1, bottom = -1, left = -1, right = -1;
  add(0, uint64_t(x0) * h);
  for (int c = 0; c < t.rows; ++c) {
    add(0, uint64_t(y0));
    const uint8_t* p = t.ptr<uint8_t>(c);
    for (int r = 0; r < t.cols; ++r) {
      const uint8_t v = p[r] != 0;
      if (v) {
        if (left < 0) left = c;
        right = c;
        if (top < 0 || r < top) top = r;
        if (r > bottom) bottom = r;
      }
      if (v == cur) {
        ++run;
      } else {
        counts.push_back(uint32_t(run));
        cur = v;
        run = 1;
      }
    }
    add(0, uint64_t(h - y0 - m.rows));
  }
  add(0, uint64_t(w - x0 - m.cols) * h);
  counts.push_back(uint32_t(run));
  if (left >= 0) out.box = {left, top, right, bottom};
  return out;
}

bool near_crop_edge(const BoxXYXY& b, const BoxXYXY& crop, int64_t orig_w, int64_t orig_h, double atol) {
  const float offs[4] = {float(crop[0]), float(crop[1]), float(crop[0]), float(crop[1])};
  const float orig[4] = {0.0f, 0.0f, float(orig_w), float(orig_h)};
  for (int k = 0; k < 4; ++k) {
    const float v = float(b[k]) + offs[k];  // uncrop_boxes_xyxy, then .float()
    // torch.isclose with rtol 0: |a - b| <= atol.
    const bool near_crop = std::abs(double(v) - double(float(crop[k]))) <= atol;
    const bool near_image = std::abs(double(v) - double(orig[k])) <= atol;
    if (near_crop && !near_image) return true;
  }
  return false;
}

std::pair<cv::Mat, bool> remove_small_regions(const cv::Mat& mask01, double area_thresh, bool holes) {
  cv::Mat working;
  if (holes)
    working = (mask01 == 0) / 255;
  else
    working = (mask01 != 0) / 255;
  cv::Mat labels, stats, centroids;
  const int n = cv::connectedComponentsWithStats(working, labels, stats, centroids, 8, CV_32S);
  std::vector<int> small;
  for (int i = 1; i < n; ++i)
    if (double(stats.at<int>(i, cv::CC_STAT_AREA)) < area_thresh) small.push_back(i);
  if (small.empty()) return {mask01, false};
  std::vector<uint8_t> fill(n, 0);
  fill[0] = 1;
  for (int i : small) fill[i] = 1;
  if (!holes) {
    bool any = false;
    for (int i = 0; i < n; ++i) {
      fill[i] = !fill[i];
      any = any || fill[i];
    }
    if (!any) {  // every island is small: keep the largest (the first of equal ones)
      int best = 1;
      for (int i = 2; i < n; ++i)
        if (stats.at<int>(i, cv::CC_STAT_AREA) > stats.at<int>(best, cv::CC_STAT_AREA)) best = i;
      fill[best] = 1;
    }
  }
  cv::Mat out(mask01.size(), CV_8UC1);
  for (int y = 0; y < out.rows; ++y) {
    const int* l = labels.ptr<int>(y);
    uint8_t* o = out.ptr<uint8_t>(y);
    for (int x = 0; x < out.cols; ++x) o[x] = fill[l[x]];
  }
  return {out, true};
}

void postprocess_small_regions(std::vector<MaskRecord>& records, int64_t min_area, double nms_thresh) {
  if (records.empty()) return;
  std::vector<cv::Mat> masks(records.size());
  std::vector<float> scores(records.size());
  std::vector<BoxXYXY> boxes(records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    cv::Mat m = data::rle_decode(records[i].rle);
    auto [m1, changed_holes] = remove_small_regions(m, double(min_area), true);
    auto [m2, changed_islands] = remove_small_regions(m1, double(min_area), false);
    masks[i] = m2;
    // Unchanged masks score 1, changed 0, so NMS prefers the former.
    scores[i] = (changed_holes || changed_islands) ? 0.0f : 1.0f;
    boxes[i] = mask_to_box(m2);
  }
  const auto keep = batched_nms(boxes, scores, nms_thresh);
  std::vector<MaskRecord> out;
  out.reserve(keep.size());
  for (int64_t k : keep) {
    MaskRecord r = std::move(records[k]);
    if (scores[k] == 0.0f) {
      r.rle = data::rle_encode(masks[k]);
      r.area = int64_t(data::rle_area(r.rle));
      const auto& b = boxes[k];
      r.bbox = {b[0], b[1], b[2] - b[0], b[3] - b[1]};
    }
    out.push_back(std::move(r));
  }
  records = std::move(out);
}

}  // namespace rsam::amg
