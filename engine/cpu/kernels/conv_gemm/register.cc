// Kernels of the conv_gemm family (see cpu/kernel.h for the contract):
//
//   Conv / FusedConv  Y = act(conv(X, W) + B + Z)
//   Gemm / FusedGemm  Y = act(alpha * op(A) op(B) + beta * C)
//   MatMul            Y = A @ B (numpy semantics)
//
// create() picks the variant once from the kernel table (cpu/kernels.def:
// the highest usable tier of conv / conv_depthwise / conv_winograd / gemm /
// matmul; the AVX-512 tier runs the 12x32 SGEMM, the AVX2 tier the 6x16 one,
// on the same packed layout) and pre-packs constant weights
// into the SGEMM's panel layout; weights that arrive at run time (graph
// inputs) are packed block by block inside the SGEMM instead. Convolution
// paths on AVX2: depthwise (group == Cin == Cout) -> direct kernel (on
// AVX-512, vectorized over 16 channels: depthwise_avx512); grouped
// 3x3 with <= 32 channels per group (ResNeXt) -> direct grouped kernel
// (on AVX-512, groups of 16, 32, 48 or 64 output channels, stems and
// dense 3x3/2 convs with outputs >= 14 wide -> the direct kernel
// vectorized over output channels, grouped_oc_avx512); 3x3
// stride-1 single-group convs with >= 16 channels -> Winograd F(2x2, 3x3)
// on the same SGEMM; everything else -> one GEMM per (image, group),
// Y[Cout/g, spatial] = W[Cout/g, K] x B[K, spatial], where B is X itself
// for 1x1 stride-1 unpadded convs and an im2col block packed on the fly
// otherwise.
#include <cstring>

#include "cpu/dispatch.h"
#include "cpu/kernel.h"
#include "cpu/kernel_table.h"
#include "cpu/kernels/conv_gemm/conv_gemm.h"

