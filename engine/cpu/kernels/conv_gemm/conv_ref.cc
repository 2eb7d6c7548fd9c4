// Reference convolution: plain loops, any geometry (1-D/2-D/3-D via the 3-D
// ConvGeom, groups, depthwise, strides, dilations, pads).
//   y[n, m, o] = act(sum_{c in group(m), t} w[m, c, t] * x[n, c, o*s - p + t*d] + b[m] + z[n, m, o])
// The fallback where AVX2 is missing and the oracle of the AVX2 kernels. The
// loop order (one kernel tap at a time over a whole output plane, innermost
// over contiguous output columns) is the only concession to speed.
#include "cpu/kernels/conv_gemm/conv_gemm.h"

namespace engine {
namespace conv_gemm {

void conv_ref(const ConvGeom& g, const float* x, const float* w, const float* b, const float* z,
              const Activation& act, float* y) {
  const int64_t cg = g.cg(), mg = g.mg(), ks = g.ksize();
  const int64_t in_plane = g.in_plane(), out_plane = g.out_plane();
  for (int64_t n = 0; n < g.batch; ++n) {
    for (int64_t m = 0; m < g.cout; ++m) {
      const int64_t grp = m / mg;
      float* yp = y + (n * g.cout + m) * out_plane;
      const float bias = b ? b[m] : 0.f;
      for (int64_t o = 0; o < out_plane; ++o) yp[o] = bias;
      for (int64_t c = 0; c < cg; ++c) {
        const float* xp = x + (n * g.cin + grp * cg + c) * in_plane;
        const float* wp = w + (m * cg + c) * ks;
        for (int64_t kd = 0; kd < g.kd; ++kd)
          for (int64_t kh = 0; kh < g.kh; ++kh)
            for (int64_t kw = 0; kw < g.kw; ++kw) {
              const float wv = wp[(kd * g.kh + kh) * g.kw + kw];
              for (int64_t od = 0; od < g.od; ++od) {
                const int64_t id = od * g.sd - g.pd + kd * g.dd;
                if (id < 0 || id >= g.id) continue;
                for (int64_t oh = 0; oh < g.oh; ++oh) {
                  const int64_t ih = oh * g.sh - g.ph + kh * g.dh;
                  if (ih < 0 || ih >= g.ih) continue;
                  const float* xrow = xp + (id * g.ih + ih) * g.iw;
                  float* yrow = yp + (od * g.oh + oh) * g.ow;
                  for (int64_t ow = 0; ow < g.ow; ++ow) {
                    const int64_t iw = ow * g.sw - g.pw + kw * g.dw;
                    if (iw >= 0 && iw < g.iw) yrow[ow] += wv * xrow[iw];
                  }
                }
              }
            }
      }
      const float* zp = z ? z + (n * g.cout + m) * out_plane : nullptr;
      for (int64_t o = 0; o < out_plane; ++o) yp[o] = activate(zp ? yp[o] + zp[o] : yp[o], act);
    }
  }
}

}  // namespace conv_gemm
}  // namespace engine
