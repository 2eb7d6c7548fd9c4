// Softmax / LogSoftmax along one axis (opset 13 semantics; older opsets are
// rewritten into this form by pyengine/onnx_io.py). See softmax_ref.cc for
// the formula. The input is viewed as [outer, len, inner]: with inner = 1
// (the last axis, the common case) rows run in parallel; otherwise blocks of
// up to 256 adjacent columns of one outer slice do, so each vector load
// stays contiguous.
#include <algorithm>

#include "cpu/kernels/norm_pool/norm_pool.h"

namespace engine {
namespace {

constexpr int64_t kColBlock = 256;

class SoftmaxKernel final : public Kernel {
 public:
  explicit SoftmaxKernel(const Node& node) : desc_(node.describe()) {
    log_ = node.kind() == OpKind::kLogSoftmax;
    ENGINE_ENFORCE(node.input(0)->dtype() == DType::kFloat32 || node.input(0)->dtype() == DType::kUndefined,
                   kUnsupportedOperator, desc_, ": only float32 is supported, got ",
                   dtype_name(node.input(0)->dtype()));
    axis_ = node.attr_int("axis", -1);
    row_ = NORM_POOL_PICK(softmax_row_f32);
    cols_ = NORM_POOL_PICK(softmax_cols_f32);
    isa_ = NORM_POOL_TIER(softmax_row_f32);
  }

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& x = *in[0];
    const int64_t rank = x.rank();
    if (rank == 0) {  // a scalar: one element along no axis
      out[0]->data<float>()[0] = log_ ? 0.f : 1.f;
      return;
    }
    ENGINE_ENFORCE(axis_ >= -rank && axis_ < rank, kShape, desc_, ": axis ", axis_, " is out of range for rank ",
                   rank);
    const int64_t axis = axis_ < 0 ? axis_ + rank : axis_;
    int64_t outer = 1, inner = 1;
    for (int64_t d = 0; d < axis; ++d) outer *= x.dim(static_cast<int>(d));
    for (int64_t d = axis + 1; d < rank; ++d) inner *= x.dim(static_cast<int>(d));
    const int64_t len = x.dim(static_cast<int>(axis));
    if (x.numel() == 0) return;
    const float* xp = x.data<float>();
    float* yp = out[0]->data<float>();
    if (inner == 1) {
      ctx.pool().parallel_for(
          outer, [&](int64_t r0, int64_t r1) {
            for (int64_t r = r0; r < r1; ++r) row_(xp + r * len, yp + r * len, len, log_);
          },
          grain_for(len));
      return;
    }
    const int64_t blocks = (inner + kColBlock - 1) / kColBlock;
    ctx.pool().parallel_for(
        outer * blocks, [&](int64_t t0, int64_t t1) {
          for (int64_t t = t0; t < t1; ++t) {
            const int64_t o = t / blocks, j0 = (t % blocks) * kColBlock;
            const int64_t off = o * len * inner + j0;
            cols_(xp + off, yp + off, len, inner, std::min(kColBlock, inner - j0), log_);
          }
        },
        grain_for(len * std::min(kColBlock, inner)));
  }

  std::string describe() const override { return str_cat(log_ ? "log_softmax_f32_" : "softmax_f32_", isa_); }

 private:
  std::string desc_;
  const char* isa_ = "ref";
  bool log_ = false;
  int64_t axis_ = -1;
  void (*row_)(const float*, float*, int64_t, bool) = nullptr;
  void (*cols_)(const float*, float*, int64_t, int64_t, int64_t, bool) = nullptr;
};

}  // namespace

std::unique_ptr<Kernel> make_softmax_kernel(const Node& node) { return std::make_unique<SoftmaxKernel>(node); }

}  // namespace engine
