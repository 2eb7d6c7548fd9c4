// AVX2 LayerNorm of one row (see layer_norm_ref.cc): moments_f32_avx2, then
// y = ((x - mean) * inv_std) * gamma + beta in one fused pass. Rows are short
// (the channels of a ConvNeXt/ViT token) and stay in L1 across the passes.
#include <cmath>

#include "cpu/kernels/norm_pool/avx2_math.h"
#include "cpu/kernels/norm_pool/norm_pool.h"

namespace engine {

void layer_norm_row_f32_avx2(const float* x, float* y, int64_t n, const float* gamma, const float* beta,
                             float eps, float* mean, float* inv_std) {
  double m = 0, v = 0;
  moments_f32_avx2(x, n, &m, &v);
  const float inv = static_cast<float>(1.0 / std::sqrt(v + static_cast<double>(eps)));
  // x - mf is exact near the mean; dm is mf's rounding residual.
  const float mf = static_cast<float>(m), dm = static_cast<float>(m - mf);
  const __m256 vm = _mm256_set1_ps(mf), vdm = _mm256_set1_ps(dm), vi = _mm256_set1_ps(inv);
  int64_t i = 0;
  if (beta) {
    for (; i + 8 <= n; i += 8) {
      const __m256 t = _mm256_mul_ps(_mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm), vdm), vi);
      _mm256_storeu_ps(y + i, _mm256_fmadd_ps(t, _mm256_loadu_ps(gamma + i), _mm256_loadu_ps(beta + i)));
    }
    for (; i < n; ++i) y[i] = ((x[i] - mf) - dm) * inv * gamma[i] + beta[i];
  } else {
    for (; i + 8 <= n; i += 8) {
      const __m256 t = _mm256_mul_ps(_mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm), vdm), vi);
      _mm256_storeu_ps(y + i, _mm256_mul_ps(t, _mm256_loadu_ps(gamma + i)));
    }
    for (; i < n; ++i) y[i] = ((x[i] - mf) - dm) * inv * gamma[i];
  }
  *mean = mf;
  *inv_std = inv;
}

}  // namespace engine
