// softmax(x)_i = exp(x_i - max) / sum_j exp(x_j - max);
// log_softmax(x)_i = x_i - max - log(sum_j exp(x_j - max)).
// Subtracting the max keeps every exp in (0, 1]: no overflow, and the sum is
// at least 1, so the log and the division are well conditioned. The sum is
// accumulated in double. Reference: plain loops.
#include <cmath>

#include "cpu/kernels/norm_pool/norm_pool.h"

namespace engine {

void softmax_row_f32_ref(const float* x, float* y, int64_t n, bool log) {
  softmax_cols_f32_ref(x, y, n, 1, 1, log);
}

void softmax_cols_f32_ref(const float* x, float* y, int64_t len, int64_t stride, int64_t ncols, bool log) {
  for (int64_t j = 0; j < ncols; ++j) {
    float m = x[j];
    for (int64_t k = 1; k < len; ++k) m = std::fmax(m, x[k * stride + j]);
    double s = 0;
    for (int64_t k = 0; k < len; ++k) {
      const float e = std::exp(x[k * stride + j] - m);
      if (!log) y[k * stride + j] = e;
      s += e;
    }
    if (log) {
      const float ls = static_cast<float>(std::log(s));
      for (int64_t k = 0; k < len; ++k) y[k * stride + j] = (x[k * stride + j] - m) - ls;
    } else {
      const float inv = static_cast<float>(1.0 / s);
      for (int64_t k = 0; k < len; ++k) y[k * stride + j] *= inv;
    }
  }
}

}  // namespace engine
