// Depthwise int8 convolution (QConv with group == C == M: one input and one
// output channel per group), AVX2; also the VNNI tier's path for these convs.
// The GEMM paths would give each channel an M = 1 GEMM (ConvNeXt's 7x7
// depthwise layers ran at 1-25 GOP/s there).
//
// Per (image, channel), in parallel: the input plane is widened to int16
// into a zero-bordered buffer (pads cost nothing after that), and from it a
// pair plane Q[r][p] = (x[r][p], x[r][p + dw]) of int16 pairs. Two taps j,
// j+1 of a kernel row then multiply-add 8 outputs with one load of Q at
// p = ox*sw + j*dw and one vpmaddwd by the pair (w_j, w_{j+1}), exactly
// (|x * w| <= 128 * 128: a pair sum fits int32); an odd last tap pairs with
// a zero weight. Each block of 16 outputs of a row keeps its int32 sums in
// registers over all taps; unit W stride loads Q directly, other strides
// gather its pairs. The 8-lane epilogue is epilogue_one's operations in its
// order (epilogue_avx2.h), and integer sums do not depend on their order,
// so the output is bit-identical to qconv_ref.
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include <vector>

#include "cpu/kernels/quant/epilogue_avx2.h"

namespace engine::qk {
namespace {

struct DwDims {
  int64_t rows, pitch;  // padded int16 plane; the pair plane has the same rows and pitch (int32)
  size_t per_thread;    // bytes
};

size_t align64(size_t n) { return (n + 63) / 64 * 64; }

DwDims dw_dims(const ConvGeom& g) {
  DwDims d;
  d.rows = (g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1;
  // Blocks of 16 outputs read Q up to p = (ow rounded up to 16 - 1) * sw +
  // (kw - 1) * dw, and Q[p] reads x[p + dw]: slack past the last column a
  // valid output reads.
  d.pitch = round_up((round_up(g.ow, 16) - 1) * g.sw + g.kw * g.dw + 1 + 16, 16);
  d.per_thread = align64(static_cast<size_t>(d.rows * d.pitch) * sizeof(int16_t)) +
                 align64(static_cast<size_t>(d.rows * d.pitch) * sizeof(int32_t));
  return d;
}

// The zero-bordered int16 copy of one input plane, then its pair plane.
void build_planes(const ConvGeom& g, const DwDims& d, const int8_t* x, int16_t* p, int32_t* q) {
  std::memset(p, 0, static_cast<size_t>(d.rows * d.pitch) * sizeof(int16_t));
  for (int64_t r = 0; r < d.rows; ++r) {
    const int64_t ih = r - g.pt;
    if (ih < 0 || ih >= g.h) continue;
    const int8_t* src = x + ih * g.w;
    int16_t* dst = p + r * d.pitch;
    const int64_t c0 = g.pl, len = std::min(g.w, d.pitch - c0);
    int64_t i = 0;
    for (; i + 16 <= len; i += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + c0 + i),
                          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
    for (; i < len; ++i) dst[c0 + i] = src[i];
  }
  // Q[r][i] = (P[r][i], P[r][i + dw]) for i < pitch - dw; the rest (never
  // read by a valid output) zero.
  const int64_t dw = g.dw, n = d.pitch - dw;
  for (int64_t r = 0; r < d.rows; ++r) {
    const int16_t* pr = p + r * d.pitch;
    int32_t* qr = q + r * d.pitch;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(pr + i));
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(pr + i + dw));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qr + i),
                          _mm256_set_m128i(_mm_unpackhi_epi16(a, b), _mm_unpacklo_epi16(a, b)));
    }
    for (; i < n; ++i)
      qr[i] = static_cast<int32_t>(static_cast<uint16_t>(pr[i])) |
              static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint16_t>(pr[i + dw])) << 16);
    for (; i < d.pitch; ++i) qr[i] = 0;
  }
}

// (w_j, w_{j+1}) as one int32 (w_{j+1} = 0 past the kernel row's end).
inline int32_t weight_pair(const int8_t* wrow, int64_t j, int64_t kw) {
  const uint32_t lo = static_cast<uint16_t>(static_cast<int16_t>(wrow[j]));
  const uint32_t hi = j + 1 < kw ? static_cast<uint16_t>(static_cast<int16_t>(wrow[j + 1])) : 0u;
  return static_cast<int32_t>(lo | (hi << 16));
}

}  // namespace

