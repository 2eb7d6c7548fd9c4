// AVX2+FMA float32 math for the elementwise loops: exp, tanh, erf, sigmoid,
// eight lanes at a time, accurate to about 1-2 ulp of the correctly rounded
// result (checked exhaustively against double precision when they were
// written, and against <cmath> by the tests through the reference kernels).
//
//   exp   Cody-Waite: x = n ln2 + r, |r| <= ln2/2, e^r by the Cephes expf
//         polynomial (degree 6), times 2^n applied in two halves so that
//         subnormal results and overflow to inf come out right. <= 1 ulp.
//   tanh  |x| < 0.625: x + x^3 P(x^2) (Cephes tanhf); else 1 - 2/(e^{2|x|} + 1)
//         with the sign restored. <= 2 ulp.
//   erf   |x| < 0.5:  y = c0 x (c0 = 2/sqrt(pi) as a hi+lo pair), erf = y + y w(x^2)
//         with w a degree-5 polynomial; 0.5 <= |x| < 4: one degree-7
//         polynomial in (|x| - centre) per interval of width 0.5, picked
//         with a lane permute (7 intervals fit one 8-lane register per
//         coefficient); |x| >= 3.919206 (where erf rounds to 1): 1.
//         Coefficients: least-squares fits on Chebyshev nodes against
//         mpmath, each coefficient rounded to float in turn and the rest
//         refitted. <= 1.5 ulp.
//   NaN propagates through all of them; min/max operand order below is
//   chosen for that (maxps/minps return the second operand on NaN).
//
// Include only from *_avx2.cc files. Everything here has internal linkage,
// so no AVX2 code can be picked by the linker for a non-AVX2 caller.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace engine {
namespace eltwise {
namespace {

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

inline __m256 v_sigmoid(__m256 x) {
  const __m256 one = v_set(1.f);
  return _mm256_div_ps(one, _mm256_add_ps(one, v_exp(_mm256_sub_ps(_mm256_setzero_ps(), x))));
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

}  // namespace
}  // namespace eltwise
}  // namespace engine
