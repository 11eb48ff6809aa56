#include "amg/amg.h"

#include <ATen/Parallel.h>
#include <opencv2/core.hpp>

#include <chrono>
#include <cmath>

#include "amg/mask_ops.h"
#include "error.h"

namespace rsam::amg {

using torch::Tensor;

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

void check_unit(double v, const char* name) {
  if (!(v >= 0.0 && v <= 1.0)) throw Error(std::string(name) + " must be in [0, 1], got " + std::to_string(v));
}

// What one crop contributes before the cross-crop NMS (official MaskData).
struct Candidate {
  data::Rle rle;
  BoxXYXY box{};  // the crop's frame until uncropped
  float iou = 0, stability = 0;
  std::array<double, 2> point{};
  BoxXYXY crop{};
};

struct CropContext {
  BoxXYXY crop;
  int64_t orig_h, orig_w;
  const AmgOptions* o;
  AmgProfile* prof;
};

// Sam::postprocess_masks of low-res logits [k, 4h, 4w] to the crop's size,
// as a contiguous CPU [k, H, W] float tensor. Written out here only to skip
// the second resize when the resized input already has the crop's size: a
// bilinear resize to the same size is an exact copy.
Tensor upsample(const Sam& model, const Tensor& low, std::pair<int64_t, int64_t> input_size,
                std::pair<int64_t, int64_t> size) {
  namespace F = torch::nn::functional;
  torch::NoGradGuard ng;
  const int64_t s = model->config.img_size;
  auto opts = F::InterpolateFuncOptions().mode(torch::kBilinear).align_corners(false);
  auto up = F::interpolate(low.unsqueeze(1), opts.size(std::vector<int64_t>{s, s}));
  using torch::indexing::Slice;
  up = up.index({"...", Slice(0, input_size.first), Slice(0, input_size.second)});
  if (input_size != size) up = F::interpolate(up, opts.size(std::vector<int64_t>{size.first, size.second}));
  return up.squeeze(1).to(torch::kCPU).contiguous();
}

// The official _process_batch for the batch's points (crop frame, float64):
// decode, IoU filter, upsample the survivors, stability filter, threshold,
// box, crop-edge rule, RLE. Appends in the official order.
void process_batch(const SamPredictor& pred, const std::vector<std::array<double, 2>>& points,
                   const CropContext& c, std::vector<Candidate>& out) {
  Sam model = pred.model();
  const auto dev = model->device();
  const auto [ch, cw] = pred.original_size();
  const auto [ih, iw] = pred.input_size();
  const int64_t n = int64_t(points.size());
  auto t0 = Clock::now();
  // apply_coords: float64 scaling to the resized input, then float32.
  auto pts = torch::empty({n, 1, 2}, torch::kFloat64);
  auto pa = pts.accessor<double, 3>();
  for (int64_t i = 0; i < n; ++i) {
    pa[i][0][0] = points[i][0] * (double(iw) / double(cw));
    pa[i][0][1] = points[i][1] * (double(ih) / double(ch));
  }
  Tensor low_res, iou;
  {
    torch::NoGradGuard ng;
    auto labels = torch::ones({n, 1}, torch::kInt32).to(dev);
    auto [sparse, dense] = model->prompt_encoder->forward(
        std::make_pair(pts.to(torch::kFloat32).to(dev), labels), std::nullopt, std::nullopt);
    std::tie(low_res, iou) = model->mask_decoder->forward(pred.embedding(), model->prompt_encoder->get_dense_pe(),
                                                          sparse, dense, /*multimask=*/true,
                                                          pred.decoder_cache().defined() ? &pred.decoder_cache() : nullptr);
  }
  const int64_t m = low_res.size(1);
  low_res = low_res.flatten(0, 1);
  const auto iou_cpu = iou.flatten().to(torch::kCPU, torch::kFloat32).contiguous();
  c.prof->decode_ms += ms_since(t0);
  c.prof->decoded += n * m;
  // The IoU filter needs no mask: applied first, so only survivors are upsampled.
  std::vector<int64_t> keep;
  const float* ip = iou_cpu.data_ptr<float>();
  for (int64_t i = 0; i < n * m; ++i)
    if (!(c.o->pred_iou_thresh > 0.0) || ip[i] > float(c.o->pred_iou_thresh)) keep.push_back(i);
  c.prof->after_iou += int64_t(keep.size());
  const float hi = float(c.o->stability_score_offset), lo = float(-c.o->stability_score_offset);
  constexpr int64_t kChunk = 16;  // masks upsampled at once: bounds memory at full resolution
  for (size_t s = 0; s < keep.size(); s += kChunk) {
    t0 = Clock::now();
    const int64_t k = std::min<int64_t>(kChunk, int64_t(keep.size() - s));
    auto idx = torch::from_blob(keep.data() + s, {k}, torch::kInt64).to(dev);
    const auto up = upsample(model, low_res.index_select(0, idx), {ih, iw}, {ch, cw});
    c.prof->upsample_ms += ms_since(t0);
    t0 = Clock::now();
    std::vector<Candidate> got(k);
    std::vector<char> ok(k, 0);
    std::vector<float> stab(k);
    const float* u0 = up.data_ptr<float>();
    const float st_thr = float(c.o->stability_score_thresh);
    const bool filter_st = c.o->stability_score_thresh > 0.0;
    at::parallel_for(0, k, 1, [&](int64_t b, int64_t e) {
      for (int64_t j = b; j < e; ++j) {
        // calculate_stability_score, threshold and mask in one pass over the logits.
        const float* u = u0 + j * ch * cw;
        const int64_t npx = ch * cw;
        int64_t n_hi = 0, n_lo = 0;
        for (int64_t i = 0; i < npx; ++i) {
          n_hi += u[i] > hi;
          n_lo += u[i] > lo;
        }
        // int32 / int32 in torch: a float32 quotient (NaN for an empty union).
        stab[j] = float(n_hi) / float(n_lo);
        if (filter_st && !(stab[j] >= st_thr)) continue;
        cv::Mat mask(int(ch), int(cw), CV_8UC1);
        uint8_t* mp = mask.ptr<uint8_t>(0);
        for (int64_t i = 0; i < npx; ++i) mp[i] = u[i] > 0.0f;
        auto enc = encode_crop_mask(mask, c.crop[0], c.crop[1], int(c.orig_h), int(c.orig_w));
        ok[j] = 2;  // passed the stability filter
        if (near_crop_edge(enc.box, c.crop, c.orig_w, c.orig_h)) continue;
        const int64_t flat = keep[s + j];
        got[j] = Candidate{std::move(enc.rle), enc.box, ip[flat], stab[j], points[flat / m], {}};
        ok[j] = 1;
      }
    });
    for (int64_t j = 0; j < k; ++j) {
      c.prof->after_stability += ok[j] != 0;
      if (ok[j] == 1) out.push_back(std::move(got[j]));
    }
    c.prof->masks_ms += ms_since(t0);
  }
}

// The official _process_crop: encode the crop, decode its grid in batches,
// NMS within the crop, return to the image's frame.
std::vector<Candidate> process_crop(SamPredictor& pred, const Image8& image, const BoxXYXY& crop,
                                    const std::vector<std::array<double, 2>>& grid, const AmgOptions& o,
                                    AmgProfile* prof, const CropEncoder& encode) {
  const int cw = int(crop[2] - crop[0]), ch = int(crop[3] - crop[1]);
  Image8 sub(cw, ch, 3);
  for (int y = 0; y < ch; ++y)
    std::copy_n(image.row(int(crop[1]) + y) + crop[0] * 3, size_t(cw) * 3, sub.row(y));
  auto t0 = Clock::now();
  if (encode)
    encode(pred, sub);
  else
    pred.set_image(sub);
  if (pred.original_size() != std::make_pair<int64_t, int64_t>(ch, cw))
    throw Error("the crop encoder set an embedding for another image size");
  prof->encode_ms += ms_since(t0);
  prof->crops++;
  // points_for_image = grid * [crop w, crop h] (float64).
  std::vector<std::array<double, 2>> pts(grid.size());
  for (size_t i = 0; i < grid.size(); ++i) pts[i] = {grid[i][0] * double(cw), grid[i][1] * double(ch)};
  prof->points += int64_t(pts.size());
  std::vector<Candidate> data;
  const CropContext ctx{crop, image.height, image.width, &o, prof};
  for (size_t b = 0; b < pts.size(); b += size_t(o.points_per_batch)) {
    const size_t e = std::min(pts.size(), b + size_t(o.points_per_batch));
    process_batch(pred, {pts.begin() + b, pts.begin() + e}, ctx, data);
  }
  prof->after_edge += int64_t(data.size());
  t0 = Clock::now();
  std::vector<BoxXYXY> boxes;
  std::vector<float> scores;
  for (const auto& d : data) {
    boxes.push_back(d.box);
    scores.push_back(d.iou);
  }
  std::vector<Candidate> kept;
  for (int64_t i : batched_nms(boxes, scores, o.box_nms_thresh)) {
    Candidate cand = std::move(data[i]);
    for (int k = 0; k < 4; ++k) cand.box[k] += crop[k % 2];
    cand.point = {cand.point[0] + double(crop[0]), cand.point[1] + double(crop[1])};
    cand.crop = crop;
    kept.push_back(std::move(cand));
  }
  prof->nms_ms += ms_since(t0);
  return kept;
}

MaskRecord to_record(Candidate&& c) {
  MaskRecord r;
  r.area = int64_t(data::rle_area(c.rle));
  r.rle = std::move(c.rle);
  r.bbox = {c.box[0], c.box[1], c.box[2] - c.box[0], c.box[3] - c.box[1]};
  r.predicted_iou = c.iou;
  r.point_coords = c.point;
  r.stability_score = c.stability;
  r.crop_box = {c.crop[0], c.crop[1], c.crop[2] - c.crop[0], c.crop[3] - c.crop[1]};
  return r;
}

}  // namespace

