// Elementwise family: the inner loops every elementwise kernel is built from.
//
// Each op is a plain function over a contiguous run of n elements. Shapes,
// broadcasting and threading live in the kernels (broadcast.h, *_kernels.cc);
// the loops here only see pointers and a stride of 0 (a broadcast scalar) or
// 1 (a contiguous run) per operand, which is what the innermost dimension of
// any numpy broadcast reduces to once adjacent dimensions are merged.
//
// Every loop has a portable reference (*_ref.cc: plain C++, <cmath>), which
// is the fallback and the test oracle. Hot float32 loops also have an AVX2
// version (*_avx2.cc, compiled with -mavx2 -mfma): the *_avx2() lookups may
// only be called when use_avx2() is true, and return nullptr where an op has
// no AVX2 version (the caller then uses the reference).
//
// This header only declares; it is safe to include from ISA-specific files.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace engine {
namespace eltwise {

// ---- unary --------------------------------------------------------------

enum class Unary : int {
  kRelu, kLeakyRelu, kClip, kSigmoid, kHardSigmoid, kHardSwish, kTanh,
  kGelu,      // 0.5 x (1 + erf(x / sqrt 2))
  kGeluTanh,  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
  kSoftplus, kSoftsign, kElu, kSelu, kMish, kErf, kExp, kLog, kSqrt, kReciprocal,
  kNeg, kAbs, kFloor, kCeil, kSign, kNot,
};

// Op parameters. Float ops read alpha/beta: LeakyRelu and Elu alpha;
// HardSigmoid alpha, beta; Selu alpha, gamma (= beta); Clip min (alpha) and
// max (beta). Clip on integer types reads imin/imax.
struct UnaryParams {
  float alpha = 0.f;
  float beta = 0.f;
  int64_t imin = 0;
  int64_t imax = 0;
};

// y[i] = f(x[i]) for i in [0, n). x and y may be the same buffer.
using UnaryFn = void (*)(const void* x, void* y, int64_t n, const UnaryParams& p);

UnaryFn unary_ref(Unary op, DType t);   // nullptr: op does not support t
UnaryFn unary_avx2(Unary op, DType t);  // nullptr: no AVX2 version
UnaryFn unary_avx512(Unary op, DType t);  // nullptr: no AVX-512 version (call only when use_avx512())
const char* unary_name(Unary op);       // "relu", for kernel descriptions

// ---- binary -------------------------------------------------------------

enum class Binary : int {
  kAdd, kSub, kMul, kDiv, kPow, kMax, kMin,
  kPRelu,                   // a < 0 ? a * b : a   (b = slope)
  kEqual, kLess, kGreater,  // bool output
  kGreaterOrEqual, kLessOrEqual,  // bool output
  kAnd, kOr, kXor,          // bool inputs and output
};

// y[i] = f(a[i * sa], b[i * sb]) for i in [0, n); sa, sb are 0 or 1.
// y may alias a or b where the stride is 1 (variadic ops fold in place).
// Integer Div expects the caller to have rejected zero divisors.
using BinaryFn = void (*)(const void* a, const void* b, void* y, int64_t n, int sa, int sb);

// `a` and `b` are the operand dtypes (they differ only for Pow's exponent).
BinaryFn binary_ref(Binary op, DType a, DType b);
BinaryFn binary_avx2(Binary op, DType a, DType b);
const char* binary_name(Binary op);

// ---- where --------------------------------------------------------------

// out[i] = c[i * sc] ? x[i * sx] : y[i * sy], for elements of `elem_size`
// bytes (Where only moves data, so any dtype of that size works).
using WhereFn = void (*)(const bool* c, const void* x, const void* y, void* out, int64_t n, int sc,
                         int sx, int sy);
WhereFn where_ref(size_t elem_size);  // nullptr for sizes other than 1, 2, 4, 8

// ---- channel affine -----------------------------------------------------

// y[i] = x[i] * s + b for i in [0, n): one channel's plane.
using AffineRowFn = void (*)(const float* x, float* y, int64_t n, float s, float b);
// y[i] = x[i] * s[i] + b[i]: a row of C channels with no spatial extent.
using AffineVecFn = void (*)(const float* x, const float* s, const float* b, float* y, int64_t n);

AffineRowFn affine_row_ref();
AffineVecFn affine_vec_ref();
AffineRowFn affine_row_avx2();
AffineVecFn affine_vec_avx2();

// ---- cast ---------------------------------------------------------------

// y[i] = (To)x[i]. Float to integer follows x86 (and onnxruntime): values
// out of range and NaN give the integer's minimum for 32/64-bit targets;
// narrower integers take the low bits of the 32-bit result.
using CastFn = void (*)(const void* x, void* y, int64_t n);
CastFn cast_ref(DType from, DType to);  // nullptr for unsupported pairs

}  // namespace eltwise
}  // namespace engine
