// LayerNormalization: with D = prod(X.shape[axis:]) and X viewed as rows of D,
//   mean = sum(row) / D, var = sum((row - mean)^2) / D,
//   Y = (row - mean) / sqrt(var + eps) * Scale + B,
// and the optional outputs Mean and InvStdDev = 1 / sqrt(var + eps), of shape
// X.shape[:axis] + [1] * (rank - axis). stash_type only names the compute
// precision: moments are always accumulated in double here (float32 is the
// only input type), so it is accepted whatever its value.
// Preconditions: X float32; Scale and B (B optional) broadcast to
// X.shape[axis:]; they are used as contiguous rows of D, expanded into
// scratch when they broadcast from fewer elements.
// Rows run in parallel; ConvNeXt's channels-last LayerNorm is the hot case.
#include <algorithm>
#include <atomic>

#include "cpu/kernels/norm_pool/norm_pool.h"

namespace engine {
namespace {

// Writes t broadcast to `shape` (numpy rules, t's rank <= shape's rank after
// dropping leading ones) into dst; false when it does not broadcast.
bool broadcast_to(const Tensor& t, const Shape& shape, float* dst) {
  Shape ts = t.shape();
  while (ts.size() > shape.size() && ts.front() == 1) ts.erase(ts.begin());
  if (ts.size() > shape.size()) return false;
  ts.insert(ts.begin(), shape.size() - ts.size(), 1);
  for (size_t d = 0; d < shape.size(); ++d)
    if (ts[d] != 1 && ts[d] != shape[d]) return false;
  const int64_t total = shape_numel(shape);
  const float* src = t.data<float>();
  for (int64_t i = 0; i < total; ++i) {
    int64_t rem = i, idx = 0, stride = 1;
    for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
      const int64_t coord = rem % shape[d];
      rem /= shape[d];
      if (ts[d] != 1) idx += coord * stride;
      stride *= ts[d];
    }
    dst[i] = src[idx];
  }
  return true;
}

class LayerNormKernel final : public Kernel {
 public:
  explicit LayerNormKernel(const Node& node) : desc_(node.describe()) {
    ENGINE_ENFORCE(node.num_inputs() >= 2 && node.input(1), kInvalidModel, desc_, ": expects inputs X and Scale");
    for (int i = 0; i < node.num_inputs(); ++i)
      ENGINE_ENFORCE(!node.input(i) || node.input(i)->dtype() == DType::kFloat32 ||
                         node.input(i)->dtype() == DType::kUndefined,
                     kUnsupportedOperator, desc_, ": only float32 is supported");
    axis_ = node.attr_int("axis", -1);
    eps_ = node.attr_float("epsilon", 1e-5f);
    row_ = NORM_POOL_PICK(layer_norm_row_f32);
    isa_ = NORM_POOL_TIER(layer_norm_row_f32);
  }

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& x = *in[0];
    const int64_t rank = x.rank();
    ENGINE_ENFORCE(axis_ >= -rank && axis_ < rank, kShape, desc_, ": axis ", axis_, " is out of range for rank ",
                   rank);
    const int64_t axis = axis_ < 0 ? axis_ + rank : axis_;
    const Shape norm_shape(x.shape().begin() + axis, x.shape().end());
    const int64_t d = shape_numel(norm_shape);
    const int64_t rows = d > 0 ? x.numel() / d : 0;
    const Tensor* scale = in[1];
    const Tensor* bias = in.size() > 2 ? in[2] : nullptr;
    const bool expand_scale = scale->numel() != d, expand_bias = bias && bias->numel() != d;
    const bool own_mean = out.size() < 2 || !out[1], own_inv = out.size() < 3 || !out[2];
    const size_t floats = (expand_scale ? d : 0) + (expand_bias ? d : 0) + (own_mean ? rows : 0) + (own_inv ? rows : 0);
    float* s = floats ? static_cast<float*>(ctx.scratch(floats * sizeof(float))) : nullptr;
    const float* gamma = scale->data<float>();
    const float* beta = bias ? bias->data<float>() : nullptr;
    if (expand_scale) {
      ENGINE_ENFORCE(broadcast_to(*scale, norm_shape, s), kShape, desc_, ": Scale of shape ",
                     shape_str(scale->shape()), " does not broadcast to ", shape_str(norm_shape));
      gamma = s;
      s += d;
    }
    if (expand_bias) {
      ENGINE_ENFORCE(broadcast_to(*bias, norm_shape, s), kShape, desc_, ": B of shape ", shape_str(bias->shape()),
                     " does not broadcast to ", shape_str(norm_shape));
      beta = s;
      s += d;
    }
    float* mean = own_mean ? s : out[1]->data<float>();
    if (own_mean) s += rows;
    float* inv = own_inv ? s : out[2]->data<float>();
    const float* xp = x.data<float>();
    float* yp = out[0]->data<float>();
    ctx.pool().parallel_for(
        rows, [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) row_(xp + r * d, yp + r * d, d, gamma, beta, eps_, mean + r, inv + r);
        },
        grain_for(d));
  }

  std::string describe() const override { return str_cat("layer_norm_f32_", isa_, " rows"); }

 private:
  std::string desc_;
  const char* isa_ = "ref";
  int64_t axis_ = -1;
  float eps_ = 1e-5f;
  void (*row_)(const float*, float*, int64_t, const float*, const float*, float, float*, float*) = nullptr;
};

