// AVX2 steps of SqueezeExcite (squeeze_excite.cc has the kernel and the
// reference loops): the pooled row sums (AVX-512 only; AVX2 uses row_sum_f32_avx2), the GEMV dot products of the gate and
// the per-row scaling, 8 lanes, tails on masked loads. The gate's Relu,
// Sigmoid and HardSigmoid run on c + cr scalars with the reference formulas
// (simd/vec_scalar.h), so only summation order differs from the reference.
#include "cpu/kernels/norm_pool/norm_pool.h"
#include "cpu/simd/vec_avx2.h"
#include "cpu/simd/vec_scalar.h"

namespace engine {
namespace {

inline __m256 load_tail(const float* P, int64_t R) { return _mm256_maskload_ps(P, simd::avx2::tail_mask(R)); }
inline void store_tail(float* P, int64_t R, __m256 V) { _mm256_maskstore_ps(P, simd::avx2::tail_mask(R), V); }

// sum_i a[i] * b[i], four accumulators.
float dot(const float* a, const float* b, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 4 * 8 <= n; i += 4 * 8) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 2 * 8), _mm256_loadu_ps(b + i + 2 * 8), a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 3 * 8), _mm256_loadu_ps(b + i + 3 * 8), a3);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), a0);
  if (i < n) a1 = _mm256_fmadd_ps(load_tail(a + i, n - i), load_tail(b + i, n - i), a1);
  return simd::avx2::hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}

}  // namespace

void squeeze_excite_gate_f32_avx2(const float* s, const float* w1, const float* b1, const float* w2,
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
void scale_row(const float* xr, __m256 k, const float* zr, int64_t n, float* yr) {
  auto f = [&](__m256 v, int64_t i, bool tail, int64_t r) {
    v = _mm256_mul_ps(v, k);
    if constexpr (kZ) v = _mm256_add_ps(v, tail ? load_tail(zr + i, r) : _mm256_loadu_ps(zr + i));
    if constexpr (kRelu) v = _mm256_max_ps(_mm256_setzero_ps(), v);
    return v;
  };
  int64_t i = 0;
  for (; i + 2 * 8 <= n; i += 2 * 8) {
    _mm256_storeu_ps(yr + i, f(_mm256_loadu_ps(xr + i), i, false, 0));
    _mm256_storeu_ps(yr + i + 8, f(_mm256_loadu_ps(xr + i + 8), i + 8, false, 0));
  }
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(yr + i, f(_mm256_loadu_ps(xr + i), i, false, 0));
  if (i < n) store_tail(yr + i, n - i, f(load_tail(xr + i, n - i), i, true, n - i));
}

}  // namespace

void squeeze_excite_scale_f32_avx2(const float* x, const float* g, const float* z, bool relu, int64_t rows,
                                   int64_t n, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const __m256 k = _mm256_set1_ps(g[r]);
    const float* zr = z ? z + r * n : nullptr;
    if (z && relu) scale_row<true, true>(x + r * n, k, zr, n, y + r * n);
    else if (z) scale_row<true, false>(x + r * n, k, zr, n, y + r * n);
    else if (relu) scale_row<false, true>(x + r * n, k, zr, n, y + r * n);
    else scale_row<false, false>(x + r * n, k, zr, n, y + r * n);
  }
}

}  // namespace engine
