// ReduceMean / ReduceSum / ReduceMax / ReduceMin over a set of axes:
//   y[kept] = op over the reduced coordinates of x, keepdims or not.
// Axes come from the `axes` attribute (older opsets) or the optional second
// input (opset 13+ for Sum, 18+ for the others); no axes means all axes,
// unless noop_with_empty_axes = 1, which makes the op an identity.
// Dtypes: float32 for every op; int64 and int32 for Sum, Max and Min.
// Sums accumulate in double (float32) or int64 (integers).
// The input is viewed as alternating runs of kept and reduced dims (size-1
// dims dropped, neighbours of the same kind merged). The common [K, R] case
// (trailing axes: global pooling written as ReduceMean) uses the row
// reductions of global_pool_*.cc; every other case walks the merged dims
// recursively into an accumulator per output element.
#include <algorithm>
#include <cstring>
#include <limits>

#include "cpu/kernels/norm_pool/norm_pool.h"
#include "cpu/simd/vec_scalar.h"

namespace engine {
namespace {

enum class ReduceOp { kSum, kMean, kMax, kMin };

// Merged view of the input: dim sizes, input strides, accumulator strides
// (0 along reduced dims).
struct Layout {
  std::vector<int64_t> size, in_stride, acc_stride;
  std::vector<bool> reduced;
};

Layout make_layout(const Shape& shape, const std::vector<bool>& red) {
  Layout l;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    if (!l.size.empty() && l.reduced.back() == red[d]) {
      l.size.back() *= shape[d];
    } else {
      l.size.push_back(shape[d]);
      l.reduced.push_back(red[d]);
    }
  }
  const size_t n = l.size.size();
  l.in_stride.assign(n, 1);
  l.acc_stride.assign(n, 0);
  int64_t is = 1, as = 1;
  for (size_t i = n; i-- > 0;) {
    l.in_stride[i] = is;
    is *= l.size[i];
    if (!l.reduced[i]) {
      l.acc_stride[i] = as;
      as *= l.size[i];
    }
  }
  return l;
}

template <typename Acc, typename Op>
struct Walker {
  const Layout& l;
  Op op;
  // The innermost dim is restricted to [j0, j1).
  template <typename T>
  void walk(size_t level, const T* x, Acc* acc, int64_t j0, int64_t j1) const {
    const size_t last = l.size.size() - 1;
    if (level == last) {
      if (l.reduced[last]) {
        Acc a = *acc;
        for (int64_t j = j0; j < j1; ++j) a = op(a, static_cast<Acc>(x[j]));
        *acc = a;
      } else {
        for (int64_t j = j0; j < j1; ++j) acc[j] = op(acc[j], static_cast<Acc>(x[j]));
      }
      return;
    }
    for (int64_t i = 0; i < l.size[level]; ++i)
      walk(level + 1, x + i * l.in_stride[level], acc + i * l.acc_stride[level], j0, j1);
  }
};

template <typename T, typename Acc, typename Op>
void reduce_generic(KernelContext& ctx, const Layout& l, const T* x, T* y, int64_t out_n, Acc init, Op op,
                    double divisor) {
  auto* acc = static_cast<Acc*>(ctx.scratch(std::max<int64_t>(1, out_n) * sizeof(Acc)));
  std::fill(acc, acc + out_n, init);
  const Walker<Acc, Op> w{l, op};
  const size_t nd = l.size.size();
  const int64_t inner = l.size[nd - 1];
  const int64_t total = shape_numel(l.size);
  if (total == 0) {
    // Empty input: every output keeps the identity.
  } else if (nd > 1 && !l.reduced[0]) {
    // Kept outer dim: each chunk owns a slab of accumulators.
    ctx.pool().parallel_for(
        l.size[0], [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) w.walk(1, x + i * l.in_stride[0], acc + i * l.acc_stride[0], 0, inner);
        },
        grain_for(total / l.size[0]));
  } else if (nd > 1 && !l.reduced[nd - 1]) {
    // Kept inner dim: each chunk owns a range of columns.
    ctx.pool().parallel_for(
        inner, [&](int64_t b, int64_t e) { w.walk(0, x, acc, b, e); }, std::max<int64_t>(64, grain_for(total / inner)));
  } else {
    w.walk(0, x, acc, 0, inner);
  }
  for (int64_t i = 0; i < out_n; ++i)
    y[i] = divisor > 0 ? static_cast<T>(static_cast<double>(acc[i]) / divisor) : static_cast<T>(acc[i]);
}

