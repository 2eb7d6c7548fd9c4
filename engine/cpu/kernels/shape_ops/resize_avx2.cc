// One output row of bilinear Resize with AVX2 (see resize_ref.cc):
//   out[i] = wx0[i]*wy0*r0[x0[i]] + wx1[i]*wy0*r0[x1[i]]
//          + wx0[i]*wy1*r1[x0[i]] + wx1[i]*wy1*r1[x1[i]]
// Eight outputs at a time with four gathers; the terms are summed in the
// reference's order (with FMAs), so results agree to float rounding.
// Precondition: use_avx2().
#include <immintrin.h>

#include "cpu/kernels/shape_ops/shape_ops.h"

namespace engine {
namespace shape_ops {

void resize_linear_row_avx2(const float* r0, const float* r1, float wy0, float wy1, const int32_t* x0,
                            const int32_t* x1, const float* wx0, const float* wx1, float* out, int64_t width) {
  const __m256 vy0 = _mm256_set1_ps(wy0), vy1 = _mm256_set1_ps(wy1);
  int64_t i = 0;
  for (; i + 8 <= width; i += 8) {
    const __m256i i0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x0 + i));
    const __m256i i1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x1 + i));
    const __m256 w0 = _mm256_loadu_ps(wx0 + i), w1 = _mm256_loadu_ps(wx1 + i);
    const __m256 a = _mm256_i32gather_ps(r0, i0, 4), b = _mm256_i32gather_ps(r0, i1, 4);
    const __m256 c = _mm256_i32gather_ps(r1, i0, 4), e = _mm256_i32gather_ps(r1, i1, 4);
    __m256 acc = _mm256_mul_ps(_mm256_mul_ps(w0, vy0), a);
    acc = _mm256_fmadd_ps(_mm256_mul_ps(w1, vy0), b, acc);
    acc = _mm256_fmadd_ps(_mm256_mul_ps(w0, vy1), c, acc);
    acc = _mm256_fmadd_ps(_mm256_mul_ps(w1, vy1), e, acc);
    _mm256_storeu_ps(out + i, acc);
  }
  for (; i < width; ++i)
    out[i] = wx0[i] * wy0 * r0[x0[i]] + wx1[i] * wy0 * r0[x1[i]] + wx0[i] * wy1 * r1[x0[i]] +
             wx1[i] * wy1 * r1[x1[i]];
}

}  // namespace shape_ops
}  // namespace engine
