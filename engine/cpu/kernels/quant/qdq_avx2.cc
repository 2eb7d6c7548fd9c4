// QuantizeLinear / DequantizeLinear runs, AVX2, 8 floats per step.
//   quantize:   y = cvt_round_even(min(max(x / scale, lo - zp), hi - zp)) + zp
//   dequantize: y = float(int32(x) - zp) * scale
// Bit-identical to quantize_one / dequantize_one (quant_kernels.h): a true
// division (not a reciprocal multiply, which rounds differently and is not
// what ONNX Runtime computes), maxps/minps with the scalar's operand order,
// and cvtps2dq under the default round-to-nearest-even mode. Tails use the
// scalar helpers.
#include <immintrin.h>

#include <limits>

#include "cpu/kernels/quant/quant_kernels.h"
#include "cpu/simd/vec_avx2.h"

namespace engine::qk {
namespace {

// 8 int32 in [lo, hi] of T to 8 bytes.
template <typename T>
inline void store8(T* y, __m256i v) {
  __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  __m128i b = std::numeric_limits<T>::is_signed ? _mm_packs_epi16(w, w) : _mm_packus_epi16(w, w);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(y), b);
}

// quantize_one on 8 floats: the division, the clamp with the scalar's
// operand order, round-to-nearest-even, the zero point.
template <typename T>
struct Quantize8 {
  __m256 s, lo, hi;
  __m256i z;
  Quantize8(float scale, int32_t zp)
      : s(_mm256_set1_ps(scale)),
        lo(_mm256_set1_ps(static_cast<float>(static_cast<int32_t>(std::numeric_limits<T>::lowest()) - zp))),
        hi(_mm256_set1_ps(static_cast<float>(static_cast<int32_t>(std::numeric_limits<T>::max()) - zp))),
        z(_mm256_set1_epi32(zp)) {}
  void store(T* y, __m256 x) const {
    const __m256 v = _mm256_min_ps(_mm256_max_ps(_mm256_div_ps(x, s), lo), hi);
    store8(y, _mm256_add_epi32(_mm256_cvtps_epi32(v), z));
  }
};

template <typename T>
void quantize_run(const float* x, T* y, int64_t n, float scale, int32_t zp) {
  const Quantize8<T> q(scale, zp);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) q.store(y + i, _mm256_loadu_ps(x + i));
  for (; i < n; ++i) y[i] = quantize_one<T>(x[i], scale, zp);
}

template <typename T>
void dequantize_run(const T* x, float* y, int64_t n, float scale, int32_t zp) {
  const __m256 s = _mm256_set1_ps(scale);
  const __m256i z = _mm256_set1_epi32(zp);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(x + i));
    __m256i v = std::numeric_limits<T>::is_signed ? _mm256_cvtepi8_epi32(b) : _mm256_cvtepu8_epi32(b);
    v = _mm256_sub_epi32(v, z);
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_cvtepi32_ps(v), s));
  }
  for (; i < n; ++i) y[i] = dequantize_one<T>(x[i], scale, zp);
}

