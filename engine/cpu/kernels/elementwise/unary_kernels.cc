// Unary elementwise kernels: activations and math functions (y = f(x), same
// shape), Clip, Cast and ChannelAffine (y = x * scale[c] + shift[c] along
// axis 1).
// Preconditions: output shape equals the input's (ir/infer/elementwise.cc).
// The ISA is chosen in create(); the loop for the input dtype is looked up in
// run(), so values whose dtype the importer did not know still work. Large
// tensors are split across the pool in contiguous ranges (kGrain).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "cpu/kernel_table.h"
#include "cpu/kernels/elementwise/kernels.h"

namespace engine {
namespace eltwise {

const char* dtype_short(DType t) {
  switch (t) {
    case DType::kFloat32: return "f32";
    case DType::kFloat64: return "f64";
    case DType::kFloat16: return "f16";
    case DType::kInt64: return "i64";
    case DType::kInt32: return "i32";
    case DType::kInt8: return "i8";
    case DType::kUInt8: return "u8";
    case DType::kBool: return "bool";
    default: return dtype_name(t);
  }
}

DType input_dtype(const Node& n, int i) {
  const Value* v = n.input(i);
  return v ? v->dtype() : DType::kUndefined;
}

namespace {

bool is_heavy(Unary op) {
  switch (op) {
    case Unary::kSigmoid: case Unary::kTanh: case Unary::kGelu: case Unary::kGeluTanh:
    case Unary::kSoftplus: case Unary::kElu: case Unary::kSelu: case Unary::kMish: case Unary::kErf:
    case Unary::kExp: case Unary::kLog:
      return true;
    default:
      return false;
  }
}

// The highest usable tier's loop (kernel table lines unary_f32_avx512,
// unary_f32_avx2), else the reference.
UnaryFn find_unary(Unary op, DType t, bool avx2, bool avx512) {
  UnaryFn fn = avx512 ? unary_avx512(op, t) : nullptr;
  if (!fn && avx2) fn = unary_avx2(op, t);
  return fn ? fn : unary_ref(op, t);
}

class UnaryKernel : public Kernel {
 public:
  UnaryKernel(const Node& node, Unary op, UnaryParams params)
      : desc_(node.describe()), op_(op), params_(params), avx2_(kernel_usable("unary_f32_avx2")),
        avx512_(kernel_usable("unary_f32_avx512")) {
    const DType t = input_dtype(node, 0);
    if (t != DType::kUndefined && !unary_ref(op, t))
      fail(ErrorKind::kUnsupportedOperator, desc_, ": input dtype ", dtype_name(t), " is not supported");
    if (t != DType::kUndefined) {
      const char* tier = avx512_ && unary_avx512(op, t) ? "_avx512" : avx2_ && unary_avx2(op, t) ? "_avx2" : "_ref";
      name_ = str_cat(unary_name(op), "_", dtype_short(t), tier);
    }
  }

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    UnaryParams p = params_;
    prepare(in, &p);
    apply(ctx, *in[0], *out[0], p);
  }
  std::string describe() const override { return name_; }

 protected:
  // Hook for run-time parameters (Clip's bounds as inputs).
  virtual void prepare(const std::vector<const Tensor*>& in, UnaryParams* p) const {}

  void apply(KernelContext& ctx, const Tensor& x, Tensor& y, const UnaryParams& p) const {
    UnaryFn fn = find_unary(op_, x.dtype(), avx2_, avx512_);
    if (!fn) fail(ErrorKind::kUnsupportedOperator, desc_, ": input dtype ", dtype_name(x.dtype()), " is not supported");
    const size_t es = dtype_size(x.dtype());
    const char* xp = static_cast<const char*>(x.raw());
    char* yp = static_cast<char*>(y.raw());
    parallel_range(ctx, x.numel(), is_heavy(op_) ? kGrainHeavy : kGrain, [&](int64_t b, int64_t e) {
      fn(xp + b * es, yp + b * es, e - b, p);
    });
  }