// ChannelLayerNorm: the LayerNorm over axis 1 of [N, C, S...]. Each image's
// positions are taken kBlock at a time. The AVX2 tier normalizes them in
// place in the image layout (layer_norm_channels_f32_avx2: vectors across
// positions, moments in double). The reference tier: the [C, kBlock] block is transposed
// into a channels-last tile (kBlock rows of C), the row kernel of
// LayerNormalization normalizes each row into a second tile, and that is
// transposed back. So every position gets exactly the arithmetic that
// Transpose -> LayerNormalization(axis=-1) -> Transpose gives it, without the
// two full passes of the Transposes; the tiles (2 x 64 x C floats) stay in
// L2. Blocks of all images run in parallel.
class ChannelLayerNormKernel final : public Kernel {
 public:
  static constexpr int64_t kBlock = 64;

  explicit ChannelLayerNormKernel(const Node& node) : desc_(node.describe()) {
    ENGINE_ENFORCE(node.num_inputs() >= 2 && node.input(1), kInvalidModel, desc_, ": expects inputs X and scale");
    eps_ = node.attr_float("epsilon", 1e-5f);
    row_ = NORM_POOL_PICK(layer_norm_row_f32);
    isa_ = NORM_POOL_TIER(layer_norm_row_f32);
    direct_ = std::string(isa_) == "avx2";
  }

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& x = *in[0];
    ENGINE_ENFORCE(x.dtype() == DType::kFloat32, kUnsupportedOperator, desc_, ": only float32 is supported");
    ENGINE_ENFORCE(x.rank() >= 2, kShape, desc_, ": input of rank ", x.rank(), ", expected (N, C, ...)");
    const int64_t n = x.dim(0), c = x.dim(1), s = c > 0 && n > 0 ? x.numel() / (n * c) : 0;
    const Tensor* scale = in[1];
    const Tensor* bias = in.size() > 2 ? in[2] : nullptr;
    ENGINE_ENFORCE(scale->numel() == c, kShape, desc_, ": scale has ", scale->numel(), " elements for ", c,
                   " channels");
    ENGINE_ENFORCE(!bias || bias->numel() == c, kShape, desc_, ": bias has ", bias->numel(), " elements for ", c,
                   " channels");
    if (x.numel() == 0) return;
    const int64_t blocks = (s + kBlock - 1) / kBlock, tasks = n * blocks;
    const int threads = ctx.pool().num_threads();
    const size_t per_thread = static_cast<size_t>(2 * kBlock * c + 2 * kBlock);
    // Tiles only for the reference tier; the AVX2 path works in place.
    float* scratch = direct_ ? nullptr : static_cast<float*>(ctx.scratch(per_thread * threads * sizeof(float)));
    const float* gamma = scale->data<float>();
    const float* beta = bias ? bias->data<float>() : nullptr;
    const float* xp = x.data<float>();
    float* yp = out[0]->data<float>();
    std::atomic<int64_t> next{0};
    ctx.pool().run_any([&](int tid, int) {
      for (;;) {
        const int64_t t = next.fetch_add(1, std::memory_order_relaxed);
        if (t >= tasks) return;
        const int64_t img = t / blocks, p0 = (t % blocks) * kBlock, len = std::min(kBlock, s - p0);
        const float* src = xp + img * c * s + p0;
        float* dst = yp + img * c * s + p0;
#if !defined(ENGINE_FORCE_REF)
        if (direct_) {
          layer_norm_channels_f32_avx2(src, dst, c, s, len, gamma, beta, eps_);
          continue;
        }
#endif
        float* a = scratch + tid * per_thread;  // channels-last input tile
        float* b = a + kBlock * c;              // normalized tile
        float* stats = b + kBlock * c;          // mean, inverse deviation
        for (int64_t ch = 0; ch < c; ++ch)
          for (int64_t p = 0; p < len; ++p) a[p * c + ch] = src[ch * s + p];
        for (int64_t p = 0; p < len; ++p) row_(a + p * c, b + p * c, c, gamma, beta, eps_, stats, stats + 1);
        for (int64_t ch = 0; ch < c; ++ch)
          for (int64_t p = 0; p < len; ++p) dst[ch * s + p] = b[p * c + ch];
      }
    });
  }

  std::string describe() const override { return str_cat("layer_norm_f32_", isa_, " channels"); }

 private:
  std::string desc_;
  const char* isa_ = "ref";
  bool direct_ = false;  // AVX2: layer_norm_channels_f32_avx2 on the image layout, no tiles
  float eps_ = 1e-5f;
  void (*row_)(const float*, float*, int64_t, const float*, const float*, float, float*, float*) = nullptr;
};

}  // namespace

std::unique_ptr<Kernel> make_layer_norm_kernel(const Node& node) { return std::make_unique<LayerNormKernel>(node); }
std::unique_ptr<Kernel> make_channel_layer_norm_kernel(const Node& node) {
  return std::make_unique<ChannelLayerNormKernel>(node);
}

}  // namespace engine
