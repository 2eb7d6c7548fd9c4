// AVX-512 pieces shared by the kernels that keep 16 output channels of a
// pixel in one zmm (grouped_oc_avx512.cc, depthwise_avx512.cc): the 16x16
// in-register transpose and the traits grouped_oc.h's algorithm takes
// (Zmm), whose store_tile also writes the depthwise kernel's tiles.
// Internal linkage; include only from *_avx512*.cc files.
#pragma once

#include <immintrin.h>

#include "cpu/kernels/conv_gemm/activation_avx512.h"

namespace engine {
namespace conv_gemm {
namespace {

// The shuffles as their zero-masked forms with every lane kept (the same
// instructions): GCC 12's plain forms pass _mm512_undefined_ps() as the
// unused merge source, which -Wmaybe-uninitialized reports thousands of
// times per translation unit (GCC bug 105593).
constexpr __mmask16 kAll16 = 0xFFFF;
constexpr __mmask8 kAll8 = 0xFF;
// In registers: v[p] = channels 0..15 of pixel p -> v[m] = pixels 0..15 of
// channel m (unpack 32-bit, unpack 64-bit, two 128-bit lane shuffles).
inline void transpose16(__m512 v[16]) {
  __m512 a[16], b[16];
  for (int i = 0; i < 8; ++i) {
    a[2 * i] = _mm512_maskz_unpacklo_ps(kAll16, v[2 * i], v[2 * i + 1]);
    a[2 * i + 1] = _mm512_maskz_unpackhi_ps(kAll16, v[2 * i], v[2 * i + 1]);
  }
  // b[4i + m], lane L: pixels 4i..4i+3 of channel 4L + m.
  for (int i = 0; i < 4; ++i) {
    const __m512d a0 = _mm512_castps_pd(a[4 * i]), a1 = _mm512_castps_pd(a[4 * i + 1]);
    const __m512d a2 = _mm512_castps_pd(a[4 * i + 2]), a3 = _mm512_castps_pd(a[4 * i + 3]);
    b[4 * i] = _mm512_castpd_ps(_mm512_maskz_unpacklo_pd(kAll8, a0, a2));
    b[4 * i + 1] = _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(kAll8, a0, a2));
    b[4 * i + 2] = _mm512_castpd_ps(_mm512_maskz_unpacklo_pd(kAll8, a1, a3));
    b[4 * i + 3] = _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(kAll8, a1, a3));
  }
  for (int m = 0; m < 4; ++m) {
    const __m512 c0 = _mm512_maskz_shuffle_f32x4(kAll16, b[m], b[4 + m], 0x88);
    const __m512 c1 = _mm512_maskz_shuffle_f32x4(kAll16, b[m], b[4 + m], 0xDD);
    const __m512 c2 = _mm512_maskz_shuffle_f32x4(kAll16, b[8 + m], b[12 + m], 0x88);
    const __m512 c3 = _mm512_maskz_shuffle_f32x4(kAll16, b[8 + m], b[12 + m], 0xDD);
    v[m] = _mm512_maskz_shuffle_f32x4(kAll16, c0, c2, 0x88);
    v[8 + m] = _mm512_maskz_shuffle_f32x4(kAll16, c0, c2, 0xDD);
    v[4 + m] = _mm512_maskz_shuffle_f32x4(kAll16, c1, c3, 0x88);
    v[12 + m] = _mm512_maskz_shuffle_f32x4(kAll16, c1, c3, 0xDD);
  }
}

struct Zmm {
  using Vec = __m512;
  static constexpr int kOC = 16;
  // 16 accumulators; each broadcast input is an FMA operand. (Two blocks of
  // channels per tile, each broadcast feeding two FMAs, measured the same
  // on Zen 4 with 12 pixels and slower with 14: the loop is not bound by
  // its loads, one per FMA.)
  static constexpr int kPixels = 16;
  static __m512 bias(const float* b, int n) { return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1u), b); }
  static __m512 load(const float* p) { return _mm512_load_ps(p); }
  static __m512 zero() { return _mm512_setzero_ps(); }
  static __m512 fma_bcast(__m512 w, const float* x, __m512 acc) { return _mm512_fmadd_ps(w, _mm512_set1_ps(*x), acc); }
  static void store(float* p, __m512 v) { _mm512_store_ps(p, v); }
  template <typename Op>
  static void store_tile(const float* t, int oc_valid, int n, int64_t out_plane, const float* z, float* y,
                         const Op& op) {
    __m512 v[16];
    for (int p = 0; p < 16; ++p) v[p] = _mm512_load_ps(t + p * 16);
    transpose16(v);
    const __mmask16 lanes = static_cast<__mmask16>((1u << n) - 1u);
    for (int m = 0; m < oc_valid; ++m) {
      __m512 a = v[m];
      if (z) a = _mm512_add_ps(a, _mm512_maskz_loadu_ps(lanes, z + m * out_plane));
      _mm512_mask_storeu_ps(y + m * out_plane, lanes, op(a));
    }
  }
  template <typename F>
  static void with_act(const Activation& act, F&& f) {
    with_act512(act, f);
  }
};

}  // namespace
}  // namespace conv_gemm
}  // namespace engine
