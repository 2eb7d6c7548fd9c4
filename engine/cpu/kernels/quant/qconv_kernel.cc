// QConv and QGemm kernels (ops.def documents both ops): attribute parsing,
// validation, weight packing in create(), and the choice of tier: the
// reference loops (qconv_ref.cc), the AVX2 GEMMs (qconv_avx2.cc: int16
// vpmaddwd, or for QConv inputs known to be >= 0 the exact u8 vpmaddubsw
// path) or, for QConv, the AVX512-VNNI u8 x s8 GEMM (qconv_avx512vnni.cc),
// or its panels with AMX tiles as the micro-kernel (qconv_amx.cc: off until
// tested on an AMX CPU, see AmxUse in dispatch.h).
// "planes/im2col" in describe(): most convs read zero-bordered phase planes
// of the input, the rest an im2col (qconv_tiled.h picks per shape). The tier is
// fixed when the kernel is created (dispatch.h) and weights are packed for it.
// QConv is 2-D (NCHW) or 3-D (NCDHW); the weights' rank says which, and
// both run the same tier code through one ConvGeom (a 2-D conv is the 3-D
// one with a single frame); describe() adds "3-D" for the latter.
//
// Channels-last QConvs (channels_last = 1, made by the int8_channels_last
// pass): NHWC input, residual and output. The VNNI tier runs its NHWC kernel
// (qconv_nhwc_avx512vnni.cc, whole channel quads; depthwise convs its
// depthwise kernel, qconv_dw_nhwc_avx512vnni), the reference tier
// qconv_nhwc_ref; every other case (AVX2, AMX, a channel count that is not
// a multiple of 4) transposes x and z to NCHW in scratch, runs the tier's
// NCHW code and transposes y back: correct everywhere, fast only where the
// pass is on by default (dispatch.h, Int8Layout).
//
// Weights are normally constants, packed once here. They may also arrive at
// run time (a model feeding everything as inputs); then they are packed into
// scratch on every call, together with the per-channel multipliers.
#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/dispatch.h"
#include "cpu/kernel_table.h"
#include "cpu/kernels/conv_gemm/conv_gemm.h"
#include "cpu/kernels/quant/quant_kernels.h"
#include "cpu/kernels/shape_ops/shape_ops.h"

namespace engine::qk {
namespace {

// The int32 accumulator must not overflow: |x * w| <= 128 * 128, or with an
// input zero point |(x - x_zp) * w| <= 255 * 128.
constexpr int64_t kMaxK = std::numeric_limits<int32_t>::max() / (128 * 128);
constexpr int64_t kMaxKZeroPoint = std::numeric_limits<int32_t>::max() / (255 * 128);

size_t align64(size_t n) { return (n + 63) / 64 * 64; }

// The epilogue attributes shared by QConv and QGemm.
struct EpilogueAttrs {
  float x_scale = 0.f;
  std::vector<float> w_scale;
  bool has_z_scale = false;
  float z_scale = 1.f;
  bool requant = false;
  float y_scale = 1.f;
  int32_t x_zp = 0, z_zp = 0, y_zp = 0;  // int8 zero points (asymmetric activations)
  Act act = Act::kNone;
  float lo = 0.f, hi = 0.f;

  void parse(const Node& node) {
    const std::string d = node.describe();
    for (auto [name, zp] : {std::pair{"x_zero_point", &x_zp}, {"z_zero_point", &z_zp}, {"y_zero_point", &y_zp}}) {
      const int64_t v = node.attr_int(name, 0);
      ENGINE_ENFORCE(v >= -128 && v <= 127, kInvalidModel, d, ": ", name, " ", v, " is not an int8 value");
      *zp = static_cast<int32_t>(v);
    }
    ENGINE_ENFORCE(node.has_attr("x_scale"), kInvalidModel, d, ": attribute x_scale is required");
    x_scale = node.attr_float("x_scale", 0.f);
    w_scale = node.attr_floats("w_scale");
    ENGINE_ENFORCE(!w_scale.empty(), kInvalidModel, d, ": attribute w_scale is required");
    has_z_scale = node.has_attr("z_scale");
    z_scale = node.attr_float("z_scale", 1.f);
    requant = node.has_attr("y_scale");
    y_scale = node.attr_float("y_scale", 1.f);
    ENGINE_ENFORCE(!requant || (y_scale > 0.f && std::isfinite(y_scale)), kInvalidModel, d,
                   ": y_scale must be positive and finite");
    const std::string a = node.attr_string("activation", "");
    const std::vector<float> p = node.attr_floats("activation_params");
    if (a == "Relu") {
      act = Act::kRelu;
    } else if (a == "Clip") {
      act = Act::kClip;
      ENGINE_ENFORCE(p.size() == 2, kInvalidModel, d, ": Clip needs activation_params [min, max]");
      lo = p[0];
      hi = p[1];
    } else if (!a.empty()) {
      fail(ErrorKind::kUnsupportedOperator, d, ": activation '", a, "' is not supported (Relu, Clip)");
    }
  }

  // mul[c] = x_scale * w_scale[c] (w_scale broadcast when it has one entry),
  // divided by y_scale when the output is requantized (quant_kernels.h: the
  // epilogue's float terms are in output units).
  void fill_mul(float* mul, int64_t m, const std::string& d) const {
    ENGINE_ENFORCE(w_scale.size() == 1 || static_cast<int64_t>(w_scale.size()) == m, kInvalidModel, d,
                   ": w_scale has ", w_scale.size(), " entries for ", m, " output channels");
    for (int64_t c = 0; c < m; ++c) {
      mul[c] = x_scale * w_scale[w_scale.size() == 1 ? 0 : c];
      if (requant) mul[c] = mul[c] / y_scale;
    }
  }

  // Scratch bytes make() needs: a float bias divided by y_scale.
  size_t bias_bytes(const Tensor* b, int64_t m) const {
    return requant && b && b->dtype() == DType::kFloat32 ? align64(m * sizeof(float)) : 0;
  }

