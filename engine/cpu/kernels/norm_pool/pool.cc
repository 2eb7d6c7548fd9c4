// MaxPool and AveragePool over 1, 2 or 3 spatial dims of an (N, C, ...) input
// (see pool_ref.cc for the exact window semantics, which are onnxruntime's).
// Output size per dim, with the dilated kernel dk = (k - 1) * d + 1:
//   explicit pads: out = floor_or_ceil((in + pb + pe - dk) / s) + 1, and with
//     ceil_mode a last window that would start in the end padding is dropped
//     (PyTorch's rule, which onnxruntime and ONNX shape inference follow);
//   auto_pad VALID: pads are 0; SAME_UPPER / SAME_LOWER: out = ceil(in / s),
//     total pad = max(0, (out - 1) * s + dk - in), the odd unit at the end
//     (UPPER) or at the beginning (LOWER).
// Must agree with ir/infer/norm_pool.cc (run() checks the output shape).
// MaxPool's optional Indices output (flat indices into X, storage_order
// choosing row- or column-major within a plane) is computed by the reference
// path; otherwise AVX2 handles every geometry. Planes run in parallel.
#include <algorithm>

#include "cpu/kernels/norm_pool/norm_pool.h"

namespace engine {
namespace {

enum class AutoPad { kNotSet, kValid, kSameUpper, kSameLower };

class PoolKernel final : public Kernel {
 public:
  explicit PoolKernel(const Node& node) : desc_(node.describe()) {
    geom_.is_max = node.kind() == OpKind::kMaxPool;
    ENGINE_ENFORCE(node.input(0)->dtype() == DType::kFloat32 || node.input(0)->dtype() == DType::kUndefined,
                   kUnsupportedOperator, desc_, ": only float32 is supported, got ",
                   dtype_name(node.input(0)->dtype()));
    kernel_ = node.attr_ints("kernel_shape");
    const size_t nd = kernel_.size();
    ENGINE_ENFORCE(nd >= 1 && nd <= 3, kUnsupportedOperator, desc_, ": only 1-D, 2-D and 3-D pooling is supported, got ",
                   nd, " kernel dims");
    strides_ = node.attr_ints("strides", std::vector<int64_t>(nd, 1));
    dilations_ = node.attr_ints("dilations", std::vector<int64_t>(nd, 1));
    pads_ = node.attr_ints("pads", std::vector<int64_t>(2 * nd, 0));
    if (strides_.empty()) strides_.assign(nd, 1);
    if (dilations_.empty()) dilations_.assign(nd, 1);
    if (pads_.empty()) pads_.assign(2 * nd, 0);
    ENGINE_ENFORCE(strides_.size() == nd && dilations_.size() == nd && pads_.size() == 2 * nd, kInvalidModel, desc_,
                   ": strides, dilations and pads must match kernel_shape's ", nd, " dims");
    for (size_t i = 0; i < nd; ++i)
      ENGINE_ENFORCE(kernel_[i] > 0 && strides_[i] > 0 && dilations_[i] > 0 && pads_[i] >= 0 && pads_[i + nd] >= 0,
                     kInvalidModel, desc_, ": kernel_shape, strides and dilations must be positive, pads non-negative");
    ceil_mode_ = node.attr_int("ceil_mode", 0) != 0;
    geom_.count_include_pad = node.attr_int("count_include_pad", 0) != 0;
    col_major_ = node.attr_int("storage_order", 0) != 0;
    const std::string ap = node.attr_string("auto_pad", "NOTSET");
    if (ap == "NOTSET" || ap.empty()) auto_pad_ = AutoPad::kNotSet;
    else if (ap == "VALID") auto_pad_ = AutoPad::kValid;
    else if (ap == "SAME_UPPER") auto_pad_ = AutoPad::kSameUpper;
    else if (ap == "SAME_LOWER") auto_pad_ = AutoPad::kSameLower;
    else fail(ErrorKind::kInvalidModel, desc_, ": unknown auto_pad '", ap, "'");
    ENGINE_ENFORCE(geom_.is_max || node.num_outputs() < 2 || !node.output(1), kInvalidModel, desc_,
                   ": AveragePool has one output");
    // Indices come from the reference path only.
    with_indices_ = node.num_outputs() > 1 && node.output(1);
    avx2_ = kernel_usable("pool_f32_avx2") && !with_indices_;
    isa_ = avx2_ ? "avx2" : "ref";
  }

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& x = *in[0];
    const size_t nd = kernel_.size();
    ENGINE_ENFORCE(static_cast<size_t>(x.rank()) == nd + 2, kShape, desc_, ": input of shape ", shape_str(x.shape()),
                   " does not match the ", nd, "-D kernel");
    if (x.shape() != cached_shape_) set_geometry(x.shape());
    const Tensor& y = *out[0];
    for (size_t i = 0; i < nd; ++i)
      ENGINE_CHECK(y.dim(static_cast<int>(i) + 2) == geom_.out[3 - nd + i], desc_, ": output shape ",
                   shape_str(y.shape()), " disagrees with the kernel's geometry");
    const int64_t planes = x.dim(0) * x.dim(1);
    const int64_t in_plane = geom_.in_plane(), out_plane = geom_.out_plane();
    const float* xp = x.data<float>();
    float* yp = out[0]->data<float>();
    int64_t* ip = out.size() > 1 && out[1] ? out[1]->data<int64_t>() : nullptr;
    const int64_t grain = grain_for(out_plane * kernel_[0] + in_plane);
    if (ip || !avx2_) {
      ctx.pool().parallel_for(
          planes, [&](int64_t p0, int64_t p1) {
            for (int64_t p = p0; p < p1; ++p)
              pool_plane_f32_ref(geom_, xp + p * in_plane, yp + p * out_plane, ip ? ip + p * out_plane : nullptr,
                                 p * in_plane, col_major_);
          },
          grain);
      return;
    }
#if !defined(ENGINE_FORCE_REF)
    const size_t work = pool_work_bytes_avx2(geom_);
    const int threads = ctx.pool().num_threads();
    auto* base = static_cast<char*>(ctx.scratch(work * threads));
    parallel_chunks(ctx, planes, grain, [&](int64_t p0, int64_t p1, int tid) {
      auto* w = reinterpret_cast<float*>(base + work * tid);
      init_pool_work_avx2(geom_, w);
      for (int64_t p = p0; p < p1; ++p)
        pool_plane_f32_avx2(geom_, xp + p * in_plane, yp + p * out_plane, inv_counts_.data(), w);
    });
#endif
  }

