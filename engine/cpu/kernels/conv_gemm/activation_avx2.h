// AVX2 activations of the conv_gemm epilogue, 8 floats at a time: thin
// functors over simd/vec_avx2.h, the same functions the standalone
// elementwise ops use, so a fused activation gives bit-identical results to
// Conv followed by the activation. Include only from *_avx2.cc files.
#pragma once

#include <immintrin.h>

#include "cpu/kernels/conv_gemm/conv_gemm.h"
#include "cpu/simd/vec_avx2.h"

namespace engine {
namespace conv_gemm {

// The activation as a functor per kind, so callers hoist the switch out of
// their loops (see apply_act).
template <Act A>
struct ActOp {
  __m256 p0, p1;
  explicit ActOp(const Activation& a) : p0(_mm256_set1_ps(a.p0)), p1(_mm256_set1_ps(a.p1)) {}
  __m256 operator()(__m256 x) const {
    namespace v = simd::avx2;
    if constexpr (A == Act::kNone) return x;
    if constexpr (A == Act::kRelu) return v::relu(x);
    if constexpr (A == Act::kClip) return v::clip(x, p0, p1);
    if constexpr (A == Act::kLeakyRelu) return v::leaky_relu(x, p0);
    if constexpr (A == Act::kSigmoid) return v::sigmoid(x);
    if constexpr (A == Act::kHardSwish) return v::hard_swish(x);
    if constexpr (A == Act::kSiLU) return v::silu(x);
    if constexpr (A == Act::kGelu) return v::gelu(x);
    if constexpr (A == Act::kGeluTanh) return v::gelu_tanh(x);
    if constexpr (A == Act::kHardSigmoid) return v::hard_sigmoid(x, p0, p1);
    return x;
  }
};

// Calls f(ActOp<kind>{act}) with the kind resolved at compile time.
template <typename F>
inline void with_act(const Activation& act, F&& f) {
  switch (act.kind) {
    case Act::kNone: f(ActOp<Act::kNone>(act)); break;
    case Act::kRelu: f(ActOp<Act::kRelu>(act)); break;
    case Act::kClip: f(ActOp<Act::kClip>(act)); break;
    case Act::kLeakyRelu: f(ActOp<Act::kLeakyRelu>(act)); break;
    case Act::kSigmoid: f(ActOp<Act::kSigmoid>(act)); break;
    case Act::kHardSwish: f(ActOp<Act::kHardSwish>(act)); break;
    case Act::kSiLU: f(ActOp<Act::kSiLU>(act)); break;
    case Act::kGelu: f(ActOp<Act::kGelu>(act)); break;
    case Act::kGeluTanh: f(ActOp<Act::kGeluTanh>(act)); break;
    case Act::kHardSigmoid: f(ActOp<Act::kHardSigmoid>(act)); break;
  }
}

// Masks for partial vectors: lane i is on when i < count (0..8).
inline __m256i tail_mask(int count) {
  alignas(32) static const int32_t kTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kTable + 8 - count));
}

}  // namespace conv_gemm
}  // namespace engine