  // The epilogue for one call; bias and residual come from run-time tensors.
  // bias_scratch: bias_bytes(b, m) bytes.
  Epilogue make(const float* mul, const Tensor* b, const Tensor* z, Tensor& y, int64_t m, const std::string& d,
                void* bias_scratch) const {
    Epilogue e;
    e.mul = mul;
    double bias_most = 0.0;  // max |bias_f32[c]| in output units (Epilogue::v_bounded below)
    if (b) {
      ENGINE_ENFORCE(b->numel() == m, kShape, d, ": bias has ", b->numel(), " elements for ", m, " channels");
      if (b->dtype() == DType::kInt32) {
        e.bias_i32 = b->data<int32_t>();
      } else if (b->dtype() == DType::kFloat32) {
        e.bias_f32 = b->data<float>();
        if (requant) {
          auto* scaled = static_cast<float*>(bias_scratch);
          for (int64_t c = 0; c < m; ++c) {
            scaled[c] = e.bias_f32[c] / y_scale;
            bias_most = std::max(bias_most, std::fabs(static_cast<double>(scaled[c])));
          }
          e.bias_f32 = scaled;
        }
      } else {
        fail(ErrorKind::kDType, d, ": bias must be int32 or float32, got ", dtype_name(b->dtype()));
      }
    }
    if (z) {
      ENGINE_ENFORCE(z->shape() == y.shape(), kShape, d, ": residual shape ", shape_str(z->shape()),
                     " differs from the output shape ", shape_str(y.shape()));
      if (z->dtype() == DType::kFloat32) {
        e.z_f32 = z->data<float>();
        e.z_scale = requant ? 1.f / y_scale : 1.f;
      } else if (z->dtype() == DType::kInt8) {
        ENGINE_ENFORCE(has_z_scale, kInvalidModel, d, ": an int8 residual needs attribute z_scale");
        e.z_s8 = z->data<int8_t>();
        e.z_scale = requant ? z_scale / y_scale : z_scale;
        e.z_zp = z_zp;
      } else {
        fail(ErrorKind::kDType, d, ": residual must be float32 or int8, got ", dtype_name(z->dtype()));
      }
    }
    if (requant && !e.z_f32) {
      // Epilogue::v_bounded: |float(acc)| <= 2^31, so |v| <= 2^31 max|mul|
      // + max|bias_f32| + 256 |z_scale| (before a Relu or Clip, which only
      // narrow it), each term rounded up by a margin.
      double most = 0.0;
      for (int64_t c = 0; c < m; ++c) most = std::max(most, std::fabs(static_cast<double>(mul[c])));
      double bound = (2147483648.0 * most + bias_most) * (1.0 + 1e-6);
      if (e.z_s8) bound += 256.0 * std::fabs(static_cast<double>(e.z_scale)) * (1.0 + 1e-6);
      e.v_bounded = std::isfinite(bound) && bound < 2147483648.0 - 4096.0;
    }
    e.act = act;
    e.act_lo = requant ? lo / y_scale : lo;
    e.act_hi = requant ? hi / y_scale : hi;
    e.requant = requant;
    e.y_zp = y_zp;
    if (requant) {
      ENGINE_ENFORCE(y.dtype() == DType::kInt8, kInternal, d, ": output must be int8");
      e.y_s8 = y.data<int8_t>();
    } else {
      ENGINE_ENFORCE(y.dtype() == DType::kFloat32, kInternal, d, ": output must be float32");
      e.y_f32 = y.data<float>();
    }
    return e;
  }

  // Scratch bytes fold_input_zero_point needs: the folded bias, and the
  // weight sums when the weights arrive at run time (wsum == nullptr).
  static size_t fold_bytes(int64_t m, bool constant_weights) {
    return align64(m * sizeof(int32_t)) * (constant_weights ? 1 : 2);
  }

