// conv_depthwise_f32_avx512: depthwise convolution (group == Cin == Cout),
// 1-D, 2-D or 3-D, vectorized over 16 channels per zmm. Call only when
// use_avx512().
//
// depthwise_avx2 vectorizes along output rows: on the small planes of a
// network's last stages (7x7, 14x14) most lanes of a vector are idle, and a
// stride-2 row costs a permute per vector. Here a vector holds 16 channels
// of one pixel, as in onnxruntime's NCHWc kernels, so a plane's width only
// decides how many pixels a tile holds. Per task (image, block of 16
// channels, output depth, band of output rows):
//   1. the band's input rows of the 16 channels are transposed into a
//      per-thread buffer, one 64-byte line per (row, column): [depth tap]
//      [row][column][16 channels], the pad value where the pads are;
//   2. a tile of up to 16 output pixels (columns of one row, or whole rows
//      of a plane at most 8 wide) accumulates every tap in registers:
//        acc[p] += w[tap] * buf[row(p) + kh][col(p) * sw + kw]
//      one aligned load and one FMA per pixel and tap, no broadcasts and
//      no permutes, whatever the stride;
//   3. the tile is transposed back in registers (Zmm::store_tile) for the
//      NCHW epilogue: residual, activation, masked stores.
// Each output accumulates from its bias over kd, kh, kw in that order, one
// FMA per tap. Weights come from depthwise_pack_weights: [block][kd*kh*kw]
// [16], the channels past C in the last block zero.
// depthwise_s8_avx512 runs the same tasks and tiles on an int8 input (the
// rows converted to float as they are transposed, padded with the input's
// zero point) for the int8 QConv: the float sums of int8 products are exact
// (see conv_gemm.h), and each tile leaves as int32 rows for its epilogue.
// (A row-vectorized form for wide planes, 16 columns per zmm and no
// transposes, measured slower on Zen 4: one unaligned, line-splitting load
// per FMA; see README, "Depthwise convolution".)
#include <algorithm>
#include <array>
#include <cstring>
#include <type_traits>
#include <utility>

#include "cpu/kernels/conv_gemm/conv_gemm.h"
#include "cpu/kernels/conv_gemm/grouped_oc.h"
#include "cpu/kernels/conv_gemm/zmm_tile.h"
#include "cpu/thread_pool.h"

namespace engine {
namespace conv_gemm {
namespace {

using oc_detail::TileSums;
constexpr int kC = Zmm::kOC;          // channels per vector, floats per buffer column
constexpr int kPixels = Zmm::kPixels;  // pixels per tile, one accumulator each

struct DwDims {
  int64_t pitch;     // columns per buffered row
  int64_t rows_blk;  // output rows per task
  int64_t buf_rows;  // buffered input rows per depth tap
  int64_t slices;    // depth taps (g.kd)
  int64_t floats() const { return slices * buf_rows * pitch * kC; }
};

int64_t band_rows(const ConvGeom& g, int64_t rb) { return (rb - 1) * g.sh + (g.kh - 1) * g.dh + 1; }

DwDims dw_dims(const ConvGeom& g, int threads) {
  DwDims d;
  d.slices = g.kd;
  d.pitch = (g.ow - 1) * g.sw + (g.kw - 1) * g.dw + 1;
  // Rows per task: the buffer within about 96 KB (L2; the rows one output
  // row reads stay in L1 up to 56 columns of a 3x3 kernel), and at least 4
  // tasks per thread.
  const int64_t row_floats = d.slices * d.pitch * kC;
  int64_t rb = 1;
  while (rb < g.oh && band_rows(g, rb + 1) * row_floats <= 24576) ++rb;
  const int64_t want = 4 * static_cast<int64_t>(threads);
  const int64_t outer = g.batch * ((g.cout + kC - 1) / kC) * g.od;
  if (outer * ((g.oh + rb - 1) / rb) < want) {
    const int64_t bands = std::min(g.oh, (want + outer - 1) / outer);
    rb = std::min(rb, (g.oh + bands - 1) / bands);
  }
  d.rows_blk = rb;
  d.buf_rows = band_rows(g, rb);
  return d;
}

size_t buffer_bytes(const DwDims& d) { return round_up(static_cast<size_t>(d.floats()) * sizeof(float), 64); }

// 16 columns (lanes m) of one channel row as floats: float inputs, or int8
// ones (depthwise_s8_avx512), whose values floats hold exactly.
inline __m512 load_columns(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 load_columns(const int8_t* p, __mmask16 m) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, p)));
}