size_t qconv_depthwise_avx2_workspace(const ConvGeom& g, int threads) {
  return static_cast<size_t>(threads) * dw_dims(g).per_thread + 64;
}

void qconv_depthwise_avx2(ThreadPool& pool, const ConvGeom& g, const int8_t* x, const int8_t* w, const Epilogue& e,
                          void* ws) {
  const DwDims d = dw_dims(g);
  const int64_t tasks = g.n * g.c, in_plane = g.h * g.w, out_plane = g.oh * g.ow, taps = g.kh * g.kw;
  const int64_t pairs_per_row = (g.kw + 1) / 2;
  std::atomic<int64_t> next{0};
  auto worker = [&](int tid, int) {
    char* base = static_cast<char*>(ws) + static_cast<size_t>(tid) * d.per_thread;
    auto* plane = reinterpret_cast<int16_t*>(base);
    auto* q = reinterpret_cast<int32_t*>(base + align64(static_cast<size_t>(d.rows * d.pitch) * sizeof(int16_t)));
    std::vector<__m256i> wv(static_cast<size_t>(g.kh * pairs_per_row));
    const __m256i sidx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(
                                                static_cast<int32_t>(g.sw)));
    for (;;) {
      const int64_t t = next.fetch_add(1, std::memory_order_relaxed);
      if (t >= tasks) return;
      const int64_t n = t / g.c, c = t % g.c;
      build_planes(g, d, x + t * in_plane, plane, q);
      const int8_t* wc = w + c * taps;
      for (int64_t i = 0; i < g.kh; ++i)
        for (int64_t jp = 0; jp < pairs_per_row; ++jp)
          wv[i * pairs_per_row + jp] = _mm256_set1_epi32(weight_pair(wc + i * g.kw, 2 * jp, g.kw));
      const __m256 mul = _mm256_set1_ps(e.mul[c]);
      const __m256i bi = _mm256_set1_epi32(e.bias_i32 ? e.bias_i32[c] : 0);
      const __m256 bf = _mm256_set1_ps(e.bias_f32 ? e.bias_f32[c] : 0.f);
      for (int64_t oy = 0; oy < g.oh; ++oy) {
        const int64_t idx = (n * g.m + c) * out_plane + oy * g.ow;
        for (int64_t ox = 0; ox < g.ow; ox += 16) {
          __m256i a0 = _mm256_setzero_si256(), a1 = a0;
          for (int64_t i = 0; i < g.kh; ++i) {
            const int32_t* row = q + (oy * g.sh + i * g.dh) * d.pitch + ox * g.sw;
            const __m256i* wr = wv.data() + i * pairs_per_row;
            for (int64_t jp = 0; jp < pairs_per_row; ++jp) {
              const int32_t* p = row + 2 * jp * g.dw;
              __m256i v0, v1;
              if (g.sw == 1) {
                v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
                v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 8));
              } else {
                v0 = _mm256_i32gather_epi32(p, sidx, 4);
                v1 = _mm256_i32gather_epi32(p + 8 * g.sw, sidx, 4);
              }
              a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(v0, wr[jp]));
              a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(v1, wr[jp]));
            }
          }
          const int64_t left = g.ow - ox;
          if (left >= 16) {
            epilogue8(e, a0, mul, bi, bf, idx + ox);
            epilogue8(e, a1, mul, bi, bf, idx + ox + 8);
          } else {
            auto lanes = [](int64_t k) { return k >= 8 ? 0xFFu : k <= 0 ? 0u : (1u << k) - 1u; };
            if (left >= 8) epilogue8(e, a0, mul, bi, bf, idx + ox);
            else epilogue8_lanes(e, a0, mul, bi, bf, idx + ox, lanes(left));
            if (left > 8) epilogue8_lanes(e, a1, mul, bi, bf, idx + ox + 8, lanes(left - 8));
          }
        }
      }
    }
  };
  if (tasks <= 1 || pool.num_threads() == 1) {
    worker(0, 1);
  } else {
    const auto* fn = &worker;  // one-pointer capture: no std::function allocation
    pool.run_any([fn](int tid, int nt) { (*fn)(tid, nt); });
  }
}

}  // namespace engine::qk