class ReduceKernel final : public Kernel {
 public:
  explicit ReduceKernel(const Node& node) : desc_(node.describe()) {
    switch (node.kind()) {
      case OpKind::kReduceSum: op_ = ReduceOp::kSum; break;
      case OpKind::kReduceMean: op_ = ReduceOp::kMean; break;
      case OpKind::kReduceMax: op_ = ReduceOp::kMax; break;
      default: op_ = ReduceOp::kMin; break;
    }
    const DType t = node.input(0)->dtype();
    const bool int_ok = op_ != ReduceOp::kMean && (t == DType::kInt64 || t == DType::kInt32);
    ENGINE_ENFORCE(t == DType::kFloat32 || t == DType::kUndefined || int_ok, kUnsupportedOperator, desc_,
                   ": dtype ", dtype_name(t), " is not supported");
    noop_ = node.attr_int("noop_with_empty_axes", 0) != 0;
    if (node.has_attr("axes")) {
      axes_ = node.attr_ints("axes");
      axes_known_ = true;
    } else if (node.num_inputs() < 2 || !node.input(1)) {
      axes_known_ = true;  // empty
    } else if (node.input(1)->is_constant()) {
      axes_ = node.input(1)->constant()->to_int_vector();
      axes_known_ = true;
    }
    row_sum_ = NORM_POOL_PICK(row_sum_f32);
    row_max_ = NORM_POOL_PICK(row_max_f32);
    row_min_ = NORM_POOL_PICK(row_min_f32);
    isa_ = NORM_POOL_TIER(row_sum_f32);
  }

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& x = *in[0];
    Tensor& y = *out[0];
    std::vector<int64_t> axes = axes_known_ ? axes_ : in[1]->to_int_vector();
    const int rank = x.rank();
    if (axes.empty() && noop_) {
      if (y.raw() != x.raw()) std::memcpy(y.raw(), x.raw(), x.nbytes());
      return;
    }
    std::vector<bool> red(rank, axes.empty());
    for (int64_t a : axes) {
      ENGINE_ENFORCE(a >= -rank && a < rank, kShape, desc_, ": axis ", a, " is out of range for rank ", rank);
      red[a < 0 ? a + rank : a] = true;
    }
    int64_t count = 1;
    for (int d = 0; d < rank; ++d)
      if (red[d]) count *= x.dim(d);
    const Layout l = make_layout(x.shape(), red);
    switch (x.dtype()) {
      case DType::kFloat32: run_float(ctx, l, x.data<float>(), y.data<float>(), y.numel(), count); break;
      case DType::kInt64: run_int(ctx, l, x.data<int64_t>(), y.data<int64_t>(), y.numel()); break;
      case DType::kInt32: run_int(ctx, l, x.data<int32_t>(), y.data<int32_t>(), y.numel()); break;
      default: fail(ErrorKind::kDType, desc_, ": dtype ", dtype_name(x.dtype()), " is not supported");
    }
  }

  std::string describe() const override { return str_cat("reduce_", isa_); }

 private:
  void run_float(KernelContext& ctx, const Layout& l, const float* x, float* y, int64_t out_n, int64_t count) {
    if (l.size.empty()) {  // every dim has size 1 (or the input is a scalar)
      if (out_n > 0) y[0] = x[0];
      return;
    }
    const size_t nd = l.size.size();
    if (l.reduced[nd - 1] && (nd == 1 || (nd == 2 && !l.reduced[0]))) {
      const int64_t rows = nd == 1 ? 1 : l.size[0], len = l.size[nd - 1];
      float (*row)(const float*, int64_t) =
          op_ == ReduceOp::kMax ? row_max_ : op_ == ReduceOp::kMin ? row_min_ : row_sum_;
      const float div = static_cast<float>(count);
      ctx.pool().parallel_for(
          rows, [&](int64_t r0, int64_t r1) {
            for (int64_t r = r0; r < r1; ++r) {
              const float v = row(x + r * len, len);
              y[r] = op_ == ReduceOp::kMean ? v / div : v;
            }
          },
          grain_for(len));
      return;
    }
    switch (op_) {
      case ReduceOp::kSum:
      case ReduceOp::kMean:
        reduce_generic<float, double>(ctx, l, x, y, out_n, 0.0, [](double a, double b) { return a + b; },
                                      op_ == ReduceOp::kMean ? static_cast<double>(count) : 0.0);
        break;
      case ReduceOp::kMax:
        reduce_generic<float, float>(ctx, l, x, y, out_n, -std::numeric_limits<float>::infinity(),
                                     [](float a, float b) { return simd::scalar::max_nan(a, b); }, 0.0);
        break;
      case ReduceOp::kMin:
        reduce_generic<float, float>(ctx, l, x, y, out_n, std::numeric_limits<float>::infinity(),
                                     [](float a, float b) { return simd::scalar::min_nan(a, b); }, 0.0);
        break;
    }
  }

  template <typename T>
  void run_int(KernelContext& ctx, const Layout& l, const T* x, T* y, int64_t out_n) {
    if (l.size.empty()) {
      if (out_n > 0) y[0] = x[0];
      return;
    }
    switch (op_) {
      case ReduceOp::kMax:
        reduce_generic<T, int64_t>(ctx, l, x, y, out_n, std::numeric_limits<T>::lowest(),
                                   [](int64_t a, int64_t b) { return std::max(a, b); }, 0.0);
        break;
      case ReduceOp::kMin:
        reduce_generic<T, int64_t>(ctx, l, x, y, out_n, std::numeric_limits<T>::max(),
                                   [](int64_t a, int64_t b) { return std::min(a, b); }, 0.0);
        break;
      default:
        reduce_generic<T, int64_t>(ctx, l, x, y, out_n, 0, [](int64_t a, int64_t b) { return a + b; }, 0.0);
        break;
    }
  }

  std::string desc_;
  const char* isa_ = "ref";
  ReduceOp op_ = ReduceOp::kSum;
  bool noop_ = false, axes_known_ = false;
  std::vector<int64_t> axes_;
  float (*row_sum_)(const float*, int64_t) = nullptr;
  float (*row_max_)(const float*, int64_t) = nullptr;
  float (*row_min_)(const float*, int64_t) = nullptr;
};

}  // namespace

std::unique_ptr<Kernel> make_reduce_kernel(const Node& node) { return std::make_unique<ReduceKernel>(node); }

}  // namespace engine
