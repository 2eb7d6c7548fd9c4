// The AVX-512 form of grouped_avx2.cc (read that first): the same buffer
// (grouped_common.h), weights and loop order, 16 output columns per vector,
// tiles of up to 8 output channels x 3 vectors. Each output accumulates its
// taps in the same order as in the AVX2 kernel; the epilogue's activation
// is simd/vec_avx512.h's (activation_avx512.h), which matches vec_avx2.h op
// for op. Call only when use_avx512().
#include <cstring>

#include "cpu/kernels/conv_gemm/activation_avx512.h"
#include "cpu/kernels/conv_gemm/conv_gemm.h"
#include "cpu/kernels/conv_gemm/grouped_common.h"

namespace engine {
namespace conv_gemm {
namespace {

using namespace grouped_detail;

constexpr int kMB = 4;      // weights are packed in blocks of 4 output channels
constexpr int kVMax = 3;    // vectors of 16 output columns per tile
constexpr int kMBWide = 8;  // output channels per tile

// 16 outputs whose first input is at p, W stride S (0: any, via idx).
template <int S>
inline __m512 load_taps(const float* p, __m512i idx) {
  if constexpr (S == 1) {
    return _mm512_loadu_ps(p);
  } else if constexpr (S == 2) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    return _mm512_permutex2var_ps(_mm512_loadu_ps(p), even, _mm512_loadu_ps(p + 16));
  } else {
    return _mm512_i32gather_ps(idx, p, 4);
  }
}

// MB output channels x V vectors of output columns from ow0 of output row at
// buffer row `brow`; `valid` columns of the last vector are stored.
// MB <= 8 channels span two weight blocks (bstride floats apart): up to 24
// of the 32 zmm registers accumulate.
template <int S, int MB, int V, typename Op>
void tile(const ConvGeom& g, const GroupedDims& d, const float* buf, int64_t brow, int64_t ow0, const float* wp,
          const float* bias, __m512i idx, const float* z, float* y, int64_t o, int64_t valid, const Op& op) {
  const int64_t sw = S == 0 ? g.sw : S;
  const int64_t cg = g.cg(), out_plane = g.out_plane();
  constexpr int kh_n = 3, kw_n = 3;  // grouped_applies(): 3x3 only, so the taps unroll
  const int64_t bstride = cg * kh_n * kw_n * kMB;
  __m512 acc[MB][V];
#pragma GCC unroll 8
  for (int r = 0; r < MB; ++r) {
    const __m512 bv = _mm512_set1_ps(bias ? bias[r] : 0.f);
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
        __m512 xv[V];
#pragma GCC unroll 3
        for (int v = 0; v < V; ++v) xv[v] = load_taps<S>(row + kw + 16 * v * sw, idx);
#pragma GCC unroll 8
        for (int r = 0; r < MB; ++r) {
          const __m512 wv = _mm512_set1_ps(wp[(r / kMB) * bstride + r % kMB]);
#pragma GCC unroll 3
          for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(wv, xv[v], acc[r][v]);
        }
        wp += kMB;
      }
    }
  }
  const __mmask16 tail = static_cast<__mmask16>((1u << valid) - 1u);
#pragma GCC unroll 8
  for (int r = 0; r < MB; ++r)
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) {
      const int64_t off = r * out_plane + o + 16 * v;
      __m512 a = acc[r][v];
      if (v < V - 1 || valid == 16) {
        if (z) a = _mm512_add_ps(a, _mm512_loadu_ps(z + off));
        _mm512_storeu_ps(y + off, op(a));
      } else {
        if (z) a = _mm512_add_ps(a, _mm512_maskz_loadu_ps(tail, z + off));
        _mm512_mask_storeu_ps(y + off, tail, op(a));
      }
    }
}

template <int S, int MB, typename Op>
void tile_v(int v, const ConvGeom& g, const GroupedDims& d, const float* buf, int64_t brow, int64_t ow0,
            const float* wp, const float* bias, __m512i idx, const float* z, float* y, int64_t o, int64_t valid,
            const Op& op) {
  switch (v) {
    case 1: tile<S, MB, 1>(g, d, buf, brow, ow0, wp, bias, idx, z, y, o, valid, op); break;
    case 2: tile<S, MB, 2>(g, d, buf, brow, ow0, wp, bias, idx, z, y, o, valid, op); break;
    default: tile<S, MB, 3>(g, d, buf, brow, ow0, wp, bias, idx, z, y, o, valid, op); break;
  }
}

