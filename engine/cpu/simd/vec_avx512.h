// AVX-512 (F/DQ) float32 vector math and activations, sixteen lanes: the
// operations of vec_avx2.h one for one (same constants, same order of
// roundings, blends where AVX2 blends), so the AVX-512 tier's activations,
// exp and erf give bit-identical results to the AVX2 tier's, and fused and
// standalone activations agree on every tier. See vec_avx2.h for the
// algorithms and error bounds and vec_scalar.h for the NaN/Inf semantics:
// maxps/minps return their SECOND operand when either is NaN, so clamps are
// max(bound, x) / min(bound, x).
//
// Include only from *_avx512*.cc files (compiled with -mavx512f/bw/vl/dq).
// Internal linkage, like vec_avx2.h, so no copy crosses tiers at link time.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace engine {
namespace simd {
namespace avx512 {
namespace {

constexpr int kLanes = 16;

inline __m512 v_set(float v) { return _mm512_set1_ps(v); }

// Lanes [0, r) set, for r in [0, 16].
inline __mmask16 tail_mask(int64_t r) { return static_cast<__mmask16>((1u << r) - 1u); }

inline __m512 v_abs(__m512 x) { return _mm512_andnot_ps(v_set(-0.f), x); }
inline __m512 v_sign(__m512 x) { return _mm512_and_ps(v_set(-0.f), x); }
inline __m512 v_blend(__m512 a, __m512 b, __mmask16 m) { return _mm512_mask_blend_ps(m, a, b); }

inline __m512 v_exp(__m512 x) {
  x = _mm512_min_ps(v_set(88.8f), x);
  x = _mm512_max_ps(v_set(-104.f), x);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, v_set(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, v_set(0.693147182464599609375f), x);
  r = _mm512_fnmadd_ps(n, v_set(-1.904654299957768e-09f), r);
  __m512 p = v_set(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, v_set(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, v_set(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, v_set(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, v_set(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, v_set(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);
  p = _mm512_add_ps(p, v_set(1.f));
  const __m512i ni = _mm512_cvtps_epi32(n);
  const __m512i n1 = _mm512_srai_epi32(ni, 1);
  const __m512i n2 = _mm512_sub_epi32(ni, n1);
  const __m512i bias = _mm512_set1_epi32(127);
  const __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n1, bias), 23));
  const __m512 s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n2, bias), 23));
  return _mm512_mul_ps(_mm512_mul_ps(p, s1), s2);
}

inline __m512 v_sigmoid(__m512 x) {
  const __m512 one = v_set(1.f);
  const __m512 e = v_exp(_mm512_or_ps(v_abs(x), v_set(-0.f)));
  const __m512 num = v_blend(one, e, _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ));
  return _mm512_div_ps(num, _mm512_add_ps(one, e));
}

inline __m512 v_tanh(__m512 x) {
  const __m512 ax = v_abs(x);
  const __m512 z = _mm512_mul_ps(x, x);
  __m512 p = v_set(-5.70498872745e-3f);
  p = _mm512_fmadd_ps(p, z, v_set(2.06390887954e-2f));
  p = _mm512_fmadd_ps(p, z, v_set(-5.37397155531e-2f));
  p = _mm512_fmadd_ps(p, z, v_set(1.33314422036e-1f));
  p = _mm512_fmadd_ps(p, z, v_set(-3.33332819422e-1f));
  const __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(p, z), ax, ax);
  const __m512 e = v_exp(_mm512_add_ps(ax, ax));
  const __m512 one = v_set(1.f);
  const __m512 large = _mm512_sub_ps(one, _mm512_div_ps(v_set(2.f), _mm512_add_ps(e, one)));
  const __m512 r = v_blend(large, small, _mm512_cmp_ps_mask(ax, v_set(0.625f), _CMP_LT_OQ));
  return _mm512_or_ps(r, v_sign(x));
}

// vec_avx2.h's table; each row is broadcast to both halves of a zmm and
// indexed with the same 0..6 interval numbers.
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

inline __m512 erf_row(int k, __m512i idx) {
  return _mm512_permutexvar_ps(idx, _mm512_broadcast_f32x8(_mm256_load_ps(kErfTable[k])));
}

