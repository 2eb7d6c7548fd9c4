// InstanceNormalization and GroupNormalization:
//   y[n, c, s] = (x[n, c, s] - mean[n, g]) / sqrt(var[n, g] + eps) * scale + bias,
// with the moments over the channels of group g = c / (C / G) and all spatial
// positions. InstanceNormalization is the case G = C. GroupNormalization's
// scale and bias have G elements (opset 18: one per group) or C elements
// (opset 21: one per channel); the node does not know its opset, so the size
// decides (both readings agree when G = C).
// Preconditions: x is (N, C, D1, ...) float32, rank >= 2, C divisible by G.
// In NCHW the channels of one group are contiguous, so each (n, g) block is
// one contiguous range: two-pass moments over it, then the per-channel affine
// (x - mean) * (scale * inv_std) + bias. Blocks run in parallel.
#include <cmath>

#include "cpu/kernels/norm_pool/norm_pool.h"

namespace engine {
namespace {

class GroupNormKernel final : public Kernel {
 public:
  explicit GroupNormKernel(const Node& node) : desc_(node.describe()) {
    instance_ = node.kind() == OpKind::kInstanceNormalization;
    ENGINE_ENFORCE(node.num_inputs() == 3 && node.input(1) && node.input(2), kInvalidModel, desc_,
                   ": expects inputs X, scale and bias");
    for (int i = 0; i < 3; ++i)
      ENGINE_ENFORCE(node.input(i)->dtype() == DType::kFloat32 || node.input(i)->dtype() == DType::kUndefined,
                     kUnsupportedOperator, desc_, ": only float32 is supported");
    eps_ = node.attr_float("epsilon", 1e-5f);
    if (!instance_) {
      ENGINE_ENFORCE(node.has_attr("num_groups"), kInvalidModel, desc_, ": missing attribute num_groups");
      groups_ = node.attr_int("num_groups", 1);
      ENGINE_ENFORCE(groups_ > 0, kInvalidModel, desc_, ": num_groups must be positive, got ", groups_);
    }
    moments_ = NORM_POOL_PICK(moments_f32);
    row_ = NORM_POOL_PICK(affine_row_f32);
    isa_ = NORM_POOL_TIER(moments_f32);
  }

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& x = *in[0];
    ENGINE_ENFORCE(x.rank() >= 2, kShape, desc_, ": input must have rank >= 2, got ", shape_str(x.shape()));
    const int64_t n = x.dim(0), c = x.dim(1), spatial = n * c > 0 ? x.numel() / (n * c) : 0;
    const int64_t g = instance_ ? c : groups_;
    ENGINE_ENFORCE(g > 0 && c % g == 0, kShape, desc_, ": ", c, " channels cannot be split into ", g, " groups");
    const int64_t cpg = c / g;
    const int64_t ns = in[1]->numel(), nb = in[2]->numel();
    ENGINE_ENFORCE((ns == c || ns == g) && (nb == c || nb == g), kShape, desc_, ": scale and bias must have ", c,
                   instance_ ? "" : str_cat(" or ", g), " elements, got ", shape_str(in[1]->shape()), " and ",
                   shape_str(in[2]->shape()));
    const int64_t sdiv = ns == c ? 1 : cpg, bdiv = nb == c ? 1 : cpg;
    const float* scale = in[1]->data<float>();
    const float* bias = in[2]->data<float>();
    const float* xp = x.data<float>();
    float* yp = out[0]->data<float>();
    const int64_t block = cpg * spatial;
    ctx.pool().parallel_for(
        n * g, [&](int64_t b0, int64_t b1) {
          for (int64_t blk = b0; blk < b1; ++blk) {
            double mean = 0, var = 0;
            moments_(xp + blk * block, block, &mean, &var);
            const double inv = 1.0 / std::sqrt(var + static_cast<double>(eps_));
            const float mean_f = static_cast<float>(mean);
            const int64_t c0 = (blk % g) * cpg;
            for (int64_t k = 0; k < cpg; ++k) {
              const int64_t ch = c0 + k;
              const double a = static_cast<double>(scale[ch / sdiv]) * inv;
              // x - mean_f is exact for x near the mean; the rounding residual
              // of mean_f moves into the bias (it matters when |mean| >> std).
              const double b = static_cast<double>(bias[ch / bdiv]) - (mean - mean_f) * a;
              const int64_t off = blk * block + k * spatial;
              row_(xp + off, yp + off, spatial, mean_f, static_cast<float>(a), static_cast<float>(b));
            }
          }
        },
        grain_for(block));
  }

  std::string describe() const override {
    return str_cat(instance_ ? "instance_norm_f32_" : "group_norm_f32_", isa_, " two-pass moments");
  }

 private:
  std::string desc_;
  const char* isa_ = "ref";
  bool instance_ = false;
  int64_t groups_ = 0;
  float eps_ = 1e-5f;
  void (*moments_)(const float*, int64_t, double*, double*) = nullptr;
  void (*row_)(const float*, float*, int64_t, float, float, float) = nullptr;
};

}  // namespace

std::unique_ptr<Kernel> make_group_norm_kernel(const Node& node) { return std::make_unique<GroupNormKernel>(node); }

}  // namespace engine