OutputMode parse_output_mode(const std::string& s) {
  if (s == "binary_mask") return OutputMode::BinaryMask;
  if (s == "uncompressed_rle") return OutputMode::UncompressedRle;
  if (s == "coco_rle") return OutputMode::CocoRle;
  throw Error("unknown output mode '" + s + "' (expected binary_mask, uncompressed_rle or coco_rle)");
}

std::string output_mode_name(OutputMode m) {
  switch (m) {
    case OutputMode::BinaryMask: return "binary_mask";
    case OutputMode::UncompressedRle: return "uncompressed_rle";
    case OutputMode::CocoRle: return "coco_rle";
  }
  return "";
}

void check_options(const AmgOptions& o) {
  if (o.points_per_side.has_value() == !o.point_grids.empty())
    throw Error("give exactly one of points_per_side and point_grids");
  if (o.points_per_side && *o.points_per_side < 1)
    throw Error("points_per_side must be at least 1, got " + std::to_string(*o.points_per_side));
  if (o.crop_n_layers < 0 || o.crop_n_layers > 8) throw Error("crop_n_layers must be in 0..8");
  if (o.crop_n_points_downscale_factor < 1) throw Error("crop_n_points_downscale_factor must be at least 1");
  if (o.points_per_side) {
    const double last = double(*o.points_per_side) / std::pow(double(o.crop_n_points_downscale_factor), o.crop_n_layers);
    if (int(last) < 1)
      throw Error("points_per_side " + std::to_string(*o.points_per_side) + " leaves no points in crop layer " +
                  std::to_string(o.crop_n_layers) + " after crop_n_points_downscale_factor");
    if (*o.points_per_side > 1024) throw Error("points_per_side must be at most 1024");
  } else {
    if (o.point_grids.size() < size_t(o.crop_n_layers) + 1)
      throw Error("point_grids needs one grid per crop layer (" + std::to_string(o.crop_n_layers + 1) + ")");
    for (size_t g = 0; g < o.point_grids.size(); ++g) {
      if (o.point_grids[g].empty()) throw Error("point grid " + std::to_string(g) + " has no points");
      for (const auto& p : o.point_grids[g])
        if (!(p[0] >= 0 && p[0] <= 1 && p[1] >= 0 && p[1] <= 1))
          throw Error("point grid " + std::to_string(g) + " holds a point outside [0, 1]");
    }
  }
  if (o.points_per_batch < 1) throw Error("points_per_batch must be at least 1");
  check_unit(o.pred_iou_thresh, "pred_iou_thresh");
  check_unit(o.stability_score_thresh, "stability_score_thresh");
  check_unit(o.box_nms_thresh, "box_nms_thresh");
  check_unit(o.crop_nms_thresh, "crop_nms_thresh");
  if (!(o.crop_overlap_ratio >= 0 && o.crop_overlap_ratio < 1)) throw Error("crop_overlap_ratio must be in [0, 1)");
  if (!(o.stability_score_offset >= 0 && std::isfinite(o.stability_score_offset)))
    throw Error("stability_score_offset must be a finite number >= 0");
  if (o.min_mask_region_area < 0) throw Error("min_mask_region_area must be >= 0");
}

