// Grouped convolution with 16 or more output channels per group (RegNet's
// group width 16-64, ResNeXt-50's last two stages, 16 and 32), direct,
// AVX-512, vectorized over output channels: conv_grouped_oc_f32_avx512.
//
// grouped_avx512.cc vectorizes along output rows: 16 columns per vector,
// which a 7x7 plane fills to 7/16 and a 14x14 one to 14/16, and at stride 2
// every vector of inputs costs a two-source permute. Here a vector holds 16
// output channels of one pixel instead, and a tile is 16 pixels (up to 16
// columns of one output row, or R whole rows of a narrow plane: 2 rows of
// 7) x 16 channels, one accumulator per pixel:
//   for each input channel c and tap (kh, kw):
//     w = the 16 channels' weights for (c, kh, kw)       (one aligned load)
//     acc[p] += w * x[c, row(p) + kh, col(p) * sw + kw]  (broadcast operand)
// so the plane's width only decides how many pixels a tile holds, and a
// stride only changes which inputs are broadcast. The inputs come from the
// same zero-padded per-thread row buffer as grouped_avx512's
// (grouped_common.h). The tile is then transposed in registers (16x16:
// each vector becomes 16 pixels of one channel) and the epilogue (residual,
// activation) runs on those rows before masked stores into NCHW.
//
// Each output accumulates from its bias over c, kh, kw in that order, one
// FMA per tap, as grouped_avx2/_avx512 do: the three give the same bits.
// Weights are grouped_pack_weights(..., kGroupedOcBlock): blocks of 16
// output channels, the channels past mg in the last block zero.
// Call only when use_avx512(), on shapes grouped_applies() accepts, with
// g.sw 1 or 2.
#include <immintrin.h>

#include <array>
#include <cstring>
#include <utility>

#include "cpu/kernels/conv_gemm/activation_avx512.h"
#include "cpu/kernels/conv_gemm/conv_gemm.h"
#include "cpu/kernels/conv_gemm/grouped_common.h"

namespace engine {
namespace conv_gemm {
namespace {

using namespace grouped_detail;

constexpr int kLanes = 16;

// A tile's sums, pixel-major: t[p * 16 + m] for pixel p, channel m of the
// block. Pixels past the tile's are zero.
struct alignas(64) TileSums {
  float t[kLanes * kLanes];
};

// R output rows x NP columns (R * NP <= 16 pixels, one accumulator each) of
// one block of 16 channels. row[r] points at the buffer row of output row
// r's first tap, at the tile's first column; plane_floats is the buffer's
// stride between input channels. S: the column stride.
// (Two blocks per tile, each broadcast feeding two FMAs, measured the same
// on Zen 4 with 12 pixels and slower with 14: the loop is not bound by its
// loads, one per FMA.)
template <int S, int R, int NP>
void tile(const float* const* row, int64_t pitch, int64_t plane_floats, int64_t cg, const float* w,
          const float* bias, int oc_valid, TileSums& out) {
  constexpr int kP = R * NP;
  static_assert(kP <= kLanes, "a tile holds at most 16 pixels");
  const __m512 b = bias ? _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << oc_valid) - 1u), bias)
                        : _mm512_setzero_ps();
  __m512 acc[kP];
#pragma GCC unroll 16
  for (int p = 0; p < kP; ++p) acc[p] = b;
  const float* rp[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) rp[r] = row[r];
  for (int64_t c = 0; c < cg; ++c) {
#pragma GCC unroll 3
    for (int kh = 0; kh < 3; ++kh) {
#pragma GCC unroll 3
      for (int kw = 0; kw < 3; ++kw) {
        const __m512 wv = _mm512_load_ps(w);
        w += kLanes;
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
          for (int j = 0; j < NP; ++j)
            acc[r * NP + j] = _mm512_fmadd_ps(wv, _mm512_set1_ps(rp[r][kh * pitch + kw + j * S]), acc[r * NP + j]);
      }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) rp[r] += plane_floats;
  }
#pragma GCC unroll 16
  for (int p = 0; p < kLanes; ++p) _mm512_store_ps(out.t + p * kLanes, p < kP ? acc[p] : _mm512_setzero_ps());
}

using TileFn = void (*)(const float* const*, int64_t, int64_t, int64_t, const float*, const float*, int, TileSums&);

// Rows of a narrow plane (NP <= 8 columns) that one tile takes whole:
// 16 / NP (2 rows of 7, 4 of 4).
constexpr int tile_rows(int np) { return np <= kLanes / 2 ? kLanes / np : 1; }

