// QuantizeLinear and DequantizeLinear (opset 10 to 23 forms):
//   Q:  y = saturate(round_half_even(x / scale) + zero_point)
//   DQ: y = (x - zero_point) * scale
// scale (and zero_point, optional, of the same shape) is per tensor (a
// scalar or one element), per axis (1-D along `axis`, opset 13+), or blocked
// (opset 21+: same rank as x, `block_size` consecutive elements along `axis`
// share one). Q's output type is zero_point's type, else `output_dtype`, else
// uint8. Supported: Q float32 -> int8/uint8/int16/uint16; DQ int8/uint8/
// int16/uint16/int32 -> float32. float8/int4 types are not representable in
// the IR and never reach here.
//
// Per-tensor and per-axis quantization runs over contiguous stretches that
// share a scale (the whole tensor, or one channel's plane), with AVX2 runs for
// 8-bit types; blocked quantization is a plain per-element loop (rare).
#include <algorithm>
#include <limits>
#include <type_traits>

#include "cpu/dispatch.h"
#include "cpu/kernels/quant/quant_kernels.h"

namespace engine::qk {
namespace {

bool q_output_ok(DType t) {
  return t == DType::kInt8 || t == DType::kUInt8 || t == DType::kInt16 || t == DType::kUInt16;
}

bool dq_input_ok(DType t) { return q_output_ok(t) || t == DType::kInt32; }

// Minimum elements per parallel chunk: below this a thread wake-up costs
// more than the work.
constexpr int64_t kGrain = 1 << 14;

class QdqKernel final : public Kernel {
 public:
  QdqKernel(const Node& node, bool quantize)
      : quantize_(quantize),
        desc_(node.describe()),
        axis_(node.attr_int("axis", 1)),
        block_(node.attr_int("block_size", 0)),
        avx2_(use_avx2()) {
    auto known = [&](int i) { return node.input(i) ? node.input(i)->dtype() : DType::kUndefined; };
    const DType xt = known(0), st = known(1), zt = known(2);
    auto unsupported = [&](const char* what, DType t) {
      fail(ErrorKind::kUnsupportedOperator, desc_, ": ", what, " of type ", dtype_name(t), " is not supported");
    };
    if (st != DType::kUndefined && st != DType::kFloat32) unsupported("scale", st);
    if (block_ < 0) fail(ErrorKind::kInvalidModel, desc_, ": block_size must be >= 0");
    if (quantize_) {
      if (xt != DType::kUndefined && xt != DType::kFloat32) unsupported("input", xt);
      if (zt != DType::kUndefined && !q_output_ok(zt)) unsupported("zero point", zt);
      int64_t od = node.attr_int("output_dtype", 0);
      if (zt == DType::kUndefined && od != 0 && !(dtype_is_valid(static_cast<int32_t>(od)) &&
                                                  q_output_ok(static_cast<DType>(od))))
        fail(ErrorKind::kUnsupportedOperator, desc_, ": output_dtype ", od, " is not supported");
    } else {
      if (xt != DType::kUndefined && !dq_input_ok(xt)) unsupported("input", xt);
      int64_t od = node.attr_int("output_dtype", 0);
      if (od != 0 && od != static_cast<int64_t>(DType::kFloat32))
        fail(ErrorKind::kUnsupportedOperator, desc_, ": output_dtype ", od, " is not supported");
    }
  }

  std::string describe() const override {
    return str_cat(quantize_ ? "quantize_linear" : "dequantize_linear", avx2_ ? "_avx2" : "_ref");
  }

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& x = *in[0];
    const Tensor& s = *in[1];
    const Tensor* zp = in.size() > 2 ? in[2] : nullptr;
    ENGINE_ENFORCE(s.dtype() == DType::kFloat32, kUnsupportedOperator, desc_, ": scale must be float32, got ",
                   dtype_name(s.dtype()));
    if (zp) {
      ENGINE_ENFORCE(zp->shape() == s.shape() || (zp->numel() == 1 && s.numel() == 1 && zp->rank() <= 1 && s.rank() <= 1),
                     kShape, desc_, ": zero point shape ", shape_str(zp->shape()),
                     " differs from scale shape ", shape_str(s.shape()));
    }
    if (quantize_) {
      ENGINE_ENFORCE(x.dtype() == DType::kFloat32, kUnsupportedOperator, desc_, ": input must be float32, got ",
                     dtype_name(x.dtype()));
      switch (out[0]->dtype()) {
        case DType::kInt8: return apply<int8_t>(ctx, x, s, zp, *out[0]);
        case DType::kUInt8: return apply<uint8_t>(ctx, x, s, zp, *out[0]);
        case DType::kInt16: return apply<int16_t>(ctx, x, s, zp, *out[0]);
        case DType::kUInt16: return apply<uint16_t>(ctx, x, s, zp, *out[0]);
        default: break;
      }
      fail(ErrorKind::kUnsupportedOperator, desc_, ": output type ", dtype_name(out[0]->dtype()),
           " is not supported");
    }
    ENGINE_ENFORCE(out[0]->dtype() == DType::kFloat32, kUnsupportedOperator, desc_, ": output must be float32");
    switch (x.dtype()) {
      case DType::kInt8: return apply<int8_t>(ctx, x, s, zp, *out[0]);
      case DType::kUInt8: return apply<uint8_t>(ctx, x, s, zp, *out[0]);
      case DType::kInt16: return apply<int16_t>(ctx, x, s, zp, *out[0]);
      case DType::kUInt16: return apply<uint16_t>(ctx, x, s, zp, *out[0]);
      case DType::kInt32: return apply<int32_t>(ctx, x, s, zp, *out[0]);
      default: break;
    }
    fail(ErrorKind::kUnsupportedOperator, desc_, ": input type ", dtype_name(x.dtype()), " is not supported");
  }

