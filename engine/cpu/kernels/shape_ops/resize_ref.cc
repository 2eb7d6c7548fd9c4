// Resize, modes nearest and linear.
//
//   nearest: y[o] = x[n_0(o_0), ..., n_k(o_k)], n_a = clamp(round_mode(c_a(o_a)))
//   linear:  y[b, oy, ox] = wy0 * h(y0, ox) + wy1 * h(y1, ox),
//            h(iy, ox) = wx0 * x[b, iy, x0] + wx1 * x[b, iy, x1]
//            (bilinear, separable), only over the last two axes (N, C, H, W)
// where c(o) is the coordinate_transformation_mode (half_pixel, asymmetric,
// align_corners, pytorch_half_pixel, tf_half_pixel_for_nn,
// half_pixel_symmetric) applied with the per-axis scale. tf_crop_and_resize,
// cubic, antialias and exclude_outside are rejected in create().
// Coordinates are computed in float with ONNX Runtime's formulas, so nearest
// picks the same pixels and linear agrees to float rounding. Per-axis index
// and weight tables are built once per run. Nearest rows are a table-driven
// gather (any dtype by element size; a row whose source row equals the
// previous one is a memcpy). Linear (float32) interpolates each input row
// horizontally once, into a two-row cache per thread, and blends pairs of
// those rows vertically: for a 2x upscale that is 8x fewer gathers than the
// direct four-neighbour form, and the blend is a plain vector loop.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "cpu/dispatch.h"
#include "cpu/kernel_table.h"
#include "cpu/kernels/shape_ops/shape_ops.h"

namespace engine {
namespace shape_ops {
namespace {

enum class CoordMode { kHalfPixel, kAsymmetric, kAlignCorners, kPytorchHalfPixel, kTfHalfPixelForNn, kHalfPixelSymmetric };
// kSimple is opset 10's rule (truncate when upsampling, ceil when downsampling).
enum class NearestMode { kRoundPreferFloor, kRoundPreferCeil, kFloor, kCeil, kSimple };

float original_coordinate(CoordMode m, float x, float scale, float out_len, float in_len) {
  switch (m) {
    case CoordMode::kAsymmetric: return x / scale;
    case CoordMode::kPytorchHalfPixel: return out_len > 1 ? (x + 0.5f) / scale - 0.5f : 0.0f;
    case CoordMode::kTfHalfPixelForNn: return (x + 0.5f) / scale;
    case CoordMode::kAlignCorners: return out_len == 1 ? 0.0f : x * (in_len - 1) / (out_len - 1);
    case CoordMode::kHalfPixelSymmetric: {
      const float adjustment = out_len / (scale * in_len);
      const float offset = in_len / 2 * (1 - adjustment);
      return static_cast<float>(offset + (x + 0.5) / scale - 0.5);
    }
    case CoordMode::kHalfPixel: break;
  }
  return (x + 0.5f) / scale - 0.5f;
}

int64_t nearest_index(NearestMode m, float v, bool downsampling) {
  switch (m) {
    case NearestMode::kSimple: return downsampling ? static_cast<int64_t>(std::ceil(v)) : static_cast<int64_t>(v);
    case NearestMode::kRoundPreferCeil: return static_cast<int64_t>(std::round(v));
    case NearestMode::kFloor: return static_cast<int64_t>(std::floor(v));
    case NearestMode::kCeil: return static_cast<int64_t>(std::ceil(v));
    case NearestMode::kRoundPreferFloor: break;
  }
  if (v == static_cast<float>(static_cast<int64_t>(v)) + 0.5f) return static_cast<int64_t>(std::floor(v));
  return static_cast<int64_t>(std::round(v));
}

template <typename T>
void gather_row_by_map(const T* src, const int64_t* map, T* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = src[map[i]];
}

void nearest_row(const char* src, const int64_t* map, char* dst, int64_t n, size_t esize) {
  switch (esize) {
    case 1: gather_row_by_map(reinterpret_cast<const uint8_t*>(src), map, reinterpret_cast<uint8_t*>(dst), n); break;
    case 2: gather_row_by_map(reinterpret_cast<const uint16_t*>(src), map, reinterpret_cast<uint16_t*>(dst), n); break;
    case 4: gather_row_by_map(reinterpret_cast<const uint32_t*>(src), map, reinterpret_cast<uint32_t*>(dst), n); break;
    case 8: gather_row_by_map(reinterpret_cast<const uint64_t*>(src), map, reinterpret_cast<uint64_t*>(dst), n); break;
    default:
      for (int64_t i = 0; i < n; ++i) std::memcpy(dst + i * esize, src + map[i] * static_cast<int64_t>(esize), esize);
  }
}

class Resize final : public Kernel {
 public:
  Resize(const Node& node, bool linear, CoordMode coord, NearestMode nearest, bool avx2)
      : what_(node.describe()),
        linear_(linear),
        coord_(coord),
        nearest_(nearest),
        avx2_(avx2),
        axes_(node.attr_ints("axes")),
        policy_(node.attr_string("keep_aspect_ratio_policy", "stretch")),
        scales_at_(node.num_inputs() == 2 ? 1 : 2) {}

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& x = *in[0];
    Tensor& y = *out[0];
    const int r = x.rank();
    check_rank(what_, r);
    ENGINE_ENFORCE(r >= 1, kInvalidModel, what_, ": cannot resize a scalar");
    compute_scales(in, x);
    if (y.numel() == 0) return;
    if (linear_) run_linear(ctx, x, y);
    else run_nearest(ctx, x, y);
  }

