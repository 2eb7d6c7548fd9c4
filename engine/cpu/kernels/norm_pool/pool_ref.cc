// MaxPool / AveragePool over one (n, c) plane of up to three spatial dims:
//   y[o] = max or mean of x[o * stride - pad_begin + k * dilation], k < kernel,
// over the taps inside the input. MaxPool starts from the lowest float (a
// window with no tap inside the input yields it, as in onnxruntime) and keeps
// the first maximum for Indices. AveragePool divides by pool_count (the taps
// inside the input, or inside the padded input with count_include_pad); a
// window with no tap inside the input yields 0.
// Reference: plain loops over output positions and taps.
#include <algorithm>
#include <limits>

#include "cpu/kernels/norm_pool/norm_pool.h"

namespace engine {

int64_t pool_count(const PoolGeom& g, int dim, int64_t start) {
  const int64_t k = g.kernel[dim], d = g.dilation[dim], in = g.in[dim];
  if (g.count_include_pad) {
    // Taps within [start, min(start + k*d, in + pad_end)).
    const int64_t end = std::min(start + k * d, in + g.pad_end[dim]);
    return end > start ? 1 + (end - start - 1) / d : 0;
  }
  int64_t c = 0;
  for (int64_t t = 0; t < k; ++t) {
    const int64_t i = start + t * d;
    c += i >= 0 && i < in;
  }
  return c;
}

void pool_plane_f32_ref(const PoolGeom& g, const float* x, float* y, int64_t* indices, int64_t index_base,
                        bool col_major) {
  const int64_t D = g.in[0], H = g.in[1], W = g.in[2];
  for (int64_t od = 0; od < g.out[0]; ++od)
    for (int64_t oh = 0; oh < g.out[1]; ++oh)
      for (int64_t ow = 0; ow < g.out[2]; ++ow) {
        const int64_t sd = od * g.stride[0] - g.pad_begin[0];
        const int64_t sh = oh * g.stride[1] - g.pad_begin[1];
        const int64_t sw = ow * g.stride[2] - g.pad_begin[2];
        float best = std::numeric_limits<float>::lowest();
        int64_t best_idx = -1;
        double sum = 0;
        int64_t valid = 0;
        for (int64_t kd = 0; kd < g.kernel[0]; ++kd) {
          const int64_t id = sd + kd * g.dilation[0];
          if (id < 0 || id >= D) continue;
          for (int64_t kh = 0; kh < g.kernel[1]; ++kh) {
            const int64_t ih = sh + kh * g.dilation[1];
            if (ih < 0 || ih >= H) continue;
            for (int64_t kw = 0; kw < g.kernel[2]; ++kw) {
              const int64_t iw = sw + kw * g.dilation[2];
              if (iw < 0 || iw >= W) continue;
              const int64_t idx = (id * H + ih) * W + iw;
              if (g.is_max) {
                if (best_idx < 0 || x[idx] > best) {
                  best = x[idx];
                  best_idx = col_major ? id + (ih + iw * H) * D : idx;
                }
              } else {
                sum += x[idx];
                ++valid;
              }
            }
          }
        }
        const int64_t o = (od * g.out[1] + oh) * g.out[2] + ow;
        if (g.is_max) {
          y[o] = best;
          if (indices) indices[o] = index_base + best_idx;
        } else {
          const int64_t div = pool_count(g, 0, sd) * pool_count(g, 1, sh) * pool_count(g, 2, sw);
          y[o] = valid > 0 ? static_cast<float>(sum / static_cast<double>(div)) : 0.f;
        }
      }
}

}  // namespace engine
