// Byte-moving building blocks shared by the shape_ops kernels.
//
// strided_copy:  dst[i0, ..., ik] = src[sum_d i_d * stride_d]   (dst contiguous)
// It serves Slice (strides scaled by steps, offset by starts), Expand
// (stride 0 on broadcast dims), Transpose's fallback and Pad's interior.
// Preconditions: rank <= kMaxRank; dst and src do not overlap.
// Why this shape: after dropping size-1 dims and merging dims that are
// contiguous in the source, most real slices and expands have an innermost
// stride of 1 (one memcpy per row) or 0 (one fill per row); only what is left
// pays an element loop, switched on the element size so any dtype works.
#include <algorithm>
#include <cstring>

#include "cpu/kernels/shape_ops/shape_ops.h"

namespace engine {
namespace shape_ops {
namespace {

template <typename T>
void gather_row(T* dst, const T* src, int64_t n, int64_t stride) {
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i * stride];
}

template <typename T>
void fill_row(T* dst, const void* value, int64_t n) {
  T v;
  std::memcpy(&v, value, sizeof(T));
  for (int64_t i = 0; i < n; ++i) dst[i] = v;
}

void copy_row(char* dst, const char* src, int64_t n, int64_t stride, size_t esize) {
  if (stride == 1) {
    std::memcpy(dst, src, static_cast<size_t>(n) * esize);
    return;
  }
  if (stride == 0) {
    fill_elements(dst, n, src, esize);
    return;
  }
  switch (esize) {
    case 1: gather_row(reinterpret_cast<uint8_t*>(dst), reinterpret_cast<const uint8_t*>(src), n, stride); break;
    case 2: gather_row(reinterpret_cast<uint16_t*>(dst), reinterpret_cast<const uint16_t*>(src), n, stride); break;
    case 4: gather_row(reinterpret_cast<uint32_t*>(dst), reinterpret_cast<const uint32_t*>(src), n, stride); break;
    case 8: gather_row(reinterpret_cast<uint64_t*>(dst), reinterpret_cast<const uint64_t*>(src), n, stride); break;
    default:
      for (int64_t i = 0; i < n; ++i) std::memcpy(dst + i * esize, src + i * stride * static_cast<int64_t>(esize), esize);
  }
}

}  // namespace

void check_rank(const std::string& what, int rank) {
  ENGINE_ENFORCE(rank <= kMaxRank, kUnsupportedOperator, what, ": tensors of rank ", rank,
                 " are not supported (at most ", kMaxRank, ")");
}

void parallel_memcpy(KernelContext& ctx, void* dst, const void* src, size_t bytes) {
  if (bytes < kParallelBytes || ctx.pool().num_threads() <= 1) {
    if (bytes) std::memcpy(dst, src, bytes);
    return;
  }
  constexpr size_t kBlock = 64 * 1024;
  const int64_t blocks = static_cast<int64_t>((bytes + kBlock - 1) / kBlock);
  ctx.pool().parallel_for(blocks, [&](int64_t b, int64_t e) {
    size_t lo = static_cast<size_t>(b) * kBlock, hi = std::min(bytes, static_cast<size_t>(e) * kBlock);
    std::memcpy(static_cast<char*>(dst) + lo, static_cast<const char*>(src) + lo, hi - lo);
  });
}

void fill_elements(void* dst, int64_t n, const void* value, size_t esize) {
  switch (esize) {
    case 1: std::memset(dst, *static_cast<const uint8_t*>(value), static_cast<size_t>(n)); break;
    case 2: fill_row<uint16_t>(static_cast<uint16_t*>(dst), value, n); break;
    case 4: fill_row<uint32_t>(static_cast<uint32_t*>(dst), value, n); break;
    case 8: fill_row<uint64_t>(static_cast<uint64_t*>(dst), value, n); break;
    default:
      for (int64_t i = 0; i < n; ++i) std::memcpy(static_cast<char*>(dst) + i * esize, value, esize);
  }
}

void strided_copy(KernelContext& ctx, void* dst, const void* src, const int64_t* out_shape,
                  const int64_t* src_strides, int rank, size_t esize) {
  ENGINE_CHECK(rank <= kMaxRank);
  int64_t total = 1;
  for (int d = 0; d < rank; ++d) total *= out_shape[d];
  if (total == 0) return;
  int64_t n[kMaxRank], s[kMaxRank];
  int r = 0;
  for (int d = 0; d < rank; ++d) {
    if (out_shape[d] == 1) continue;
    if (r > 0 && s[r - 1] == src_strides[d] * out_shape[d]) {
      n[r - 1] *= out_shape[d];
      s[r - 1] = src_strides[d];
    } else {
      n[r] = out_shape[d];
      s[r] = src_strides[d];
      ++r;
    }
  }
  if (r == 0) {
    std::memcpy(dst, src, esize);
    return;
  }
  const int64_t inner = n[r - 1], inner_stride = s[r - 1];
  const int64_t rows = total / inner;
  const size_t row_bytes = static_cast<size_t>(inner) * esize;
  const int outer = r - 1;
  auto* d0 = static_cast<char*>(dst);
  const auto* s0 = static_cast<const char*>(src);
  const int64_t es = static_cast<int64_t>(esize);
  auto body = [&](int64_t begin, int64_t end) {
    int64_t idx[kMaxRank];
    int64_t off = 0, rem = begin;
    for (int d = outer - 1; d >= 0; --d) {
      idx[d] = rem % n[d];
      rem /= n[d];
      off += idx[d] * s[d];
    }
    for (int64_t row = begin; row < end; ++row) {
      copy_row(d0 + row * static_cast<int64_t>(row_bytes), s0 + off * es, inner, inner_stride, esize);
      for (int d = outer - 1; d >= 0; --d) {
        off += s[d];
        if (++idx[d] < n[d]) break;
        off -= s[d] * n[d];
        idx[d] = 0;
      }
    }
  };
  if (static_cast<size_t>(total) * esize < kParallelBytes || rows < 2) {
    body(0, rows);
  } else {
    int64_t grain = std::max<int64_t>(1, static_cast<int64_t>(16384 / std::max<size_t>(row_bytes, 1)));
    ctx.pool().parallel_for(rows, body, grain);
  }
}

}  // namespace shape_ops
}  // namespace engine
