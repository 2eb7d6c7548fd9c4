// The AVX2 micro-kernels of the packed SGEMM (see sgemm_avx2.cc for the
// blocking): a 6x16 FMA tile with fewer-row / one-vector variants for the
// edges, and a row-vectorized kernel for column tails of at most 4. Shared
// by sgemm_avx2.cc and by sgemm_avx512.cc (for its narrow column tails).
// Include only from *_avx2*.cc / *_avx512*.cc files; internal linkage.
#pragma once

#include <immintrin.h>

#include <algorithm>

#include "cpu/kernels/conv_gemm/activation_avx2.h"
#include "cpu/kernels/conv_gemm/conv_gemm.h"

namespace engine {
namespace conv_gemm {
namespace {

struct TileArgs {
  float* c;
  int64_t ldc;
  const float* bias_m;  // at the tile's first row, or null
  const float* bias_n;  // at the tile's first column, or null
  const float* z;       // at the tile's first element, or null
  int64_t ldz;
  float alpha;
  bool load_c;
  bool last;
  const Activation* act;
};

// acc[R][NV] += A panel (kc x kMR) x B panel (kc x kNR, first NV vectors),
// then the epilogue; nr <= 8*NV valid columns.
// The k loop keeps its accumulators in named locals: an array whose address
// the epilogue takes would be kept in memory (GCC then stores all twelve
// accumulators every iteration).
#define ENGINE_ROW(r)                                                        \
  if constexpr (R > r) {                                                     \
    const __m256 av = _mm256_broadcast_ss(a + k * kMR + r);                  \
    c##r##0 = _mm256_fmadd_ps(av, b0, c##r##0);                              \
    if constexpr (NV == 2) c##r##1 = _mm256_fmadd_ps(av, b1, c##r##1);       \
  }

// acc[R][NV] = A panel (kc x kMR) x B panel (kc x kNR, first NV vectors),
// then the epilogue; nr <= 8*NV valid columns.
template <int R, int NV>
void micro_kernel(int64_t kc, const float* a, const float* b, int nr, const TileArgs& t) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(b + k * kNR);
    const __m256 b1 = NV == 2 ? _mm256_load_ps(b + k * kNR + 8) : b0;
    ENGINE_ROW(0)
    ENGINE_ROW(1)
    ENGINE_ROW(2)
    ENGINE_ROW(3)
    ENGINE_ROW(4)
    ENGINE_ROW(5)
  }
  __m256 acc[kMR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};

  const bool full = nr == 8 * NV;
  __m256i mask[NV];
  for (int v = 0; v < NV; ++v) mask[v] = tail_mask(std::max(0, std::min(8, nr - 8 * v)));
  auto load = [&](const float* p, int v) {
    return full ? _mm256_loadu_ps(p + 8 * v) : _mm256_maskload_ps(p + 8 * v, mask[v]);
  };

  if (t.alpha != 1.f) {
    const __m256 al = _mm256_set1_ps(t.alpha);
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_mul_ps(acc[r][v], al);
  }
  if (t.load_c)
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_add_ps(acc[r][v], load(t.c + r * t.ldc, v));
  if (t.last) {
    if (t.bias_m)
      for (int r = 0; r < R; ++r) {
        const __m256 bm = _mm256_broadcast_ss(t.bias_m + r);
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_add_ps(acc[r][v], bm);
      }
    if (t.bias_n)
      for (int v = 0; v < NV; ++v) {
        const __m256 bn = load(t.bias_n, v);
        for (int r = 0; r < R; ++r) acc[r][v] = _mm256_add_ps(acc[r][v], bn);
      }
    if (t.z)
      for (int r = 0; r < R; ++r)
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_add_ps(acc[r][v], load(t.z + r * t.ldz, v));
    if (t.act->kind != Act::kNone)
      with_act(*t.act, [&](const auto& op) {
        for (int r = 0; r < R; ++r)
          for (int v = 0; v < NV; ++v) acc[r][v] = op(acc[r][v]);
      });
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) {
      float* p = t.c + r * t.ldc + 8 * v;
      if (full) _mm256_storeu_ps(p, acc[r][v]);
      else _mm256_maskstore_ps(p, mask[v], acc[r][v]);
    }
}

#undef ENGINE_ROW

// Narrow column tails (nr <= 4, e.g. the 49th column of a 7x7 output): the
// 6x8 kernel would spend 6 FMAs per k on mostly dead columns. Here the six
// rows of a panel form one vector and each column j accumulates
// A_k * B[k, j] over k in order, one FMA per k into one accumulator: the
// same operations, in the same order, as the wide tiles perform for every
// output element, so a column gets the same bits whichever kernel computes
// it (a tail in one call, inside a wide tile in another: batches merged
// into one column space must not change an image's results). P panels
// (1 or 2: 12 rows, the AVX-512 tile's height) and NRT columns give P * NRT
// independent chains to cover the FMA latency.
template <int NRT>
inline void col_epilogue(__m256* acc, int mr, const TileArgs& t) {
  alignas(32) float v[4][8];
  // alpha on vectors, as the tiles do (a scalar product could be contracted
  // into an FMA with the next add).
  const __m256 al = _mm256_set1_ps(t.alpha);
  for (int j = 0; j < NRT; ++j) _mm256_store_ps(v[j], t.alpha != 1.f ? _mm256_mul_ps(acc[j], al) : acc[j]);
  for (int j = 0; j < NRT; ++j)
    for (int r = 0; r < mr; ++r) {
      float x = v[j][r];
      if (t.load_c) x += t.c[r * t.ldc + j];
      if (t.last) {
        if (t.bias_m) x += t.bias_m[r];
        if (t.bias_n) x += t.bias_n[j];
        if (t.z) x += t.z[r * t.ldz + j];
      }
      v[j][r] = x;
    }
  // The activation runs on vectors (one column's rows per vector), the same
  // code as the wide tiles and the standalone ops, not the scalar formula.
  if (t.last && t.act->kind != Act::kNone)
    with_act(*t.act, [&](const auto& op) {
      for (int j = 0; j < NRT; ++j) _mm256_store_ps(v[j], op(_mm256_load_ps(v[j])));
    });
  for (int r = 0; r < mr; ++r)
    for (int j = 0; j < NRT; ++j) t.c[r * t.ldc + j] = v[j][r];
}

#define ENGINE_COL(p, j) \
  if constexpr (NRT > j && P > p) c##p##j = _mm256_fmadd_ps(av##p, _mm256_broadcast_ss(b + k * kNR + j), c##p##j);

// mr rows valid in all (<= 6 * P); panel 1's rows start at t's row 6.
template <int NRT, int P>
void micro_kernel_cols2(int64_t kc, const float* a0, const float* a1, const float* b, int mr, const TileArgs& t) {
  const __m256i rows = tail_mask(kMR);  // never read past the panel's end
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 av0 = _mm256_maskload_ps(a0 + k * kMR, rows);
    const __m256 av1 = P > 1 ? _mm256_maskload_ps(a1 + k * kMR, rows) : av0;
    ENGINE_COL(0, 0) ENGINE_COL(0, 1) ENGINE_COL(0, 2) ENGINE_COL(0, 3)
    ENGINE_COL(1, 0) ENGINE_COL(1, 1) ENGINE_COL(1, 2) ENGINE_COL(1, 3)
  }
  __m256 acc0[4] = {c00, c01, c02, c03};
  col_epilogue<NRT>(acc0, std::min(mr, kMR), t);
  if constexpr (P > 1) {
    if (mr > kMR) {
      TileArgs t1 = t;
      t1.c += kMR * t.ldc;
      if (t.bias_m) t1.bias_m += kMR;
      if (t.z) t1.z += kMR * t.ldz;
      __m256 acc1[4] = {c10, c11, c12, c13};
      col_epilogue<NRT>(acc1, mr - kMR, t1);
    }
  }
}

