// Cast between float32, float64, float16, int64, int32, int8, uint8 and bool:
// y[i] = To(x[i]).
// Conversions follow onnxruntime on x86, which is plain static_cast there:
//  - float -> int64/int32: truncation; NaN and out-of-range values give the
//    integer minimum (what cvttss2si returns); done with an explicit range
//    check, since the C++ cast would be undefined behaviour;
//  - float -> int8/uint8: through int32, keeping the low 8 bits (300 -> 44);
//  - int -> narrower int: low bits (two's complement wrap);
//  - anything -> bool: x != 0 (NaN is true); bool -> anything: 0 or 1;
//  - float16 goes through float32 (so float64 -> float16 rounds twice, as
//    onnxruntime does).
#include <cmath>
#include <cstring>
#include <type_traits>

#include "cpu/kernels/elementwise/elementwise.h"
#include "core/tensor.h"

namespace engine {
namespace eltwise {
namespace {

// float16 storage; a distinct type so the templates below can tell it apart.
struct Half {
  uint16_t bits;
};

template <typename I, typename F>
I float_to_int(F x) {
  if constexpr (sizeof(I) >= 4) {
    // [-2^(b-1), 2^(b-1)) is exactly representable at both ends.
    constexpr F lo = -static_cast<F>(uint64_t{1} << (sizeof(I) * 8 - 1));
    if (!(x >= lo && x < -lo)) return std::numeric_limits<I>::min();
    return static_cast<I>(x);
  } else {
    return static_cast<I>(static_cast<uint32_t>(float_to_int<int32_t>(x)));
  }
}

template <typename To, typename From>
To convert(From x) {
  if constexpr (std::is_same_v<From, Half>) {
    return convert<To>(half_to_float(x.bits));
  } else if constexpr (std::is_same_v<To, Half>) {
    return Half{float_to_half(convert<float>(x))};
  } else if constexpr (std::is_same_v<To, bool>) {
    return x != From(0);
  } else if constexpr (std::is_floating_point_v<From> && std::is_integral_v<To>) {
    return float_to_int<To>(x);
  } else if constexpr (std::is_integral_v<From> && std::is_integral_v<To> && !std::is_same_v<From, bool>) {
    return static_cast<To>(static_cast<std::make_unsigned_t<To>>(x));
  } else {
    return static_cast<To>(x);
  }
}

template <typename From, typename To>
void cast_fn(const void* xv, void* yv, int64_t n) {
  const From* x = static_cast<const From*>(xv);
  To* y = static_cast<To*>(yv);
  if constexpr (std::is_same_v<From, bool>) {
    // Read bool storage as bytes: a byte other than 0/1 must not be UB.
    const uint8_t* xb = static_cast<const uint8_t*>(xv);
    for (int64_t i = 0; i < n; ++i) y[i] = convert<To>(static_cast<uint8_t>(xb[i] != 0));
  } else if constexpr (std::is_same_v<From, To>) {
    std::memcpy(y, x, static_cast<size_t>(n) * sizeof(To));
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = convert<To>(x[i]);
  }
}

template <typename From>
CastFn cast_from(DType to) {
  switch (to) {
    case DType::kFloat32: return cast_fn<From, float>;
    case DType::kFloat64: return cast_fn<From, double>;
    case DType::kFloat16: return cast_fn<From, Half>;
    case DType::kInt64: return cast_fn<From, int64_t>;
    case DType::kInt32: return cast_fn<From, int32_t>;
    case DType::kInt8: return cast_fn<From, int8_t>;
    case DType::kUInt8: return cast_fn<From, uint8_t>;
    case DType::kBool: return cast_fn<From, bool>;
    default: return nullptr;
  }
}

}  // namespace

CastFn cast_ref(DType from, DType to) {
  switch (from) {
    case DType::kFloat32: return cast_from<float>(to);
    case DType::kFloat64: return cast_from<double>(to);
    case DType::kFloat16: return cast_from<Half>(to);
    case DType::kInt64: return cast_from<int64_t>(to);
    case DType::kInt32: return cast_from<int32_t>(to);
    case DType::kInt8: return cast_from<int8_t>(to);
    case DType::kUInt8: return cast_from<uint8_t>(to);
    case DType::kBool: return cast_from<bool>(to);
    default: return nullptr;
  }
}

}  // namespace eltwise
}  // namespace engine
