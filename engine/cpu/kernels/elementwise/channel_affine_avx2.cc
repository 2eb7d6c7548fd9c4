// AVX2 ChannelAffine loops: y = fma(x, scale, shift), per channel plane
// (scalar scale/shift in registers) or per row of channels. One rounding
// instead of the reference's two.
#include "cpu/kernels/elementwise/elementwise.h"
#include "cpu/simd/vec_avx2.h"

namespace engine {
namespace eltwise {
namespace {

using simd::avx2::tail_mask;

void row_avx2(const float* x, float* y, int64_t n, float s, float b) {
  const __m256 vs = _mm256_set1_ps(s), vb = _mm256_set1_ps(b);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256 r0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), vs, vb);
    const __m256 r1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), vs, vb);
    const __m256 r2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), vs, vb);
    const __m256 r3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), vs, vb);
    _mm256_storeu_ps(y + i, r0);
    _mm256_storeu_ps(y + i + 8, r1);
    _mm256_storeu_ps(y + i + 16, r2);
    _mm256_storeu_ps(y + i + 24, r3);
  }
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(_mm256_loadu_ps(x + i), vs, vb));
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    _mm256_maskstore_ps(y + i, m, _mm256_fmadd_ps(_mm256_maskload_ps(x + i, m), vs, vb));
  }
}

void vec_avx2(const float* x, const float* s, const float* b, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(s + i), _mm256_loadu_ps(b + i)));
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    const __m256 r = _mm256_fmadd_ps(_mm256_maskload_ps(x + i, m), _mm256_maskload_ps(s + i, m),
                                     _mm256_maskload_ps(b + i, m));
    _mm256_maskstore_ps(y + i, m, r);
  }
}

}  // namespace

AffineRowFn affine_row_avx2() { return row_avx2; }
AffineVecFn affine_vec_avx2() { return vec_avx2; }

}  // namespace eltwise
}  // namespace engine
