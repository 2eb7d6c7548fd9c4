// int8 convolution and gemm, AVX2 (qconv_avx2, qgemm_avx2).
//
//   C[MR x NR] (int32) = A_tile[MR x K] * B_panel[K x NR], then the fused
//   epilogue (quant_kernels.h) per element.
// Conv: A = weights of one group (packed once in create()), B = im2col of
// the input (packed per task, see qconv_tiled.h for tasks and threads),
// rows = output channels, columns = output positions of the batch, so a
// tile row is 16 contiguous NCHW outputs. Gemm: A = activations (packed per
// call), B = weights (packed once), rows = batch, columns = output features.
//
// Why int16 and vpmaddwd: AVX2 without VNNI has vpmaddubsw (u8 x s8, pair
// sums SATURATED to int16, inexact for full-range int8) and vpmaddwd (s16 x
// s16, pair sums into int32, exact). Operands are sign-extended to int16 at
// pack time; one vpmaddwd then does 16 multiply-adds, twice an fp32 FMA.
// The K dimension is consumed in pairs: packed operands hold (k, k+1)
// adjacently, and an A pair is broadcast as one 32-bit word.
//
// The u8 path (qconv_avx2_u8): when the conv's input is known to be >= 0 (a
// requantized Relu output: int8 values 0..127), vpmaddubsw IS exact: a pair
// sum x0*w0 + x1*w1 with 0 <= x <= 127 and -128 <= w <= 127 lies in
// [-32512, 32258], inside int16, so it never saturates. vpmaddwd with ones
// then adds the two pairs of each 4-byte k group into int32 (the sum
// vpdpbusd forms in one step), and vpaddd accumulates. The operands stay
// bytes: B panels are [k/4][16 columns][4] u8 (half the int16 panel, and
// no widening at pack time), weights [k/4][4 rows][4] s8 tiles. Inputs that
// may be negative keep the int16 path. Those panels have the VNNI tier's
// byte order, so 2-D k x k convs with whole channel quads read the quad
// planes of qconv_tiled.h instead of packing per task, as VNNI does.
//
// Preconditions: K * 128 * 128 fits in int32 (checked in create()); ws as
// sized by the *_workspace functions; only entered when use_avx2().
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "cpu/kernels/quant/qconv_tiled.h"
#include "cpu/kernels/quant/qconv_u8dot.h"

namespace engine::qk {
namespace {

// Keeps a product from being contracted into an FMA with the next add
// (epilogue_one rounds the product first).
inline __m256 no_contract8(__m256 v) {
  __asm__("" : "+x"(v));
  return v;
}

inline int32_t load_i32(const int16_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

size_t align64(size_t n) { return (n + 63) / 64 * 64; }

// The 6x16 microkernel: 12 accumulators, 2 B vectors, 1 broadcast and 1
// product register out of 16.
void kernel_6x16(const int16_t* a, const int16_t* b, int64_t kp, int32_t* c) {
  __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256i c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int64_t p = 0; p < kp; ++p) {
    const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b));
    const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16));
    __m256i av = _mm256_set1_epi32(load_i32(a + 0));
    c00 = _mm256_add_epi32(c00, _mm256_madd_epi16(b0, av));
    c01 = _mm256_add_epi32(c01, _mm256_madd_epi16(b1, av));
    av = _mm256_set1_epi32(load_i32(a + 2));
    c10 = _mm256_add_epi32(c10, _mm256_madd_epi16(b0, av));
    c11 = _mm256_add_epi32(c11, _mm256_madd_epi16(b1, av));
    av = _mm256_set1_epi32(load_i32(a + 4));
    c20 = _mm256_add_epi32(c20, _mm256_madd_epi16(b0, av));
    c21 = _mm256_add_epi32(c21, _mm256_madd_epi16(b1, av));
    av = _mm256_set1_epi32(load_i32(a + 6));
    c30 = _mm256_add_epi32(c30, _mm256_madd_epi16(b0, av));
    c31 = _mm256_add_epi32(c31, _mm256_madd_epi16(b1, av));
    av = _mm256_set1_epi32(load_i32(a + 8));
    c40 = _mm256_add_epi32(c40, _mm256_madd_epi16(b0, av));
    c41 = _mm256_add_epi32(c41, _mm256_madd_epi16(b1, av));
    av = _mm256_set1_epi32(load_i32(a + 10));
    c50 = _mm256_add_epi32(c50, _mm256_madd_epi16(b0, av));
    c51 = _mm256_add_epi32(c51, _mm256_madd_epi16(b1, av));
    a += 2 * kMR;
    b += 2 * kNR;
  }
  auto st = [c](int i, __m256i v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + 8 * i), v); };
  st(0, c00); st(1, c01); st(2, c10); st(3, c11); st(4, c20); st(5, c21);
  st(6, c30); st(7, c31); st(8, c40); st(9, c41); st(10, c50); st(11, c51);
}

