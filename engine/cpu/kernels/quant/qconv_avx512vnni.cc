// int8 convolution, AVX512-VNNI (qconv_avx512vnni).
//
//   C[MR x 16*NV] (int32) = A_tile[MR x K] (weights, s8) * B[K x 16*NV]
//   (im2col of the input, u8), then the fused epilogue (quant_kernels.h)
//   on 16 lanes at a time.
// Rows are output channels, columns output positions (of the whole batch,
// see qconv_tiled.h), so a tile row is up to 48 contiguous NCHW outputs.
// One vpdpbusd does 64 multiply-adds (16 lanes x 4 consecutive k), four
// times the AVX2 int16 path's vpmaddwd on a ymm.
//
// Signedness: vpdpbusd takes one unsigned and one signed operand. The
// activations are packed as u8: unchanged when they are known to be >= 0
// (x_nonneg: a requantized Relu output), otherwise XORed with 0x80 (= +128)
// and the sum corrected by corr[m] = 128 * sum_k w[m, k]. Padding is packed
// as the value 0 (0x80 when shifted), so the correction is the same for every
// output position. Both forms are exact in int32 (wrapping arithmetic, and
// the true result fits, see kMaxK in qconv_kernel.cc), so the accumulators
// equal the reference's bit for bit; the epilogue repeats epilogue_one()'s
// float operations in the same order (no FMA contraction: no_contract16).
//
// Layouts: A as pack_a_vnni() writes it ([kq][MR][4] per tile, a 4-byte k
// group broadcast as one int32); B in panels of 16 columns, [kq][16][4] u8,
// packed per task from that task's im2col. Tasks, threads and im2col:
// qconv_tiled.h.
// Preconditions: only entered when use_avx512_vnni(); ws sized by
// qconv_avx512vnni_workspace().
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "cpu/kernels/conv_gemm/conv_gemm.h"
#include "cpu/kernels/quant/qconv_avx512vnni.h"

namespace engine::qk {
namespace {

inline int32_t load_i32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// MR x (16 * NV) tile over kq groups of 4. bptr(p) is k group p's first
// panel; its panel v lies at bptr(p) + v * bstride: packed panels
// (bptr(p) = b + 64 p, bstride = the panel size) or the quad planes of
// qconv_tiled.h (bptr(p) = b + off[p], bstride = 64).
// The sums of row r start at init[r].
template <int NV, class BPtr>
void kernel_vnni(const int8_t* a, BPtr bptr, int64_t bstride, int64_t kq, const int32_t* init, int32_t* c) {
  __m512i acc[kVnniMR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < kVnniMR; ++r)
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_set1_epi32(init[r]);
  for (int64_t p = 0; p < kq; ++p) {
    const uint8_t* bp = bptr(p);
    __m512i bv[NV];
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_loadu_si512(bp + v * bstride);
#pragma GCC unroll 8
    for (int r = 0; r < kVnniMR; ++r) {
      const __m512i av = _mm512_set1_epi32(load_i32(a + (p * kVnniMR + r) * 4));
#pragma GCC unroll 3
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], bv[v], av);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < kVnniMR; ++r)
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) _mm512_storeu_si512(c + r * kTileLd + v * 16, acc[r][v]);
}

// A panel with only nc <= kTailCols valid columns (the last one of a small
// image at batch 1: 7x7 = 49 = 3 panels + 1 column): one 8-lane vpdpbusd
// per column and k group, the weight tile's [MR][4] bytes as the vector and
// the column's 4 activation bytes broadcast, instead of eight 16-lane ones
// of which nc lanes count. Same int32 sums, so the same bits. bptr as above.
constexpr int kTailCols = 4;
template <class BPtr>
void kernel_vnni_cols(const int8_t* a, BPtr bptr, int64_t kq, int nc, const int32_t* init, int32_t* c) {
  static_assert(kVnniMR == 8, "one ymm holds a k group of the 8 rows");
  __m256i acc[kTailCols];
  for (int j = 0; j < kTailCols; ++j) acc[j] = _mm256_setzero_si256();
  for (int64_t p = 0; p < kq; ++p) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + p * kVnniMR * 4));
    const uint8_t* bp = bptr(p);
#pragma GCC unroll 4
    for (int j = 0; j < kTailCols; ++j)
      if (j < nc) acc[j] = _mm256_dpbusd_epi32(acc[j], _mm256_set1_epi32(load_i32(bp + j * 4)), w);
  }
  alignas(32) int32_t t[kVnniMR];
  for (int j = 0; j < nc; ++j) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(t), acc[j]);
    for (int r = 0; r < kVnniMR; ++r)
      c[r * kTileLd + j] = static_cast<int32_t>(static_cast<uint32_t>(t[r]) + static_cast<uint32_t>(init[r]));
  }
}

// Dispatches a tile to the kernels above by its width.
template <class BPtr>
void kernel_tile(int nv, int nr, const int8_t* a, BPtr bptr, int64_t bstride, int64_t kq, const int32_t* init,
                 int32_t* tile) {
  if (nv == 1 && nr <= kTailCols) kernel_vnni_cols(a, bptr, kq, nr, init, tile);
  else if (nv == 3) kernel_vnni<3>(a, bptr, bstride, kq, init, tile);
  else if (nv == 2) kernel_vnni<2>(a, bptr, bstride, kq, init, tile);
  else kernel_vnni<1>(a, bptr, bstride, kq, init, tile);
}

// The ISA part of qconv_tiled.h's driver: VnniPanels with vpdpbusd as the
// micro-kernel; quad planes in (quad, tap) k order.
struct VnniTraits : VnniPanels {
  using VnniPanels::VnniPanels;
  static constexpr int kMR = kVnniMR, kKGroup = 4, kNV = 3;
  static constexpr bool kQuads = true, kTapMajorQuads = false, kQuadCols = true;