  std::string describe() const override {
    return linear_ ? (avx2_ ? "resize_linear_avx2" : "resize_linear_ref") : "resize_nearest";
  }

 private:
  // Per-axis float scales as ONNX Runtime derives them: the scales input, or
  // out/in from sizes (then unified across axes by keep_aspect_ratio_policy).
  void compute_scales(const std::vector<const Tensor*>& in, const Tensor& x) {
    const int r = x.rank();
    scale_.assign(static_cast<size_t>(r), 1.0f);
    int axes[kMaxRank];
    int n = axes_.empty() ? r : static_cast<int>(axes_.size());
    for (int i = 0; i < n; ++i) {
      int64_t a = axes_.empty() ? i : axes_[i];
      axes[i] = static_cast<int>(a < 0 ? a + r : a);
    }
    const Tensor* sizes = in.size() > 3 && in[3] && in[3]->numel() > 0 ? in[3] : nullptr;
    const Tensor* scales = static_cast<int>(in.size()) > scales_at_ && in[scales_at_] && in[scales_at_]->numel() > 0
                               ? in[scales_at_]
                               : nullptr;
    if (sizes) {
      for (int i = 0; i < n; ++i) {
        const int64_t d = x.shape()[axes[i]];
        scale_[axes[i]] = d == 0 ? 1.0f : static_cast<float>(sizes->int_at(i)) / static_cast<float>(d);
      }
      if (policy_ != "stretch") {
        float s = policy_ == "not_larger" ? std::numeric_limits<float>::max() : 0.0f;
        for (int i = 0; i < n; ++i)
          s = policy_ == "not_larger" ? std::min(s, scale_[axes[i]]) : std::max(s, scale_[axes[i]]);
        for (int i = 0; i < n; ++i) scale_[axes[i]] = s;
      }
    } else if (scales) {
      for (int i = 0; i < n; ++i) scale_[axes[i]] = static_cast<float>(scales->float_at(i));
    }
  }

  void build_nearest_map(int64_t in_len, int64_t out_len, float scale, int64_t* map) const {
    for (int64_t o = 0; o < out_len; ++o) {
      if (scale == 1.0f) {
        map[o] = std::min(o, in_len - 1);
        continue;
      }
      float c = original_coordinate(coord_, static_cast<float>(o), scale, static_cast<float>(out_len),
                                    static_cast<float>(in_len));
      map[o] = std::clamp<int64_t>(nearest_index(nearest_, c, scale < 1.0f), 0, in_len - 1);
    }
  }

