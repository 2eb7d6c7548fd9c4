// int8 convolution and gemm, reference loops: the fallback and the oracle
// the AVX2 kernels are tested against bit for bit.
//   acc[n, m, oz, oy, ox] = sum_{ci, kz, ki, kj} x[n, g*cg + ci, iz, iy, ix] * w[m, ci, kz, ki, kj]
//   with iz = oz*sd - pf + kz*dd, iy = oy*sh - pt + ki*dh, ix = ox*sw - pl +
//   kj*dw (0 outside the input), g = m / mg, x taken as x - x_zp; then epilogue_one()
//   (quant_kernels.h). A 2-D conv is the case d = kd = od = 1. qconv_nhwc_ref:
//   the same sums over a channels-last input and output.
// Products and sums are exact in int32 (K * 256 * 128 < 2^31 is checked in
// create() when there is a zero point, K * 128 * 128 otherwise), so the
// summation order does not matter.
#include "cpu/kernels/quant/quant_kernels.h"

namespace engine::qk {

void qconv_ref(const ConvGeom& g, const int8_t* x, const int8_t* w, const Epilogue& e) {
  const int64_t cg = g.cg(), mg = g.mg(), ihw = g.ihw(), taps = g.kd * g.kh * g.kw;
  for (int64_t img = 0; img < g.n; ++img)
    for (int64_t m = 0; m < g.m; ++m) {
      const int64_t grp = m / mg;
      const int8_t* wm = w + m * cg * taps;
      for (int64_t oz = 0; oz < g.od; ++oz)
        for (int64_t oy = 0; oy < g.oh; ++oy)
          for (int64_t ox = 0; ox < g.ow; ++ox) {
            int32_t acc = 0;
            for (int64_t ci = 0; ci < cg; ++ci) {
              const int8_t* chan = x + (img * g.c + grp * cg + ci) * ihw;
              for (int64_t kz = 0; kz < g.kd; ++kz) {
                const int64_t iz = oz * g.sd - g.pf + kz * g.dd;
                if (iz < 0 || iz >= g.d) continue;
                const int8_t* plane = chan + iz * g.h * g.w;
                for (int64_t ki = 0; ki < g.kh; ++ki) {
                  const int64_t iy = oy * g.sh - g.pt + ki * g.dh;
                  if (iy < 0 || iy >= g.h) continue;
                  for (int64_t kj = 0; kj < g.kw; ++kj) {
                    const int64_t ix = ox * g.sw - g.pl + kj * g.dw;
                    if (ix < 0 || ix >= g.w) continue;
                    acc += (static_cast<int32_t>(plane[iy * g.w + ix]) - g.x_zp) * wm[((ci * g.kd + kz) * g.kh + ki) * g.kw + kj];
                  }
                }
              }
            }
            epilogue_one(e, acc, m, (((img * g.m + m) * g.od + oz) * g.oh + oy) * g.ow + ox);
          }
    }
}

// Channels-last (QConv channels_last = 1): the same sums over x [N, H, W, C]
// and the same weights [M, C, kH, kW]; output (n, oy, ox, m) at
// ((n * OH + oy) * OW + ox) * M + m. 2-D, one group or depthwise (ops.def;
// QConvKernel checks both); written for any group count.
void qconv_nhwc_ref(const ConvGeom& g, const int8_t* x, const int8_t* w, const Epilogue& e) {
  const int64_t taps = g.kh * g.kw, cg = g.cg(), mg = g.mg();
  for (int64_t img = 0; img < g.n; ++img)
    for (int64_t oy = 0; oy < g.oh; ++oy)
      for (int64_t ox = 0; ox < g.ow; ++ox) {
        const int64_t pos = (img * g.oh + oy) * g.ow + ox;
        for (int64_t m = 0; m < g.m; ++m) {
          const int8_t* wm = w + m * cg * taps;
          const int64_t c0 = m / mg * cg;  // the group's first input channel
          int32_t acc = 0;
          for (int64_t ki = 0; ki < g.kh; ++ki) {
            const int64_t iy = oy * g.sh - g.pt + ki * g.dh;
            if (iy < 0 || iy >= g.h) continue;
            for (int64_t kj = 0; kj < g.kw; ++kj) {
              const int64_t ix = ox * g.sw - g.pl + kj * g.dw;
              if (ix < 0 || ix >= g.w) continue;
              const int8_t* px = x + ((img * g.h + iy) * g.w + ix) * g.c;
              for (int64_t ci = 0; ci < cg; ++ci)
                acc += (static_cast<int32_t>(px[c0 + ci]) - g.x_zp) * wm[ci * taps + ki * g.kw + kj];
            }
          }
          epilogue_one(e, acc, m, pos * g.m + m);
        }
      }
}

void qgemm_ref(int64_t n, int64_t m, int64_t k, const int8_t* a, const int8_t* w, const Epilogue& e,
               int32_t a_zp) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < m; ++j) {
      int32_t acc = 0;
      for (int64_t kk = 0; kk < k; ++kk) acc += (static_cast<int32_t>(a[i * k + kk]) - a_zp) * w[j * k + kk];
      epilogue_one(e, acc, j, i * m + j);
    }
}

}  // namespace engine::qk
