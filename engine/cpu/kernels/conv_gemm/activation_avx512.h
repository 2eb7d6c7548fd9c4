// AVX-512 activations of the conv_gemm epilogue, 16 floats at a time: thin
// functors over simd/vec_avx512.h, which computes op for op what
// vec_avx2.h does, so the AVX-512 epilogue, the AVX2 one and the standalone
// elementwise ops agree bit for bit. Include only from *_avx512*.cc files.
#pragma once

#include <immintrin.h>

#include "cpu/kernels/conv_gemm/conv_gemm.h"
#include "cpu/simd/vec_avx512.h"

namespace engine {
namespace conv_gemm {
namespace {

template <Act A>
struct ActOp512 {
  __m512 p0, p1;
  explicit ActOp512(const Activation& a) : p0(_mm512_set1_ps(a.p0)), p1(_mm512_set1_ps(a.p1)) {}
  __m512 operator()(__m512 x) const {
    namespace v = simd::avx512;
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

// Calls f(ActOp512<kind>{act}) with the kind resolved at compile time.
template <typename F>
inline void with_act512(const Activation& act, F&& f) {
  switch (act.kind) {
    case Act::kNone: f(ActOp512<Act::kNone>(act)); break;
    case Act::kRelu: f(ActOp512<Act::kRelu>(act)); break;
    case Act::kClip: f(ActOp512<Act::kClip>(act)); break;
    case Act::kLeakyRelu: f(ActOp512<Act::kLeakyRelu>(act)); break;
    case Act::kSigmoid: f(ActOp512<Act::kSigmoid>(act)); break;
    case Act::kHardSwish: f(ActOp512<Act::kHardSwish>(act)); break;
    case Act::kSiLU: f(ActOp512<Act::kSiLU>(act)); break;
    case Act::kGelu: f(ActOp512<Act::kGelu>(act)); break;
    case Act::kGeluTanh: f(ActOp512<Act::kGeluTanh>(act)); break;
    case Act::kHardSigmoid: f(ActOp512<Act::kHardSigmoid>(act)); break;
  }
}

}  // namespace
}  // namespace conv_gemm
}  // namespace engine
