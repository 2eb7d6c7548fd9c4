// Packed SGEMM for AVX-512 (F/BW/VL/DQ) with the fused epilogue: the driver of
// sgemm_driver.h (blocking, packing, tasks: as sgemm_avx2.cc describes) with a
// 12x32 register tile.
//
// Tile: 12 rows x 32 columns = 24 zmm accumulators + 2 B vectors + 1 A
// broadcast = 27 of 32 zmm registers; per k it issues 24 FMAs for 2 B loads
// and 12 broadcasts (AVX2's 6x16 tile: 12 FMAs of half the width for 2 + 6).
// The panel layout is the AVX2 one (6-row A panels, 16-column B panels), so
// the tile reads two A panels and two B panels side by side and weights
// pre-packed in create() serve both tiers. Edges: fewer rows and one vector
// of columns are the same code instantiated smaller, with masked loads and
// stores (cheap on AVX-512); column tails of at most 4 (also after a
// 16-wide tile, when 17-20 columns are left) use AVX2's row-vectorized
// kernel (sgemm_tiles_avx2.h) on both 6-row panels at once; it computes
// each element as the tiles do (same bits).
// The epilogue (alpha, C, bias, residual, activation) runs on the registers
// after the last k block, with the activations of simd/vec_avx512.h (bit-
// identical to the AVX2 tier's and the standalone ops').
#include "cpu/kernels/conv_gemm/activation_avx512.h"
#include "cpu/kernels/conv_gemm/sgemm_driver.h"

namespace engine {
namespace conv_gemm {
namespace {

constexpr int kMR2 = 2 * kMR;  // 12 rows: two A panels

// Row r (< 12) of the tile: A from panel a0 (r < 6) or a1 (r >= 6).
#define ENGINE_ROW512(r)                                                                 \
  if constexpr (R > r) {                                                                 \
    const __m512 av = _mm512_set1_ps((r < kMR ? a0 + r : a1 + (r - kMR))[k * kMR]);     \
    c##r##_0 = _mm512_fmadd_ps(av, b0, c##r##_0);                                        \
    if constexpr (NV == 2) c##r##_1 = _mm512_fmadd_ps(av, b1, c##r##_1);                \
  }

// acc[R][NV] = A panels (a0: rows 0-5, a1: rows 6-11) x B panels (bp0:
// columns 0-15, bp1: 16-31; k row kk at kk * bks: packed panels or B in
// place), then the epilogue; nr <= 16*NV valid columns.
template <int R, int NV>
void micro_kernel512(int64_t kc, const float* a0, const float* a1, const float* bp0, const float* bp1, int64_t bks,
                     int nr, const TileArgs& t) {
  __m512 c0_0 = _mm512_setzero_ps(), c0_1 = c0_0, c1_0 = c0_0, c1_1 = c0_0, c2_0 = c0_0, c2_1 = c0_0;
  __m512 c3_0 = c0_0, c3_1 = c0_0, c4_0 = c0_0, c4_1 = c0_0, c5_0 = c0_0, c5_1 = c0_0;
  __m512 c6_0 = c0_0, c6_1 = c0_0, c7_0 = c0_0, c7_1 = c0_0, c8_0 = c0_0, c8_1 = c0_0;
  __m512 c9_0 = c0_0, c9_1 = c0_0, c10_0 = c0_0, c10_1 = c0_0, c11_0 = c0_0, c11_1 = c0_0;
#pragma GCC unroll 2
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_loadu_ps(bp0 + k * bks);
    const __m512 b1 = NV == 2 ? _mm512_loadu_ps(bp1 + k * bks) : b0;
    ENGINE_ROW512(0)
    ENGINE_ROW512(1)
    ENGINE_ROW512(2)
    ENGINE_ROW512(3)
    ENGINE_ROW512(4)
    ENGINE_ROW512(5)
    ENGINE_ROW512(6)
    ENGINE_ROW512(7)
    ENGINE_ROW512(8)
    ENGINE_ROW512(9)
    ENGINE_ROW512(10)
    ENGINE_ROW512(11)
  }
  __m512 acc[kMR2][2] = {{c0_0, c0_1}, {c1_0, c1_1}, {c2_0, c2_1},   {c3_0, c3_1},   {c4_0, c4_1},   {c5_0, c5_1},
                         {c6_0, c6_1}, {c7_0, c7_1}, {c8_0, c8_1}, {c9_0, c9_1}, {c10_0, c10_1}, {c11_0, c11_1}};

  const bool full = nr == 16 * NV;
  __mmask16 mask[NV];
  for (int v = 0; v < NV; ++v) mask[v] = simd::avx512::tail_mask(std::max(0, std::min(16, nr - 16 * v)));
  auto load = [&](const float* p, int v) {
    return full ? _mm512_loadu_ps(p + 16 * v) : _mm512_maskz_loadu_ps(mask[v], p + 16 * v);
  };

