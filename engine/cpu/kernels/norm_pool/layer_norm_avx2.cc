// AVX2 LayerNorm of one row (see layer_norm_ref.cc): moments_f32_avx2, then
// y = ((x - mean) * inv_std) * gamma + beta in one fused pass. Rows are short
// (the channels of a ConvNeXt/ViT token) and stay in L1 across the passes.
#include <algorithm>
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

namespace engine {

// ChannelLayerNorm on `len` positions of one image, channel-major: channel
// ch of position p at x[ch * stride + p]. Eight positions per vector, their
// moments over the channels in double (shifted by the first channel, as
// moments_f32_avx2 shifts by the first element: the float differences then
// hold deviations, not values), then the row kernel's output formula.
void layer_norm_channels_f32_avx2(const float* x, float* y, int64_t c, int64_t stride, int64_t len,
                                  const float* gamma, const float* beta, float eps) {
  const double inv_c = 1.0 / static_cast<double>(c);
  for (int64_t p = 0; p < len; p += 8) {
    const int lanes = static_cast<int>(std::min<int64_t>(8, len - p));
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const float* xp = x + p;
    float* yp = y + p;
    const __m256 k = _mm256_maskload_ps(xp, mask);
    __m256d s0 = _mm256_setzero_pd(), s1 = s0;
    for (int64_t ch = 0; ch < c; ++ch) {
      const __m256 v = _mm256_sub_ps(_mm256_maskload_ps(xp + ch * stride, mask), k);
      s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
      s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    }
    const __m256d ic = _mm256_set1_pd(inv_c);
    const __m256d m0 = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(k)), _mm256_mul_pd(s0, ic));
    const __m256d m1 = _mm256_add_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(k, 1)), _mm256_mul_pd(s1, ic));
    const __m256 mf = _mm256_set_m128(_mm256_cvtpd_ps(m1), _mm256_cvtpd_ps(m0));
    const __m256 dm = _mm256_set_m128(
        _mm256_cvtpd_ps(_mm256_sub_pd(m1, _mm256_cvtps_pd(_mm256_extractf128_ps(mf, 1)))),
        _mm256_cvtpd_ps(_mm256_sub_pd(m0, _mm256_cvtps_pd(_mm256_castps256_ps128(mf)))));
    __m256d q0 = _mm256_setzero_pd(), q1 = q0;
    for (int64_t ch = 0; ch < c; ++ch) {
      const __m256 d = _mm256_sub_ps(_mm256_maskload_ps(xp + ch * stride, mask), mf);
      const __m256 sq = _mm256_mul_ps(d, d);
      q0 = _mm256_add_pd(q0, _mm256_cvtps_pd(_mm256_castps256_ps128(sq)));
      q1 = _mm256_add_pd(q1, _mm256_cvtps_pd(_mm256_extractf128_ps(sq, 1)));
    }
    const __m256d e = _mm256_set1_pd(static_cast<double>(eps)), one = _mm256_set1_pd(1.0);
    const __m256d i0 = _mm256_div_pd(one, _mm256_sqrt_pd(_mm256_add_pd(_mm256_mul_pd(q0, ic), e)));
    const __m256d i1 = _mm256_div_pd(one, _mm256_sqrt_pd(_mm256_add_pd(_mm256_mul_pd(q1, ic), e)));
    const __m256 inv = _mm256_set_m128(_mm256_cvtpd_ps(i1), _mm256_cvtpd_ps(i0));
    for (int64_t ch = 0; ch < c; ++ch) {
      const __m256 t =
          _mm256_mul_ps(_mm256_sub_ps(_mm256_sub_ps(_mm256_maskload_ps(xp + ch * stride, mask), mf), dm), inv);
      const __m256 g = _mm256_set1_ps(gamma[ch]);
      const __m256 out = beta ? _mm256_fmadd_ps(t, g, _mm256_set1_ps(beta[ch])) : _mm256_mul_ps(t, g);
      _mm256_maskstore_ps(yp + ch * stride, mask, out);
    }
  }
}

}  // namespace engine
