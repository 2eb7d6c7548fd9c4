// Moments of a contiguous block: mean = sum(x) / n, var = sum((x - mean)^2) / n.
// Two passes in double: the variance is a sum of non-negative terms, so it
// never suffers the cancellation of E[x^2] - E[x]^2 (Instance/Group norm of
// activations with a large mean and a small spread).
#include "cpu/kernels/norm_pool/norm_pool.h"

namespace engine {

void moments_f32_ref(const float* x, int64_t n, double* mean, double* var) {
  if (n <= 0) {
    *mean = 0;
    *var = 0;
    return;
  }
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += x[i];
  const double m = s / static_cast<double>(n);
  double q = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = x[i] - m;
    q += d * d;
  }
  *mean = m;
  *var = q / static_cast<double>(n);
}

}  // namespace engine
