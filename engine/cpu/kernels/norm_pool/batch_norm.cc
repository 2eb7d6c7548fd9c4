// BatchNormalization:
//   y = (x - mean[c]) * a[c] + B[c],  a = scale / sqrt(var + eps)  (a in double).
// Inference form: mean and var are the inputs. training_mode = 1 (opset 14+):
// they are x's own statistics over N and the spatial axes (population
// variance, in double), and the optional outputs running_mean / running_var
// are input_mean * momentum + mean * (1 - momentum) (var alike), as ONNX's
// reference computes them. Inference graphs meet the training form through
// weight standardization (timm's StdConv2d / ScaledStdConv2d, NF-ResNets and
// BiT export F.batch_norm(w, training=True) on the conv weight): its x is a
// constant, so fold_constants evaluates it here once and the Conv gets the
// standardized weight. Before opset 14, training mode is marked by requested
// extra outputs (mean, var, saved statistics); those stay unsupported.
// Preconditions: x is (N, C, D1, ...), rank >= 2; the four parameters have C
// float32 elements.
// Constant parameters are prepared once in create(); parameters fed at run
// time are prepared per run into scratch. Planes of (n, c) run in parallel;
// with spatial size 1 ((N, C) inputs) the affine runs along rows of C instead.
#include <algorithm>
#include <cmath>

#include "cpu/kernels/norm_pool/norm_pool.h"

namespace engine {
namespace {

void prepare(const float* scale, const float* bias, const float* mean, const float* var, float eps, int64_t c,
             float* m, float* a, float* b) {
  for (int64_t i = 0; i < c; ++i) {
    m[i] = mean[i];
    a[i] = static_cast<float>(static_cast<double>(scale[i]) / std::sqrt(static_cast<double>(var[i]) + eps));
    b[i] = bias[i];
  }
}

class BatchNormKernel final : public Kernel {
 public:
  explicit BatchNormKernel(const Node& node) : desc_(node.describe()) {
    training_ = node.attr_int("training_mode", 0) != 0;
    momentum_ = node.attr_float("momentum", 0.9f);
    for (int i = 1; i < node.num_outputs(); ++i)
      ENGINE_ENFORCE(training_ || !node.output(i), kUnsupportedOperator, desc_,
                     ": the statistics outputs of a training-mode BatchNormalization before opset 14 (no "
                     "training_mode attribute) are not supported");
    ENGINE_ENFORCE(!training_ || node.num_outputs() <= 3, kInvalidModel, desc_,
                   ": training_mode=1 has at most 3 outputs, got ", node.num_outputs());
    ENGINE_ENFORCE(node.num_inputs() == 5, kInvalidModel, desc_, ": expects 5 inputs, got ", node.num_inputs());
    for (int i = 0; i < 5; ++i)
      ENGINE_ENFORCE(node.input(i) && (node.input(i)->dtype() == DType::kFloat32 ||
                                       node.input(i)->dtype() == DType::kUndefined),
                     kUnsupportedOperator, desc_, ": only float32 is supported");
    eps_ = node.attr_float("epsilon", 1e-5f);
    row_ = NORM_POOL_PICK(affine_row_f32);
    vec_ = NORM_POOL_PICK(affine_vec_f32);
    isa_ = NORM_POOL_TIER(affine_vec_f32);
    if (training_) return;  // the statistics come from x at run time
    bool all_const = true;
    for (int i = 1; i < 5; ++i) all_const = all_const && node.input(i)->is_constant();
    if (!all_const) return;
    const int64_t c = node.input(1)->constant()->numel();
    for (int i = 2; i < 5; ++i)
      ENGINE_ENFORCE(node.input(i)->constant()->numel() == c, kInvalidModel, desc_,
                     ": scale, B, mean and var must have the same size");
    params_.resize(3 * c);
    prepare(node.input(1)->constant()->data<float>(), node.input(2)->constant()->data<float>(),
            node.input(3)->constant()->data<float>(), node.input(4)->constant()->data<float>(), eps_, c,
            params_.data(), params_.data() + c, params_.data() + 2 * c);
    packed_ = true;
  }

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& x = *in[0];
    const int64_t n = x.dim(0), c = x.dim(1), spatial = n * c > 0 ? x.numel() / (n * c) : 0;
    const float* p = params_.data();
    if (packed_) {
      ENGINE_ENFORCE(static_cast<int64_t>(params_.size()) == 3 * c, kShape, desc_, ": the input has ", c,
                     " channels but the parameters have ", params_.size() / 3);
    } else {
      for (int i = 1; i < 5; ++i)
        ENGINE_ENFORCE(in[i]->numel() == c, kShape, desc_, ": input ", i, " must have ", c, " elements, got ",
                       shape_str(in[i]->shape()));
    }
    if (training_) {
      p = batch_statistics(ctx, in, out, n, c, spatial);
    } else if (!packed_) {
      auto* s = static_cast<float*>(ctx.scratch(3 * c * sizeof(float)));
      prepare(in[1]->data<float>(), in[2]->data<float>(), in[3]->data<float>(), in[4]->data<float>(), eps_, c, s,
              s + c, s + 2 * c);
      p = s;
    }
    const float *m = p, *a = p + c, *b = p + 2 * c;
    const float* xp = x.data<float>();
    float* yp = out[0]->data<float>();
    if (spatial == 1) {
      ctx.pool().parallel_for(
          n, [&](int64_t r0, int64_t r1) {
            for (int64_t r = r0; r < r1; ++r) vec_(xp + r * c, yp + r * c, c, m, a, b);
          },
          grain_for(c));
      return;
    }
    ctx.pool().parallel_for(
        n * c, [&](int64_t p0, int64_t p1) {
          for (int64_t q = p0; q < p1; ++q) {
            const int64_t ch = q % c;
            row_(xp + q * spatial, yp + q * spatial, spatial, m[ch], a[ch], b[ch]);
          }
        },
        grain_for(spatial));
  }

