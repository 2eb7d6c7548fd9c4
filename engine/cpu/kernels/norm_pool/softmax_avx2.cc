// AVX2 softmax / log-softmax (see softmax_ref.cc for the formula and why the
// max is subtracted). Rows: max pass, exp pass (stored for softmax, only
// summed for log-softmax), scale pass. Columns (softmax over a non-last
// axis): the same three passes with eight adjacent columns per vector, so
// every load stays contiguous; leftover columns go to the reference.
#include <cmath>

#include "cpu/kernels/norm_pool/avx2_math.h"
#include "cpu/kernels/norm_pool/norm_pool.h"

namespace engine {

void softmax_row_f32_avx2(const float* x, float* y, int64_t n, bool log) {
  if (n < 8) {
    softmax_row_f32_ref(x, y, n, log);
    return;
  }
  __m256 vmax = _mm256_loadu_ps(x);
  int64_t i = 8;
  for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
  float m = avx2::hmax(vmax);
  for (; i < n; ++i) m = std::fmax(m, x[i]);
  const __m256 vm = _mm256_set1_ps(m);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
  double sum = 0;
  i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 e0 = avx2::exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
    const __m256 e1 = avx2::exp(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), vm));
    if (!log) {
      _mm256_storeu_ps(y + i, e0);
      _mm256_storeu_ps(y + i + 8, e1);
    }
    acc0 = _mm256_add_ps(acc0, e0);
    acc1 = _mm256_add_ps(acc1, e1);
    // Every term is in (0, 1]: flush the float lanes to double now and then
    // so long rows keep full precision.
    if ((i & 1023) == 1008) {
      sum += avx2::hsum(_mm256_add_ps(acc0, acc1));
      acc0 = acc1 = _mm256_setzero_ps();
    }
  }
  for (; i + 8 <= n; i += 8) {
    const __m256 e = avx2::exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
    if (!log) _mm256_storeu_ps(y + i, e);
    acc0 = _mm256_add_ps(acc0, e);
  }
  sum += avx2::hsum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) {
    const float e = std::exp(x[i] - m);
    if (!log) y[i] = e;
    sum += e;
  }
  if (log) {
    const float ls = static_cast<float>(std::log(sum));
    const __m256 vls = _mm256_set1_ps(ls);
    for (i = 0; i + 8 <= n; i += 8)
      _mm256_storeu_ps(y + i, _mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm), vls));
    for (; i < n; ++i) y[i] = (x[i] - m) - ls;
  } else {
    const float inv = static_cast<float>(1.0 / sum);
    const __m256 vinv = _mm256_set1_ps(inv);
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), vinv));
    for (; i < n; ++i) y[i] *= inv;
  }
}

void softmax_cols_f32_avx2(const float* x, float* y, int64_t len, int64_t stride, int64_t ncols, bool log) {
  int64_t j = 0;
  for (; j + 8 <= ncols; j += 8) {
    const float* xc = x + j;
    float* yc = y + j;
    __m256 vm = _mm256_loadu_ps(xc);
    for (int64_t k = 1; k < len; ++k) vm = _mm256_max_ps(vm, _mm256_loadu_ps(xc + k * stride));
    __m256 s = _mm256_setzero_ps();
    for (int64_t k = 0; k < len; ++k) {
      const __m256 e = avx2::exp(_mm256_sub_ps(_mm256_loadu_ps(xc + k * stride), vm));
      if (!log) _mm256_storeu_ps(yc + k * stride, e);
      s = _mm256_add_ps(s, e);
    }
    if (log) {
      alignas(32) float sums[8];
      _mm256_store_ps(sums, s);
      for (float& v : sums) v = std::log(v);
      const __m256 ls = _mm256_load_ps(sums);
      for (int64_t k = 0; k < len; ++k)
        _mm256_storeu_ps(yc + k * stride, _mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(xc + k * stride), vm), ls));
    } else {
      const __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.f), s);
      for (int64_t k = 0; k < len; ++k)
        _mm256_storeu_ps(yc + k * stride, _mm256_mul_ps(_mm256_loadu_ps(yc + k * stride), inv));
    }
  }
  if (j < ncols) softmax_cols_f32_ref(x + j, y + j, len, stride, ncols - j, log);
}

}  // namespace engine
