// rsam._rsam: the public C++ API (include/rsam/rsam.h) for Python, NumPy in
// and out, shaped like segment_anything's SamPredictor (predictor.py): the
// same argument names, defaults, shapes and dtypes. The GIL is released
// while the model runs; rsam::Error becomes rsam.Error.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "rsam/rsam.h"

namespace py = pybind11;

namespace {

std::string shape_of(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

std::string dtype_of(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// An HxWx3 uint8 array in RGB (or BGR, reordered) as an rsam::Image.
rsam::Image to_image(const py::array& arr, const std::string& what, const std::string& format = "RGB") {
  if (format != "RGB" && format != "BGR") throw rsam::Error("image_format must be 'RGB' or 'BGR', got '" + format + "'");
  if (!arr.dtype().is(py::dtype::of<uint8_t>()))
    throw rsam::Error(what + " must be a uint8 array (HxWx3), got dtype " + dtype_of(arr));
  if (arr.ndim() != 3 || arr.shape(2) != 3)
    throw rsam::Error(what + " must be HxWx3 (RGB), got shape " + shape_of(arr));
  auto c = py::array_t<uint8_t, py::array::c_style>::ensure(arr);
  rsam::Image img;
  img.height = int(c.shape(0));
  img.width = int(c.shape(1));
  img.data.assign(c.data(), c.data() + c.size());
  if (format == "BGR")
    for (size_t i = 0; i < img.data.size(); i += 3) std::swap(img.data[i], img.data[i + 2]);
  return img;
}

// A numeric array as float32, C order, with its shape checked by the caller.
py::array_t<float, py::array::c_style> floats(const py::handle& h, const std::string& what) {
  py::array a;
  try {
    a = py::array::ensure(h);
  } catch (const py::error_already_set&) {
  }
  if (!a || !(a.dtype().kind() == 'f' || a.dtype().kind() == 'i' || a.dtype().kind() == 'u' || a.dtype().kind() == 'b'))
    throw rsam::Error(what + " must be a numeric array");
  return py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(a);
}

py::array_t<int, py::array::c_style> ints(const py::handle& h, const std::string& what) {
  auto f = floats(h, what);
  for (py::ssize_t i = 0; i < f.size(); ++i)
    if (f.data()[i] != std::floor(f.data()[i])) throw rsam::Error(what + " must hold integers (1 or 0)");
  return py::array_t<int, py::array::c_style | py::array::forcecast>::ensure(f);
}

template <class T>
py::array_t<T> to_array(const std::vector<T>& v, std::vector<py::ssize_t> shape) {
  py::array_t<T> a(shape);
  if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(T));
  return a;
}

// One prompt from predict()'s arguments (official predictor.py's checks).
// `i` selects row i of batched arrays (-1: not batched).
rsam::SegmentPrompt prompt_of(const py::object& coords, const py::object& labels, const py::object& box,
                              const py::object& mask_input, int low_res) {
  rsam::SegmentPrompt p;
  if (!coords.is_none()) {
    if (labels.is_none()) throw rsam::Error("point_labels must be supplied if point_coords is supplied");
    auto c = floats(coords, "point_coords");
    auto l = ints(labels, "point_labels");
    if (c.ndim() != 2 || c.shape(1) != 2) throw rsam::Error("point_coords must be Nx2, got shape " + shape_of(c));
    if (l.ndim() != 1 || l.shape(0) != c.shape(0))
      throw rsam::Error("point_labels must be a length-" + std::to_string(c.shape(0)) + " array, got shape " +
                        shape_of(l));
    for (py::ssize_t i = 0; i < c.shape(0); ++i) p.points.push_back({c.at(i, 0), c.at(i, 1), l.at(i)});
  } else if (!labels.is_none()) {
    throw rsam::Error("point_coords must be supplied if point_labels is supplied");
  }
  if (!box.is_none()) {
    auto b = floats(box, "box");
    if (b.size() != 4 || !(b.ndim() == 1 || (b.ndim() == 2 && b.shape(0) == 1)))
      throw rsam::Error("box must be a length-4 array (XYXY), got shape " + shape_of(b));
    p.box = rsam::Box{b.data()[0], b.data()[1], b.data()[2], b.data()[3]};
  }
  if (!mask_input.is_none()) {
    auto m = floats(mask_input, "mask_input");
    if (m.ndim() != 3 || m.shape(0) != 1 || m.shape(1) != low_res || m.shape(2) != low_res)
      throw rsam::Error("mask_input must be 1x" + std::to_string(low_res) + "x" + std::to_string(low_res) +
                        ", got shape " + shape_of(m));
    p.mask_input.assign(m.data(), m.data() + m.size());
  }
  return p;
}

// (masks, iou_predictions, low_res_masks) as the official predict returns them.
py::tuple outputs(const rsam::Masks& m, bool return_logits) {
  const std::vector<py::ssize_t> full = {m.count, m.height, m.width};
  py::array masks;
  if (return_logits) {
    masks = to_array(m.logits, full);
  } else {
    py::array_t<bool> b(full);
    static_assert(sizeof(bool) == 1, "numpy bool is one byte");
    std::memcpy(b.mutable_data(), m.masks.data(), m.masks.size());
    masks = b;
  }
  return py::make_tuple(masks, to_array(m.scores, {m.count}),
                        to_array(m.low_res_logits, {m.count, m.low_res_size, m.low_res_size}));
}

// Stacks per-prompt outputs into [B, C, ...] arrays (official predict_torch's shapes).
py::tuple stacked(const std::vector<rsam::Masks>& all, bool return_logits, int low_res) {
  const py::ssize_t n = py::ssize_t(all.size());
  const py::ssize_t c = n ? all[0].count : 0, h = n ? all[0].height : 0, w = n ? all[0].width : 0;
  py::array masks = return_logits ? py::array(py::array_t<float>({n, c, h, w})) : py::array(py::array_t<bool>({n, c, h, w}));
  py::array_t<float> iou({n, c}), low({n, c, py::ssize_t(low_res), py::ssize_t(low_res)});
  auto* mp = static_cast<uint8_t*>(masks.mutable_data());
  for (py::ssize_t i = 0; i < n; ++i) {
    const auto& m = all[size_t(i)];
    if (return_logits)
      std::memcpy(mp + i * c * h * w * 4, m.logits.data(), m.logits.size() * 4);
    else
      std::memcpy(mp + i * c * h * w, m.masks.data(), m.masks.size());
    std::memcpy(iou.mutable_data(i, 0), m.scores.data(), m.scores.size() * 4);
    std::memcpy(low.mutable_data(i, 0, 0, 0), m.low_res_logits.data(), m.low_res_logits.size() * 4);
  }
  return py::make_tuple(masks, iou, low);
}

// Row i of an optional batched array, or None.
py::object row(const py::object& a, py::ssize_t i) { return a.is_none() ? a : py::object(a[py::int_(i)]); }

struct PySamPredictor {
  py::object model_obj;  // the Python model, kept alive and returned as .model
  rsam::Predictor pred;

  PySamPredictor(const py::object& model) : model_obj(model), pred(model.cast<const rsam::Model&>()) {}

  void set_image(const py::array& image, const std::string& image_format) {
    const auto img = to_image(image, "image", image_format);
    py::gil_scoped_release nogil;
    pred.set_image(img);
  }

  py::tuple predict(const py::object& coords, const py::object& labels, const py::object& box,
                    const py::object& mask_input, bool multimask_output, bool return_logits) {
    if (!pred.is_image_set()) throw rsam::Error("An image must be set with .set_image(...) before mask prediction.");
    const auto p = prompt_of(coords, labels, box, mask_input, pred.low_res_size());
    rsam::Masks m;
    {
      py::gil_scoped_release nogil;
      m = pred.predict(p, multimask_output, return_logits);
    }
    return outputs(m, return_logits);
  }

  // Batched prompts: point_coords [B,N,2], point_labels [B,N], boxes [B,4],
  // mask_input [B,1,S,S]; any may be None but not all.
  py::tuple predict_batch(const py::object& coords, const py::object& labels, const py::object& boxes,
                          const py::object& mask_input, bool multimask_output, bool return_logits) {
    if (!pred.is_image_set()) throw rsam::Error("An image must be set with .set_image(...) before mask prediction.");
    py::ssize_t n = -1;
    for (const auto& [a, name] : {std::pair{coords, "point_coords"}, {labels, "point_labels"}, {boxes, "boxes"},
                                  {mask_input, "mask_input"}}) {
      if (a.is_none()) continue;
      const auto arr = floats(a, name);
      if (arr.ndim() < 1) throw rsam::Error(std::string(name) + " must be batched (first axis: the prompts)");
      if (n >= 0 && arr.shape(0) != n)
        throw rsam::Error("batched prompts disagree on the batch size (" + std::to_string(n) + " vs " +
                          std::to_string(arr.shape(0)) + " in " + name + ")");
      n = arr.shape(0);
    }
    if (n < 0) throw rsam::Error("give point_coords, boxes or mask_input");
    std::vector<rsam::SegmentPrompt> ps;
    for (py::ssize_t i = 0; i < n; ++i)
      ps.push_back(prompt_of(row(coords, i), row(labels, i), row(boxes, i), row(mask_input, i), pred.low_res_size()));
    std::vector<rsam::Masks> all;
    {
      py::gil_scoped_release nogil;
      all = pred.predict_batch(ps, multimask_output, return_logits);
    }
    return stacked(all, return_logits, pred.low_res_size());
  }

  py::array get_image_embedding() {
    rsam::Embedding e;
    {
      py::gil_scoped_release nogil;
      e = pred.get_image_embedding();
    }
    return to_array(e.data, {1, e.channels, e.height, e.width});
  }
};

struct PyAmg {
  py::object model_obj;
  std::string mode;
  std::optional<rsam::AutomaticMaskGenerator> gen;

  PyAmg(py::object model, std::optional<int> points_per_side, int points_per_batch, double pred_iou_thresh,
        double stability_score_thresh, double stability_score_offset, double box_nms_thresh, int crop_n_layers,
        double crop_nms_thresh, double crop_overlap_ratio, int crop_n_points_downscale_factor,
        const py::object& point_grids, int64_t min_mask_region_area, const std::string& output_mode)
      : model_obj(model), mode(output_mode) {
    rsam::AutoMaskOptions o;
    o.points_per_side = points_per_side;
    if (!point_grids.is_none())
      for (const auto& g : point_grids) {
        auto a = floats(g, "point_grids");
        if (a.ndim() != 2 || a.shape(1) != 2) throw rsam::Error("each of point_grids must be Nx2, got shape " + shape_of(a));
        std::vector<std::array<double, 2>> grid;
        for (py::ssize_t i = 0; i < a.shape(0); ++i) grid.push_back({a.at(i, 0), a.at(i, 1)});
        o.point_grids.push_back(grid);
      }
    o.points_per_batch = points_per_batch;
    o.pred_iou_thresh = pred_iou_thresh;
    o.stability_score_thresh = stability_score_thresh;
    o.stability_score_offset = stability_score_offset;
    o.box_nms_thresh = box_nms_thresh;
    o.crop_n_layers = crop_n_layers;
    o.crop_nms_thresh = crop_nms_thresh;
    o.crop_overlap_ratio = crop_overlap_ratio;
    o.crop_n_points_downscale_factor = crop_n_points_downscale_factor;
    o.min_mask_region_area = min_mask_region_area;
    o.output_mode = output_mode;
    gen.emplace(model.cast<const rsam::Model&>(), o);
  }

  // The official record dicts (automatic_mask_generator.py generate()).
  py::list generate(const py::array& image) {
    const auto img = to_image(image, "image");
    std::vector<rsam::AutoMask> masks;
    {
      py::gil_scoped_release nogil;
      masks = gen->generate(img);
    }
    py::list out;
    for (const auto& m : masks) {
      py::object seg;
      if (mode == "binary_mask") {
        py::array_t<bool> b({py::ssize_t(m.height), py::ssize_t(m.width)});
        std::memcpy(b.mutable_data(), m.segmentation.data(), m.segmentation.size());
        seg = b;
      } else {
        py::object counts = mode == "coco_rle" ? py::object(py::str(m.coco_counts)) : py::object(py::cast(m.rle_counts));
        seg = py::dict(py::arg("size") = std::vector<int>{m.height, m.width}, py::arg("counts") = counts);
      }
      py::list point;
      point.append(py::cast(std::vector<double>{m.point_coords[0], m.point_coords[1]}));
      out.append(py::dict(py::arg("segmentation") = seg, py::arg("area") = m.area,
                          py::arg("bbox") = std::vector<int64_t>(m.bbox.begin(), m.bbox.end()),
                          py::arg("predicted_iou") = m.predicted_iou, py::arg("point_coords") = point,
                          py::arg("stability_score") = m.stability_score,
                          py::arg("crop_box") = std::vector<int64_t>(m.crop_box.begin(), m.crop_box.end())));
    }
    return out;
  }
};

}  // namespace

PYBIND11_MODULE(_rsam, m) {
  m.doc() = "rsam: Segment Anything that keeps working on degraded images (C++ core)";
  py::register_exception<rsam::Error>(m, "Error", PyExc_RuntimeError);
  m.attr("__version__") = rsam::version();

  py::class_<rsam::Model>(m, "Model", "A loaded SAM with its adapter, if any (rsam.load).")
      .def("load_adapter", &rsam::Model::load_adapter, py::arg("path"), py::call_guard<py::gil_scoped_release>(),
           "Attach an adapter file trained on this model's weights.")
      .def("load_enhancer", &rsam::Model::load_enhancer, py::arg("path"), py::call_guard<py::gil_scoped_release>(),
           "Attach a GleSAM enhancer (its JSON file), after any adapter.")
      .def(
          "to",
          [](py::object self, const std::string& device) {
            self.cast<rsam::Model&>().to(device);
            return self;
          },
          py::arg("device"), "Move the weights to a torch device ('cpu', 'cuda'); returns the model.")
      .def_property_readonly("type", &rsam::Model::type)
      .def_property_readonly("image_size", &rsam::Model::image_size)
      .def_property_readonly("adapter", &rsam::Model::adapter)
      .def_property_readonly("enhancer", &rsam::Model::enhancer)
      .def_property_readonly("checkpoint", &rsam::Model::checkpoint)
      .def_property_readonly("device", &rsam::Model::device)
      .def_property_readonly("precision", &rsam::Model::precision)
      .def("__repr__", [](const rsam::Model& x) {
        return "<rsam.Model " + x.type() + (x.adapter().empty() ? "" : " + " + x.adapter()) + " on " + x.device() + ">";
      });

  m.def(
      "load",
      [](const std::optional<std::string>& checkpoint, const std::optional<std::string>& adapter, bool no_adapter,
         const std::optional<std::string>& enhancer, const std::string& device, const std::string& precision) {
        rsam::ModelOptions o;
        o.checkpoint = checkpoint.value_or("");
        o.adapter = adapter.value_or("");
        o.no_adapter = no_adapter;
        o.enhancer = enhancer.value_or("");
        o.device = device;
        o.precision = precision;
        return rsam::Model::load(o);
      },
      py::arg("checkpoint") = py::none(), py::arg("adapter") = py::none(), py::arg("no_adapter") = false,
      py::arg("enhancer") = py::none(), py::arg("device") = "cpu", py::arg("precision") = "fp32", py::call_guard<py::gil_scoped_release>(),
      "Load a SAM checkpoint (.pth or .safetensors); None: the bundled rsam-tiny with its GaRA adapter.");

  py::class_<PySamPredictor>(m, "SamPredictor", "segment_anything.SamPredictor over rsam's C++ predictor.")
      .def(py::init<py::object>(), py::arg("sam_model"))
      .def("set_image", &PySamPredictor::set_image, py::arg("image"), py::arg("image_format") = "RGB",
           "Encode an HxWx3 uint8 image (RGB, or BGR with image_format='BGR').")
      .def("predict", &PySamPredictor::predict, py::arg("point_coords") = py::none(),
           py::arg("point_labels") = py::none(), py::arg("box") = py::none(), py::arg("mask_input") = py::none(),
           py::arg("multimask_output") = true, py::arg("return_logits") = false,
           "-> (masks [C,H,W] bool, iou_predictions [C] float32, low_res_masks [C,256,256] float32)")
      .def("predict_batch", &PySamPredictor::predict_batch, py::arg("point_coords") = py::none(),
           py::arg("point_labels") = py::none(), py::arg("boxes") = py::none(), py::arg("mask_input") = py::none(),
           py::arg("multimask_output") = true, py::arg("return_logits") = false,
           "Many prompts (official predict_torch, NumPy in original-image pixels): "
           "-> (masks [B,C,H,W], iou_predictions [B,C], low_res_masks [B,C,256,256])")
      .def("get_image_embedding", &PySamPredictor::get_image_embedding, "-> float32 [1, 256, 64, 64] for SAM")
      .def("reset_image", [](PySamPredictor& p) { p.pred.reset_image(); })
      .def_property_readonly("is_image_set", [](const PySamPredictor& p) { return p.pred.is_image_set(); })
      .def_property_readonly("original_size",
                             [](const PySamPredictor& p) {
                               return py::make_tuple(p.pred.original_height(), p.pred.original_width());
                             })
      .def_property_readonly("model", [](const PySamPredictor& p) { return p.model_obj; });

  py::class_<PyAmg>(m, "SamAutomaticMaskGenerator",
                    "segment_anything.SamAutomaticMaskGenerator over rsam's C++ generator (same arguments).")
      .def(py::init<py::object, std::optional<int>, int, double, double, double, double, int, double, double, int,
                    const py::object&, int64_t, const std::string&>(),
           py::arg("model"), py::arg("points_per_side") = 32, py::arg("points_per_batch") = 64,
           py::arg("pred_iou_thresh") = 0.88, py::arg("stability_score_thresh") = 0.95,
           py::arg("stability_score_offset") = 1.0, py::arg("box_nms_thresh") = 0.7, py::arg("crop_n_layers") = 0,
           py::arg("crop_nms_thresh") = 0.7, py::arg("crop_overlap_ratio") = 512.0 / 1500.0,
           py::arg("crop_n_points_downscale_factor") = 1, py::arg("point_grids") = py::none(),
           py::arg("min_mask_region_area") = 0, py::arg("output_mode") = "binary_mask")
      .def("generate", &PyAmg::generate, py::arg("image"),
           "-> list of dicts: segmentation, area, bbox (XYWH), predicted_iou, point_coords, stability_score, crop_box");

  m.def(
      "list_corruptions",
      [] {
        std::vector<std::string> names;
        for (const auto& c : rsam::list_corruptions()) names.push_back(c.name);
        return names;
      },
      "Names of the corruptions rsam.degrade knows.");
  m.def(
      "corruption_info",
      [] {
        py::list out;
        for (const auto& c : rsam::list_corruptions())
          out.append(py::dict(py::arg("name") = c.name, py::arg("group") = c.group, py::arg("summary") = c.summary,
                              py::arg("geometric") = c.geometric, py::arg("stochastic") = c.stochastic));
        return out;
      },
      "One dict per corruption: name, group, summary, geometric, stochastic.");
  m.def(
      "degrade",
      [](const py::array& image, const std::string& corruption, int severity, uint64_t seed) {
        const auto img = to_image(image, "image");
        rsam::Image out;
        {
          py::gil_scoped_release nogil;
          out = rsam::degrade_image(img, corruption, severity, seed);
        }
        return to_array(out.data, {out.height, out.width, 3});
      },
      py::arg("image"), py::arg("corruption"), py::arg("severity") = 3, py::arg("seed") = 0,
      "The HxWx3 uint8 RGB image corrupted (severity 1..5); same arguments, same bytes.");
}
