// int8 MaxPool, AVX-512 (BW/VL), for windows 2 or 3 columns wide at column
// stride 2 and dilation 1: ResNet's 3x3 stride-2 stem pool, and 2x2 pools.
// Per output row and 32 outputs at a time, everything stays in registers:
// the window rows' maximum over the 64 (and, for 3 columns, 64 more from 2
// columns on) input columns the 32 outputs read, under a load mask (-128
// outside the row, as padding counts), then the even and odd bytes split
// with a word-to-byte truncation (vpmovwb), and y[i] = max(a[2i], a[2i+1]
// [, a[2i+2]]). The AVX2 path (maxpool_s8_avx2.cc) goes through a row buffer
// and a separate stride-2 split instead, whose stores the next loads read
// across (store-forwarding stalls): 2.4x onnxruntime's time on ResNet-50's
// stem pool. Same bits as maxpool_s8_ref (max is exact).
#include <immintrin.h>

#include <algorithm>

#include "cpu/kernels/quant/quant_kernels.h"

namespace engine::qk {

constexpr int64_t kMaxRows = 64;  // window rows (the AVX2 path takes taller windows)

bool maxpool_s8_avx512_applies(const PoolS8Geom& g) {
  return (g.kw == 2 || g.kw == 3) && g.sw == 2 && g.dw == 1 && g.kh <= kMaxRows;
}

void maxpool_s8_avx512(const PoolS8Geom& g, const int8_t* x, int8_t* y) {
  const __m512i lowest = _mm512_set1_epi8(-128);
  // Lanes j of a 64-byte load from input column c0 + j that lie in [0, w).
  auto mask_from = [&](int64_t c0) -> __mmask64 {
    const int64_t lo = std::clamp<int64_t>(-c0, 0, 64), hi = std::clamp<int64_t>(g.w - c0, 0, 64);
    if (hi <= lo) return 0;
    const uint64_t run = hi - lo == 64 ? ~0ull : (1ull << (hi - lo)) - 1;
    return static_cast<__mmask64>(run << lo);
  };
  const int8_t* rows[kMaxRows];
  for (int64_t oy = 0; oy < g.oh; ++oy) {
    int m = 0;
    for (int64_t ki = 0; ki < g.kh; ++ki) {
      const int64_t iy = oy * g.sh - g.pt + ki * g.dh;
      if (iy >= 0 && iy < g.h) rows[m++] = x + iy * g.w;
    }
    auto column_max = [&](int64_t c0) {
      const __mmask64 k = mask_from(c0);
      __m512i v = lowest;
      for (int r = 0; r < m; ++r) v = _mm512_max_epi8(v, _mm512_mask_loadu_epi8(lowest, k, rows[r] + c0));
      return v;
    };
    int8_t* out = y + oy * g.ow;
    for (int64_t ox0 = 0; ox0 < g.ow; ox0 += 32) {
      const int64_t c0 = 2 * ox0 - g.pl;
      const __m512i a = column_max(c0);
      __m256i v = _mm256_max_epi8(_mm512_cvtepi16_epi8(a), _mm512_cvtepi16_epi8(_mm512_srli_epi16(a, 8)));
      if (g.kw == 3) v = _mm256_max_epi8(v, _mm512_cvtepi16_epi8(column_max(c0 + 2)));
      const int64_t n = std::min<int64_t>(32, g.ow - ox0);
      _mm256_mask_storeu_epi8(out + ox0, n == 32 ? ~0u : (1u << n) - 1, v);
    }
  }
}

}  // namespace engine::qk
