// SqueezeExcite (domain pyengine; engine/ir/ops.def): squeeze-excitation in
// one kernel call,
//   s[n, c] = mean(X[n, c, :]);  h = Relu(W1 s + b1);  g = gate(W2 h + b2);
//   Y[n, c, :] = act(X[n, c, :] * g[n, c] + Z[n, c, :])   (Z, act optional: the
//   residual Add and Relu of an SE-ResNet bottleneck).
// Three steps over the batch: the pooled means (rows in parallel), the two
// small GEMVs and the gate per image (a few hundred thousand MACs at most:
// one thread), then the scaling (rows in parallel). X is read twice, once to
// pool and once to scale, with nothing written in between; the unfused graph
// also writes and re-reads the pooled, hidden and gate tensors and
// dispatches six to nine nodes.
// Preconditions: float32; X rank >= 3; W1 [Cr, C], W2 [C, Cr], B1 [Cr], B2 [C].
// Tiers (cpu/kernels.def, squeeze_excite): ref loops here; avx2 and avx512
// vectorize the pooled sums, the GEMV dot products and the scaling.
#include <cmath>

#include "cpu/kernels/norm_pool/norm_pool.h"
#include "cpu/simd/vec_scalar.h"

namespace engine {

void squeeze_excite_gate_f32_ref(const float* s, const float* w1, const float* b1, const float* w2, const float* b2,
                                 int64_t c, int64_t cr, const SeGate& gate, float* h, float* g) {
  for (int64_t j = 0; j < cr; ++j) {
    float acc = 0.f;
    for (int64_t k = 0; k < c; ++k) acc += w1[j * c + k] * s[k];
    h[j] = simd::scalar::relu(acc + b1[j]);
  }
  for (int64_t k = 0; k < c; ++k) {
    float acc = 0.f;
    for (int64_t j = 0; j < cr; ++j) acc += w2[k * cr + j] * h[j];
    const float v = acc + b2[k];
    g[k] = gate.kind == 0 ? simd::scalar::sigmoid(v) : simd::scalar::hard_sigmoid(v, gate.alpha, gate.beta);
  }
}

void squeeze_excite_scale_f32_ref(const float* x, const float* g, const float* z, bool relu, int64_t rows, int64_t n,
                                  float* y) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < n; ++i) {
      float v = x[r * n + i] * g[r];
      if (z) v += z[r * n + i];
      y[r * n + i] = relu ? simd::scalar::relu(v) : v;
    }
}

