// Preprocess: attribute parsing, frame geometry and the graph rewrite that
// puts the op in front of a model input (see ir/preprocess.h).
#include "ir/preprocess.h"

#include <cmath>

#include "core/checked_math.h"
#include "ir/infer.h"

namespace engine {

PreprocessSpec preprocess_spec(const Node& node) {
  const std::string d = node.describe();
  PreprocessSpec s;
  const std::string color = node.attr_string("color", "rgb");
  ENGINE_ENFORCE(color == "rgb" || color == "bgr" || color == "nv12", kInvalidModel, d,
                 ": color must be 'rgb', 'bgr' or 'nv12', got '", color, "'");
  s.bgr = color == "bgr";
  s.nv12 = color == "nv12";
  const std::string mode = node.attr_string("resize_mode", "none");
  const std::vector<int64_t> size = node.attr_ints("size");
  auto check_sizes = [&](const char* attr, const std::vector<int64_t>& v) {
    for (int64_t x : v)
      ENGINE_ENFORCE(x >= 1 && x <= kMaxDim, kInvalidModel, d, ": ", attr, " ", shape_str(v),
                     " is out of range: each entry must be in [1, ", kMaxDim, "]");
  };
  check_sizes("size", size);
  if (mode == "none") {
    ENGINE_ENFORCE(size.empty(), kInvalidModel, d, ": resize_mode 'none' takes no size");
  } else if (mode == "exact") {
    ENGINE_ENFORCE(size.size() == 2, kInvalidModel, d, ": resize_mode 'exact' needs size [h, w]");
    s.resize = PreprocessSpec::Resize::kExact;
    s.size_h = size[0];
    s.size_w = size[1];
  } else if (mode == "shorter") {
    ENGINE_ENFORCE(size.size() == 1, kInvalidModel, d, ": resize_mode 'shorter' needs size [s]");
    s.resize = PreprocessSpec::Resize::kShorter;
    s.size_h = s.size_w = size[0];
  } else {
    fail(ErrorKind::kInvalidModel, d, ": resize_mode must be 'none', 'exact' or 'shorter', got '", mode, "'");
  }
  const std::string interp = node.attr_string("interpolation", "bilinear");
  ENGINE_ENFORCE(interp == "bilinear" || interp == "nearest", kInvalidModel, d,
                 ": interpolation must be 'bilinear' or 'nearest', got '", interp, "'");
  s.nearest = interp == "nearest";
  s.antialias = node.attr_int("antialias", 0) != 0;
  const std::vector<int64_t> crop = node.attr_ints("crop");
  ENGINE_ENFORCE(crop.empty() || crop.size() == 2, kInvalidModel, d, ": crop must be [] or [h, w]");
  check_sizes("crop", crop);
  if (!crop.empty()) {
    s.crop_h = crop[0];
    s.crop_w = crop[1];
  }
  const std::vector<float> mean = node.attr_floats("mean", {0.f, 0.f, 0.f});
  const std::vector<float> stdv = node.attr_floats("std", {1.f, 1.f, 1.f});
  ENGINE_ENFORCE(mean.size() == 3 && stdv.size() == 3, kInvalidModel, d, ": mean and std need 3 values each");
  for (int c = 0; c < 3; ++c) {
    ENGINE_ENFORCE(std::isfinite(mean[c]), kInvalidModel, d, ": mean must be finite");
    ENGINE_ENFORCE(std::isfinite(stdv[c]) && stdv[c] > 0, kInvalidModel, d, ": std must be finite and > 0");
    s.mean[c] = mean[c];
    s.std[c] = stdv[c];
  }
  const std::string layout = node.attr_string("layout", "NCHW");
  ENGINE_ENFORCE(layout == "NCHW" || layout == "NCTHW", kInvalidModel, d, ": layout must be 'NCHW' or 'NCTHW', got '",
                 layout, "'");
  s.video = layout == "NCTHW";
  return s;
}

namespace {

// Python's round() of d / 2 for d >= 0: halves go to the even neighbour
// (torchvision's CenterCrop computes int(round((H - h) / 2.0))).
int64_t half_round_even(int64_t d) {
  const int64_t k = d / 2;
  if (d % 2 == 0) return k;
  return k % 2 == 0 ? k : k + 1;
}

}  // namespace

FrameDims frame_dims(const PreprocessSpec& s, const Shape& x, const std::string& what) {
  FrameDims f;
  if (s.nv12) {
    const size_t rank = s.video ? 4 : 3;
    ENGINE_ENFORCE(x.size() == rank, kShape, what, " must be NV12 frames ",
                   s.video ? "[N, T, H * 3 / 2, W]" : "[N, H * 3 / 2, W]", " (uint8), got shape ", shape_str(x));
    const int64_t rows = x[rank - 2];
    f.w = x[rank - 1];
    ENGINE_ENFORCE(rows < 0 || rows % 6 == 0, kShape, what, ": NV12 frames have H * 3 / 2 rows with H even, got ",
                   rows, " rows (shape ", shape_str(x), ")");
    ENGINE_ENFORCE(f.w < 0 || f.w % 2 == 0, kShape, what, ": NV12 frames need an even width, got ", f.w);
    if (rows >= 0) f.h = rows / 3 * 2;
    return f;
  }
  const size_t rank = s.video ? 5 : 4;
  ENGINE_ENFORCE(x.size() == rank, kShape, what, " must have shape ", s.video ? "[N, T, H, W, 3]" : "[N, H, W, 3]",
                 ", got ", shape_str(x));
  ENGINE_ENFORCE(x[rank - 1] < 0 || x[rank - 1] == 3, kShape, what,
                 " must have 3 channels (RGB or BGR, last axis), got shape ", shape_str(x));
  f.h = x[rank - 3];
  f.w = x[rank - 2];
  return f;
}

PreprocessGeometry preprocess_geometry(const PreprocessSpec& s, int64_t h, int64_t w, const std::string& what) {
  ENGINE_ENFORCE(h > 0 && w > 0, kShape, what, ": frames of ", h, "x", w, " pixels are empty");
  PreprocessGeometry g;
  switch (s.resize) {
    case PreprocessSpec::Resize::kNone:
      g.resized_h = h;
      g.resized_w = w;
      break;
    case PreprocessSpec::Resize::kExact:
      g.resized_h = s.size_h;
      g.resized_w = s.size_w;
      break;
    case PreprocessSpec::Resize::kShorter: {
      // torchvision: new_long = int(size * long / short); the product is an
      // exact integer and one IEEE division rounds it as Python does.
      const int64_t shorter = std::min(h, w), longer = std::max(h, w);
      int64_t prod = 0;
      ENGINE_ENFORCE(checked_mul(s.size_h, longer, &prod) && prod < (int64_t{1} << 53), kShape, what,
                     ": frames of ", h, "x", w, " are too large to resize");
      const int64_t resized_long = static_cast<int64_t>(static_cast<double>(prod) / static_cast<double>(shorter));
      ENGINE_ENFORCE(resized_long <= kMaxDim, kShape, what, ": frames of ", h, "x", w, " resize to more than ",
                     kMaxDim, " pixels a side");
      if (w <= h) {
        g.resized_w = s.size_h;
        g.resized_h = resized_long;
      } else {
        g.resized_h = s.size_h;
        g.resized_w = resized_long;
      }
      break;
    }
  }
  if (s.crop_h > 0) {
    ENGINE_ENFORCE(s.crop_h <= g.resized_h && s.crop_w <= g.resized_w, kShape, what, ": a frame of ", h, "x", w,
                   s.resize == PreprocessSpec::Resize::kNone ? "" : str_cat(" resizes to ", g.resized_h, "x", g.resized_w, ","),
                   " smaller than the crop ", s.crop_h, "x", s.crop_w);
    g.top = half_round_even(g.resized_h - s.crop_h);
    g.left = half_round_even(g.resized_w - s.crop_w);
    g.out_h = s.crop_h;
    g.out_w = s.crop_w;
  } else {
    g.out_h = g.resized_h;
    g.out_w = g.resized_w;
  }
  return g;
}

Node* insert_preprocess(Graph& g, const std::string& input, Attributes attrs) {
  Value* x = g.find_value(input);
  if (!x || !x->is_graph_input()) {
    std::string names;
    for (Value* v : g.inputs()) names += (names.empty() ? "'" : ", '") + v->name() + "'";
    fail(ErrorKind::kInvalidArgument, "preprocess: the model has no input named '", input, "' (its inputs: ", names,
         ")");
  }
  const std::string what = str_cat("preprocess for model input '", input, "'");
  ENGINE_ENFORCE(x->dtype() == DType::kFloat32, kDType, what, ": the input is ", dtype_name(x->dtype()),
                 ", but preprocessing produces float32");
  // Validate the attributes on a scratch node before touching the graph.
  Graph scratch;
  Value* sv = scratch.add_value("frames", DType::kUInt8, nullptr);
  scratch.add_input(sv);
  const PreprocessSpec spec =
      preprocess_spec(*scratch.add_node(OpKind::kPreprocess, "preprocess", {sv}, {scratch.add_value("x", DType::kUndefined, nullptr)}, attrs));
  const size_t rank = spec.video ? 5 : 4;
  const char* layout = spec.video ? "[N, 3, T, H, W] (layout NCTHW)" : "[N, 3, H, W] (layout NCHW)";
  ENGINE_ENFORCE(x->has_shape() && x->shape().size() == rank, kShape, what, ": the input has shape ",
                 x->has_shape() ? shape_str(x->shape()) : std::string("(unknown)"), ", expected ", layout);
  const Shape xs = x->shape();
  ENGINE_ENFORCE(xs[1] == 3 || xs[1] < 0, kShape, what, ": the input has ", xs[1],
                 " channels (shape ", shape_str(xs), "), but preprocessing produces 3 (RGB)");
  const int64_t mh = xs[rank - 2], mw = xs[rank - 1];
  // Frames: batch (and clip length) from the model; H and W dynamic unless
  // the op neither resizes nor crops (then they are the model's).
  const bool passthrough = spec.resize == PreprocessSpec::Resize::kNone && spec.crop_h == 0;
  Shape fs = {xs[0]};
  if (spec.video) fs.push_back(xs[2]);
  if (spec.nv12) {
    fs.push_back(passthrough && mh >= 0 ? mh * 3 / 2 : -1);
    fs.push_back(passthrough ? mw : -1);
  } else {
    fs.push_back(passthrough ? mh : -1);
    fs.push_back(passthrough ? mw : -1);
    fs.push_back(3);
  }
  // What the op produces for frames of any size.
  int64_t oh = -1, ow = -1;
  if (spec.crop_h > 0) {
    oh = spec.crop_h;
    ow = spec.crop_w;
  } else if (spec.resize == PreprocessSpec::Resize::kExact) {
    oh = spec.size_h;
    ow = spec.size_w;
  } else if (passthrough) {
    oh = mh;
    ow = mw;
  }
  if (oh < 0 && (mh >= 0 || mw >= 0))
    fail(ErrorKind::kShape, what, ": resizing the shorter side to ", spec.size_h,
         " without a crop gives a size that follows each frame's aspect ratio, but the input needs ", mh, "x", mw,
         " (shape ", shape_str(xs), "); add crop=(", mh, ", ", mw, ") or resize to exactly (", mh, ", ", mw, ")");
  if ((mh >= 0 && oh >= 0 && mh != oh) || (mw >= 0 && ow >= 0 && mw != ow))
    fail(ErrorKind::kShape, what, ": preprocessing produces ", oh, "x", ow, " images, but the input is ", mh, "x", mw,
         " (shape ", shape_str(xs), "); make the crop (or the exact resize) ", mh, "x", mw);

  const std::string name = x->name();
  g.rename_value(x, g.unique_name(name + "_preprocessed"));
  Value* frames = g.add_value(name, DType::kUInt8, &fs);
  g.replace_input(x, frames);
  Node* n = g.add_node(OpKind::kPreprocess, g.unique_name("preprocess"), {frames}, {x}, std::move(attrs));
  g.topo_sort();
  return n;
}

}  // namespace engine
