// Helpers that write runs of B columns into the panel layout of the packed
// SGEMM (see conv_gemm.h): column i of row `drow` (the row's first panel)
// lives at drow + (i / kNR) * kNR * kc + i % kNR. Include only from
// *_avx2.cc files.
#pragma once

#include <immintrin.h>

#include "cpu/kernels/conv_gemm/conv_gemm.h"

namespace engine {
namespace conv_gemm {

// Columns [i, i+len) <- src[0], src[1], ... (contiguous).
inline void put_run(float* drow, int64_t kc, int64_t i, const float* src, int64_t len) {
  while (len > 0) {
    const int64_t j = i % kNR;
    const int64_t l = std::min(len, kNR - j);
    float* d = drow + (i / kNR) * kNR * kc + j;
    if (l == kNR) {
      _mm256_store_ps(d, _mm256_loadu_ps(src));
      _mm256_store_ps(d + 8, _mm256_loadu_ps(src + 8));
    } else {
      for (int64_t e = 0; e < l; ++e) d[e] = src[e];
    }
    i += l;
    src += l;
    len -= l;
  }
}

// Columns [i, i+len) <- src[0], src[stride], ...
inline void put_strided(float* drow, int64_t kc, int64_t i, const float* src, int64_t stride, int64_t len) {
  while (len > 0) {
    const int64_t j = i % kNR;
    const int64_t l = std::min(len, kNR - j);
    float* d = drow + (i / kNR) * kNR * kc + j;
    for (int64_t e = 0; e < l; ++e) d[e] = src[e * stride];
    i += l;
    src += l * stride;
    len -= l;
  }
}

// Columns [i, i+len) <- 0.
inline void put_zero(float* drow, int64_t kc, int64_t i, int64_t len) {
  while (len > 0) {
    const int64_t j = i % kNR;
    const int64_t l = std::min(len, kNR - j);
    float* d = drow + (i / kNR) * kNR * kc + j;
    if (l == kNR) {
      _mm256_store_ps(d, _mm256_setzero_ps());
      _mm256_store_ps(d + 8, _mm256_setzero_ps());
    } else {
      for (int64_t e = 0; e < l; ++e) d[e] = 0.f;
    }
    i += l;
    len -= l;
  }
}

}  // namespace conv_gemm
}  // namespace engine
