// The AVX512-VNNI tier's tile epilogue and panel pack (qconv_avx512vnni.cc),
// shared with the AMX tier (qconv_amx.cc), whose tiles have the same shape:
// rows are output channels, kTileLd = 48 int32 columns (three 16-column
// panels), panels of 16 columns as [k group][16][4] bytes. Include it only
// from those ISA files: everything here has internal linkage (as in
// qconv_tiled.h), so each compiles its own copy with its own flags.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/kernels/quant/qconv_tiled.h"

// GCC 12's own avx512fintrin.h trips -Wmaybe-uninitialized, and where
// inlined deeper (the AMX file) -Wuninitialized: its _mm512_undefined_*
// helpers initialize a variable with itself.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace engine::qk {
namespace {

constexpr int kNV = 3;  // 16-column panels per tile
constexpr int kTileLd = 16 * kNV;

inline __m512 no_contract16(__m512 v) {
  __asm__("" : "+v"(v));
  return v;
}

// The epilogue, vectorized: epilogue_one()'s operations in the same order.
// EpiConst holds its vector constants, made once per call (built per output
// group, they were rebuilt after every int8 store, which may alias the
// Epilogue's fields).
struct EpiConst {
  Epilogue e;
  bool relu_bytes;  // Relu before a requantize: applied to the int8 bytes (see narrow48)
  bool y_zp_add;    // y_zp != 0 (zero: the symmetric form, nothing to add)
  __m512 q_hi, z_scale;
  __m512i z_zp, y_zp16, y_zp8;
  explicit EpiConst(const Epilogue& ep)
      : e(ep),
        relu_bytes(ep.requant && ep.act == Act::kRelu),
        y_zp_add(ep.y_zp != 0),
        q_hi(_mm512_set1_ps(static_cast<float>(127 - ep.y_zp))),
        z_scale(_mm512_set1_ps(ep.z_scale)),
        z_zp(_mm512_set1_epi32(ep.z_zp)),
        y_zp16(_mm512_set1_epi16(static_cast<int16_t>(ep.y_zp))),
        y_zp8(_mm512_set1_epi8(static_cast<char>(ep.y_zp))) {}
};

// v of epilogue_one() from acc (bias_i32 already added) and the residual z
// as a float (z_f32, or z_s8 - z_zp; ignored without one). A Relu before a
// requantize is left to narrow48.
inline __m512 epi_value(const EpiConst& k, __m512i acc, __m512 mul, __m512 bf, __m512 z) {
  const Epilogue& e = k.e;
  __m512 v = no_contract16(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), mul));
  if (e.bias_f32) v = _mm512_add_ps(v, bf);
  if (e.z_f32 || e.z_s8) v = _mm512_add_ps(v, no_contract16(_mm512_mul_ps(z, k.z_scale)));
  if (e.act == Act::kRelu && !k.relu_bytes) {
    v = _mm512_max_ps(v, _mm512_setzero_ps());
  } else if (e.act == Act::kClip) {
    v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(e.act_lo)), _mm512_set1_ps(e.act_hi));
  }
  return v;
}

// round(min(v, 127 - y_zp)) in int32, the zero point not yet added. The
// lower clamp is narrow48's saturation: clamping to integer bounds commutes
// with rounding, and a v below -128 - y_zp (or a NaN, which cvtps2dq turns
// into INT32_MIN as the clamp turned it into the lower bound; the min keeps
// it, returning its second operand) saturates to -128 there. kBounded
// (Epilogue::v_bounded: |v| < 2^31 - 256, no Inf) leaves the upper clamp to
// the saturation too: round(v) is then exact in int32, and its saturating
// narrowing is the clamp.
template <bool kBounded>
inline __m512i quantize16(const EpiConst& k, __m512 v) {
  return _mm512_cvtps_epi32(kBounded ? v : _mm512_min_ps(k.q_hi, v));
}

