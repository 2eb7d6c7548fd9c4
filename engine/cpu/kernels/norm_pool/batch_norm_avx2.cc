// AVX2 per-channel affine y = (x - m) * a + b (see batch_norm_ref.cc). Memory
// bound: two vectors per iteration to keep loads in flight; scalar tail.
#include <immintrin.h>

#include "cpu/kernels/norm_pool/norm_pool.h"

namespace engine {

void affine_row_f32_avx2(const float* x, float* y, int64_t n, float m, float a, float b) {
  const __m256 vm = _mm256_set1_ps(m), va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 x0 = _mm256_sub_ps(_mm256_loadu_ps(x + i), vm);
    const __m256 x1 = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), vm);
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(x0, va, vb));
    _mm256_storeu_ps(y + i + 8, _mm256_fmadd_ps(x1, va, vb));
  }
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm), va, vb));
  for (; i < n; ++i) y[i] = (x[i] - m) * a + b;
}

void affine_vec_f32_avx2(const float* x, float* y, int64_t n, const float* m, const float* a, const float* b) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(m + i));
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(d, _mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
  }
  for (; i < n; ++i) y[i] = (x[i] - m[i]) * a[i] + b[i];
}

}  // namespace engine