std::vector<std::array<double, 2>> build_point_grid(int n) {
  if (n < 1) throw Error("a point grid needs at least 1 point per side");
  const double offset = 1.0 / (2.0 * n);
  // numpy.linspace(offset, 1 - offset, n): i * step + start, the last exact.
  std::vector<double> side(n);
  const double step = n > 1 ? ((1.0 - offset) - offset) / double(n - 1) : 0.0;
  for (int i = 0; i < n; ++i) side[i] = double(i) * step + offset;
  if (n > 1) side[n - 1] = 1.0 - offset;
  std::vector<std::array<double, 2>> pts;
  pts.reserve(size_t(n) * n);
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) pts.push_back({side[x], side[y]});
  return pts;
}

std::vector<std::vector<std::array<double, 2>>> build_all_layer_point_grids(int n_per_side, int n_layers, int scale) {
  std::vector<std::vector<std::array<double, 2>>> out;
  for (int i = 0; i <= n_layers; ++i) out.push_back(build_point_grid(int(double(n_per_side) / std::pow(double(scale), i))));
  return out;
}

std::vector<std::array<int64_t, 4>> generate_crop_boxes(int64_t im_h, int64_t im_w, int n_layers, double overlap_ratio,
                                                        std::vector<int>* layer_idxs) {
  std::vector<std::array<int64_t, 4>> boxes{{0, 0, im_w, im_h}};
  std::vector<int> layers{0};
  const int64_t short_side = std::min(im_h, im_w);
  auto crop_len = [](int64_t orig, int64_t n, int64_t overlap) {
    return int64_t(std::ceil(double(overlap * (n - 1) + orig) / double(n)));
  };
  for (int i = 0; i < n_layers; ++i) {
    const int64_t n = int64_t(1) << (i + 1);
    const int64_t overlap = int64_t(overlap_ratio * double(short_side) * (2.0 / double(n)));
    const int64_t cw = crop_len(im_w, n, overlap), ch = crop_len(im_h, n, overlap);
    // product(x0s, y0s): x outer, y inner.
    for (int64_t a = 0; a < n; ++a)
      for (int64_t b = 0; b < n; ++b) {
        const int64_t x0 = (cw - overlap) * a, y0 = (ch - overlap) * b;
        boxes.push_back({x0, y0, std::min(x0 + cw, im_w), std::min(y0 + ch, im_h)});
        layers.push_back(i + 1);
      }
  }
  if (layer_idxs) *layer_idxs = layers;
  return boxes;
}

