// Reference unary loops: y[i] = f(x[i]), one plain scalar expression per op
// using <cmath>; the activations are cpu/simd/vec_scalar.h's (shared with the
// conv/gemm reference epilogue). These are the fallback on CPUs without AVX2 and the oracle
// the AVX2 loops are tested against, so each formula is the textbook one,
// written the way onnxruntime evaluates it where that matters for rounding:
//   relu      x < 0 ? 0 : x                  (NaN and -0 pass through)
//   clip      min(max(x, lo), hi)            (lo > hi gives hi, as ONNX says)
//   sigmoid   1 / (1 + exp(-x)), or e^x / (1 + e^x) for x < 0 (no large 1 + exp(-x) to round)
//   hardsigmoid max(0, min(1, alpha x + beta)) (NaN stays NaN); hardswish x * hardsigmoid(x; 1/6, 1/2)
//   gelu      0.5 x (1 + erf(x / sqrt 2));  gelu_tanh with tanh(sqrt(2/pi)(x + 0.044715 x^3))
//   softplus  x > 0 ? x + log1p(exp(-x)) : log1p(exp(x))   (no overflow)
//   elu       x < 0 ? alpha (exp(x) - 1) : x; selu gamma * (x > 0 ? x : alpha (exp(x) - 1))
//   mish      x tanh(softplus(x))
//   sign      -1, 0 or 1 (NaN stays NaN, -0 gives 0)
// Integer types: Relu, Clip, Neg, Abs, Sign; Neg and Abs wrap on the minimum
// value (computed in unsigned arithmetic, so no undefined behaviour). Not on bool.
#include <cmath>
#include <cstring>
#include <type_traits>

#include "cpu/kernels/elementwise/elementwise.h"
#include "cpu/simd/vec_scalar.h"

namespace engine {
namespace eltwise {
namespace {

template <typename T, typename F>
void map(const void* xv, void* yv, int64_t n, F f) {
  const T* x = static_cast<const T*>(xv);
  T* y = static_cast<T*>(yv);
  for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}

using simd::scalar::sigmoid;
inline float softplus(float x) { return x > 0.f ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); }

// One function per op; `p` carries the attributes.
#define ENGINE_UNARY_F32(name, expr)                                             \
  void name##_f32(const void* xv, void* yv, int64_t n, const UnaryParams& p) {  \
    map<float>(xv, yv, n, [&p](float x) -> float { (void)p; return expr; });    \
  }

ENGINE_UNARY_F32(relu, simd::scalar::relu(x))
ENGINE_UNARY_F32(leaky_relu, simd::scalar::leaky_relu(x, p.alpha))
ENGINE_UNARY_F32(clip, simd::scalar::clip(x, p.alpha, p.beta))
ENGINE_UNARY_F32(sigmoid, sigmoid(x))
ENGINE_UNARY_F32(hard_sigmoid, simd::scalar::hard_sigmoid(x, p.alpha, p.beta))
ENGINE_UNARY_F32(hard_swish, simd::scalar::hard_swish(x))
ENGINE_UNARY_F32(tanh, std::tanh(x))
ENGINE_UNARY_F32(gelu, simd::scalar::gelu(x))
ENGINE_UNARY_F32(gelu_tanh, simd::scalar::gelu_tanh(x))
ENGINE_UNARY_F32(softplus, softplus(x))
ENGINE_UNARY_F32(softsign, x / (1.f + std::fabs(x)))
ENGINE_UNARY_F32(elu, x < 0.f ? p.alpha * std::expm1(x) : x)
ENGINE_UNARY_F32(selu, p.beta * (x > 0.f ? x : p.alpha * std::expm1(x)))
ENGINE_UNARY_F32(mish, x * std::tanh(softplus(x)))
ENGINE_UNARY_F32(erf, std::erf(x))
ENGINE_UNARY_F32(exp, std::exp(x))
ENGINE_UNARY_F32(log, std::log(x))
ENGINE_UNARY_F32(sqrt, std::sqrt(x))
ENGINE_UNARY_F32(reciprocal, 1.f / x)
ENGINE_UNARY_F32(neg, -x)
ENGINE_UNARY_F32(abs, std::fabs(x))
ENGINE_UNARY_F32(floor, std::floor(x))
ENGINE_UNARY_F32(ceil, std::ceil(x))
ENGINE_UNARY_F32(sign, x > 0.f ? 1.f : (x < 0.f ? -1.f : (x == 0.f ? 0.f : x)))
#undef ENGINE_UNARY_F32

template <typename T>
using Unsigned = std::make_unsigned_t<T>;

template <typename T>
void relu_int(const void* x, void* y, int64_t n, const UnaryParams&) {
  map<T>(x, y, n, [](T v) { return v < 0 ? T(0) : v; });
}
template <typename T>
void neg_int(const void* x, void* y, int64_t n, const UnaryParams&) {
  map<T>(x, y, n, [](T v) { return static_cast<T>(Unsigned<T>(0) - static_cast<Unsigned<T>>(v)); });
}
template <typename T>
void abs_int(const void* x, void* y, int64_t n, const UnaryParams&) {
  map<T>(x, y, n, [](T v) { return v < 0 ? static_cast<T>(Unsigned<T>(0) - static_cast<Unsigned<T>>(v)) : v; });
}
template <typename T>
void sign_int(const void* x, void* y, int64_t n, const UnaryParams&) {
  map<T>(x, y, n, [](T v) { return static_cast<T>(v > 0 ? 1 : (v < 0 ? -1 : 0)); });
}
// Bounds arrive as int64 and are saturated to T by the kernel.
template <typename T>
void clip_int(const void* x, void* y, int64_t n, const UnaryParams& p) {
  const T lo = static_cast<T>(p.imin), hi = static_cast<T>(p.imax);
  map<T>(x, y, n, [lo, hi](T v) { T t = lo > v ? lo : v; return hi < t ? hi : t; });
}
void not_bool(const void* xv, void* yv, int64_t n, const UnaryParams&) {
  // Bytes, not bool: a bool read must be 0 or 1, which we do not police.
  const uint8_t* x = static_cast<const uint8_t*>(xv);
  uint8_t* y = static_cast<uint8_t*>(yv);
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] == 0;
}

