// FusedQuantize and FusedChannelBias (ops.def; passes/fuse_float_quantize.cc):
// the Concat (axis 1), per-channel Add and Relu, and for FusedQuantize the
// QuantizeLinear after them, reading each input plane once and writing the
// output once (int8, or float32): no tensor in between. Per (image, output
// channel) plane the source is that channel's plane of the input that holds
// it; planes are split over threads.
#include <algorithm>
#include <cmath>

#include "cpu/kernel_table.h"
#include "cpu/kernels/quant/quant_kernels.h"
#include "cpu/simd/vec_scalar.h"

namespace engine::qk {

void fused_quantize_run_s8_ref(const float* x, int8_t* y, int64_t n, float bias, bool relu, float scale, int32_t zp) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i] + bias;
    y[i] = quantize_one<int8_t>(relu ? simd::scalar::relu(v) : v, scale, zp);  // NaN stays NaN
  }
}

void fused_channel_bias_run_f32_ref(const float* x, float* y, int64_t n, float bias, bool relu) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i] + bias;
    y[i] = relu ? simd::scalar::relu(v) : v;
  }
}

namespace {

// Minimum elements per parallel task (as QuantizeLinear's).
constexpr int64_t kGrain = 1 << 14;

class FusedQuantizeKernel final : public Kernel {
 public:
  // quantize: FusedQuantize (int8 out), else FusedChannelBias (float32).
  FusedQuantizeKernel(const Node& node, bool quantize)
      : desc_(node.describe()),
        quantize_(quantize),
        scale_(node.attr_float("scale", 0.f)),
        zp_(node.attr_int("zero_point", 0)),
        bias_(node.attr_floats("bias")) {
    ENGINE_ENFORCE(!quantize_ || (scale_ > 0.f && std::isfinite(scale_)), kInvalidModel, desc_, ": scale ", scale_,
                   " must be positive and finite");
    ENGINE_ENFORCE(zp_ >= -128 && zp_ <= 127, kInvalidModel, desc_, ": zero_point ", zp_, " is not an int8 value");
    const std::string act = node.attr_string("activation", "");
    ENGINE_ENFORCE(act.empty() || act == "Relu", kUnsupportedOperator, desc_, ": activation '", act,
                   "' is not supported (Relu)");
    relu_ = act == "Relu";
    if (quantize_) {
      symbol_ = "fused_quantize_s8_ref";
      if (kernel_usable("fused_quantize_s8_avx2")) {
        run_ = fused_quantize_run_s8_avx2;
        symbol_ = "fused_quantize_s8_avx2";
      }
    } else {
      symbol_ = "fused_channel_bias_f32_ref";
      if (kernel_usable("fused_channel_bias_f32_avx2")) {
        run_f32_ = fused_channel_bias_run_f32_avx2;
        symbol_ = "fused_channel_bias_f32_avx2";
      }
    }
  }

  std::string describe() const override { return symbol_; }

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    ENGINE_ENFORCE(!in.empty(), kInvalidModel, desc_, ": needs at least one input");
    const Tensor& x0 = *in[0];
    const int rank = x0.rank();
    ENGINE_ENFORCE(rank >= 2, kShape, desc_, ": inputs need rank >= 2, got ", shape_str(x0.shape()));
    const int64_t batch = x0.dim(0);
    int64_t plane = 1;
    for (int d = 2; d < rank; ++d) plane *= x0.dim(d);
    // first[i]: the first output channel of input i.
    std::vector<int64_t> first(in.size() + 1, 0);
    for (size_t i = 0; i < in.size(); ++i) {
      const Tensor& x = *in[i];
      ENGINE_ENFORCE(x.dtype() == DType::kFloat32, kDType, desc_, ": input ", i, " is ", dtype_name(x.dtype()),
                     ", not float32");
      bool same = x.rank() == rank && x.dim(0) == batch;
      for (int d = 2; same && d < rank; ++d) same = x.dim(d) == x0.dim(d);
      ENGINE_ENFORCE(same, kShape, desc_, ": input ", i, " of shape ", shape_str(x.shape()), " does not join ",
                     shape_str(x0.shape()), " on axis 1");
      first[i + 1] = first[i] + x.dim(1);
    }
    const int64_t channels = first.back();
    ENGINE_ENFORCE(bias_.empty() || static_cast<int64_t>(bias_.size()) == channels, kShape, desc_, ": ",
                   bias_.size(), " bias values for ", channels, " channels");
    Tensor& y = *out[0];
    ENGINE_ENFORCE(y.dtype() == (quantize_ ? DType::kInt8 : DType::kFloat32) && y.numel() == batch * channels * plane,
                   kInternal, desc_, ": bad output");
    const auto zp = static_cast<int32_t>(zp_);
    auto body = [&](int64_t b, int64_t e) {
      size_t i = 0;
      for (int64_t t = b; t < e; ++t) {
        const int64_t n = t / channels, c = t % channels;
        while (c < first[i] || c >= first[i + 1]) i = c < first[i] ? 0 : i + 1;
        const int64_t ci = first[i + 1] - first[i];
        const float* src = in[i]->data<float>() + (n * ci + (c - first[i])) * plane;
        const float bias = bias_.empty() ? 0.f : bias_[c];
        if (!quantize_) {
          float* dst = y.data<float>() + t * plane;
          (run_f32_ ? run_f32_ : fused_channel_bias_run_f32_ref)(src, dst, plane, bias, relu_);
          continue;
        }
        int8_t* dst = y.data<int8_t>() + t * plane;
        if (bias_.empty() && !relu_) {
          (run_ ? quantize_run_s8_avx2 : quantize_run_ref<int8_t>)(src, dst, plane, scale_, zp);
        } else if (run_) {
          run_(src, dst, plane, bias, relu_, scale_, zp);
        } else {
          fused_quantize_run_s8_ref(src, dst, plane, bias, relu_, scale_, zp);
        }
      }
    };
    ctx.pool().parallel_for(batch * channels, by_ref(body), std::max<int64_t>(1, kGrain / std::max<int64_t>(plane, 1)));
  }

 private:
  std::string desc_;
  bool quantize_;
  float scale_;
  int64_t zp_;
  std::vector<float> bias_;
  bool relu_ = false;
  std::string symbol_;
  void (*run_)(const float*, int8_t*, int64_t, float, bool, float, int32_t) = nullptr;
  void (*run_f32_)(const float*, float*, int64_t, float, bool) = nullptr;
};

}  // namespace

std::unique_ptr<Kernel> create_fused_quantize(const Node& node) {
  return std::make_unique<FusedQuantizeKernel>(node, true);
}
std::unique_ptr<Kernel> create_fused_channel_bias(const Node& node) {
  return std::make_unique<FusedQuantizeKernel>(node, false);
}

}  // namespace engine::qk
