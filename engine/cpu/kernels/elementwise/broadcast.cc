// BroadcastPlan construction (see broadcast.h): right-align each operand's
// shape with the output, give broadcast dims stride 0, drop size-1 output
// dims, then merge neighbours d, d+1 wherever every operand satisfies
// stride[d] == stride[d+1] * dims[d+1] (true both for contiguous runs and for
// runs that are broadcast in both dims), so rows come out as long as possible.
#include "cpu/kernels/elementwise/broadcast.h"

namespace engine {
namespace eltwise {

void make_broadcast_plan(const Shape& out, const Shape* const* in, int k, BroadcastPlan* plan) {
  ENGINE_CHECK(k >= 1 && k <= kMaxOperands);
  const int rank = static_cast<int>(out.size());
  plan->num_operands = k;
  plan->numel = shape_numel(out);

  // Per-operand strides over the full output rank, right-aligned.
  int64_t full[kMaxOperands][64];
  ENGINE_ENFORCE(rank <= 64, kUnsupportedOperator, "elementwise op on a tensor of rank ", rank,
                 " (at most 64 is supported)");
  for (int i = 0; i < k; ++i) {
    const Shape& s = *in[i];
    const int r = static_cast<int>(s.size());
    ENGINE_ENFORCE(r <= rank, kShape, "operand of shape ", shape_str(s), " does not broadcast to ",
                   shape_str(out));
    int64_t stride = 1;
    for (int d = rank - 1; d >= 0; --d) {
      const int sd = d - (rank - r);
      const int64_t dim = sd >= 0 ? s[sd] : 1;
      ENGINE_ENFORCE(dim == out[d] || dim == 1, kShape, "operand of shape ", shape_str(s),
                     " does not broadcast to ", shape_str(out));
      full[i][d] = dim == 1 ? 0 : stride;
      stride *= dim;
    }
  }

  // Drop size-1 dims and merge, walking from the innermost dim outwards so
  // the merged dims are built in reverse, then flipped.
  int64_t dims[64];
  int64_t strides[kMaxOperands][64];
  int n = 0;
  for (int d = rank - 1; d >= 0; --d) {
    if (out[d] == 1) continue;
    bool merge = n > 0;
    for (int i = 0; merge && i < k; ++i) merge = full[i][d] == strides[i][n - 1] * dims[n - 1];
    if (merge) {
      dims[n - 1] *= out[d];
      continue;
    }
    dims[n] = out[d];
    for (int i = 0; i < k; ++i) strides[i][n] = full[i][d];
    ++n;
  }
  // A merged dim keeps its innermost part's strides: that is the element
  // step along the whole merged run.
  if (n == 0) {  // scalar output, or all dims 1
    dims[0] = 1;
    for (int i = 0; i < k; ++i) strides[i][0] = 0;
    n = 1;
  }
  ENGINE_ENFORCE(n <= kMaxBroadcastRank, kUnsupportedOperator, "elementwise broadcast over ", n,
                 " non-mergeable dims (at most ", kMaxBroadcastRank, " are supported)");
  plan->rank = n;
  for (int j = 0; j < n; ++j) {
    plan->dims[j] = dims[n - 1 - j];
    for (int i = 0; i < k; ++i) plan->strides[i][j] = strides[i][n - 1 - j];
  }
}

}  // namespace eltwise
}  // namespace engine
