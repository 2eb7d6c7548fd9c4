// AVX2 unary loops for the float32 activations on the hot path of CNNs:
// relu, leaky_relu, clip, sigmoid, hard_sigmoid, hard_swish, tanh, gelu
// (erf and tanh forms), exp, erf. Same formulas as unary_ref.cc; the
// functions come from cpu/simd/vec_avx2.h (1-2 ulp), the same ones the conv/gemm
// epilogues fuse, so fused and standalone activations agree bit for bit.
// Eight lanes per step, four steps unrolled for latency hiding; the tail
// runs the same vector code on a masked load/store, so every element of a
// tensor gets bit-identical treatment wherever it sits.
// Comparison-based ops (relu, leaky_relu, clip) are written with the operand
// order that makes maxps/minps agree with the reference bit for bit,
// including NaN and -0.
#include "cpu/kernels/elementwise/elementwise.h"
#include "cpu/simd/vec_avx2.h"

namespace engine {
namespace eltwise {
namespace {

namespace v = simd::avx2;
using simd::avx2::tail_mask;
using simd::avx2::v_set;

template <typename Op>
void unary_loop(const void* xv, void* yv, int64_t n, const UnaryParams& p) {
  const float* x = static_cast<const float*>(xv);
  float* y = static_cast<float*>(yv);
  const Op op(p);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256 a = op(_mm256_loadu_ps(x + i));
    const __m256 b = op(_mm256_loadu_ps(x + i + 8));
    const __m256 c = op(_mm256_loadu_ps(x + i + 16));
    const __m256 d = op(_mm256_loadu_ps(x + i + 24));
    _mm256_storeu_ps(y + i, a);
    _mm256_storeu_ps(y + i + 8, b);
    _mm256_storeu_ps(y + i + 16, c);
    _mm256_storeu_ps(y + i + 24, d);
  }
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, op(_mm256_loadu_ps(x + i)));
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    _mm256_maskstore_ps(y + i, m, op(_mm256_maskload_ps(x + i, m)));
  }
}

struct Relu {
  explicit Relu(const UnaryParams&) {}
  __m256 operator()(__m256 x) const { return v::relu(x); }
};
struct LeakyRelu {
  __m256 alpha;
  explicit LeakyRelu(const UnaryParams& p) : alpha(v_set(p.alpha)) {}
  __m256 operator()(__m256 x) const {
    return v::leaky_relu(x, alpha);
  }
};
struct Clip {
  __m256 lo, hi;
  explicit Clip(const UnaryParams& p) : lo(v_set(p.alpha)), hi(v_set(p.beta)) {}
  __m256 operator()(__m256 x) const { return v::clip(x, lo, hi); }
};
struct Sigmoid {
  explicit Sigmoid(const UnaryParams&) {}
  __m256 operator()(__m256 x) const { return v::sigmoid(x); }
};
struct HardSigmoid {
  __m256 alpha, beta;
  explicit HardSigmoid(const UnaryParams& p) : alpha(v_set(p.alpha)), beta(v_set(p.beta)) {}
  __m256 operator()(__m256 x) const {
    return v::hard_sigmoid(x, alpha, beta);
  }
};
struct HardSwish {
  explicit HardSwish(const UnaryParams&) {}
  __m256 operator()(__m256 x) const {
    return v::hard_swish(x);
  }
};
struct Tanh {
  explicit Tanh(const UnaryParams&) {}
  __m256 operator()(__m256 x) const { return v::v_tanh(x); }
};
struct Gelu {
  explicit Gelu(const UnaryParams&) {}
  __m256 operator()(__m256 x) const {
    return v::gelu(x);
  }
};
struct GeluTanh {
  explicit GeluTanh(const UnaryParams&) {}
  __m256 operator()(__m256 x) const {
    return v::gelu_tanh(x);
  }
};
struct Exp {
  explicit Exp(const UnaryParams&) {}
  __m256 operator()(__m256 x) const { return v::v_exp(x); }
};
struct Erf {
  explicit Erf(const UnaryParams&) {}
  __m256 operator()(__m256 x) const { return v::v_erf(x); }
};

}  // namespace

UnaryFn unary_avx2(Unary op, DType t) {
  if (t != DType::kFloat32) return nullptr;
  switch (op) {
    case Unary::kRelu: return unary_loop<Relu>;
    case Unary::kLeakyRelu: return unary_loop<LeakyRelu>;
    case Unary::kClip: return unary_loop<Clip>;
    case Unary::kSigmoid: return unary_loop<Sigmoid>;
    case Unary::kHardSigmoid: return unary_loop<HardSigmoid>;
    case Unary::kHardSwish: return unary_loop<HardSwish>;
    case Unary::kTanh: return unary_loop<Tanh>;
    case Unary::kGelu: return unary_loop<Gelu>;
    case Unary::kGeluTanh: return unary_loop<GeluTanh>;
    case Unary::kExp: return unary_loop<Exp>;
    case Unary::kErf: return unary_loop<Erf>;
    default: return nullptr;
  }
}

}  // namespace eltwise
}  // namespace engine
