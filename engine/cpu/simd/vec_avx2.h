// AVX2+FMA float32 vector math and activations, eight lanes: the one copy
// every AVX2 kernel family uses (conv/gemm epilogues, elementwise, softmax,
// pooling), so a fused activation and the standalone op give bit-identical
// results. vec_avx512.h has the same operations, op for op, on 16 lanes (so
// the two tiers agree bit for bit too); vec_scalar.h has the reference
// formulas.
//
// Worst errors against double precision, measured on every 7th to 29th
// float of the whole useful range when they were written: exp 1.01 ulp,
// tanh 1.32 ulp, erf 1.55 ulp, sigmoid 2.3 ulp. The tests hold them to
// 3 ulp of <cmath> through the reference kernels.
//
//   exp   Cody-Waite: x = n ln2 + r, |r| <= ln2/2, e^r by the Cephes expf
//         polynomial (degree 6), times 2^n applied in two halves so that
//         subnormal results and overflow to inf come out right.
//   tanh  |x| < 0.625: x + x^3 P(x^2) (Cephes tanhf); else 1 - 2/(e^{2|x|} + 1)
//         with the sign restored.
//   erf   |x| < 0.5:  y = c0 x (c0 = 2/sqrt(pi) as a hi+lo pair), erf = y + y w(x^2)
//         with w a degree-5 polynomial; 0.5 <= |x| < 4: one degree-7
//         polynomial in (|x| - centre) per interval of width 0.5, picked
//         with a lane permute (7 intervals fit one 8-lane register per
//         coefficient); |x| >= 3.919206 (where erf rounds to 1): 1.
//         Coefficients: least-squares fits on Chebyshev nodes against
//         mpmath, each coefficient rounded to float in turn and the rest
//         refitted.
//
// NaN and Inf (see vec_scalar.h for the semantics): maxps/minps return
// their SECOND operand when either is NaN, so every clamp here is written
// max(bound, x) / min(bound, x): a NaN x falls through. The reductions'
// max_nan / min_nan propagate a NaN from either operand.
//
// Include only from *_avx2.cc files. Everything here has internal linkage,
// so the linker can never pick a copy compiled with AVX-512 flags for an
// AVX2 caller (or the other way round).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace engine {
namespace simd {
namespace avx2 {
namespace {

constexpr int kLanes = 8;

inline __m256 v_set(float v) { return _mm256_set1_ps(v); }

// Lanes [0, r) set, for tails of r in [1, 8).
inline __m256i tail_mask(int64_t r) {
  alignas(32) static const int32_t kTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kTable + 8 - r));
}

inline __m256 v_abs(__m256 x) { return _mm256_andnot_ps(v_set(-0.f), x); }
inline __m256 v_sign(__m256 x) { return _mm256_and_ps(v_set(-0.f), x); }

inline __m256 v_exp(__m256 x) {
  // Beyond 88.8 the result is +inf (2^128 below), below -104 it rounds to 0.
  x = _mm256_min_ps(v_set(88.8f), x);
  x = _mm256_max_ps(v_set(-104.f), x);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, v_set(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // With FMA, n*ln2_hi is exact inside the fused op; ln2_lo carries the rest.
  __m256 r = _mm256_fnmadd_ps(n, v_set(0.693147182464599609375f), x);
  r = _mm256_fnmadd_ps(n, v_set(-1.904654299957768e-09f), r);
  __m256 p = v_set(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, v_set(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, v_set(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, v_set(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, v_set(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, v_set(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r);
  p = _mm256_add_ps(p, v_set(1.f));
  // n in [-150, 128]: split so each factor 2^k has k in [-75, 64] (normal).
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i n1 = _mm256_srai_epi32(ni, 1);
  const __m256i n2 = _mm256_sub_epi32(ni, n1);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
  return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

// sigmoid(x) = 1 / (1 + e) for x >= 0 and e / (1 + e) for x < 0, with
// e = exp(-|x|) <= 1: the textbook 1 / (1 + exp(-x)) rounds 1 + exp(-x) at a
// large magnitude for negative x and loses a few ulp there.
inline __m256 v_sigmoid(__m256 x) {
  const __m256 one = v_set(1.f);
  const __m256 e = v_exp(_mm256_or_ps(v_abs(x), v_set(-0.f)));
  const __m256 num = _mm256_blendv_ps(one, e, _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ));
  return _mm256_div_ps(num, _mm256_add_ps(one, e));
}

inline __m256 v_tanh(__m256 x) {
  const __m256 ax = v_abs(x);
  const __m256 z = _mm256_mul_ps(x, x);
  __m256 p = v_set(-5.70498872745e-3f);
  p = _mm256_fmadd_ps(p, z, v_set(2.06390887954e-2f));
  p = _mm256_fmadd_ps(p, z, v_set(-5.37397155531e-2f));
  p = _mm256_fmadd_ps(p, z, v_set(1.33314422036e-1f));
  p = _mm256_fmadd_ps(p, z, v_set(-3.33332819422e-1f));
  const __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(p, z), ax, ax);
  const __m256 e = v_exp(_mm256_add_ps(ax, ax));
  const __m256 one = v_set(1.f);
  const __m256 large = _mm256_sub_ps(one, _mm256_div_ps(v_set(2.f), _mm256_add_ps(e, one)));
  // Both halves work on |x|, so tanh(-0) = -0 like std::tanh.
  const __m256 r = _mm256_blendv_ps(large, small, _mm256_cmp_ps(ax, v_set(0.625f), _CMP_LT_OQ));
  return _mm256_or_ps(r, v_sign(x));
}

// Piecewise coefficients for 0.5 <= |x| < 4: interval i = [0.5 + 0.5i,
// 1 + 0.5i), polynomial in u = |x| - (0.75 + 0.5i); lane 7 is unused.
alignas(32) static const float kErfTable[8][8] = {
    {7.111556530e-01f, 9.229001403e-01f, 9.866716862e-01f, 9.985373020e-01f, 9.998993874e-01f, 9.999957085e-01f, 9.999998808e-01f, 0.f},
    {6.429310441e-01f, 2.365211248e-01f, 5.277499557e-02f, 7.142319344e-03f, 5.862772814e-04f, 2.918901191e-05f, 8.814288321e-07f, 0.f},
    {-4.822006822e-01f, -2.956531942e-01f, -9.235812724e-02f, -1.607255265e-02f, -1.613454195e-03f, -9.630744898e-05f, -2.604195288e-06f, 0.f},
    {2.679095976e-02f, 1.675356179e-01f, 9.015737474e-02f, 2.172449976e-02f, 2.760380739e-03f, 1.958126086e-04f, 7.970329534e-06f, 0.f},
    {1.507564783e-01f, -6.085709203e-03f, -4.804389551e-02f, -1.901160367e-02f, -3.219734412e-03f, -2.401497040e-04f, -3.624543024e-05f, 0.f},
    {-5.328866839e-02f, -4.717908427e-02f, 6.618825719e-03f, 1.066041365e-02f, 2.756279660e-03f, 3.136294836e-04f, 1.833001261e-05f, 0.f},
    {-2.732272819e-02f, 2.017451823e-02f, 8.485947736e-03f, -3.480330110e-03f, -2.015056089e-03f, -6.945103523e-04f, 1.846563391e-04f, 0.f},
    {1.847940125e-02f, 3.683138173e-03f, -5.936120637e-03f, -7.244934677e-04f, 6.359058316e-04f, 1.735909609e-04f, 1.714510836e-05f, 0.f},
};

inline __m256 v_erf(__m256 x) {
  const __m256 ax = v_abs(x);
  // |x| < 0.5.
  const __m256 z = _mm256_mul_ps(ax, ax);
  __m256 w = v_set(-7.837350713089108e-04f);
  w = _mm256_fmadd_ps(w, z, v_set(4.665479063987732e-03f));
  w = _mm256_fmadd_ps(w, z, v_set(-2.381734177470207e-02f));
  w = _mm256_fmadd_ps(w, z, v_set(1.000005602836609e-01f));
  w = _mm256_fmadd_ps(w, z, v_set(-3.333333432674408e-01f));
  w = _mm256_mul_ps(w, z);
  const __m256 y = _mm256_fmadd_ps(ax, v_set(1.128379225730896f), _mm256_mul_ps(ax, v_set(-5.8635382771399236e-08f)));
  const __m256 small = _mm256_fmadd_ps(y, w, y);
  // 0.5 <= |x| < 4. NaN and inf give an index clamped into range; their
  // result is replaced below (inf) or stays NaN (u is NaN).
  __m256i idx = _mm256_cvttps_epi32(_mm256_add_ps(ax, ax));
  idx = _mm256_sub_epi32(idx, _mm256_set1_epi32(1));
  idx = _mm256_min_epi32(_mm256_max_epi32(idx, _mm256_setzero_si256()), _mm256_set1_epi32(6));
  const __m256 centre = _mm256_fmadd_ps(_mm256_cvtepi32_ps(idx), v_set(0.5f), v_set(0.75f));
  const __m256 u = _mm256_sub_ps(ax, centre);
  __m256 p = _mm256_permutevar8x32_ps(_mm256_load_ps(kErfTable[7]), idx);
  for (int k = 6; k >= 0; --k)
    p = _mm256_fmadd_ps(p, u, _mm256_permutevar8x32_ps(_mm256_load_ps(kErfTable[k]), idx));
  p = _mm256_blendv_ps(p, v_set(1.f), _mm256_cmp_ps(ax, v_set(3.919206f), _CMP_GE_OQ));
  const __m256 r = _mm256_blendv_ps(p, small, _mm256_cmp_ps(ax, v_set(0.5f), _CMP_LT_OQ));
  return _mm256_or_ps(r, v_sign(x));
}


// ---------------------------------------------------------------------------
// Activations: the formulas of vec_scalar.h.

inline __m256 relu(__m256 x) { return _mm256_max_ps(_mm256_setzero_ps(), x); }
inline __m256 leaky_relu(__m256 x, __m256 alpha) {
  return _mm256_blendv_ps(x, _mm256_mul_ps(alpha, x), _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ));
}
inline __m256 clip(__m256 x, __m256 lo, __m256 hi) { return _mm256_min_ps(hi, _mm256_max_ps(lo, x)); }
inline __m256 sigmoid(__m256 x) { return v_sigmoid(x); }
inline __m256 hard_sigmoid(__m256 x, __m256 alpha, __m256 beta) {
  const __m256 t = _mm256_min_ps(v_set(1.f), _mm256_fmadd_ps(alpha, x, beta));
  return _mm256_max_ps(_mm256_setzero_ps(), t);
}
inline __m256 hard_swish(__m256 x) {
  __m256 t = _mm256_fmadd_ps(x, v_set(1.f / 6.f), v_set(0.5f));
  t = _mm256_max_ps(_mm256_setzero_ps(), _mm256_min_ps(v_set(1.f), t));
  return _mm256_mul_ps(x, t);
}
inline __m256 silu(__m256 x) { return _mm256_mul_ps(x, v_sigmoid(x)); }
inline __m256 gelu(__m256 x) {
  const __m256 e = v_erf(_mm256_mul_ps(x, v_set(0.70710678118654752f)));
  return _mm256_mul_ps(_mm256_mul_ps(v_set(0.5f), x), _mm256_add_ps(v_set(1.f), e));
}
inline __m256 gelu_tanh(__m256 x) {
  const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
  const __m256 inner = _mm256_mul_ps(v_set(0.79788456080286536f), _mm256_fmadd_ps(v_set(0.044715f), x3, x));
  return _mm256_mul_ps(_mm256_mul_ps(v_set(0.5f), x), _mm256_add_ps(v_set(1.f), v_tanh(inner)));
}

// ---------------------------------------------------------------------------
// NaN-propagating max / min: maxps(a, b) already returns b (the NaN) when b
// is NaN; a NaN a is put back by the blend.
inline __m256 max_nan(__m256 a, __m256 b) {
  return _mm256_blendv_ps(_mm256_max_ps(a, b), a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
}
inline __m256 min_nan(__m256 a, __m256 b) {
  return _mm256_blendv_ps(_mm256_min_ps(a, b), a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
// Horizontal max / min, NaN-propagating.
inline float hmax(__m256 v) {
  alignas(32) float t[8];
  _mm256_store_ps(t, v);
  float m = t[0];
  for (int i = 1; i < 8; ++i) m = (m > t[i] || m != m) ? m : t[i];
  return m;
}
inline float hmin(__m256 v) {
  alignas(32) float t[8];
  _mm256_store_ps(t, v);
  float m = t[0];
  for (int i = 1; i < 8; ++i) m = (m < t[i] || m != m) ? m : t[i];
  return m;
}

}  // namespace
}  // namespace avx2
}  // namespace simd
}  // namespace engine
