// The AVX2 QConv u8 path's 4x16 microkernel, over its 4-byte dot product.
//
// AVX2 forms each k group's sum in three steps (qconv_avx2.cc's MaddubsDot:
// vpmaddubsw, u8 x s8 pairs into int16, exact for inputs in 0..127;
// vpmaddwd with ones, the two pairs into int32; vpaddd). vpdpbusd on ymm
// does all three in one: the same 4-byte dot product, accumulated, exactly
// (int32, no saturation). Same operands (panels [k/4][16][4] u8, weight
// tiles [k/4][4][4] s8, both packed as for the u8 path), same tile, same
// sums: the outputs are the maddubsw kernel's bits.
//
// vpdpbusd's two encodings of one source: AVX-VNNI's VEX form
// (qconv_u8dot_avxvnni.cc; Alder Lake and later clients, Sierra Forest:
// CPUs without AVX-512) and AVX512-VNNI's EVEX form on ymm
// (qconv_u8dot_evex_avx512vnni.cc), which the AVX512-VNNI machines this
// was written on run, so that the tests check the kernel there
// (dispatch.h, AvxVnniUse).
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "cpu/kernels/quant/quant_kernels.h"

namespace engine::qk {

// Dot::add(acc, x, w) = acc + the 4-byte dot products of u8 x and s8 w.
// Row r of the tile is weight row r (a: kq k groups of [kU8MR][4] s8), its
// 16 columns the panel's (k group p's 64 bytes at bptr(p): a packed
// panel's, b + 64 p, or the quad planes', b + off[p], qconv_tiled.h).
template <class Dot>
struct U8DotKernel {
  template <class BPtr>
  static void run(const int8_t* a, BPtr bptr, int64_t kq, int32_t* c) {
    __m256i acc[kU8MR][2];
#pragma GCC unroll 4
    for (int r = 0; r < kU8MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
    for (int64_t p = 0; p < kq; ++p) {
      const uint8_t* b = bptr(p);
      const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b));
      const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 32));
#pragma GCC unroll 4
      for (int r = 0; r < kU8MR; ++r) {
        int32_t w;
        std::memcpy(&w, a + 4 * r, 4);
        const __m256i av = _mm256_set1_epi32(w);
        acc[r][0] = Dot::add(acc[r][0], b0, av);
        acc[r][1] = Dot::add(acc[r][1], b1, av);
      }
      a += 4 * kU8MR;
    }
    // Lanes of acc[r][0] are columns 0-7, of acc[r][1] columns 8-15 (a
    // 4-byte k group per column, in column order: the pack's layout).
#pragma GCC unroll 4
    for (int r = 0; r < kU8MR; ++r) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + 16 * r), acc[r][0]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + 16 * r + 8), acc[r][1]);
    }
  }
  static void panel(const int8_t* a, const uint8_t* b, int64_t kq, int32_t* c) {
    run(a, [b](int64_t p) { return b + 64 * p; }, kq, c);
  }
  static void quads(const int8_t* a, const uint8_t* b, const int64_t* off, int64_t kq, int32_t* c) {
    run(a, [b, off](int64_t p) { return b + off[p]; }, kq, c);
  }
};

}  // namespace engine::qk