// Transposes the task's input rows of channels [c0, c0 + cvalid) into buf
// (image x, output depth od, output rows from oh0). Only the image columns
// of each row are written: the pads' columns hold `pad` (0, or an int8
// input's zero point) from the thread's first task in this call (`first`
// fills the whole buffer) and no task writes them; rows outside the input
// are written as `pad`.
template <typename T>
void fill(const ConvGeom& g, const DwDims& d, const T* x, int64_t c0, int cvalid, int64_t od, int64_t oh0,
          float* buf, bool first, float pad) {
  if (first) std::fill(buf, buf + d.floats(), pad);
  const int64_t lead = std::min(g.pw, d.pitch);
  const int64_t copy_w = std::max<int64_t>(0, std::min(g.iw, d.pitch - lead));
  const int64_t in_plane = g.in_plane(), row0 = oh0 * g.sh - g.ph;
  for (int64_t s = 0; s < d.slices; ++s) {
    const int64_t id = od * g.sd - g.pd + s * g.dd;
    for (int64_t r = 0; r < d.buf_rows; ++r) {
      float* dst = buf + ((s * d.buf_rows + r) * d.pitch + lead) * kC;
      const int64_t ih = row0 + r;
      if (id < 0 || id >= g.id || ih < 0 || ih >= g.ih) {
        std::fill(dst, dst + copy_w * kC, pad);
        continue;
      }
      const T* src = x + c0 * in_plane + (id * g.ih + ih) * g.iw;
      for (int64_t col = 0; col < copy_w; col += kC) {
        const int n = static_cast<int>(std::min<int64_t>(kC, copy_w - col));
        const __mmask16 m = static_cast<__mmask16>((1u << n) - 1u);
        __m512 v[kC];
        for (int c = 0; c < kC; ++c)
          v[c] = c < cvalid ? load_columns(src + c * in_plane + col, m) : _mm512_setzero_ps();
        transpose16(v);
        for (int p = 0; p < n; ++p) _mm512_store_ps(dst + (col + p) * kC, v[p]);
      }
    }
  }
}

// Offsets in the buffer, in floats: between depth taps, between kh taps
// (dilation included), between kw taps.
struct DwTaps {
  int64_t kd, kh, kw, slice, drow, dcol;
};

// R output rows x NP columns (R * NP <= kPixels) of one block of channels;
// row[r] is output row r's first input (tap 0, 0, 0) in the buffer; bias
// holds the block's 16 biases (aligned). S: the column stride. K: the
// kernel's width at compile time (3, 5 or 7; unit column dilation): each
// input column of a kernel row is loaded once and feeds the FMAs of every
// output column it is a tap of (up to K), with the row's K weights in
// registers, so the loop is bound by FMAs, not loads; 0: taps at run time,
// one load per FMA. Either way each output sums its taps in kd, kh, kw
// order.
template <int S, int R, int NP, int K>
void dw_tile(const float* const* row, const DwTaps& t, const float* w, const float* bias, TileSums<Zmm>& out) {
  constexpr int kP = R * NP;
  static_assert(kP <= kPixels, "too many pixels for the registers");
  __m512 acc[kP];
#pragma GCC unroll 16
  for (int p = 0; p < kP; ++p) acc[p] = _mm512_load_ps(bias);
  if constexpr (K > 0) {
    constexpr int kCols = (NP - 1) * S + K;  // input columns one output row's tile reads
    for (int64_t s = 0; s < t.kd; ++s)
      for (int64_t kh = 0; kh < t.kh; ++kh) {
        __m512 wv[K];
#pragma GCC unroll 7
        for (int kw = 0; kw < K; ++kw) wv[kw] = _mm512_load_ps(w + kw * kC);
        w += K * kC;
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
          const float* p = row[r] + s * t.slice + kh * t.drow;
#pragma GCC unroll 64
          for (int c = 0; c < kCols; ++c) {
            const __m512 x = _mm512_load_ps(p + c * kC);
#pragma GCC unroll 7
            for (int kw = 0; kw < K; ++kw) {
              const int j = (c - kw) / S;
              if (c >= kw && (c - kw) % S == 0 && j < NP) acc[r * NP + j] = _mm512_fmadd_ps(wv[kw], x, acc[r * NP + j]);
            }
          }
        }
      }
  } else {
    for (int64_t s = 0; s < t.kd; ++s)
      for (int64_t kh = 0; kh < t.kh; ++kh)
        for (int64_t kw = 0; kw < t.kw; ++kw) {
          const __m512 wv = _mm512_load_ps(w);
          w += kC;
          const int64_t off = s * t.slice + kh * t.drow + kw * t.dcol;
#pragma GCC unroll 16
          for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
            for (int j = 0; j < NP; ++j)
              acc[r * NP + j] = _mm512_fmadd_ps(wv, _mm512_load_ps(row[r] + off + j * S * kC), acc[r * NP + j]);
        }
  }
