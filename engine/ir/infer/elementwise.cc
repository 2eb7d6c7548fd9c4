// Shape and type inference for the elementwise family.
//   unary (Relu ... Sign, Clip):   y has x's dtype and shape
//   Not:                           bool, x's shape
//   Cast:                          dtype `to`, x's shape
//   Add ... Min, Sum, Mean:        numpy broadcast of all inputs, dtype of input 0
//   Equal, Less, Greater,
//   GreaterOrEqual, LessOrEqual,
//   And, Or, Xor (bool inputs):    broadcast, bool
//   Where(c, x, y):                3-way broadcast, dtype of x
//   PRelu(x, slope):               x's shape; slope must broadcast to it, or be
//                                  [C] (the per-channel form before opset 7)
//   ChannelAffine(x, scale, shift): x's shape; scale/shift have C = x[1] elements
// Unknown dims (-1) propagate through broadcast_shapes.
#include "ir/infer.h"

namespace engine {
namespace {

void infer_unary(InferContext& ctx) {
  ctx.output(0) = ctx.input(0);
  ctx.output(0).value = nullptr;
}

void infer_not(InferContext& ctx) {
  infer_unary(ctx);
  ctx.output(0).dtype = DType::kBool;
}

void infer_cast(InferContext& ctx) {
  const Node& n = ctx.node();
  if (!n.has_attr("to")) fail(ErrorKind::kInvalidModel, n.describe(), ": attribute 'to' is missing");
  const int64_t to = n.attr_int("to", 0);
  infer_unary(ctx);
  // A type we cannot store (string, bfloat16, float8) stays undefined; the
  // kernel reports the cast as unsupported.
  ctx.output(0).dtype = dtype_is_valid(static_cast<int32_t>(to)) ? static_cast<DType>(to) : DType::kUndefined;
}

// Broadcast over inputs [first, num_inputs); dtype from input `dtype_from`.
ValueInfo broadcast_all(InferContext& ctx, int first, int dtype_from) {
  ValueInfo out;
  out.dtype = ctx.has_input(dtype_from) ? ctx.input(dtype_from).dtype : DType::kUndefined;
  out.has_shape = true;
  bool any = false;
  for (int i = first; i < ctx.num_inputs(); ++i) {
    if (!ctx.has_input(i)) continue;
    const ValueInfo& in = ctx.input(i);
    if (!in.has_shape) {
      out.has_shape = false;
      out.shape.clear();
      return out;
    }
    out.shape = any ? broadcast_shapes(ctx, out.shape, in.shape) : in.shape;
    any = true;
  }
  if (!any) ctx.fail("needs at least one input");
  return out;
}

void infer_broadcast(InferContext& ctx) { ctx.output(0) = broadcast_all(ctx, 0, 0); }

void infer_compare(InferContext& ctx) {
  ctx.output(0) = broadcast_all(ctx, 0, 0);
  ctx.output(0).dtype = DType::kBool;
}

void infer_where(InferContext& ctx) {
  if (ctx.num_inputs() != 3 || !ctx.has_input(0) || !ctx.has_input(1) || !ctx.has_input(2))
    ctx.fail("needs 3 inputs (condition, X, Y)");
  ctx.output(0) = broadcast_all(ctx, 0, 1);
}

void infer_prelu(InferContext& ctx) {
  const ValueInfo& x = ctx.input(0);
  if (ctx.has_input(1) && x.has_shape && ctx.input(1).has_shape) {
    // Unidirectional: broadcasting slope to x must give x's shape back.
    // A 1-D slope of X's channel count is the pre-opset-7 per-channel form.
    const Shape& s = ctx.input(1).shape;
    if (s.size() == 1 && x.rank() >= 2 && s[0] == x.shape[1] && s[0] >= 0) {
      infer_unary(ctx);
      return;
    }
    Shape b = broadcast_shapes(ctx, x.shape, s);
    bool ok = b.size() == x.shape.size();
    for (size_t d = 0; ok && d < b.size(); ++d) ok = x.shape[d] < 0 || b[d] == x.shape[d];
    if (!ok) ctx.fail("slope of shape ", shape_str(s), " does not broadcast to X of shape ", shape_str(x.shape));
  }
  infer_unary(ctx);
}

void infer_channel_affine(InferContext& ctx) {
  const ValueInfo& x = ctx.input(0);
  if (x.has_shape) {
    if (x.rank() < 2) ctx.fail("X must have rank >= 2, got ", shape_str(x.shape));
    const int64_t c = x.shape[1];
    for (int i = 1; i < 3; ++i) {
      if (!ctx.has_input(i) || !ctx.input(i).has_shape) continue;
      const Shape& s = ctx.input(i).shape;
      const int64_t n = shape_numel(s);
      bool unknown = false;
      for (int64_t d : s) unknown = unknown || d < 0;
      if (s.size() > 1 || (c >= 0 && !unknown && n != c))
        ctx.fail(i == 1 ? "scale" : "shift", " must have shape [", c, "], got ", shape_str(s));
    }
  }
  infer_unary(ctx);
}

}  // namespace

void register_elementwise_infer(InferRegistry& r) {
  for (OpKind k : {OpKind::kRelu, OpKind::kLeakyRelu, OpKind::kClip, OpKind::kSigmoid, OpKind::kHardSigmoid,
                   OpKind::kHardSwish, OpKind::kTanh, OpKind::kGelu, OpKind::kSoftplus, OpKind::kSoftsign,
                   OpKind::kElu, OpKind::kSelu, OpKind::kMish, OpKind::kErf, OpKind::kExp, OpKind::kLog,
                   OpKind::kSqrt, OpKind::kReciprocal, OpKind::kNeg, OpKind::kAbs, OpKind::kFloor, OpKind::kCeil,
                   OpKind::kSign})
    r.add(k, infer_unary);
  r.add(OpKind::kNot, infer_not);
  r.add(OpKind::kCast, infer_cast);
  for (OpKind k : {OpKind::kAdd, OpKind::kSub, OpKind::kMul, OpKind::kDiv, OpKind::kPow, OpKind::kMax, OpKind::kMin,
                   OpKind::kSum, OpKind::kMean})
    r.add(k, infer_broadcast);
  for (OpKind k : {OpKind::kEqual, OpKind::kLess, OpKind::kGreater, OpKind::kGreaterOrEqual, OpKind::kLessOrEqual,
                   OpKind::kAnd, OpKind::kOr, OpKind::kXor})
    r.add(k, infer_compare);
  r.add(OpKind::kWhere, infer_where);
  r.add(OpKind::kPRelu, infer_prelu);
  r.add(OpKind::kChannelAffine, infer_channel_affine);
}

}  // namespace engine
