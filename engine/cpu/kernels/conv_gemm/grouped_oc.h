// The grouped convolution vectorized over output channels, for groups of
// 16 or more output channels (RegNet's group widths 16-64, ResNeXt-50's last
// two stages, 16 and 32) and for stems (one group of a few input channels:
// ResNet's 7x7/2 conv of RGB), direct, one ISA per instantiation:
// grouped_oc_avx512.cc (16 channels per zmm: conv_grouped_oc_f32_avx512).
// Everything here has internal linkage, so each ISA's translation unit
// compiles its own. (An AVX2 instantiation, 8 channels per ymm, measured
// mixed against grouped_avx2 on Zen 4 and is not built.)
//
// grouped_avx2/_avx512 vectorize along output rows: 8 or 16 columns per
// vector, which a 7x7 plane fills to 7/8 or 7/16, and at stride 2 every
// vector of inputs costs a permute. Here a vector holds V::kOC output
// channels of one pixel instead, and a tile is up to V::kPixels pixels (up
// to that many columns of one output row, or R whole rows of a narrow
// plane) x V::kOC channels, one accumulator per pixel:
//   for each input channel c and tap (kh, kw):
//     w = the kOC channels' weights for (c, kh, kw)      (one aligned load)
//     acc[p] += w * x[c, row(p) + kh, col(p) * sw + kw]  (a broadcast input)
// so the plane's width only decides how many pixels a tile holds, and a
// stride only changes which inputs are broadcast. The inputs come from the
// same zero-padded per-thread row buffer as the column kernels'
// (grouped_common.h). The tile's sums are then transposed in registers
// (each vector becomes pixels of one channel) for the epilogue (residual,
// activation) and masked stores into NCHW (V::store_tile).
//
// Each output accumulates from its bias over c, kh, kw in that order, one
// FMA per tap, as the column kernels do: all of them give the same bits.
// Weights are grouped_pack_weights(..., V::kOC): blocks of kOC output
// channels, the channels past mg in the last block zero. Shapes:
// grouped_oc_applies(): 3x3 grouped convs, and dense convs with few input
// channels and kernels up to 7x7 (network stems: ResNet's 7x7/2 on RGB).
//
// V (the ISA's traits) provides: Vec; kOC (channels per vector); kPixels
// (the most pixels a tile holds, one accumulator register each, leaving
// room for the weights and broadcasts); bias(p, n) (n channels' bias, the
// rest zero); load(p) (aligned); zero(); fma_bcast(w, x, acc) (acc + w *
// broadcast(*x)); store(p, v) (aligned); store_tile(sums, oc_valid, n,
// out_plane, z, y, op) (see TileSums); with_act(act, f) (f(op) with the
// activation functor of that ISA).
#pragma once

#include <array>
#include <cstring>
#include <type_traits>
#include <utility>

#include "cpu/kernels/conv_gemm/conv_gemm.h"
#include "cpu/kernels/conv_gemm/grouped_common.h"