#pragma GCC unroll 16
  for (int p = 0; p < oc_detail::kSlots; ++p) _mm512_store_ps(out.t + p * kC, p < kP ? acc[p] : _mm512_setzero_ps());
}

using DwTileFn = void (*)(const float* const*, const DwTaps&, const float*, const float*, TileSums<Zmm>&);

// Whole rows of a plane at most kPixels / 2 wide per tile (7 -> 2 rows, 4 -> 4).
constexpr int tile_rows(int np) { return np <= kPixels / 2 ? kPixels / np : 1; }

template <int S, int K, size_t... I>
constexpr std::array<DwTileFn, sizeof...(I)> multi_row_tiles(std::index_sequence<I...>) {
  return {dw_tile<S, tile_rows(I + 1), I + 1, K>...};
}
template <int S, int K, size_t... I>
constexpr std::array<DwTileFn, sizeof...(I)> one_row_tiles(std::index_sequence<I...>) {
  return {dw_tile<S, 1, I + 1, K>...};
}

template <int S, int K>
DwTileFn pick_tile(int rows, int np) {
  static constexpr auto multi = multi_row_tiles<S, K>(std::make_index_sequence<kPixels>());
  static constexpr auto one = one_row_tiles<S, K>(std::make_index_sequence<kPixels / 2>());
  return rows == 1 && np <= kPixels / 2 ? one[np - 1] : multi[np - 1];
}

// One task: output rows [oh0, oh1) at output depth od of channels [c0, c0 +
// cvalid) of image img; each tile's sums go to out(sums, cvalid, n, img, c0,
// pixel): n pixels from output pixel `pixel` of the plane, contiguous.
template <int S, int K, typename Out>
void rows_block(const ConvGeom& g, const DwDims& d, const float* buf, int64_t img, int64_t c0, int cvalid,
                int64_t od, int64_t oh0, int64_t oh1, const float* w, const float* b, const Out& out) {
  const int64_t np = oc_detail::tile_columns<Zmm>(g.ow);
  const int rows = tile_rows(static_cast<int>(np));
  const DwTileFn multi = pick_tile<S, K>(rows, static_cast<int>(np));
  const DwTileFn one = pick_tile<S, K>(1, static_cast<int>(np));
  const DwTaps taps{g.kd, g.kh, g.kw, d.buf_rows * d.pitch * kC, g.dh * d.pitch * kC, g.dw * kC};
  alignas(64) float bias[kC] = {};
  if (b) std::memcpy(bias, b + c0, static_cast<size_t>(cvalid) * sizeof(float));
  TileSums<Zmm> sums;
  for (int64_t oh = oh0; oh < oh1;) {
    const int r = oh + rows <= oh1 ? rows : 1;
    const DwTileFn fn = r == rows ? multi : one;
    for (int64_t ow0 = 0; ow0 < g.ow; ow0 += np) {
      const float* row[kPixels];
      for (int i = 0; i < r; ++i) row[i] = buf + ((oh + i - oh0) * g.sh * d.pitch + ow0 * S) * kC;
      fn(row, taps, w, bias, sums);
      // Several rows only when a tile holds whole rows: its pixels are contiguous in y.
      const int n = static_cast<int>(r > 1 ? r * g.ow : std::min(np, g.ow - ow0));
      out(sums, cvalid, n, img, c0, (od * g.oh + oh) * g.ow + ow0);
    }
    oh += r;
  }
}