// Four lane groups of quantize16 values -> their 64 int8 outputs in order,
// the zero point added: saturating packs to int16, a saturating add (none
// for y_zp = 0, the symmetric form), a saturating pack to int8 (so each is
// exactly clamp(round(v) + y_zp, -128, 127)), and one dword permutation to
// undo the packs' per-128-bit-lane interleave. A Relu before the requantize
// is max(y, y_zp) here: round(max(v, 0)) + y_zp clamped is exactly that
// (also for a NaN v, which ends at y_zp both ways).
inline __m512i narrow64(const EpiConst& k, __m512i a, __m512i b, __m512i c, __m512i d) {
  __m512i ab = _mm512_packs_epi32(a, b), cd = _mm512_packs_epi32(c, d);
  if (k.y_zp_add) {
    ab = _mm512_adds_epi16(ab, k.y_zp16);
    cd = _mm512_adds_epi16(cd, k.y_zp16);
  }
  __m512i bytes = _mm512_packs_epi16(ab, cd);  // 128-bit lane L: a, b, c, d blocks L
  if (k.relu_bytes) bytes = _mm512_max_epi8(bytes, k.y_zp8);
  return _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), bytes);
}

// Three lane groups: the 48 outputs of a tile row (bytes 48-63 repeat c).
inline __m512i narrow48(const EpiConst& k, __m512i a, __m512i b, __m512i c) { return narrow64(k, a, b, c, c); }

// Up to 16 lanes (mask m) of channel c at idx: the depthwise rows.
inline void epilogue16(const EpiConst& k, __m512i acc, __m512 mul, __m512i bi, __m512 bf, int64_t idx,
                       __mmask16 m) {
  const Epilogue& e = k.e;
  __m512 z = _mm512_setzero_ps();
  if (e.z_f32) z = _mm512_maskz_loadu_ps(m, e.z_f32 + idx);
  else if (e.z_s8)
    z = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, e.z_s8 + idx)), k.z_zp));
  const __m512 v = epi_value(k, e.bias_i32 ? _mm512_add_epi32(acc, bi) : acc, mul, bf, z);
  if (e.requant) {
    const __m512i q = quantize16<false>(k, v);
    const __m128i b = _mm512_castsi512_si128(narrow48(k, q, q, q));
    if (m == 0xffff) _mm_storeu_si128(reinterpret_cast<__m128i*>(e.y_s8 + idx), b);
    else _mm_mask_storeu_epi8(e.y_s8 + idx, m, b);
  } else {
    _mm512_mask_storeu_ps(e.y_f32 + idx, m, v);
  }
}

using Cols = TileCols<16, kNV>;

using TileRuns = TileRunsOf<16, kNV>;

// One tile row's epilogue: the tile's 48 accumulators of channel c (their
// sums already start at bias_i32 - corr: VnniPanels::start), `at` = c * hw.
// Z: the residual (0 none, 1 float, 2 int8), a template argument with the
// requantize (and whether v is bounded, quantize16) so the row is
// straight-line code.
template <bool kRequant, int kZ, bool kBounded>
inline void epilogue_row(const EpiConst& k, const int32_t* t, int64_t c, int64_t at, const TileRuns& runs) {
  const Epilogue& e = k.e;
  const __m512 mul = _mm512_set1_ps(e.mul[c]);
  const __m512 bf = _mm512_set1_ps(e.bias_f32 ? e.bias_f32[c] : 0.f);
  __m512 z[kNV];
  if constexpr (kZ == 1) {
    for (int j = 0; j < kNV; ++j) z[j] = _mm512_setzero_ps();
    for (int r = 0; r < runs.n; ++r)
#pragma GCC unroll 3
      for (int j = 0; j < kNV; ++j)
        z[j] = _mm512_mask_loadu_ps(z[j], static_cast<__mmask16>(TileRuns::group(runs.mask[r], j)),
                                    e.z_f32 + runs.off[r] + at + 16 * j);
  } else if constexpr (kZ == 2) {
    __m512i zb;
    if (runs.n == 1 && runs.mask[0] == TileRuns::kAll) {  // the common case: 48 bytes in a row, unmasked
      const int8_t* src = e.z_s8 + runs.off[0] + at;
      zb = _mm512_inserti32x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src))),
                              _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 32)), 2);
    } else {
      zb = _mm512_setzero_si512();
      for (int r = 0; r < runs.n; ++r) zb = _mm512_mask_loadu_epi8(zb, runs.mask[r], e.z_s8 + runs.off[r] + at);
    }
    z[0] = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepi8_epi32(_mm512_castsi512_si128(zb)), k.z_zp));
    z[1] = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(zb, 1)), k.z_zp));
    z[2] = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(zb, 2)), k.z_zp));
  } else {
    for (int j = 0; j < kNV; ++j) z[j] = _mm512_setzero_ps();
  }
  __m512 v[kNV];
