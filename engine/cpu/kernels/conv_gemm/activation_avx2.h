// AVX2 activations of the conv_gemm epilogue, 8 floats at a time. Include
// only from *_avx2.cc files (they are compiled with -mavx2 -mfma).
//
// exp: Cody-Waite range reduction x = n*ln2 + r, a degree-6 polynomial for
//   e^r on |r| <= ln2/2, and 2^n built in the exponent bits; relative error
//   about 2 ulp on [-87, 88] (inputs are clamped there, so no inf/NaN from
//   overflow).
// erf: Abramowitz & Stegun 7.1.26, absolute error <= 1.5e-7, enough for Gelu
//   at the family's 1e-4 tolerance and cheaper than a minimax rational.
#pragma once

#include <immintrin.h>

#include "cpu/kernels/conv_gemm/conv_gemm.h"

namespace engine {
namespace conv_gemm {

inline __m256 exp_avx2(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

inline __m256 sigmoid_avx2(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f);
  return _mm256_div_ps(one, _mm256_add_ps(one, exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

inline __m256 erf_avx2(__m256 x) {
  const __m256 sign = _mm256_and_ps(x, _mm256_set1_ps(-0.0f));
  const __m256 ax = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), ax, one));
  __m256 p = _mm256_set1_ps(1.061405429f);
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.453152027f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.421413741f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.284496736f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.254829592f));
  p = _mm256_mul_ps(p, t);
  const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(ax, ax)));
  const __m256 y = _mm256_fnmadd_ps(p, e, one);
  return _mm256_or_ps(y, sign);
}

// The activation as a functor per kind, so callers hoist the switch out of
// their loops (see apply_act).
template <Act A>
struct ActOp {
  __m256 p0, p1;
  explicit ActOp(const Activation& a) : p0(_mm256_set1_ps(a.p0)), p1(_mm256_set1_ps(a.p1)) {}
  __m256 operator()(__m256 x) const {
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
    if constexpr (A == Act::kNone) return x;
    if constexpr (A == Act::kRelu) return _mm256_max_ps(x, zero);
    if constexpr (A == Act::kClip) return _mm256_min_ps(_mm256_max_ps(x, p0), p1);
    if constexpr (A == Act::kLeakyRelu)
      return _mm256_blendv_ps(x, _mm256_mul_ps(x, p0), _mm256_cmp_ps(x, zero, _CMP_LT_OQ));
    if constexpr (A == Act::kSigmoid) return sigmoid_avx2(x);
    if constexpr (A == Act::kHardSwish) {
      const __m256 h = _mm256_fmadd_ps(x, _mm256_set1_ps(1.0f / 6.0f), _mm256_set1_ps(0.5f));
      return _mm256_mul_ps(x, _mm256_min_ps(_mm256_max_ps(h, zero), one));
    }
    if constexpr (A == Act::kSiLU) return _mm256_mul_ps(x, sigmoid_avx2(x));
    if constexpr (A == Act::kGelu) {
      const __m256 e = erf_avx2(_mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f)));
      return _mm256_mul_ps(_mm256_mul_ps(x, _mm256_set1_ps(0.5f)), _mm256_add_ps(one, e));
    }
    if constexpr (A == Act::kHardSigmoid) return _mm256_min_ps(_mm256_max_ps(_mm256_fmadd_ps(x, p0, p1), zero), one);
    return x;
  }
};

// Calls f(ActOp<kind>{act}) with the kind resolved at compile time.
template <typename F>
inline void with_act(const Activation& act, F&& f) {
  switch (act.kind) {
    case Act::kNone: f(ActOp<Act::kNone>(act)); break;
    case Act::kRelu: f(ActOp<Act::kRelu>(act)); break;
    case Act::kClip: f(ActOp<Act::kClip>(act)); break;
    case Act::kLeakyRelu: f(ActOp<Act::kLeakyRelu>(act)); break;
    case Act::kSigmoid: f(ActOp<Act::kSigmoid>(act)); break;
    case Act::kHardSwish: f(ActOp<Act::kHardSwish>(act)); break;
    case Act::kSiLU: f(ActOp<Act::kSiLU>(act)); break;
    case Act::kGelu: f(ActOp<Act::kGelu>(act)); break;
    case Act::kHardSigmoid: f(ActOp<Act::kHardSigmoid>(act)); break;
  }
}

// Masks for partial vectors: lane i is on when i < count (0..8).
inline __m256i tail_mask(int count) {
  alignas(32) static const int32_t kTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kTable + 8 - count));
}

}  // namespace conv_gemm
}  // namespace engine
