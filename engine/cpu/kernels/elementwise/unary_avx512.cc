// AVX-512 unary loops for the float32 activations: the ops of unary_avx2.cc
// on 16 lanes, with the functions of cpu/simd/vec_avx512.h (op for op the
// AVX2 ones, so both tiers and the fused conv/gemm epilogues give
// bit-identical results). Four vectors per step; the tail is one masked
// vector (AVX-512 masked loads and stores are cheap and fault-free).
#include "cpu/kernels/elementwise/elementwise.h"
#include "cpu/simd/vec_avx512.h"

namespace engine {
namespace eltwise {
namespace {

namespace v = simd::avx512;
using simd::avx512::v_set;

template <typename Op>
void unary_loop(const void* xv, void* yv, int64_t n, const UnaryParams& p) {
  const float* x = static_cast<const float*>(xv);
  float* y = static_cast<float*>(yv);
  const Op op(p);
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const __m512 a = op(_mm512_loadu_ps(x + i));
    const __m512 b = op(_mm512_loadu_ps(x + i + 16));
    const __m512 c = op(_mm512_loadu_ps(x + i + 32));
    const __m512 d = op(_mm512_loadu_ps(x + i + 48));
    _mm512_storeu_ps(y + i, a);
    _mm512_storeu_ps(y + i + 16, b);
    _mm512_storeu_ps(y + i + 32, c);
    _mm512_storeu_ps(y + i + 48, d);
  }
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, op(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 m = v::tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, op(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

struct Relu {
  explicit Relu(const UnaryParams&) {}
  __m512 operator()(__m512 x) const { return v::relu(x); }
};
struct LeakyRelu {
  __m512 alpha;
  explicit LeakyRelu(const UnaryParams& p) : alpha(v_set(p.alpha)) {}
  __m512 operator()(__m512 x) const { return v::leaky_relu(x, alpha); }
};
struct Clip {
  __m512 lo, hi;
  explicit Clip(const UnaryParams& p) : lo(v_set(p.alpha)), hi(v_set(p.beta)) {}
  __m512 operator()(__m512 x) const { return v::clip(x, lo, hi); }
};
struct Sigmoid {
  explicit Sigmoid(const UnaryParams&) {}
  __m512 operator()(__m512 x) const { return v::sigmoid(x); }
};
struct HardSigmoid {
  __m512 alpha, beta;
  explicit HardSigmoid(const UnaryParams& p) : alpha(v_set(p.alpha)), beta(v_set(p.beta)) {}
  __m512 operator()(__m512 x) const { return v::hard_sigmoid(x, alpha, beta); }
};
struct HardSwish {
  explicit HardSwish(const UnaryParams&) {}
  __m512 operator()(__m512 x) const { return v::hard_swish(x); }
};
struct Tanh {
  explicit Tanh(const UnaryParams&) {}
  __m512 operator()(__m512 x) const { return v::v_tanh(x); }
};
struct Gelu {
  explicit Gelu(const UnaryParams&) {}
  __m512 operator()(__m512 x) const { return v::gelu(x); }
};
struct GeluTanh {
  explicit GeluTanh(const UnaryParams&) {}
  __m512 operator()(__m512 x) const { return v::gelu_tanh(x); }
};
struct Exp {
  explicit Exp(const UnaryParams&) {}
  __m512 operator()(__m512 x) const { return v::v_exp(x); }
};
struct Erf {
  explicit Erf(const UnaryParams&) {}
  __m512 operator()(__m512 x) const { return v::v_erf(x); }
};

}  // namespace

UnaryFn unary_avx512(Unary op, DType t) {
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
