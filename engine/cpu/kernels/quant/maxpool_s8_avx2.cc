// int8 MaxPool, row-separable, AVX2 (vpmaxsb on 32 bytes at a time).
// For each output row: t[j] = max over the window's input rows of
// x[iy, j - pl] (-128 outside the input), then y[ox] = max over kj of
// t[ox*sw + kj*dw], the strided reads made contiguous by splitting t into
// sw phases first. Both passes keep a 32-byte chunk's running max in a
// register over the rows (taps) and store it once; a row's last chunk
// overlaps the one before it (max and copies are idempotent) instead of a
// scalar tail. Same bits as maxpool_s8_ref (max is exact).
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "cpu/kernels/quant/quant_kernels.h"

namespace engine::qk {
namespace {

// d[i] = max over the m sources src[r][i] (-128 for m = 0), i < n; d is
// disjoint from the sources.
inline void max_rows(int8_t* d, const int8_t* const* src, int m, int64_t n) {
  auto chunk = [&](int64_t i) {
    __m256i v = _mm256_set1_epi8(-128);
    for (int r = 0; r < m; ++r)
      v = _mm256_max_epi8(v, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src[r] + i)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i), v);
  };
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) chunk(i);
  if (i < n && n >= 32) {
    chunk(n - 32);
    return;
  }
  for (; i < n; ++i) {
    int8_t v = -128;
    for (int r = 0; r < m; ++r) v = std::max(v, src[r][i]);
    d[i] = v;
  }
}

// Splits t[0, n) into even[i] = t[2i] and odd[i] = t[2i + 1].
inline void deinterleave2(const int8_t* t, int64_t n, int8_t* even, int8_t* odd) {
  const __m256i sh = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10, 12,
                                      14, 1, 3, 5, 7, 9, 11, 13, 15);
  auto block = [&](int64_t i) {  // pairs i .. i + 15
    __m256i v = _mm256_shuffle_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(t + 2 * i)), sh);
    v = _mm256_permute4x64_epi64(v, 0xD8);  // [evens 0-7, evens 8-15 | odds 0-7, odds 8-15]
    _mm_storeu_si128(reinterpret_cast<__m128i*>(even + i), _mm256_castsi256_si128(v));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(odd + i), _mm256_extracti128_si256(v, 1));
  };
  int64_t i = 0;
  for (; 2 * i + 32 <= n; i += 16) block(i);
  if (2 * i + 1 < n && n >= 32) {  // the last whole pairs as one more block, overlapping (a copy)
    block(n / 2 - 16);
    i = n / 2;
  }
  for (; 2 * i < n; ++i) {
    even[i] = t[2 * i];
    if (2 * i + 1 < n) odd[i] = t[2 * i + 1];
  }
}

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
  // Source pointers of a pass (window rows, then taps): kMaxSrc on the
  // stack, more (a window over 64 rows or columns) on the heap.
  constexpr int kMaxSrc = 64;
  const int64_t most = std::max(g.kh, g.kw);
  std::vector<const int8_t*> heap(most > kMaxSrc ? static_cast<size_t>(most) : 0);
  const int8_t* stack[kMaxSrc];
  const int8_t** src = most > kMaxSrc ? heap.data() : stack;
  for (int64_t oy = 0; oy < g.oh; ++oy) {
    int m = 0;
    for (int64_t ki = 0; ki < g.kh; ++ki) {
      const int64_t iy = oy * g.sh - g.pt + ki * g.dh;
      if (iy >= 0 && iy < g.h) src[m++] = x + iy * g.w + (c0 - g.pl);
    }
    std::fill(t, t + c0, static_cast<int8_t>(-128));
    max_rows(t + c0, src, m, c1 - c0);
    std::fill(t + c1, t + span, static_cast<int8_t>(-128));
    const int8_t* base = t;
    if (g.sw == 2) {
      deinterleave2(t, span, phases, phases + plen);
      base = phases;
    } else if (g.sw != 1) {
      for (int64_t r = 0; r < g.sw; ++r)
        for (int64_t i = 0; r + i * g.sw < span; ++i) phases[r * plen + i] = t[r + i * g.sw];
      base = phases;
    }
    for (int64_t kj = 0; kj < g.kw; ++kj) {
      const int64_t tap = kj * g.dw;
      src[kj] = g.sw == 1 ? base + tap : base + (tap % g.sw) * plen + tap / g.sw;
    }
    max_rows(y + oy * g.ow, src, static_cast<int>(g.kw), g.ow);
  }
}

}  // namespace engine::qk