namespace {

using GateFn = void (*)(const float*, const float*, const float*, const float*, const float*, int64_t, int64_t,
                        const SeGate&, float*, float*);
using ScaleFn = void (*)(const float*, const float*, const float*, bool, int64_t, int64_t, float*);
using SumFn = float (*)(const float*, int64_t);

class SqueezeExciteKernel final : public Kernel {
 public:
  explicit SqueezeExciteKernel(const Node& node) : desc_(node.describe()) {
    ENGINE_ENFORCE(node.num_inputs() == 5 || node.num_inputs() == 6, kInvalidModel, desc_,
                   ": expects inputs X, W1, B1, W2, B2 and optionally Z");
    for (int i = 0; i < 5; ++i)
      ENGINE_ENFORCE(node.input(i) && (node.input(i)->dtype() == DType::kFloat32 ||
                                       node.input(i)->dtype() == DType::kUndefined),
                     kUnsupportedOperator, desc_, ": only float32 is supported");
    const std::string act = node.attr_string("activation", "");
    ENGINE_ENFORCE(act.empty() || act == "Relu", kUnsupportedOperator, desc_, ": activation '", act,
                   "' is not supported");
    relu_ = act == "Relu";
    const std::string gate = node.attr_string("gate", "Sigmoid");
    const std::vector<float> p = node.attr_floats("gate_params");
    if (gate == "HardSigmoid") {
      gate_.kind = 1;
      gate_.alpha = p.size() > 0 ? p[0] : 0.2f;
      gate_.beta = p.size() > 1 ? p[1] : 0.5f;
    } else {
      ENGINE_ENFORCE(gate == "Sigmoid", kUnsupportedOperator, desc_, ": gate '", gate, "' is not supported");
    }
    gate_fn_ = squeeze_excite_gate_f32_ref;
    scale_fn_ = squeeze_excite_scale_f32_ref;
    sum_fn_ = row_sum_f32_ref;
#if !defined(ENGINE_FORCE_REF)
    if (kernel_usable("squeeze_excite_f32_avx512")) {
      gate_fn_ = squeeze_excite_gate_f32_avx512;
      scale_fn_ = squeeze_excite_scale_f32_avx512;
      sum_fn_ = row_sum_f32_avx512;
      isa_ = "avx512";
    } else if (kernel_usable("squeeze_excite_f32_avx2")) {
      gate_fn_ = squeeze_excite_gate_f32_avx2;
      scale_fn_ = squeeze_excite_scale_f32_avx2;
      sum_fn_ = row_sum_f32_avx2;
      isa_ = "avx2";
    }
#endif
  }

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& x = *in[0];
    ENGINE_ENFORCE(x.rank() >= 3, kShape, desc_, ": input must have rank >= 3, got ", shape_str(x.shape()));
    const int64_t n = x.dim(0), c = x.dim(1), hw = n * c > 0 ? x.numel() / (n * c) : 0;
    const Tensor &w1 = *in[1], &b1 = *in[2], &w2 = *in[3], &b2 = *in[4];
    ENGINE_ENFORCE(w1.rank() == 2 && w2.rank() == 2 && w1.dim(1) == c && w2.dim(0) == c && w2.dim(1) == w1.dim(0) &&
                       b1.numel() == w1.dim(0) && b2.numel() == c,
                   kShape, desc_, ": weights ", shape_str(w1.shape()), ", ", shape_str(w2.shape()),
                   " do not fit ", c, " channels");
    const int64_t cr = w1.dim(0);
    const Tensor* z = in.size() > 5 ? in[5] : nullptr;
    ENGINE_ENFORCE(!z || z->shape() == x.shape(), kShape, desc_, ": the residual has shape ", z ? shape_str(z->shape()) : "",
                   ", not ", shape_str(x.shape()));
    if (x.numel() == 0) return;
    const float* zp = z ? z->data<float>() : nullptr;
    // Scratch: pooled means s[n * c], gates g[n * c], hidden h[cr].
    float* s = static_cast<float*>(ctx.scratch(sizeof(float) * static_cast<size_t>(2 * n * c + cr + 16)));
    float* g = s + n * c;
    float* h = g + n * c;
    const float* xp = x.data<float>();
    float* yp = out[0]->data<float>();
    const float inv = 1.f / static_cast<float>(hw);
    // parallel_for: chunks are claimed dynamically, so a worker the OS
    // descheduled costs nothing (a static split would wait for it).
    const int64_t grain = grain_for(hw);
    ctx.pool().parallel_for(
        n * c, [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) s[r] = sum_fn_(xp + r * hw, hw) * inv;
        },
        grain);
    for (int64_t i = 0; i < n; ++i)
      gate_fn_(s + i * c, w1.data<float>(), b1.data<float>(), w2.data<float>(), b2.data<float>(), c, cr, gate_, h,
               g + i * c);
    ctx.pool().parallel_for(
        n * c, [&](int64_t r0, int64_t r1) {
          scale_fn_(xp + r0 * hw, g + r0, zp ? zp + r0 * hw : nullptr, relu_, r1 - r0, hw, yp + r0 * hw);
        },
        grain);
  }

  std::string describe() const override { return str_cat("squeeze_excite_f32_", isa_); }

 private:
  std::string desc_;
  const char* isa_ = "ref";
  SeGate gate_;
  bool relu_ = false;
  GateFn gate_fn_ = nullptr;
  ScaleFn scale_fn_ = nullptr;
  SumFn sum_fn_ = nullptr;
};

}  // namespace

std::unique_ptr<Kernel> make_squeeze_excite_kernel(const Node& node) {
  return std::make_unique<SqueezeExciteKernel>(node);
}

}  // namespace engine