inline __m512 v_erf(__m512 x) {
  const __m512 ax = v_abs(x);
  const __m512 z = _mm512_mul_ps(ax, ax);
  __m512 w = v_set(-7.837350713089108e-04f);
  w = _mm512_fmadd_ps(w, z, v_set(4.665479063987732e-03f));
  w = _mm512_fmadd_ps(w, z, v_set(-2.381734177470207e-02f));
  w = _mm512_fmadd_ps(w, z, v_set(1.000005602836609e-01f));
  w = _mm512_fmadd_ps(w, z, v_set(-3.333333432674408e-01f));
  w = _mm512_mul_ps(w, z);
  const __m512 y = _mm512_fmadd_ps(ax, v_set(1.128379225730896f), _mm512_mul_ps(ax, v_set(-5.8635382771399236e-08f)));
  const __m512 small = _mm512_fmadd_ps(y, w, y);
  __m512i idx = _mm512_cvttps_epi32(_mm512_add_ps(ax, ax));
  idx = _mm512_sub_epi32(idx, _mm512_set1_epi32(1));
  idx = _mm512_min_epi32(_mm512_max_epi32(idx, _mm512_setzero_si512()), _mm512_set1_epi32(6));
  const __m512 centre = _mm512_fmadd_ps(_mm512_cvtepi32_ps(idx), v_set(0.5f), v_set(0.75f));
  const __m512 u = _mm512_sub_ps(ax, centre);
  __m512 p = erf_row(7, idx);
  for (int k = 6; k >= 0; --k) p = _mm512_fmadd_ps(p, u, erf_row(k, idx));
  p = v_blend(p, v_set(1.f), _mm512_cmp_ps_mask(ax, v_set(3.919206f), _CMP_GE_OQ));
  const __m512 r = v_blend(p, small, _mm512_cmp_ps_mask(ax, v_set(0.5f), _CMP_LT_OQ));
  return _mm512_or_ps(r, v_sign(x));
}

// ---------------------------------------------------------------------------
// Activations: the formulas of vec_scalar.h, ops as in vec_avx2.h.

inline __m512 relu(__m512 x) { return _mm512_max_ps(_mm512_setzero_ps(), x); }
inline __m512 leaky_relu(__m512 x, __m512 alpha) {
  return v_blend(x, _mm512_mul_ps(alpha, x), _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ));
}
inline __m512 clip(__m512 x, __m512 lo, __m512 hi) { return _mm512_min_ps(hi, _mm512_max_ps(lo, x)); }
inline __m512 sigmoid(__m512 x) { return v_sigmoid(x); }
inline __m512 hard_sigmoid(__m512 x, __m512 alpha, __m512 beta) {
  const __m512 t = _mm512_min_ps(v_set(1.f), _mm512_fmadd_ps(alpha, x, beta));
  return _mm512_max_ps(_mm512_setzero_ps(), t);
}
inline __m512 hard_swish(__m512 x) {
  __m512 t = _mm512_fmadd_ps(x, v_set(1.f / 6.f), v_set(0.5f));
  t = _mm512_max_ps(_mm512_setzero_ps(), _mm512_min_ps(v_set(1.f), t));
  return _mm512_mul_ps(x, t);
}
inline __m512 silu(__m512 x) { return _mm512_mul_ps(x, v_sigmoid(x)); }
inline __m512 gelu(__m512 x) {
  const __m512 e = v_erf(_mm512_mul_ps(x, v_set(0.70710678118654752f)));
  return _mm512_mul_ps(_mm512_mul_ps(v_set(0.5f), x), _mm512_add_ps(v_set(1.f), e));
}
inline __m512 gelu_tanh(__m512 x) {
  const __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
  const __m512 inner = _mm512_mul_ps(v_set(0.79788456080286536f), _mm512_fmadd_ps(v_set(0.044715f), x3, x));
  return _mm512_mul_ps(_mm512_mul_ps(v_set(0.5f), x), _mm512_add_ps(v_set(1.f), v_tanh(inner)));
}

// NaN-propagating max / min (see vec_avx2.h).
inline __m512 max_nan(__m512 a, __m512 b) {
  return v_blend(_mm512_max_ps(a, b), a, _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q));
}
inline __m512 min_nan(__m512 a, __m512 b) {
  return v_blend(_mm512_min_ps(a, b), a, _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q));
}

inline float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }

}  // namespace
}  // namespace avx512
}  // namespace simd
}  // namespace engine