// The epilogue on 8 lanes; `mul`, `bi`, `bf` are the per-channel terms
// (broadcast for conv, per lane for gemm). Same operations, same order as
// epilogue_one().
inline void epilogue8(const Epilogue& e, __m256i acc, __m256 mul, __m256i bi, __m256 bf, int64_t idx) {
  if (e.bias_i32) acc = _mm256_add_epi32(acc, bi);
  __m256 v = no_contract8(_mm256_mul_ps(_mm256_cvtepi32_ps(acc), mul));
  if (e.bias_f32) v = _mm256_add_ps(v, bf);
  if (e.z_f32) {
    v = _mm256_add_ps(v, no_contract8(_mm256_mul_ps(_mm256_loadu_ps(e.z_f32 + idx), _mm256_set1_ps(e.z_scale))));
  } else if (e.z_s8) {
    __m128i z8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(e.z_s8 + idx));
    __m256 z = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepi8_epi32(z8), _mm256_set1_epi32(e.z_zp)));
    v = _mm256_add_ps(v, no_contract8(_mm256_mul_ps(z, _mm256_set1_ps(e.z_scale))));
  }
  if (e.act == Act::kRelu) {
    v = _mm256_max_ps(v, _mm256_setzero_ps());
  } else if (e.act == Act::kClip) {
    v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(e.act_lo)), _mm256_set1_ps(e.act_hi));
  }
  if (e.requant) {
    const __m256 q = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(static_cast<float>(-128 - e.y_zp))),
                                   _mm256_set1_ps(static_cast<float>(127 - e.y_zp)));
    __m256i qi = _mm256_add_epi32(_mm256_cvtps_epi32(q), _mm256_set1_epi32(e.y_zp));
    __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(qi), _mm256_extracti128_si256(qi, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(e.y_s8 + idx), _mm_packs_epi16(w, w));
  } else {
    _mm256_storeu_ps(e.y_f32 + idx, v);
  }
}

// epilogue8 on the lanes in `mask` only (lane l is output idx + l): the
// residual lanes are copied in and the results copied out through buffers,
// so the operations, and the bits, are epilogue8's.
inline void epilogue8_lanes(const Epilogue& e, __m256i acc, __m256 mul, __m256i bi, __m256 bf, int64_t idx,
                            uint32_t mask) {
  alignas(32) float zf[8] = {}, yf[8];
  alignas(16) int8_t zs[16] = {}, ys[16];
  Epilogue b = e;
  if (e.z_f32) b.z_f32 = zf;
  if (e.z_s8) b.z_s8 = zs;
  b.y_f32 = yf;
  b.y_s8 = ys;
  for (int l = 0; l < 8; ++l)
    if (mask >> l & 1u) {
      if (e.z_f32) zf[l] = e.z_f32[idx + l];
      else if (e.z_s8) zs[l] = e.z_s8[idx + l];
    }
  epilogue8(b, acc, mul, bi, bf, 0);
  for (int l = 0; l < 8; ++l)
    if (mask >> l & 1u) {
      if (e.requant) e.y_s8[idx + l] = ys[l];
      else e.y_f32[idx + l] = yf[l];
    }
}

using Cols = TileCols<8, 2>;