  void run_nearest(KernelContext& ctx, const Tensor& x, Tensor& y) {
    const int r = x.rank();
    const size_t esize = dtype_size(x.dtype());
    const int64_t es = static_cast<int64_t>(esize);
    offset_[0] = 0;
    for (int a = 0; a < r; ++a) offset_[a + 1] = offset_[a] + y.shape()[a];
    maps_.resize(static_cast<size_t>(offset_[r]));
    for (int a = 0; a < r; ++a) {
      ENGINE_ENFORCE(x.shape()[a] > 0, kInvalidArgument, what_, ": cannot resize an empty axis to a non-empty one");
      build_nearest_map(x.shape()[a], y.shape()[a], scale_[a], maps_.data() + offset_[a]);
    }
    int64_t in_stride[kMaxRank];
    in_stride[r - 1] = 1;
    for (int a = r - 2; a >= 0; --a) in_stride[a] = in_stride[a + 1] * x.shape()[a + 1];
    const int64_t w = y.shape()[r - 1];
    const int64_t rows = y.numel() / w;
    const int64_t* wmap = maps_.data() + offset_[r - 1];
    const auto* src = static_cast<const char*>(x.raw());
    auto* dst = static_cast<char*>(y.raw());
    const Shape& ys = y.shape();
    auto body = [&](int64_t begin, int64_t end) {
      int64_t idx[kMaxRank];
      int64_t rem = begin;
      for (int a = r - 2; a >= 0; --a) {
        idx[a] = rem % ys[a];
        rem /= ys[a];
      }
      int64_t prev_off = -1;
      for (int64_t row = begin; row < end; ++row) {
        int64_t off = 0;
        for (int a = 0; a < r - 1; ++a) off += maps_[offset_[a] + idx[a]] * in_stride[a];
        char* d = dst + row * w * es;
        if (off == prev_off) std::memcpy(d, d - w * es, static_cast<size_t>(w * es));
        else nearest_row(src + off * es, wmap, d, w, esize);
        prev_off = off;
        for (int a = r - 2; a >= 0; --a) {
          if (++idx[a] < ys[a]) break;
          idx[a] = 0;
        }
      }
    };
    if (y.nbytes() < kParallelBytes) body(0, rows);
    else ctx.pool().parallel_for(rows, body);
  }

  // ONNX Runtime's bilinear setup for one axis: clamped coordinate, the two
  // neighbours and their weights (0.5/0.5 when both are the edge pixel).
  void linear_axis(int64_t in_len, int64_t out_len, float scale, int32_t* i0, int32_t* i1, float* w0,
                   float* w1) const {
    for (int64_t o = 0; o < out_len; ++o) {
      float c = scale == 1.0f ? static_cast<float>(o)
                              : original_coordinate(coord_, static_cast<float>(o), scale, static_cast<float>(out_len),
                                                    static_cast<float>(in_len));
      c = std::max(0.0f, std::min(c, static_cast<float>(in_len - 1)));
      const int64_t a = std::min(static_cast<int64_t>(c), in_len - 1);
      const int64_t b = std::min(a + 1, in_len - 1);
      float d1 = std::fabs(c - static_cast<float>(a)), d2 = std::fabs(c - static_cast<float>(b));
      if (a == b) d1 = d2 = 0.5f;
      i0[o] = static_cast<int32_t>(a);
      i1[o] = static_cast<int32_t>(b);
      w0[o] = d2;  // weight of the lower neighbour
      w1[o] = d1;
    }
  }

