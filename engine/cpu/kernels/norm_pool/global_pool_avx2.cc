// AVX2 row reductions (see global_pool_ref.cc): the sum is blocked (float
// within blocks, double across), max/min use four independent accumulators
// to hide the instruction latency and propagate NaN (max_nan / min_nan).
#include <algorithm>

#include "cpu/kernels/norm_pool/avx2_math.h"
#include "cpu/kernels/norm_pool/norm_pool.h"
#include "cpu/simd/vec_scalar.h"

namespace engine {

float row_sum_f32_avx2(const float* x, int64_t n) {
  return static_cast<float>(avx2::blocked_sum(x, n, [](__m256 v) { return v; }, [](float v) { return v; }));
}

namespace {

template <bool kMax>
float row_extreme(const float* x, int64_t n) {
  if (n < 8) {
    float m = n > 0 ? x[0] : 0.f;
    for (int64_t i = 1; i < n; ++i) m = kMax ? simd::scalar::max_nan(m, x[i]) : simd::scalar::min_nan(m, x[i]);
    return m;
  }
  auto op = [](__m256 a, __m256 b) { return kMax ? simd::avx2::max_nan(a, b) : simd::avx2::min_nan(a, b); };
  __m256 a0 = _mm256_loadu_ps(x), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 8;
  for (; i + 32 <= n; i += 32) {
    a0 = op(a0, _mm256_loadu_ps(x + i));
    a1 = op(a1, _mm256_loadu_ps(x + i + 8));
    a2 = op(a2, _mm256_loadu_ps(x + i + 16));
    a3 = op(a3, _mm256_loadu_ps(x + i + 24));
  }
  for (; i + 8 <= n; i += 8) a0 = op(a0, _mm256_loadu_ps(x + i));
  const __m256 a = op(op(a0, a1), op(a2, a3));
  float m = kMax ? avx2::hmax(a) : avx2::hmin(a);
  for (; i < n; ++i) m = kMax ? simd::scalar::max_nan(m, x[i]) : simd::scalar::min_nan(m, x[i]);
  return m;
}

}  // namespace

float row_max_f32_avx2(const float* x, int64_t n) { return row_extreme<true>(x, n); }
float row_min_f32_avx2(const float* x, int64_t n) { return row_extreme<false>(x, n); }

}  // namespace engine