  // The SIMD tiers sum x * w with the padding at x_zp, so they need
  // -x_zp * wsum[c] added to the accumulator: writes bias + that (wrapping
  // int32, exact) to `scratch` and points e.bias_i32 at it. wsum: the
  // weights' row sums, or nullptr to take them from the m x k weights `w`
  // into scratch. The reference subtracts x_zp from each input instead (the
  // same int32 sums).
  void fold_input_zero_point(Epilogue& e, const int32_t* wsum, const int8_t* w, int64_t m, int64_t k,
                             int32_t* scratch) const {
    if (!wsum) {
      int32_t* sums = scratch + align64(m * sizeof(int32_t)) / sizeof(int32_t);
      weight_sums(w, k, m, k, 1, sums);
      wsum = sums;
    }
    for (int64_t c = 0; c < m; ++c)
      scratch[c] = static_cast<int32_t>(static_cast<uint32_t>(e.bias_i32 ? e.bias_i32[c] : 0) -
                                        static_cast<uint32_t>(x_zp) * static_cast<uint32_t>(wsum[c]));
    e.bias_i32 = scratch;
  }
};

// The QConv tier for executors compiled now (dispatch.h, qconv_tier: the
// int8_channels_last pass asks it too).
using Tier = QConvTier;

// How a channels-last QConv (channels_last = 1) runs: the VNNI tier's own
// NHWC kernel (whole channel quads) or NHWC depthwise kernel, the NHWC
// reference loops, or any other tier's NCHW code between transposes of x, z
// and y in scratch.
enum class Nhwc { kNone, kVnni, kVnniDw, kRef, kViaNchw };

// [n, rows, cols] <-> [n, cols, rows] int8, per image: NHWC to NCHW is
// rows = H * W, cols = C; back, the other way round. Only the channels-last
// fallback uses it (a transpose costs a pass over the tensor, which the NHWC
// kernels avoid). The 2-D transposes are the Transpose kernel's
// (shape_ops.h): transpose2d_b8_avx512 where `avx512`
// (kernel_usable("transpose_s8_avx512")), else transpose2d_ref. Work units
// are (image, 64-row block), the AVX-512 block height; when there are fewer
// of them than threads, columns are split too, in multiples of 64, so that
// threads write disjoint destination lines.
void transpose_s8(ThreadPool& pool, bool avx512, const int8_t* src, int8_t* dst, int64_t n, int64_t rows,
                  int64_t cols) {
  constexpr int64_t kRows = 64;
  const int64_t row_blocks = (rows + kRows - 1) / kRows;
  const int64_t threads = pool.num_threads();
  const int64_t col_block = n * row_blocks < threads ? ((cols + threads - 1) / threads + 63) / 64 * 64 : cols;
  const int64_t col_blocks = (cols + col_block - 1) / col_block;
  pool.parallel_for(n * row_blocks * col_blocks, [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      const int64_t c0 = u % col_blocks * col_block, r0 = u / col_blocks % row_blocks * kRows;
      const int64_t img = u / col_blocks / row_blocks;
      const int64_t nr = std::min(kRows, rows - r0), nc = std::min(col_block, cols - c0);
      const auto* s = reinterpret_cast<const uint8_t*>(src + img * rows * cols + r0 * cols + c0);
      auto* d = reinterpret_cast<uint8_t*>(dst + img * rows * cols + c0 * rows + r0);
      if (avx512) shape_ops::transpose2d_b8_avx512(s, cols, d, rows, nr, nc);
      else shape_ops::transpose2d_ref(s, cols, d, rows, nr, nc, 1);
    }
  });
}

// True when every value of the int8 tensor `v` is known to be >= 0 before
// the run: the output of a QConv/QGemm that requantizes after a Relu (or a
// Clip with bounds >= 0) with a zero point >= 0 (the values are >= it), or
// an int8 MaxPool or Transpose of such a tensor (int8_channels_last puts
// Transposes between QConvs). Such activations feed vpdpbusd's unsigned
// operand as they are, without the +128 shift.
bool known_nonneg_int8(const Value* v) {
  const Node* p = v ? v->producer() : nullptr;
  if (!p || v->dtype() != DType::kInt8) return false;
  if (p->kind() == OpKind::kMaxPool || p->kind() == OpKind::kTranspose) return known_nonneg_int8(p->input(0));
  if (p->kind() != OpKind::kQConv && p->kind() != OpKind::kQGemm) return false;
  if (!p->has_attr("y_scale") || p->attr_int("y_zero_point", 0) < 0) return false;
  const std::string a = p->attr_string("activation", "");
  if (a == "Relu") return true;
  if (a == "Clip") {
    const std::vector<float> c = p->attr_floats("activation_params");
    return c.size() == 2 && c[0] >= 0.f && c[1] >= 0.f;
  }
  return false;
}

void check_int8(const Tensor& t, const std::string& d, const char* what) {
  ENGINE_ENFORCE(t.dtype() == DType::kInt8, kDType, d, ": ", what, " must be int8, got ", dtype_name(t.dtype()));
}

// The AVX2 u8 path's vpdpbusd microkernel now (dispatch.h, avx2_u8_dot), or
// null for its vpmaddubsw one.
const U8DotKernels* u8_dot_kernels() {
  switch (avx2_u8_dot()) {
    case AvxVnniUse::kOn: return &kU8DotAvxVnni;
    case AvxVnniUse::kEvex: return &kU8DotEvex;
    case AvxVnniUse::kOff: break;
  }
  return nullptr;
}

class QConvKernel final : public Kernel {
 public:
  explicit QConvKernel(const Node& node)
      : desc_(node.describe()),
        tier_(qconv_tier()),
        x_nonneg_(known_nonneg_int8(node.input(0)) && node.attr_int("x_zero_point", 0) >= 0),
        transpose_avx512_(kernel_usable("transpose_s8_avx512")),
        u8dot_(tier_ == Tier::kAvx2 && x_nonneg_ ? u8_dot_kernels() : nullptr) {
    ep_.parse(node);
    group_ = node.attr_int("group", 1);
    channels_last_ = node.attr_int("channels_last", 0) != 0;
    strides_ = node.attr_ints("strides", {});
    dilations_ = node.attr_ints("dilations", {});
    pads_ = node.attr_ints("pads", {});
    auto_pad_ = node.attr_string("auto_pad", "NOTSET");
    kernel_shape_ = node.attr_ints("kernel_shape", {});
    // The spatial rank (2 or 3) comes from the attributes that are set, else
    // from the weights (constant now, or at run time).
    Value* w = node.input(1);
    if (w && w->has_shape() && (w->shape().size() == 4 || w->shape().size() == 5))
      spatial_ = static_cast<int64_t>(w->shape().size()) - 2;
    for (const std::vector<int64_t>* a : {&strides_, &dilations_, &kernel_shape_, &pads_}) {
      if (a->empty()) continue;
      const int64_t r = static_cast<int64_t>(a->size()) / (a == &pads_ ? 2 : 1);
      ENGINE_ENFORCE((r == 2 || r == 3) && (spatial_ == 0 || spatial_ == r) &&
                         static_cast<int64_t>(a->size()) == r * (a == &pads_ ? 2 : 1),
                     kUnsupportedOperator, desc_,
                     ": only 2-D and 3-D convolutions are supported (strides, dilations, kernel_shape and pads "
                     "must agree with the weights' rank)");
      spatial_ = r;
    }
    ENGINE_ENFORCE(auto_pad_ == "NOTSET" || auto_pad_ == "VALID" || auto_pad_ == "SAME_UPPER" ||
                       auto_pad_ == "SAME_LOWER",
                   kInvalidModel, desc_, ": unknown auto_pad '", auto_pad_, "'");
    for (int64_t v : strides_) ENGINE_ENFORCE(v >= 1, kInvalidModel, desc_, ": strides must be >= 1");
    for (int64_t v : dilations_) ENGINE_ENFORCE(v >= 1, kInvalidModel, desc_, ": dilations must be >= 1");
    for (int64_t v : pads_) ENGINE_ENFORCE(v >= 0, kInvalidModel, desc_, ": pads must be >= 0");
    ENGINE_ENFORCE(group_ >= 1, kInvalidModel, desc_, ": group must be >= 1");
    if (channels_last_) {
      // ops.def: a channels-last QConv is 2-D, one group or depthwise, requantized.
      ENGINE_ENFORCE(spatial_ != 3, kInvalidModel, desc_, ": channels_last is for 2-D convolutions only");
      ENGINE_ENFORCE(group_ == 1 || depthwise_weights(w), kInvalidModel, desc_,
                     ": channels_last needs group 1 or a depthwise conv, got group ", group_);
      ENGINE_ENFORCE(ep_.requant, kInvalidModel, desc_,
                     ": channels_last needs y_scale (an int8, requantized output)");
    }
    // Depthwise (one input and output channel per group) runs its own SIMD
    // kernel on the AVX2 and VNNI tiers (qconv_depthwise_applies).
    if (w && w->has_shape() && w->shape().size() >= 4) {
      const Shape& ws = w->shape();
      int64_t taps = 1;
      for (size_t i = 2; i < ws.size(); ++i) taps *= ws[i];
      depthwise_ = tier_ != Tier::kRef && group_ > 1 && ws[0] == group_ && ws[1] == 1 && taps > 1 &&
                   taps <= kDwMaxTaps;
    }
    // A channels-last conv's path, from the weights' channels (unknown: -1,
    // for run-time weights without a static shape; run() then decides).
    if (channels_last_) {
      int64_t cg = -1;
      if (w && w->is_constant() && w->constant()->rank() == 4) cg = w->constant()->dim(1);
      else if (w && w->has_shape() && w->shape().size() == 4) cg = w->shape()[1];
      nhwc_ = nhwc_path(cg, group_ > 1);
    }
    if (w && w->is_constant()) {
      weights_ = w->constant();
      check_weights(*weights_);
      const int64_t m = weights_->dim(0);
      mul_.resize(m);
      ep_.fill_mul(mul_.data(), m, desc_);
      const int64_t mg = m / group_, k = weights_->numel() / m;
      if (ep_.x_zp != 0 && tier_ != Tier::kRef) {
        wsum_.resize(m);
        weight_sums(weights_->data<int8_t>(), k, m, k, 1, wsum_.data());
      }
      const int64_t cg = weights_->dim(1), taps = k / cg;
      if (nhwc_ == Nhwc::kVnni) {
        // The NHWC kernel's own blocks only: the NCHW tiers' packs below
        // would never be read.
        packed8_.assign(packed_w_nhwc_bytes(m, cg, taps), 0);
        corr_.assign(m, 0);
        pack_w_nhwc(weights_->data<int8_t>(), m, cg, taps, packed8_.data(), corr_.data());
      } else if (nhwc_ == Nhwc::kVnniDw) {
        packed8_.assign(packed_w_dw_nhwc_bytes(m, taps), 0);
        corr_.assign(m, 0);
        pack_w_dw_nhwc(weights_->data<int8_t>(), m, taps, packed8_.data(), corr_.data());
      } else if (amx()) {
        packed8_.assign(group_ * packed_a_amx_bytes(mg, k), 0);
        corr_.assign(m, 0);
        pack_weights_amx(weights_->data<int8_t>(), mg, k, packed8_.data(), corr_.data());
      } else if (tier_ == Tier::kAvx512Vnni && depthwise_ && mg == 1 && cg == 1 && m == group_) {
        // The NCHW depthwise kernel's float weights (qconv_depthwise_avx512vnni);
        // the GEMM's panels would never be read.
        dw_f32_ = aligned_storage(static_cast<size_t>(conv_gemm::depthwise_packed_size(m, taps)) * sizeof(float));
        conv_gemm::depthwise_pack_weights_s8(weights_->data<int8_t>(), m, taps, static_cast<float*>(dw_f32_.get()));
      } else if (tier_ == Tier::kAvx512Vnni) {
        packed8_.assign(group_ * packed_a_vnni_bytes(mg, k), 0);
        corr_.assign(m, 0);
        pack_weights_vnni(weights_->data<int8_t>(), mg, k, packed8_.data(), corr_.data());
      } else if (tier_ == Tier::kAvx2 && x_nonneg_) {
        packed8_.assign(group_ * packed_a_u8_bytes(mg, k), 0);
        pack_weights_u8(weights_->data<int8_t>(), mg, k, packed8_.data());
      } else if (tier_ == Tier::kAvx2) {
        packed_.assign(group_ * packed_a_elems(mg, k), 0);
        for (int64_t g = 0; g < group_; ++g)
          pack_a(weights_->data<int8_t>() + g * mg * k, k, 1, mg, k, packed_.data() + g * packed_a_elems(mg, k));
      }
      // On the 4-byte k-group kernels (VNNI, AVX2 u8), 2-D k x k convs with
      // whole channel quads may read the quad planes (qconv_tiled.h): their
      // weights in that k order too. AMX, which loads 16 quads of one tap
      // as a tile, takes them with whole 64-channel blocks.
      const bool nchw = nhwc_ != Nhwc::kVnni && nhwc_ != Nhwc::kVnniDw;
      const bool vnni = tier_ == Tier::kAvx512Vnni, u8 = tier_ == Tier::kAvx2 && x_nonneg_;
      if (nchw && amx() && weights_->rank() == 4 && taps > 1 && cg % 64 == 0) {
        packed8q_.assign(group_ * packed_a_amx_bytes(mg, k), 0);
        for (int64_t g = 0; g < group_; ++g)
          pack_a_amx_quads(weights_->data<int8_t>() + g * mg * k, k, mg, cg, taps,
                           packed8q_.data() + g * packed_a_amx_bytes(mg, k));
      } else if (nchw && (vnni || u8) && weights_->rank() == 4 && taps > 1 && cg % 4 == 0) {
        const int64_t bytes = vnni ? packed_a_vnni_bytes(mg, k) : packed_a_u8_bytes(mg, k);
        packed8q_.assign(group_ * bytes, 0);
        for (int64_t g = 0; g < group_; ++g) {
          const int8_t* src = weights_->data<int8_t>() + g * mg * k;
          if (vnni) pack_a_quads<kVnniMR>(src, k, mg, cg, taps, packed8q_.data() + g * bytes);
          else pack_a_quads<kU8MR>(src, k, mg, cg, taps, packed8q_.data() + g * bytes);
        }
      }
    }
  }

