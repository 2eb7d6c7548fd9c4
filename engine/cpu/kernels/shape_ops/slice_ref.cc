// Slice and Expand, both as one strided_copy.
//
//   Slice:  y[i] = x[start + i * step]  per sliced axis (ONNX clamping rules,
//           negative steps walk backwards, INT64_MAX/INT64_MIN ends clamp)
//   Expand: y = x broadcast to numpy(x.shape, shape); broadcast axes read
//           with stride 0
// starts/ends/axes/steps are read from the inputs at every run (opset >= 10;
// they are ordinary tensors then, known or not at plan time) or from the
// attributes (opset < 10). Works for every dtype by element size.
#include <algorithm>
#include <cstdint>

#include "cpu/kernels/shape_ops/shape_ops.h"

namespace engine {
namespace shape_ops {
namespace {

void read_ints(const Tensor* t, std::vector<int64_t>& v) {
  v.clear();
  if (!t) return;
  for (int64_t i = 0; i < t->numel(); ++i) v.push_back(t->int_at(i));
}

class Slice final : public Kernel {
 public:
  explicit Slice(const Node& node)
      : what_(node.describe()),
        from_inputs_(node.num_inputs() > 1),
        starts_(node.attr_ints("starts")),
        ends_(node.attr_ints("ends")),
        axes_(node.attr_ints("axes")) {}

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& x = *in[0];
    const int r = x.rank();
    check_rank(what_, r);
    if (out[0]->numel() == 0) return;
    if (from_inputs_) {
      read_ints(in[1], starts_);
      read_ints(in[2], ends_);
      read_ints(in.size() > 3 ? in[3] : nullptr, axes_);
      read_ints(in.size() > 4 ? in[4] : nullptr, steps_);
    }
    int64_t start[kMaxRank], step[kMaxRank], stride[kMaxRank], src_strides[kMaxRank];
    for (int a = 0; a < r; ++a) {
      start[a] = 0;
      step[a] = 1;
    }
    const size_t n = starts_.size();
    for (size_t i = 0; i < n; ++i) {
      int64_t a = axes_.empty() ? static_cast<int64_t>(i) : axes_[i];
      if (a < 0) a += r;
      ENGINE_ENFORCE(a >= 0 && a < r && i < ends_.size(), kInvalidModel, what_, ": invalid axes or ends");
      const int64_t d = x.shape()[a];
      const int64_t st = steps_.empty() ? 1 : steps_[i];
      ENGINE_ENFORCE(st != 0, kInvalidModel, what_, ": steps cannot be 0");
      int64_t s = starts_[i];
      if (s < 0) s += d;
      s = st > 0 ? std::clamp<int64_t>(s, 0, d) : std::clamp<int64_t>(s, 0, d - 1);
      start[a] = s;
      step[a] = st;
    }
    stride[r - 1 < 0 ? 0 : r - 1] = 1;
    for (int a = r - 2; a >= 0; --a) stride[a] = stride[a + 1] * x.shape()[a + 1];
    int64_t base = 0;
    for (int a = 0; a < r; ++a) {
      base += start[a] * stride[a];
      src_strides[a] = stride[a] * step[a];
    }
    const size_t esize = dtype_size(x.dtype());
    strided_copy(ctx, out[0]->raw(), static_cast<const char*>(x.raw()) + base * static_cast<int64_t>(esize),
                 out[0]->shape().data(), src_strides, r, esize);
  }
  std::string describe() const override { return "slice_strided"; }

 private:
  std::string what_;
  bool from_inputs_;
  std::vector<int64_t> starts_, ends_, axes_, steps_;
};

class Expand final : public Kernel {
 public:
  explicit Expand(const Node& node) : what_(node.describe()) {}
  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& x = *in[0];
    const int r = x.rank(), R = out[0]->rank();
    check_rank(what_, R);
    int64_t stride[kMaxRank], src_strides[kMaxRank];
    int64_t s = 1;
    for (int i = r - 1; i >= 0; --i) {
      stride[i] = s;
      s *= x.shape()[i];
    }
    for (int j = 0; j < R; ++j) {
      const int i = j - (R - r);
      src_strides[j] = (i < 0 || x.shape()[i] == 1) ? 0 : stride[i];
    }
    strided_copy(ctx, out[0]->raw(), x.raw(), out[0]->shape().data(), src_strides, R, dtype_size(x.dtype()));
  }
  std::string describe() const override { return "expand_strided"; }

 private:
  std::string what_;
};

}  // namespace

std::unique_ptr<Kernel> create_slice(const Node& node) { return std::make_unique<Slice>(node); }
std::unique_ptr<Kernel> create_expand(const Node& node) { return std::make_unique<Expand>(node); }

}  // namespace shape_ops
}  // namespace engine
