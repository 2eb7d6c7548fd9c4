// Shape inference for the quant family (see ir/infer.h for the contract):
// QuantizeLinear, DequantizeLinear (elementwise: shape of x) and pyengine's
// int8 ops QConv / QGemm (ops.def documents them).
#include <algorithm>

#include "ir/infer.h"

namespace engine {
namespace {

// Scale (and zero point) shape checks that need only static shapes: per
// tensor (scalar or one element), per axis (1-D of x's dim), or blocked.
void check_qparams(InferContext& ctx) {
  const ValueInfo& x = ctx.input(0);
  const ValueInfo& s = ctx.input(1);
  // A scalar and a one-element 1-D parameter are both per tensor
  // (onnxruntime's quantizer writes a [1] scale with a scalar zero point).
  auto one = [](const ValueInfo& v) {
    return v.rank() == 0 || (v.rank() == 1 && v.shape[0] == 1);
  };
  if (ctx.has_input(2) && ctx.input(2).has_shape && s.has_shape && ctx.input(2).shape != s.shape &&
      !(one(ctx.input(2)) && one(s)))
    ctx.fail("zero point shape ", shape_str(ctx.input(2).shape), " differs from scale shape ", shape_str(s.shape));
  if (!x.has_shape || !s.has_shape) return;
  const int64_t block = ctx.node().attr_int("block_size", 0);
  if (block > 0) {
    if (s.rank() != x.rank()) ctx.fail("a blocked scale must have the input's rank");
    return;
  }
  if (s.rank() == 0) return;
  if (s.rank() > 1) ctx.fail("scale must be a scalar or 1-D, got ", shape_str(s.shape));
  if (s.shape[0] == 1 || s.shape[0] < 0) return;
  const int64_t axis = normalize_axis(ctx, ctx.node().attr_int("axis", 1), x.rank());
  const int64_t d = x.shape[axis];
  if (d >= 0 && d != s.shape[0])
    ctx.fail("per-axis scale has ", s.shape[0], " elements but input dim ", axis, " is ", d);
}

void infer_quantize(InferContext& ctx) {
  check_qparams(ctx);
  ValueInfo out = ctx.input(0);
  out.value = nullptr;
  if (ctx.has_input(2) && ctx.input(2).dtype != DType::kUndefined) {
    out.dtype = ctx.input(2).dtype;
  } else {
    const int64_t od = ctx.node().attr_int("output_dtype", 0);
    if (od != 0 && !dtype_is_valid(static_cast<int32_t>(od))) ctx.fail("output_dtype ", od, " is not supported");
    out.dtype = od != 0 ? static_cast<DType>(od) : DType::kUInt8;
  }
  ctx.output(0) = out;
}

void infer_dequantize(InferContext& ctx) {
  check_qparams(ctx);
  ValueInfo out = ctx.input(0);
  out.value = nullptr;
  const DType st = ctx.input(1).dtype;
  out.dtype = st == DType::kUndefined ? DType::kFloat32 : st;
  ctx.output(0) = out;
}

DType q_output_dtype(const InferContext& ctx) {
  return ctx.node().has_attr("y_scale") ? DType::kInt8 : DType::kFloat32;
}

void check_residual(InferContext& ctx, const Shape& y) {
  if (!ctx.has_input(3) || !ctx.input(3).has_shape) return;
  const Shape& z = ctx.input(3).shape;
  bool ok = z.size() == y.size();
  for (size_t i = 0; ok && i < z.size(); ++i) ok = z[i] < 0 || y[i] < 0 || z[i] == y[i];
  if (!ok) ctx.fail("residual shape ", shape_str(z), " differs from the output shape ", shape_str(y));
}

void infer_qconv(InferContext& ctx) {
  const ValueInfo& x = ctx.input(0);
  const ValueInfo& w = ctx.input(1);
  const Node& n = ctx.node();
  const int64_t group = n.attr_int("group", 1);
  const bool channels_last = n.attr_int("channels_last", 0) != 0;
  if (channels_last) {
    // ops.def: [N, H, W, C] int8 in, [N, OH, OW, M] int8 out (requantized),
    // an int8 residual, one group or depthwise.
    const bool depthwise = w.has_shape && w.rank() == 4 && w.shape[0] == group && w.shape[1] == 1;
    if (group != 1 && !depthwise) ctx.fail("channels_last needs group 1 or a depthwise conv, got group ", group);
    if (!n.has_attr("y_scale")) ctx.fail("channels_last needs y_scale (an int8, requantized output)");
    if (ctx.has_input(3) && ctx.input(3).dtype != DType::kUndefined && ctx.input(3).dtype != DType::kInt8)
      ctx.fail("a channels_last residual must be int8, got ", dtype_name(ctx.input(3).dtype));
  }
  if (channels_last && ((x.has_shape && x.rank() != 4) || (w.has_shape && w.rank() != 4)))
    ctx.fail("channels_last is for 2-D convolutions only: input ", x.has_shape ? shape_str(x.shape) : "[*]",
             ", weights ", w.has_shape ? shape_str(w.shape) : "[*]");
  ValueInfo out;
  out.dtype = q_output_dtype(ctx);
  if (!x.has_shape || !w.has_shape) {
    ctx.output(0) = out;
    return;
  }
  if ((x.rank() != 4 && x.rank() != 5) || w.rank() != x.rank())
    ctx.fail("only 2-D and 3-D convolutions are supported: input ", shape_str(x.shape), ", weights ",
             shape_str(w.shape));
  const size_t sp = static_cast<size_t>(x.rank()) - 2;
  // The axes of the channels and of the first spatial dim.
  const size_t c_axis = channels_last ? 3 : 1, s_axis = channels_last ? 1 : 2;
  const auto strides = n.attr_ints("strides", std::vector<int64_t>(sp, 1));
  const auto dil = n.attr_ints("dilations", std::vector<int64_t>(sp, 1));
  const auto pads = n.attr_ints("pads", std::vector<int64_t>(2 * sp, 0));
  const std::string auto_pad = n.attr_string("auto_pad", "NOTSET");
  if (strides.size() != sp || dil.size() != sp || pads.size() != 2 * sp || group < 1)
    ctx.fail("strides, dilations, pads or group do not describe a ", sp, "-D convolution");
  // Limits as for Conv (infer/conv_gemm.cc); sizes below are overflow-checked.
  if (group > kMaxDim) ctx.fail("group must be in [1, ", kMaxDim, "], got ", group);
  ctx.check_range("strides", strides, 1);
  ctx.check_range("dilations", dil, 1);
  ctx.check_range("pads", pads, 0);
  const int64_t c = x.shape[c_axis];
  if (c >= 0 && w.shape[1] >= 0 && c != ctx.mul(w.shape[1], group))
    ctx.fail("input has ", c, " channels, weights expect ", w.shape[1] * group);
  if (w.shape[0] >= 0 && w.shape[0] % group != 0)
    ctx.fail(w.shape[0], " output channels are not divisible by group ", group);
  Shape y(x.rank(), -1);
  y[0] = x.shape[0];
  y[c_axis] = w.shape[0];
  for (size_t i = 0; i < sp; ++i) {
    const int64_t in = x.shape[s_axis + i], k = w.shape[2 + i], s = strides[i];
    if (s < 1 || dil[i] < 1) ctx.fail("strides and dilations must be >= 1");
    if (in < 0 || k < 0) continue;
    const int64_t dk = ctx.add(ctx.mul(k - 1, dil[i]), 1);
    if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      y[s_axis + i] = ctx.add(in, s - 1) / s;
    } else {
      const int64_t padded = auto_pad == "VALID" ? in : ctx.add(ctx.add(in, pads[i]), pads[i + sp]);
      if (padded < dk) ctx.fail("kernel ", shape_str(w.shape), " is larger than the padded input ", shape_str(x.shape));
      y[s_axis + i] = (padded - dk) / s + 1;
    }
  }
  check_residual(ctx, y);
  out.has_shape = true;
  out.shape = y;
  ctx.output(0) = out;
}

void infer_qgemm(InferContext& ctx) {
  const ValueInfo& a = ctx.input(0);
  const ValueInfo& w = ctx.input(1);
  ValueInfo out;
  out.dtype = q_output_dtype(ctx);
  if (!a.has_shape || !w.has_shape) {
    ctx.output(0) = out;
    return;
  }
  if (a.rank() != 2 || w.rank() != 2) ctx.fail("input and weights must be 2-D");
  if (a.shape[1] >= 0 && w.shape[1] >= 0 && a.shape[1] != w.shape[1])
    ctx.fail("input ", shape_str(a.shape), " does not match weights ", shape_str(w.shape));
  Shape y = {a.shape[0], w.shape[0]};
  check_residual(ctx, y);
  out.has_shape = true;
  out.shape = y;
  ctx.output(0) = out;
}

void infer_qadd(InferContext& ctx) {
  const ValueInfo& a = ctx.input(0);
  const ValueInfo& b = ctx.input(1);
  if (a.has_shape && b.has_shape) {
    bool ok = a.shape.size() == b.shape.size();
    for (size_t i = 0; ok && i < a.shape.size(); ++i) ok = a.shape[i] < 0 || b.shape[i] < 0 || a.shape[i] == b.shape[i];
    if (!ok) ctx.fail("inputs ", shape_str(a.shape), " and ", shape_str(b.shape), " differ (QAdd does not broadcast)");
  }
  ValueInfo out = a.has_shape ? a : b;
  out.value = nullptr;
  out.dtype = DType::kInt8;
  ctx.output(0) = out;
}

// FusedQuantize (int8 out) and FusedChannelBias (float32 out): float
// inputs of one rank >= 2 concatenated on axis 1.
void infer_fused_concat(InferContext& ctx, bool int8) {
  if (ctx.num_inputs() < 1) ctx.fail("needs at least one input");
  for (int i = 0; i < ctx.num_inputs(); ++i) {
    const ValueInfo& x = ctx.input(i);
    if (x.dtype != DType::kUndefined && x.dtype != DType::kFloat32)
      ctx.fail("input ", i, " is ", dtype_name(x.dtype), ", not float32");
    if (x.has_shape && x.rank() < 2) ctx.fail("input ", i, " has rank ", x.rank(), " (channels on axis 1 need >= 2)");
  }
  ValueInfo out = concat_info(ctx, 1);
  out.dtype = int8 ? DType::kInt8 : DType::kFloat32;
  ctx.output(0) = out;
}

void infer_fused_quantize(InferContext& ctx) { infer_fused_concat(ctx, true); }
void infer_fused_channel_bias(InferContext& ctx) { infer_fused_concat(ctx, false); }

}  // namespace

void register_quant_infer(InferRegistry& r) {
  r.add(OpKind::kQuantizeLinear, infer_quantize);
  r.add(OpKind::kDequantizeLinear, infer_dequantize);
  r.add(OpKind::kQConv, infer_qconv);
  r.add(OpKind::kQGemm, infer_qgemm);
  r.add(OpKind::kQAdd, infer_qadd);
  r.add(OpKind::kFusedQuantize, infer_fused_quantize);
  r.add(OpKind::kFusedChannelBias, infer_fused_channel_bias);
}

}  // namespace engine
