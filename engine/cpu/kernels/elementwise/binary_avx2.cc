// AVX2 binary loops for float32 add, sub, mul, div, max, min:
// y[i] = f(a[i*sa], b[i*sb]), with a stride-0 operand broadcast into a
// register once per row (the scalar and per-channel cases of broadcast.h).
// Results are bit-identical to binary_ref.cc: each op is a single IEEE
// operation, and max/min add a NaN fix-up (maxps alone would return b when
// only a is NaN) while keeping maxps's a > b ? a : b order for zeros.
#include "cpu/kernels/elementwise/elementwise.h"
#include "cpu/simd/vec_avx2.h"

namespace engine {
namespace eltwise {
namespace {

using simd::avx2::tail_mask;

struct Add { __m256 operator()(__m256 a, __m256 b) const { return _mm256_add_ps(a, b); } };
struct Sub { __m256 operator()(__m256 a, __m256 b) const { return _mm256_sub_ps(a, b); } };
struct Mul { __m256 operator()(__m256 a, __m256 b) const { return _mm256_mul_ps(a, b); } };
struct Div { __m256 operator()(__m256 a, __m256 b) const { return _mm256_div_ps(a, b); } };
struct Max {
  __m256 operator()(__m256 a, __m256 b) const {
    return simd::avx2::max_nan(a, b);
  }
};
struct Min {
  __m256 operator()(__m256 a, __m256 b) const {
    return simd::avx2::min_nan(a, b);
  }
};

// kA / kB: the operand is contiguous (else one value broadcast to the row).
template <typename Op, bool kA, bool kB>
void run(const float* a, const float* b, float* y, int64_t n) {
  const Op op;
  const __m256 va = kA ? _mm256_setzero_ps() : _mm256_broadcast_ss(a);
  const __m256 vb = kB ? _mm256_setzero_ps() : _mm256_broadcast_ss(b);
  auto la = [&](int64_t i) { return kA ? _mm256_loadu_ps(a + i) : va; };
  auto lb = [&](int64_t i) { return kB ? _mm256_loadu_ps(b + i) : vb; };
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256 r0 = op(la(i), lb(i));
    const __m256 r1 = op(la(i + 8), lb(i + 8));
    const __m256 r2 = op(la(i + 16), lb(i + 16));
    const __m256 r3 = op(la(i + 24), lb(i + 24));
    _mm256_storeu_ps(y + i, r0);
    _mm256_storeu_ps(y + i + 8, r1);
    _mm256_storeu_ps(y + i + 16, r2);
    _mm256_storeu_ps(y + i + 24, r3);
  }
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, op(la(i), lb(i)));
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    const __m256 ta = kA ? _mm256_maskload_ps(a + i, m) : va;
    const __m256 tb = kB ? _mm256_maskload_ps(b + i, m) : vb;
    _mm256_maskstore_ps(y + i, m, op(ta, tb));
  }
}

template <typename Op>
void binary_loop(const void* av, const void* bv, void* yv, int64_t n, int sa, int sb) {
  const float* a = static_cast<const float*>(av);
  const float* b = static_cast<const float*>(bv);
  float* y = static_cast<float*>(yv);
  if (sa && sb) run<Op, true, true>(a, b, y, n);
  else if (sa) run<Op, true, false>(a, b, y, n);
  else if (sb) run<Op, false, true>(a, b, y, n);
  else run<Op, false, false>(a, b, y, n);
}

}  // namespace

BinaryFn binary_avx2(Binary op, DType a, DType b) {
  if (a != DType::kFloat32 || b != DType::kFloat32) return nullptr;
  switch (op) {
    case Binary::kAdd: return binary_loop<Add>;
    case Binary::kSub: return binary_loop<Sub>;
    case Binary::kMul: return binary_loop<Mul>;
    case Binary::kDiv: return binary_loop<Div>;
    case Binary::kMax: return binary_loop<Max>;
    case Binary::kMin: return binary_loop<Min>;
    default: return nullptr;
  }
}

}  // namespace eltwise
}  // namespace engine