// Conv tile: rows are channels c0..c0+mr-1, columns as `cols` maps them
// (TileRunsOf: usually one run of 16 columns per row). epilogue8's
// operations, a row of 16 outputs at a time as straight-line code (a
// template on the requantize and the residual kind, Z: 0 none, 1 float, 2
// int8), and for a requantized row the VNNI tier's narrowing: saturating
// packs (the lower clamp, and a Relu before the requantize as one byte max
// with y_zp: both exact, see qconv_avx512vnni.cc's narrow48) and one
// 16-byte store. AVX2 has no byte-masked loads or stores, so the lanes of a
// partial run (padded-row ends, image boundaries, tails) go through a
// buffer; nothing outside them is read or written.
using TileRuns = TileRunsOf<8, 2>;

// The lanes of group j (8 columns) that mask m holds, as an all-ones lane mask.
inline __m256i lanes8(uint32_t m) {
  const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(m)), bit), bit);
}

// Copies the bytes of src[0..16) that mask m holds to dst (contiguous runs
// of set bits at a time).
inline void copy_masked16(int8_t* dst, const int8_t* src, uint32_t m) {
  while (m) {
    const int lo = __builtin_ctz(m);
    const int len = __builtin_ctz(~(m >> lo));
    std::memcpy(dst + lo, src + lo, static_cast<size_t>(len));
    m &= ~(((1u << len) - 1u) << lo);
  }
}

template <bool kRequant, int kZ>
void epilogue_rows16(const Epilogue& e, const int32_t* tile, int mr, int64_t c0, const TileRuns& runs, int64_t hw) {
  const bool full = runs.n == 1 && runs.mask[0] == TileRuns::kAll;
  const bool relu_bytes = kRequant && e.act == Act::kRelu;
  const __m256 q_hi = _mm256_set1_ps(static_cast<float>(127 - e.y_zp));
  const __m256i zp16 = _mm256_set1_epi16(static_cast<int16_t>(e.y_zp));
  const __m128i zp8 = _mm_set1_epi8(static_cast<char>(e.y_zp));
  const __m256i z_zp = _mm256_set1_epi32(e.z_zp);
  const __m256 z_scale = _mm256_set1_ps(e.z_scale);
  for (int r = 0; r < mr; ++r) {
    const int64_t c = c0 + r, at = c * hw;
    const int32_t* t = tile + r * kNR;
    const __m256 mul = _mm256_set1_ps(e.mul[c]);
    const __m256 bf = _mm256_set1_ps(e.bias_f32 ? e.bias_f32[c] : 0.f);
    const __m256i bi = _mm256_set1_epi32(e.bias_i32 ? e.bias_i32[c] : 0);
    __m256 z[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    if constexpr (kZ == 1) {
      for (int q = 0; q < runs.n; ++q)
        for (int j = 0; j < 2; ++j) {
          const uint32_t m = TileRuns::group(runs.mask[q], j);
          if (!m) continue;
          const __m256i lm = lanes8(m);
          z[j] = _mm256_blendv_ps(z[j], _mm256_maskload_ps(e.z_f32 + runs.off[q] + at + 8 * j, lm),
                                  _mm256_castsi256_ps(lm));
        }
    } else if constexpr (kZ == 2) {
      __m128i zb;
      if (full) {
        zb = _mm_loadu_si128(reinterpret_cast<const __m128i*>(e.z_s8 + runs.off[0] + at));
      } else {
        alignas(16) int8_t buf[16] = {};
        for (int q = 0; q < runs.n; ++q)
          copy_masked16(buf, e.z_s8 + runs.off[q] + at, static_cast<uint32_t>(runs.mask[q]));
        zb = _mm_load_si128(reinterpret_cast<const __m128i*>(buf));
      }
      z[0] = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepi8_epi32(zb), z_zp));
      z[1] = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepi8_epi32(_mm_srli_si128(zb, 8)), z_zp));
    }
    __m256 v[2];
    for (int j = 0; j < 2; ++j) {
      __m256i acc = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t + 8 * j));
      if (e.bias_i32) acc = _mm256_add_epi32(acc, bi);
      __m256 x = no_contract8(_mm256_mul_ps(_mm256_cvtepi32_ps(acc), mul));
      if (e.bias_f32) x = _mm256_add_ps(x, bf);
      if constexpr (kZ != 0) x = _mm256_add_ps(x, no_contract8(_mm256_mul_ps(z[j], z_scale)));
      if (e.act == Act::kRelu && !relu_bytes) {
        x = _mm256_max_ps(x, _mm256_setzero_ps());
      } else if (e.act == Act::kClip) {
        x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(e.act_lo)), _mm256_set1_ps(e.act_hi));
      }
      v[j] = x;
    }
    if constexpr (kRequant) {
      // round(min(v, 127 - y_zp)); the packs saturate the rest (a NaN
      // becomes INT32_MIN, then -128: the clamp's lower bound).
      const __m256i q0 = _mm256_cvtps_epi32(_mm256_min_ps(q_hi, v[0]));
      const __m256i q1 = _mm256_cvtps_epi32(_mm256_min_ps(q_hi, v[1]));
      const __m256i w = _mm256_adds_epi16(_mm256_packs_epi32(q0, q1), zp16);  // 128-bit lane L: q0, q1 blocks L
      const __m256i b =
          _mm256_permutevar8x32_epi32(_mm256_packs_epi16(w, w), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
      __m128i bytes = _mm256_castsi256_si128(b);
      if (relu_bytes) bytes = _mm_max_epi8(bytes, zp8);
      if (full) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(e.y_s8 + runs.off[0] + at), bytes);
      } else {
        alignas(16) int8_t buf[16];
        _mm_store_si128(reinterpret_cast<__m128i*>(buf), bytes);
        for (int q = 0; q < runs.n; ++q)
          copy_masked16(e.y_s8 + runs.off[q] + at, buf, static_cast<uint32_t>(runs.mask[q]));
      }
    } else {
      for (int q = 0; q < runs.n; ++q)
        for (int j = 0; j < 2; ++j) {
          const uint32_t m = TileRuns::group(runs.mask[q], j);
          float* dst = e.y_f32 + runs.off[q] + at + 8 * j;
          if (m == 0xffu) _mm256_storeu_ps(dst, v[j]);
          else if (m) _mm256_maskstore_ps(dst, lanes8(m), v[j]);
        }
    }
  }
}

