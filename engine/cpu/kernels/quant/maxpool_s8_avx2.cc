// int8 MaxPool, row-separable (compiled with AVX2 flags; the byte-max loops
// below are plain C++ that the compiler turns into vpmaxsb).
// For each output row: t[j] = max over the window's input rows of
// x[iy, j - pl] (-128 outside the input), then y[ox] = max over kj of
// t[ox*sw + kj*dw], the strided reads made contiguous by splitting t into
// sw phases first. Same bits as maxpool_s8_ref (max is exact).
#include <algorithm>

#include "cpu/kernels/quant/quant_kernels.h"

namespace engine::qk {
namespace {

// Columns of t: every input column a window of this geometry can touch.
int64_t row_span(const PoolS8Geom& g) { return (g.ow - 1) * g.sw + (g.kw - 1) * g.dw + 1; }

}  // namespace

size_t maxpool_s8_avx2_workspace(const PoolS8Geom& g) {
  const int64_t span = row_span(g);
  return static_cast<size_t>(span + g.sw * ((span + g.sw - 1) / g.sw + 1) + 64);
}

void maxpool_s8_avx2(const PoolS8Geom& g, const int8_t* x, int8_t* y, void* ws) {
  const int64_t span = row_span(g), plen = (span + g.sw - 1) / g.sw + 1;
  auto* t = static_cast<int8_t*>(ws);
  int8_t* phases = t + span;
  // Input columns [c0, c1) of t are inside the row; the rest stay -128.
  const int64_t c0 = std::min(span, g.pl), c1 = std::min(span, g.pl + g.w);
  for (int64_t oy = 0; oy < g.oh; ++oy) {
    std::fill(t, t + span, static_cast<int8_t>(-128));
    for (int64_t ki = 0; ki < g.kh; ++ki) {
      const int64_t iy = oy * g.sh - g.pt + ki * g.dh;
      if (iy < 0 || iy >= g.h) continue;
      const int8_t* src = x + iy * g.w;
      for (int64_t j = c0; j < c1; ++j) t[j] = std::max(t[j], src[j - g.pl]);
    }
    int8_t* out = y + oy * g.ow;
    const int8_t* base = t;
    if (g.sw != 1) {
      for (int64_t r = 0; r < g.sw; ++r)
        for (int64_t i = 0; r + i * g.sw < span; ++i) phases[r * plen + i] = t[r + i * g.sw];
      base = phases;
    }
    for (int64_t kj = 0; kj < g.kw; ++kj) {
      const int64_t tap = kj * g.dw;
      const int8_t* s = g.sw == 1 ? base + tap : base + (tap % g.sw) * plen + tap / g.sw;
      if (kj == 0) {
        std::copy(s, s + g.ow, out);
      } else {
        for (int64_t ox = 0; ox < g.ow; ++ox) out[ox] = std::max(out[ox], s[ox]);
      }
    }
  }
}

}  // namespace engine::qk
