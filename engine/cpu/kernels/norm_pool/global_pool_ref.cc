// Row reductions: sum (accumulated in double), max, min. They serve
// GlobalAveragePool / GlobalMaxPool (one row per (n, c) plane) and Reduce*
// over trailing axes. Reference: plain loops.
#include <algorithm>

#include "cpu/kernels/norm_pool/norm_pool.h"
#include "cpu/simd/vec_scalar.h"

namespace engine {

float row_sum_f32_ref(const float* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += x[i];
  return static_cast<float>(s);
}

// Max and min propagate NaN wherever it sits (numpy's max, the ONNX
// reference); onnxruntime's ReduceMax / GlobalMaxPool skip it.
float row_max_f32_ref(const float* x, int64_t n) {
  float m = n > 0 ? x[0] : 0.f;
  for (int64_t i = 1; i < n; ++i) m = simd::scalar::max_nan(m, x[i]);
  return m;
}

float row_min_f32_ref(const float* x, int64_t n) {
  float m = n > 0 ? x[0] : 0.f;
  for (int64_t i = 1; i < n; ++i) m = simd::scalar::min_nan(m, x[i]);
  return m;
}

}  // namespace engine
