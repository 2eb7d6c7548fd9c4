// Shape inference for the shape_ops family (see ir/infer.h for the contract).
//
// These functions carry the plan-time shape arithmetic of PyTorch exports
// (Shape -> Gather -> Unsqueeze -> Concat -> Reshape): Shape and Constant set
// their output *value* here, so the executor never runs them; the other ops
// only compute shapes, and the executor runs their kernels on the known
// values. Every output dim is concrete when the input dims and the values it
// depends on are known, and -1 otherwise (static inference), never a guess.
// Rank is reported whenever it is known even if no dim is; an output whose
// rank cannot be known gets has_shape = false.
#include <algorithm>
#include <cmath>
#include <limits>

#include "ir/infer.h"

namespace engine {
namespace {

// -- helpers ----------------------------------------------------------------

bool has_value(const InferContext& ctx, int i) { return ctx.has_input(i) && ctx.input(i).value != nullptr; }

std::vector<int64_t> values_of(const InferContext& ctx, int i) { return ctx.input(i).value->to_int_vector(); }

// Number of elements of a 1-D input whose contents are unknown, or -1.
int64_t length_of_1d(const InferContext& ctx, int i) {
  if (!ctx.has_input(i)) return -1;
  const ValueInfo& v = ctx.input(i);
  if (!v.has_shape || v.rank() != 1) return -1;
  return v.shape[0];
}

// Product of dims [b, e); -1 when any of them is unknown. Overflow fails.
int64_t dim_product(const InferContext& ctx, const Shape& s, int64_t b, int64_t e) {
  int64_t p = 1;
  for (int64_t i = b; i < e; ++i) {
    if (s[i] < 0) return -1;
    p = ctx.mul(p, s[i]);
  }
  return p;
}

// A dim computed in floating point (Resize, Range): NaN, negative or above
// kMaxDim fails instead of reaching an undefined float -> int64 conversion.
int64_t float_to_dim(const InferContext& ctx, double v, const char* what) {
  if (!(v >= 0) || v > static_cast<double>(kMaxDim))
    ctx.fail(what, " gives the output dim ", v, ", outside [0, ", kMaxDim, "]");
  return static_cast<int64_t>(v);
}

ValueInfo unknown_rank(DType t) {
  ValueInfo v;
  v.dtype = t;
  return v;
}

ValueInfo unknown_dims(DType t, int64_t rank) { return ValueInfo::of(t, Shape(static_cast<size_t>(rank), -1)); }

// Normalizes a list of axes for `rank` and rejects duplicates.
std::vector<int64_t> normalize_axes(const InferContext& ctx, std::vector<int64_t> axes, int64_t rank) {
  std::vector<char> seen(static_cast<size_t>(rank), 0);
  for (int64_t& a : axes) {
    a = normalize_axis(ctx, a, rank);
    if (seen[a]) ctx.fail("axis ", a, " appears twice");
    seen[a] = 1;
  }
  return axes;
}

// Axes given either as attribute (older opsets) or as input `index`:
// returns 1 and fills `axes` when known, 0 when absent, -1 when given as an
// input whose value is unknown.
int axes_attr_or_input(const InferContext& ctx, int index, std::vector<int64_t>* axes) {
  if (ctx.has_input(index)) {
    if (!has_value(ctx, index)) return -1;
    *axes = values_of(ctx, index);
    return 1;
  }
  if (ctx.node().has_attr("axes")) {
    *axes = ctx.node().attr_ints("axes");
    return 1;
  }
  return 0;
}

// -- reshaping ops ----------------------------------------------------------

void infer_flatten(InferContext& ctx) {
  const ValueInfo& x = ctx.input(0);
  if (!x.has_shape) {
    ctx.output(0) = unknown_dims(x.dtype, 2);
    return;
  }
  int64_t r = x.rank();
  int64_t axis = ctx.node().attr_int("axis", 1);
  if (axis < -r || axis > r) ctx.fail("axis ", axis, " is out of range for rank ", r);
  if (axis < 0) axis += r;
  ctx.output(0) = ValueInfo::of(x.dtype, {dim_product(ctx, x.shape, 0, axis), dim_product(ctx, x.shape, axis, r)});
}

void infer_reshape(InferContext& ctx) {
  const ValueInfo& x = ctx.input(0);
  bool allowzero = ctx.node().attr_int("allowzero", 0) != 0;
  if (!has_value(ctx, 1)) {
    int64_t n = length_of_1d(ctx, 1);
    ctx.output(0) = n >= 0 ? unknown_dims(x.dtype, n) : unknown_rank(x.dtype);
    return;
  }
  std::vector<int64_t> s = values_of(ctx, 1);
  Shape out(s.size());
  int infer_at = -1;
  bool has_zero = false;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      if (infer_at >= 0) ctx.fail("the shape ", shape_str(s), " has more than one -1");
      infer_at = static_cast<int>(i);
      out[i] = -1;
    } else if (s[i] == 0 && !allowzero) {
      if (x.has_shape && static_cast<int>(i) >= x.rank())
        ctx.fail("the shape ", shape_str(s), " copies dim ", i, " (0) but the input has rank ", x.rank());
      out[i] = x.has_shape ? x.shape[i] : -1;
    } else if (s[i] < 0) {
      ctx.fail("the shape contains the invalid dim ", s[i]);
    } else {
      has_zero = has_zero || s[i] == 0;
      out[i] = s[i];
    }
  }
  if (has_zero && infer_at >= 0) ctx.fail("with allowzero=1 the shape cannot contain both 0 and -1");
  int64_t in_numel = x.has_shape ? dim_product(ctx, x.shape, 0, x.rank()) : -1;
  if (infer_at >= 0) {
    int64_t rest = 1;
    for (size_t i = 0; i < out.size() && rest >= 0; ++i)
      if (static_cast<int>(i) != infer_at) rest = out[i] < 0 ? -1 : ctx.mul(rest, out[i]);
    if (in_numel >= 0 && rest >= 0) {
      if (rest == 0 || in_numel % rest != 0)
        ctx.fail("cannot reshape ", shape_str(x.shape), " to ", shape_str(s));
      out[infer_at] = in_numel / rest;
    }
  } else if (in_numel >= 0) {
    int64_t out_numel = dim_product(ctx, out, 0, static_cast<int64_t>(out.size()));
    if (out_numel >= 0 && out_numel != in_numel)
      ctx.fail("cannot reshape ", shape_str(x.shape), " (", in_numel, " elements) to ", shape_str(s));
  }
  ctx.output(0) = ValueInfo::of(x.dtype, out);
}