// Tiles indexed by columns - 1: tile_rows whole rows (one row from 9
// columns up), and single rows of <= 8 columns for a task's last rows.
template <int S, size_t... I>
constexpr std::array<TileFn, sizeof...(I)> multi_row_tiles(std::index_sequence<I...>) {
  return {tile<S, tile_rows(I + 1), I + 1>...};
}
template <int S, size_t... I>
constexpr std::array<TileFn, sizeof...(I)> one_row_tiles(std::index_sequence<I...>) {
  return {tile<S, 1, I + 1>...};
}

template <int S>
TileFn pick_tile(int rows, int np) {
  static constexpr auto multi = multi_row_tiles<S>(std::make_index_sequence<kLanes>());
  static constexpr auto one = one_row_tiles<S>(std::make_index_sequence<kLanes / 2>());
  return rows == 1 && np <= kLanes / 2 ? one[np - 1] : multi[np - 1];
}

// Columns per tile: a row of up to 16 columns is one tile; wider rows are
// cut into equal tiles (28 -> 2 x 14, 56 -> 4 x 14).
inline int64_t tile_columns(int64_t ow) {
  if (ow <= kLanes) return ow;
  const int64_t tiles = (ow + kLanes - 1) / kLanes;
  return (ow + tiles - 1) / tiles;
}

// In registers: v[p] = channels 0..15 of pixel p -> v[m] = pixels 0..15 of
// channel m (unpack 32-bit, unpack 64-bit, two 128-bit lane shuffles).
inline void transpose16(__m512 v[kLanes]) {
  __m512 a[kLanes], b[kLanes];
  for (int i = 0; i < 8; ++i) {
    a[2 * i] = _mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]);
    a[2 * i + 1] = _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]);
  }
  // b[4i + m], lane L: pixels 4i..4i+3 of channel 4L + m.
  for (int i = 0; i < 4; ++i) {
    const __m512d a0 = _mm512_castps_pd(a[4 * i]), a1 = _mm512_castps_pd(a[4 * i + 1]);
    const __m512d a2 = _mm512_castps_pd(a[4 * i + 2]), a3 = _mm512_castps_pd(a[4 * i + 3]);
    b[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, a2));
    b[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, a2));
    b[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, a3));
    b[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, a3));
  }
  for (int m = 0; m < 4; ++m) {
    const __m512 c0 = _mm512_shuffle_f32x4(b[m], b[4 + m], 0x88);
    const __m512 c1 = _mm512_shuffle_f32x4(b[m], b[4 + m], 0xDD);
    const __m512 c2 = _mm512_shuffle_f32x4(b[8 + m], b[12 + m], 0x88);
    const __m512 c3 = _mm512_shuffle_f32x4(b[8 + m], b[12 + m], 0xDD);
    v[m] = _mm512_shuffle_f32x4(c0, c2, 0x88);
    v[8 + m] = _mm512_shuffle_f32x4(c0, c2, 0xDD);
    v[4 + m] = _mm512_shuffle_f32x4(c1, c3, 0x88);
    v[12 + m] = _mm512_shuffle_f32x4(c1, c3, 0xDD);
  }
}

// Writes a tile: channel m's pixels go to y + m * out_plane + lane, for the
// lanes in `lanes` (pixel p of the tile is lane p: its columns are
// contiguous in y, whole rows when R > 1), m < oc_valid.
template <typename Op>
void store_tile(const TileSums& s, int oc_valid, __mmask16 lanes, int64_t out_plane, const float* z, float* y,
                const Op& op) {
  __m512 v[kLanes];
  for (int p = 0; p < kLanes; ++p) v[p] = _mm512_load_ps(s.t + p * kLanes);
  transpose16(v);
  for (int m = 0; m < oc_valid; ++m) {
    __m512 a = v[m];
    if (z) a = _mm512_add_ps(a, _mm512_maskz_loadu_ps(lanes, z + m * out_plane));
    _mm512_mask_storeu_ps(y + m * out_plane, lanes, op(a));
  }
}