  std::string desc_, name_;
  Unary op_;
  UnaryParams params_;
  bool avx2_;
  bool avx512_;
};

// Clip(x, min?, max?): bounds are inputs from opset 11 (either may be
// omitted, or be a run-time tensor) and float attributes before. Missing
// bounds are the type's lowest/highest value (so +inf clips to FLT_MAX, as
// onnxruntime does).
class ClipKernel final : public UnaryKernel {
 public:
  explicit ClipKernel(const Node& node) : UnaryKernel(node, Unary::kClip, UnaryParams{}) {
    params_.alpha = node.attr_float("min", std::numeric_limits<float>::lowest());
    params_.beta = node.attr_float("max", std::numeric_limits<float>::max());
    for (int i = 1; i <= 2; ++i) {
      const DType t = input_dtype(node, i);
      if (node.input(i) && t != DType::kUndefined && t != input_dtype(node, 0) && input_dtype(node, 0) != DType::kUndefined)
        fail(ErrorKind::kUnsupportedOperator, desc_, ": bound dtype ", dtype_name(t), " differs from the input's");
    }
  }

 private:
  template <typename T>
  static void int_bounds(const Tensor* lo, const Tensor* hi, UnaryParams* p) {
    p->imin = lo ? lo->int_at(0) : static_cast<int64_t>(std::numeric_limits<T>::lowest());
    p->imax = hi ? hi->int_at(0) : static_cast<int64_t>(std::numeric_limits<T>::max());
  }

  void prepare(const std::vector<const Tensor*>& in, UnaryParams* p) const override {
    const Tensor* lo = in.size() > 1 ? in[1] : nullptr;
    const Tensor* hi = in.size() > 2 ? in[2] : nullptr;
    for (const Tensor* b : {lo, hi})
      if (b && b->numel() != 1)
        fail(ErrorKind::kShape, desc_, ": min and max must be scalars, got shape ", shape_str(b->shape()));
    switch (in[0]->dtype()) {
      case DType::kFloat32:
        if (lo) p->alpha = static_cast<float>(lo->float_at(0));
        if (hi) p->beta = static_cast<float>(hi->float_at(0));
        break;
      case DType::kInt64: int_bounds<int64_t>(lo, hi, p); break;
      case DType::kInt32: int_bounds<int32_t>(lo, hi, p); break;
      case DType::kInt8: int_bounds<int8_t>(lo, hi, p); break;
      case DType::kUInt8: int_bounds<uint8_t>(lo, hi, p); break;
      default: break;  // apply() reports the dtype
    }
  }
};

class CastKernel final : public Kernel {
 public:
  explicit CastKernel(const Node& node) : desc_(node.describe()) {
    if (!node.has_attr("to")) fail(ErrorKind::kInvalidModel, desc_, ": attribute 'to' is missing");
    const int64_t to = node.attr_int("to", 0);
    to_ = dtype_is_valid(static_cast<int32_t>(to)) ? static_cast<DType>(to) : DType::kUndefined;
    if (!cast_ref(DType::kFloat32, to_))
      fail(ErrorKind::kUnsupportedOperator, desc_, ": cast to type code ", to, " is not supported");
    const DType from = input_dtype(node, 0);
    if (from != DType::kUndefined && !cast_ref(from, to_))
      fail(ErrorKind::kUnsupportedOperator, desc_, ": cast from ", dtype_name(from), " is not supported");
    name_ = str_cat("cast_", from == DType::kUndefined ? "any" : dtype_short(from), "_", dtype_short(to_), "_ref");
  }

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& x = *in[0];
    CastFn fn = cast_ref(x.dtype(), to_);
    if (!fn) fail(ErrorKind::kUnsupportedOperator, desc_, ": cast from ", dtype_name(x.dtype()), " is not supported");
    const size_t ei = dtype_size(x.dtype()), eo = dtype_size(to_);
    const char* xp = static_cast<const char*>(x.raw());
    char* yp = static_cast<char*>(out[0]->raw());
    parallel_range(ctx, x.numel(), kGrain, [&](int64_t b, int64_t e) { fn(xp + b * ei, yp + b * eo, e - b); });
  }
  std::string describe() const override { return name_; }