namespace engine {
namespace {

using namespace conv_gemm;

// The largest channels per group (in and out) for which the factory picks
// the direct grouped kernel (see ConvKernel::grouped_candidate).
constexpr int64_t kGroupedPreferMaxCpg = 32;
// The most input channels of a single-group conv (a stem: RGB, RGBA, gray)
// that the output-channel-vectorized kernel takes (ConvKernel::grouped_oc_block).
constexpr int64_t kStemMaxCin = 4;
// The narrowest output of a dense 3x3 stride-2 conv the output-channel-
// vectorized kernel takes (ConvKernel::grouped_oc_block).
constexpr int64_t kOcDenseMinWidth = 14;

void require_float(const Node& node) {
  for (int i = 0; i < node.num_inputs(); ++i) {
    const Value* v = node.input(i);
    if (v && v->dtype() != DType::kFloat32 && v->dtype() != DType::kUndefined)
      fail(ErrorKind::kUnsupportedOperator, node.describe(), ": input ", i, " has type ", dtype_name(v->dtype()),
           "; only float32 is supported");
  }
}

// The SIMD tier of `op` ("conv", "gemm", "matmul"): the table's avx512 line
// if usable, else its avx2 line, else ref. `sym` gets the variant's symbol.
IsaTier pick_tier(const char* op, const char** sym, SgemmFn* gemm) {
  static const char* const kNames[][3] = {{"conv", "conv_f32_avx512", "conv_f32_avx2"},
                                          {"gemm", "gemm_f32_avx512", "gemm_f32_avx2"},
                                          {"matmul", "matmul_f32_avx512", "matmul_f32_avx2"}};
  for (const auto& n : kNames) {
    if (std::string(op) != n[0]) continue;
    if (kernel_usable(n[1]) && kernel_usable("sgemm_f32_avx512_12x32")) {
      *sym = n[1];
      *gemm = sgemm_avx512;
      return IsaTier::kAvx512;
    }
    if (kernel_usable(n[2]) && kernel_usable("sgemm_f32_avx2_6x16")) {
      *sym = n[2];
      *gemm = sgemm_avx2;
      return IsaTier::kAvx2;
    }
  }
  *sym = nullptr;
  *gemm = nullptr;
  return IsaTier::kRef;
}

const Tensor* input_or_null(const std::vector<const Tensor*>& in, size_t i) {
  return i < in.size() && in[i] && in[i]->numel() > 0 ? in[i] : nullptr;
}

// Weights pre-packed in create(): aligned storage in the SGEMM panel layout.
struct Packed {
  std::shared_ptr<void> storage;
  const float* data() const { return static_cast<const float*>(storage.get()); }
  explicit operator bool() const { return storage != nullptr; }
};

// ---------------------------------------------------------------------------
// Conv and FusedConv

struct ConvItems {
  const ConvGeom* g;
  const float* a;        // packed (per group) or raw W
  int64_t a_group_stride;
  const float* x;
  float* y;
  const float* b;
  const float* z;
};

GemmItem conv_item(const void* ctx, int64_t i) {
  const auto& c = *static_cast<const ConvItems*>(ctx);
  const ConvGeom& g = *c.g;
  const int64_t img = i / g.group, grp = i % g.group;
  const int64_t mg = g.mg(), out_plane = g.out_plane();
  GemmItem it;
  it.a = c.a + grp * c.a_group_stride;
  it.b = c.x + (img * g.cin + grp * g.cg()) * g.in_plane();
  it.c = c.y + (img * g.cout + grp * mg) * out_plane;
  it.bias_m = c.b ? c.b + grp * mg : nullptr;
  it.z = c.z ? c.z + (img * g.cout + grp * mg) * out_plane : nullptr;
  return it;
}

// Y may share Z's storage (the executor's in-place outputs): the GEMM then
// starts its sums at C = Z (c_init) rather than adding Z in the epilogue,
// since the partial sums of a K split into blocks would overwrite Z first.
void start_at_z(GemmSpec& spec, ConvItems& items) {
  if (items.z && items.z == items.y) {
    spec.ep.c_init = true;
    items.z = nullptr;
  }
}

// Winograd's fallback for an image with a non-finite input: the im2col
// GEMM on the raw weights, for that image only.
struct WinoFallbackCtx {
  ThreadPool* pool;
  SgemmFn gemm;
  const GemmSpec* spec;
  ConvItems items;  // image 0; the image's offsets are added per call
  int64_t x_image, y_image;
  void* scratch;
};

void wino_fallback(const void* ctx, int64_t n) {
  const auto& f = *static_cast<const WinoFallbackCtx*>(ctx);
  ConvItems it = f.items;
  it.x += n * f.x_image;
  it.y += n * f.y_image;
  if (it.z) it.z += n * f.y_image;
  GemmSpec spec = *f.spec;
  start_at_z(spec, it);
  f.gemm(*f.pool, spec, conv_item, &it, f.scratch);
}

class ConvKernel final : public Kernel {
 public:
  ConvKernel(const Node& node, bool fused)
      : attrs_(ConvAttrs::from_node(node)), fused_(fused) {
    avx2_ = pick_tier("conv", &sym_, &sgemm_) >= IsaTier::kAvx2;
    depthwise_ok_ = avx2_ && kernel_usable("conv_depthwise_f32_avx2");
    depthwise512_ok_ = depthwise_ok_ && kernel_usable("conv_depthwise_f32_avx512");
    grouped_ok_ = avx2_ && kernel_usable("conv_grouped_f32_avx2");
    grouped512_ok_ = grouped_ok_ && kernel_usable("conv_grouped_f32_avx512");
    oc_ok_ = avx2_ && kernel_usable("conv_grouped_oc_f32_avx512");
    if (avx2_ && kernel_usable("conv_winograd_f32_avx512") && sgemm_ == sgemm_avx512) {
      wino_sym_ = "conv_winograd_f32_avx512";
    } else if (avx2_ && kernel_usable("conv_winograd_f32_avx2")) {
      wino_sym_ = "conv_winograd_f32_avx2";
    }
    wino_gemm_ = wino_sym_ && std::string(wino_sym_) == "conv_winograd_f32_avx512" ? sgemm_avx512 : sgemm_avx2;
    require_float(node);
    if (fused) act_ = parse_activation(node);
    const Value* w = node.input(1);
    if (!w) fail(ErrorKind::kInvalidModel, node.describe(), ": the weight input W is missing");
    if (w->is_constant() && avx2_) {
      const Tensor& wt = *w->constant();
      if (wt.rank() < 3 || wt.rank() > 5)
        fail(ErrorKind::kUnsupportedOperator, node.describe(), ": only 1-D, 2-D and 3-D convolutions are supported");
      const int64_t cout = wt.dim(0), group = attrs_.group;
      if (cout % group != 0)
        fail(ErrorKind::kInvalidModel, node.describe(), ": ", cout, " output channels are not divisible by group ",
             group);
      const bool depthwise = wt.dim(1) == 1 && cout == group && group > 1;
      const int64_t mg = cout / group, k = wt.numel() / std::max<int64_t>(cout, 1);
      // The direct kernels' weights: blocks of 16 output channels for the
      // output-channel-vectorized one, of 4 for the column ones.
      oc_block_ = grouped_oc_block(wt.shape(), node);
      const int64_t block = oc_block_ > 0 ? oc_block_ : grouped_ok_ && grouped_candidate(wt.shape()) ? 4 : 0;
      if (block > 0) {
        packed_w_shape_ = wt.shape();
        grouped_ = true;
        const int64_t ks = wt.dim(2) * wt.dim(3);
        packed_w_.storage = aligned_storage(
            static_cast<size_t>(grouped_group_stride(mg, wt.dim(1), ks, block) * group) * sizeof(float));
        grouped_pack_weights(wt.data<float>(), group, mg, wt.dim(1), ks, static_cast<float*>(packed_w_.storage.get()),
                             block);
      } else if (depthwise && depthwise512_ok_) {
        packed_w_shape_ = wt.shape();
        depthwise_packed_ = true;
        packed_w_.storage = aligned_storage(static_cast<size_t>(depthwise_packed_size(cout, k)) * sizeof(float));
        depthwise_pack_weights(wt.data<float>(), cout, k, static_cast<float*>(packed_w_.storage.get()));
      } else if (wino_sym_ && winograd_candidate(wt.shape())) {
        packed_w_shape_ = wt.shape();
        winograd_ = true;
        packed_w_.storage = aligned_storage(static_cast<size_t>(winograd_weights_size(cout, wt.dim(1))) * sizeof(float));
        winograd_pack_weights(wt.data<float>(), cout, wt.dim(1), static_cast<float*>(packed_w_.storage.get()));
      } else if (!depthwise && k > 0 && mg > 0) {
        packed_w_shape_ = wt.shape();
        group_stride_ = packed_a_size(mg, k);
        packed_w_.storage = aligned_storage(static_cast<size_t>(group_stride_ * group) * sizeof(float));
        float* dst = static_cast<float*>(packed_w_.storage.get());
        for (int64_t g = 0; g < group; ++g) pack_a(wt.data<float>() + g * mg * k, k, 1, mg, k, dst + g * group_stride_);
      }
    }
  }

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& x = *in[0];
    const Tensor& w = *in[1];
    const Tensor* b = input_or_null(in, 2);
    const Tensor* z = fused_ ? input_or_null(in, 3) : nullptr;
    Tensor& y = *out[0];
    if (y.numel() == 0) return;
    if (!same_shapes(x.shape(), w.shape(), y.shape())) {
      geom_ = attrs_.resolve(x.shape(), w.shape(), y.shape());
      x_shape_ = x.shape();
      w_shape_ = w.shape();
      y_shape_ = y.shape();
    }
    const ConvGeom& g = geom_;
    const float* bp = b ? b->data<float>() : nullptr;
    const float* zp = z ? z->data<float>() : nullptr;
    if (b && b->numel() != g.cout)
      fail(ErrorKind::kShape, attrs_.where, ": the bias has ", b->numel(), " entries, expected ", g.cout);
    if (!avx2_ || g.gemm_k() == 0) {
      path_ = "conv_f32_ref";
      gemm_path_ = "";
      if (zp && zp == y.data<float>()) {  // conv_ref accumulates in Y: keep Z apart
        auto* zc = static_cast<float*>(ctx.scratch(static_cast<size_t>(y.numel()) * sizeof(float)));
        std::memcpy(zc, zp, static_cast<size_t>(y.numel()) * sizeof(float));
        zp = zc;
      }
      conv_ref(g, x.data<float>(), w.data<float>(), bp, zp, act_, y.data<float>());
      return;
    }
    const bool prepacked = packed_w_ && w.shape() == packed_w_shape_;
    if (g.is_depthwise() && prepacked && depthwise_packed_ && depthwise512_applies(g)) {
      path_ = "conv_depthwise_f32_avx512";
      gemm_path_ = "";
      void* scratch = ctx.scratch(depthwise512_scratch_bytes(g, ctx.pool().num_threads()));
      depthwise_avx512(ctx.pool(), g, x.data<float>(), packed_w_.data(), bp, zp, act_, y.data<float>(), scratch);
      return;
    }
    if (g.is_depthwise() && depthwise_ok_) {
      path_ = "conv_depthwise_f32_avx2";
      gemm_path_ = "";
      void* scratch = ctx.scratch(depthwise_scratch_bytes(g, ctx.pool().num_threads()));
      depthwise_avx2(ctx.pool(), g, x.data<float>(), w.data<float>(), bp, zp, act_, y.data<float>(), scratch);
      return;
    }
    if (prepacked && oc_block_ > 0 && grouped_oc_applies(g)) {
      path_ = "conv_grouped_oc_f32_avx512";
      gemm_path_ = "";
      void* scratch = ctx.scratch(grouped_scratch_bytes(g, ctx.pool().num_threads()));
      grouped_oc_avx512(ctx.pool(), g, x.data<float>(), packed_w_.data(), bp, zp, act_, y.data<float>(), scratch);
      return;
    }
    if (prepacked && grouped_ && oc_block_ == 0 && grouped_applies(g)) {
      // Rows of at most 8 outputs (ResNeXt's 7x7 stage) would leave most of
      // a 16-float vector idle: the AVX2 kernel computes those.
      const bool wide = grouped512_ok_ && g.ow > 8;
      path_ = wide ? "conv_grouped_f32_avx512" : "conv_grouped_f32_avx2";
      gemm_path_ = "";
      void* scratch = ctx.scratch(grouped_scratch_bytes(g, ctx.pool().num_threads()));
      (wide ? grouped_avx512 : grouped_avx2)(ctx.pool(), g, x.data<float>(), packed_w_.data(), bp, zp, act_,
                                             y.data<float>(), scratch);
      return;
    }
    if (prepacked && winograd_ && g.is_winograd_shape()) {
      path_ = wino_sym_;
      gemm_path_ = wino_gemm_ == sgemm_avx512 ? " f2x2_3x3 sgemm_f32_avx512_12x32" : " f2x2_3x3 sgemm_f32_avx2_6x16";
      GemmSpec fs;
      fs.m = g.mg();
      fs.n = g.out_plane();
      fs.k = g.gemm_k();
      fs.items = 1;
      fs.a_rs = fs.k;
      fs.a_cs = 1;
      fs.pack_b_fn = pack_b_im2col;
      fs.pack_b_ctx = &geom_;
      fs.ldc = fs.ldz = fs.n;
      fs.ep.act = act_;
      const int threads = ctx.pool().num_threads();
      const size_t wb = round_up(static_cast<int64_t>(winograd_scratch_bytes(g, threads)), 64);
      char* scratch = static_cast<char*>(ctx.scratch(wb + sgemm_scratch_bytes(fs, threads)));
      WinoFallbackCtx fb{&ctx.pool(), wino_gemm_, &fs,
                         ConvItems{&geom_, w.data<float>(), g.mg() * fs.k, x.data<float>(), y.data<float>(), bp, zp},
                         g.cin * g.in_plane(), g.cout * g.out_plane(), scratch + wb};
      winograd_avx2(ctx.pool(), g, x.data<float>(), packed_w_.data(), bp, zp, act_, y.data<float>(), scratch,
                    wino_gemm_, wino_fallback, &fb);
      return;
    }
    GemmSpec spec;
    spec.m = g.mg();
    spec.n = g.out_plane();
    spec.k = g.gemm_k();
    spec.items = g.batch * g.group;
    spec.a_packed = prepacked;
    spec.a_rs = spec.k;
    spec.a_cs = 1;
    spec.ldc = spec.ldz = spec.n;
    spec.ep.act = act_;
    if (g.is_pointwise()) {
      spec.b_rs = g.in_plane();
      spec.b_cs = 1;
      gemm_path_ = sgemm_ == sgemm_avx512 ? " pointwise sgemm_f32_avx512_12x32" : " pointwise sgemm_f32_avx2_6x16";
    } else {
      spec.pack_b_fn = pack_b_im2col;
      spec.pack_b_ctx = &geom_;
      gemm_path_ = sgemm_ == sgemm_avx512 ? " im2col sgemm_f32_avx512_12x32" : " im2col sgemm_f32_avx2_6x16";
    }
    const bool gemm_packed = prepacked && !winograd_ && !grouped_;
    spec.a_packed = gemm_packed;
    ConvItems items{&geom_, gemm_packed ? packed_w_.data() : w.data<float>(),
                    gemm_packed ? group_stride_ : g.mg() * spec.k, x.data<float>(), y.data<float>(), bp, zp};
    start_at_z(spec, items);
    path_ = sym_;
    void* scratch = ctx.scratch(sgemm_scratch_bytes(spec, ctx.pool().num_threads()));
    sgemm_(ctx.pool(), spec, conv_item, &items, scratch);
  }