  std::string describe() const override {
    const std::string dims = std::string(spatial_ == 3 ? " 3-D" : "") + (ep_.x_zp ? " zero-point input" : "");
    switch (nhwc_) {
      case Nhwc::kVnni:
        return "qconv_s8_avx512vnni" + dims +
               (x_nonneg_ ? " nhwc(vpdpbusd, u8 input)" : " nhwc(vpdpbusd, +128 input)");
      case Nhwc::kVnniDw:
        return "qconv_s8_avx512vnni" + dims +
               (x_nonneg_ ? " nhwc depthwise(vpdpbusd, u8 input)" : " nhwc depthwise(vpdpbusd, +128 input)");
      case Nhwc::kRef: return "qconv_s8_ref" + dims + " nhwc";
      case Nhwc::kViaNchw: return describe_nchw(dims) + " nhwc(via nchw transposes)";
      case Nhwc::kNone: break;
    }
    return describe_nchw(dims);
  }

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& x = *in[0];
    const Tensor& w = *in[1];
    const Tensor* b = in.size() > 2 ? in[2] : nullptr;
    const Tensor* z = in.size() > 3 ? in[3] : nullptr;
    Tensor& y = *out[0];
    check_int8(x, desc_, "input");
    if (!weights_) check_weights(w);
    if (channels_last_) {
      ENGINE_ENFORCE(x.rank() == 4 && w.rank() == 4, kShape, desc_,
                     ": channels_last takes a 4-D [N, H, W, C] input and 4-D weights, got input ",
                     shape_str(x.shape()), " and weights ", shape_str(w.shape()));
      if (z) check_int8(*z, desc_, "a channels_last residual");
    } else {
      ENGINE_ENFORCE(x.rank() == w.rank(), kShape, desc_, ": input must be ", w.rank(), "-D for weights ",
                     shape_str(w.shape()), ", got ", shape_str(x.shape()));
    }
    const ConvGeom g = geometry(x, w);
    const bool out_ok = channels_last_ ? y.rank() == 4 && y.dim(0) == g.n && y.dim(1) == g.oh && y.dim(2) == g.ow &&
                                             y.dim(3) == g.m
                                       : y.rank() == x.rank() && g.n == y.dim(0) && g.m == y.dim(1) &&
                                             g.oh == y.dim(y.rank() - 2) && g.ow == y.dim(y.rank() - 1) &&
                                             (x.rank() == 4 || g.od == y.dim(2));
    ENGINE_ENFORCE(out_ok, kInternal, desc_, ": output shape ", shape_str(y.shape()), " disagrees with the kernel");
    // Constant weights were packed for nhwc_; run-time ones take the path
    // this geometry allows.
    const Nhwc path = !channels_last_ || weights_ ? nhwc_ : nhwc_path(g.c, g.group == g.c && g.group == g.m);
    const int64_t mg = g.mg(), k = g.k();
    const int threads = ctx.pool().num_threads();
    // Run-time weights are packed into scratch on every call: multipliers,
    // then the tier's packed weights (and, for VNNI, the +128 corrections).
    const size_t mul_bytes = align64(g.m * sizeof(float));
    size_t pack_bytes = 0, corr_bytes = 0, ws_bytes = 0;
    if (path == Nhwc::kVnni) {
      if (!weights_) pack_bytes = align64(packed_w_nhwc_bytes(g.m, g.c, g.kh * g.kw));
      if (!weights_) corr_bytes = align64(g.m * sizeof(int32_t));
      ws_bytes = qconv_nhwc_avx512vnni_workspace(g, threads);
    } else if (path == Nhwc::kVnniDw) {
      if (!weights_) pack_bytes = align64(packed_w_dw_nhwc_bytes(g.m, g.kh * g.kw));
      if (!weights_) corr_bytes = align64(g.m * sizeof(int32_t));
      ws_bytes = qconv_dw_nhwc_avx512vnni_workspace(g, threads);
    } else if (amx()) {
      if (!weights_) pack_bytes = align64(group_ * packed_a_amx_bytes(mg, k));
      if (!weights_) corr_bytes = align64(g.m * sizeof(int32_t));
      ws_bytes = qconv_amx_workspace(g, threads, !packed8q_.empty());
    } else if (tier_ == Tier::kAvx512Vnni) {
      if (!weights_) pack_bytes = align64(group_ * packed_a_vnni_bytes(mg, k));
      if (!weights_) corr_bytes = align64(g.m * sizeof(int32_t));
      ws_bytes = qconv_avx512vnni_workspace(g, threads, !packed8q_.empty());
    } else if (tier_ == Tier::kAvx2 && x_nonneg_) {
      if (!weights_) pack_bytes = align64(group_ * packed_a_u8_bytes(mg, k));
      ws_bytes = qconv_avx2_u8_workspace(g, threads, !packed8q_.empty());
    } else if (tier_ == Tier::kAvx2) {
      if (!weights_) pack_bytes = align64(group_ * packed_a_elems(mg, k) * sizeof(int16_t));
      ws_bytes = qconv_avx2_workspace(g, threads);
    }
    const bool nchw = path == Nhwc::kNone || path == Nhwc::kViaNchw;
    const bool dw = nchw && tier_ != Tier::kRef && qconv_depthwise_applies(g);
    if (dw)
      ws_bytes = std::max(ws_bytes, vnni_family() ? qconv_depthwise_avx512vnni_workspace(g, threads, dw_f32_ != nullptr)
                                                  : qconv_depthwise_workspace(g, threads));
    // An input zero point on a SIMD tier: the folded bias (and, for run-time
    // weights, their sums) per call.
    const bool fold = ep_.x_zp != 0 && tier_ != Tier::kRef;
    const size_t fold_bytes = fold ? EpilogueAttrs::fold_bytes(g.m, weights_ != nullptr) : 0;
    const size_t bias_bytes = ep_.bias_bytes(b, g.m);
    const size_t runtime_bytes = (weights_ ? 0 : mul_bytes + pack_bytes + corr_bytes) + fold_bytes + bias_bytes;
    // The channels-last fallback's NCHW copies of x, z and y come first.
    const size_t x_bytes = path == Nhwc::kViaNchw ? align64(x.numel()) : 0;
    const size_t z_bytes = path == Nhwc::kViaNchw && z ? align64(z->numel()) : 0;
    const size_t y_bytes = path == Nhwc::kViaNchw ? align64(y.numel()) : 0;
    const size_t copy_bytes = x_bytes + z_bytes + y_bytes;
    const size_t total = copy_bytes + runtime_bytes + ws_bytes;
    char* const all = total ? static_cast<char*>(ctx.scratch(total)) : nullptr;
    char* scratch = all ? all + copy_bytes : nullptr;
    const float* mul = mul_.data();
    const bool bytes =
        path == Nhwc::kVnni || path == Nhwc::kVnniDw || vnni_family() || (tier_ == Tier::kAvx2 && x_nonneg_);
    const void* packed = bytes ? static_cast<const void*>(packed8_.data()) : static_cast<const void*>(packed_.data());
    const int32_t* corr = corr_.data();
    if (!weights_) {
      auto* m = reinterpret_cast<float*>(scratch);
      ep_.fill_mul(m, g.m, desc_);
      mul = m;
      char* p = scratch + mul_bytes;
      if (path == Nhwc::kVnni) {
        auto* c = reinterpret_cast<int32_t*>(p + pack_bytes);
        pack_w_nhwc(w.data<int8_t>(), g.m, g.c, g.kh * g.kw, reinterpret_cast<int8_t*>(p), c);
        corr = c;
      } else if (path == Nhwc::kVnniDw) {
        auto* c = reinterpret_cast<int32_t*>(p + pack_bytes);
        pack_w_dw_nhwc(w.data<int8_t>(), g.m, g.kh * g.kw, reinterpret_cast<int8_t*>(p), c);
        corr = c;
      } else if (vnni_family()) {
        auto* c = reinterpret_cast<int32_t*>(p + pack_bytes);
        if (amx()) pack_weights_amx(w.data<int8_t>(), mg, k, reinterpret_cast<int8_t*>(p), c);
        else pack_weights_vnni(w.data<int8_t>(), mg, k, reinterpret_cast<int8_t*>(p), c);
        corr = c;
      } else if (tier_ == Tier::kAvx2 && x_nonneg_) {
        pack_weights_u8(w.data<int8_t>(), mg, k, reinterpret_cast<int8_t*>(p));
      } else if (tier_ == Tier::kAvx2) {
        auto* p16 = reinterpret_cast<int16_t*>(p);
        for (int64_t grp = 0; grp < group_; ++grp)
          pack_a(w.data<int8_t>() + grp * mg * k, k, 1, mg, k, p16 + grp * packed_a_elems(mg, k));
      }
      packed = p;
    }
    Epilogue e = ep_.make(mul, b, z, y, g.m, desc_, scratch + runtime_bytes - bias_bytes);
    if (fold)
      ep_.fold_input_zero_point(e, weights_ ? wsum_.data() : nullptr, w.data<int8_t>(), g.m, w.numel() / g.m,
                                reinterpret_cast<int32_t*>(scratch + runtime_bytes - bias_bytes - fold_bytes));
    void* ws = scratch + runtime_bytes;
    switch (path) {
      case Nhwc::kVnni:
        qconv_nhwc_avx512vnni(ctx.pool(), g, x.data<int8_t>(), x_nonneg_, static_cast<const int8_t*>(packed), corr,
                              e, ws);
        return;
      case Nhwc::kVnniDw:
        qconv_dw_nhwc_avx512vnni(ctx.pool(), g, x.data<int8_t>(), x_nonneg_, static_cast<const int8_t*>(packed),
                                 corr, e, ws);
        return;
      case Nhwc::kRef:
        qconv_nhwc_ref(g, x.data<int8_t>(), w.data<int8_t>(), e);
        return;
      case Nhwc::kNone:
        run_nchw(ctx, g, x.data<int8_t>(), w, packed, corr, e, ws, dw);
        return;
      case Nhwc::kViaNchw: break;
    }
    // The fallback: the tier's NCHW code between transposes, its epilogue
    // reading z and writing y in NCHW scratch.
    auto* xt = reinterpret_cast<int8_t*>(all);
    auto* zt = reinterpret_cast<int8_t*>(all + x_bytes);
    auto* yt = reinterpret_cast<int8_t*>(all + x_bytes + z_bytes);
    const int64_t hw = g.h * g.w, ohw = g.oh * g.ow;
    transpose_s8(ctx.pool(), transpose_avx512_, x.data<int8_t>(), xt, g.n, hw, g.c);
    if (e.z_s8) {
      transpose_s8(ctx.pool(), transpose_avx512_, e.z_s8, zt, g.n, ohw, g.m);
      e.z_s8 = zt;
    }
    e.y_s8 = yt;
    run_nchw(ctx, g, xt, w, packed, corr, e, ws, dw);
    transpose_s8(ctx.pool(), transpose_avx512_, yt, y.data<int8_t>(), g.n, g.m, ohw);
  }