  std::string describe() const override {
    return str_cat(geom_.is_max ? "max_pool_f32_" : "average_pool_f32_", isa_,
                   avx2_ ? " row-separable" : with_indices_ ? " with indices" : "");
  }

 private:
  // Fills geom_ (spatial dims right-aligned into its 3 slots) and the
  // AveragePool reciprocal counts for one input shape; reused until the shape changes.
  void set_geometry(const Shape& shape) {
    const size_t nd = kernel_.size();
    PoolGeom g;
    g.is_max = geom_.is_max;
    g.count_include_pad = geom_.count_include_pad;
    for (size_t i = 0; i < nd; ++i) {
      const size_t j = 3 - nd + i;
      const int64_t in = shape[i + 2], k = kernel_[i], s = strides_[i], d = dilations_[i];
      const int64_t dk = (k - 1) * d + 1;
      int64_t pb = pads_[i], pe = pads_[i + nd], o = 0;
      if (auto_pad_ == AutoPad::kSameUpper || auto_pad_ == AutoPad::kSameLower) {
        o = (in + s - 1) / s;
        const int64_t total = std::max<int64_t>(0, (o - 1) * s + dk - in);
        pb = auto_pad_ == AutoPad::kSameUpper ? total / 2 : (total + 1) / 2;
        pe = total - pb;
      } else {
        if (auto_pad_ == AutoPad::kValid) pb = pe = 0;
        const int64_t span = in + pb + pe - dk;
        ENGINE_ENFORCE(span >= 0, kShape, desc_, ": the window (", dk, ") is larger than the padded input (",
                       in + pb + pe, ")");
        o = (ceil_mode_ ? (span + s - 1) / s : span / s) + 1;
        if (ceil_mode_ && (o - 1) * s >= in + pb) --o;
      }
      g.in[j] = in;
      g.out[j] = o;
      g.kernel[j] = k;
      g.stride[j] = s;
      g.dilation[j] = d;
      g.pad_begin[j] = pb;
      g.pad_end[j] = pe;
    }
    geom_ = g;
    // 8 floats of padding: the AVX2 kernel loads whole vectors of them.
    inv_counts_.assign(g.out[0] + g.out[1] + g.out[2] + 8, 1.f);
    if (!g.is_max) {
      size_t at = 0;
      for (int dim = 0; dim < 3; ++dim)
        for (int64_t o = 0; o < g.out[dim]; ++o, ++at) {
          const int64_t c = pool_count(g, dim, o * g.stride[dim] - g.pad_begin[dim]);
          // A window with no tap at all only sums zeros; 1 keeps 0/0 away.
          inv_counts_[at] = c > 0 ? 1.f / static_cast<float>(c) : 1.f;
        }
    }
    cached_shape_ = shape;
  }

  std::string desc_;
  const char* isa_ = "ref";
  bool avx2_ = false, with_indices_ = false;
  std::vector<int64_t> kernel_, strides_, dilations_, pads_;
  bool ceil_mode_ = false, col_major_ = false;
  AutoPad auto_pad_ = AutoPad::kNotSet;
  Shape cached_shape_;
  PoolGeom geom_;
  std::vector<float> inv_counts_;
};

}  // namespace

std::unique_ptr<Kernel> make_pool_kernel(const Node& node) { return std::make_unique<PoolKernel>(node); }

}  // namespace engine
