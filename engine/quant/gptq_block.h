// GPTQ's column sweep over one block of a weight matrix (pyengine/gptq.py
// drives the layer: Hessian, its inverse Cholesky factor, the blocks, and
// the propagation of each block's error to the columns after it).
//
// For each row r of w [rows x b] (row stride ldw), columns i = 0 .. b - 1 in
// order:
//   q[r, i]   = clamp(round_half_even(w[r, i] / scale[r]), -127, 127)
//   err[r, i] = (w[r, i] - q[r, i] * scale[r]) / u[i, i]
//   w[r, t]  -= err[r, i] * u[i, t]          for t = i + 1 .. b - 1
// with u [b x b] (row stride ldu) the block's part of the upper triangular
// factor U (U^T U = H^-1). Rows are independent. Every operation is a
// float32 operation in that order, none fused (this file is compiled with
// -ffp-contract=off), so the levels and errors are bit for bit those of the
// same steps in numpy, whatever the FPU rounding mode (quantize_level).
// q and err are [rows x b], row stride b; w is updated in place.
#pragma once

#include <cstdint>

namespace engine {

void gptq_block(float* w, int64_t rows, int64_t b, int64_t ldw, const float* u, int64_t ldu, const float* scale,
                float* q, float* err);

}  // namespace engine
