// GlobalAveragePool / GlobalMaxPool: y[n, c, 1, ...] = mean / max of the
// (n, c) plane, for any rank >= 3. One row reduction per plane; planes run in
// parallel (ResNet's final 7x7 average pool has 2048 of them).
#include "cpu/kernels/norm_pool/norm_pool.h"

namespace engine {
namespace {

class GlobalPoolKernel final : public Kernel {
 public:
  explicit GlobalPoolKernel(const Node& node) : desc_(node.describe()) {
    max_ = node.kind() == OpKind::kGlobalMaxPool;
    ENGINE_ENFORCE(node.input(0)->dtype() == DType::kFloat32 || node.input(0)->dtype() == DType::kUndefined,
                   kUnsupportedOperator, desc_, ": only float32 is supported, got ",
                   dtype_name(node.input(0)->dtype()));
    row_ = max_ ? NORM_POOL_PICK(row_max_f32) : NORM_POOL_PICK(row_sum_f32);
    isa_ = max_ ? NORM_POOL_TIER(row_max_f32) : NORM_POOL_TIER(row_sum_f32);
  }

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& x = *in[0];
    ENGINE_ENFORCE(x.rank() >= 3, kShape, desc_, ": input must have rank >= 3, got ", shape_str(x.shape()));
    const int64_t planes = x.dim(0) * x.dim(1);
    const int64_t s = planes > 0 ? x.numel() / planes : 0;
    const float* xp = x.data<float>();
    float* yp = out[0]->data<float>();
    const float count = static_cast<float>(s);
    ctx.pool().parallel_for(
        planes, [&](int64_t p0, int64_t p1) {
          for (int64_t p = p0; p < p1; ++p) {
            const float r = row_(xp + p * s, s);
            yp[p] = max_ ? r : r / count;
          }
        },
        grain_for(s));
  }

  std::string describe() const override {
    return str_cat(max_ ? "global_max_pool_f32_" : "global_average_pool_f32_", isa_);
  }

 private:
  std::string desc_;
  const char* isa_ = "ref";
  bool max_ = false;
  float (*row_)(const float*, int64_t) = nullptr;
};

}  // namespace

std::unique_ptr<Kernel> make_global_pool_kernel(const Node& node) {
  return std::make_unique<GlobalPoolKernel>(node);
}

}  // namespace engine
