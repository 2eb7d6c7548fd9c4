// Reference binary loops: y[i] = f(a[i*sa], b[i*sb]) with sa, sb in {0, 1},
// and Where's select. Plain loops per stride pattern, so the compiler sees
// contiguous or scalar operands and can vectorize at the baseline ISA.
// Semantics, matching onnxruntime:
//   max/min   a > b ? a : b (and a < b ? a : b), but NaN in either operand
//             gives NaN; for two zeros the second operand wins, as maxps does
//   int div   truncates toward zero (C division); INT_MIN / -1 wraps; the
//             kernel rejects zero divisors before calling these loops
//   int add/sub/mul wrap (unsigned arithmetic: no undefined behaviour)
//   pow       std::pow; an integer base with an integer exponent multiplies
//             exactly (negative exponents give 1/a^e truncated to 0 unless |a| is 1)
//   prelu     a < 0 ? a * slope : a
// Types: float32, float64 and every integer width for the arithmetic and
// comparison ops (int64/int32 carry shape arithmetic; the others are cheap
// template instances that ONNX models use now and then), bool for Equal and
// the logical And, Or, Xor.
#include <cmath>
#include <cstring>
#include <type_traits>

#include "cpu/kernels/elementwise/elementwise.h"

namespace engine {
namespace eltwise {
namespace {

template <typename A, typename B, typename R, typename F>
inline void loop(const void* av, const void* bv, void* yv, int64_t n, int sa, int sb, F f) {
  const A* a = static_cast<const A*>(av);
  const B* b = static_cast<const B*>(bv);
  R* y = static_cast<R*>(yv);
  if (sa && sb) {
    for (int64_t i = 0; i < n; ++i) y[i] = f(a[i], b[i]);
  } else if (sa) {
    const B b0 = b[0];
    for (int64_t i = 0; i < n; ++i) y[i] = f(a[i], b0);
  } else if (sb) {
    const A a0 = a[0];
    for (int64_t i = 0; i < n; ++i) y[i] = f(a0, b[i]);
  } else {
    const R v = f(a[0], b[0]);
    for (int64_t i = 0; i < n; ++i) y[i] = v;
  }
}

template <typename T>
constexpr bool kInt = std::is_integral_v<T>;
// Wrapping arithmetic type: unsigned, and at least 32 bits so that narrow
// types are not promoted to (signed, overflowing) int.
template <typename T>
using W = std::conditional_t<(sizeof(T) < 4), uint32_t, std::make_unsigned_t<T>>;

struct AddOp {
  template <typename T> T operator()(T a, T b) const {
    if constexpr (kInt<T>) return static_cast<T>(static_cast<W<T>>(a) + static_cast<W<T>>(b));
    else return a + b;
  }
};
struct SubOp {
  template <typename T> T operator()(T a, T b) const {
    if constexpr (kInt<T>) return static_cast<T>(static_cast<W<T>>(a) - static_cast<W<T>>(b));
    else return a - b;
  }
};
struct MulOp {
  template <typename T> T operator()(T a, T b) const {
    if constexpr (kInt<T>) return static_cast<T>(static_cast<W<T>>(a) * static_cast<W<T>>(b));
    else return a * b;
  }
};
struct DivOp {
  template <typename T> T operator()(T a, T b) const {
    if constexpr (kInt<T>) {
      if constexpr (std::is_signed_v<T>)
        if (b == -1) return static_cast<T>(W<T>(0) - static_cast<W<T>>(a));
      return b == 0 ? T(0) : static_cast<T>(a / b);
    } else {
      return a / b;
    }
  }
};
struct MaxOp {
  template <typename T> T operator()(T a, T b) const {
    if constexpr (kInt<T>) return a > b ? a : b;
    else return a != a ? a : (a > b ? a : b);
  }
};
struct MinOp {
  template <typename T> T operator()(T a, T b) const {
    if constexpr (kInt<T>) return a < b ? a : b;
    else return a != a ? a : (a < b ? a : b);
  }
};
struct PReluOp {
  template <typename T> T operator()(T a, T b) const { return a < T(0) ? a * b : a; }
};
struct EqualOp {
  template <typename T> bool operator()(T a, T b) const { return a == b; }
};
struct LessOp {
  template <typename T> bool operator()(T a, T b) const { return a < b; }
};
struct GreaterOp {
  template <typename T> bool operator()(T a, T b) const { return a > b; }
};
// a >= b, not !(a < b): NaN compares false both ways, as in onnxruntime.
struct GreaterOrEqualOp {
  template <typename T> bool operator()(T a, T b) const { return a >= b; }
};
struct LessOrEqualOp {
  template <typename T> bool operator()(T a, T b) const { return a <= b; }
};
struct AndOp {
  bool operator()(bool a, bool b) const { return a && b; }
};
struct OrOp {
  bool operator()(bool a, bool b) const { return a || b; }
};
struct XorOp {
  bool operator()(bool a, bool b) const { return a != b; }
};

template <typename Op, typename T, typename R = T>
void fn(const void* a, const void* b, void* y, int64_t n, int sa, int sb) {
  loop<T, T, R>(a, b, y, n, sa, sb, Op());
}

// bool compares as bytes: loading a bool that is not 0 or 1 is undefined.
template <typename Op>
void bool_fn(const void* a, const void* b, void* y, int64_t n, int sa, int sb) {
  loop<uint8_t, uint8_t, bool>(a, b, y, n, sa, sb, [](uint8_t x, uint8_t z) { return Op()(x != 0, z != 0); });
}

template <typename T, typename E>
T ipow(T a, E e) {
  if constexpr (std::is_signed_v<E>) {
    if (e < 0) {
      if (a == 1) return 1;
      if (a == -1) return (e & 1) ? -1 : 1;
      return 0;
    }
  }
  W<T> base = static_cast<W<T>>(a), r = 1;
  for (uint64_t k = static_cast<uint64_t>(e); k; k >>= 1) {
    if (k & 1) r *= base;
    base *= base;
  }
  return static_cast<T>(r);
}

template <typename A, typename B>
void pow_fn(const void* a, const void* b, void* y, int64_t n, int sa, int sb) {
  if constexpr (std::is_floating_point_v<A>) {
    // x^2 is common (variance, L2 terms) and exact as x*x: pow rounds the
    // exact product, so this changes no result.
    if (!sb && static_cast<A>(static_cast<const B*>(b)[0]) == A(2)) {
      loop<A, B, A>(a, b, y, n, sa, sb, [](A x, B) { return x * x; });
      return;
    }
    loop<A, B, A>(a, b, y, n, sa, sb, [](A x, B e) { return std::pow(x, static_cast<A>(e)); });
  } else if constexpr (kInt<B>) {
    loop<A, B, A>(a, b, y, n, sa, sb, [](A x, B e) { return ipow(x, e); });
  } else {
    loop<A, B, A>(a, b, y, n, sa, sb, [](A x, B e) {
      double r = std::pow(static_cast<double>(x), static_cast<double>(e));
      return r >= -9.2e18 && r <= 9.2e18 ? static_cast<A>(static_cast<int64_t>(r)) : A(0);
    });
  }
}

template <typename A>
BinaryFn pow_for(DType b) {
  switch (b) {
    case DType::kFloat32: return pow_fn<A, float>;
    case DType::kFloat64: return pow_fn<A, double>;
    case DType::kInt64: return pow_fn<A, int64_t>;
    case DType::kInt32: return pow_fn<A, int32_t>;
    case DType::kUInt64: return pow_fn<A, uint64_t>;
    case DType::kUInt32: return pow_fn<A, uint32_t>;
    default: return nullptr;
  }
}

template <typename T>
BinaryFn numeric(Binary op) {
  switch (op) {
    case Binary::kAdd: return fn<AddOp, T>;
    case Binary::kSub: return fn<SubOp, T>;
    case Binary::kMul: return fn<MulOp, T>;
    case Binary::kDiv: return fn<DivOp, T>;
    case Binary::kMax: return fn<MaxOp, T>;
    case Binary::kMin: return fn<MinOp, T>;
    case Binary::kEqual: return fn<EqualOp, T, bool>;
    case Binary::kLess: return fn<LessOp, T, bool>;
    case Binary::kGreater: return fn<GreaterOp, T, bool>;
    case Binary::kGreaterOrEqual: return fn<GreaterOrEqualOp, T, bool>;
    case Binary::kLessOrEqual: return fn<LessOrEqualOp, T, bool>;
    case Binary::kAnd:
    case Binary::kOr:
    case Binary::kXor: return nullptr;  // bool only
    case Binary::kPRelu:
      if constexpr (std::is_floating_point_v<T>) return fn<PReluOp, T>;
      else return nullptr;
    case Binary::kPow: return nullptr;  // handled with the exponent's dtype
  }
  return nullptr;
}

template <typename T>
void where_fn(const bool* c, const void* xv, const void* yv, void* ov, int64_t n, int sc, int sx, int sy) {
  const uint8_t* cb = reinterpret_cast<const uint8_t*>(c);
  const T* x = static_cast<const T*>(xv);
  const T* y = static_cast<const T*>(yv);
  T* o = static_cast<T*>(ov);
  if (sc && sx && sy) {
    for (int64_t i = 0; i < n; ++i) o[i] = cb[i] ? x[i] : y[i];
  } else {
    for (int64_t i = 0; i < n; ++i) o[i] = cb[i * sc] ? x[i * sx] : y[i * sy];
  }
}

}  // namespace

BinaryFn binary_ref(Binary op, DType a, DType b) {
  if (op == Binary::kPow) {
    switch (a) {
      case DType::kFloat32: return pow_for<float>(b);
      case DType::kFloat64: return pow_for<double>(b);
      case DType::kInt64: return pow_for<int64_t>(b);
      case DType::kInt32: return pow_for<int32_t>(b);
      default: return nullptr;
    }
  }
  if (a != b) return nullptr;
  switch (a) {
    case DType::kFloat32: return numeric<float>(op);
    case DType::kFloat64: return numeric<double>(op);
    case DType::kInt64: return numeric<int64_t>(op);
    case DType::kInt32: return numeric<int32_t>(op);
    case DType::kInt16: return numeric<int16_t>(op);
    case DType::kInt8: return numeric<int8_t>(op);
    case DType::kUInt64: return numeric<uint64_t>(op);
    case DType::kUInt32: return numeric<uint32_t>(op);
    case DType::kUInt16: return numeric<uint16_t>(op);
    case DType::kUInt8: return numeric<uint8_t>(op);
    case DType::kBool:
      switch (op) {
        case Binary::kEqual: return bool_fn<EqualOp>;
        case Binary::kAnd: return bool_fn<AndOp>;
        case Binary::kOr: return bool_fn<OrOp>;
        case Binary::kXor: return bool_fn<XorOp>;
        default: return nullptr;
      }
    default: return nullptr;
  }
}

const char* binary_name(Binary op) {
  static const char* const kNames[] = {"add", "sub", "mul", "div", "pow", "max", "min", "prelu",
                                       "equal", "less", "greater",
                                       "greater_or_equal", "less_or_equal", "and", "or", "xor"};
  return kNames[static_cast<int>(op)];
}

WhereFn where_ref(size_t elem_size) {
  switch (elem_size) {
    case 1: return where_fn<uint8_t>;
    case 2: return where_fn<uint16_t>;
    case 4: return where_fn<uint32_t>;
    case 8: return where_fn<uint64_t>;
    default: return nullptr;
  }
}

}  // namespace eltwise
}  // namespace engine