  std::string describe() const override {
    std::string d = path_ ? std::string(path_) + gemm_path_ : (sym_ ? sym_ : "conv_f32_ref");
    if (act_.kind != Act::kNone) d += std::string(" +") + activation_name(act_.kind);
    return d;
  }

 private:
  // Winograd F(2x2, 3x3) pays off once both channel counts reach about 16
  // (the transforms cost O(C) per output, the GEMM saves O(C^2)); the
  // attributes that decide it do not change between runs.
  bool winograd_candidate(const Shape& w) const {
    auto all_one = [](const std::vector<int64_t>& v) {
      for (int64_t e : v)
        if (e != 1) return false;
      return true;
    };
    return w.size() == 4 && w[2] == 3 && w[3] == 3 && attrs_.group == 1 && w[0] >= 16 && w[1] >= 16 &&
           all_one(attrs_.strides) && all_one(attrs_.dilations);
  }

  // The direct grouped kernel (grouped_avx2) replaces the per-group im2col
  // GEMM where it measured faster (tools/bench_conv.py --grouped, README
  // "Grouped convolution"): 2-D 3x3 kernels, unit dilation, at most 32
  // channels per group, where the GEMM's M = Cout/group rows fill little
  // of its tile and packing im2col costs as much as the multiply. Grouped
  // 1x1 convs measured slower than the pointwise GEMM (which reads X in
  // place) and keep it, as do 5x5+ kernels (not measured).
  bool grouped_candidate(const Shape& w) const {
    auto all_one = [](const std::vector<int64_t>& v) {
      for (int64_t e : v)
        if (e != 1) return false;
      return true;
    };
    if (w.size() != 4 || attrs_.group <= 1 || !all_one(attrs_.dilations)) return false;
    const int64_t mg = w[0] / attrs_.group, cg = w[1];
    if (mg == 1 && cg == 1) return false;  // depthwise
    return w[2] == 3 && w[3] == 3 && cg <= kGroupedPreferMaxCpg && mg <= kGroupedPreferMaxCpg;
  }