void epilogue_tile_rows(const Epilogue& e0, const int32_t* tile, int mr, int64_t c0, const Cols& cols) {
  const Epilogue e = e0;  // a local copy: the int8 stores may alias any memory, so e0's fields would be reloaded
  const TileRuns runs(cols);
  with_epilogue_kind(e, [&](auto requant, auto z) {
    epilogue_rows16<decltype(requant)::value, decltype(z)::value>(e, tile, mr, c0, runs, cols.hw);
  });
}

// Gemm tile: rows are batch rows, columns channels c0..; row r's outputs
// start at idx0 + r * row_stride.
void epilogue_tile_cols(const Epilogue& e0, const int32_t* tile, int mr, int nr, int64_t c0, int64_t idx0,
                        int64_t row_stride) {
  const Epilogue e = e0;  // (as in epilogue_tile_rows)
  for (int r = 0; r < mr; ++r) {
    const int64_t idx = idx0 + r * row_stride;
    const int32_t* t = tile + r * kNR;
    int j = 0;
    for (; j + 8 <= nr; j += 8) {
      const int64_t c = c0 + j;
      const __m256 mul = _mm256_loadu_ps(e.mul + c);
      const __m256i bi = e.bias_i32 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(e.bias_i32 + c))
                                    : _mm256_setzero_si256();
      const __m256 bf = e.bias_f32 ? _mm256_loadu_ps(e.bias_f32 + c) : _mm256_setzero_ps();
      epilogue8(e, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t + j)), mul, bi, bf, idx + j);
    }
    for (; j < nr; ++j) epilogue_one(e, t[j], c0 + j, idx + j);
  }
}

// Interleaves two int8 rows of 16 columns into the packed layout
// [16 columns][2] int16 (32 int16 = two ymm).
inline void interleave16(const int8_t* r0, const int8_t* r1, int16_t* out) {
  __m256i a = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r0)));
  __m256i b = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r1)));
  __m256i lo = _mm256_unpacklo_epi16(a, b);  // columns 0-3 | 8-11
  __m256i hi = _mm256_unpackhi_epi16(a, b);  // columns 4-7 | 12-15
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_permute2x128_si256(lo, hi, 0x20));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 16), _mm256_permute2x128_si256(lo, hi, 0x31));
}

