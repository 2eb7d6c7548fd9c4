// 2-D transpose of 1-byte elements with AVX-512 BW:
//   dst[c * dst_ld + r] = src[r * src_ld + c]
// The matrix is cut into blocks of 64 rows x 16 columns. A block is four
// 16x16 byte tiles stacked down the rows, one per 128-bit lane of 16 zmm
// registers (row i of tile j -> lane j of register i), transposed together by
// four in-lane unpack stages (epi8, epi16, epi32, epi64: 64 shuffles for
// 1 KiB). Register k then holds column k of the block, 64 rows long, and is
// one 64-byte store: every destination write is a whole 64-byte run, and the
// loads are 16-byte pieces of 64 source rows whose lines the next three
// column blocks use. Ragged blocks (fewer than 64 rows or 16 columns) run the
// same network with byte-masked loads and stores (BW), so there is no scalar
// tail. Blocks go column block by column block inside a strip of 64 rows, so
// a strip's source lines (64 x 64 bytes per four blocks) stay in L1.
// Used for the int8 NCHW <-> NHWC transposes of channels-last int8 networks
// (the Transpose kernel, and the channels-last QConv fallback).
// Precondition: use_avx512() (kernel_usable("transpose_s8_avx512")).
#include <immintrin.h>

#include "cpu/kernels/shape_ops/shape_ops.h"

// GCC 12's own avx512fintrin.h trips -Wmaybe-uninitialized and, inlined this
// deep, -Wuninitialized: the unpacks' _mm512_undefined_* pass-through
// initializes a variable with itself.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace engine {
namespace shape_ops {
namespace {

// The unpacks at two widths: zmm for 64-row blocks, xmm for strips of at
// most 16 rows (a quarter of the shuffle work where three lanes would idle).
struct Zmm {
  using T = __m512i;
  static T lo8(T a, T b) { return _mm512_unpacklo_epi8(a, b); }
  static T hi8(T a, T b) { return _mm512_unpackhi_epi8(a, b); }
  static T lo16(T a, T b) { return _mm512_unpacklo_epi16(a, b); }
  static T hi16(T a, T b) { return _mm512_unpackhi_epi16(a, b); }
  static T lo32(T a, T b) { return _mm512_unpacklo_epi32(a, b); }
  static T hi32(T a, T b) { return _mm512_unpackhi_epi32(a, b); }
  static T lo64(T a, T b) { return _mm512_unpacklo_epi64(a, b); }
  static T hi64(T a, T b) { return _mm512_unpackhi_epi64(a, b); }
};
struct Xmm {
  using T = __m128i;
  static T lo8(T a, T b) { return _mm_unpacklo_epi8(a, b); }
  static T hi8(T a, T b) { return _mm_unpackhi_epi8(a, b); }
  static T lo16(T a, T b) { return _mm_unpacklo_epi16(a, b); }
  static T hi16(T a, T b) { return _mm_unpackhi_epi16(a, b); }
  static T lo32(T a, T b) { return _mm_unpacklo_epi32(a, b); }
  static T hi32(T a, T b) { return _mm_unpackhi_epi32(a, b); }
  static T lo64(T a, T b) { return _mm_unpacklo_epi64(a, b); }
  static T hi64(T a, T b) { return _mm_unpackhi_epi64(a, b); }
};

// In each 128-bit lane: v[i] = row i of a 16x16 byte tile -> v[k] = its
// column k.
template <class V>
inline __attribute__((always_inline)) void transpose16x16_lanes(typename V::T v[16]) {
  typename V::T b[16], c[16], e[16];
  // Rows 2i, 2i+1 interleaved: columns 0-7 (b[i]) and 8-15 (b[i + 8]).
  for (int i = 0; i < 8; ++i) {
    b[i] = V::lo8(v[2 * i], v[2 * i + 1]);
    b[i + 8] = V::hi8(v[2 * i], v[2 * i + 1]);
  }
  // Rows 4g..4g+3 of column quad q: c[4q + g].
  for (int h = 0; h < 2; ++h)
    for (int g = 0; g < 4; ++g) {
      c[(2 * h) * 4 + g] = V::lo16(b[8 * h + 2 * g], b[8 * h + 2 * g + 1]);
      c[(2 * h + 1) * 4 + g] = V::hi16(b[8 * h + 2 * g], b[8 * h + 2 * g + 1]);
    }
  // Rows 8p..8p+7 of column pair t: e[2t + p].
  for (int q = 0; q < 4; ++q)
    for (int p = 0; p < 2; ++p) {
      e[(2 * q) * 2 + p] = V::lo32(c[4 * q + 2 * p], c[4 * q + 2 * p + 1]);
      e[(2 * q + 1) * 2 + p] = V::hi32(c[4 * q + 2 * p], c[4 * q + 2 * p + 1]);
    }
  // All 16 rows of column k.
  for (int t = 0; t < 8; ++t) {
    v[2 * t] = V::lo64(e[2 * t], e[2 * t + 1]);
    v[2 * t + 1] = V::hi64(e[2 * t], e[2 * t + 1]);
  }
}

// A whole block: 64 rows x 16 columns.
inline __attribute__((always_inline)) void block64x16(const uint8_t* s, int64_t sld, uint8_t* d, int64_t dld) {
  __m512i v[16];
  for (int i = 0; i < 16; ++i) {
    const uint8_t* p = s + i * sld;
    __m512i x = _mm512_zextsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    x = _mm512_inserti32x4(x, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * sld)), 1);
    x = _mm512_inserti32x4(x, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 32 * sld)), 2);
    v[i] = _mm512_inserti32x4(x, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 48 * sld)), 3);
  }
  transpose16x16_lanes<Zmm>(v);
  for (int k = 0; k < 16; ++k) _mm512_storeu_si512(d + k * dld, v[k]);
}

