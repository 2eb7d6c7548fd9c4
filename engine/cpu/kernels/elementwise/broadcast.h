// numpy broadcasting as rows of an inner loop.
//
// A BroadcastPlan describes how K operands map onto an output shape: per
// output dimension, each operand's element stride (0 where it is broadcast).
// Output dims of size 1 are dropped and adjacent dims are merged wherever
// every operand is contiguous across them, so the common cases collapse:
//   same shape                 -> one row of numel elements, strides 1
//   x op scalar                -> one row, scalar stride 0
//   (N,C,H,W) op (1,C,1,1)     -> dims [N, C, HW], scalar per row
//   (N,C,H,W) op (N,C,1,1)     -> dims [NC, HW], scalar per row (SE gates)
// for_each_row then walks any flat range [begin, end) of the output (a
// thread's share) as rows of the innermost dim, where each operand's stride
// is 0 or 1: exactly what the loops in elementwise.h take.
//
// Not for *_avx2.cc files: the walker is a template, and instantiating it in
// an AVX2-compiled file could let the linker hand AVX2 code to the reference
// path. The walker calls the ISA-specific loops through function pointers.
#pragma once

#include <cstdint>

#include "core/error.h"
#include "core/tensor.h"

namespace engine {
namespace eltwise {

constexpr int kMaxBroadcastRank = 16;
constexpr int kMaxOperands = 3;

struct BroadcastPlan {
  int rank = 1;          // after merging; at least 1
  int num_operands = 0;
  int64_t numel = 0;     // output elements
  int64_t dims[kMaxBroadcastRank];
  int64_t strides[kMaxOperands][kMaxBroadcastRank];
};

// Builds the plan for operands of shapes in[0..k) broadcast to `out` (which
// must be their broadcast shape, or larger, as for variadic ops whose running
// result already has the final shape). Throws kShape when an operand does not
// broadcast to `out`, kUnsupportedOperator past kMaxBroadcastRank dims.
void make_broadcast_plan(const Shape& out, const Shape* const* in, int k, BroadcastPlan* plan);

// Calls row(off, s, pos, n) for consecutive rows covering output elements
// [begin, end): off[i] is operand i's element offset of the row start,
// s[i] its stride within the row (0 or 1), pos the output offset, n the row
// length.
template <typename F>
void for_each_row(const BroadcastPlan& p, int64_t begin, int64_t end, F&& row) {
  const int r = p.rank, k = p.num_operands;
  int64_t idx[kMaxBroadcastRank];
  int64_t off[kMaxOperands] = {0, 0, 0};
  int s[kMaxOperands] = {0, 0, 0};
  int64_t rem = begin;
  for (int d = r - 1; d >= 0; --d) {
    idx[d] = rem % p.dims[d];
    rem /= p.dims[d];
    for (int i = 0; i < k; ++i) off[i] += idx[d] * p.strides[i][d];
  }
  for (int i = 0; i < k; ++i) s[i] = static_cast<int>(p.strides[i][r - 1]);
  const int64_t inner = p.dims[r - 1];
  int64_t pos = begin;
  while (pos < end) {
    int64_t n = inner - idx[r - 1];
    if (n > end - pos) n = end - pos;
    row(off, s, pos, n);
    pos += n;
    idx[r - 1] += n;
    for (int i = 0; i < k; ++i) off[i] += n * s[i];
    if (idx[r - 1] < inner) break;  // only the last row of a range ends early
    idx[r - 1] = 0;
    for (int i = 0; i < k; ++i) off[i] -= inner * s[i];
    for (int d = r - 2; d >= 0; --d) {
      ++idx[d];
      for (int i = 0; i < k; ++i) off[i] += p.strides[i][d];
      if (idx[d] < p.dims[d]) break;
      idx[d] = 0;
      for (int i = 0; i < k; ++i) off[i] -= p.dims[d] * p.strides[i][d];
    }
  }
}

}  // namespace eltwise
}  // namespace engine