  void run_linear(KernelContext& ctx, const Tensor& x, Tensor& y) {
    ENGINE_ENFORCE(x.dtype() == DType::kFloat32, kUnsupportedOperator, what_,
                   ": linear mode supports float32 only, got ", dtype_name(x.dtype()));
    const int r = x.rank();
    for (int a = 0; a + 2 < r; ++a)
      ENGINE_ENFORCE(scale_[a] == 1.0f && x.shape()[a] == y.shape()[a], kUnsupportedOperator, what_,
                     ": linear mode resizes only the last two axes (N, C, H, W); axis ", a, " has scale ", scale_[a]);
    const int64_t ih = r >= 2 ? x.shape()[r - 2] : 1, iw = x.shape()[r - 1];
    const int64_t oh = r >= 2 ? y.shape()[r - 2] : 1, ow = y.shape()[r - 1];
    const float sh = r >= 2 ? scale_[r - 2] : 1.0f, sw = scale_[r - 1];
    ENGINE_ENFORCE(ih > 0 && iw > 0, kInvalidArgument, what_, ": cannot resize an empty axis to a non-empty one");
    ENGINE_ENFORCE(ih < INT32_MAX && iw < INT32_MAX, kUnsupportedOperator, what_, ": axes too large");
    y0_.resize(static_cast<size_t>(oh));
    y1_.resize(static_cast<size_t>(oh));
    wy0_.resize(static_cast<size_t>(oh));
    wy1_.resize(static_cast<size_t>(oh));
    x0_.resize(static_cast<size_t>(ow));
    x1_.resize(static_cast<size_t>(ow));
    wx0_.resize(static_cast<size_t>(ow));
    wx1_.resize(static_cast<size_t>(ow));
    linear_axis(ih, oh, sh, y0_.data(), y1_.data(), wy0_.data(), wy1_.data());
    linear_axis(iw, ow, sw, x0_.data(), x1_.data(), wx0_.data(), wx1_.data());
    const int64_t planes = x.numel() / (ih * iw);
    const float* src = x.data<float>();
    float* dst = y.data<float>();
    const int64_t rows = planes * oh;
    const int threads = y.nbytes() < kParallelBytes ? 1 : ctx.pool().num_threads();
    // Two horizontally interpolated input rows per thread.
    float* scratch = static_cast<float*>(ctx.scratch(static_cast<size_t>(threads) * 2 * ow * sizeof(float)));
    const auto hrow = avx2_ ? resize_linear_hrow_avx2 : resize_linear_hrow_ref;
    const auto vblend = avx2_ ? resize_linear_vblend_avx2 : resize_linear_vblend_ref;
    auto body = [&](int tid, int nt) {
      const int64_t begin = rows * tid / nt, end = rows * (tid + 1) / nt;
      float* slot[2] = {scratch + static_cast<int64_t>(tid) * 2 * ow, scratch + (static_cast<int64_t>(tid) * 2 + 1) * ow};
      int64_t cached[2] = {-1, -1};  // plane * ih + input row held by each slot
      auto find = [&](int64_t key) { return cached[0] == key ? 0 : cached[1] == key ? 1 : -1; };
      auto fill = [&](int s, int64_t key) {
        hrow(src + key * iw, x0_.data(), x1_.data(), wx0_.data(), wx1_.data(), slot[s], ow);
        cached[s] = key;
      };
      for (int64_t u = begin; u < end; ++u) {
        const int64_t p = u / oh, oy = u % oh;
        const int64_t k0 = p * ih + y0_[oy], k1 = p * ih + y1_[oy];
        // Output rows walk input rows monotonically, so each input row is
        // interpolated once; never evict the row this output also needs.
        int s0 = find(k0);
        if (s0 < 0) {
          s0 = find(k1) == 0 ? 1 : 0;
          fill(s0, k0);
        }
        int s1 = find(k1);
        if (s1 < 0) {
          s1 = 1 - s0;
          fill(s1, k1);
        }
        vblend(slot[s0], slot[s1], wy0_[oy], wy1_[oy], dst + u * ow, ow);
      }
    };
    if (threads == 1) body(0, 1);
    else ctx.pool().run(body);
  }