void infer_squeeze(InferContext& ctx) {
  const ValueInfo& x = ctx.input(0);
  std::vector<int64_t> axes;
  int have = axes_attr_or_input(ctx, 1, &axes);
  if (!x.has_shape) {
    ctx.output(0) = unknown_rank(x.dtype);
    return;
  }
  if (have < 0) {
    int64_t n = length_of_1d(ctx, 1);
    ctx.output(0) = n >= 0 ? unknown_dims(x.dtype, x.rank() - n) : unknown_rank(x.dtype);
    return;
  }
  Shape out;
  if (have == 0) {
    // Every dim of size 1 goes; an unknown dim might be 1, so the rank is unknown.
    for (int64_t d : x.shape) {
      if (d < 0) {
        ctx.output(0) = unknown_rank(x.dtype);
        return;
      }
      if (d != 1) out.push_back(d);
    }
  } else {
    axes = normalize_axes(ctx, axes, x.rank());
    std::vector<char> drop(static_cast<size_t>(x.rank()), 0);
    for (int64_t a : axes) {
      if (x.shape[a] >= 0 && x.shape[a] != 1) ctx.fail("cannot squeeze axis ", a, " of size ", x.shape[a]);
      drop[a] = 1;
    }
    for (int i = 0; i < x.rank(); ++i)
      if (!drop[i]) out.push_back(x.shape[i]);
  }
  ctx.output(0) = ValueInfo::of(x.dtype, out);
}