// Packs one k pair: rows r[0], r[1] (ncols columns each) into the [16][2]
// int16 slot of every panel (panel j's slot at out + j * panel_stride bytes).
void pack_pair(const int8_t* const r[2], int64_t ncols, uint8_t* out, int64_t panel_stride) {
  alignas(16) int8_t t0[kNR], t1[kNR];
  for (int64_t col = 0, j = 0; col < ncols; col += kNR, ++j) {
    const int8_t* a = r[0] + col;
    const int8_t* b = r[1] + col;
    if (ncols - col < kNR) {
      std::memset(t0, 0, kNR);
      std::memset(t1, 0, kNR);
      std::memcpy(t0, a, ncols - col);
      std::memcpy(t1, b, ncols - col);
      a = t0;
      b = t1;
    }
    interleave16(a, b, reinterpret_cast<int16_t*>(out + j * panel_stride));
  }
}

// The u8 path's 4x16 microkernel (see the top of this file) is
// qconv_u8dot.h's U8DotKernel, here with AVX2's three-step dot product:
// 8 accumulators, 2 B vectors, a broadcast, a product and the ones vector.
struct MaddubsDot {
  static __m256i add(__m256i acc, __m256i x, __m256i w) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(x, w), _mm256_set1_epi16(1)));
  }
};
using KernelU8 = U8DotKernel<MaddubsDot>;

// Packs one k group of 4 rows (ncols columns each) into the [16][4] u8 slot
// of every panel (panel j's slot at out + j * panel_stride).
void pack_quad_u8(const int8_t* const r[4], int64_t ncols, uint8_t* out, int64_t panel_stride) {
  alignas(16) int8_t tmp[4][16];
  for (int64_t col = 0, j = 0; col < ncols; col += 16, ++j) {
    const int8_t* s[4] = {r[0] + col, r[1] + col, r[2] + col, r[3] + col};
    if (ncols - col < 16) {
      for (int i = 0; i < 4; ++i) {
        std::memset(tmp[i], 0, 16);
        std::memcpy(tmp[i], s[i], ncols - col);
        s[i] = tmp[i];
      }
    }
    const __m128i r0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s[0]));
    const __m128i r1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s[1]));
    const __m128i r2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s[2]));
    const __m128i r3 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s[3]));
    const __m128i t0 = _mm_unpacklo_epi8(r0, r1), t1 = _mm_unpackhi_epi8(r0, r1);
    const __m128i t2 = _mm_unpacklo_epi8(r2, r3), t3 = _mm_unpackhi_epi8(r2, r3);
    __m128i* o = reinterpret_cast<__m128i*>(out + j * panel_stride);
    _mm_storeu_si128(o + 0, _mm_unpacklo_epi16(t0, t2));  // columns 0-3
    _mm_storeu_si128(o + 1, _mm_unpackhi_epi16(t0, t2));  // columns 4-7
    _mm_storeu_si128(o + 2, _mm_unpacklo_epi16(t1, t3));  // columns 8-11
    _mm_storeu_si128(o + 3, _mm_unpackhi_epi16(t1, t3));  // columns 12-15
  }
}

// The u8 path's ISA part of qconv_tiled.h's driver.
struct Avx2U8Traits {
  static constexpr int kMR = kU8MR, kKGroup = 4, kNV = 1;
  static constexpr bool kQuads = true, kTapMajorQuads = false, kQuadRows = false, kQuadCols = true;
  const int8_t* packed_w;
  const int8_t* packed_w_quads;  // (quad, tap) k order, or null: no quad planes
  int64_t group_bytes, a_tile_bytes;
  const Epilogue* e;
  const U8DotKernels* u8dot;  // vpdpbusd's microkernel (AVX-VNNI), or null: vpmaddubsw's below

