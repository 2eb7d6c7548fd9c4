// Preprocess row passes with AVX2 + FMA (preprocess.h; the reference is
// ref.cc). Precondition: use_avx2().
//
// Horizontal: the two pixels of a tap pair are 6 adjacent bytes; one 8-byte
// load, a byte shuffle to [r g b 0 | r g b 0] and a widening convert give
// both in one ymm, multiplied by [w_k x4 | w_k+1 x4]. The two halves are
// added at the end, leaving (r, g, b, 0) for one output pixel; four such
// pixels are transposed into planar R, G, B quads. The loads read up to 5
// bytes past the window's last pixel (the caller pads the buffer's end).
// Vertical: plain 8-wide FMA over the planar rows, two vectors per step for
// instruction-level parallelism, then v * scale + bias; masked tail stores.
// Sums are the reference's, reassociated (pairs of taps, FMA rounding).
// NV12 rows: 16 pixels per step in int32 with the reference's fixed-point
// formula (bit-identical), interleaved to RGB with pshufb.
#include <immintrin.h>

#include "cpu/kernels/preprocess/preprocess.h"

namespace engine {
namespace preprocess {
namespace {

inline __m128 one_pixel(const uint8_t* px, const float* wo, int stride, __m128i shuf, __m256i dup) {
  __m256 acc = _mm256_setzero_ps();
  for (int k = 0; k < stride; k += 2) {
    __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(px + 3 * k));
    b = _mm_shuffle_epi8(b, shuf);
    const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b));
    const __m128d w2 = _mm_load_sd(reinterpret_cast<const double*>(wo + k));  // w_k, w_k+1
    const __m256 wv = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_castpd_ps(w2)), dup);
    acc = _mm256_fmadd_ps(v, wv, acc);
  }
  return _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
}

}  // namespace

void hpass_u8_avx2(const uint8_t* row, const int32_t* start, const float* w, int taps, int stride, int64_t out_w,
                   bool bgr, float* out, int64_t ld) {
  (void)taps;  // the padding weights of odd windows are 0
  const __m128i shuf = _mm_setr_epi8(0, 1, 2, -1, 3, 4, 5, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  const __m256i dup = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
  // Planes of input channels 0, 1, 2 (BGR frames: channel 0 is blue).
  float* c0 = out + (bgr ? 2 : 0) * ld;
  float* c1 = out + ld;
  float* c2 = out + (bgr ? 0 : 2) * ld;
  int64_t o = 0;
  for (; o + 4 <= out_w; o += 4) {
    __m128 p0 = one_pixel(row + 3 * static_cast<int64_t>(start[o]), w + o * stride, stride, shuf, dup);
    __m128 p1 = one_pixel(row + 3 * static_cast<int64_t>(start[o + 1]), w + (o + 1) * stride, stride, shuf, dup);
    __m128 p2 = one_pixel(row + 3 * static_cast<int64_t>(start[o + 2]), w + (o + 2) * stride, stride, shuf, dup);
    __m128 p3 = one_pixel(row + 3 * static_cast<int64_t>(start[o + 3]), w + (o + 3) * stride, stride, shuf, dup);
    _MM_TRANSPOSE4_PS(p0, p1, p2, p3);
    _mm_storeu_ps(c0 + o, p0);
    _mm_storeu_ps(c1 + o, p1);
    _mm_storeu_ps(c2 + o, p2);
  }
  for (; o < out_w; ++o) {
    alignas(16) float v[4];
    _mm_store_ps(v, one_pixel(row + 3 * static_cast<int64_t>(start[o]), w + o * stride, stride, shuf, dup));
    c0[o] = v[0];
    c1[o] = v[1];
    c2[o] = v[2];
  }
}

void vpass_f32_avx2(const float* src, int64_t row_stride, const float* wy, int taps, int64_t out_w, int64_t ld,
                    const float* scale, const float* bias, float* const* dst) {
  for (int p = 0; p < 3; ++p) {
    const float* base = src + p * ld;
    float* d = dst[p];
    const __m256 s = _mm256_set1_ps(scale[p]), b = _mm256_set1_ps(bias[p]);
    int64_t o = 0;
    for (; o + 16 <= out_w; o += 16) {
      __m256 w0 = _mm256_set1_ps(wy[0]);
      __m256 a0 = _mm256_mul_ps(w0, _mm256_loadu_ps(base + o));
      __m256 a1 = _mm256_mul_ps(w0, _mm256_loadu_ps(base + o + 8));
      for (int k = 1; k < taps; ++k) {
        const __m256 wk = _mm256_set1_ps(wy[k]);
        const float* r = base + k * row_stride + o;
        a0 = _mm256_fmadd_ps(wk, _mm256_loadu_ps(r), a0);
        a1 = _mm256_fmadd_ps(wk, _mm256_loadu_ps(r + 8), a1);
      }
      _mm256_storeu_ps(d + o, _mm256_fmadd_ps(a0, s, b));
      _mm256_storeu_ps(d + o + 8, _mm256_fmadd_ps(a1, s, b));
    }
    // Rows are ld >= round_up(out_w, 8) floats: full-vector loads stay inside.
    for (; o < out_w; o += 8) {
      __m256 a = _mm256_mul_ps(_mm256_set1_ps(wy[0]), _mm256_loadu_ps(base + o));
      for (int k = 1; k < taps; ++k)
        a = _mm256_fmadd_ps(_mm256_set1_ps(wy[k]), _mm256_loadu_ps(base + k * row_stride + o), a);
      a = _mm256_fmadd_ps(a, s, b);
      const int64_t left = out_w - o;
      if (left >= 8) {
        _mm256_storeu_ps(d + o, a);
      } else {
        const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(left)), idx);
        _mm256_maskstore_ps(d + o, mask, a);
      }
    }
  }
}

}  // namespace preprocess
}  // namespace engine

