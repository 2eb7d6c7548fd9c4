// Gather and Tile.
//
//   Gather: y[o, j..., i] = x[o, idx[j...], i]   o over dims before axis, i over
//           dims after it; negative indices count from the end; int32 or
//           int64 indices; an index out of range is an error (checked before
//           anything is written).
//   Tile:   y[i_0, ..., i_k] = x[i_0 % d_0, ..., i_k % d_k]; each output row
//           is the input's last-axis row repeated, one memcpy per repeat.
// Both copy whole inner blocks, so they work for every dtype by element size
// and the shape-arithmetic case (Gather of one int64 from a Shape) costs a
// few instructions.
#include <algorithm>
#include <cstring>

#include "cpu/kernels/shape_ops/shape_ops.h"

namespace engine {
namespace shape_ops {
namespace {

inline int64_t index_at(const Tensor& t, int64_t i) {
  return t.dtype() == DType::kInt64 ? t.data<int64_t>()[i] : static_cast<int64_t>(t.data<int32_t>()[i]);
}

class Gather final : public Kernel {
 public:
  explicit Gather(const Node& node) : what_(node.describe()), axis_(node.attr_int("axis", 0)) {}
  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& x = *in[0];
    const Tensor& idx = *in[1];
    ENGINE_ENFORCE(idx.dtype() == DType::kInt64 || idx.dtype() == DType::kInt32, kUnsupportedOperator, what_,
                   ": indices must be int32 or int64");
    const int64_t r = x.rank();
    const int64_t axis = axis_ < 0 ? axis_ + r : axis_;
    const int64_t d = x.shape()[axis];
    const int64_t n = idx.numel();
    for (int64_t j = 0; j < n; ++j) {
      int64_t k = index_at(idx, j);
      ENGINE_ENFORCE(k >= -d && k < d, kInvalidArgument, what_, ": index ", k, " is out of range for axis ", axis,
                     " of size ", d);
    }
    int64_t outer = 1, inner = static_cast<int64_t>(dtype_size(x.dtype()));
    for (int64_t a = 0; a < axis; ++a) outer *= x.shape()[a];
    for (int64_t a = axis + 1; a < r; ++a) inner *= x.shape()[a];
    const auto* src = static_cast<const char*>(x.raw());
    auto* dst = static_cast<char*>(out[0]->raw());
    auto body = [&](int64_t begin, int64_t end) {
      for (int64_t u = begin; u < end; ++u) {
        const int64_t o = u / std::max<int64_t>(n, 1), j = u % std::max<int64_t>(n, 1);
        int64_t k = index_at(idx, j);
        if (k < 0) k += d;
        std::memcpy(dst + u * inner, src + (o * d + k) * inner, static_cast<size_t>(inner));
      }
    };
    const int64_t units = outer * n;
    if (static_cast<size_t>(units * inner) < kParallelBytes) body(0, units);
    else ctx.pool().parallel_for(units, body, std::max<int64_t>(1, 16384 / std::max<int64_t>(inner, 1)));
  }
  std::string describe() const override { return "gather_memcpy"; }

 private:
  std::string what_;
  int64_t axis_;
};

class Tile final : public Kernel {
 public:
  explicit Tile(const Node& node) : what_(node.describe()) {}
  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& x = *in[0];
    Tensor& y = *out[0];
    const int r = x.rank();
    check_rank(what_, r);
    const size_t esize = dtype_size(x.dtype());
    if (y.numel() == 0) return;
    if (r == 0) {
      std::memcpy(y.raw(), x.raw(), esize);
      return;
    }
    int64_t in_stride[kMaxRank];
    in_stride[r - 1] = 1;
    for (int a = r - 2; a >= 0; --a) in_stride[a] = in_stride[a + 1] * x.shape()[a + 1];
    const int64_t in_row = x.shape()[r - 1];
    const int64_t reps = y.shape()[r - 1] / in_row;
    const size_t in_row_bytes = static_cast<size_t>(in_row) * esize;
    const int64_t rows = y.numel() / y.shape()[r - 1];
    const auto* src = static_cast<const char*>(x.raw());
    auto* dst = static_cast<char*>(y.raw());
    const Shape& ys = y.shape();
    const Shape& xs = x.shape();
    auto body = [&](int64_t begin, int64_t end) {
      int64_t idx[kMaxRank];
      int64_t rem = begin;
      for (int a = r - 2; a >= 0; --a) {
        idx[a] = rem % ys[a];
        rem /= ys[a];
      }
      for (int64_t row = begin; row < end; ++row) {
        int64_t off = 0;
        for (int a = 0; a < r - 1; ++a) off += (idx[a] % xs[a]) * in_stride[a];
        const char* s = src + off * static_cast<int64_t>(esize);
        char* d = dst + row * reps * static_cast<int64_t>(in_row_bytes);
        for (int64_t k = 0; k < reps; ++k) std::memcpy(d + k * in_row_bytes, s, in_row_bytes);
        for (int a = r - 2; a >= 0; --a) {
          if (++idx[a] < ys[a]) break;
          idx[a] = 0;
        }
      }
    };
    if (y.nbytes() < kParallelBytes) body(0, rows);
    else ctx.pool().parallel_for(rows, body);
  }
  std::string describe() const override { return "tile_memcpy"; }

 private:
  std::string what_;
};

}  // namespace

std::unique_ptr<Kernel> create_gather(const Node& node) {
  const Value* idx = node.input(1);
  if (idx && idx->dtype() != DType::kUndefined && idx->dtype() != DType::kInt64 && idx->dtype() != DType::kInt32)
    fail(ErrorKind::kUnsupportedOperator, node.describe(), ": indices must be int32 or int64, got ",
         dtype_name(idx->dtype()));
  return std::make_unique<Gather>(node);
}

std::unique_ptr<Kernel> create_tile(const Node& node) { return std::make_unique<Tile>(node); }

}  // namespace shape_ops
}  // namespace engine
