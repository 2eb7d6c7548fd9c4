// Broadcasting elementwise kernels: binary ops (Add, Sub, Mul, Div, Pow,
// PRelu, Equal, Less, Greater), variadic ops (Max, Min, Sum, Mean over 1..N
// inputs) and Where (3-way broadcast).
// y[idx] = f(a[bcast(idx)], b[bcast(idx)]) with numpy broadcasting; PRelu
// broadcasts its slope to X's shape only.
// Every broadcast goes through a BroadcastPlan (broadcast.h), which turns
// same-shape, scalar and per-channel operands into long rows with stride
// 0 or 1, so the SIMD loops see the fast cases directly and the strided
// walk only advances between rows. The flat output range is split across
// the pool; each thread walks its own share of rows.
// Variadic ops fold left in place into the output: y = f(x0, x1); y = f(y, xk).
#include <cstring>

#include "cpu/kernels/elementwise/broadcast.h"
#include "cpu/kernel_table.h"
#include "cpu/kernels/elementwise/kernels.h"

namespace engine {
namespace eltwise {
namespace {

BinaryFn find_binary(Binary op, DType a, DType b, bool avx2) {
  BinaryFn fn = avx2 ? binary_avx2(op, a, b) : nullptr;
  return fn ? fn : binary_ref(op, a, b);
}

// y = f(a, b) over y's shape, both operands broadcast to it; b_shape, if
// given, replaces b's shape (same element count).
void run_broadcast(KernelContext& ctx, BinaryFn fn, const Tensor& a, const Tensor& b, Tensor& y,
                   const Shape* b_shape = nullptr) {
  if (y.numel() == 0) return;
  BroadcastPlan plan;
  const Shape* shapes[2] = {&a.shape(), b_shape ? b_shape : &b.shape()};
  make_broadcast_plan(y.shape(), shapes, 2, &plan);
  const char* ap = static_cast<const char*>(a.raw());
  const char* bp = static_cast<const char*>(b.raw());
  char* yp = static_cast<char*>(y.raw());
  const size_t ea = dtype_size(a.dtype()), eb = dtype_size(b.dtype()), ey = dtype_size(y.dtype());
  parallel_range(ctx, plan.numel, kGrain, [&](int64_t begin, int64_t end) {
    for_each_row(plan, begin, end, [&](const int64_t* off, const int* s, int64_t pos, int64_t n) {
      fn(ap + off[0] * ea, bp + off[1] * eb, yp + pos * ey, n, s[0], s[1]);
    });
  });
}

template <typename T>
bool has_zero(const Tensor& t) {
  const T* p = t.data<T>();
  bool zero = false;
  for (int64_t i = 0; i < t.numel(); ++i) zero |= p[i] == T(0);
  return zero;
}

void check_no_zero_divisor(const Tensor& b, const std::string& desc) {
  bool zero = false;
  switch (b.dtype()) {
    case DType::kInt64: zero = has_zero<int64_t>(b); break;
    case DType::kInt32: zero = has_zero<int32_t>(b); break;
    case DType::kInt16: zero = has_zero<int16_t>(b); break;
    case DType::kInt8: zero = has_zero<int8_t>(b); break;
    case DType::kUInt64: zero = has_zero<uint64_t>(b); break;
    case DType::kUInt32: zero = has_zero<uint32_t>(b); break;
    case DType::kUInt16: zero = has_zero<uint16_t>(b); break;
    case DType::kUInt8: zero = has_zero<uint8_t>(b); break;
    default: break;  // floating point divides by zero to inf/NaN
  }
  if (zero) fail(ErrorKind::kInvalidArgument, desc, ": integer division by zero");
}

// numpy broadcasting of `s` to `x` without changing x.
bool broadcasts_to(const Shape& s, const Shape& x) {
  if (s.size() > x.size()) return false;
  const size_t off = x.size() - s.size();
  for (size_t d = 0; d < s.size(); ++d)
    if (s[d] != 1 && s[d] != x[off + d]) return false;
  return true;
}

class BinaryKernel final : public Kernel {
 public:
  BinaryKernel(const Node& node, Binary op) : desc_(node.describe()), op_(op), avx2_(kernel_usable("binary_f32_avx2")) {
    const DType a = input_dtype(node, 0), b = input_dtype(node, 1);
    if (a == DType::kUndefined || b == DType::kUndefined) return;
    if (!binary_ref(op, a, b))
      fail(ErrorKind::kUnsupportedOperator, desc_, ": input dtypes ", dtype_name(a), ", ", dtype_name(b),
           " are not supported");
    const bool simd = avx2_ && binary_avx2(op, a, b);
    name_ = str_cat(binary_name(op), "_", dtype_short(a), simd ? "_avx2" : "_ref");
  }

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& a = *in[0];
    const Tensor& b = *in[1];
    BinaryFn fn = find_binary(op_, a.dtype(), b.dtype(), avx2_);
    if (!fn)
      fail(ErrorKind::kUnsupportedOperator, desc_, ": input dtypes ", dtype_name(a.dtype()), ", ",
           dtype_name(b.dtype()), " are not supported");
    if (op_ == Binary::kDiv) check_no_zero_divisor(b, desc_);
    if (op_ == Binary::kPRelu && b.rank() == 1 && a.rank() >= 2 && b.dim(0) == a.dim(1) &&
        !broadcasts_to(b.shape(), a.shape())) {
      // PRelu before opset 7 (and models upgraded from it) gives one slope
      // per channel as [C]: view it as [C, 1, ...] to broadcast along axis 1.
      slope_shape_.assign(a.shape().size() - 1, 1);
      slope_shape_[0] = b.dim(0);
      run_broadcast(ctx, fn, a, b, *out[0], &slope_shape_);
      return;
    }
    run_broadcast(ctx, fn, a, b, *out[0]);
  }
  std::string describe() const override { return name_; }