namespace engine {
namespace preprocess {
namespace {

// pshufb masks that interleave 16 R, G and B bytes into 48 RGB bytes: output
// block j (16 bytes) takes byte i from plane (3j*16 + i) % 3 at index
// (16j + i) / 3, and -1 (zero) from the other two planes.
struct InterleaveMasks {
  alignas(16) int8_t m[3][3][16];  // [block][plane][byte]
  InterleaveMasks() {
    for (int j = 0; j < 3; ++j)
      for (int p = 0; p < 3; ++p)
        for (int i = 0; i < 16; ++i) {
          const int k = 16 * j + i;  // byte in the 48-byte output
          m[j][p][i] = static_cast<int8_t>(k % 3 == p ? k / 3 : -1);
        }
  }
};

const InterleaveMasks& interleave_masks() {
  static const InterleaveMasks masks;
  return masks;
}

// 8 pixels' R, G, B as int32 (before the >> 20) for Y bytes y8 and per-pixel
// U', V' (already minus 128).
inline void yuv8(__m256i y, __m256i u, __m256i v, __m256i* r, __m256i* g, __m256i* b) {
  const __m256i yy = _mm256_add_epi32(
      _mm256_mullo_epi32(_mm256_max_epi32(_mm256_sub_epi32(y, _mm256_set1_epi32(16)), _mm256_setzero_si256()),
                         _mm256_set1_epi32(1220542)),
      _mm256_set1_epi32(1 << 19));
  *r = _mm256_srai_epi32(_mm256_add_epi32(yy, _mm256_mullo_epi32(v, _mm256_set1_epi32(1673527))), 20);
  *g = _mm256_srai_epi32(_mm256_add_epi32(yy, _mm256_add_epi32(_mm256_mullo_epi32(v, _mm256_set1_epi32(-852492)),
                                                               _mm256_mullo_epi32(u, _mm256_set1_epi32(-409993)))),
                         20);
  *b = _mm256_srai_epi32(_mm256_add_epi32(yy, _mm256_mullo_epi32(u, _mm256_set1_epi32(2116026))), 20);
}

// Two vectors of 8 int32 to 16 saturated bytes, in order.
inline __m128i pack16(__m256i lo, __m256i hi) {
  const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), 0xD8);  // 16 x int16, in order
  return _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
}

}  // namespace

// NV12 row to RGB, 16 pixels per step in int32 (the reference's fixed-point
// formula exactly); packs saturate, so no clamps. Scalar tail: the ref.
void nv12_row_to_rgb_avx2(const uint8_t* y, const uint8_t* uv, int64_t x0, int64_t x1, uint8_t* rgb) {
  const InterleaveMasks& im = interleave_masks();
  const __m128i u_lo = _mm_setr_epi8(0, 0, 2, 2, 4, 4, 6, 6, -1, -1, -1, -1, -1, -1, -1, -1);
  const __m128i v_lo = _mm_setr_epi8(1, 1, 3, 3, 5, 5, 7, 7, -1, -1, -1, -1, -1, -1, -1, -1);
  const __m128i u_hi = _mm_setr_epi8(8, 8, 10, 10, 12, 12, 14, 14, -1, -1, -1, -1, -1, -1, -1, -1);
  const __m128i v_hi = _mm_setr_epi8(9, 9, 11, 11, 13, 13, 15, 15, -1, -1, -1, -1, -1, -1, -1, -1);
  const __m256i c128 = _mm256_set1_epi32(128);
  int64_t x = x0 & ~int64_t{1};  // start on a chroma pair (one extra pixel is harmless)
  for (; x + 16 <= x1; x += 16) {
    const __m128i yb = _mm_loadu_si128(reinterpret_cast<const __m128i*>(y + x));
    const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(uv + x));
    __m256i r0, g0, b0, r1, g1, b1;
    yuv8(_mm256_cvtepu8_epi32(yb), _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_shuffle_epi8(c, u_lo)), c128),
         _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_shuffle_epi8(c, v_lo)), c128), &r0, &g0, &b0);
    yuv8(_mm256_cvtepu8_epi32(_mm_srli_si128(yb, 8)),
         _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_shuffle_epi8(c, u_hi)), c128),
         _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_shuffle_epi8(c, v_hi)), c128), &r1, &g1, &b1);
    const __m128i planes[3] = {pack16(r0, r1), pack16(g0, g1), pack16(b0, b1)};
    for (int j = 0; j < 3; ++j) {
      __m128i o = _mm_shuffle_epi8(planes[0], _mm_load_si128(reinterpret_cast<const __m128i*>(im.m[j][0])));
      o = _mm_or_si128(o, _mm_shuffle_epi8(planes[1], _mm_load_si128(reinterpret_cast<const __m128i*>(im.m[j][1]))));
      o = _mm_or_si128(o, _mm_shuffle_epi8(planes[2], _mm_load_si128(reinterpret_cast<const __m128i*>(im.m[j][2]))));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(rgb + 3 * x + 16 * j), o);
    }
  }
  if (x < x1) nv12_row_to_rgb_ref(y, uv, x, x1, rgb);
}

}  // namespace preprocess
}  // namespace engine