#pragma GCC unroll 3
  for (int j = 0; j < kNV; ++j)
    v[j] = epi_value(k, _mm512_load_si512(t + 16 * j), mul, bf, z[j]);
  if constexpr (kRequant) {
    const __m512i bytes =
        narrow48(k, quantize16<kBounded>(k, v[0]), quantize16<kBounded>(k, v[1]), quantize16<kBounded>(k, v[2]));
    for (int r = 0; r < runs.n; ++r) {
      int8_t* dst = e.y_s8 + runs.off[r] + at;
      if (runs.mask[r] == TileRuns::kAll) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm512_castsi512_si256(bytes));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 32), _mm512_extracti32x4_epi32(bytes, 2));
      } else {
        _mm512_mask_storeu_epi8(dst, runs.mask[r], bytes);
      }
    }
  } else {
    for (int r = 0; r < runs.n; ++r)
#pragma GCC unroll 3
      for (int j = 0; j < kNV; ++j)
        _mm512_mask_storeu_ps(e.y_f32 + runs.off[r] + at + 16 * j,
                              static_cast<__mmask16>(TileRuns::group(runs.mask[r], j)), v[j]);
  }
}

// Tile rows are channels c0..c0+mr-1; columns as `cols` maps them. All
// three lane groups are computed (a narrower tile's unused columns hold
// earlier values, and are not stored).
template <bool kRequant, int kZ, bool kBounded>
void epilogue_rows(const EpiConst& k, const int32_t* tile, int mr, int64_t c0, const TileRuns& runs,
                   int64_t hw) {
  for (int r = 0; r < mr; ++r) epilogue_row<kRequant, kZ, kBounded>(k, tile + r * kTileLd, c0 + r, (c0 + r) * hw, runs);
}

// (Measured and not kept, sixteenth session, Zen 4: a straight-line path
// for the whole 8-row tile, every row computed into registers before any
// is stored, with the bias, zero point, Relu and masked-run flags as
// template constants. Toggled in one process it read 6-7% on ResNet-50
// INT8 batch 1, but its "off" side was this code recompiled beside it;
// against this code built alone, normalized by onnxruntime in the same
// process, it was 0.5-2% (ResNet-50 b1 1.046x vs 1.053x onnxruntime, a
// 64 -> 256 1x1 at batch 8 1.29x vs 1.31x), within the noise, and per
// layer mixed. The AVX2 tier's rows written the same way: 1.00x.)
void epilogue_tile(const EpiConst& k0, const int32_t* tile, int mr, int64_t c0, const Cols& cols) {
  // A copy whose address never leaves this call: the int8 output stores
  // may alias any memory whose address escaped (char aliasing), so with the
  // caller's EpiConst every row would reload its fields and re-test its
  // flags after the previous row's stores.
  const EpiConst k = k0;
  const TileRuns runs(cols);
  with_epilogue_kind(k.e, [&](auto requant, auto z) {
    constexpr bool kR = decltype(requant)::value;
    constexpr int kZ = decltype(z)::value;
    if (kR && k.e.v_bounded) epilogue_rows<kR, kZ, true>(k, tile, mr, c0, runs, cols.hw);
    else epilogue_rows<kR, kZ, false>(k, tile, mr, c0, runs, cols.hw);
  });
}

// The 4x4 interleave of pack_quad: rows r0..r3 (64 bytes each) -> p[i],
// the 16 four-byte columns 16i..16i+15, each (r0, r1, r2, r3)[col], XORed
// with fx.
inline void interleave4(__m512i r0, __m512i r1, __m512i r2, __m512i r3, __m512i fx, __m512i p[4]) {
  const __m512i t0 = _mm512_unpacklo_epi8(r0, r1), t1 = _mm512_unpackhi_epi8(r0, r1);
  const __m512i t2 = _mm512_unpacklo_epi8(r2, r3), t3 = _mm512_unpackhi_epi8(r2, r3);
  // Lane L of o0..o3: columns 16L + 0-3, 4-7, 8-11, 12-15 of the block.
  const __m512i o0 = _mm512_unpacklo_epi16(t0, t2), o1 = _mm512_unpackhi_epi16(t0, t2);
  const __m512i o2 = _mm512_unpacklo_epi16(t1, t3), o3 = _mm512_unpackhi_epi16(t1, t3);
  const __m512i u0 = _mm512_shuffle_i64x2(o0, o1, 0x44), u1 = _mm512_shuffle_i64x2(o0, o1, 0xEE);
  const __m512i u2 = _mm512_shuffle_i64x2(o2, o3, 0x44), u3 = _mm512_shuffle_i64x2(o2, o3, 0xEE);
  p[0] = _mm512_xor_si512(_mm512_shuffle_i64x2(u0, u2, 0x88), fx);
  p[1] = _mm512_xor_si512(_mm512_shuffle_i64x2(u0, u2, 0xDD), fx);
  p[2] = _mm512_xor_si512(_mm512_shuffle_i64x2(u1, u3, 0x88), fx);
  p[3] = _mm512_xor_si512(_mm512_shuffle_i64x2(u1, u3, 0xDD), fx);
}

