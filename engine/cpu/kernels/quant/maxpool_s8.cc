// int8 MaxPool (2-D, NCHW): what lower_int8_maxpool (passes/lower_int8_maxpool.cc)
// leaves between two int8 convs.
//   y[n, c, oy, ox] = max over ki, kj of x[n, c, oy*sh - pt + ki*dh, ox*sw - pl + kj*dw]
// over the positions inside the input (padding is skipped, as in the float
// kernel; a window with none gives -128). Max is exact, so the row-separable
// AVX2 path (maxpool_s8_avx2.cc) equals these loops bit for bit.
// Indices (MaxPool's second output) are not supported for int8.
#include <algorithm>
#include <atomic>

#include "cpu/dispatch.h"
#include "cpu/kernel_table.h"
#include "cpu/kernels/quant/quant_kernels.h"

namespace engine::qk {

void maxpool_s8_ref(const PoolS8Geom& g, const int8_t* x, int8_t* y) {
  for (int64_t oy = 0; oy < g.oh; ++oy)
    for (int64_t ox = 0; ox < g.ow; ++ox) {
      int8_t m = -128;
      for (int64_t ki = 0; ki < g.kh; ++ki) {
        const int64_t iy = oy * g.sh - g.pt + ki * g.dh;
        if (iy < 0 || iy >= g.h) continue;
        for (int64_t kj = 0; kj < g.kw; ++kj) {
          const int64_t ix = ox * g.sw - g.pl + kj * g.dw;
          if (ix >= 0 && ix < g.w) m = std::max(m, x[iy * g.w + ix]);
        }
      }
      y[oy * g.ow + ox] = m;
    }
}

namespace {

class MaxPoolS8Kernel final : public Kernel {
 public:
  explicit MaxPoolS8Kernel(const Node& node)
      : desc_(node.describe()),
        avx2_(kernel_usable("max_pool_s8_avx2")),
        avx512_(kernel_usable("max_pool_s8_avx512")) {
    ENGINE_ENFORCE(node.num_outputs() < 2 || !node.output(1), kUnsupportedOperator, desc_,
                   ": int8 MaxPool does not compute Indices");
    kernel_ = node.attr_ints("kernel_shape");
    ENGINE_ENFORCE(kernel_.size() == 2, kUnsupportedOperator, desc_, ": int8 MaxPool supports 2-D pooling only");
    strides_ = node.attr_ints("strides", {1, 1});
    dilations_ = node.attr_ints("dilations", {1, 1});
    pads_ = node.attr_ints("pads", {0, 0, 0, 0});
    if (strides_.empty()) strides_ = {1, 1};
    if (dilations_.empty()) dilations_ = {1, 1};
    if (pads_.empty()) pads_ = {0, 0, 0, 0};
    ENGINE_ENFORCE(strides_.size() == 2 && dilations_.size() == 2 && pads_.size() == 4, kInvalidModel, desc_,
                   ": strides, dilations and pads must match kernel_shape's 2 dims");
    const std::string ap = node.attr_string("auto_pad", "NOTSET");
    ENGINE_ENFORCE(ap == "NOTSET" || ap == "VALID" || ap.empty(), kUnsupportedOperator, desc_,
                   ": int8 MaxPool supports auto_pad NOTSET and VALID, got '", ap, "'");
    if (ap == "VALID") pads_ = {0, 0, 0, 0};
    for (int i = 0; i < 2; ++i)
      ENGINE_ENFORCE(kernel_[i] > 0 && strides_[i] > 0 && dilations_[i] > 0 && pads_[i] >= 0, kInvalidModel, desc_,
                     ": kernel_shape, strides and dilations must be positive, pads non-negative");
    PoolS8Geom cols;
    cols.kh = kernel_[0];
    cols.kw = kernel_[1];
    cols.sw = strides_[1];
    cols.dw = dilations_[1];
    avx512_ = avx512_ && maxpool_s8_avx512_applies(cols);
  }

  std::string describe() const override {
    return avx512_ ? "max_pool_s8_avx512 stride-2 rows" : avx2_ ? "max_pool_s8_avx2 row-separable" : "max_pool_s8_ref";
  }

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& x = *in[0];
    Tensor& y = *out[0];
    ENGINE_ENFORCE(x.dtype() == DType::kInt8 && y.dtype() == DType::kInt8, kDType, desc_,
                   ": int8 MaxPool needs int8 input and output");
    ENGINE_ENFORCE(x.rank() == 4 && y.rank() == 4, kShape, desc_, ": input must be 4-D, got ", shape_str(x.shape()));
    PoolS8Geom g;
    g.h = x.dim(2);
    g.w = x.dim(3);
    g.oh = y.dim(2);
    g.ow = y.dim(3);
    g.kh = kernel_[0];
    g.kw = kernel_[1];
    g.sh = strides_[0];
    g.sw = strides_[1];
    g.dh = dilations_[0];
    g.dw = dilations_[1];
    g.pt = pads_[0];
    g.pl = pads_[1];
    const int64_t planes = x.dim(0) * x.dim(1), in_plane = g.h * g.w, out_plane = g.oh * g.ow;
    const int8_t* xp = x.data<int8_t>();
    int8_t* yp = y.data<int8_t>();
    const size_t per_thread = avx2_ && !avx512_ ? maxpool_s8_avx2_workspace(g) : 0;
    char* ws = per_thread ? static_cast<char*>(ctx.scratch(per_thread * ctx.pool().num_threads())) : nullptr;
    // Planes claimed dynamically (run_any): a late worker stalls nothing.
    std::atomic<int64_t> next{0};
    auto body = [&](int tid, int) {
      for (;;) {
        const int64_t p = next.fetch_add(1, std::memory_order_relaxed);
        if (p >= planes) return;
        if (avx512_) maxpool_s8_avx512(g, xp + p * in_plane, yp + p * out_plane);
        else if (avx2_) maxpool_s8_avx2(g, xp + p * in_plane, yp + p * out_plane, ws + per_thread * tid);
        else maxpool_s8_ref(g, xp + p * in_plane, yp + p * out_plane);
      }
    };
    ctx.pool().run_any(by_ref(body));
  }

 private:
  std::string desc_;
  bool avx2_, avx512_;  // avx512_: the tier is usable and the window's columns suit it
  std::vector<int64_t> kernel_, strides_, dilations_, pads_;
};

}  // namespace

std::unique_ptr<Kernel> create_maxpool_s8(const Node& node) { return std::make_unique<MaxPoolS8Kernel>(node); }

}  // namespace engine::qk
