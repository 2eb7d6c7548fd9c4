// AVX2 two-pass moments (see group_norm_ref.cc): the sum of deviations from
// the first element, then the sum of squared deviations from the mean, both
// with avx2::blocked_sum (float within 1024-element blocks, double across).
#include "cpu/kernels/norm_pool/avx2_math.h"
#include "cpu/kernels/norm_pool/norm_pool.h"

namespace engine {

void moments_f32_avx2(const float* x, int64_t n, double* mean, double* var) {
  if (n <= 0) {
    *mean = 0;
    *var = 0;
    return;
  }
  // Shifted by the first element: the float partial sums then hold
  // deviations (of the size of the spread), not values (of the size of the
  // mean), so a large mean costs no precision.
  const float k = x[0];
  const __m256 vk = _mm256_set1_ps(k);
  const double m = k + avx2::blocked_sum(
                           x, n, [vk](__m256 v) { return _mm256_sub_ps(v, vk); }, [k](float v) { return v - k; }) /
                           static_cast<double>(n);
  const float mf = static_cast<float>(m);
  const __m256 vm = _mm256_set1_ps(mf);
  const double q = avx2::blocked_sum(
      x, n,
      [vm](__m256 v) {
        const __m256 d = _mm256_sub_ps(v, vm);
        return _mm256_mul_ps(d, d);
      },
      [mf](float v) { return (v - mf) * (v - mf); });
  *mean = m;
  *var = q / static_cast<double>(n);
}

}  // namespace engine