 private:
  bool amx() const { return tier_ == Tier::kAmx || tier_ == Tier::kAmxEmulated; }
  // The tiers with VNNI's u8 panels, +128 correction and depthwise kernel.
  bool vnni_family() const { return tier_ == Tier::kAvx512Vnni || amx(); }

  // A channels-last conv with c input channels on this tier (c < 0:
  // unknown until run time). One group or depthwise (checked in the
  // constructor).
  Nhwc nhwc_path(int64_t c, bool depthwise) const {
    if (tier_ == Tier::kRef) return Nhwc::kRef;
    if (tier_ != Tier::kAvx512Vnni || c <= 0) return Nhwc::kViaNchw;
    if (depthwise) return Nhwc::kVnniDw;
    ConvGeom g;
    g.c = c;
    return qconv_nhwc_avx512vnni_applies(g) ? Nhwc::kVnni : Nhwc::kViaNchw;
  }

  // Constant or shaped [C, 1, kH, kW] weights of a conv with C groups.
  bool depthwise_weights(const Value* w) const {
    return w && w->has_shape() && w->shape().size() == 4 && w->shape()[0] == group_ && w->shape()[1] == 1 &&
           group_ > 1;
  }

  std::string describe_nchw(const std::string& dims) const {
    // 3-D convs run the same GEMMs over a 3-D im2col / frame planes
    // (qconv_tiled.h); the profile says which form a layer took.
    if (depthwise_) {
      if (dw_blocked_) return "qconv_s8_avx512vnni" + dims + " depthwise(16 channels per zmm, exact fp32 sums)";
      return (vnni_family() ? "qconv_s8_avx512vnni" : "qconv_s8_avx2") + dims + " depthwise(int16 madd)";
    }
    switch (tier_) {
      case Tier::kAmx:
      case Tier::kAmxEmulated:
        return std::string(tier_ == Tier::kAmx ? "qconv_s8_amx" : "qconv_s8_amx(emulated)") + dims +
               (x_nonneg_ ? " planes/im2col+gemm(tdpbsud, u8 input)" : " planes/im2col+gemm(tdpbsud, +128 input)");
      case Tier::kAvx512Vnni:
        return "qconv_s8_avx512vnni" + dims +
               (x_nonneg_ ? " planes/im2col+gemm(vpdpbusd, u8 input)" : " planes/im2col+gemm(vpdpbusd, +128 input)");
      case Tier::kAvx2:
        return "qconv_s8_avx2" + dims +
               (!x_nonneg_                ? " planes/im2col+gemm(int16 madd)"
                : u8dot_ == &kU8DotAvxVnni ? " planes/im2col+gemm(vpdpbusd ymm: qconv_u8dot_s8_avxvnni, u8 input)"
                : u8dot_                   ? " planes/im2col+gemm(vpdpbusd ymm, EVEX twin, u8 input)"
                                           : " planes/im2col+gemm(maddubsw, u8 input)");
      case Tier::kRef: break;
    }
    return "qconv_s8_ref" + dims;
  }