  void thread_begin() const {}
  void thread_end() const {}
  const uint8_t* a_tile(int64_t grp, int64_t mt) const {
    return reinterpret_cast<const uint8_t*>(packed_w + grp * group_bytes + mt * a_tile_bytes);
  }
  const uint8_t* a_tile_quads(int64_t grp, int64_t mt) const {
    return reinterpret_cast<const uint8_t*>(packed_w_quads + grp * group_bytes + mt * a_tile_bytes);
  }
  void kernel_quads(int, int, const uint8_t* a, const uint8_t* b, const int64_t* off, int64_t kq, int32_t* tile,
                    int64_t) const {
    if (u8dot) u8dot->quads(reinterpret_cast<const int8_t*>(a), b, off, kq, tile);
    else KernelU8::quads(reinterpret_cast<const int8_t*>(a), b, off, kq, tile);
  }
  void pack_group(const int8_t* const r[4], int64_t ncols, uint8_t* out, int64_t panel_stride) const {
    pack_quad_u8(r, ncols, out, panel_stride);
  }
  void kernel(int, int, const uint8_t* a, const uint8_t* b, int64_t, int64_t kq, int32_t* tile, int64_t) const {
    if (u8dot) u8dot->panel(reinterpret_cast<const int8_t*>(a), b, kq, tile);
    else KernelU8::panel(reinterpret_cast<const int8_t*>(a), b, kq, tile);
  }
  void epilogue(const int32_t* tile, int mr, int, int64_t c0, const Cols& cols) const {
    epilogue_tile_rows(*e, tile, mr, c0, cols);
  }
};

// The ISA part of qconv_tiled.h's driver.
struct Avx2Traits {
  static constexpr int kMR = qk::kMR, kKGroup = 2, kNV = 1;
  static constexpr bool kQuads = false, kTapMajorQuads = false, kQuadCols = false;
  const int16_t* packed_w;
  int64_t group_elems, a_tile_elems;
  const Epilogue* e;

  void thread_begin() const {}
  void thread_end() const {}
  const uint8_t* a_tile(int64_t grp, int64_t mt) const {
    return reinterpret_cast<const uint8_t*>(packed_w + grp * group_elems + mt * a_tile_elems);
  }
  void pack_group(const int8_t* const r[2], int64_t ncols, uint8_t* out, int64_t panel_stride) const {
    pack_pair(r, ncols, out, panel_stride);
  }
  void kernel(int, int, const uint8_t* a, const uint8_t* b, int64_t, int64_t kp, int32_t* tile, int64_t) const {
    kernel_6x16(reinterpret_cast<const int16_t*>(a), reinterpret_cast<const int16_t*>(b), kp, tile);
  }
  void epilogue(const int32_t* tile, int mr, int, int64_t c0, const Cols& cols) const {
    epilogue_tile_rows(*e, tile, mr, c0, cols);
  }
};

}  // namespace

void pack_a(const int8_t* src, int64_t rs, int64_t ks, int64_t rows, int64_t k, int16_t* out) {
  const int64_t kp = round_up(k, 2) / 2;
  for (int64_t mt = 0; mt < round_up(rows, kMR) / kMR; ++mt) {
    int16_t* tile = out + mt * kp * kMR * 2;
    for (int64_t p = 0; p < kp; ++p)
      for (int r = 0; r < kMR; ++r)
        for (int h = 0; h < 2; ++h) {
          const int64_t row = mt * kMR + r, kk = 2 * p + h;
          tile[(p * kMR + r) * 2 + h] = row < rows && kk < k ? src[row * rs + kk * ks] : 0;
        }
  }
}

void pack_b(const int8_t* src, int64_t ks, int64_t cs, int64_t k, int64_t cols, int16_t* out) {
  const int64_t kp = round_up(k, 2) / 2;
  for (int64_t nt = 0; nt < round_up(cols, kNR) / kNR; ++nt) {
    int16_t* panel = out + nt * kp * kNR * 2;
    for (int64_t p = 0; p < kp; ++p)
      for (int j = 0; j < kNR; ++j)
        for (int h = 0; h < 2; ++h) {
          const int64_t col = nt * kNR + j, kk = 2 * p + h;
          panel[(p * kNR + j) * 2 + h] = col < cols && kk < k ? src[kk * ks + col * cs] : 0;
        }
  }
}

size_t qconv_avx2_workspace(const ConvGeom& g, int threads) {
  return tiled_plan<Avx2Traits>(g, threads).workspace(std::max(threads, 1));
}