void infer_unsqueeze(InferContext& ctx) {
  const ValueInfo& x = ctx.input(0);
  std::vector<int64_t> axes;
  int have = axes_attr_or_input(ctx, 1, &axes);
  if (have == 0) ctx.fail("axes are missing");
  if (!x.has_shape) {
    ctx.output(0) = unknown_rank(x.dtype);
    return;
  }
  if (have < 0) {
    int64_t n = length_of_1d(ctx, 1);
    ctx.output(0) = n >= 0 ? unknown_dims(x.dtype, x.rank() + n) : unknown_rank(x.dtype);
    return;
  }
  int64_t r = x.rank() + static_cast<int64_t>(axes.size());
  axes = normalize_axes(ctx, axes, r);
  std::vector<char> ins(static_cast<size_t>(r), 0);
  for (int64_t a : axes) ins[a] = 1;
  Shape out;
  size_t k = 0;
  for (int64_t i = 0; i < r; ++i) out.push_back(ins[i] ? 1 : x.shape[k++]);
  ctx.output(0) = ValueInfo::of(x.dtype, out);
}

void infer_identity(InferContext& ctx) { ctx.output(0) = ctx.input(0); }

void infer_dropout(InferContext& ctx) {
  ctx.output(0) = ctx.input(0);
  ctx.output(0).value = nullptr;
  if (ctx.num_outputs() > 1) {
    ctx.output(1) = ctx.input(0);
    ctx.output(1).dtype = DType::kBool;
    ctx.output(1).value = nullptr;
  }
}

void infer_transpose(InferContext& ctx) {
  const ValueInfo& x = ctx.input(0);
  bool has_perm = ctx.node().has_attr("perm");
  std::vector<int64_t> perm = ctx.node().attr_ints("perm");
  if (!x.has_shape) {
    ctx.output(0) = has_perm ? unknown_dims(x.dtype, static_cast<int64_t>(perm.size())) : unknown_rank(x.dtype);
    return;
  }
  int64_t r = x.rank();
  if (!has_perm)
    for (int64_t i = r - 1; i >= 0; --i) perm.push_back(i);
  if (static_cast<int64_t>(perm.size()) != r) ctx.fail("perm has ", perm.size(), " entries for rank ", r);
  std::vector<char> seen(static_cast<size_t>(r), 0);
  Shape out(static_cast<size_t>(r));
  for (int64_t i = 0; i < r; ++i) {
    if (perm[i] < 0 || perm[i] >= r || seen[perm[i]]) ctx.fail("perm ", shape_str(perm), " is not a permutation");
    seen[perm[i]] = 1;
    out[i] = x.shape[perm[i]];
  }
  ctx.output(0) = ValueInfo::of(x.dtype, out);
}

// -- joining and splitting ----------------------------------------------------

}  // namespace

ValueInfo concat_info(const InferContext& ctx, int64_t axis) {
  DType dtype = DType::kUndefined;
  int64_t rank = -1;
  for (int i = 0; i < ctx.num_inputs(); ++i) {
    if (!ctx.has_input(i)) continue;
    const ValueInfo& in = ctx.input(i);
    if (dtype == DType::kUndefined) dtype = in.dtype;
    if (!in.has_shape) continue;
    if (rank >= 0 && in.rank() != rank) ctx.fail("inputs have ranks ", rank, " and ", in.rank());
    rank = in.rank();
  }
  if (rank < 0) return unknown_rank(dtype);
  if (rank == 0) ctx.fail("cannot concatenate scalars");
  axis = normalize_axis(ctx, axis, rank);
  Shape out(static_cast<size_t>(rank), -1);
  out[axis] = 0;
  for (int i = 0; i < ctx.num_inputs(); ++i) {
    if (!ctx.has_input(i)) continue;
    const ValueInfo& in = ctx.input(i);
    if (!in.has_shape) {
      out[axis] = -1;
      continue;
    }
    for (int64_t d = 0; d < rank; ++d) {
      if (d == axis) {
        out[d] = (out[d] < 0 || in.shape[d] < 0) ? -1 : ctx.add(out[d], in.shape[d]);
      } else if (in.shape[d] >= 0) {
        if (out[d] >= 0 && out[d] != in.shape[d])
          ctx.fail("input ", i, " has shape ", shape_str(in.shape), ", which does not match the others on axis ", d);
        out[d] = in.shape[d];
      }
    }
  }
  return ValueInfo::of(dtype, out);
}

