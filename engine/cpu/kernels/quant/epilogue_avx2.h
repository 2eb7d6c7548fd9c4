// The int8 conv / gemm epilogue (quant_kernels.h, epilogue_one) on 8 AVX2
// lanes: the same operations in the same order, so the same bits. Shared by
// qconv_avx2.cc and qdepthwise_avx2.cc.
// Include only from *_avx2*.cc / *_avx512*.cc files; internal linkage.
#pragma once

#include <immintrin.h>

#include "cpu/kernels/quant/quant_kernels.h"

namespace engine::qk {
namespace {

// Keeps a product from being contracted into an FMA with the next add
// (epilogue_one rounds the product first).
inline __m256 no_contract8(__m256 v) {
  __asm__("" : "+x"(v));
  return v;
}

// The epilogue on 8 lanes; `mul`, `bi`, `bf` are the per-channel terms
// (broadcast for conv, per lane for gemm). Same operations, same order as
// epilogue_one().
inline void epilogue8(const Epilogue& e, __m256i acc, __m256 mul, __m256i bi, __m256 bf, int64_t idx) {
  if (e.bias_i32) acc = _mm256_add_epi32(acc, bi);
  __m256 v = no_contract8(_mm256_mul_ps(_mm256_cvtepi32_ps(acc), mul));
  if (e.bias_f32) v = _mm256_add_ps(v, bf);
  if (e.z_f32) {
    v = _mm256_add_ps(v, _mm256_loadu_ps(e.z_f32 + idx));
  } else if (e.z_s8) {
    __m128i z8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(e.z_s8 + idx));
    __m256 z = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(z8));
    v = _mm256_add_ps(v, no_contract8(_mm256_mul_ps(z, _mm256_set1_ps(e.z_scale))));
  }
  if (e.act == Act::kRelu) {
    v = _mm256_max_ps(v, _mm256_setzero_ps());
  } else if (e.act == Act::kClip) {
    v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(e.act_lo)), _mm256_set1_ps(e.act_hi));
  }
  if (e.requant) {
    __m256 q = _mm256_div_ps(v, _mm256_set1_ps(e.y_scale));
    q = _mm256_min_ps(_mm256_max_ps(q, _mm256_set1_ps(-128.f)), _mm256_set1_ps(127.f));
    __m256i qi = _mm256_cvtps_epi32(q);
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

}  // namespace
}  // namespace engine::qk
