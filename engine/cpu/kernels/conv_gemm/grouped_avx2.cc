// Grouped convolution with few channels per group (ResNeXt: 32 groups of
// 4..32 channels), direct, AVX2, 2-D only (kd == od == 1), unit dilation:
//   y[n, m, o] = act(sum_{c in group(m), t} w[m, c, t] * x[n, c, o*s - p + t] + b[m] + z[n, m, o])
//
// The im2col GEMM per (image, group) has M = Cout/group rows (4 of a 6-row
// micro-tile for ResNeXt's first stage) and K = 9 * Cin/group, so packing the
// im2col block costs as much as the multiply. Here each task (image, group,
// block of output rows) copies the input rows it needs of the group's Cin/g
// channels into a zero-padded per-thread buffer (as depthwise_avx2 does), then
// computes tiles of up to 4 output channels x 3 vectors of 8 output columns
// (8 channels x 1 vector for rows of at most 8 outputs) with every tap
// accumulated in registers: each input vector loaded feeds up to 4 FMAs,
// each weight broadcast up to 3. Weights are pre-packed per group
// in blocks of 4 output channels (grouped_pack_weights). Accumulators start
// at the bias, then residual and activation are applied before the single
// store, the order conv_ref and depthwise_avx2 use.
#include <cstring>

#include "cpu/kernels/conv_gemm/activation_avx2.h"
#include "cpu/kernels/conv_gemm/conv_gemm.h"
#include "cpu/kernels/conv_gemm/grouped_common.h"

namespace engine {
namespace conv_gemm {
namespace {

using namespace grouped_detail;

constexpr int kMB = 4;     // weights are packed in blocks of 4 output channels
constexpr int kVMax = 3;   // vectors of 8 output columns per tile
constexpr int kMBWide = 8; // output channels per tile when it has one vector

// 8 outputs whose first input is at p, W stride S (0: any, via idx).
template <int S>
inline __m256 load_taps(const float* p, __m256i idx) {
  if constexpr (S == 1) {
    return _mm256_loadu_ps(p);
  } else if constexpr (S == 2) {
    const __m256 e = _mm256_shuffle_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8), 0x88);
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8));
  } else {
    return _mm256_i32gather_ps(p, idx, 4);
  }
}

// MB output channels x V vectors of output columns from ow0 of output row at
// buffer row `brow`; `valid` columns of the last vector are stored.
// MB <= 8 channels span two weight blocks (bstride floats apart); with one
// vector per channel, 8 independent accumulators hide the FMA latency.
template <int S, int MB, int V, typename Op>
void tile(const ConvGeom& g, const GroupedDims& d, const float* buf, int64_t brow, int64_t ow0, const float* wp,
          const float* bias, __m256i idx, const float* z, float* y, int64_t o, int64_t valid, const Op& op) {
  const int64_t sw = S == 0 ? g.sw : S;
  const int64_t cg = g.cg(), out_plane = g.out_plane();
  constexpr int kh_n = 3, kw_n = 3;  // grouped_applies(): 3x3 only, so the taps unroll
  const int64_t bstride = cg * kh_n * kw_n * kMB;
  __m256 acc[MB][V];
#pragma GCC unroll 8
  for (int r = 0; r < MB; ++r) {
    const __m256 bv = _mm256_set1_ps(bias ? bias[r] : 0.f);
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) acc[r][v] = bv;
  }
  const float* base = buf + brow * d.pitch + ow0 * sw;
  for (int64_t c = 0; c < cg; ++c) {
    const float* plane = base + c * d.buf_rows * d.pitch;
#pragma GCC unroll 3
    for (int kh = 0; kh < kh_n; ++kh) {
      const float* row = plane + kh * d.pitch;
#pragma GCC unroll 3
      for (int kw = 0; kw < kw_n; ++kw) {
        __m256 xv[V];
#pragma GCC unroll 3
        for (int v = 0; v < V; ++v) xv[v] = load_taps<S>(row + kw + 8 * v * sw, idx);
#pragma GCC unroll 8
        for (int r = 0; r < MB; ++r) {
          const __m256 wv = _mm256_broadcast_ss(wp + (r / kMB) * bstride + r % kMB);
#pragma GCC unroll 3
          for (int v = 0; v < V; ++v) acc[r][v] = _mm256_fmadd_ps(wv, xv[v], acc[r][v]);
        }
        wp += kMB;
      }
    }
  }
  const __m256i tail = tail_mask(static_cast<int>(valid));
#pragma GCC unroll 8
  for (int r = 0; r < MB; ++r)
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) {
      const int64_t off = r * out_plane + o + 8 * v;
      __m256 a = acc[r][v];
      if (v < V - 1 || valid == 8) {
        if (z) a = _mm256_add_ps(a, _mm256_loadu_ps(z + off));
        _mm256_storeu_ps(y + off, op(a));
      } else {
        if (z) a = _mm256_add_ps(a, _mm256_maskload_ps(z + off, tail));
        _mm256_maskstore_ps(y + off, tail, op(a));
      }
    }
}