  // The NCHW tiers on the NCHW input x, writing through e: packed / corr
  // are the tier's weights (constant or packed for this call), ws its
  // workspace; dw: the depthwise kernel applies.
  void run_nchw(KernelContext& ctx, const ConvGeom& g, const int8_t* x, const Tensor& w, const void* packed,
                const int32_t* corr, const Epilogue& e, void* ws, bool dw) const {
    if (dw) {
      dw_blocked_ = dw_f32_ && qconv_depthwise_blocked_applies(g);
      if (vnni_family())
        qconv_depthwise_avx512vnni(ctx.pool(), g, x, w.data<int8_t>(), static_cast<const float*>(dw_f32_.get()), e,
                                   ws);
      else qconv_depthwise_avx2(ctx.pool(), g, x, w.data<int8_t>(), e, ws);
      return;
    }
    switch (tier_) {
      case Tier::kAmx:
      case Tier::kAmxEmulated:
        qconv_amx(ctx.pool(), g, x, x_nonneg_, static_cast<const int8_t*>(packed),
                  !packed8q_.empty() ? packed8q_.data() : nullptr, corr, e, ws, tier_ == Tier::kAmxEmulated);
        return;
      case Tier::kAvx512Vnni:
        qconv_avx512vnni(ctx.pool(), g, x, x_nonneg_, static_cast<const int8_t*>(packed),
                         !packed8q_.empty() ? packed8q_.data() : nullptr, corr, e, ws);
        return;
      case Tier::kAvx2:
        if (x_nonneg_)
          qconv_avx2_u8(ctx.pool(), g, x, static_cast<const int8_t*>(packed),
                        !packed8q_.empty() ? packed8q_.data() : nullptr, e, ws, u8dot_);
        else qconv_avx2(ctx.pool(), g, x, static_cast<const int16_t*>(packed), e, ws);
        return;
      case Tier::kRef: break;
    }
    qconv_ref(g, x, w.data<int8_t>(), e);
  }

