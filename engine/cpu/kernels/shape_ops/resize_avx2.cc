// The two passes of bilinear Resize with AVX2 (see resize_ref.cc):
//   horizontal: out[i] = w0[i] * row[x0[i]] + w1[i] * row[x1[i]]   (two gathers)
//   vertical:   out[i] = wa * a[i] + wb * b[i]
// Eight floats at a time, scalar tails; the same arithmetic as the reference
// up to FMA rounding.
// Precondition: use_avx2().
#include <immintrin.h>

#include "cpu/kernels/shape_ops/shape_ops.h"

namespace engine {
namespace shape_ops {

void resize_linear_hrow_avx2(const float* row, const int32_t* x0, const int32_t* x1, const float* w0,
                             const float* w1, float* out, int64_t width) {
  int64_t i = 0;
  for (; i + 8 <= width; i += 8) {
    const __m256i i0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x0 + i));
    const __m256i i1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x1 + i));
    const __m256 a = _mm256_i32gather_ps(row, i0, 4), b = _mm256_i32gather_ps(row, i1, 4);
    _mm256_storeu_ps(out + i, _mm256_fmadd_ps(_mm256_loadu_ps(w0 + i), a, _mm256_mul_ps(_mm256_loadu_ps(w1 + i), b)));
  }
  for (; i < width; ++i) out[i] = w0[i] * row[x0[i]] + w1[i] * row[x1[i]];
}

void resize_linear_vblend_avx2(const float* a, const float* b, float wa, float wb, float* out, int64_t width) {
  const __m256 va = _mm256_set1_ps(wa), vb = _mm256_set1_ps(wb);
  int64_t i = 0;
  for (; i + 8 <= width; i += 8)
    _mm256_storeu_ps(out + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(a + i), _mm256_mul_ps(vb, _mm256_loadu_ps(b + i))));
  for (; i < width; ++i) out[i] = wa * a[i] + wb * b[i];
}

}  // namespace shape_ops
}  // namespace engine