  std::string what_;
  bool linear_;
  CoordMode coord_;
  NearestMode nearest_;
  bool avx2_;
  std::vector<int64_t> axes_;
  std::string policy_;
  int scales_at_;
  std::vector<float> scale_;
  std::vector<int64_t> maps_;
  int64_t offset_[kMaxRank + 1] = {};
  std::vector<int32_t> y0_, y1_, x0_, x1_;
  std::vector<float> wy0_, wy1_, wx0_, wx1_;
};

}  // namespace

void resize_linear_hrow_ref(const float* row, const int32_t* x0, const int32_t* x1, const float* w0,
                            const float* w1, float* out, int64_t width) {
  for (int64_t i = 0; i < width; ++i) out[i] = w0[i] * row[x0[i]] + w1[i] * row[x1[i]];
}

void resize_linear_vblend_ref(const float* a, const float* b, float wa, float wb, float* out, int64_t width) {
  for (int64_t i = 0; i < width; ++i) out[i] = wa * a[i] + wb * b[i];
}

std::unique_ptr<Kernel> create_resize(const Node& node) {
  const std::string d = node.describe();
  std::string mode = node.attr_string("mode", "nearest");
  if (mode == "cubic")
    fail(ErrorKind::kUnsupportedOperator, d, ": mode 'cubic' is not supported (only 'nearest' and 'linear')");
  if (mode != "nearest" && mode != "linear")
    fail(ErrorKind::kUnsupportedOperator, d, ": mode '", mode, "' is not supported (only 'nearest' and 'linear')");
  // Resize-10 (X, scales) predates both attributes: asymmetric coordinates
  // and its own rounding rule.
  const bool opset10 = node.num_inputs() == 2;
  std::string ctm = node.attr_string("coordinate_transformation_mode", opset10 ? "asymmetric" : "half_pixel");
  CoordMode coord;
  if (ctm == "half_pixel") coord = CoordMode::kHalfPixel;
  else if (ctm == "asymmetric") coord = CoordMode::kAsymmetric;
  else if (ctm == "align_corners") coord = CoordMode::kAlignCorners;
  else if (ctm == "pytorch_half_pixel") coord = CoordMode::kPytorchHalfPixel;
  else if (ctm == "tf_half_pixel_for_nn") coord = CoordMode::kTfHalfPixelForNn;
  else if (ctm == "half_pixel_symmetric") coord = CoordMode::kHalfPixelSymmetric;
  else
    fail(ErrorKind::kUnsupportedOperator, d, ": coordinate_transformation_mode '", ctm, "' is not supported");
  std::string nm = node.attr_string("nearest_mode", opset10 ? "" : "round_prefer_floor");
  NearestMode nearest;
  if (nm.empty()) nearest = NearestMode::kSimple;
  else if (nm == "round_prefer_floor") nearest = NearestMode::kRoundPreferFloor;
  else if (nm == "round_prefer_ceil") nearest = NearestMode::kRoundPreferCeil;
  else if (nm == "floor") nearest = NearestMode::kFloor;
  else if (nm == "ceil") nearest = NearestMode::kCeil;
  else fail(ErrorKind::kUnsupportedOperator, d, ": nearest_mode '", nm, "' is not supported");
  if (node.attr_int("antialias", 0) != 0)
    fail(ErrorKind::kUnsupportedOperator, d, ": antialias=1 is not supported");
  if (node.attr_int("exclude_outside", 0) != 0)
    fail(ErrorKind::kUnsupportedOperator, d, ": exclude_outside=1 is not supported");
  std::string policy = node.attr_string("keep_aspect_ratio_policy", "stretch");
  if (policy != "stretch" && policy != "not_larger" && policy != "not_smaller")
    fail(ErrorKind::kUnsupportedOperator, d, ": keep_aspect_ratio_policy '", policy, "' is not supported");
  const bool linear = mode == "linear";
  const Value* xv = node.input(0);
  if (linear && xv && xv->dtype() != DType::kUndefined && xv->dtype() != DType::kFloat32)
    fail(ErrorKind::kUnsupportedOperator, d, ": linear mode supports float32 only, got ", dtype_name(xv->dtype()));
  // Constant scales that resize a leading axis cannot run in linear mode.
  const int scales_at = node.num_inputs() == 2 ? 1 : 2;
  const Value* sv = node.input(scales_at);
  if (linear && sv && sv->is_constant() && xv && xv->has_shape() && !node.has_attr("axes")) {
    const Tensor& s = *sv->constant();
    const int64_t r = static_cast<int64_t>(xv->shape().size());
    if (s.numel() == r)
      for (int64_t a = 0; a + 2 < r; ++a)
        if (s.float_at(a) != 1.0)
          fail(ErrorKind::kUnsupportedOperator, d,
               ": linear mode resizes only the last two axes (N, C, H, W); scales are not 1 on axis ", a);
  }
  return std::make_unique<Resize>(node, linear, coord, nearest, kernel_usable("resize_linear_f32_avx2"));
}

}  // namespace shape_ops
}  // namespace engine