// QAdd, 8 elements per step: the dequantize_run and quantize_run steps
// above back to back (each product rounded before the add: the compiler
// may not contract it into an FMA, hence the asm barrier), the quotient in
// the form p.quotient names (quant_kernels.h: QAddKernel checks the
// reciprocal forms on every input pair before it uses them).
template <QAddQuotient kQ>
void qadd_run(const int8_t* a, const int8_t* b, int8_t* y, int64_t n, const QAddParams& p) {
  const __m256 sa = _mm256_set1_ps(p.a_scale), sb = _mm256_set1_ps(p.b_scale), sy = _mm256_set1_ps(p.y_scale);
  const __m256 ry = _mm256_set1_ps(p.y_rcp);
  const __m256i za = _mm256_set1_epi32(p.a_zp), zb = _mm256_set1_epi32(p.b_zp), zy = _mm256_set1_epi32(p.y_zp);
  const __m256 lo = _mm256_set1_ps(static_cast<float>(-128 - p.y_zp));
  const __m256 hi = _mm256_set1_ps(static_cast<float>(127 - p.y_zp));
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i ai = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(a + i)));
    const __m256i bi = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + i)));
    __m256 va = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(ai, za)), sa);
    __m256 vb = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(bi, zb)), sb);
    __asm__("" : "+x"(va), "+x"(vb));
    __m256 v = _mm256_add_ps(va, vb);
    if (p.relu) v = _mm256_max_ps(v, _mm256_setzero_ps());
    __m256 q;
    if constexpr (kQ == QAddQuotient::kDivide) {
      q = _mm256_div_ps(v, sy);
    } else if constexpr (kQ == QAddQuotient::kReciprocal) {
      q = _mm256_mul_ps(v, ry);
    } else {
      const __m256 q0 = _mm256_mul_ps(v, ry);
      q = _mm256_fmadd_ps(_mm256_fnmadd_ps(q0, sy, v), ry, q0);
    }
    q = _mm256_min_ps(_mm256_max_ps(q, lo), hi);
    store8(y + i, _mm256_add_epi32(_mm256_cvtps_epi32(q), zy));
  }
  for (; i < n; ++i) y[i] = qadd_one(a[i], b[i], p);
}

}  // namespace

void qadd_run_s8_avx2(const int8_t* a, const int8_t* b, int8_t* y, int64_t n, const QAddParams& p) {
  switch (p.quotient) {
    case QAddQuotient::kReciprocal: return qadd_run<QAddQuotient::kReciprocal>(a, b, y, n, p);
    case QAddQuotient::kRefined: return qadd_run<QAddQuotient::kRefined>(a, b, y, n, p);
    case QAddQuotient::kDivide: return qadd_run<QAddQuotient::kDivide>(a, b, y, n, p);
  }
}

void quantize_run_s8_avx2(const float* x, int8_t* y, int64_t n, float scale, int32_t zp) {
  quantize_run<int8_t>(x, y, n, scale, zp);
}
void quantize_run_u8_avx2(const float* x, uint8_t* y, int64_t n, float scale, int32_t zp) {
  quantize_run<uint8_t>(x, y, n, scale, zp);
}
// quantize_run<int8_t>'s steps on act(x + bias): the float add, then the
// SIMD layer's Relu, max(0, v) with 0 first (maxps returns its second
// operand for a NaN, so a NaN stays NaN and quantizes as the unfused Q does).
void fused_quantize_run_s8_avx2(const float* x, int8_t* y, int64_t n, float bias, bool relu, float scale,
                                int32_t zp) {
  const Quantize8<int8_t> q(scale, zp);
  const __m256 b = _mm256_set1_ps(bias);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_add_ps(_mm256_loadu_ps(x + i), b);
    q.store(y + i, relu ? simd::avx2::relu(v) : v);
  }
  if (i < n) fused_quantize_run_s8_ref(x + i, y + i, n - i, bias, relu, scale, zp);
}

// FusedChannelBias: act(x + bias) in float, the same two operations.
void fused_channel_bias_run_f32_avx2(const float* x, float* y, int64_t n, float bias, bool relu) {
  const __m256 b = _mm256_set1_ps(bias);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_add_ps(_mm256_loadu_ps(x + i), b);
    _mm256_storeu_ps(y + i, relu ? simd::avx2::relu(v) : v);
  }
  if (i < n) fused_channel_bias_run_f32_ref(x + i, y + i, n - i, bias, relu);
}

void dequantize_run_s8_avx2(const int8_t* x, float* y, int64_t n, float scale, int32_t zp) {
  dequantize_run<int8_t>(x, y, n, scale, zp);
}
void dequantize_run_u8_avx2(const uint8_t* x, float* y, int64_t n, float scale, int32_t zp) {
  dequantize_run<uint8_t>(x, y, n, scale, zp);
}

}  // namespace engine::qk
