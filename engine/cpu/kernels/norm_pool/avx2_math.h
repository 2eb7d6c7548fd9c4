// AVX2 helpers of the norm_pool family: a blocked accurate sum over the
// shared vector math (cpu/simd/vec_avx2.h). Include only from *_avx2.cc files (they are the only
// ones compiled with -mavx2 -mfma).
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "cpu/simd/vec_avx2.h"

namespace engine {
namespace avx2 {

// The vector math is cpu/simd/vec_avx2.h's, shared with every family:
// hsum, NaN-propagating hmax / hmin and exp (NaN in, NaN out; 0 below
// about -104, so softmax's exp(x - max) of a far-off lane is 0).
using simd::avx2::hmax;
using simd::avx2::hmin;
using simd::avx2::hsum;
static inline __m256 exp(__m256 x) { return simd::avx2::v_exp(x); }

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

}  // namespace avx2
}  // namespace engine