 private:
  // One stretch of n elements sharing (scale, zp). T is the integer type.
  template <typename T>
  void run_span(const Tensor& x, Tensor& y, int64_t off, int64_t n, float scale, int32_t zp) const {
    if (quantize_) {
      const float* src = x.data<float>() + off;
      T* dst = y.data<T>() + off;
      if constexpr (std::is_same_v<T, int8_t>) {
        if (avx2_) return quantize_run_s8_avx2(src, dst, n, scale, zp);
      } else if constexpr (std::is_same_v<T, uint8_t>) {
        if (avx2_) return quantize_run_u8_avx2(src, dst, n, scale, zp);
      }
      if constexpr (!std::is_same_v<T, int32_t>) quantize_run_ref<T>(src, dst, n, scale, zp);
    } else {
      const T* src = x.data<T>() + off;
      float* dst = y.data<float>() + off;
      if constexpr (std::is_same_v<T, int8_t>) {
        if (avx2_) return dequantize_run_s8_avx2(src, dst, n, scale, zp);
      } else if constexpr (std::is_same_v<T, uint8_t>) {
        if (avx2_) return dequantize_run_u8_avx2(src, dst, n, scale, zp);
      }
      dequantize_run_ref<T>(src, dst, n, scale, zp);
    }
  }

  template <typename T>
  void apply(KernelContext& ctx, const Tensor& x, const Tensor& s, const Tensor* zp, Tensor& y) const {
    // The zero point's type is the quantized type; T is that type.
    if (zp) {
      ENGINE_ENFORCE(zp->dtype() == DTypeOf<T>::value, kDType, desc_, ": zero point type ",
                     dtype_name(zp->dtype()), " differs from the quantized type ", dtype_name(DTypeOf<T>::value));
    }
    auto zp_at = [&](int64_t i) -> int32_t { return zp ? static_cast<int32_t>(zp->int_at(i)) : 0; };
    if constexpr (std::is_same_v<T, int32_t>) {
      for (int64_t i = 0; zp && i < zp->numel(); ++i)
        ENGINE_ENFORCE(zp_at(i) == 0, kInvalidModel, desc_, ": int32 input needs a zero point of 0");
    }
    const float* sc = s.data<float>();
    const int64_t numel = x.numel();
    const int rank = x.rank();
    if (block_ == 0 && s.numel() == 1 && s.rank() <= 1) {
      const float scale = sc[0];
      const int32_t z = zp_at(0);
      auto body = [&](int64_t b, int64_t e) {
        const int64_t lo = b * kGrain, hi = std::min(numel, e * kGrain);
        run_span<T>(x, y, lo, hi - lo, scale, z);
      };
      ctx.pool().parallel_for((numel + kGrain - 1) / kGrain, by_ref(body));
      return;
    }
    ENGINE_ENFORCE(rank > 0, kShape, desc_, ": a per-axis scale needs an input of rank >= 1");
    ENGINE_ENFORCE(axis_ >= -rank && axis_ < rank, kShape, desc_, ": axis ", axis_, " is out of range for rank ",
                   rank);
    const int axis = static_cast<int>(axis_ < 0 ? axis_ + rank : axis_);
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < axis; ++i) outer *= x.dim(i);
    for (int i = axis + 1; i < rank; ++i) inner *= x.dim(i);
    const int64_t d = x.dim(axis);
    if (block_ == 0) {
      ENGINE_ENFORCE(s.rank() == 1 && s.numel() == d, kShape, desc_, ": scale of shape ", shape_str(s.shape()),
                     " must be a scalar or have ", d, " elements (input dim ", axis, ")");
      auto body = [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) run_span<T>(x, y, r * inner, inner, sc[r % d], zp_at(r % d));
      };
      ctx.pool().parallel_for(outer * d, by_ref(body), std::max<int64_t>(1, kGrain / std::max<int64_t>(inner, 1)));
      return;
    }
    // Blocked: scale has x's shape except ceil(d / block) along the axis.
    const int64_t db = (d + block_ - 1) / block_;
    bool ok = s.rank() == rank;
    for (int i = 0; ok && i < rank; ++i) ok = s.dim(i) == (i == axis ? db : x.dim(i));
    ENGINE_ENFORCE(ok, kShape, desc_, ": blocked scale of shape ", shape_str(s.shape()), " does not match input ",
                   shape_str(x.shape()), " with block_size ", block_, " on axis ", axis);
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t j = 0; j < d; ++j)
        for (int64_t i = 0; i < inner; ++i) {
          const int64_t si = (o * db + j / block_) * inner + i;
          run_span<T>(x, y, (o * d + j) * inner + i, 1, sc[si], zp_at(si));
        }
  }

  bool quantize_;
  std::string desc_;
  int64_t axis_;
  int64_t block_;
  bool avx2_;
};

}  // namespace

std::unique_ptr<Kernel> create_quantize_linear(const Node& node) { return std::make_unique<QdqKernel>(node, true); }
std::unique_ptr<Kernel> create_dequantize_linear(const Node& node) {
  return std::make_unique<QdqKernel>(node, false);
}

}  // namespace engine::qk
