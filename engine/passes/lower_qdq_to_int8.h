// lower_qdq_to_int8: rewrites TensorRT-style Q/DQ node groups into pyengine's
// int8 ops (QConv, QGemm; see ir/ops.def) so the CPU runs them on int8 data.
//
//   DQ(x_q) -> Conv(., DQ(w_q) [, bias]) [-> ChannelAffine] [-> Add(., DQ(z_q) | z)]
//           [-> Relu | Clip] [-> Q]
//     ==>  QConv(x_q, w_q [, bias] [, z_q | z]) with the Q folded in (int8
//          output) or not (float output); likewise Gemm -> QGemm.
//
// The pass itself is a PatternPass (make_lower_qdq_to_int8 in passes/pass.h),
// listed in the "int8" pipeline of passes/registry.cc; every refusal carries
// its reason (the optimizer report's "refused" entries; optimize_graph(...,
// explain=True) also keeps the quiet not-applicable ones).
// Whatever it refuses keeps running in float through the Q/DQ kernels:
// correct (the model's own fake-quant arithmetic), only slower.
#pragma once

#include <cstdint>
#include <string>

#include "ir/graph.h"

namespace engine {

// Runs lower_qdq_to_int8 then eliminate_dead_code (the Q/DQ nodes the
// rewrites orphaned) on `g` in place; re-infers shapes and verifies. The
// full int8 pipeline (float16 widening, BatchNorm canonicalization, fusion
// of what stays float) is run_passes with pipeline "int8".
void lower_qdq_to_int8(Graph& g);

// Whether `v` = DequantizeLinear(q) with q int8, one positive float32 scale
// and one int8 zero point (or none): "" with q, scale and zero point set, or
// why not, naming `what`.
std::string match_act_dq(const Value* v, const char* what, Value** q, float* scale, int32_t* zero_point);

}  // namespace engine
