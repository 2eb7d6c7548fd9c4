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
  // Locals, not g's fields, in the loops: stores through `indices` (int64)
  // could alias g and would force reloads.
  const int64_t D = g.in[0], H = g.in[1], W = g.in[2];
  const int64_t OD = g.out[0], OH = g.out[1], OW = g.out[2];
  const int64_t KD = g.kernel[0], KH = g.kernel[1], KW = g.kernel[2];
  const int64_t SD = g.stride[0], SH = g.stride[1], SW = g.stride[2];
  const int64_t DD = g.dilation[0], DH = g.dilation[1], DW = g.dilation[2];
  const int64_t PD = g.pad_begin[0], PH = g.pad_begin[1], PW = g.pad_begin[2];
  const bool is_max = g.is_max;
  for (int64_t od = 0; od < OD; ++od)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow) {
        const int64_t sd = od * SD - PD, sh = oh * SH - PH, sw = ow * SW - PW;
        float best = std::numeric_limits<float>::lowest();
        int64_t best_idx = -1;
        double sum = 0;
        int64_t valid = 0;
        for (int64_t kd = 0; kd < KD; ++kd) {
          const int64_t id = sd + kd * DD;
          if (id < 0 || id >= D) continue;
          for (int64_t kh = 0; kh < KH; ++kh) {
            const int64_t ih = sh + kh * DH;
            if (ih < 0 || ih >= H) continue;
            for (int64_t kw = 0; kw < KW; ++kw) {
              const int64_t iw = sw + kw * DW;
              if (iw < 0 || iw >= W) continue;
              const float v = x[(id * H + ih) * W + iw];
              if (is_max) {
                // The first NaN wins and sticks (numpy argmax / max semantics).
                if (best_idx < 0 || v > best || (v != v && best == best)) {
                  best = v;
                  best_idx = col_major ? id + (ih + iw * H) * D : (id * H + ih) * W + iw;
                }
              } else {
                sum += v;
                ++valid;
              }
            }
          }
        }
        const int64_t o = (od * OH + oh) * OW + ow;
        if (is_max) {
          y[o] = best;
          if (indices) indices[o] = index_base + best_idx;
        } else {
          const int64_t div = pool_count(g, 0, sd) * pool_count(g, 1, sh) * pool_count(g, 2, sw);
          y[o] = valid > 0 ? static_cast<float>(sum / static_cast<double>(div)) : 0.f;
        }
      }
}

}  // namespace engine
