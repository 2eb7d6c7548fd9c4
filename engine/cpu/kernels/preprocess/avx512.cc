// Preprocess row passes with AVX-512 F/BW/VL/DQ (preprocess.h; the
// reference is ref.cc, the AVX2 form avx2.cc). Precondition: use_avx512().
//
// Horizontal: four taps per zmm: the 4 pixels of a tap group are 12
// adjacent bytes; one 16-byte load, a byte shuffle to [r g b 0] x 4 and a
// widening convert give them in one zmm, multiplied by [w_k x4 .. w_k+3 x4].
// A remaining pair of taps (stride is even) uses the ymm form. The four
// 128-bit quarters are added at the end, leaving (r, g, b, 0) per output
// pixel; four pixels are transposed into planar quads as in avx2.cc. Group
// loads read up to 6 bytes, pair loads up to 5, past the window's end.
// Vertical: 16-wide FMA with masked tail stores (rows are padded to 16).
#include <immintrin.h>

#include "cpu/kernels/preprocess/preprocess.h"

// GCC 12's own avx512fintrin.h trips -Wmaybe-uninitialized (its
// _mm512_undefined_* helpers initialize a variable with itself).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace engine {
namespace preprocess {
namespace {

inline __m128 one_pixel(const uint8_t* px, const float* wo, int stride, __m128i shuf4, __m512i dup4, __m128i shuf2,
                        __m256i dup2) {
  __m512 acc = _mm512_setzero_ps();
  int k = 0;
  for (; k + 4 <= stride; k += 4) {
    const __m128i b = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(px + 3 * k)), shuf4);
    const __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b));
    const __m512 wv = _mm512_permutexvar_ps(dup4, _mm512_zextps128_ps512(_mm_loadu_ps(wo + k)));
    acc = _mm512_fmadd_ps(v, wv, acc);
  }
  __m256 acc2 = _mm256_add_ps(_mm512_castps512_ps256(acc), _mm512_extractf32x8_ps(acc, 1));
  if (k < stride) {  // one pair left
    const __m128i b = _mm_shuffle_epi8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(px + 3 * k)), shuf2);
    const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b));
    const __m128d w2 = _mm_load_sd(reinterpret_cast<const double*>(wo + k));
    const __m256 wv = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_castpd_ps(w2)), dup2);
    acc2 = _mm256_fmadd_ps(v, wv, acc2);
  }
  return _mm_add_ps(_mm256_castps256_ps128(acc2), _mm256_extractf128_ps(acc2, 1));
}

}  // namespace

void hpass_u8_avx512(const uint8_t* row, const int32_t* start, const float* w, int taps, int stride, int64_t out_w,
                     bool bgr, float* out, int64_t ld) {
  (void)taps;  // the padding weights of odd windows are 0
  const __m128i shuf4 = _mm_setr_epi8(0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1);
  const __m512i dup4 = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
  const __m128i shuf2 = _mm_setr_epi8(0, 1, 2, -1, 3, 4, 5, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  const __m256i dup2 = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
  float* c0 = out + (bgr ? 2 : 0) * ld;
  float* c1 = out + ld;
  float* c2 = out + (bgr ? 0 : 2) * ld;
  auto pixel = [&](int64_t o) {
    return one_pixel(row + 3 * static_cast<int64_t>(start[o]), w + o * stride, stride, shuf4, dup4, shuf2, dup2);
  };
  int64_t o = 0;
  for (; o + 4 <= out_w; o += 4) {
    __m128 p0 = pixel(o), p1 = pixel(o + 1), p2 = pixel(o + 2), p3 = pixel(o + 3);
    _MM_TRANSPOSE4_PS(p0, p1, p2, p3);
    _mm_storeu_ps(c0 + o, p0);
    _mm_storeu_ps(c1 + o, p1);
    _mm_storeu_ps(c2 + o, p2);
  }
  for (; o < out_w; ++o) {
    alignas(16) float v[4];
    _mm_store_ps(v, pixel(o));
    c0[o] = v[0];
    c1[o] = v[1];
    c2[o] = v[2];
  }
}

void vpass_f32_avx512(const float* src, int64_t row_stride, const float* wy, int taps, int64_t out_w, int64_t ld,
                      const float* scale, const float* bias, float* const* dst) {
  for (int p = 0; p < 3; ++p) {
    const float* base = src + p * ld;
    float* d = dst[p];
    const __m512 s = _mm512_set1_ps(scale[p]), b = _mm512_set1_ps(bias[p]);
    int64_t o = 0;
    for (; o + 32 <= out_w; o += 32) {
      const __m512 w0 = _mm512_set1_ps(wy[0]);
      __m512 a0 = _mm512_mul_ps(w0, _mm512_loadu_ps(base + o));
      __m512 a1 = _mm512_mul_ps(w0, _mm512_loadu_ps(base + o + 16));
      for (int k = 1; k < taps; ++k) {
        const __m512 wk = _mm512_set1_ps(wy[k]);
        const float* r = base + k * row_stride + o;
        a0 = _mm512_fmadd_ps(wk, _mm512_loadu_ps(r), a0);
        a1 = _mm512_fmadd_ps(wk, _mm512_loadu_ps(r + 16), a1);
      }
      _mm512_storeu_ps(d + o, _mm512_fmadd_ps(a0, s, b));
      _mm512_storeu_ps(d + o + 16, _mm512_fmadd_ps(a1, s, b));
    }
    // Rows are ld >= round_up(out_w, 16) floats: full-vector loads stay inside.
    for (; o < out_w; o += 16) {
      __m512 a = _mm512_mul_ps(_mm512_set1_ps(wy[0]), _mm512_loadu_ps(base + o));
      for (int k = 1; k < taps; ++k)
        a = _mm512_fmadd_ps(_mm512_set1_ps(wy[k]), _mm512_loadu_ps(base + k * row_stride + o), a);
      const int64_t left = out_w - o;
      const __mmask16 m = left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
      _mm512_mask_storeu_ps(d + o, m, _mm512_fmadd_ps(a, s, b));
    }
  }
}

}  // namespace preprocess
}  // namespace engine