// One task: output rows [oh0, oh1) of every output channel of one group.
template <int S, typename Op>
void rows_block(const ConvGeom& g, const GroupedDims& d, const float* buf, int64_t oh0, int64_t oh1,
                const float* wg, const float* bg, const float* zg, float* yg, const Op& op) {
  const int64_t mg = g.mg(), cg = g.cg(), out_plane = g.out_plane();
  const int64_t np = tile_columns(g.ow);
  const int rows = tile_rows(static_cast<int>(np));
  const TileFn multi = pick_tile<S>(rows, static_cast<int>(np));
  const TileFn one = pick_tile<S>(1, static_cast<int>(np));
  const int64_t w_block = cg * 9 * kLanes, plane_floats = d.buf_rows * d.pitch;
  TileSums sums;
  for (int64_t m0 = 0; m0 < mg; m0 += kLanes) {
    const int oc_valid = static_cast<int>(std::min<int64_t>(kLanes, mg - m0));
    const float* w = wg + (m0 / kLanes) * w_block;
    const float* bias = bg ? bg + m0 : nullptr;
    // Column strips outer, rows inner: a strip's input rows (cg channels x
    // a few rows x up to 16 * S + 2 columns) stay in L1 from one output row
    // to the next, where whole buffer rows of a wide plane would not.
    for (int64_t ow0 = 0; ow0 < g.ow; ow0 += np) {
      for (int64_t oh = oh0; oh < oh1;) {
        // Whole rows of a narrow plane, `rows` at a time; the last few one by one.
        const int r = oh + rows <= oh1 ? rows : 1;
        const TileFn fn = r == rows ? multi : one;
        const float* row[kLanes];
        for (int i = 0; i < r; ++i) row[i] = buf + (oh + i - oh0) * g.sh * d.pitch + ow0 * S;
        fn(row, d.pitch, plane_floats, cg, w, bias, oc_valid, sums);
        // Several rows only when a tile holds whole rows: its pixels are contiguous in y.
        const int64_t n = r > 1 ? r * g.ow : std::min(np, g.ow - ow0);
        const __mmask16 lanes = static_cast<__mmask16>((1u << n) - 1u);
        const int64_t o = m0 * out_plane + oh * g.ow + ow0;
        store_tile(sums, oc_valid, lanes, out_plane, zg ? zg + o : nullptr, yg + o, op);
        oh += r;
      }
    }
  }
}

}  // namespace

void grouped_oc_avx512(ThreadPool& pool, const ConvGeom& g, const float* x, const float* wpk, const float* b,
                       const float* z, const Activation& act, float* y, void* scratch) {
  ENGINE_CHECK(g.sw == 1 || g.sw == 2, "grouped_oc_avx512: column stride ", g.sw, " (1 or 2 only)");
  const int threads = pool.num_threads();
  const GroupedDims d = grouped_dims(g, threads);
  const size_t per_thread = round_up(g.cg() * d.floats() * sizeof(float), 64);
  const int64_t blocks = (g.oh + d.rows_blk - 1) / d.rows_blk;
  const int64_t tasks = g.batch * g.group * blocks;
  const int64_t cg = g.cg(), out_plane = g.out_plane();
  const int64_t w_group = grouped_group_stride(g.mg(), cg, g.kh * g.kw, kGroupedOcBlock);
  // Tasks (image, group, block of rows), rows fastest, claimed as
  // AffineTasks: each thread takes a contiguous range (whole groups), so two
  // threads rarely write the cache lines where one task's rows meet the
  // next one's (first-come claims alternated neighbouring blocks between
  // the threads: a stride-2 layer with 2-row tasks sped up 1.3x on two
  // threads instead of 1.9x).
  AffineTasks claims(tasks, threads);
  auto worker = [&](int tid, int) {
    float* buf = reinterpret_cast<float*>(static_cast<char*>(scratch) + tid * per_thread);
    with_act512(act, [&](const auto& op) {
      bool first = true;
      for (int64_t t = claims.claim(tid); t >= 0; t = claims.claim(tid)) {
        const int64_t blk = t % blocks, plane = t / blocks;
        const int64_t img = plane / g.group, grp = plane % g.group;
        const int64_t oh0 = blk * d.rows_blk, oh1 = std::min(g.oh, oh0 + d.rows_blk);
        fill_rows(g, d, x + (img * g.cin + grp * cg) * g.in_plane(), oh0 * g.sh - g.ph, buf, first);
        first = false;
        const int64_t yoff = (img * g.cout + grp * g.mg()) * out_plane;
        const float* wg = wpk + grp * w_group;
        const float* bg = b ? b + grp * g.mg() : nullptr;
        const float* zg = z ? z + yoff : nullptr;
        if (g.sw == 1) rows_block<1>(g, d, buf, oh0, oh1, wg, bg, zg, y + yoff, op);
        else rows_block<2>(g, d, buf, oh0, oh1, wg, bg, zg, y + yoff, op);
      }
    });
  };
  if (tasks == 1 || threads == 1) {
    worker(0, 1);
  } else {
    pool.run_any(by_ref(worker));
  }
}

}  // namespace conv_gemm
}  // namespace engine
