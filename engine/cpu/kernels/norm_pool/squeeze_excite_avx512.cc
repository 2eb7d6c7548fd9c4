// AVX-512 steps of SqueezeExcite (squeeze_excite.cc has the kernel and the
// reference loops): the pooled row sums (AVX-512 only; AVX2 uses row_sum_f32_avx2), the GEMV dot products of the gate and
// the per-row scaling, 16 lanes, tails on masked loads. The gate's Relu,
// Sigmoid and HardSigmoid run on c + cr scalars with the reference formulas
// (simd/vec_scalar.h), so only summation order differs from the reference.
#include "cpu/kernels/norm_pool/norm_pool.h"
#include "cpu/simd/vec_avx512.h"
#include "cpu/simd/vec_scalar.h"

namespace engine {
namespace {

inline __m512 load_tail(const float* P, int64_t R) { return _mm512_maskz_loadu_ps(simd::avx512::tail_mask(R), P); }
inline void store_tail(float* P, int64_t R, __m512 V) { _mm512_mask_storeu_ps(P, simd::avx512::tail_mask(R), V); }

// sum_i a[i] * b[i], four accumulators.
float dot(const float* a, const float* b, int64_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 4 * 16 <= n; i += 4 * 16) {
    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), a0);
    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), a1);
    a2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 2 * 16), _mm512_loadu_ps(b + i + 2 * 16), a2);
    a3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 3 * 16), _mm512_loadu_ps(b + i + 3 * 16), a3);
  }
  for (; i + 16 <= n; i += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), a0);
  if (i < n) a1 = _mm512_fmadd_ps(load_tail(a + i, n - i), load_tail(b + i, n - i), a1);
  return simd::avx512::hsum(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

}  // namespace

float row_sum_f32_avx512(const float* x, int64_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 4 * 16 <= n; i += 4 * 16) {
    a0 = _mm512_add_ps(a0, _mm512_loadu_ps(x + i));
    a1 = _mm512_add_ps(a1, _mm512_loadu_ps(x + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_loadu_ps(x + i + 2 * 16));
    a3 = _mm512_add_ps(a3, _mm512_loadu_ps(x + i + 3 * 16));
  }
  for (; i + 16 <= n; i += 16) a0 = _mm512_add_ps(a0, _mm512_loadu_ps(x + i));
  if (i < n) a1 = _mm512_add_ps(a1, load_tail(x + i, n - i));
  return simd::avx512::hsum(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

void squeeze_excite_gate_f32_avx512(const float* s, const float* w1, const float* b1, const float* w2,
                                  const float* b2, int64_t c, int64_t cr, const SeGate& gate, float* h, float* g) {
  for (int64_t j = 0; j < cr; ++j) h[j] = simd::scalar::relu(dot(w1 + j * c, s, c) + b1[j]);
  for (int64_t k = 0; k < c; ++k) {
    const float v = dot(w2 + k * cr, h, cr) + b2[k];
    g[k] = gate.kind == 0 ? simd::scalar::sigmoid(v) : simd::scalar::hard_sigmoid(v, gate.alpha, gate.beta);
  }
}

namespace {

// One row: y = act(x * k (+ z)). Relu as max(0, v), the reference's
// operand order (simd::scalar::relu maps NaN to NaN; maxps(0, NaN) = NaN).
template <bool kZ, bool kRelu>
void scale_row(const float* xr, __m512 k, const float* zr, int64_t n, float* yr) {
  auto f = [&](__m512 v, int64_t i, bool tail, int64_t r) {
    v = _mm512_mul_ps(v, k);
    if constexpr (kZ) v = _mm512_add_ps(v, tail ? load_tail(zr + i, r) : _mm512_loadu_ps(zr + i));
    if constexpr (kRelu) v = _mm512_max_ps(_mm512_setzero_ps(), v);
    return v;
  };
  int64_t i = 0;
  for (; i + 2 * 16 <= n; i += 2 * 16) {
    _mm512_storeu_ps(yr + i, f(_mm512_loadu_ps(xr + i), i, false, 0));
    _mm512_storeu_ps(yr + i + 16, f(_mm512_loadu_ps(xr + i + 16), i + 16, false, 0));
  }
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(yr + i, f(_mm512_loadu_ps(xr + i), i, false, 0));
  if (i < n) store_tail(yr + i, n - i, f(load_tail(xr + i, n - i), i, true, n - i));
}

}  // namespace

void squeeze_excite_scale_f32_avx512(const float* x, const float* g, const float* z, bool relu, int64_t rows,
                                   int64_t n, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const __m512 k = _mm512_set1_ps(g[r]);
    const float* zr = z ? z + r * n : nullptr;
    if (z && relu) scale_row<true, true>(x + r * n, k, zr, n, y + r * n);
    else if (z) scale_row<true, false>(x + r * n, k, zr, n, y + r * n);
    else if (relu) scale_row<false, true>(x + r * n, k, zr, n, y + r * n);
    else scale_row<false, false>(x + r * n, k, zr, n, y + r * n);
  }
}

}  // namespace engine