namespace {

void infer_concat(InferContext& ctx) {
  if (!ctx.node().has_attr("axis")) ctx.fail("the 'axis' attribute is required");
  ctx.output(0) = concat_info(ctx, ctx.node().attr_int("axis", 0));
}

void infer_split(InferContext& ctx) {
  const ValueInfo& x = ctx.input(0);
  const int n = ctx.num_outputs();
  if (!x.has_shape) {
    for (int i = 0; i < n; ++i) ctx.output(i) = unknown_rank(x.dtype);
    return;
  }
  int64_t axis = normalize_axis(ctx, ctx.node().attr_int("axis", 0), x.rank());
  int64_t dim = x.shape[axis];
  std::vector<int64_t> sizes(static_cast<size_t>(n), -1);
  if (ctx.has_input(1) || ctx.node().has_attr("split")) {
    if (ctx.has_input(1) && !has_value(ctx, 1)) {
      sizes.assign(static_cast<size_t>(n), -1);
    } else {
      sizes = ctx.has_input(1) ? values_of(ctx, 1) : ctx.node().attr_ints("split");
      if (static_cast<int>(sizes.size()) != n) ctx.fail("split has ", sizes.size(), " entries for ", n, " outputs");
      int64_t sum = 0;
      for (int64_t s : sizes) {
        if (s < 0) ctx.fail("split contains the negative size ", s);
        sum = ctx.add(sum, s);
      }
      if (dim >= 0 && sum != dim) ctx.fail("split sizes add up to ", sum, " but axis ", axis, " has size ", dim);
    }
  } else if (ctx.node().has_attr("num_outputs")) {
    int64_t k = ctx.node().attr_int("num_outputs", n);
    if (k != n) ctx.fail("num_outputs is ", k, " but the node has ", n, " outputs");
    if (dim >= 0) {
      // Opset 18: chunks of ceil(dim / n), the last one smaller.
      int64_t chunk = (dim + n - 1) / n;
      if (dim - chunk * (n - 1) < 0) ctx.fail("cannot split ", dim, " into ", n, " chunks of ", chunk);
      sizes.assign(static_cast<size_t>(n), chunk);
      sizes.back() = dim - chunk * (n - 1);
    }
  } else if (dim >= 0) {
    if (dim % n != 0) ctx.fail("axis ", axis, " of size ", dim, " cannot be split evenly into ", n, " outputs");
    sizes.assign(static_cast<size_t>(n), dim / n);
  }
  for (int i = 0; i < n; ++i) {
    Shape s = x.shape;
    s[axis] = sizes[i];
    ctx.output(i) = ValueInfo::of(x.dtype, s);
  }
}

// -- slicing and padding ------------------------------------------------------

// ONNX Slice clamping for one axis of size d; returns the output length and
// the (clamped) first index.
int64_t slice_length(int64_t d, int64_t start, int64_t end, int64_t step, int64_t* first) {
  if (start < 0) start += d;
  if (end < 0) end += d;
  if (step > 0) {
    start = std::clamp<int64_t>(start, 0, d);
    end = std::clamp<int64_t>(end, 0, d);
  } else {
    start = std::clamp<int64_t>(start, 0, d - 1);
    end = std::clamp<int64_t>(end, -1, d - 1);
  }
  *first = start;
  // Written so that huge steps (INT64_MAX) cannot overflow.
  if (step > 0) return end > start ? 1 + (end - start - 1) / step : 0;
  if (start <= end) return 0;
  if (step == std::numeric_limits<int64_t>::min()) return 1;
  return 1 + (start - end - 1) / -step;
}

void infer_slice(InferContext& ctx) {
  const ValueInfo& x = ctx.input(0);
  if (!x.has_shape) {
    ctx.output(0) = unknown_rank(x.dtype);
    return;
  }
  const int64_t r = x.rank();
  const bool from_inputs = ctx.num_inputs() > 1;  // opset >= 10
  std::vector<int64_t> starts, ends, axes, steps;
  bool axes_known = true, bounds_known = true;
  if (from_inputs) {
    bounds_known = has_value(ctx, 1) && has_value(ctx, 2) && (!ctx.has_input(4) || has_value(ctx, 4));
    if (ctx.has_input(3)) {
      axes_known = has_value(ctx, 3);
      if (axes_known) axes = values_of(ctx, 3);
    }
    if (bounds_known) {
      starts = values_of(ctx, 1);
      ends = values_of(ctx, 2);
      if (ctx.has_input(4)) steps = values_of(ctx, 4);
    } else if (!ctx.has_input(3)) {
      int64_t n = length_of_1d(ctx, 1);
      axes_known = n >= 0;
      for (int64_t i = 0; i < n; ++i) axes.push_back(i);
    }
  } else {
    starts = ctx.node().attr_ints("starts");
    ends = ctx.node().attr_ints("ends");
    axes = ctx.node().attr_ints("axes");
  }
  if (bounds_known) {
    if (starts.size() != ends.size()) ctx.fail("starts and ends have different lengths");
    if (axes.empty() && !(from_inputs && ctx.has_input(3)))
      for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
    if (steps.empty()) steps.assign(starts.size(), 1);
    if (axes_known && axes.size() != starts.size()) ctx.fail("axes and starts have different lengths");
    if (steps.size() != starts.size()) ctx.fail("steps and starts have different lengths");
  }
  if (!axes_known) {
    ctx.output(0) = unknown_dims(x.dtype, r);
    return;
  }
  axes = normalize_axes(ctx, axes, r);
  Shape out = x.shape;
  for (size_t i = 0; i < axes.size(); ++i) {
    int64_t a = axes[i];
    if (!bounds_known || x.shape[a] < 0) {
      out[a] = -1;
      continue;
    }
    if (steps[i] == 0) ctx.fail("steps cannot be 0");
    int64_t first;
    out[a] = slice_length(x.shape[a], starts[i], ends[i], steps[i], &first);
  }
  ctx.output(0) = ValueInfo::of(x.dtype, out);
}

void infer_pad(InferContext& ctx) {
  const ValueInfo& x = ctx.input(0);
  std::string mode = ctx.node().attr_string("mode", "constant");
  if (mode != "constant" && mode != "reflect" && mode != "edge" && mode != "wrap")
    ctx.fail("unknown mode '", mode, "'");
  if (!x.has_shape) {
    ctx.output(0) = unknown_rank(x.dtype);
    return;
  }
  const int64_t r = x.rank();
  std::vector<int64_t> pads;
  bool pads_known = true;
  if (ctx.num_inputs() > 1) {
    pads_known = has_value(ctx, 1);
    if (pads_known) pads = values_of(ctx, 1);
  } else {
    pads = ctx.node().attr_ints("pads");
  }
  std::vector<int64_t> axes;
  bool axes_known = true;
  if (ctx.has_input(3)) {
    axes_known = has_value(ctx, 3);
    if (axes_known) axes = normalize_axes(ctx, values_of(ctx, 3), r);
  } else {
    for (int64_t i = 0; i < r; ++i) axes.push_back(i);
  }
  if (!pads_known || !axes_known) {
    ctx.output(0) = unknown_dims(x.dtype, r);
    return;
  }
  const size_t n = axes.size();
  if (pads.size() != 2 * n) ctx.fail("pads has ", pads.size(), " entries, expected ", 2 * n);
  Shape out = x.shape;
  for (size_t i = 0; i < n; ++i) {
    int64_t a = axes[i];
    if (out[a] < 0) continue;
    out[a] = ctx.add(out[a], ctx.add(pads[i], pads[i + n]));
    if (out[a] < 0) ctx.fail("pads ", shape_str(pads), " make axis ", a, " negative");
  }
  ctx.output(0) = ValueInfo::of(x.dtype, out);
}

// -- constants and shape tensors ----------------------------------------------

std::shared_ptr<const Tensor> constant_value(const InferContext& ctx) {
  const Node& n = ctx.node();
  auto make = [](DType t, Shape s) { return std::make_shared<Tensor>(t, std::move(s)); };
  if (n.has_attr("value")) {
    const Attribute& a = n.attrs().at("value");
    if (a.type != Attribute::Type::kTensor || !a.t) ctx.fail("attribute 'value' must be a tensor");
    return a.t;
  }
  if (n.has_attr("value_float")) {
    auto t = make(DType::kFloat32, {});
    t->data<float>()[0] = n.attr_float("value_float", 0.f);
    return t;
  }
  if (n.has_attr("value_int")) {
    auto t = make(DType::kInt64, {});
    t->data<int64_t>()[0] = n.attr_int("value_int", 0);
    return t;
  }
  if (n.has_attr("value_floats")) {
    std::vector<float> v = n.attr_floats("value_floats");
    auto t = make(DType::kFloat32, {static_cast<int64_t>(v.size())});
    std::copy(v.begin(), v.end(), t->data<float>());
    return t;
  }
  if (n.has_attr("value_ints")) {
    std::vector<int64_t> v = n.attr_ints("value_ints");
    auto t = make(DType::kInt64, {static_cast<int64_t>(v.size())});
    std::copy(v.begin(), v.end(), t->data<int64_t>());
    return t;
  }
  fail(ErrorKind::kUnsupportedOperator, n.describe(),
       ": only the value, value_float(s) and value_int(s) attributes are supported");
}

void infer_constant(InferContext& ctx) {
  auto v = constant_value(ctx);
  ctx.output(0) = ValueInfo::of(v->dtype(), v->shape());
  ctx.output(0).value = std::move(v);
}

void infer_shape(InferContext& ctx) {
  const ValueInfo& x = ctx.input(0);
  if (!x.has_shape) {
    ctx.output(0) = ValueInfo::of(DType::kInt64, {-1});
    return;
  }
  int64_t r = x.rank();
  int64_t start = ctx.node().attr_int("start", 0);
  int64_t end = ctx.node().attr_int("end", r);
  if (start < 0) start += r;
  if (end < 0) end += r;
  start = std::clamp<int64_t>(start, 0, r);
  end = std::clamp<int64_t>(end, 0, r);
  int64_t len = std::max<int64_t>(0, end - start);
  ctx.output(0) = ValueInfo::of(DType::kInt64, {len});
  for (int64_t i = start; i < start + len; ++i)
    if (x.shape[i] < 0) return;
  auto t = std::make_shared<Tensor>(DType::kInt64, Shape{len});
  for (int64_t i = 0; i < len; ++i) t->data<int64_t>()[i] = x.shape[start + i];
  ctx.output(0).value = std::move(t);
}

void infer_constant_of_shape(InferContext& ctx) {
  DType dtype = DType::kFloat32;
  const Node& n = ctx.node();
  if (n.has_attr("value")) {
    const Attribute& a = n.attrs().at("value");
    if (a.type != Attribute::Type::kTensor || !a.t || a.t->numel() != 1)
      ctx.fail("attribute 'value' must be a one-element tensor");
    dtype = a.t->dtype();
  }
  if (!has_value(ctx, 0)) {
    int64_t len = length_of_1d(ctx, 0);
    ctx.output(0) = len >= 0 ? unknown_dims(dtype, len) : unknown_rank(dtype);
    return;
  }
  Shape s = values_of(ctx, 0);
  for (int64_t d : s)
    if (d < 0) ctx.fail("the shape ", shape_str(s), " has a negative dim");
  ctx.output(0) = ValueInfo::of(dtype, s);
}

void infer_range(InferContext& ctx) {
  DType dtype = ctx.input(0).dtype;
  if (!has_value(ctx, 0) || !has_value(ctx, 1) || !has_value(ctx, 2)) {
    ctx.output(0) = ValueInfo::of(dtype, {-1});
    return;
  }
  const Tensor& start = *ctx.input(0).value;
  const Tensor& limit = *ctx.input(1).value;
  const Tensor& delta = *ctx.input(2).value;
  if (start.numel() != 1 || limit.numel() != 1 || delta.numel() != 1) ctx.fail("start, limit and delta must be scalars");
  double n;
  // The count follows ONNX Runtime: the difference is taken in the element
  // type, the division in double.
  if (dtype == DType::kFloat32) {
    float diff = static_cast<float>(limit.float_at(0)) - static_cast<float>(start.float_at(0));
    if (delta.float_at(0) == 0) ctx.fail("delta cannot be 0");
    n = std::ceil(static_cast<double>(diff) / delta.float_at(0));
  } else if (dtype_is_float(dtype)) {
    if (delta.float_at(0) == 0) ctx.fail("delta cannot be 0");
    n = std::ceil((limit.float_at(0) - start.float_at(0)) / delta.float_at(0));
  } else {
    if (delta.int_at(0) == 0) ctx.fail("delta cannot be 0");
    // In double: int64 limit - start can overflow.
    n = std::ceil((static_cast<double>(limit.int_at(0)) - static_cast<double>(start.int_at(0))) /
                  static_cast<double>(delta.int_at(0)));
  }
  ctx.output(0) = ValueInfo::of(dtype, {n > 0 ? float_to_dim(ctx, n, "Range") : 0});
}

// -- indexing and broadcasting ------------------------------------------------

void infer_gather(InferContext& ctx) {
  const ValueInfo& data = ctx.input(0);
  const ValueInfo& idx = ctx.input(1);
  if (!data.has_shape || !idx.has_shape) {
    ctx.output(0) = unknown_rank(data.dtype);
    return;
  }
  if (data.rank() == 0) ctx.fail("cannot gather from a scalar");
  int64_t axis = normalize_axis(ctx, ctx.node().attr_int("axis", 0), data.rank());
  Shape out(data.shape.begin(), data.shape.begin() + axis);
  out.insert(out.end(), idx.shape.begin(), idx.shape.end());
  out.insert(out.end(), data.shape.begin() + axis + 1, data.shape.end());
  ctx.output(0) = ValueInfo::of(data.dtype, out);
}

void infer_expand(InferContext& ctx) {
  const ValueInfo& x = ctx.input(0);
  if (!has_value(ctx, 1)) {
    int64_t n = length_of_1d(ctx, 1);
    if (n < 0 || !x.has_shape) ctx.output(0) = unknown_rank(x.dtype);
    else ctx.output(0) = unknown_dims(x.dtype, std::max<int64_t>(n, x.rank()));
    return;
  }
  Shape s = values_of(ctx, 1);
  for (int64_t d : s)
    if (d < 0) ctx.fail("the shape ", shape_str(s), " has a negative dim");
  if (!x.has_shape) {
    ctx.output(0) = unknown_rank(x.dtype);
    return;
  }
  ctx.output(0) = ValueInfo::of(x.dtype, broadcast_shapes(ctx, x.shape, s));
}

void infer_tile(InferContext& ctx) {
  const ValueInfo& x = ctx.input(0);
  if (!x.has_shape) {
    ctx.output(0) = unknown_rank(x.dtype);
    return;
  }
  if (!has_value(ctx, 1)) {
    ctx.output(0) = unknown_dims(x.dtype, x.rank());
    return;
  }
  std::vector<int64_t> rep = values_of(ctx, 1);
  if (static_cast<int64_t>(rep.size()) != x.rank())
    ctx.fail("repeats has ", rep.size(), " entries for rank ", x.rank());
  Shape out = x.shape;
  for (size_t i = 0; i < rep.size(); ++i) {
    if (rep[i] < 0) ctx.fail("repeats cannot be negative");
    out[i] = rep[i] == 0 ? 0 : (x.shape[i] < 0 ? -1 : ctx.mul(x.shape[i], rep[i]));
  }
  ctx.output(0) = ValueInfo::of(x.dtype, out);
}

// Resize: output dims from scales (floor of in * scale, computed in float as
// ONNX Runtime does) or from sizes (with keep_aspect_ratio_policy).
void infer_resize(InferContext& ctx) {
  const ValueInfo& x = ctx.input(0);
  if (!x.has_shape) {
    ctx.output(0) = unknown_rank(x.dtype);
    return;
  }
  const int64_t r = x.rank();
  // Opset 10 has (X, scales); 11+ has (X, roi, scales, sizes).
  const int scales_at = ctx.num_inputs() == 2 ? 1 : 2;
  const int sizes_at = 3;
  std::vector<int64_t> axes = ctx.node().attr_ints("axes");
  if (axes.empty())
    for (int64_t i = 0; i < r; ++i) axes.push_back(i);
  axes = normalize_axes(ctx, axes, r);
  auto nonempty = [&](int i) {
    return ctx.has_input(i) && !(ctx.input(i).has_shape && ctx.input(i).fully_known() &&
                                 shape_numel(ctx.input(i).shape) == 0);
  };
  Shape out = x.shape;
  if (nonempty(sizes_at)) {
    if (!has_value(ctx, sizes_at)) {
      for (int64_t a : axes) out[a] = -1;
      ctx.output(0) = ValueInfo::of(x.dtype, out);
      return;
    }
    std::vector<int64_t> sizes = values_of(ctx, sizes_at);
    if (sizes.size() != axes.size()) ctx.fail("sizes has ", sizes.size(), " entries, expected ", axes.size());
    std::string policy = ctx.node().attr_string("keep_aspect_ratio_policy", "stretch");
    if (policy == "stretch") {
      for (size_t i = 0; i < axes.size(); ++i) out[axes[i]] = sizes[i];
    } else if (policy == "not_larger" || policy == "not_smaller") {
      bool larger = policy == "not_smaller";
      float scale = larger ? 0.f : std::numeric_limits<float>::max();
      for (size_t i = 0; i < axes.size(); ++i) {
        if (x.shape[axes[i]] < 0) {
          for (int64_t a : axes) out[a] = -1;
          ctx.output(0) = ValueInfo::of(x.dtype, out);
          return;
        }
        float s = static_cast<float>(sizes[i]) / static_cast<float>(x.shape[axes[i]]);
        scale = larger ? std::max(scale, s) : std::min(scale, s);
      }
      for (int64_t a : axes) out[a] = float_to_dim(ctx, std::round(static_cast<double>(scale * static_cast<float>(x.shape[a]))), "sizes");
    } else {
      ctx.fail("unknown keep_aspect_ratio_policy '", policy, "'");
    }
  } else if (nonempty(scales_at)) {
    if (!has_value(ctx, scales_at)) {
      for (int64_t a : axes) out[a] = -1;
      ctx.output(0) = ValueInfo::of(x.dtype, out);
      return;
    }
    const Tensor& st = *ctx.input(scales_at).value;
    if (st.numel() != static_cast<int64_t>(axes.size()))
      ctx.fail("scales has ", st.numel(), " entries, expected ", axes.size());
    for (size_t i = 0; i < axes.size(); ++i) {
      float s = static_cast<float>(st.float_at(static_cast<int64_t>(i)));
      if (!(s > 0)) ctx.fail("scales must be positive");
      int64_t d = x.shape[axes[i]];
      out[axes[i]] = d < 0 ? -1 : float_to_dim(ctx, static_cast<double>(s * static_cast<float>(d)), "scales");
    }
  } else {
    ctx.fail("either scales or sizes must be given");
  }
  ctx.output(0) = ValueInfo::of(x.dtype, out);
}

}  // namespace

void register_shape_ops_infer(InferRegistry& r) {
  r.add(OpKind::kFlatten, infer_flatten);
  r.add(OpKind::kReshape, infer_reshape);
  r.add(OpKind::kTranspose, infer_transpose);
  r.add(OpKind::kSqueeze, infer_squeeze);
  r.add(OpKind::kUnsqueeze, infer_unsqueeze);
  r.add(OpKind::kConcat, infer_concat);
  r.add(OpKind::kSplit, infer_split);
  r.add(OpKind::kSlice, infer_slice);
  r.add(OpKind::kPad, infer_pad);
  r.add(OpKind::kIdentity, infer_identity);
  r.add(OpKind::kDropout, infer_dropout);
  r.add(OpKind::kConstant, infer_constant);
  r.add(OpKind::kShape, infer_shape);
  r.add(OpKind::kGather, infer_gather);
  r.add(OpKind::kExpand, infer_expand);
  r.add(OpKind::kResize, infer_resize);
  r.add(OpKind::kConstantOfShape, infer_constant_of_shape);
  r.add(OpKind::kRange, infer_range);
  r.add(OpKind::kTile, infer_tile);
}

}  // namespace engine
