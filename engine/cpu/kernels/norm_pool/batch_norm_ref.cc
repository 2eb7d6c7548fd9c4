// Per-channel affine y = (x - m) * a + b: inference BatchNorm with
// a = scale / sqrt(var + eps), and the apply step of Instance/Group norm.
// Reference: plain loops, the fallback and the oracle for the AVX2 version.
#include "cpu/kernels/norm_pool/norm_pool.h"

namespace engine {

void affine_row_f32_ref(const float* x, float* y, int64_t n, float m, float a, float b) {
  for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - m) * a + b;
}

void affine_vec_f32_ref(const float* x, float* y, int64_t n, const float* m, const float* a, const float* b) {
  for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - m[i]) * a[i] + b[i];
}

}  // namespace engine