void qconv_avx2(ThreadPool& pool, const ConvGeom& g, const int8_t* x, const int16_t* packed_w, const Epilogue& e,
                void* ws) {
  const TiledPlan t = tiled_plan<Avx2Traits>(g, pool.num_threads());
  Avx2Traits tr;
  tr.packed_w = packed_w;
  tr.group_elems = packed_a_elems(t.mg, t.k);
  tr.a_tile_elems = t.groups * kMR * 2;
  tr.e = &e;
  run_tiled<Avx2Traits, Cols>(pool, g, x, t, ws, tr);
}

void pack_a_u8(const int8_t* src, int64_t rs, int64_t rows, int64_t k, int8_t* out) {
  pack_a_k4<kU8MR>(src, rs, rows, k, out);
}

size_t qconv_avx2_u8_workspace(const ConvGeom& g, int threads, bool quads) {
  return tiled_plan<Avx2U8Traits>(g, threads, quads || pointwise_quads(g)).workspace(std::max(threads, 1));
}

void qconv_avx2_u8(ThreadPool& pool, const ConvGeom& g, const int8_t* x, const int8_t* packed_w,
                   const int8_t* packed_w_quads, const Epilogue& e, void* ws, const U8DotKernels* u8dot) {
  if (!packed_w_quads && pointwise_quads(g)) packed_w_quads = packed_w;
  const TiledPlan t = tiled_plan<Avx2U8Traits>(g, pool.num_threads(), packed_w_quads != nullptr);
  Avx2U8Traits tr;
  tr.packed_w = packed_w;
  tr.packed_w_quads = packed_w_quads;
  tr.group_bytes = packed_a_u8_bytes(t.mg, t.k);
  tr.a_tile_bytes = t.groups * kU8MR * 4;
  tr.e = &e;
  tr.u8dot = u8dot;
  run_tiled<Avx2U8Traits, Cols>(pool, g, x, t, ws, tr);
}

size_t qgemm_avx2_workspace(int64_t n, int64_t k) {
  return align64(static_cast<size_t>(packed_a_elems(n, k)) * sizeof(int16_t));
}

void qgemm_avx2(ThreadPool& pool, int64_t n, int64_t m, int64_t k, const int8_t* a, const int16_t* packed_w,
                const Epilogue& e, void* ws) {
  const int64_t kp = round_up(k, 2) / 2;
  const int64_t a_tile = kp * kMR * 2, b_panel = kp * kNR * 2;
  const int64_t mt_count = round_up(n, kMR) / kMR, nt_count = round_up(m, kNR) / kNR;
  auto* packed_a = static_cast<int16_t*>(ws);
  pack_a(a, k, 1, n, k, packed_a);
  // Weight panels are the large operand: each task streams one panel past
  // every activation tile.
  auto body = [&](int64_t b, int64_t end) {
    alignas(32) int32_t tile[kMR * kNR];
    for (int64_t t = b; t < end; ++t) {
      const int64_t nt = t / mt_count, mt = t % mt_count;
      kernel_6x16(packed_a + mt * a_tile, packed_w + nt * b_panel, kp, tile);
      const int mr = static_cast<int>(std::min<int64_t>(kMR, n - mt * kMR));
      const int nr = static_cast<int>(std::min<int64_t>(kNR, m - nt * kNR));
      epilogue_tile_cols(e, tile, mr, nr, nt * kNR, mt * kMR * m + nt * kNR, m);
    }
  };
  pool.parallel_for(nt_count * mt_count, by_ref(body));
}

void qconv_depthwise_avx2(ThreadPool& pool, const ConvGeom& g, const int8_t* x, const int8_t* w, const Epilogue& e,
                          void* ws) {
  run_depthwise(pool, g, x, w, ws, [&e](const int32_t* acc, int64_t n, int64_t c, int64_t idx) {
    const __m256 mul = _mm256_set1_ps(e.mul[c]);
    const __m256i bi = _mm256_set1_epi32(e.bias_i32 ? e.bias_i32[c] : 0);
    const __m256 bf = _mm256_set1_ps(e.bias_f32 ? e.bias_f32[c] : 0.f);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
      epilogue8(e, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + j)), mul, bi, bf, idx + j);
    if (j < n)  // the accumulator row is padded to 16 columns: the load stays inside it
      epilogue8_lanes(e, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + j)), mul, bi, bf, idx + j,
                      (1u << (n - j)) - 1u);
  });
}

}  // namespace engine::qk
