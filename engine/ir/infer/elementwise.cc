// Shape inference for elementwise ops: unary ops keep their input's shape and
// dtype; binary and variadic ops broadcast numpy-style.
#include "ir/infer.h"

namespace engine {
namespace {

void infer_unary(InferContext& ctx) {
  ctx.output(0) = ctx.input(0);
  ctx.output(0).value = nullptr;
}

void infer_broadcast(InferContext& ctx) {
  ValueInfo out;
  out.dtype = ctx.input(0).dtype;
  out.has_shape = true;
  for (int i = 0; i < ctx.num_inputs(); ++i) {
    if (!ctx.has_input(i)) continue;
    const ValueInfo& in = ctx.input(i);
    if (!in.has_shape) { out.has_shape = false; break; }
    out.shape = i == 0 ? in.shape : broadcast_shapes(ctx, out.shape, in.shape);
  }
  ctx.output(0) = out;
}

}  // namespace

void register_elementwise_infer(InferRegistry& r) {
  r.add(OpKind::kRelu, infer_unary);
  r.add(OpKind::kAdd, infer_broadcast);
}

}  // namespace engine