  void thread_begin() const {}
  void thread_end() const {}
  void kernel_quads(int nv, int nr, const uint8_t* a, const uint8_t* b, const int64_t* off, int64_t kq,
                    int32_t* tile, int64_t c0) const {
    kernel_tile(nv, nr, reinterpret_cast<const int8_t*>(a), [b, off](int64_t p) { return b + off[p]; }, 64, kq,
                start.data() + c0, tile);
  }
  void kernel(int nv, int nr, const uint8_t* a, const uint8_t* b, int64_t bstride, int64_t kq, int32_t* tile,
              int64_t c0) const {
    kernel_tile(nv, nr, reinterpret_cast<const int8_t*>(a), [b](int64_t p) { return b + p * 64; }, bstride, kq,
                start.data() + c0, tile);
  }
};
static_assert(VnniTraits::kNV == kNV, "the tile width and the column map must agree");

}  // namespace

void pack_a_vnni(const int8_t* src, int64_t rs, int64_t rows, int64_t k, int8_t* out, int32_t* corr) {
  pack_a_k4<kVnniMR>(src, rs, rows, k, out);
  weight_sums(src, rs, rows, k, 128, corr);
}

size_t qconv_avx512vnni_workspace(const ConvGeom& g, int threads, bool quads) {
  return tiled_plan<VnniTraits>(g, threads, quads || pointwise_quads(g)).workspace(std::max(threads, 1));
}

void qconv_avx512vnni(ThreadPool& pool, const ConvGeom& g, const int8_t* x, bool x_nonneg, const int8_t* packed_w,
                      const int8_t* packed_w_quads, const int32_t* corr, const Epilogue& e, void* ws) {
  if (!packed_w_quads && pointwise_quads(g)) packed_w_quads = packed_w;
  const TiledPlan t = tiled_plan<VnniTraits>(g, pool.num_threads(), packed_w_quads != nullptr);
  const EpiConst k(e);
  const VnniTraits tr(packed_w, packed_w_quads, packed_a_vnni_bytes(t.mg, t.k), t.groups * kVnniMR * 4, x_nonneg, k,
                      corr, g.m);
  run_tiled<VnniTraits, Cols>(pool, g, x, t, ws, tr);
}

namespace {

// The float kernel's geometry of a depthwise QConv.
conv_gemm::ConvGeom blocked_geom(const ConvGeom& g) {
  conv_gemm::ConvGeom f;
  f.batch = g.n;
  f.cin = g.c;
  f.cout = g.m;
  f.group = g.group;
  f.id = g.d, f.ih = g.h, f.iw = g.w;
  f.od = g.od, f.oh = g.oh, f.ow = g.ow;
  f.kd = g.kd, f.kh = g.kh, f.kw = g.kw;
  f.sd = g.sd, f.sh = g.sh, f.sw = g.sw;
  f.dd = g.dd, f.dh = g.dh, f.dw = g.dw;
  f.pd = g.pf, f.ph = g.pt, f.pw = g.pl;
  return f;
}

// One channel's row of int32 sums through the epilogue (n outputs from idx).
inline void depthwise_row_epilogue(const EpiConst& k, const int32_t* acc, int64_t n, int64_t c, int64_t idx) {
  const Epilogue& e = k.e;
  const __m512 mul = _mm512_set1_ps(e.mul[c]);
  const __m512i bi = _mm512_set1_epi32(e.bias_i32 ? e.bias_i32[c] : 0);
  const __m512 bf = _mm512_set1_ps(e.bias_f32 ? e.bias_f32[c] : 0.f);
  for (int64_t j = 0; j < n; j += 16) {
    const int64_t lanes = std::min<int64_t>(16, n - j);
    const __mmask16 m = lanes == 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << lanes) - 1u);
    epilogue16(k, _mm512_loadu_si512(acc + j), mul, bi, bf, idx + j, m);
  }
}

}  // namespace

size_t qconv_depthwise_avx512vnni_workspace(const ConvGeom& g, int threads, bool blocked) {
  // (+ 64: the float kernel's buffers are 64-byte aligned, and ws may not be)
  if (blocked && qconv_depthwise_blocked_applies(g))
    return conv_gemm::depthwise512_scratch_bytes(blocked_geom(g), threads) + 64;
  return qconv_depthwise_workspace(g, threads);
}

void qconv_depthwise_avx512vnni(ThreadPool& pool, const ConvGeom& g, const int8_t* x, const int8_t* w,
                                const float* w_f32, const Epilogue& e, void* ws) {
  const EpiConst k(e);
  if (w_f32 && qconv_depthwise_blocked_applies(g)) {
    auto* aligned = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(ws) + 63) & ~uintptr_t{63});
    conv_gemm::depthwise_s8_avx512(
        pool, blocked_geom(g), x, g.x_zp, w_f32,
        [](const void* ctx, const int32_t* rows, int channels, int n, int64_t c0, int64_t idx, int64_t out_plane) {
          const EpiConst& kc = *static_cast<const EpiConst*>(ctx);
          for (int m = 0; m < channels; ++m) depthwise_row_epilogue(kc, rows + m * 16, n, c0 + m, idx + m * out_plane);
        },
        &k, aligned);
    return;
  }
  run_depthwise(pool, g, x, w, ws, [&k](const int32_t* acc, int64_t n, int64_t c, int64_t idx) {
    depthwise_row_epilogue(k, acc, n, c, idx);
  });
}

}  // namespace engine::qk