// The whole convolution, task by task (image, block of channels, output
// depth, band of rows; bands fastest), claimed as AffineTasks (contiguous
// ranges per thread); out as rows_block's.
template <typename T, typename Out>
void run(ThreadPool& pool, const ConvGeom& g, const T* x, float pad, const float* wpk, const float* b, void* scratch,
         const Out& out) {
  const int threads = pool.num_threads();
  const DwDims d = dw_dims(g, threads);
  const size_t per_thread = buffer_bytes(d);
  const int64_t blocks = (g.cout + kC - 1) / kC, bands = (g.oh + d.rows_blk - 1) / d.rows_blk;
  const int64_t tasks = g.batch * blocks * g.od * bands, ks = g.ksize();
  // The kernel width at compile time where the tile has a form for it (any kh).
  const int64_t k = g.dw == 1 && (g.kw == 3 || g.kw == 5 || g.kw == 7) ? g.kw : 0;
  using RowsFn = decltype(&rows_block<1, 0, Out>);
  static constexpr RowsFn kRows[2][4] = {
      {rows_block<1, 0, Out>, rows_block<1, 3, Out>, rows_block<1, 5, Out>, rows_block<1, 7, Out>},
      {rows_block<2, 0, Out>, rows_block<2, 3, Out>, rows_block<2, 5, Out>, rows_block<2, 7, Out>}};
  const RowsFn rows = kRows[g.sw == 2][k == 0 ? 0 : (k - 1) / 2];
  AffineTasks claims(tasks, threads);
  auto worker = [&](int tid, int) {
    float* buf = reinterpret_cast<float*>(static_cast<char*>(scratch) + tid * per_thread);
    bool first = true;
    for (int64_t t = claims.claim(tid); t >= 0; t = claims.claim(tid)) {
      const int64_t band = t % bands, od = t / bands % g.od, blk = t / bands / g.od % blocks;
      const int64_t img = t / bands / g.od / blocks;
      const int64_t c0 = blk * kC, oh0 = band * d.rows_blk, oh1 = std::min(g.oh, oh0 + d.rows_blk);
      const int cvalid = static_cast<int>(std::min<int64_t>(kC, g.cout - c0));
      fill(g, d, x + img * g.cin * g.in_plane(), c0, cvalid, od, oh0, buf, first, pad);
      first = false;
      rows(g, d, buf, img, c0, cvalid, od, oh0, oh1, wpk + blk * ks * kC, b, out);
    }
  };
  if (tasks == 1 || threads == 1) {
    worker(0, 1);
  } else {
    pool.run_any(by_ref(worker));
  }
}

}  // namespace

size_t depthwise512_scratch_bytes(const ConvGeom& g, int threads) {
  return static_cast<size_t>(threads) * buffer_bytes(dw_dims(g, threads));
}

void depthwise_avx512(ThreadPool& pool, const ConvGeom& g, const float* x, const float* wpk, const float* b,
                      const float* z, const Activation& act, float* y, void* scratch) {
  ENGINE_CHECK(depthwise512_applies(g), "depthwise_avx512: a shape it does not take");
  const int64_t out_plane = g.out_plane();
  with_act512(act, [&](const auto& op) {
    run(pool, g, x, 0.f, wpk, b, scratch,
        [&](const TileSums<Zmm>& sums, int cvalid, int n, int64_t img, int64_t c0, int64_t pixel) {
          const int64_t o = (img * g.cout + c0) * out_plane + pixel;
          Zmm::store_tile(sums.t, cvalid, n, out_plane, z ? z + o : nullptr, y + o, op);
        });
  });
}

void depthwise_s8_avx512(ThreadPool& pool, const ConvGeom& g, const int8_t* x, int8_t x_zp, const float* wpk,
                         DepthwiseTileSink sink, const void* sink_ctx, void* scratch) {
  ENGINE_CHECK(depthwise512_applies(g), "depthwise_s8_avx512: a shape it does not take");
  const int64_t out_plane = g.out_plane();
  run(pool, g, x, static_cast<float>(x_zp), wpk, nullptr, scratch,
      [&](const TileSums<Zmm>& sums, int cvalid, int n, int64_t img, int64_t c0, int64_t pixel) {
        // The sums are whole numbers below 2^24 (int8 products, at most
        // kDwMaxTaps of them): exact in float, exact as int32.
        __m512 v[kC];
        for (int p = 0; p < kC; ++p) v[p] = _mm512_load_ps(sums.t + p * kC);
        transpose16(v);
        alignas(64) int32_t rows[kC * kPixels];
        for (int m = 0; m < cvalid; ++m) _mm512_store_si512(rows + m * kPixels, _mm512_cvtps_epi32(v[m]));
        sink(sink_ctx, rows, cvalid, n, c0, (img * g.cout + c0) * out_plane + pixel, out_plane);
      });
}

}  // namespace conv_gemm
}  // namespace engine