 private:
  std::string desc_, name_;
  Binary op_;
  bool avx2_;
  Shape slope_shape_;
};

class VariadicKernel final : public Kernel {
 public:
  VariadicKernel(const Node& node, Binary op, bool mean)
      : desc_(node.describe()), op_(op), mean_(mean), avx2_(kernel_usable("binary_f32_avx2")) {
    const DType t = input_dtype(node, 0);
    for (int i = 0; i < node.num_inputs(); ++i) {
      if (!node.input(i)) fail(ErrorKind::kInvalidModel, desc_, ": input ", i, " is empty");
      const DType ti = input_dtype(node, i);
      if (ti != DType::kUndefined && t != DType::kUndefined && ti != t)
        fail(ErrorKind::kInvalidModel, desc_, ": inputs have different dtypes (", dtype_name(t), ", ",
             dtype_name(ti), ")");
    }
    if (node.num_inputs() == 0) fail(ErrorKind::kInvalidModel, desc_, ": needs at least one input");
    if (t == DType::kUndefined) return;
    if (!binary_ref(op, t, t) || (mean && t != DType::kFloat32 && t != DType::kFloat64))
      fail(ErrorKind::kUnsupportedOperator, desc_, ": input dtype ", dtype_name(t), " is not supported");
    const bool simd = avx2_ && binary_avx2(op, t, t);
    name_ = str_cat(mean ? "mean" : op == Binary::kAdd ? "sum" : binary_name(op), "_", dtype_short(t),
                    simd ? "_avx2" : "_ref");
  }

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    Tensor& y = *out[0];
    const DType t = in[0]->dtype();
    BinaryFn fn = find_binary(op_, t, t, avx2_);
    if (!fn || (mean_ && t != DType::kFloat32 && t != DType::kFloat64))
      fail(ErrorKind::kUnsupportedOperator, desc_, ": input dtype ", dtype_name(t), " is not supported");
    if (in.size() == 1) {
      // One input: the output has its shape; a copy.
      std::memcpy(y.raw(), in[0]->raw(), y.nbytes());
      return;
    }
    run_broadcast(ctx, fn, *in[0], *in[1], y);
    for (size_t k = 2; k < in.size(); ++k) run_broadcast(ctx, fn, y, *in[k], y);
    if (mean_) {
      BinaryFn div = find_binary(Binary::kDiv, t, t, avx2_);
      const float count = static_cast<float>(in.size());
      const double count_d = static_cast<double>(in.size());
      const void* cp = t == DType::kFloat64 ? static_cast<const void*>(&count_d) : &count;
      char* yp = static_cast<char*>(y.raw());
      const size_t es = dtype_size(t);
      parallel_range(ctx, y.numel(), kGrain, [&](int64_t b, int64_t e) { div(yp + b * es, cp, yp + b * es, e - b, 1, 0); });
    }
  }
  std::string describe() const override { return name_; }

