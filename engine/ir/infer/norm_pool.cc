// Shape inference for the norm_pool family (see ir/infer.h for the contract):
// normalizations keep their input's shape; pooling computes window counts;
// reductions drop or keep the reduced axes; softmax keeps the shape.
// The pooling arithmetic must agree with cpu/kernels/norm_pool/pool.cc.
#include <algorithm>
#include <set>

#include "ir/infer.h"

namespace engine {
namespace {

// float16 is accepted too: the widen_float16 pass runs such layers in
// float32 with float16 storage before any kernel sees them.
void require_float(InferContext& ctx) {
  const DType t = ctx.input(0).dtype;
  if (t != DType::kFloat32 && t != DType::kFloat16 && t != DType::kUndefined)
    fail(ErrorKind::kUnsupportedOperator, ctx.node().describe(), ": only float32 is supported, got ",
         dtype_name(t));
}

// Checks that a 1-D parameter has `want` elements when both are known.
void check_param(InferContext& ctx, int i, const char* what, int64_t want) {
  if (!ctx.has_input(i) || !ctx.input(i).has_shape || want < 0) return;
  const Shape& s = ctx.input(i).shape;
  if (s.size() != 1) ctx.fail(what, " must be 1-D, got ", shape_str(s));
  if (s[0] >= 0 && s[0] != want) ctx.fail(what, " has ", s[0], " elements but the input has ", want, " channels");
}

// The output keeps input 0's dtype and shape (no known value).
void same_as_input(InferContext& ctx) {
  ctx.output(0) = ctx.input(0);
  ctx.output(0).value = nullptr;
}

void infer_batch_norm(InferContext& ctx) {
  require_float(ctx);
  const ValueInfo& x = ctx.input(0);
  if (x.has_shape && x.rank() < 2) ctx.fail("input must have rank >= 2 (N, C, ...), got ", shape_str(x.shape));
  const int64_t c = x.has_shape ? x.shape[1] : -1;
  static const char* kNames[] = {"", "scale", "B", "input_mean", "input_var"};
  for (int i = 1; i < 5; ++i) check_param(ctx, i, kNames[i], c);
  same_as_input(ctx);
  // Training-mode outputs (rejected by the kernel) are per-channel vectors.
  for (int o = 1; o < ctx.num_outputs(); ++o) ctx.output(o) = ValueInfo::of(DType::kFloat32, {c});
}

void infer_instance_norm(InferContext& ctx) {
  require_float(ctx);
  const ValueInfo& x = ctx.input(0);
  if (x.has_shape && x.rank() < 2) ctx.fail("input must have rank >= 2 (N, C, ...), got ", shape_str(x.shape));
  const int64_t c = x.has_shape ? x.shape[1] : -1;
  check_param(ctx, 1, "scale", c);
  check_param(ctx, 2, "B", c);
  same_as_input(ctx);
}

// SqueezeExcite(X, W1, B1, W2, B2, Z?): X's shape; W1 [Cr, C], W2 [C, Cr];
// Z, when given, X's shape.
void infer_squeeze_excite(InferContext& ctx) {
  require_float(ctx);
  const ValueInfo& x = ctx.input(0);
  if (x.has_shape && x.rank() < 3) ctx.fail("input must have rank >= 3 (N, C, D1, ...), got ", shape_str(x.shape));
  for (int i = 1; i < 5; ++i)
    if (!ctx.has_input(i)) ctx.fail("expects inputs X, W1, B1, W2, B2");
  const int64_t c = x.has_shape ? x.shape[1] : -1;
  const ValueInfo& w1 = ctx.input(1);
  const ValueInfo& w2 = ctx.input(3);
  if (w1.has_shape && w2.has_shape) {
    if (w1.rank() != 2 || w2.rank() != 2 || w1.shape[1] != w2.shape[0] || w1.shape[0] != w2.shape[1] ||
        (c >= 0 && w1.shape[1] != c))
      ctx.fail("W1 must be [Cr, C] and W2 [C, Cr] with C = ", c, ", got ", shape_str(w1.shape), " and ",
               shape_str(w2.shape));
    check_param(ctx, 2, "B1", w1.shape[0]);
    check_param(ctx, 4, "B2", w2.shape[0]);
  }
  if (ctx.has_input(5) && x.has_shape && ctx.input(5).has_shape && ctx.input(5).shape != x.shape)
    ctx.fail("the residual Z has shape ", shape_str(ctx.input(5).shape), ", not the input's ", shape_str(x.shape));
  same_as_input(ctx);
}

// ChannelSplitNorm(X, in_scale, in_bias, scale, shift): X's shape.
void infer_channel_split_norm(InferContext& ctx) {
  require_float(ctx);
  const ValueInfo& x = ctx.input(0);
  if (x.has_shape && x.rank() < 3) ctx.fail("input must have rank >= 3 (N, C, D1, ...), got ", shape_str(x.shape));
  for (int i = 1; i < 5; ++i)
    if (!ctx.has_input(i)) ctx.fail("expects inputs X, in_scale, in_bias, scale, shift");
  const int64_t k = ctx.node().attr_int("instance_channels", -1);
  const int64_t c = x.has_shape ? x.shape[1] : -1;
  if (k < 0 || (c >= 0 && k > c)) ctx.fail("instance_channels ", k, " is not within the ", c, " channels");
  check_param(ctx, 1, "in_scale", k);
  check_param(ctx, 2, "in_bias", k);
  check_param(ctx, 3, "scale", c < 0 ? -1 : c - k);
  check_param(ctx, 4, "shift", c < 0 ? -1 : c - k);
  same_as_input(ctx);
}

// ChannelLayerNorm(X, scale, bias?): X's shape.
void infer_channel_layer_norm(InferContext& ctx) {
  require_float(ctx);
  const ValueInfo& x = ctx.input(0);
  if (x.has_shape && x.rank() < 2) ctx.fail("input must have rank >= 2 (N, C, ...), got ", shape_str(x.shape));
  if (!ctx.has_input(1)) ctx.fail("expects inputs X, scale and an optional bias");
  const int64_t c = x.has_shape ? x.shape[1] : -1;
  check_param(ctx, 1, "scale", c);
  if (ctx.has_input(2)) check_param(ctx, 2, "bias", c);
  same_as_input(ctx);
}

void infer_group_norm(InferContext& ctx) {
  require_float(ctx);
  const ValueInfo& x = ctx.input(0);
  const int64_t g = ctx.node().attr_int("num_groups", 0);
  if (g <= 0) ctx.fail("num_groups must be positive, got ", g);
  if (x.has_shape && x.rank() < 2) ctx.fail("input must have rank >= 2 (N, C, ...), got ", shape_str(x.shape));
  const int64_t c = x.has_shape ? x.shape[1] : -1;
  if (c >= 0 && c % g != 0) ctx.fail(c, " channels cannot be split into ", g, " groups");
  // scale/bias: [num_groups] (opset 18) or [C] (opset 21).
  for (int i = 1; i < 3; ++i) {
    if (!ctx.has_input(i) || !ctx.input(i).has_shape) continue;
    const Shape& s = ctx.input(i).shape;
    if (s.size() != 1) ctx.fail(i == 1 ? "scale" : "bias", " must be 1-D, got ", shape_str(s));
    if (s[0] >= 0 && c >= 0 && s[0] != c && s[0] != g)
      ctx.fail(i == 1 ? "scale" : "bias", " has ", s[0], " elements; expected ", c, " (channels) or ", g,
               " (groups)");
  }
  same_as_input(ctx);
}

void infer_layer_norm(InferContext& ctx) {
  require_float(ctx);
  same_as_input(ctx);
  const ValueInfo& x = ctx.input(0);
  if (ctx.num_outputs() < 2) return;
  // Mean and InvStdDev: X.shape[:axis] followed by ones.
  ValueInfo stat;
  stat.dtype = DType::kFloat32;
  if (x.has_shape) {
    const int64_t axis = normalize_axis(ctx, ctx.node().attr_int("axis", -1), x.rank());
    stat = ValueInfo::of(DType::kFloat32, x.shape);
    for (int64_t d = axis; d < x.rank(); ++d) stat.shape[d] = 1;
  }
  for (int o = 1; o < ctx.num_outputs(); ++o) ctx.output(o) = stat;
}

// One spatial dim of MaxPool/AveragePool; -1 in, -1 out.
int64_t pool_out_dim(const InferContext& ctx, int64_t in, int64_t k, int64_t s, int64_t d, int64_t pb, int64_t pe,
                     bool ceil_mode, const std::string& auto_pad) {
  if (in < 0) return -1;
  // Inputs are within [0, kMaxDim] (checked by the caller), yet their sums
  // and products can still leave int64: every step is checked.
  const int64_t dk = ctx.add(ctx.mul(k - 1, d), 1);
  if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") return ctx.add(in, s - 1) / s;
  if (auto_pad == "VALID") pb = pe = 0;
  const int64_t padded = ctx.add(ctx.add(in, pb), pe);
  const int64_t span = padded - dk;
  if (span < 0) ctx.fail("the pooling window (", dk, ") is larger than the padded input (", padded, ")");
  int64_t o = (ceil_mode ? ctx.add(span, s - 1) / s : span / s) + 1;
  // PyTorch's rule, followed by onnxruntime: a last window starting in the
  // end padding is dropped.
  if (ceil_mode && ctx.mul(o - 1, s) >= ctx.add(in, pb)) --o;
  return o;
}

void infer_pool(InferContext& ctx) {
  const Node& n = ctx.node();
  // int8 MaxPool (ONNX allows it) keeps lowered int8 activations int8.
  if (!(n.kind() == OpKind::kMaxPool && ctx.input(0).dtype == DType::kInt8)) require_float(ctx);
  const std::vector<int64_t> kernel = n.attr_ints("kernel_shape");
  const size_t nd = kernel.size();
  if (nd == 0) ctx.fail("missing attribute kernel_shape");
  std::vector<int64_t> strides = n.attr_ints("strides"), dil = n.attr_ints("dilations"), pads = n.attr_ints("pads");
  if (strides.empty()) strides.assign(nd, 1);
  if (dil.empty()) dil.assign(nd, 1);
  if (pads.empty()) pads.assign(2 * nd, 0);
  if (strides.size() != nd || dil.size() != nd || pads.size() != 2 * nd)
    ctx.fail("strides, dilations and pads must match kernel_shape's ", nd, " dims");
  // Limits: kernel_shape, strides, dilations in [1, kMaxDim], pads in
  // [0, kMaxDim], checked whether or not the input shape is known.
  ctx.check_range("kernel_shape", kernel, 1);
  ctx.check_range("strides", strides, 1);
  ctx.check_range("dilations", dil, 1);
  ctx.check_range("pads", pads, 0);
  std::string auto_pad = n.attr_string("auto_pad", "NOTSET");
  if (auto_pad != "NOTSET" && !auto_pad.empty() && auto_pad != "VALID" && auto_pad != "SAME_UPPER" &&
      auto_pad != "SAME_LOWER")
    fail(ErrorKind::kInvalidModel, n.describe(), ": unknown auto_pad '", auto_pad, "'");
  const bool ceil_mode = n.attr_int("ceil_mode", 0) != 0;
  const ValueInfo& x = ctx.input(0);
  ValueInfo y;
  y.dtype = x.dtype;
  if (x.has_shape) {
    if (static_cast<size_t>(x.rank()) != nd + 2)
      ctx.fail("input of shape ", shape_str(x.shape), " does not match the ", nd, "-D kernel");
    y = ValueInfo::of(x.dtype, {x.shape[0], x.shape[1]});
    for (size_t i = 0; i < nd; ++i)
      y.shape.push_back(pool_out_dim(ctx, x.shape[i + 2], kernel[i], strides[i], dil[i], pads[i], pads[i + nd],
                                     ceil_mode, auto_pad));
  }
  ctx.output(0) = y;
  if (ctx.num_outputs() > 1) {
    ctx.output(1) = y;
    ctx.output(1).dtype = DType::kInt64;
  }
}

void infer_global_pool(InferContext& ctx) {
  require_float(ctx);
  const ValueInfo& x = ctx.input(0);
  ValueInfo y;
  y.dtype = x.dtype;
  if (x.has_shape) {
    if (x.rank() < 3) ctx.fail("input must have rank >= 3 (N, C, spatial...), got ", shape_str(x.shape));
    y = ValueInfo::of(x.dtype, Shape(x.shape.size(), 1));
    y.shape[0] = x.shape[0];
    y.shape[1] = x.shape[1];
  }
  ctx.output(0) = y;
}

void infer_reduce(InferContext& ctx) {
  const Node& n = ctx.node();
  const ValueInfo& x = ctx.input(0);
  const DType t = x.dtype;
  const bool int_ok = n.kind() != OpKind::kReduceMean && (t == DType::kInt64 || t == DType::kInt32);
  if (t != DType::kFloat32 && t != DType::kFloat16 && t != DType::kUndefined && !int_ok)
    fail(ErrorKind::kUnsupportedOperator, n.describe(), ": dtype ", dtype_name(t), " is not supported");
  const bool keepdims = n.attr_int("keepdims", 1) != 0;
  const bool noop = n.attr_int("noop_with_empty_axes", 0) != 0;
  ValueInfo y;
  y.dtype = t;
  std::vector<int64_t> axes;
  bool axes_known = true;
  if (n.has_attr("axes")) {
    axes = n.attr_ints("axes");
  } else if (ctx.has_input(1)) {
    if (ctx.input(1).value) axes = ctx.input(1).value->to_int_vector();
    else axes_known = false;
  }
  if (!x.has_shape) {
    ctx.output(0) = y;
    return;
  }
  const int64_t rank = x.rank();
  if (!axes_known) {
    // Which axes go is unknown: with keepdims the rank is still known.
    if (keepdims) y = ValueInfo::of(t, Shape(rank, -1));
    ctx.output(0) = y;
    return;
  }
  if (axes.empty() && noop) {
    same_as_input(ctx);
    return;
  }
  std::set<int64_t> red;
  for (int64_t a : axes) red.insert(normalize_axis(ctx, a, rank));
  y = ValueInfo::of(t, {});
  for (int64_t d = 0; d < rank; ++d) {
    const bool r = axes.empty() || red.count(d);
    if (!r) y.shape.push_back(x.shape[d]);
    else if (keepdims) y.shape.push_back(1);
  }
  ctx.output(0) = y;
}

void infer_softmax(InferContext& ctx) {
  require_float(ctx);
  const ValueInfo& x = ctx.input(0);
  if (x.has_shape && x.rank() > 0) normalize_axis(ctx, ctx.node().attr_int("axis", -1), x.rank());
  same_as_input(ctx);
}

}  // namespace

void register_norm_pool_infer(InferRegistry& r) {
  r.add(OpKind::kBatchNormalization, infer_batch_norm);
  r.add(OpKind::kInstanceNormalization, infer_instance_norm);
  r.add(OpKind::kGroupNormalization, infer_group_norm);
  r.add(OpKind::kSqueezeExcite, infer_squeeze_excite);
  r.add(OpKind::kChannelSplitNorm, infer_channel_split_norm);
  r.add(OpKind::kChannelLayerNorm, infer_channel_layer_norm);
  r.add(OpKind::kLayerNormalization, infer_layer_norm);
  r.add(OpKind::kMaxPool, infer_pool);
  r.add(OpKind::kAveragePool, infer_pool);
  r.add(OpKind::kGlobalAveragePool, infer_global_pool);
  r.add(OpKind::kGlobalMaxPool, infer_global_pool);
  r.add(OpKind::kReduceMean, infer_reduce);
  r.add(OpKind::kReduceSum, infer_reduce);
  r.add(OpKind::kReduceMax, infer_reduce);
  r.add(OpKind::kReduceMin, infer_reduce);
  r.add(OpKind::kSoftmax, infer_softmax);
  r.add(OpKind::kLogSoftmax, infer_softmax);
}

}  // namespace engine