  if (t.alpha != 1.f) {
    const __m512 al = _mm512_set1_ps(t.alpha);
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_mul_ps(acc[r][v], al);
  }
  if (t.load_c)
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_add_ps(acc[r][v], load(t.c + r * t.ldc, v));
  if (t.last) {
    if (t.bias_m)
      for (int r = 0; r < R; ++r) {
        const __m512 bm = _mm512_set1_ps(t.bias_m[r]);
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_add_ps(acc[r][v], bm);
      }
    if (t.bias_n)
      for (int v = 0; v < NV; ++v) {
        const __m512 bn = load(t.bias_n, v);
        for (int r = 0; r < R; ++r) acc[r][v] = _mm512_add_ps(acc[r][v], bn);
      }
    if (t.z)
      for (int r = 0; r < R; ++r)
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_add_ps(acc[r][v], load(t.z + r * t.ldz, v));
    if (t.act->kind != Act::kNone)
      with_act512(*t.act, [&](const auto& op) {
        for (int r = 0; r < R; ++r)
          for (int v = 0; v < NV; ++v) acc[r][v] = op(acc[r][v]);
      });
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) {
      float* p = t.c + r * t.ldc + 16 * v;
      if (full) _mm512_storeu_ps(p, acc[r][v]);
      else _mm512_mask_storeu_ps(p, mask[v], acc[r][v]);
    }
}

#undef ENGINE_ROW512

using MicroKernel512 = void (*)(int64_t, const float*, const float*, const float*, const float*, int64_t, int,
                                const TileArgs&);

template <int R>
constexpr MicroKernel512 kPair[2] = {micro_kernel512<R, 1>, micro_kernel512<R, 2>};

// [rows - 1][vectors - 1]
const MicroKernel512 kKernels512[kMR2][2] = {
    {kPair<1>[0], kPair<1>[1]},   {kPair<2>[0], kPair<2>[1]},   {kPair<3>[0], kPair<3>[1]},
    {kPair<4>[0], kPair<4>[1]},   {kPair<5>[0], kPair<5>[1]},   {kPair<6>[0], kPair<6>[1]},
    {kPair<7>[0], kPair<7>[1]},   {kPair<8>[0], kPair<8>[1]},   {kPair<9>[0], kPair<9>[1]},
    {kPair<10>[0], kPair<10>[1]}, {kPair<11>[0], kPair<11>[1]}, {kPair<12>[0], kPair<12>[1]},
};

// 12x32 tiles: pairs of row panels outside, pairs of column panels inside.
struct Avx512Sweep {
  // B in place (sgemm_driver.h): only whole panels, so no column tail and
  // no partial vector (no load past a row of B).
  static constexpr bool kDirectB = true;
  static void run(const GemmSpec& s, const GemmItem& it, const float* ap, const float* bp, int64_t pb, int64_t pe,
                  int64_t n0, int64_t nc, int64_t kc, TileArgs& t, int64_t bks, int64_t bps) {
    const int64_t qn = (nc + kNR - 1) / kNR;
    for (int64_t pi = pb; pi < pe; pi += 2) {
      const int panels = pi + 1 < pe ? 2 : 1;
      const int64_t row = pi * kMR;
      const int mr = static_cast<int>(std::min<int64_t>(panels * kMR, s.m - row));
      const float* a0 = ap + (pi - pb) * kMR * kc;
      const float* a1 = panels == 2 ? a0 + kMR * kc : a0;
      for (int64_t q = 0; q < qn;) {
        const int64_t rem = nc - q * kNR;
        const float* bq = bp + q * bps;
        if (rem <= 4) {
          set_tile(t, s, it, row, n0 + q * kNR);
          kColKernels2[rem - 1](kc, a0, a1, bq, mr, t);
          ++q;
          continue;
        }
        // 17-20 columns left: one full vector, then the column kernel for
        // the last 1-4 (13-16 FMA cycles per k for 12 rows instead of the
        // 24 of a masked 32-wide tile; a 7x7 output's 49 = 32 + 16 + 1).
        const int nv = rem > kNR + 4 ? 2 : 1;
        const int nr = static_cast<int>(std::min<int64_t>(nv * kNR, rem));
        set_tile(t, s, it, row, n0 + q * kNR);
        kKernels512[mr - 1][nv - 1](kc, a0, a1, bq, bq + bps, bks, nr, t);
        q += nv;
      }
    }
  }
};

}  // namespace

void sgemm_avx512(ThreadPool& pool, const GemmSpec& spec, GemmItemFn item_fn, const void* item_ctx, void* scratch) {
  sgemm_run<Avx512Sweep>(pool, spec, item_fn, item_ctx, scratch);
}

}  // namespace conv_gemm
}  // namespace engine