  void check_weights(const Tensor& w) const {
    check_int8(w, desc_, "weights");
    ENGINE_ENFORCE(w.rank() == 4 || w.rank() == 5, kUnsupportedOperator, desc_,
                   ": only 2-D and 3-D convolutions are supported (weights ", shape_str(w.shape()), ")");
    ENGINE_ENFORCE(spatial_ == 0 || spatial_ == w.rank() - 2, kInvalidModel, desc_, ": weights ",
                   shape_str(w.shape()), " do not match the ", spatial_, "-D attributes");
    ENGINE_ENFORCE(w.dim(0) > 0 && w.dim(0) % group_ == 0, kInvalidModel, desc_, ": ", w.dim(0),
                   " output channels are not divisible by group ", group_);
    ENGINE_ENFORCE(w.numel() / w.dim(0) <= (ep_.x_zp ? kMaxKZeroPoint : kMaxK), kUnsupportedOperator, desc_,
                   ": reduction size too large for int32 accumulation");
  }

  // All groups: group g's tiles at out + g * packed_a_vnni_bytes(mg, k).
  void pack_weights_vnni(const int8_t* w, int64_t mg, int64_t k, int8_t* out, int32_t* corr) const {
    for (int64_t g = 0; g < group_; ++g)
      pack_a_vnni(w + g * mg * k, k, mg, k, out + g * packed_a_vnni_bytes(mg, k), corr + g * mg);
  }

  // AMX: group g's tiles at out + g * packed_a_amx_bytes(mg, k).
  void pack_weights_amx(const int8_t* w, int64_t mg, int64_t k, int8_t* out, int32_t* corr) const {
    for (int64_t g = 0; g < group_; ++g)
      pack_a_amx(w + g * mg * k, k, mg, k, out + g * packed_a_amx_bytes(mg, k), corr + g * mg);
  }

  // AVX2 u8 path: group g's tiles at out + g * packed_a_u8_bytes(mg, k).
  void pack_weights_u8(const int8_t* w, int64_t mg, int64_t k, int8_t* out) const {
    for (int64_t g = 0; g < group_; ++g) pack_a_u8(w + g * mg * k, k, mg, k, out + g * packed_a_u8_bytes(mg, k));
  }

  ConvGeom geometry(const Tensor& x, const Tensor& w) const {
    const int sp = static_cast<int>(w.rank()) - 2;  // 2 or 3 (check_weights)
    const int z = sp - 2;                           // index of H among the spatial axes
    auto at = [&](const std::vector<int64_t>& v, int i, int64_t def) { return v.empty() ? def : v[i]; };
    ConvGeom g;
    g.n = x.dim(0);
    // Channels-last (2-D only): [N, H, W, C]; the geometry is the same.
    g.c = x.dim(channels_last_ ? 3 : 1);
    g.h = x.dim(channels_last_ ? 1 : 2 + z);
    g.w = x.dim(channels_last_ ? 2 : 3 + z);
    g.m = w.dim(0);
    g.kh = w.dim(2 + z);
    g.kw = w.dim(3 + z);
    g.group = group_;
    g.x_zp = static_cast<int8_t>(ep_.x_zp);
    ENGINE_ENFORCE(g.c == w.dim(1) * group_, kShape, desc_, ": input has ", g.c, " channels, weights expect ",
                   w.dim(1) * group_);
    if (!kernel_shape_.empty())
      for (int i = 0; i < sp; ++i)
        ENGINE_ENFORCE(static_cast<int>(kernel_shape_.size()) == sp && kernel_shape_[i] == w.dim(2 + i), kInvalidModel,
                       desc_, ": kernel_shape does not match the weights ", shape_str(w.shape()));
    g.sh = at(strides_, z, 1);
    g.sw = at(strides_, z + 1, 1);
    g.dh = at(dilations_, z, 1);
    g.dw = at(dilations_, z + 1, 1);
    auto axis = [&](int64_t in, int64_t k, int64_t s, int64_t d, int64_t pb, int64_t pe, int64_t* pad_begin) {
      const int64_t dk = (k - 1) * d + 1;
      int64_t o;
      if (auto_pad_ == "NOTSET") {
        *pad_begin = pb;
        ENGINE_ENFORCE(in + pb + pe >= dk, kShape, desc_, ": kernel larger than the padded input");
        o = (in + pb + pe - dk) / s + 1;
      } else if (auto_pad_ == "VALID") {
        *pad_begin = 0;
        ENGINE_ENFORCE(in >= dk, kShape, desc_, ": kernel larger than the input");
        o = (in - dk) / s + 1;
      } else {
        o = (in + s - 1) / s;
        const int64_t total = std::max<int64_t>(0, (o - 1) * s + dk - in);
        *pad_begin = auto_pad_ == "SAME_UPPER" ? total / 2 : total - total / 2;
      }
      return o;
    };
    if (sp == 3) {
      g.d = x.dim(2);
      g.kd = w.dim(2);
      g.sd = at(strides_, 0, 1);
      g.dd = at(dilations_, 0, 1);
      g.od = axis(g.d, g.kd, g.sd, g.dd, at(pads_, 0, 0), at(pads_, 3, 0), &g.pf);
    }
    g.oh = axis(g.h, g.kh, g.sh, g.dh, at(pads_, z, 0), at(pads_, z + sp, 0), &g.pt);
    g.ow = axis(g.w, g.kw, g.sw, g.dw, at(pads_, z + 1, 0), at(pads_, z + 1 + sp, 0), &g.pl);
    return g;
  }

  std::string desc_;
  Tier tier_;
  bool x_nonneg_;
  bool transpose_avx512_;  // the channels-last fallback's transposes: transpose_s8_avx512 is usable
  const U8DotKernels* u8dot_;  // the AVX2 u8 path on vpdpbusd (AVX-VNNI or its EVEX twin), or null
  EpilogueAttrs ep_;
  int64_t group_ = 1;
  int64_t spatial_ = 0;     // 2 or 3; 0 until known (no attribute set, weights fed at run time)
  bool depthwise_ = false;  // for describe(); run() decides from the geometry
  mutable bool dw_blocked_ = false;  // the last run took the blocked depthwise kernel (describe())
  bool channels_last_ = false;  // attribute channels_last: x, z and y are NHWC
  Nhwc nhwc_ = Nhwc::kNone;     // a channels-last conv's path (for run-time weights: describe()'s guess)
  std::vector<int64_t> strides_, dilations_, pads_, kernel_shape_;
  std::string auto_pad_;
  std::shared_ptr<const Tensor> weights_;
  std::vector<float> mul_;
  std::vector<int16_t> packed_;   // AVX2
  std::vector<int8_t> packed8_;   // AMX, AVX512-VNNI (NCHW or NHWC: pack_w_nhwc), AVX2 u8 path
  std::shared_ptr<void> dw_f32_;  // VNNI, NCHW depthwise: the float kernel's weights (int8 values; 64-byte aligned)
  std::vector<int8_t> packed8q_;  // VNNI, AVX2 u8: (quad, tap) k order (pack_a_quads); AMX: (tap, quad)
                                  // (pack_a_amx_quads); empty: none, run-time weights
  std::vector<int32_t> corr_;     // AMX, AVX512-VNNI: 128 * sum_k w[m, k]
  std::vector<int32_t> wsum_;     // SIMD tiers with an input zero point: sum_k w[m, k]
};

