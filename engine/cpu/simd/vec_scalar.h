// Scalar float32 math and activations: the one definition every reference
// kernel uses (elementwise unary_ref.cc, the conv/gemm reference epilogue,
// pooling and reductions), so a fused activation and the standalone op
// compute the same expression. The SIMD tiers (vec_avx2.h, vec_avx512.h)
// implement the same formulas lane-wise.
//
// IEEE semantics, as onnxruntime and numpy have them:
//   - NaN in, NaN out, for every activation (Relu and Clip included: the
//     comparisons are written so that a NaN operand falls through to x).
//   - +-Inf follow the formula: Relu(-inf) = 0, Sigmoid(+-inf) = 1 / 0,
//     HardSwish(-inf) = -inf * 0 = NaN and Gelu(-inf) = NaN, like onnxruntime
//     (which also evaluates x * gate(x)).
//   - max/min reductions propagate NaN (max_nan / min_nan below): any NaN
//     operand gives NaN, whatever its position.
#pragma once

#include <cmath>

namespace engine {
namespace simd {
namespace scalar {

inline float relu(float x) { return x < 0.f ? 0.f : x; }
inline float leaky_relu(float x, float alpha) { return x < 0.f ? alpha * x : x; }
// lo > hi gives hi, as ONNX says.
inline float clip(float x, float lo, float hi) {
  const float t = lo > x ? lo : x;
  return hi < t ? hi : t;
}
// e^x / (1 + e^x) for x < 0: 1 + exp(-x) would be rounded at a large
// magnitude and cost a few ulp.
inline float sigmoid(float x) {
  if (x < 0.f) {
    const float e = std::exp(x);
    return e / (1.f + e);
  }
  return 1.f / (1.f + std::exp(-x));
}
inline float hard_sigmoid(float x, float alpha, float beta) {
  float t = alpha * x + beta;
  t = 1.f < t ? 1.f : t;
  return 0.f > t ? 0.f : t;
}
inline float hard_swish(float x) { return x * hard_sigmoid(x, 1.f / 6.f, 0.5f); }
inline float silu(float x) { return x * sigmoid(x); }
inline float gelu(float x) { return 0.5f * x * (1.f + std::erf(x * 0.70710678118654752f)); }
inline float gelu_tanh(float x) {
  return 0.5f * x * (1.f + std::tanh(0.79788456080286536f * (x + 0.044715f * x * x * x)));
}

// NaN-propagating max / min (std::max drops a NaN in its second operand).
inline float max_nan(float a, float b) { return (a > b || a != a) ? a : b; }
inline float min_nan(float a, float b) { return (a < b || a != a) ? a : b; }

}  // namespace scalar
}  // namespace simd
}  // namespace engine
