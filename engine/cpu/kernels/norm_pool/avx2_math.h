// AVX2 helpers of the norm_pool family: horizontal reductions, a blocked
// accurate sum, and exp. Include only from *_avx2.cc files (they are the only
// ones compiled with -mavx2 -mfma).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace engine {
namespace avx2 {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float hmin(__m256 v) {
  __m128 s = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_min_ps(s, _mm_movehl_ps(s, s));
  s = _mm_min_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// sum_i f(x[i]) for a vector function f, summed in float within blocks of
// 1024 elements (32 per lane of four accumulators) and in double across
// blocks: float speed, with the error of a sum of n/1024 doubles. The scalar
// tail uses fs, the same function on one element.
template <typename F, typename FS>
inline double blocked_sum(const float* x, int64_t n, F f, FS fs) {
  constexpr int64_t kBlock = 1024;
  double total = 0;
  int64_t i = 0;
  while (n - i >= 32) {
    const int64_t full = (n - i) / 32 * 32;
    const int64_t end = i + (full < kBlock ? full : kBlock);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (; i < end; i += 32) {
      a0 = _mm256_add_ps(a0, f(_mm256_loadu_ps(x + i)));
      a1 = _mm256_add_ps(a1, f(_mm256_loadu_ps(x + i + 8)));
      a2 = _mm256_add_ps(a2, f(_mm256_loadu_ps(x + i + 16)));
      a3 = _mm256_add_ps(a3, f(_mm256_loadu_ps(x + i + 24)));
    }
    total += static_cast<double>(hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3))));
  }
  __m256 a = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) a = _mm256_add_ps(a, f(_mm256_loadu_ps(x + i)));
  total += static_cast<double>(hsum(a));
  for (; i < n; ++i) total += static_cast<double>(fs(x[i]));
  return total;
}

// exp(x) for x <= 88 (Cephes' expf: range reduction by ln 2 in two parts and
// a degree-6 polynomial; about 1 ulp). Inputs below -88 give 0 (the scale
// 2^n underflows to a zero exponent field), which softmax wants.
inline __m256 exp(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.0f), lo = _mm256_set1_ps(-88.0f);
  x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
  const __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.f)));
  const __m256i n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(n));
}

}  // namespace avx2
}  // namespace engine