 private:
  std::string desc_, name_;
  Binary op_;
  bool mean_;
  bool avx2_;
};

class WhereKernel final : public Kernel {
 public:
  explicit WhereKernel(const Node& node) : desc_(node.describe()) {
    const DType c = input_dtype(node, 0), x = input_dtype(node, 1), y = input_dtype(node, 2);
    if (c != DType::kUndefined && c != DType::kBool)
      fail(ErrorKind::kInvalidModel, desc_, ": condition must be bool, got ", dtype_name(c));
    if (x != DType::kUndefined && y != DType::kUndefined && x != y)
      fail(ErrorKind::kInvalidModel, desc_, ": X and Y have different dtypes (", dtype_name(x), ", ", dtype_name(y), ")");
    if (x != DType::kUndefined && !where_ref(dtype_size(x)))
      fail(ErrorKind::kUnsupportedOperator, desc_, ": dtype ", dtype_name(x), " is not supported");
    name_ = str_cat("where_", x == DType::kUndefined ? "any" : dtype_short(x), "_ref");
  }

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& c = *in[0];
    const Tensor& x = *in[1];
    const Tensor& y = *in[2];
    Tensor& o = *out[0];
    WhereFn fn = where_ref(dtype_size(x.dtype()));
    if (!fn || c.dtype() != DType::kBool || x.dtype() != y.dtype())
      fail(ErrorKind::kUnsupportedOperator, desc_, ": dtypes ", dtype_name(c.dtype()), ", ", dtype_name(x.dtype()),
           ", ", dtype_name(y.dtype()), " are not supported");
    if (o.numel() == 0) return;
    BroadcastPlan plan;
    const Shape* shapes[3] = {&c.shape(), &x.shape(), &y.shape()};
    make_broadcast_plan(o.shape(), shapes, 3, &plan);
    const bool* cp = c.data<bool>();
    const char* xp = static_cast<const char*>(x.raw());
    const char* yp = static_cast<const char*>(y.raw());
    char* op = static_cast<char*>(o.raw());
    const size_t es = dtype_size(x.dtype());
    parallel_range(ctx, plan.numel, kGrain, [&](int64_t begin, int64_t end) {
      for_each_row(plan, begin, end, [&](const int64_t* off, const int* s, int64_t pos, int64_t n) {
        fn(cp + off[0], xp + off[1] * es, yp + off[2] * es, op + pos * es, n, s[0], s[1], s[2]);
      });
    });
  }
  std::string describe() const override { return name_; }

 private:
  std::string desc_, name_;
};

}  // namespace

std::unique_ptr<Kernel> make_binary_kernel(const Node& node, Binary op) {
  return std::make_unique<BinaryKernel>(node, op);
}
std::unique_ptr<Kernel> make_variadic_kernel(const Node& node, Binary op, bool mean) {
  return std::make_unique<VariadicKernel>(node, op, mean);
}
std::unique_ptr<Kernel> make_where_kernel(const Node& node) { return std::make_unique<WhereKernel>(node); }

}  // namespace eltwise
}  // namespace engine