// Packs one k group: rows r[0..3] (ncols columns each) into the [16][4]
// slot of every panel (panel j's slot at out + j * panel_stride), XORing
// every byte with `flip` (0x80 or 0). 64 columns (four panels) at a time:
// the byte and word unpacks interleave the four rows within each 128-bit
// lane, then a 4x4 transpose of the lanes gathers each panel's 64 bytes.
// The last block loads under a mask (zeros past ncols, nothing read there).
void pack_quad(const int8_t* const r[4], int64_t ncols, uint8_t flip, uint8_t* out, int64_t panel_stride) {
  const __m512i fx = _mm512_set1_epi8(static_cast<char>(flip));
  for (int64_t col = 0, j = 0; col < ncols; col += 64, j += 4) {
    const int64_t n = std::min<int64_t>(64, ncols - col);
    const __mmask64 m = n == 64 ? ~0ull : (1ull << n) - 1;
    const __m512i r0 = _mm512_maskz_loadu_epi8(m, r[0] + col), r1 = _mm512_maskz_loadu_epi8(m, r[1] + col);
    const __m512i r2 = _mm512_maskz_loadu_epi8(m, r[2] + col), r3 = _mm512_maskz_loadu_epi8(m, r[3] + col);
    __m512i p[4];
    interleave4(r0, r1, r2, r3, fx, p);
    const int panels = static_cast<int>((n + 15) / 16);
    for (int i = 0; i < panels; ++i) _mm512_storeu_si512(out + (j + i) * panel_stride, p[i]);
  }
}

// One padded row of a channel quad's quad planes (qconv_tiled.h, pad_quads),
// built in registers: src[h] is channel h's input row (w bytes), or null
// for a row of the padding; padded column jj holds src[h][jj - pl] for pl
// <= jj < pl + w and x_zp elsewhere, its 4 channels' bytes interleaved and
// XORed with flip as pack_quad lays them out. Column phase b (stride sw, 1
// or 2; bit b of `phases`) takes padded columns j * sw + b, j < wp, into
// dst + b * phase_stride (exactly wp * 4 bytes: a neighbouring row may be
// another thread's). The masked loads read only the input row's bytes.
void quad_row(const int8_t* const src[4], int64_t pl, int64_t w, int64_t wp, int64_t sw, uint32_t phases,
              int8_t x_zp, uint8_t flip, int8_t* dst, int64_t phase_stride) {
  const __m512i fx = _mm512_set1_epi8(static_cast<char>(flip)), zp = _mm512_set1_epi8(x_zp);
  const int64_t wfull = wp * sw;
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  for (int64_t cb = 0; cb < wfull; cb += 64) {
    // Lanes [l0, l1) of this block are input columns cb + l - pl.
    const int64_t l0 = std::clamp<int64_t>(pl - cb, 0, 64), l1 = std::clamp<int64_t>(pl + w - cb, 0, 64);
    const __mmask64 m = l1 > l0 ? ((l1 - l0 == 64 ? ~0ull : (1ull << (l1 - l0)) - 1) << l0) : 0;
    __m512i r[4];
    for (int h = 0; h < 4; ++h)
      r[h] = src[h] && m ? _mm512_mask_loadu_epi8(zp, m, src[h] + (cb - pl)) : zp;
    __m512i p[4];
    interleave4(r[0], r[1], r[2], r[3], fx, p);
    if (sw == 1) {
      for (int i = 0; i < 4; ++i) {
        const int64_t j = cb + 16 * i, n = std::min<int64_t>(16, wp - j);
        if (n <= 0) break;
        _mm512_mask_storeu_epi32(dst + 4 * j, n == 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << n) - 1), p[i]);
      }
      continue;
    }
    for (int64_t b = 0; b < 2; ++b) {
      if (!(phases >> b & 1u)) continue;
      const __m512i idx = _mm512_add_epi32(even, _mm512_set1_epi32(static_cast<int>(b)));
      for (int i = 0; i < 2; ++i) {  // phase columns cb / 2 + 16i .. + 15 from p[2i], p[2i + 1]
        const int64_t j = cb / 2 + 16 * i, n = std::min<int64_t>(16, wp - j);
        if (n <= 0) break;
        _mm512_mask_storeu_epi32(dst + b * phase_stride + 4 * j,
                                 n == 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << n) - 1),
                                 _mm512_permutex2var_epi32(p[2 * i], idx, p[2 * i + 1]));
      }
    }
  }
}

