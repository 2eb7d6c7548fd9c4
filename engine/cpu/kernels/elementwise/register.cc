// Kernel registration for the elementwise family: maps each OpKind to its
// kernel factory (unary_kernels.cc, binary_kernels.cc).
#include "cpu/kernels/elementwise/kernels.h"

namespace engine {

#if defined(ENGINE_FORCE_REF)
// The *_avx2.cc files are not built: nothing may ask for their loops
// (use_avx2() is false), but the symbols must exist.
namespace eltwise {
UnaryFn unary_avx2(Unary, DType) { return nullptr; }
UnaryFn unary_avx512(Unary, DType) { return nullptr; }
BinaryFn binary_avx2(Binary, DType, DType) { return nullptr; }
AffineRowFn affine_row_avx2() { return nullptr; }
AffineVecFn affine_vec_avx2() { return nullptr; }
}  // namespace eltwise
#endif

void register_elementwise_kernels(KernelRegistry& r) {
  using eltwise::Binary;
  using eltwise::Unary;
  const struct { OpKind kind; Unary op; } unary[] = {
      {OpKind::kRelu, Unary::kRelu},           {OpKind::kLeakyRelu, Unary::kLeakyRelu},
      {OpKind::kSigmoid, Unary::kSigmoid},     {OpKind::kHardSigmoid, Unary::kHardSigmoid},
      {OpKind::kHardSwish, Unary::kHardSwish}, {OpKind::kTanh, Unary::kTanh},
      {OpKind::kGelu, Unary::kGelu},           {OpKind::kSoftplus, Unary::kSoftplus},
      {OpKind::kSoftsign, Unary::kSoftsign},   {OpKind::kElu, Unary::kElu},
      {OpKind::kSelu, Unary::kSelu},           {OpKind::kMish, Unary::kMish},
      {OpKind::kErf, Unary::kErf},             {OpKind::kExp, Unary::kExp},
      {OpKind::kLog, Unary::kLog},             {OpKind::kSqrt, Unary::kSqrt},
      {OpKind::kReciprocal, Unary::kReciprocal}, {OpKind::kNeg, Unary::kNeg},
      {OpKind::kAbs, Unary::kAbs},             {OpKind::kFloor, Unary::kFloor},
      {OpKind::kCeil, Unary::kCeil},           {OpKind::kSign, Unary::kSign},
      {OpKind::kNot, Unary::kNot},
  };
  for (const auto& u : unary) {
    const Unary op = u.op;
    r.add(u.kind, {[op](const Node& n) { return eltwise::make_unary_kernel(n, op); }, false});
  }
  const struct { OpKind kind; Binary op; } binary[] = {
      {OpKind::kAdd, Binary::kAdd},     {OpKind::kSub, Binary::kSub},   {OpKind::kMul, Binary::kMul},
      {OpKind::kDiv, Binary::kDiv},     {OpKind::kPow, Binary::kPow},   {OpKind::kPRelu, Binary::kPRelu},
      {OpKind::kEqual, Binary::kEqual}, {OpKind::kLess, Binary::kLess}, {OpKind::kGreater, Binary::kGreater},
      {OpKind::kGreaterOrEqual, Binary::kGreaterOrEqual}, {OpKind::kLessOrEqual, Binary::kLessOrEqual},
      {OpKind::kAnd, Binary::kAnd}, {OpKind::kOr, Binary::kOr}, {OpKind::kXor, Binary::kXor},
  };
  for (const auto& b : binary) {
    const Binary op = b.op;
    r.add(b.kind, {[op](const Node& n) { return eltwise::make_binary_kernel(n, op); }, false});
  }
  r.add(OpKind::kMax, {[](const Node& n) { return eltwise::make_variadic_kernel(n, Binary::kMax, false); }, false});
  r.add(OpKind::kMin, {[](const Node& n) { return eltwise::make_variadic_kernel(n, Binary::kMin, false); }, false});
  r.add(OpKind::kSum, {[](const Node& n) { return eltwise::make_variadic_kernel(n, Binary::kAdd, false); }, false});
  r.add(OpKind::kMean, {[](const Node& n) { return eltwise::make_variadic_kernel(n, Binary::kAdd, true); }, false});
  r.add(OpKind::kClip, {eltwise::make_clip_kernel, false});
  r.add(OpKind::kWhere, {eltwise::make_where_kernel, false});
  r.add(OpKind::kCast, {eltwise::make_cast_kernel, false});
  r.add(OpKind::kChannelAffine, {eltwise::make_channel_affine_kernel, false});
}

}  // namespace engine