template <int S, int MB, typename Op>
void tile_v(int v, const ConvGeom& g, const GroupedDims& d, const float* buf, int64_t brow, int64_t ow0,
            const float* wp, const float* bias, __m256i idx, const float* z, float* y, int64_t o, int64_t valid,
            const Op& op) {
  switch (v) {
    case 1: tile<S, MB, 1>(g, d, buf, brow, ow0, wp, bias, idx, z, y, o, valid, op); break;
    case 2: tile<S, MB, 2>(g, d, buf, brow, ow0, wp, bias, idx, z, y, o, valid, op); break;
    default: tile<S, MB, 3>(g, d, buf, brow, ow0, wp, bias, idx, z, y, o, valid, op); break;
  }
}

template <int S, typename Op>
void tile_mv(int mb, int v, const ConvGeom& g, const GroupedDims& d, const float* buf, int64_t brow, int64_t ow0,
             const float* wp, const float* bias, __m256i idx, const float* z, float* y, int64_t o, int64_t valid,
             const Op& op) {
  switch (mb) {
    case 1: tile_v<S, 1>(v, g, d, buf, brow, ow0, wp, bias, idx, z, y, o, valid, op); break;
    case 2: tile_v<S, 2>(v, g, d, buf, brow, ow0, wp, bias, idx, z, y, o, valid, op); break;
    case 3: tile_v<S, 3>(v, g, d, buf, brow, ow0, wp, bias, idx, z, y, o, valid, op); break;
    case 4: tile_v<S, 4>(v, g, d, buf, brow, ow0, wp, bias, idx, z, y, o, valid, op); break;
    // One vector only (rows_block): more channels per tile.
    case 5: tile<S, 5, 1>(g, d, buf, brow, ow0, wp, bias, idx, z, y, o, valid, op); break;
    case 6: tile<S, 6, 1>(g, d, buf, brow, ow0, wp, bias, idx, z, y, o, valid, op); break;
    case 7: tile<S, 7, 1>(g, d, buf, brow, ow0, wp, bias, idx, z, y, o, valid, op); break;
    default: tile<S, 8, 1>(g, d, buf, brow, ow0, wp, bias, idx, z, y, o, valid, op); break;
  }
}

// One task: output rows [oh0, oh1) of every output channel of one group.
template <int S, typename Op>
void rows_block(const ConvGeom& g, const GroupedDims& d, const float* buf, int64_t oh0, int64_t oh1,
                const float* wg, const float* bg, const float* zg, float* yg, const Op& op) {
  const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                         _mm256_set1_epi32(static_cast<int>(g.sw)));
  const int64_t mg = g.mg(), ks = g.cg() * g.kh * g.kw, out_plane = g.out_plane();
  const int64_t vecs = (g.ow + 7) / 8;
  const int64_t chunks = (vecs + kVMax - 1) / kVMax;
  const int64_t per_chunk = (vecs + chunks - 1) / chunks;
  for (int64_t oh = oh0; oh < oh1; ++oh) {
    const int64_t brow = (oh - oh0) * g.sh;
    for (int64_t v0 = 0; v0 < vecs; v0 += per_chunk) {
      const int v = static_cast<int>(std::min(per_chunk, vecs - v0));
      const int64_t ow0 = v0 * 8;
      const int64_t valid = std::min<int64_t>(8, g.ow - (ow0 + (v - 1) * 8));
      const int64_t mb_max = v == 1 ? kMBWide : kMB;
      for (int64_t m0 = 0; m0 < mg; m0 += mb_max) {
        const int mb = static_cast<int>(std::min<int64_t>(mb_max, mg - m0));
        const int64_t o = m0 * out_plane + oh * g.ow + ow0;
        tile_mv<S>(mb, v, g, d, buf, brow, ow0, wg + (m0 / kMB) * ks * kMB, bg ? bg + m0 : nullptr, idx, zg, yg, o,
                   valid, op);
      }
    }
  }
}

}  // namespace

size_t grouped_scratch_bytes(const ConvGeom& g, int threads) {
  return static_cast<size_t>(threads) * buffer_bytes(g, grouped_dims(g, threads)) + 64;
}

void grouped_avx2(ThreadPool& pool, const ConvGeom& g, const float* x, const float* wpk, const float* b,
                  const float* z, const Activation& act, float* y, void* scratch) {
  const GroupedDims d = grouped_dims(g, pool.num_threads());
  const int64_t w_group = grouped_group_stride(g.mg(), g.cg(), g.kh * g.kw);
  for_each_task(pool, g, d, x, scratch, [&](const GroupedTask& t) {
    const float* wg = wpk + t.grp * w_group;
    const float* bg = b ? b + t.grp * g.mg() : nullptr;
    const float* zg = z ? z + t.y_off : nullptr;
    with_act(act, [&](const auto& op) {
      if (g.sw == 1) rows_block<1>(g, d, t.buf, t.oh0, t.oh1, wg, bg, zg, y + t.y_off, op);
      else if (g.sw == 2) rows_block<2>(g, d, t.buf, t.oh0, t.oh1, wg, bg, zg, y + t.y_off, op);
      else rows_block<0>(g, d, t.buf, t.oh0, t.oh1, wg, bg, zg, y + t.y_off, op);
    });
  });
}

}  // namespace conv_gemm
}  // namespace engine