template <int S, typename Op>
void tile_mv(int mb, int v, const ConvGeom& g, const GroupedDims& d, const float* buf, int64_t brow, int64_t ow0,
             const float* wp, const float* bias, __m512i idx, const float* z, float* y, int64_t o, int64_t valid,
             const Op& op) {
  switch (mb) {
    case 1: tile_v<S, 1>(v, g, d, buf, brow, ow0, wp, bias, idx, z, y, o, valid, op); break;
    case 2: tile_v<S, 2>(v, g, d, buf, brow, ow0, wp, bias, idx, z, y, o, valid, op); break;
    case 3: tile_v<S, 3>(v, g, d, buf, brow, ow0, wp, bias, idx, z, y, o, valid, op); break;
    case 4: tile_v<S, 4>(v, g, d, buf, brow, ow0, wp, bias, idx, z, y, o, valid, op); break;
    case 5: tile_v<S, 5>(v, g, d, buf, brow, ow0, wp, bias, idx, z, y, o, valid, op); break;
    case 6: tile_v<S, 6>(v, g, d, buf, brow, ow0, wp, bias, idx, z, y, o, valid, op); break;
    case 7: tile_v<S, 7>(v, g, d, buf, brow, ow0, wp, bias, idx, z, y, o, valid, op); break;
    default: tile_v<S, 8>(v, g, d, buf, brow, ow0, wp, bias, idx, z, y, o, valid, op); break;
  }
}

// One task: output rows [oh0, oh1) of every output channel of one group.
template <int S, typename Op>
void rows_block(const ConvGeom& g, const GroupedDims& d, const float* buf, int64_t oh0, int64_t oh1,
                const float* wg, const float* bg, const float* zg, float* yg, const Op& op) {
  const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                         _mm512_set1_epi32(static_cast<int>(g.sw)));
  const int64_t mg = g.mg(), ks = g.cg() * g.kh * g.kw, out_plane = g.out_plane();
  const int64_t vecs = (g.ow + 15) / 16;
  const int64_t chunks = (vecs + kVMax - 1) / kVMax;
  const int64_t per_chunk = (vecs + chunks - 1) / chunks;
  for (int64_t oh = oh0; oh < oh1; ++oh) {
    const int64_t brow = (oh - oh0) * g.sh;
    for (int64_t v0 = 0; v0 < vecs; v0 += per_chunk) {
      const int v = static_cast<int>(std::min(per_chunk, vecs - v0));
      const int64_t ow0 = v0 * 16;
      const int64_t valid = std::min<int64_t>(16, g.ow - (ow0 + (v - 1) * 16));
      const int64_t mb_max = kMBWide;
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

void grouped_avx512(ThreadPool& pool, const ConvGeom& g, const float* x, const float* wpk, const float* b,
                  const float* z, const Activation& act, float* y, void* scratch) {
  const GroupedDims d = grouped_dims(g, pool.num_threads());
  const int64_t w_group = grouped_group_stride(g.mg(), g.cg(), g.kh * g.kw);
  for_each_task(pool, g, d, x, scratch, [&](const GroupedTask& t) {
    const float* wg = wpk + t.grp * w_group;
    const float* bg = b ? b + t.grp * g.mg() : nullptr;
    const float* zg = z ? z + t.y_off : nullptr;
    with_act512(act, [&](const auto& op) {
      if (g.sw == 1) rows_block<1>(g, d, t.buf, t.oh0, t.oh1, wg, bg, zg, y + t.y_off, op);
      else if (g.sw == 2) rows_block<2>(g, d, t.buf, t.oh0, t.oh1, wg, bg, zg, y + t.y_off, op);
      else rows_block<0>(g, d, t.buf, t.oh0, t.oh1, wg, bg, zg, y + t.y_off, op);
    });
  });
}

}  // namespace conv_gemm
}  // namespace engine
