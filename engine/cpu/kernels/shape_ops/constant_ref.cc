// Ops that make small tensors: Constant, Shape, ConstantOfShape, Range.
//
//   Constant:         y = value attribute (value, value_float(s), value_int(s))
//   Shape:            y = int64[x.shape[start:end]]
//   ConstantOfShape:  y[shape] = value (default float 0)
//   Range:            y[i] = start + i * delta, accumulated as ONNX Runtime does
// Constant and Shape get their output value from shape inference, so the
// executor never runs them; run() still works for callers that do. Constant
// takes its value from the infer function itself, so the two cannot drift.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "cpu/kernels/shape_ops/shape_ops.h"
#include "ir/infer.h"

namespace engine {
namespace shape_ops {
namespace {

class Constant final : public Kernel {
 public:
  explicit Constant(std::shared_ptr<const Tensor> value) : value_(std::move(value)) {}
  void run(KernelContext&, const std::vector<const Tensor*>&, const std::vector<Tensor*>& out) override {
    if (value_->nbytes()) std::memcpy(out[0]->raw(), value_->raw(), value_->nbytes());
  }
  std::string describe() const override { return "constant"; }

 private:
  std::shared_ptr<const Tensor> value_;
};

class ShapeOf final : public Kernel {
 public:
  explicit ShapeOf(const Node& node) : start_(node.attr_int("start", 0)), end_(node.attr_int("end", INT64_MAX)) {}
  void run(KernelContext&, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const int64_t r = in[0]->rank();
    int64_t s = start_ < 0 ? start_ + r : start_, e = end_ < 0 ? end_ + r : end_;
    s = std::min(std::max<int64_t>(s, 0), r);
    e = std::min(std::max<int64_t>(e, 0), r);
    int64_t* y = out[0]->data<int64_t>();
    for (int64_t i = s; i < e; ++i) y[i - s] = in[0]->shape()[i];
  }
  std::string describe() const override { return "shape"; }

 private:
  int64_t start_, end_;
};

class ConstantOfShape final : public Kernel {
 public:
  ConstantOfShape(const void* value, size_t esize) : esize_(esize) { std::memcpy(value_, value, esize); }
  void run(KernelContext&, const std::vector<const Tensor*>&, const std::vector<Tensor*>& out) override {
    fill_elements(out[0]->raw(), out[0]->numel(), value_, esize_);
  }
  std::string describe() const override { return "constant_of_shape"; }

 private:
  alignas(8) unsigned char value_[8] = {};
  size_t esize_;
};

template <typename T>
void range_fill(const Tensor& start, const Tensor& delta, Tensor& out) {
  T v = start.data<T>()[0];
  const T d = delta.data<T>()[0];
  T* y = out.data<T>();
  for (int64_t i = 0; i < out.numel(); ++i, v += d) y[i] = v;
}

class Range final : public Kernel {
 public:
  explicit Range(const Node& node) : what_(node.describe()) {}
  void run(KernelContext&, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    switch (out[0]->dtype()) {
      case DType::kFloat32: range_fill<float>(*in[0], *in[2], *out[0]); break;
      case DType::kFloat64: range_fill<double>(*in[0], *in[2], *out[0]); break;
      case DType::kInt16: range_fill<int16_t>(*in[0], *in[2], *out[0]); break;
      case DType::kInt32: range_fill<int32_t>(*in[0], *in[2], *out[0]); break;
      case DType::kInt64: range_fill<int64_t>(*in[0], *in[2], *out[0]); break;
      default:
        fail(ErrorKind::kUnsupportedOperator, what_, ": Range does not support ", dtype_name(out[0]->dtype()));
    }
  }
  std::string describe() const override { return "range"; }

 private:
  std::string what_;
};

bool range_dtype_ok(DType t) {
  return t == DType::kFloat32 || t == DType::kFloat64 || t == DType::kInt16 || t == DType::kInt32 ||
         t == DType::kInt64;
}

}  // namespace

std::unique_ptr<Kernel> create_constant(const Node& node) {
  InferContext ictx(node, {}, 1);
  infer_node(ictx);
  return std::make_unique<Constant>(ictx.output(0).value);
}

std::unique_ptr<Kernel> create_shape(const Node& node) { return std::make_unique<ShapeOf>(node); }

std::unique_ptr<Kernel> create_constant_of_shape(const Node& node) {
  if (!node.has_attr("value")) {
    float zero = 0.f;
    return std::make_unique<ConstantOfShape>(&zero, sizeof(float));
  }
  const Attribute& a = node.attrs().at("value");
  if (a.type != Attribute::Type::kTensor || !a.t || a.t->numel() != 1)
    fail(ErrorKind::kInvalidModel, node.describe(), ": attribute 'value' must be a one-element tensor");
  size_t esize = dtype_size(a.t->dtype());
  if (esize == 0 || esize > 8)
    fail(ErrorKind::kUnsupportedOperator, node.describe(), ": value of type ", dtype_name(a.t->dtype()),
         " is not supported");
  return std::make_unique<ConstantOfShape>(a.t->raw(), esize);
}

std::unique_ptr<Kernel> create_range(const Node& node) {
  DType t = node.input(0) ? node.input(0)->dtype() : DType::kUndefined;
  if (t != DType::kUndefined && !range_dtype_ok(t))
    fail(ErrorKind::kUnsupportedOperator, node.describe(), ": Range does not support ", dtype_name(t));
  return std::make_unique<Range>(node);
}

}  // namespace shape_ops
}  // namespace engine