  // The channels per vector (16) of the output-channel-vectorized kernel
  // (grouped_oc_avx512) for these weights, or 0 where it does not apply.
  // Unit dilation, column stride 1 or 2, output channels per group a
  // multiple of 16, and one of:
  //  - grouped 3x3 with at most kGroupedMaxCpg channels per group in and
  //    out (RegNet, ResNeXt's last stages);
  //  - a stem: one group of at most kStemMaxCin input channels, kernels 2x2
  //    to 7x7 (its im2col GEMM packs 3 * 49 rows for 64 outputs);
  //  - a dense 3x3 stride-2 conv whose output is at least kOcDenseMinWidth
  //    wide (below).
  // (An AVX2 form, 8 channels per ymm and tiles of 8 or 12 pixels, measured
  // faster than the column kernel on some of ResNeXt's and RegNet's shapes
  // and slower on others, on Zen 4: the AVX2 tier keeps the column kernel.)
  int64_t grouped_oc_block(const Shape& w, const Node& node) const {
    auto all_one = [](const std::vector<int64_t>& v) {
      for (int64_t e : v)
        if (e != 1) return false;
      return true;
    };
    if (w.size() != 4 || !all_one(attrs_.dilations)) return 0;
    const int64_t sw = attrs_.strides.size() == 2 ? attrs_.strides[1] : 1;
    const int64_t mg = w[0] / attrs_.group, cg = w[1];
    if (sw != 1 && sw != 2) return 0;
    const bool grouped = attrs_.group > 1 && w[2] == 3 && w[3] == 3 && mg >= 16 && mg <= kGroupedMaxCpg &&
                         cg <= kGroupedMaxCpg;
    const bool stem = attrs_.group == 1 && cg <= kStemMaxCin && w[2] > 1 && w[2] <= 7 && w[3] > 1 && w[3] <= 7;
    // Dense 3x3 stride-2 convs with outputs at least kOcDenseMinWidth wide
    // (ResNet-50's 3x3/2 at 56 -> 28 and 28 -> 14, HRNet's downsampling):
    // their im2col pack gathers every other input. At 14 -> 7 (512
    // channels: a task's 7 pixels per pass over 9 MB of weights) it
    // measured no faster than the GEMM.
    const Value* out = node.num_outputs() > 0 ? node.output(0) : nullptr;
    const int64_t ow = out && out->has_shape() && out->shape().size() == 4 ? out->shape()[3] : -1;
    const int64_t sh = attrs_.strides.size() == 2 ? attrs_.strides[0] : 1;
    const bool dense = attrs_.group == 1 && w[2] == 3 && w[3] == 3 && sh == 2 && sw == 2 && cg <= kOcMaxCin &&
                       ow >= kOcDenseMinWidth;
    return oc_ok_ && (grouped || stem || dense) && mg % 16 == 0 ? 16 : 0;
  }