namespace engine {
namespace conv_gemm {
namespace {

namespace oc_detail {

using grouped_detail::grouped_dims;
using grouped_detail::GroupedDims;

// Pixel slots of a tile's sums: kPixels rounded up to whole transposes.
constexpr int kSlots = 16;

// A tile's sums, pixel-major: t[p * kOC + m] for pixel p, channel m of the
// block; the slots past the tile's pixels are zero. V::store_tile writes
// the first n pixels of channels m < oc_valid to y + m * out_plane + p
// (the tile's pixels are contiguous in y: one row's columns, or whole rows).
template <class V>
struct alignas(64) TileSums {
  float t[kSlots * V::kOC];
};

// The kernel's taps: K x K with K a compile-time 3 (the loops unroll), or
// kh x kw at run time (K == 0: stems such as ResNet's 7x7).
struct Taps {
  int64_t kh, kw;
};

// R output rows x NP columns (R * NP <= kPixels) of one block of kOC
// channels. row[r] points at the buffer row of output row r's first tap,
// at the tile's first column; plane_floats is the buffer's stride between
// input channels. S: the column stride.
template <class V, int S, int R, int NP, int K>
void tile(const float* const* row, int64_t pitch, int64_t plane_floats, int64_t cg, Taps taps, const float* w,
          const float* bias, int oc_valid, TileSums<V>& out) {
  const int64_t kh_n = K > 0 ? K : taps.kh, kw_n = K > 0 ? K : taps.kw;
  constexpr int kP = R * NP;
  static_assert(kP <= V::kPixels, "too many pixels for the registers");
  using Vec = typename V::Vec;
  const Vec b = bias ? V::bias(bias, oc_valid) : V::zero();
  Vec acc[kP];
#pragma GCC unroll 16
  for (int p = 0; p < kP; ++p) acc[p] = b;
  const float* rp[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) rp[r] = row[r];
  for (int64_t c = 0; c < cg; ++c) {
#pragma GCC unroll 3
    for (int64_t kh = 0; kh < kh_n; ++kh) {
#pragma GCC unroll 3
      for (int64_t kw = 0; kw < kw_n; ++kw) {
        const Vec wv = V::load(w);
        w += V::kOC;
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
          for (int j = 0; j < NP; ++j)
            acc[r * NP + j] = V::fma_bcast(wv, rp[r] + kh * pitch + kw + j * S, acc[r * NP + j]);
      }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) rp[r] += plane_floats;
  }
#pragma GCC unroll 16
  for (int p = 0; p < kSlots; ++p) V::store(out.t + p * V::kOC, p < kP ? acc[p] : V::zero());
}

template <class V>
using TileFn = void (*)(const float* const*, int64_t, int64_t, int64_t, Taps, const float*, const float*, int,
                        TileSums<V>&);

// Rows of a narrow plane (NP <= kPixels / 2 columns) that one tile takes
// whole: kPixels / NP (AVX-512: 2 rows of 7, 4 of 4). Only 3x3 kernels
// (grouped convs on small planes); the run-time taps take one row a tile.
template <class V>
constexpr int tile_rows(int np, int k) {
  return k == 3 && np <= V::kPixels / 2 ? V::kPixels / np : 1;
}

// Tiles indexed by columns - 1: tile_rows whole rows (one row past
// kPixels / 2 columns), and single rows of fewer columns for a task's last
// rows.
template <class V, int S, int K, size_t... I>
constexpr std::array<TileFn<V>, sizeof...(I)> multi_row_tiles(std::index_sequence<I...>) {
  return {tile<V, S, tile_rows<V>(I + 1, K), I + 1, K>...};
}
template <class V, int S, size_t... I>
constexpr std::array<TileFn<V>, sizeof...(I)> one_row_tiles(std::index_sequence<I...>) {
  return {tile<V, S, 1, I + 1, 3>...};
}

template <class V, int S, int K>
TileFn<V> pick_tile(int rows, int np) {
  static constexpr auto multi = multi_row_tiles<V, S, K>(std::make_index_sequence<V::kPixels>());
  if constexpr (K == 3) {
    static constexpr auto one = one_row_tiles<V, S>(std::make_index_sequence<V::kPixels / 2>());
    if (rows == 1 && np <= V::kPixels / 2) return one[np - 1];
  }
  return multi[np - 1];
}

// Columns per tile: a row of up to kPixels columns is one tile; wider rows
// are cut into equal tiles (AVX-512: 28 -> 2 x 14, 56 -> 4 x 14).
template <class V>
int64_t tile_columns(int64_t ow) {
  if (ow <= V::kPixels) return ow;
  const int64_t tiles = (ow + V::kPixels - 1) / V::kPixels;
  return (ow + tiles - 1) / tiles;
}

// One task: output rows [oh0, oh1) of every output channel of one group.
template <class V, int S, int K, typename Op>
void rows_block(const ConvGeom& g, const GroupedDims& d, const float* buf, int64_t oh0, int64_t oh1,
                const float* wg, const float* bg, const float* zg, float* yg, const Op& op) {
  const int64_t mg = g.mg(), cg = g.cg(), out_plane = g.out_plane();
  const int64_t np = tile_columns<V>(g.ow);
  const int rows = tile_rows<V>(static_cast<int>(np), K);
  const TileFn<V> multi = pick_tile<V, S, K>(rows, static_cast<int>(np));
  const TileFn<V> one = pick_tile<V, S, K>(1, static_cast<int>(np));
  const Taps taps{g.kh, g.kw};
  const int64_t w_block = cg * g.kh * g.kw * V::kOC, plane_floats = d.buf_rows * d.pitch;
  TileSums<V> sums;
  for (int64_t m0 = 0; m0 < mg; m0 += V::kOC) {
    const int oc_valid = static_cast<int>(std::min<int64_t>(V::kOC, mg - m0));
    const float* w = wg + (m0 / V::kOC) * w_block;
    const float* bias = bg ? bg + m0 : nullptr;
    for (int64_t oh = oh0; oh < oh1;) {
      // Whole rows of a narrow plane, `rows` at a time; the last few one by one.
      const int r = oh + rows <= oh1 ? rows : 1;
      const TileFn<V> fn = r == rows ? multi : one;
      for (int64_t ow0 = 0; ow0 < g.ow; ow0 += np) {
        const float* row[V::kPixels];
        for (int i = 0; i < r; ++i) row[i] = buf + (oh + i - oh0) * g.sh * d.pitch + ow0 * S;
        fn(row, d.pitch, plane_floats, cg, taps, w, bias, oc_valid, sums);
        // Several rows only when a tile holds whole rows: its pixels are contiguous in y.
        const int n = static_cast<int>(r > 1 ? r * g.ow : std::min(np, g.ow - ow0));
        const int64_t o = m0 * out_plane + oh * g.ow + ow0;
        V::store_tile(sums.t, oc_valid, n, out_plane, zg ? zg + o : nullptr, yg + o, op);
      }
      oh += r;
    }
  }
}

// The whole convolution, task by task (grouped_common.h's for_each_task).
template <class V>
void run(ThreadPool& pool, const ConvGeom& g, const float* x, const float* wpk, const float* b, const float* z,
         const Activation& act, float* y, void* scratch) {
  ENGINE_CHECK(grouped_oc_applies(g), "grouped_oc: a shape it does not take");
  const GroupedDims d = grouped_dims(g, pool.num_threads());
  const int64_t w_group = grouped_group_stride(g.mg(), g.cg(), g.kh * g.kw, V::kOC);
  const bool k3 = g.kh == 3 && g.kw == 3;
  grouped_detail::for_each_task(pool, g, d, x, scratch, [&](const grouped_detail::GroupedTask& t) {
    const float* wg = wpk + t.grp * w_group;
    const float* bg = b ? b + t.grp * g.mg() : nullptr;
    const float* zg = z ? z + t.y_off : nullptr;
    V::with_act(act, [&](const auto& op) {
      using Op = std::decay_t<decltype(op)>;
      const auto rows = g.sw == 1 ? (k3 ? rows_block<V, 1, 3, Op> : rows_block<V, 1, 0, Op>)
                                  : (k3 ? rows_block<V, 2, 3, Op> : rows_block<V, 2, 0, Op>);
      rows(g, d, t.buf, t.oh0, t.oh1, wg, bg, zg, y + t.y_off, op);
    });
  });
}

}  // namespace oc_detail
}  // namespace
}  // namespace conv_gemm
}  // namespace engine