template <typename T>
UnaryFn int_op(Unary op) {
  switch (op) {
    case Unary::kNeg: return neg_int<T>;
    case Unary::kAbs: return abs_int<T>;
    case Unary::kSign: return sign_int<T>;
    case Unary::kClip: return clip_int<T>;
    case Unary::kRelu: return relu_int<T>;
    default: return nullptr;
  }
}

UnaryFn float_op(Unary op) {
  switch (op) {
    case Unary::kRelu: return relu_f32;
    case Unary::kLeakyRelu: return leaky_relu_f32;
    case Unary::kClip: return clip_f32;
    case Unary::kSigmoid: return sigmoid_f32;
    case Unary::kHardSigmoid: return hard_sigmoid_f32;
    case Unary::kHardSwish: return hard_swish_f32;
    case Unary::kTanh: return tanh_f32;
    case Unary::kGelu: return gelu_f32;
    case Unary::kGeluTanh: return gelu_tanh_f32;
    case Unary::kSoftplus: return softplus_f32;
    case Unary::kSoftsign: return softsign_f32;
    case Unary::kElu: return elu_f32;
    case Unary::kSelu: return selu_f32;
    case Unary::kMish: return mish_f32;
    case Unary::kErf: return erf_f32;
    case Unary::kExp: return exp_f32;
    case Unary::kLog: return log_f32;
    case Unary::kSqrt: return sqrt_f32;
    case Unary::kReciprocal: return reciprocal_f32;
    case Unary::kNeg: return neg_f32;
    case Unary::kAbs: return abs_f32;
    case Unary::kFloor: return floor_f32;
    case Unary::kCeil: return ceil_f32;
    case Unary::kSign: return sign_f32;
    case Unary::kNot: return nullptr;
  }
  return nullptr;
}

}  // namespace

UnaryFn unary_ref(Unary op, DType t) {
  switch (t) {
    case DType::kFloat32: return float_op(op);
    case DType::kInt64: return int_op<int64_t>(op);
    case DType::kInt32: return int_op<int32_t>(op);
    case DType::kInt8: return int_op<int8_t>(op);
    case DType::kUInt8: return op == Unary::kClip ? clip_int<uint8_t> : nullptr;
    case DType::kBool: return op == Unary::kNot ? not_bool : nullptr;
    default: return nullptr;
  }
}

const char* unary_name(Unary op) {
  static const char* const kNames[] = {
      "relu", "leaky_relu", "clip", "sigmoid", "hard_sigmoid", "hard_swish", "tanh", "gelu", "gelu_tanh",
      "softplus", "softsign", "elu", "selu", "mish", "erf", "exp", "log", "sqrt", "reciprocal",
      "neg", "abs", "floor", "ceil", "sign", "not"};
  return kNames[static_cast<int>(op)];
}

}  // namespace eltwise
}  // namespace engine