  bool same_shapes(const Shape& x, const Shape& w, const Shape& y) const {
    return x == x_shape_ && w == w_shape_ && y == y_shape_;
  }

  ConvAttrs attrs_;
  bool fused_;
  bool avx2_ = false;
  const char* sym_ = nullptr;        // conv_f32_<tier> (SIMD GEMM paths)
  SgemmFn sgemm_ = nullptr;
  bool depthwise_ok_ = false;
  bool depthwise512_ok_ = false;
  bool depthwise_packed_ = false;  // packed_w_ holds depthwise_pack_weights' layout
  const char* wino_sym_ = nullptr;   // conv_winograd_f32_<tier>, or null
  SgemmFn wino_gemm_ = nullptr;
  const char* gemm_path_ = "";
  Activation act_;
  Packed packed_w_;  // im2col GEMM panels, or Winograd U_i when winograd_
  Shape packed_w_shape_;
  bool winograd_ = false;
  bool grouped_ok_ = false;
  bool grouped512_ok_ = false;
  bool grouped_ = false;  // packed_w_ holds grouped_pack_weights' layout
  bool oc_ok_ = false;
  int64_t oc_block_ = 0;  // ... in blocks of this many output channels, for grouped_oc_avx512
  int64_t group_stride_ = 0;
  Shape x_shape_, w_shape_, y_shape_;
  ConvGeom geom_;
  const char* path_ = nullptr;  // the path the last run took, for describe()
};

// ---------------------------------------------------------------------------
// Gemm and FusedGemm

struct SingleItem {
  GemmItem item;
};

GemmItem single_item(const void* ctx, int64_t) { return static_cast<const SingleItem*>(ctx)->item; }

// Element (i, j) of op(X) for a 2-D X of shape [r, c] is at i*rs + j*cs.
void strides_2d(const Shape& s, bool trans, int64_t* rows, int64_t* cols, int64_t* rs, int64_t* cs) {
  *rows = trans ? s[1] : s[0];
  *cols = trans ? s[0] : s[1];
  *rs = trans ? 1 : s[1];
  *cs = trans ? s[1] : 1;
}

class GemmKernel final : public Kernel {
 public:
  GemmKernel(const Node& node, bool fused)
      : trans_a_(node.attr_int("transA", 0) != 0),
        trans_b_(node.attr_int("transB", 0) != 0),
        alpha_(node.attr_float("alpha", 1.f)),
        beta_(node.attr_float("beta", 1.f)) {
    avx2_ = pick_tier("gemm", &sym_, &sgemm_) >= IsaTier::kAvx2;
    require_float(node);
    if (fused) act_ = parse_activation(node);
    if (!avx2_) return;
    for (int i = 0; i < 2; ++i) {
      const Value* v = node.input(i);
      if (!v || !v->is_constant() || v->constant()->rank() != 2 || v->constant()->numel() == 0) continue;
      const Tensor& t = *v->constant();
      int64_t rows, cols, rs, cs;
      strides_2d(t.shape(), i == 0 ? trans_a_ : trans_b_, &rows, &cols, &rs, &cs);
      Packed& p = i == 0 ? packed_a_ : packed_b_;
      if (i == 0) {
        p.storage = aligned_storage(packed_a_size(rows, cols) * sizeof(float));
        pack_a(t.data<float>(), rs, cs, rows, cols, static_cast<float*>(p.storage.get()));
      } else {
        p.storage = aligned_storage(packed_b_size(rows, cols) * sizeof(float));
        pack_b(t.data<float>(), rs, cs, rows, cols, static_cast<float*>(p.storage.get()));
      }
      (i == 0 ? packed_a_shape_ : packed_b_shape_) = t.shape();
    }
  }

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& a = *in[0];
    const Tensor& b = *in[1];
    const Tensor* c = beta_ != 0.f ? input_or_null(in, 2) : nullptr;
    Tensor& y = *out[0];
    int64_t m, k, k2, n, a_rs, a_cs, b_rs, b_cs;
    strides_2d(a.shape(), trans_a_, &m, &k, &a_rs, &a_cs);
    strides_2d(b.shape(), trans_b_, &k2, &n, &b_rs, &b_cs);
    if (m == 0 || n == 0) return;
    float* yp = y.data<float>();

