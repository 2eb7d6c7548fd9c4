// Shared declarations of the shape_ops kernels (data movement and shape
// tensors).
//
// Every data-movement kernel works on any dtype: it moves elements by their
// size (1, 2, 4 or 8 bytes) and never looks at their values. Output shapes
// come from shape inference (ir/infer/shape_ops.cc); kernels re-derive only
// the parameters they need (offsets, steps) from attributes and the small
// integer inputs, which at run time are ordinary tensors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/error.h"
#include "cpu/kernel.h"

namespace engine {
namespace shape_ops {

// Ranks above this are rejected in run() (kUnsupportedOperator); it lets the
// index arithmetic live in fixed arrays instead of allocating.
constexpr int kMaxRank = 12;

// Below this many bytes a copy runs on the calling thread: waking workers
// costs more than it saves.
constexpr size_t kParallelBytes = 128 * 1024;

// --- kernel factories (register.cc wires them to op kinds) -----------------
std::unique_ptr<Kernel> create_alias_copy(const Node& node);  // Reshape, Flatten, Squeeze, Unsqueeze, Identity
std::unique_ptr<Kernel> create_dropout(const Node& node);
std::unique_ptr<Kernel> create_constant(const Node& node);
std::unique_ptr<Kernel> create_shape(const Node& node);
std::unique_ptr<Kernel> create_constant_of_shape(const Node& node);
std::unique_ptr<Kernel> create_range(const Node& node);
std::unique_ptr<Kernel> create_transpose(const Node& node);
std::unique_ptr<Kernel> create_concat(const Node& node);
std::unique_ptr<Kernel> create_split(const Node& node);
std::unique_ptr<Kernel> create_slice(const Node& node);
std::unique_ptr<Kernel> create_expand(const Node& node);
std::unique_ptr<Kernel> create_gather(const Node& node);
std::unique_ptr<Kernel> create_tile(const Node& node);
std::unique_ptr<Kernel> create_pad(const Node& node);
std::unique_ptr<Kernel> create_resize(const Node& node);

// --- shared building blocks (copy_ref.cc) ------------------------------------

// memcpy of `bytes`, split across the pool when large.
void parallel_memcpy(KernelContext& ctx, void* dst, const void* src, size_t bytes);

// Fills `n` elements of `esize` bytes with the element at `value`.
void fill_elements(void* dst, int64_t n, const void* value, size_t esize);

// dst (contiguous, shape out_shape) [i0..ik] = src[sum_d i_d * src_strides[d]];
// strides are in elements and may be 0 (broadcast) or negative (reversed).
// Size-1 dims are dropped and mergeable dims coalesced first, so rows whose
// innermost source stride is 1 become single memcpys.
void strided_copy(KernelContext& ctx, void* dst, const void* src, const int64_t* out_shape,
                  const int64_t* src_strides, int rank, size_t esize);

// Throws kUnsupportedOperator naming `what` when rank > kMaxRank.
void check_rank(const std::string& what, int rank);

// --- 2-D transposes (transpose_ref.cc, transpose_avx2.cc, transpose_avx512.cc)
// dst[c * dst_ld + r] = src[r * src_ld + c] for r < rows, c < cols.
void transpose2d_ref(const void* src, int64_t src_ld, void* dst, int64_t dst_ld, int64_t rows, int64_t cols,
                     size_t esize);
#if !defined(ENGINE_FORCE_REF)
// 4-byte elements only; enter only when kernel_usable("transpose_f32_avx2").
void transpose2d_b32_avx2(const uint32_t* src, int64_t src_ld, uint32_t* dst, int64_t dst_ld, int64_t rows,
                          int64_t cols);
// 1-byte elements only (int8, uint8, bool); enter only when
// kernel_usable("transpose_s8_avx512").
void transpose2d_b8_avx512(const uint8_t* src, int64_t src_ld, uint8_t* dst, int64_t dst_ld, int64_t rows,
                           int64_t cols);
#else
// Reference-only builds (ENGINE_FORCE_REF, and every non-x86 target) leave
// the *_avx2.cc / *_avx512.cc files out and never select these variants;
// this only keeps the callers linking.
inline void transpose2d_b32_avx2(const uint32_t*, int64_t, uint32_t*, int64_t, int64_t, int64_t) {
  ENGINE_CHECK(false, "AVX2 transpose called in a reference-only build");
}
inline void transpose2d_b8_avx512(const uint8_t*, int64_t, uint8_t*, int64_t, int64_t, int64_t) {
  ENGINE_CHECK(false, "AVX-512 transpose called in a reference-only build");
}
#endif

// --- Resize linear rows (resize_ref.cc, resize_avx2.cc) ----------------------
// Horizontal pass: out[i] = w0[i] * row[x0[i]] + w1[i] * row[x1[i]].
void resize_linear_hrow_ref(const float* row, const int32_t* x0, const int32_t* x1, const float* w0,
                            const float* w1, float* out, int64_t width);
// Vertical pass: out[i] = wa * a[i] + wb * b[i].
void resize_linear_vblend_ref(const float* a, const float* b, float wa, float wb, float* out, int64_t width);
#if !defined(ENGINE_FORCE_REF)
// AVX2 forms of the two; enter only when kernel_usable("resize_linear_f32_avx2").
void resize_linear_hrow_avx2(const float* row, const int32_t* x0, const int32_t* x1, const float* w0,
                             const float* w1, float* out, int64_t width);
void resize_linear_vblend_avx2(const float* a, const float* b, float wa, float wb, float* out, int64_t width);
#else
inline void resize_linear_hrow_avx2(const float*, const int32_t*, const int32_t*, const float*, const float*, float*,
                                    int64_t) {
  ENGINE_CHECK(false, "AVX2 resize called in a reference-only build");
}
inline void resize_linear_vblend_avx2(const float*, const float*, float, float, float*, int64_t) {
  ENGINE_CHECK(false, "AVX2 resize called in a reference-only build");
}
#endif

}  // namespace shape_ops
}  // namespace engine
