// Kernel registration for the shape_ops family (see cpu/kernel.h for the
// contract). The reshaping ops are registered with alias_output0: their
// output shares the input's memory unless it is a graph output.
#include "cpu/kernel.h"
#include "cpu/kernels/shape_ops/shape_ops.h"

namespace engine {

void register_shape_ops_kernels(KernelRegistry& r) {
  using namespace shape_ops;
  for (OpKind k : {OpKind::kReshape, OpKind::kFlatten, OpKind::kSqueeze, OpKind::kUnsqueeze, OpKind::kIdentity})
    r.add(k, KernelInfo{create_alias_copy, /*alias_output0=*/true});
  r.add(OpKind::kDropout, KernelInfo{create_dropout, /*alias_output0=*/true});
  r.add(OpKind::kConstant, KernelInfo{create_constant, false});
  r.add(OpKind::kShape, KernelInfo{create_shape, false});
  r.add(OpKind::kConstantOfShape, KernelInfo{create_constant_of_shape, false});
  r.add(OpKind::kRange, KernelInfo{create_range, false});
  r.add(OpKind::kTranspose, KernelInfo{create_transpose, false});
  r.add(OpKind::kConcat, KernelInfo{create_concat, false});
  r.add(OpKind::kSplit, KernelInfo{create_split, false});
  r.add(OpKind::kSlice, KernelInfo{create_slice, false});
  r.add(OpKind::kExpand, KernelInfo{create_expand, false});
  r.add(OpKind::kGather, KernelInfo{create_gather, false});
  r.add(OpKind::kTile, KernelInfo{create_tile, false});
  r.add(OpKind::kPad, KernelInfo{create_pad, false});
  r.add(OpKind::kResize, KernelInfo{create_resize, false});
}

}  // namespace engine