// A ragged block: 16 < nr <= 64 rows x nc <= 16 columns. Rows past nr load
// as zeros and are not stored; columns past nc are neither loaded nor stored.
void block_masked(const uint8_t* s, int64_t sld, uint8_t* d, int64_t dld, int64_t nr, int64_t nc) {
  const __mmask16 cm = static_cast<__mmask16>((1u << nc) - 1);
  __m512i v[16];
  for (int i = 0; i < 16; ++i) {
    __m512i x = _mm512_zextsi128_si512(_mm_maskz_loadu_epi8(cm, s + i * sld));
    for (int j = 1; j < 4; ++j) {
      const int64_t r = 16 * j + i;
      x = _mm512_inserti32x4(x, r < nr ? _mm_maskz_loadu_epi8(cm, s + r * sld) : _mm_setzero_si128(), j);
    }
    v[i] = x;
  }
  transpose16x16_lanes<Zmm>(v);
  const __mmask64 rm = nr >= 64 ? ~__mmask64{0} : (__mmask64{1} << nr) - 1;
  for (int64_t k = 0; k < nc; ++k) _mm512_mask_storeu_epi8(d + k * dld, rm, v[k]);
}

// The same for nr <= 16 rows, in xmm.
void block_masked16(const uint8_t* s, int64_t sld, uint8_t* d, int64_t dld, int64_t nr, int64_t nc) {
  const __mmask16 cm = static_cast<__mmask16>((1u << nc) - 1);
  __m128i v[16];
  for (int i = 0; i < 16; ++i) v[i] = i < nr ? _mm_maskz_loadu_epi8(cm, s + i * sld) : _mm_setzero_si128();
  transpose16x16_lanes<Xmm>(v);
  const __mmask16 rm = static_cast<__mmask16>((1u << nr) - 1);
  for (int64_t k = 0; k < nc; ++k) _mm_mask_storeu_epi8(d + k * dld, rm, v[k]);
}

}  // namespace

void transpose2d_b8_avx512(const uint8_t* src, int64_t src_ld, uint8_t* dst, int64_t dst_ld, int64_t rows,
                           int64_t cols) {
  const int64_t cols16 = cols & ~int64_t{15};
  for (int64_t r0 = 0; r0 < rows; r0 += 64) {
    const int64_t nr = rows - r0 < 64 ? rows - r0 : 64;
    const uint8_t* s = src + r0 * src_ld;
    uint8_t* d = dst + r0;
    auto* ragged = nr > 16 ? block_masked : block_masked16;
    if (nr == 64) {
      for (int64_t c0 = 0; c0 < cols16; c0 += 16) block64x16(s + c0, src_ld, d + c0 * dst_ld, dst_ld);
    } else {
      for (int64_t c0 = 0; c0 < cols16; c0 += 16) ragged(s + c0, src_ld, d + c0 * dst_ld, dst_ld, nr, 16);
    }
    if (cols16 < cols) ragged(s + cols16, src_ld, d + cols16 * dst_ld, dst_ld, nr, cols - cols16);
  }
}

}  // namespace shape_ops
}  // namespace engine
