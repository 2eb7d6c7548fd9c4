// QAdd (ops.def): the residual Add of onnxruntime's Q/DQ graphs,
// DQ(a) + DQ(b) -> [Relu] -> Q, on int8 data in one pass instead of two
// dequantized float copies, a float Add and a QuantizeLinear. The same float
// operations in the same order as those kernels (quant_kernels.h,
// qadd_one), so the output is the Q/DQ graph's, bit for bit. Elementwise,
// no broadcasting; split over threads in blocks of kGrain elements.
// The SIMD tiers take the quotient by y_scale as a reciprocal multiply
// where that is exact for this node's scales and zero points: checked here,
// once, on all 65536 input pairs (quant_kernels.h, QAddQuotient).
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/kernel_table.h"
#include "cpu/kernels/quant/quant_kernels.h"

namespace engine::qk {
namespace {

constexpr int64_t kGrain = 1 << 14;

class QAddKernel final : public Kernel {
 public:
  explicit QAddKernel(const Node& node) : desc_(node.describe()) {
    auto scale = [&](const char* name) {
      ENGINE_ENFORCE(node.has_attr(name), kInvalidModel, desc_, ": attribute ", name, " is required");
      const float s = node.attr_float(name, 0.f);
      ENGINE_ENFORCE(s > 0.f && std::isfinite(s), kInvalidModel, desc_, ": ", name, " must be positive and finite");
      return s;
    };
    auto zero_point = [&](const char* name) {
      const int64_t v = node.attr_int(name, 0);
      ENGINE_ENFORCE(v >= -128 && v <= 127, kInvalidModel, desc_, ": ", name, " ", v, " is not an int8 value");
      return static_cast<int32_t>(v);
    };
    p_.a_scale = scale("a_scale");
    p_.b_scale = scale("b_scale");
    p_.y_scale = scale("y_scale");
    p_.a_zp = zero_point("a_zero_point");
    p_.b_zp = zero_point("b_zero_point");
    p_.y_zp = zero_point("y_zero_point");
    const std::string act = node.attr_string("activation", "");
    ENGINE_ENFORCE(act.empty() || act == "Relu", kUnsupportedOperator, desc_, ": activation '", act,
                   "' is not supported (Relu)");
    p_.relu = act == "Relu";
    p_.y_rcp = 1.f / p_.y_scale;
    if (kernel_usable("qadd_s8_avx512")) {
      run_ = qadd_run_s8_avx512;
      symbol_ = "qadd_s8_avx512";
    } else if (kernel_usable("qadd_s8_avx2")) {
      run_ = qadd_run_s8_avx2;
      symbol_ = "qadd_s8_avx2";
    }
    if (run_) p_.quotient = cheapest_exact_quotient();
  }

  std::string describe() const override { return symbol_; }

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& a = *in[0];
    const Tensor& b = *in[1];
    for (const Tensor* t : {&a, &b})
      ENGINE_ENFORCE(t->dtype() == DType::kInt8, kDType, desc_, ": inputs must be int8, got ", dtype_name(t->dtype()));
    ENGINE_ENFORCE(a.shape() == b.shape(), kShape, desc_, ": inputs ", shape_str(a.shape()), " and ",
                   shape_str(b.shape()), " differ (QAdd does not broadcast)");
    Tensor& y = *out[0];
    ENGINE_ENFORCE(y.dtype() == DType::kInt8 && y.numel() == a.numel(), kInternal, desc_, ": bad output");
    const int8_t* pa = a.data<int8_t>();
    const int8_t* pb = b.data<int8_t>();
    int8_t* py = y.data<int8_t>();
    const int64_t n = a.numel();
    auto body = [&](int64_t begin, int64_t end) {
      const int64_t lo = begin * kGrain, hi = std::min(n, end * kGrain);
      if (run_) {
        run_(pa + lo, pb + lo, py + lo, hi - lo, p_);
      } else {
        for (int64_t i = lo; i < hi; ++i) py[i] = qadd_one(pa[i], pb[i], p_);
      }
    };
    ctx.pool().parallel_for((n + kGrain - 1) / kGrain, by_ref(body));
  }

 private:
  // The first of the reciprocal forms whose output equals qadd_one's on
  // every (a, b) pair, or the division.
  QAddQuotient cheapest_exact_quotient() const {
    std::vector<int8_t> a(65536), b(65536), want(65536), got(65536);
    for (int i = 0; i < 65536; ++i) {
      a[i] = static_cast<int8_t>(i >> 8);
      b[i] = static_cast<int8_t>(i & 0xff);
      want[i] = qadd_one(a[i], b[i], p_);
    }
    for (QAddQuotient q : {QAddQuotient::kReciprocal, QAddQuotient::kRefined}) {
      QAddParams p = p_;
      p.quotient = q;
      run_(a.data(), b.data(), got.data(), 65536, p);
      if (got == want) return q;
    }
    return QAddQuotient::kDivide;
  }

  std::string desc_;
  std::string symbol_ = "qadd_s8_ref";
  void (*run_)(const int8_t*, const int8_t*, int8_t*, int64_t, const QAddParams&) = nullptr;
  QAddParams p_;
};

}  // namespace

std::unique_ptr<Kernel> create_qadd(const Node& node) { return std::make_unique<QAddKernel>(node); }

}  // namespace engine::qk
