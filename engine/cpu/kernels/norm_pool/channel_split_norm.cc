// ChannelSplitNorm (domain pyengine; engine/ir/ops.def): IBN-Net's
//   Split(x, [k, C-k], axis 1) -> InstanceNorm | BatchNorm -> Concat(axis 1)
// as one op. Each (image, channel) row of the output is written once, in
// place in the concatenated output: the InstanceNorm channels with the
// two-pass moments and affine_row steps of InstanceNormalization (so results
// agree with the standalone op bit for bit), the BatchNorm channels (folded
// to scale/shift) with the affine step. Nothing is copied: the unfused graph
// writes two split halves, two normalized halves and the concatenation.
// Preconditions: float32, X rank >= 3; in_scale/in_bias k elements,
// scale/shift C - k.
#include <cmath>

#include "cpu/kernels/norm_pool/norm_pool.h"

namespace engine {
namespace {

class ChannelSplitNormKernel final : public Kernel {
 public:
  explicit ChannelSplitNormKernel(const Node& node) : desc_(node.describe()) {
    ENGINE_ENFORCE(node.num_inputs() == 5, kInvalidModel, desc_, ": expects inputs X, in_scale, in_bias, scale, shift");
    for (int i = 0; i < 5; ++i)
      ENGINE_ENFORCE(node.input(i) && (node.input(i)->dtype() == DType::kFloat32 ||
                                       node.input(i)->dtype() == DType::kUndefined),
                     kUnsupportedOperator, desc_, ": only float32 is supported");
    eps_ = node.attr_float("epsilon", 1e-5f);
    k_ = node.attr_int("instance_channels", -1);
    instance_first_ = node.attr_int("instance_first", 1) != 0;
    moments_ = NORM_POOL_PICK(moments_f32);
    row_ = NORM_POOL_PICK(affine_row_f32);
    isa_ = NORM_POOL_TIER(moments_f32);
  }

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& x = *in[0];
    ENGINE_ENFORCE(x.rank() >= 3, kShape, desc_, ": input must have rank >= 3, got ", shape_str(x.shape()));
    const int64_t n = x.dim(0), c = x.dim(1), hw = n * c > 0 ? x.numel() / (n * c) : 0;
    ENGINE_ENFORCE(k_ >= 0 && k_ <= c && in[1]->numel() == k_ && in[2]->numel() == k_ &&
                       in[3]->numel() == c - k_ && in[4]->numel() == c - k_,
                   kShape, desc_, ": parameters do not fit ", c, " channels split at ", k_);
    const int64_t in0 = instance_first_ ? 0 : c - k_;  // first InstanceNorm channel
    const int64_t af0 = instance_first_ ? k_ : 0;      // first affine channel
    const float *is = in[1]->data<float>(), *ib = in[2]->data<float>();
    const float *as = in[3]->data<float>(), *ab = in[4]->data<float>();
    const float* xp = x.data<float>();
    float* yp = out[0]->data<float>();
    ctx.pool().parallel_for(
        n * c,
        [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) {
            const int64_t ch = r % c;
            const float* xr = xp + r * hw;
            float* yr = yp + r * hw;
            if (ch >= in0 && ch < in0 + k_) {
              double mean = 0, var = 0;
              moments_(xr, hw, &mean, &var);
              const double inv = 1.0 / std::sqrt(var + static_cast<double>(eps_));
              const float mean_f = static_cast<float>(mean);
              const double a = static_cast<double>(is[ch - in0]) * inv;
              const double b = static_cast<double>(ib[ch - in0]) - (mean - mean_f) * a;
              row_(xr, yr, hw, mean_f, static_cast<float>(a), static_cast<float>(b));
            } else {
              row_(xr, yr, hw, 0.f, as[ch - af0], ab[ch - af0]);
            }
          }
        },
        grain_for(hw));
  }

  std::string describe() const override { return str_cat("channel_split_norm_f32_", isa_); }

 private:
  std::string desc_;
  const char* isa_ = "ref";
  float eps_ = 1e-5f;
  int64_t k_ = -1;
  bool instance_first_ = true;
  void (*moments_)(const float*, int64_t, double*, double*) = nullptr;
  void (*row_)(const float*, float*, int64_t, float, float, float) = nullptr;
};

}  // namespace

std::unique_ptr<Kernel> make_channel_split_norm_kernel(const Node& node) {
  return std::make_unique<ChannelSplitNormKernel>(node);
}

}  // namespace engine
