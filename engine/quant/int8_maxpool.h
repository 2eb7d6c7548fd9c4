// lower_int8_maxpool: keeps activations int8 across a MaxPool.
//
//   QConv(...) [float out] -> MaxPool -> Q(s) -> ...
//     ==>  QConv(...) {y_scale = s} [int8 out] -> MaxPool [int8] -> ...
//
// Exact: quantization q(v) = saturate(round_half_even(v / s)) is monotone
// non-decreasing, so q(max(window)) = max(q(window)); the int8 MaxPool skips
// padded positions as the float one does (a window with no input position,
// impossible for a valid geometry, gives -128 = q(-inf)). The requantize that
// QConv's epilogue performs is the QuantizeLinear formula itself
// (quant_kernels.h), so the int8 result is bit for bit what the float graph's
// Q produced. (A NaN may differ: the float path's MaxPool decides which NaN
// survives, the int8 path saturates it first.)
//
// Guards: a 2-D MaxPool with one output (no Indices), auto_pad NOTSET or
// VALID; its input is a float QConv output used only by the MaxPool and not a
// graph output; every user of the MaxPool's output is a QuantizeLinear to
// int8 with zero point 0 and the same scalar scale, none a graph output.
// Why: in torchvision ResNets the stem's conv -> relu -> maxpool would
// otherwise write and re-read a float tensor 4x the int8 size, and the next
// conv could not see that its input is >= 0 (the u8 VNNI path).
// Runs inside lower_qdq_to_int8, after the convs are lowered.
#pragma once

#include "ir/graph.h"

namespace engine {

// Returns whether anything changed; the caller re-infers and verifies.
bool lower_int8_maxpool(Graph& g);

}  // namespace engine