  std::string describe() const override {
    return str_cat("batch_norm_f32_", isa_, training_ ? " channel affine, batch statistics" : " channel affine");
  }

 private:
  // training_mode = 1: mean and population variance of each channel over
  // N and the spatial axes (in double), the running-statistics outputs when
  // requested, and the affine's parameters from them (scratch, mean | a | B).
  const float* batch_statistics(KernelContext& ctx, const std::vector<const Tensor*>& in,
                                const std::vector<Tensor*>& out, int64_t n, int64_t c, int64_t spatial) {
    auto* s = static_cast<float*>(ctx.scratch(5 * c * sizeof(float)));
    float *mean = s + 3 * c, *var = s + 4 * c;
    const float* xp = in[0]->data<float>();
    ctx.pool().parallel_for(
        c, [&](int64_t c0, int64_t c1) {
          for (int64_t ch = c0; ch < c1; ++ch) {
            const int64_t count = n * spatial;
            double sum = 0, sq = 0;
            for (int64_t i = 0; i < n; ++i) {
              const float* row = xp + (i * c + ch) * spatial;
              for (int64_t j = 0; j < spatial; ++j) sum += row[j];
            }
            const double mu = count > 0 ? sum / static_cast<double>(count) : 0.0;
            for (int64_t i = 0; i < n; ++i) {
              const float* row = xp + (i * c + ch) * spatial;
              for (int64_t j = 0; j < spatial; ++j) sq += (row[j] - mu) * (row[j] - mu);
            }
            mean[ch] = static_cast<float>(mu);
            var[ch] = static_cast<float>(count > 0 ? sq / static_cast<double>(count) : 0.0);
          }
        },
        grain_for(n * spatial));
    for (int o = 1; o <= 2; ++o) {
      if (o >= static_cast<int>(out.size()) || !out[o]) continue;
      const float* running = in[o + 2]->data<float>();
      const float* now = o == 1 ? mean : var;
      float* r = out[o]->data<float>();
      for (int64_t ch = 0; ch < c; ++ch) r[ch] = running[ch] * momentum_ + now[ch] * (1.f - momentum_);
    }
    prepare(in[1]->data<float>(), in[2]->data<float>(), mean, var, eps_, c, s, s + c, s + 2 * c);
    return s;
  }

  std::string desc_;
  const char* isa_ = "ref";
  float eps_ = 1e-5f;
  bool packed_ = false;
  bool training_ = false;
  float momentum_ = 0.9f;
  std::vector<float> params_;  // mean | a | B, C each
  void (*row_)(const float*, float*, int64_t, float, float, float) = nullptr;
  void (*vec_)(const float*, float*, int64_t, const float*, const float*, const float*) = nullptr;
};

}  // namespace

std::unique_ptr<Kernel> make_batch_norm_kernel(const Node& node) { return std::make_unique<BatchNormKernel>(node); }

}  // namespace engine
