// QAdd, AVX-512 (F/BW): 64 elements per step, the tail under a mask.
// qadd_one()'s operations (quant_kernels.h) on 16 lanes: each input minus
// its zero point in int32, to float, times its scale (the two products
// rounded before the add: no contraction), the add, the Relu as maxps with
// the scalar's operand order, the quotient in the form p.quotient names,
// the clamp, cvtps2dq under round-to-nearest-even, the zero point, and a
// saturating narrow (a no-op after the clamp). QAddKernel checks the
// reciprocal forms against qadd_one on every input pair before it uses them.
#include <immintrin.h>

#include "cpu/kernels/quant/quant_kernels.h"

// GCC 12's own avx512fintrin.h trips -Wmaybe-uninitialized (its
// _mm512_undefined_* helpers initialize a variable with itself).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace engine::qk {
namespace {

inline __m512 no_contract16(__m512 v) {
  __asm__("" : "+v"(v));
  return v;
}

template <QAddQuotient kQ>
void qadd_run(const int8_t* a, const int8_t* b, int8_t* y, int64_t n, const QAddParams& p) {
  const __m512 sa = _mm512_set1_ps(p.a_scale), sb = _mm512_set1_ps(p.b_scale);
  const __m512 sy = _mm512_set1_ps(p.y_scale), ry = _mm512_set1_ps(p.y_rcp);
  const __m512i za = _mm512_set1_epi32(p.a_zp), zb = _mm512_set1_epi32(p.b_zp), zy = _mm512_set1_epi32(p.y_zp);
  const __m512 lo = _mm512_set1_ps(static_cast<float>(-128 - p.y_zp));
  const __m512 hi = _mm512_set1_ps(static_cast<float>(127 - p.y_zp));
  const bool relu = p.relu;
  auto lanes16 = [&](__m128i a8, __m128i b8) {
    const __m512 va = no_contract16(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepi8_epi32(a8), za)), sa));
    const __m512 vb = no_contract16(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepi8_epi32(b8), zb)), sb));
    __m512 v = _mm512_add_ps(va, vb);
    if (relu) v = _mm512_max_ps(v, _mm512_setzero_ps());
    __m512 q;
    if constexpr (kQ == QAddQuotient::kDivide) {
      q = _mm512_div_ps(v, sy);
    } else if constexpr (kQ == QAddQuotient::kReciprocal) {
      q = _mm512_mul_ps(v, ry);
    } else {
      const __m512 q0 = _mm512_mul_ps(v, ry);
      q = _mm512_fmadd_ps(_mm512_fnmadd_ps(q0, sy, v), ry, q0);
    }
    q = _mm512_min_ps(_mm512_max_ps(q, lo), hi);
    return _mm512_cvtsepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(q), zy));
  };
  auto block64 = [&](__m512i a64, __m512i b64) {
    const __m128i r0 = lanes16(_mm512_castsi512_si128(a64), _mm512_castsi512_si128(b64));
    const __m128i r1 = lanes16(_mm512_extracti32x4_epi32(a64, 1), _mm512_extracti32x4_epi32(b64, 1));
    const __m128i r2 = lanes16(_mm512_extracti32x4_epi32(a64, 2), _mm512_extracti32x4_epi32(b64, 2));
    const __m128i r3 = lanes16(_mm512_extracti32x4_epi32(a64, 3), _mm512_extracti32x4_epi32(b64, 3));
    const __m256i lo2 = _mm256_inserti128_si256(_mm256_castsi128_si256(r0), r1, 1);
    const __m256i hi2 = _mm256_inserti128_si256(_mm256_castsi128_si256(r2), r3, 1);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo2), hi2, 1);
  };
  int64_t i = 0;
  for (; i + 64 <= n; i += 64)
    _mm512_storeu_si512(y + i, block64(_mm512_loadu_si512(a + i), _mm512_loadu_si512(b + i)));
  if (i < n) {
    const __mmask64 m = (~0ull) >> (64 - (n - i));
    _mm512_mask_storeu_epi8(y + i, m, block64(_mm512_maskz_loadu_epi8(m, a + i), _mm512_maskz_loadu_epi8(m, b + i)));
  }
}

}  // namespace

void qadd_run_s8_avx512(const int8_t* a, const int8_t* b, int8_t* y, int64_t n, const QAddParams& p) {
  switch (p.quotient) {
    case QAddQuotient::kReciprocal: return qadd_run<QAddQuotient::kReciprocal>(a, b, y, n, p);
    case QAddQuotient::kRefined: return qadd_run<QAddQuotient::kRefined>(a, b, y, n, p);
    case QAddQuotient::kDivide: return qadd_run<QAddQuotient::kDivide>(a, b, y, n, p);
  }
}

}  // namespace engine::qk