    // C: a column vector of bias, a row vector, a full residual, or (any
    // other broadcast, or beta != 1 on a full C) prefilled into Y.
    const float* bias_m = nullptr;
    const float* bias_n = nullptr;
    const float* zp = nullptr;
    Epilogue ep;
    ep.alpha = alpha_;
    ep.act = act_;
    const bool use_gemm = avx2_ && k > 0;
    if (c) {
      const Shape& cs = c->shape();
      const int64_t c0 = cs.size() == 2 ? cs[0] : 1, c1 = cs.empty() ? 1 : cs.back();
      if (c0 == 1 && c1 == n && beta_ == 1.f) {
        bias_n = c->data<float>();
      } else if (c0 == m && c1 == 1 && m > 1 && beta_ == 1.f) {
        bias_m = c->data<float>();
      } else if (c0 == m && c1 == n && beta_ == 1.f) {
        zp = c->data<float>();
      } else {
        const float* cd = c->data<float>();
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) yp[i * n + j] = beta_ * cd[(c0 == 1 ? 0 : i) * c1 + (c1 == 1 ? 0 : j)];
        ep.c_init = true;
      }
    }
    if (!use_gemm) {
      path_ = "gemm_f32_ref";
      gemm_ref(m, n, k, a.data<float>(), a_rs, a_cs, b.data<float>(), b_rs, b_cs, yp, n, bias_m, bias_n, zp, n, ep);
      return;
    }
    path_ = sym_;
    GemmSpec spec;
    spec.m = m;
    spec.n = n;
    spec.k = k;
    spec.a_packed = packed_a_ && a.shape() == packed_a_shape_;
    spec.a_rs = a_rs;
    spec.a_cs = a_cs;
    spec.b_packed = packed_b_ && b.shape() == packed_b_shape_;
    spec.b_rs = b_rs;
    spec.b_cs = b_cs;
    spec.ldc = spec.ldz = n;
    spec.ep = ep;
    SingleItem item;
    item.item.a = spec.a_packed ? packed_a_.data() : a.data<float>();
    item.item.b = spec.b_packed ? packed_b_.data() : b.data<float>();
    item.item.c = yp;
    item.item.bias_m = bias_m;
    item.item.bias_n = bias_n;
    item.item.z = zp;
    void* scratch = ctx.scratch(sgemm_scratch_bytes(spec, ctx.pool().num_threads()));
    sgemm_(ctx.pool(), spec, single_item, &item, scratch);
  }

  std::string describe() const override {
    std::string d = path_ ? path_ : (sym_ ? sym_ : "gemm_f32_ref");
    if (act_.kind != Act::kNone) d += std::string(" +") + activation_name(act_.kind);
    return d;
  }

 private:
  bool trans_a_, trans_b_;
  float alpha_, beta_;
  bool avx2_ = false;
  const char* sym_ = nullptr;
  SgemmFn sgemm_ = nullptr;
  Activation act_;
  Packed packed_a_, packed_b_;
  Shape packed_a_shape_, packed_b_shape_;
  const char* path_ = nullptr;  // the path the last run took, for describe()
};