// What the VNNI and AMX tiers' Traits (qconv_tiled.h) share: the weight
// tiles by (group, tile), the panel pack with the +128 shift of a signed
// input, the sums' start per channel (the bias and the shift's
// correction) and the tile epilogue. The tiers differ in the micro-kernel
// (and AMX in its tile state).
struct VnniPanels {
  const int8_t* packed_w;
  const int8_t* packed_w_quads;       // quad-plane k order, or null: no quad planes
  int64_t group_bytes, a_tile_bytes;  // one group's tiles, one tile
  uint8_t flip;                       // 0x80: a signed input, packed as x + 128
  const EpiConst* k;
  // The sums' start per output channel c: bias_i32[c] minus the +128
  // shift's correction corr[c] (none for an input >= 0), wrapping, then
  // kMaxRows zeros (a tile's rows past the last channel). The micro-kernels
  // start their tile rows there (VNNI: the accumulators; AMX: added to its
  // stored tile), so the epilogue has no integer add.
  std::vector<int32_t> start;
  static constexpr int64_t kMaxRows = 16;
  static_assert(kVnniMR <= kMaxRows && kAmxMR <= kMaxRows, "a tile's rows read at most kMaxRows starts");

  // m: the conv's output channels (all groups).
  VnniPanels(const int8_t* w, const int8_t* w_quads, int64_t group_bytes_, int64_t a_tile_bytes_, bool x_nonneg,
             const EpiConst& ep, const int32_t* corr, int64_t m)
      : packed_w(w),
        packed_w_quads(w_quads),
        group_bytes(group_bytes_),
        a_tile_bytes(a_tile_bytes_),
        flip(x_nonneg ? 0 : 0x80),
        k(&ep),
        start(static_cast<size_t>(m + kMaxRows), 0) {
    for (int64_t c = 0; c < m; ++c)
      start[c] = static_cast<int32_t>(static_cast<uint32_t>(ep.e.bias_i32 ? ep.e.bias_i32[c] : 0) -
                                      static_cast<uint32_t>(x_nonneg || !corr ? 0 : corr[c]));
  }
  const uint8_t* a_tile(int64_t grp, int64_t mt) const {
    return reinterpret_cast<const uint8_t*>(packed_w + grp * group_bytes + mt * a_tile_bytes);
  }
  const uint8_t* a_tile_quads(int64_t grp, int64_t mt) const {
    return reinterpret_cast<const uint8_t*>(packed_w_quads + grp * group_bytes + mt * a_tile_bytes);
  }
  void pack_group(const int8_t* const r[4], int64_t ncols, uint8_t* out, int64_t panel_stride) const {
    pack_quad(r, ncols, flip, out, panel_stride);
  }
  // pad_quads' rows for strides 1 and 2, built in registers (quad_row).
  static constexpr bool kQuadRows = true;
  void quad_rows(const int8_t* const src[4], int64_t pl, int64_t w, int64_t wp, int64_t sw, uint32_t phases,
                 int8_t x_zp, int8_t* dst, int64_t phase_stride) const {
    quad_row(src, pl, w, wp, sw, phases, x_zp, flip, dst, phase_stride);
  }
  void epilogue(const int32_t* tile, int mr, int, int64_t c0, const Cols& cols) const {
    epilogue_tile(*k, tile, mr, c0, cols);
  }
};

}  // namespace
}  // namespace engine::qk