class QGemmKernel final : public Kernel {
 public:
  explicit QGemmKernel(const Node& node) : desc_(node.describe()), avx2_(kernel_usable("qgemm_s8_avx2")) {
    ep_.parse(node);
    Value* w = node.input(1);
    if (w && w->is_constant()) {
      weights_ = w->constant();
      check_weights(*weights_);
      const int64_t m = weights_->dim(0), k = weights_->dim(1);
      mul_.resize(m);
      ep_.fill_mul(mul_.data(), m, desc_);
      // Constant weights on VNNI: the QConv kernel's 1x1 path, the rows of A
      // being images of one pixel (y[n, m] is an [N, M, 1, 1] output).
      // Its int8 weight tiles stream half the bytes of the AVX2 kernel's
      // int16 panels (the classifier's GEMV at batch 1 is bound by them).
      vnni_ = kernel_usable("qgemm_s8_avx512vnni");
      if (vnni_) {
        packed8_.assign(packed_a_vnni_bytes(m, k), 0);
        corr_.resize(m);
        pack_a_vnni(weights_->data<int8_t>(), k, m, k, packed8_.data(), corr_.data());
      } else if (avx2_) {
        packed_.assign(packed_b_elems(k, m), 0);
        pack_b(weights_->data<int8_t>(), 1, k, k, m, packed_.data());
      }
      if ((vnni_ || avx2_) && ep_.x_zp != 0) {
        wsum_.resize(m);
        weight_sums(weights_->data<int8_t>(), k, m, k, 1, wsum_.data());
      }
    }
  }

  std::string describe() const override {
    return vnni_ ? "qgemm_s8_avx512vnni 1x1 conv(vpdpbusd)" : avx2_ ? "qgemm_s8_avx2 gemm(int16 madd)" : "qgemm_s8_ref";
  }

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& a = *in[0];
    const Tensor& w = *in[1];
    check_int8(a, desc_, "input");
    if (!weights_) check_weights(w);
    ENGINE_ENFORCE(a.rank() == 2 && a.dim(1) == w.dim(1), kShape, desc_, ": input ", shape_str(a.shape()),
                   " does not match weights ", shape_str(w.shape()));
    const int64_t n = a.dim(0), m = w.dim(0), k = w.dim(1);
    const Tensor* b = in.size() > 2 ? in[2] : nullptr;
    const Tensor* z = in.size() > 3 ? in[3] : nullptr;
    size_t runtime_bytes = 0;
    if (!weights_) {
      runtime_bytes = align64(m * sizeof(float));
      if (avx2_) runtime_bytes += align64(packed_b_elems(k, m) * sizeof(int16_t));
    }
    const bool fold = (avx2_ || vnni_) && ep_.x_zp != 0;
    const size_t fold_bytes = fold ? EpilogueAttrs::fold_bytes(m, weights_ != nullptr) : 0;
    const size_t bias_bytes = ep_.bias_bytes(b, m);
    runtime_bytes += fold_bytes + bias_bytes;
    const ConvGeom g = pointwise(n, m, k);
    const size_t ws_bytes = vnni_ ? qconv_avx512vnni_workspace(g, ctx.pool().num_threads(), false)
                            : avx2_ ? qgemm_avx2_workspace(n, k)
                                    : 0;
    char* scratch = runtime_bytes + ws_bytes ? static_cast<char*>(ctx.scratch(runtime_bytes + ws_bytes)) : nullptr;
    const float* mul = mul_.data();
    const int16_t* packed = packed_.data();
    if (!weights_) {
      auto* mm = reinterpret_cast<float*>(scratch);
      ep_.fill_mul(mm, m, desc_);
      mul = mm;
      if (avx2_) {
        auto* p = reinterpret_cast<int16_t*>(scratch + align64(m * sizeof(float)));
        pack_b(w.data<int8_t>(), 1, k, k, m, p);
        packed = p;
      }
    }
    Epilogue e = ep_.make(mul, b, z, *out[0], m, desc_, scratch + runtime_bytes - bias_bytes);
    if (fold)
      ep_.fold_input_zero_point(e, weights_ ? wsum_.data() : nullptr, w.data<int8_t>(), m, k,
                                reinterpret_cast<int32_t*>(scratch + runtime_bytes - bias_bytes - fold_bytes));
    if (vnni_) {
      // The input's sign is not known here: the +128 shift with its
      // per-channel correction (exact).
      qconv_avx512vnni(ctx.pool(), g, a.data<int8_t>(), false, packed8_.data(), nullptr, corr_.data(), e,
                       scratch + runtime_bytes);
    } else if (avx2_) {
      qgemm_avx2(ctx.pool(), n, m, k, a.data<int8_t>(), packed, e, scratch + runtime_bytes);
    } else {
      qgemm_ref(n, m, k, a.data<int8_t>(), w.data<int8_t>(), e, ep_.x_zp);
    }
  }

 private:
  void check_weights(const Tensor& w) const {
    check_int8(w, desc_, "weights");
    ENGINE_ENFORCE(w.rank() == 2, kInvalidModel, desc_, ": weights must be 2-D [M, K], got ", shape_str(w.shape()));
    ENGINE_ENFORCE(w.dim(1) <= (ep_.x_zp ? kMaxKZeroPoint : kMaxK), kUnsupportedOperator, desc_,
                   ": reduction size too large for int32 accumulation");
  }

  // A as n images of k channels and one pixel, W as m 1x1 filters.
  ConvGeom pointwise(int64_t n, int64_t m, int64_t k) const {
    ConvGeom g;
    g.n = n;
    g.c = k;
    g.h = g.w = g.oh = g.ow = 1;
    g.m = m;
    g.kh = g.kw = 1;
    g.x_zp = static_cast<int8_t>(ep_.x_zp);
    return g;
  }

  std::string desc_;
  bool avx2_;
  bool vnni_ = false;  // constant weights on the VNNI tier (packed8_, corr_)
  EpilogueAttrs ep_;
  std::shared_ptr<const Tensor> weights_;
  std::vector<float> mul_;
  std::vector<int16_t> packed_;
  std::vector<int32_t> wsum_;  // AVX2 / VNNI with an input zero point: sum_k w[m, k]
  std::vector<int8_t> packed8_;  // VNNI: the QConv 1x1 weight tiles
  std::vector<int32_t> corr_;    // VNNI: 128 * sum_k w[m, k]
};

}  // namespace

std::unique_ptr<Kernel> create_qconv(const Node& node) { return std::make_unique<QConvKernel>(node); }
std::unique_ptr<Kernel> create_qgemm(const Node& node) { return std::make_unique<QGemmKernel>(node); }

}  // namespace engine::qk
