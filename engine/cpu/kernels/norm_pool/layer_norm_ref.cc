// LayerNorm of one row: y = (x - mean) / sqrt(var + eps) * gamma + beta,
// mean and var over the row (the trailing axes from `axis` on).
// Reference: two passes in double for the moments (see group_norm_ref.cc).
#include <cmath>

#include "cpu/kernels/norm_pool/norm_pool.h"

namespace engine {

void layer_norm_row_f32_ref(const float* x, float* y, int64_t n, const float* gamma, const float* beta,
                            float eps, float* mean, float* inv_std) {
  double m = 0, v = 0;
  moments_f32_ref(x, n, &m, &v);
  const float inv = static_cast<float>(1.0 / std::sqrt(v + static_cast<double>(eps)));
  // x - mf is exact for x near the mean; dm, the rounding residual of mf,
  // is subtracted next (it matters when |mean| >> std).
  const float mf = static_cast<float>(m), dm = static_cast<float>(m - mf);
  for (int64_t i = 0; i < n; ++i) {
    const float t = ((x[i] - mf) - dm) * inv * gamma[i];
    y[i] = beta ? t + beta[i] : t;
  }
  *mean = mf;
  *inv_std = inv;
}

}  // namespace engine