#undef ENGINE_COL

template <int NRT>
void micro_kernel_cols(int64_t kc, const float* a, const float* b, int mr, const TileArgs& t) {
  micro_kernel_cols2<NRT, 1>(kc, a, a, b, mr, t);
}

using ColKernel = void (*)(int64_t, const float*, const float*, int, const TileArgs&);
const ColKernel kColKernels[4] = {micro_kernel_cols<1>, micro_kernel_cols<2>, micro_kernel_cols<3>,
                                  micro_kernel_cols<4>};
// Two panels (12 rows) at once, for the AVX-512 sweep.
using ColKernel2 = void (*)(int64_t, const float*, const float*, const float*, int, const TileArgs&);
const ColKernel2 kColKernels2[4] = {micro_kernel_cols2<1, 2>, micro_kernel_cols2<2, 2>, micro_kernel_cols2<3, 2>,
                                    micro_kernel_cols2<4, 2>};

using MicroKernel = void (*)(int64_t, const float*, const float*, int, const TileArgs&);

// [rows - 1][vectors - 1]
const MicroKernel kKernels[kMR][2] = {
    {micro_kernel<1, 1>, micro_kernel<1, 2>}, {micro_kernel<2, 1>, micro_kernel<2, 2>},
    {micro_kernel<3, 1>, micro_kernel<3, 2>}, {micro_kernel<4, 1>, micro_kernel<4, 2>},
    {micro_kernel<5, 1>, micro_kernel<5, 2>}, {micro_kernel<6, 1>, micro_kernel<6, 2>},
};

// drow[panel layout] = src[0, len), starting at column i of a row of B
// panels (panel i / kNR, lane i % kNR; panels kNR * kc floats apart): whole
// panels as vector copies, partial ones element by element, so columns
// outside [i, i + len) are not written.
inline void put_run(float* drow, int64_t kc, int64_t i, const float* src, int64_t len) {
  while (len > 0) {
    const int64_t j = i % kNR;
    const int64_t l = std::min(len, kNR - j);
    float* d = drow + (i / kNR) * kNR * kc + j;
    if (l == kNR) {
      _mm256_store_ps(d, _mm256_loadu_ps(src));
      _mm256_store_ps(d + 8, _mm256_loadu_ps(src + 8));
    } else {
      for (int64_t e = 0; e < l; ++e) d[e] = src[e];
    }
    i += l;
    src += l;
    len -= l;
  }
}

// Points t at the output tile whose top-left element is (row, col).
inline void set_tile(TileArgs& t, const GemmSpec& s, const GemmItem& it, int64_t row, int64_t col) {
  t.c = it.c + row * s.ldc + col;
  t.bias_m = it.bias_m ? it.bias_m + row : nullptr;
  t.bias_n = it.bias_n ? it.bias_n + col : nullptr;
  t.z = it.z ? it.z + row * s.ldz + col : nullptr;
}

}  // namespace
}  // namespace conv_gemm
}  // namespace engine