// ---------------------------------------------------------------------------
// MatMul

struct BatchItems {
  const float* a;
  const float* b;
  float* y;
  const int64_t* a_off;
  const int64_t* b_off;
  int64_t y_stride;
  bool b_packed;
};

GemmItem batch_item(const void* ctx, int64_t i) {
  const auto& c = *static_cast<const BatchItems*>(ctx);
  GemmItem it;
  it.a = c.a + c.a_off[i];
  it.b = c.b_packed ? c.b : c.b + c.b_off[i];
  it.c = c.y + i * c.y_stride;
  return it;
}

class MatMulKernel final : public Kernel {
 public:
  explicit MatMulKernel(const Node& node) {
    avx2_ = pick_tier("matmul", &sym_, &sgemm_) >= IsaTier::kAvx2;
    require_float(node);
    const Value* b = node.input(1);
    if (avx2_ && b && b->is_constant() && b->constant()->rank() <= 2 && b->constant()->rank() >= 1 &&
        b->constant()->numel() > 0) {
      const Tensor& t = *b->constant();
      const int64_t k = t.dim(0), n = t.rank() == 2 ? t.dim(1) : 1;
      packed_b_.storage = aligned_storage(packed_b_size(k, n) * sizeof(float));
      pack_b(t.data<float>(), n, 1, k, n, static_cast<float*>(packed_b_.storage.get()));
      packed_b_shape_ = t.shape();
    }
  }

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& a = *in[0];
    const Tensor& b = *in[1];
    Tensor& y = *out[0];
    if (a.shape() != a_shape_ || b.shape() != b_shape_) plan(a.shape(), b.shape());
    if (y.numel() == 0) return;
    const float* ap = a.data<float>();
    const float* bp = b.data<float>();
    float* yp = y.data<float>();
    Epilogue ep;
    if (!avx2_ || k_ == 0) {
      path_ = "matmul_f32_ref";
      for (int64_t i = 0; i < items_; ++i)
        gemm_ref(m_, n_, k_, ap + a_off_[i], k_, 1, bp + b_off_[i], n_, 1, yp + i * m_ * n_, n_, nullptr, nullptr,
                 nullptr, 0, ep);
      return;
    }
    path_ = sym_;
    GemmSpec spec;
    spec.n = n_;
    spec.k = k_;
    spec.a_rs = k_;
    spec.a_cs = 1;
    spec.b_packed = packed_b_ && b.shape() == packed_b_shape_;
    spec.b_rs = n_;
    spec.b_cs = 1;
    spec.ldc = n_;
    BatchItems items{ap, spec.b_packed ? packed_b_.data() : bp, yp, a_off_.data(), b_off_.data(), m_ * n_,
                     spec.b_packed};
    if (b_shared_) {
      // B is the same matrix for every batch entry and A's rows are
      // contiguous across the batch: one GEMM with M = batch * M.
      spec.m = m_ * items_;
      spec.items = 1;
    } else {
      spec.m = m_;
      spec.items = items_;
    }
    void* scratch = ctx.scratch(sgemm_scratch_bytes(spec, ctx.pool().num_threads()));
    sgemm_(ctx.pool(), spec, batch_item, &items, scratch);
  }

  std::string describe() const override {
    return path_ ? path_ : (sym_ ? sym_ : "matmul_f32_ref");
  }

 private:
  // Batch offsets of A and B (in floats) for each broadcast batch entry.
  void plan(const Shape& a_shape, const Shape& b_shape) {
    a_shape_ = a_shape;
    b_shape_ = b_shape;
    Shape sa = a_shape, sb = b_shape;
    if (sa.size() == 1) sa.insert(sa.begin(), 1);
    if (sb.size() == 1) sb.push_back(1);
    m_ = sa[sa.size() - 2];
    k_ = sa.back();
    n_ = sb.back();
    const size_t rank = std::max(sa.size(), sb.size()) - 2;
    Shape ba(rank, 1), bb(rank, 1), bo(rank, 1);
    for (size_t i = 0; i < sa.size() - 2; ++i) ba[rank - (sa.size() - 2) + i] = sa[i];
    for (size_t i = 0; i < sb.size() - 2; ++i) bb[rank - (sb.size() - 2) + i] = sb[i];
    items_ = 1;
    for (size_t i = 0; i < rank; ++i) {
      bo[i] = ba[i] == 1 ? bb[i] : ba[i];
      items_ *= bo[i];
    }
    b_shared_ = shape_numel(bb) == 1;
    a_off_.assign(items_, 0);
    b_off_.assign(items_, 0);
    for (int64_t i = 0; i < items_; ++i) {
      int64_t rem = i, oa = 0, ob = 0, sa_stride = m_ * k_, sb_stride = k_ * n_;
      for (size_t d = rank; d-- > 0;) {
        const int64_t coord = rem % bo[d];
        rem /= bo[d];
        if (ba[d] != 1) oa += coord * sa_stride;
        if (bb[d] != 1) ob += coord * sb_stride;
        sa_stride *= ba[d];
        sb_stride *= bb[d];
      }
      a_off_[i] = oa;
      b_off_[i] = ob;
    }
    // Merging the batch into M needs A's batch entries laid out in order.
    if (b_shared_)
      for (int64_t i = 0; i < items_ && b_shared_; ++i) b_shared_ = a_off_[i] == i * m_ * k_;
  }

  bool avx2_ = false;
  const char* sym_ = nullptr;
  SgemmFn sgemm_ = nullptr;
  Packed packed_b_;
  Shape packed_b_shape_;
  Shape a_shape_, b_shape_;
  int64_t m_ = 0, k_ = 0, n_ = 0, items_ = 0;
  bool b_shared_ = false;
  std::vector<int64_t> a_off_, b_off_;
  const char* path_ = nullptr;  // the path the last run took, for describe()
};

}  // namespace

void register_conv_gemm_kernels(KernelRegistry& r) {
  r.add(OpKind::kConv, {[](const Node& n) -> std::unique_ptr<Kernel> { return std::make_unique<ConvKernel>(n, false); },
                        false});
  KernelInfo fused_conv{[](const Node& n) -> std::unique_ptr<Kernel> { return std::make_unique<ConvKernel>(n, true); },
                        false};
  fused_conv.inplace_input = 3;  // Z (ConvKernel::run handles Y == Z)
  r.add(OpKind::kFusedConv, fused_conv);
  r.add(OpKind::kGemm, {[](const Node& n) -> std::unique_ptr<Kernel> { return std::make_unique<GemmKernel>(n, false); },
                        false});
  r.add(OpKind::kFusedGemm,
        {[](const Node& n) -> std::unique_ptr<Kernel> { return std::make_unique<GemmKernel>(n, true); }, false});
  r.add(OpKind::kMatMul, {[](const Node& n) -> std::unique_ptr<Kernel> { return std::make_unique<MatMulKernel>(n); },
                          false});
}

}  // namespace engine
