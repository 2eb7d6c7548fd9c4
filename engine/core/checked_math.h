// Overflow-checked size arithmetic and the size limits every op states.
//
// Shapes, pads, strides, dilations and byte counts come from files (ONNX
// models, plan files) and from callers (input arrays), so none of them may be
// trusted to stay small: a pad of 2**62 makes `d + pad_begin + pad_end` wrap
// to a small or negative number, and `elements * 4` can wrap into a tiny
// allocation that a kernel then overruns. Every such sum and product goes
// through these helpers (GCC/Clang __builtin_*_overflow), and every tensor
// shape is checked against the limits below before anything is allocated.
//
// Limits (documented in README.md, "Limits"):
//   - every dim of every tensor, and every pad, stride, dilation and kernel
//     size attribute: 0 <= v <= kMaxDim (2**31 - 1);
//   - every tensor: elements * element size <= max_tensor_bytes(), which
//     defaults to the machine's physical memory and can be set with
//     set_max_tensor_bytes() or the PYENGINE_MAX_TENSOR_BYTES environment
//     variable (read once, at the first use).
// A model or plan that breaks a limit is an Error(kShape) naming the node or
// value, raised at build / load time where the shapes are static, and at the
// first run with a new input shape otherwise.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace engine {

constexpr int64_t kMaxDim = (int64_t{1} << 31) - 1;

// a + b / a * b, or false on int64 overflow (*out is then unspecified).
inline bool checked_add(int64_t a, int64_t b, int64_t* out) { return !__builtin_add_overflow(a, b, out); }
inline bool checked_mul(int64_t a, int64_t b, int64_t* out) { return !__builtin_mul_overflow(a, b, out); }

// Throwing forms: Error(kShape) "<what>: <a> + <b> overflows int64".
inline int64_t add_or_fail(int64_t a, int64_t b, const std::string& what) {
  int64_t r;
  if (!checked_add(a, b, &r)) fail(ErrorKind::kShape, what, ": ", a, " + ", b, " overflows int64");
  return r;
}
inline int64_t mul_or_fail(int64_t a, int64_t b, const std::string& what) {
  int64_t r;
  if (!checked_mul(a, b, &r)) fail(ErrorKind::kShape, what, ": ", a, " * ", b, " overflows int64");
  return r;
}

// The per-tensor byte limit (see above). Thread-safe.
int64_t max_tensor_bytes();
// Sets the limit; bytes <= 0 restores the default (physical memory).
void set_max_tensor_bytes(int64_t bytes);

// Elements * dtype size of `shape`, ignoring unknown (-1) dims; -1 when the
// product overflows int64.
int64_t checked_nbytes(const std::vector<int64_t>& shape, DType dtype);

// Throws Error(kShape) "<what>: ..." when `shape` has a dim < -1 or above
// kMaxDim, or when a tensor of that shape and dtype (unknown dims counted as
// 1) would exceed max_tensor_bytes().
void check_tensor_size(const std::vector<int64_t>& shape, DType dtype, const std::string& what);

}  // namespace engine
