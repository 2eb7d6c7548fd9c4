// Reference ChannelAffine loops: y = x * scale[c] + shift[c] (the form the
// optimizer gives a BatchNormalization it cannot fold into a Conv).
// Two shapes of inner loop: one channel's spatial plane with a scalar
// scale/shift, and, for inputs with no spatial dims ([N, C]), a row of
// channels with per-element scale/shift. Written as a multiply then an add
// (no fma), so results may differ from the AVX2 loop by one rounding.
#include "cpu/kernels/elementwise/elementwise.h"

namespace engine {
namespace eltwise {
namespace {

void row_ref(const float* x, float* y, int64_t n, float s, float b) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * s + b;
}

void vec_ref(const float* x, const float* s, const float* b, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * s[i] + b[i];
}

}  // namespace

AffineRowFn affine_row_ref() { return row_ref; }
AffineVecFn affine_vec_ref() { return vec_ref; }

}  // namespace eltwise
}  // namespace engine