 private:
  std::string desc_, name_;
  DType to_;
};

class ChannelAffineKernel final : public Kernel {
 public:
  explicit ChannelAffineKernel(const Node& node) : desc_(node.describe()), avx2_(kernel_usable("channel_affine_f32_avx2")) {
    for (int i = 0; i < 3; ++i) {
      const DType t = input_dtype(node, i);
      if (t != DType::kUndefined && t != DType::kFloat32)
        fail(ErrorKind::kUnsupportedOperator, desc_, ": dtype ", dtype_name(t), " is not supported (float32 only)");
    }
    row_ = avx2_ ? affine_row_avx2() : affine_row_ref();
    vec_ = avx2_ ? affine_vec_avx2() : affine_vec_ref();
    name_ = avx2_ ? "channel_affine_f32_avx2" : "channel_affine_f32_ref";
  }

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& x = *in[0];
    const Tensor* scale = in[1];
    const Tensor* shift = in.size() > 2 ? in[2] : nullptr;
    if (x.rank() < 2) fail(ErrorKind::kShape, desc_, ": input must have rank >= 2, got ", shape_str(x.shape()));
    for (const Tensor* t : {&x, scale, shift})
      if (t && t->dtype() != DType::kFloat32)
        fail(ErrorKind::kUnsupportedOperator, desc_, ": dtype ", dtype_name(t->dtype()), " is not supported");
    const int64_t c = x.dim(1);
    if (scale->numel() != c || (shift && shift->numel() != c))
      fail(ErrorKind::kShape, desc_, ": scale and shift must have ", c, " elements (the channels of ",
           shape_str(x.shape()), ")");
    if (x.numel() == 0) return;
    const int64_t spatial = x.numel() / (x.dim(0) * c);
    const float* xp = x.data<float>();
    const float* sp = scale->data<float>();
    float* yp = out[0]->data<float>();
    const float* bp;
    if (shift) {
      bp = shift->data<float>();
    } else {
      float* zeros = static_cast<float*>(ctx.scratch(static_cast<size_t>(c) * sizeof(float)));
      std::memset(zeros, 0, static_cast<size_t>(c) * sizeof(float));
      bp = zeros;
    }
    if (spatial == 1) {
      // [N, C]: each row of C channels is one vector loop.
      parallel_range(ctx, x.dim(0), std::max<int64_t>(1, kGrain / c), [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) vec_(xp + r * c, sp, bp, yp + r * c, c);
      });
      return;
    }
    parallel_range(ctx, x.dim(0) * c, std::max<int64_t>(1, kGrain / spatial), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const int64_t ch = r % c;
        row_(xp + r * spatial, yp + r * spatial, spatial, sp[ch], bp[ch]);
      }
    });
  }
  std::string describe() const override { return name_; }

 private:
  std::string desc_, name_;
  bool avx2_;
  AffineRowFn row_;
  AffineVecFn vec_;
};

float attr_or(const Node& n, const char* name, float def) { return n.attr_float(name, def); }

}  // namespace

std::unique_ptr<Kernel> make_unary_kernel(const Node& node, Unary op) {
  UnaryParams p;
  switch (op) {
    case Unary::kLeakyRelu: p.alpha = attr_or(node, "alpha", 0.01f); break;
    case Unary::kHardSigmoid:
      p.alpha = attr_or(node, "alpha", 0.2f);
      p.beta = attr_or(node, "beta", 0.5f);
      break;
    case Unary::kElu: p.alpha = attr_or(node, "alpha", 1.f); break;
    case Unary::kSelu:
      p.alpha = attr_or(node, "alpha", 1.67326319217681884765625f);
      p.beta = attr_or(node, "gamma", 1.05070102214813232421875f);
      break;
    case Unary::kGelu: {
      const std::string approx = node.attr_string("approximate", "none");
      if (approx == "tanh") op = Unary::kGeluTanh;
      else if (approx != "none")
        fail(ErrorKind::kUnsupportedOperator, node.describe(), ": approximate='", approx, "' is not supported");
      break;
    }
    default: break;
  }
  return std::make_unique<UnaryKernel>(node, op, p);
}

std::unique_ptr<Kernel> make_clip_kernel(const Node& node) { return std::make_unique<ClipKernel>(node); }
std::unique_ptr<Kernel> make_cast_kernel(const Node& node) { return std::make_unique<CastKernel>(node); }
std::unique_ptr<Kernel> make_channel_affine_kernel(const Node& node) {
  return std::make_unique<ChannelAffineKernel>(node);
}

}  // namespace eltwise
}  // namespace engine
