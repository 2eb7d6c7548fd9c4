// Element types. The numeric codes are ONNX's TensorProto.DataType codes, so
// the importer and the plan format pass them through unchanged.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace engine {

enum class DType : int32_t {
  kUndefined = 0,
  kFloat32 = 1,
  kUInt8 = 2,
  kInt8 = 3,
  kUInt16 = 4,
  kInt16 = 5,
  kInt32 = 6,
  kInt64 = 7,
  kBool = 9,
  kFloat16 = 10,
  kFloat64 = 11,
  kUInt32 = 12,
  kUInt64 = 13,
};

size_t dtype_size(DType t);           // bytes per element; 0 for kUndefined
const char* dtype_name(DType t);      // "float32", "int64", ...
bool dtype_is_valid(int32_t code);    // a code we can store
bool dtype_is_float(DType t);
bool dtype_is_integer(DType t);       // signed or unsigned integers (not bool)

template <typename T> struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DType value = DType::kFloat32; };
template <> struct DTypeOf<double> { static constexpr DType value = DType::kFloat64; };
template <> struct DTypeOf<int64_t> { static constexpr DType value = DType::kInt64; };
template <> struct DTypeOf<int32_t> { static constexpr DType value = DType::kInt32; };
template <> struct DTypeOf<int16_t> { static constexpr DType value = DType::kInt16; };
template <> struct DTypeOf<int8_t> { static constexpr DType value = DType::kInt8; };
template <> struct DTypeOf<uint8_t> { static constexpr DType value = DType::kUInt8; };
template <> struct DTypeOf<uint16_t> { static constexpr DType value = DType::kUInt16; };
template <> struct DTypeOf<uint32_t> { static constexpr DType value = DType::kUInt32; };
template <> struct DTypeOf<uint64_t> { static constexpr DType value = DType::kUInt64; };
template <> struct DTypeOf<bool> { static constexpr DType value = DType::kBool; };

// Calls fn(T{}) with T the C++ type of `t` (float16 is not dispatched: it is
// stored, converted by Cast, and never computed on).
#define ENGINE_DISPATCH_CASE(code, type, ...) \
  case code: { using T = type; __VA_ARGS__; break; }

}  // namespace engine
