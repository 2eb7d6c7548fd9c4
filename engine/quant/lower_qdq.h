// lower_qdq_to_int8: rewrites TensorRT-style Q/DQ node groups into pyengine's
// int8 ops (QConv, QGemm; see ir/ops.def) so the CPU runs them on int8 data.
//
//   DQ(x_q) -> Conv(., DQ(w_q) [, bias]) [-> Add(., DQ(z_q) | z)] [-> Relu | Clip] [-> Q]
//     ==>  QConv(x_q, w_q [, bias] [, z_q | z]) with the Q folded in (int8
//          output) or not (float output); likewise Gemm -> QGemm.
//
// What is lowered: symmetric int8 (zero point 0) activations with a
// per-tensor scale; int8 weights with per-output-channel (or per-tensor)
// scales, given either as int8 constants behind a DequantizeLinear or as
// float constants behind Q -> DQ (folded to int8 here); a float constant
// bias or a DequantizeLinear of an int32 constant bias. Everything else is
// left alone and keeps running in float through the Q/DQ kernels: correct,
// only slower. Q and DQ nodes that lose all their users are removed.
// The graph is re-sorted, re-inferred and verified afterwards.
//
// Pipeline position: after BatchNorm folding (a BN between Conv and Relu
// stops the fusion; the Conv is still lowered, with float output) and before
// the float fusions (fuse_conv_add_relu would turn the Conv into a FusedConv,
// which this rewrite does not match).
#pragma once

#include "ir/graph.h"

namespace engine {

void lower_qdq_to_int8(Graph& g);

}  // namespace engine
