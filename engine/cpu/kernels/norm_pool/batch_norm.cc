// BatchNormalization, inference form:
//   y = (x - mean[c]) * a[c] + B[c],  a = scale / sqrt(var + eps)  (a in double).
// Preconditions: x is (N, C, D1, ...), rank >= 2; the four parameters have C
// float32 elements. training_mode = 1 (opset 14+) and requested running-
// statistics outputs (training mode before opset 14) are unsupported:
// inference graphs never need them.
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
    ENGINE_ENFORCE(node.attr_int("training_mode", 0) == 0, kUnsupportedOperator, desc_,
                   ": training_mode=1 is not supported (inference only)");
    for (int i = 1; i < node.num_outputs(); ++i)
      ENGINE_ENFORCE(!node.output(i), kUnsupportedOperator, desc_,
                     ": the training-mode outputs (running mean/var, saved statistics) are not supported");
    ENGINE_ENFORCE(node.num_inputs() == 5, kInvalidModel, desc_, ": expects 5 inputs, got ", node.num_inputs());
    for (int i = 0; i < 5; ++i)
      ENGINE_ENFORCE(node.input(i) && (node.input(i)->dtype() == DType::kFloat32 ||
                                       node.input(i)->dtype() == DType::kUndefined),
                     kUnsupportedOperator, desc_, ": only float32 is supported");
    eps_ = node.attr_float("epsilon", 1e-5f);
    row_ = NORM_POOL_PICK(affine_row_f32);
    vec_ = NORM_POOL_PICK(affine_vec_f32);
    isa_ = NORM_POOL_TIER(affine_vec_f32);
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

  std::string describe() const override { return str_cat("batch_norm_f32_", isa_, " channel affine"); }

 private:
  std::string desc_;
  const char* isa_ = "ref";
  float eps_ = 1e-5f;
  bool packed_ = false;
  std::vector<float> params_;  // mean | a | B, C each
  void (*row_)(const float*, float*, int64_t, float, float, float) = nullptr;
  void (*vec_)(const float*, float*, int64_t, const float*, const float*, const float*) = nullptr;
};

}  // namespace

std::unique_ptr<Kernel> make_batch_norm_kernel(const Node& node) { return std::make_unique<BatchNormKernel>(node); }

}  // namespace engine