std::vector<MaskRecord> generate(SamPredictor& pred, const Image8& image, const AmgOptions& o, AmgProfile* profile,
                                 const CropEncoder& encode) {
  check_options(o);
  if (image.channels != 3) throw Error("segment everything needs an RGB image (3 channels)");
  if (image.width < 1 || image.height < 1 || image.data.size() != size_t(image.width) * image.height * 3)
    throw Error("segment everything: empty image");
  AmgProfile local;
  AmgProfile* prof = profile ? profile : &local;
  const auto grids = o.points_per_side
                         ? build_all_layer_point_grids(*o.points_per_side, o.crop_n_layers, o.crop_n_points_downscale_factor)
                         : o.point_grids;
  std::vector<int> layers;
  const auto crops = generate_crop_boxes(image.height, image.width, o.crop_n_layers, o.crop_overlap_ratio, &layers);
  std::vector<Candidate> data;
  for (size_t i = 0; i < crops.size(); ++i) {
    // A crop of 0 pixels (possible on tiny images with many layers) would
    // fail in the official code; it holds no masks.
    if (crops[i][2] <= crops[i][0] || crops[i][3] <= crops[i][1]) continue;
    auto got = process_crop(pred, image, crops[i], grids[size_t(layers[i])], o, prof, encode);
    for (auto& c : got) data.push_back(std::move(c));
  }
  if (crops.size() > 1) {
    // Between crops, prefer the masks of smaller crops: score 1 / crop area.
    const auto t0 = Clock::now();
    std::vector<BoxXYXY> boxes;
    std::vector<float> scores;
    for (const auto& d : data) {
      boxes.push_back(d.box);
      scores.push_back(1.0f / float((d.crop[2] - d.crop[0]) * (d.crop[3] - d.crop[1])));
    }
    std::vector<Candidate> kept;
    for (int64_t i : batched_nms(boxes, scores, o.crop_nms_thresh)) kept.push_back(std::move(data[i]));
    data = std::move(kept);
    prof->nms_ms += ms_since(t0);
  }
  std::vector<MaskRecord> records;
  records.reserve(data.size());
  for (auto& c : data) records.push_back(to_record(std::move(c)));
  if (o.min_mask_region_area > 0) {
    const auto t0 = Clock::now();
    postprocess_small_regions(records, o.min_mask_region_area, std::max(o.box_nms_thresh, o.crop_nms_thresh));
    prof->postprocess_ms += ms_since(t0);
  }
  prof->kept = int64_t(records.size());
  return records;
}

}  // namespace rsam::amg
