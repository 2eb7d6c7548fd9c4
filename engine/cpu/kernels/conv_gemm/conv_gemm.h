// Shared declarations of the conv_gemm kernel family (Conv, FusedConv, Gemm,
// FusedGemm, MatMul). Private to engine/cpu/kernels/conv_gemm/.
//
// Two implementations of everything:
//  - *_ref.cc: plain loops. The fallback where AVX2/FMA is missing and the
//    oracle the AVX2 kernels are tested against.
//  - *_avx2.cc: a packed SGEMM (6x16 FMA micro-kernel, BLIS-style blocking)
//    that Conv (im2col fused into the B packing, or X read directly for 1x1
//    convolutions, or the 16 transformed GEMMs of Winograd F(2x2, 3x3)),
//    Gemm and MatMul share, plus a direct depthwise kernel and a direct
//    grouped kernel for few channels per group (grouped_avx2/_avx512,
//    ResNeXt). Only entered when use_avx2() was true in create().
//
// Every path applies the same epilogue while the output is hot:
//   y = act(alpha * acc + c_init + bias_m[row] + bias_n[col] + z[row, col]).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cpu/simd/vec_scalar.h"
#include "cpu/thread_pool.h"
#include "ir/graph.h"

namespace engine {
namespace conv_gemm {

// ---------------------------------------------------------------------------
// Activations fused into the epilogue.

enum class Act { kNone, kRelu, kClip, kLeakyRelu, kSigmoid, kHardSwish, kSiLU, kGelu, kHardSigmoid, kGeluTanh };

struct Activation {
  Act kind = Act::kNone;
  float p0 = 0.f, p1 = 0.f;  // Clip: min, max; LeakyRelu: alpha; HardSigmoid: alpha, beta
};

// Reads the `activation` / `activation_params` attributes of FusedConv and
// FusedGemm; throws kUnsupportedOperator for an unknown activation.
Activation parse_activation(const Node& node);
const char* activation_name(Act a);

// The reference epilogue's activation: simd/vec_scalar.h, the formulas the
// standalone elementwise ops use (NaN in, NaN out; see there).
inline float activate(float v, const Activation& a) {
  namespace s = simd::scalar;
  switch (a.kind) {
    case Act::kNone: return v;
    case Act::kRelu: return s::relu(v);
    case Act::kClip: return s::clip(v, a.p0, a.p1);
    case Act::kLeakyRelu: return s::leaky_relu(v, a.p0);
    case Act::kSigmoid: return s::sigmoid(v);
    case Act::kHardSwish: return s::hard_swish(v);
    case Act::kSiLU: return s::silu(v);
    case Act::kGelu: return s::gelu(v);
    case Act::kHardSigmoid: return s::hard_sigmoid(v, a.p0, a.p1);
    case Act::kGeluTanh: return s::gelu_tanh(v);
  }
  return v;
}

// ---------------------------------------------------------------------------
// Convolution geometry. 1-D and 2-D convolutions are mapped onto 3-D with
// unit leading dims, so every kernel handles one shape of problem.

struct ConvGeom {
  int64_t batch = 0, cin = 0, cout = 0, group = 1;
  int64_t id = 1, ih = 1, iw = 1;  // input spatial dims
  int64_t od = 1, oh = 1, ow = 1;  // output spatial dims
  int64_t kd = 1, kh = 1, kw = 1;
  int64_t sd = 1, sh = 1, sw = 1;
  int64_t dd = 1, dh = 1, dw = 1;
  int64_t pd = 0, ph = 0, pw = 0;  // leading pads (trailing ones follow from the output size)

  int64_t cg() const { return cin / group; }    // input channels per group
  int64_t mg() const { return cout / group; }   // output channels per group
  int64_t ksize() const { return kd * kh * kw; }
  int64_t gemm_k() const { return cg() * ksize(); }
  int64_t in_plane() const { return id * ih * iw; }
  int64_t out_plane() const { return od * oh * ow; }
  // A 1x1x1 kernel with unit strides and no padding reads X as the GEMM's B
  // operand directly: Y[Cout, HW] = W[Cout, Cin] x X[Cin, HW].
  bool is_pointwise() const {
    return kd == 1 && kh == 1 && kw == 1 && sd == 1 && sh == 1 && sw == 1 && pd == 0 && ph == 0 && pw == 0;
  }
  bool is_depthwise() const { return group == cin && group == cout && group > 1; }
  // Winograd F(2x2, 3x3) applies: a 2-D 3x3 kernel, unit strides and
  // dilations, one group (pads are free: the input transform reads a
  // zero-padded copy).
  bool is_winograd_shape() const {
    return kh == 3 && kw == 3 && kd == 1 && id == 1 && sh == 1 && sw == 1 && dh == 1 && dw == 1 && group == 1;
  }
};

// Conv attributes as read in create(); resolve() turns them into a ConvGeom
// for concrete input and output shapes (SAME_* pads depend on the input).
// Empty vectors mean the attribute's default (their length depends on the
// input rank, which may be unknown in create()).
struct ConvAttrs {
  std::string where;  // the node, for error messages
  int64_t group = 1;
  std::vector<int64_t> kernel, strides, dilations, pads;  // pads: begins then ends
  enum class AutoPad { kNotSet, kValid, kSameUpper, kSameLower } auto_pad = AutoPad::kNotSet;

  static ConvAttrs from_node(const Node& node);
  // Throws kUnsupportedOperator for more than 3 spatial dims, kInvalidModel
  // for attributes of the wrong length.
  ConvGeom resolve(const Shape& x, const Shape& w, const Shape& y) const;
};

// ---------------------------------------------------------------------------
// Epilogue pointers of one GEMM problem. bias_m is indexed by output row,
// bias_n by output column, z is a full [M, N] matrix with row stride ldz.

struct Epilogue {
  float alpha = 1.f;
  bool c_init = false;  // C holds initial values to add to (Gemm's beta*C)
  Activation act;
};

// ---------------------------------------------------------------------------
// Reference kernels (plain loops).

// Y = act(conv(X, W) + B + Z); B and Z may be null. Works for every geometry.
void conv_ref(const ConvGeom& g, const float* x, const float* w, const float* b, const float* z,
              const Activation& act, float* y);

// C[M,N] = epilogue(alpha * A[M,K] x B[K,N]); element (i, k) of A is at
// a[i*a_rs + k*a_cs], element (k, j) of B at b[k*b_rs + j*b_cs].
void gemm_ref(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_rs, int64_t a_cs, const float* b,
              int64_t b_rs, int64_t b_cs, float* c, int64_t ldc, const float* bias_m, const float* bias_n,
              const float* z, int64_t ldz, const Epilogue& ep);

// ---------------------------------------------------------------------------
// Packed SGEMM (AVX2). Panel layout, shared by pre-packing in create() and
// packing at run time:
//   K is cut into blocks of gemm_kc(K) (the last one shorter). Within the
//   block starting at k0 (width kc), the panel of rows [p*kMR, p*kMR + kMR)
//   lies at offset k0 * Mpad + p * kMR * kc, stored k-major: kc groups of kMR
//   floats. Rows past M are zero. B panels are the same with columns and kNR.

constexpr int kMR = 6;
constexpr int kNR = 16;

int64_t gemm_kc(int64_t k);
inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }
inline int64_t packed_a_size(int64_t m, int64_t k) { return round_up(m, kMR) * k; }
inline int64_t packed_b_size(int64_t k, int64_t n) { return round_up(n, kNR) * k; }

// Packs the whole of A (element (i, k) at a[i*rs + k*cs]) / B (element
// (k, j) at b[k*rs + j*cs]) into the layout above. Portable code.
void pack_a(const float* a, int64_t rs, int64_t cs, int64_t m, int64_t k, float* dst);
void pack_b(const float* b, int64_t rs, int64_t cs, int64_t k, int64_t n, float* dst);

// Writes the B block [k0, k0+kc) x [n0, n0+nc) of a custom operand in panel
// layout: panel q at dst + q * kNR * kc. Columns past nc may be left as is.
using PackBFn = void (*)(const void* ctx, const float* src, int64_t k0, int64_t kc, int64_t n0, int64_t nc,
                         float* dst);

// One GEMM problem of a batch of `items` problems of equal M, N, K.
struct GemmItem {
  const float* a = nullptr;  // packed A, or raw A (a_rs, a_cs)
  const float* b = nullptr;  // packed B, raw B (b_rs, b_cs), or the source handed to pack_b_fn
  float* c = nullptr;
  const float* bias_m = nullptr;
  const float* bias_n = nullptr;
  const float* z = nullptr;
};

struct GemmSpec {
  int64_t m = 0, n = 0, k = 0, items = 1;
  bool a_packed = false;
  // a_packed: the m rows are rows [a_row0, a_row0 + m) of a packed A of
  // a_rows rows (0: m); a_row0 is a multiple of kMR.
  int64_t a_row0 = 0, a_rows = 0;
  int64_t a_rs = 0, a_cs = 0;
  bool b_packed = false;
  int64_t b_rs = 0, b_cs = 0;
  PackBFn pack_b_fn = nullptr;  // set: B comes from this custom packer
  const void* pack_b_ctx = nullptr;
  int64_t ldc = 0, ldz = 0;
  Epilogue ep;
};

// Resolves item i (0 <= i < items) to its operand pointers.
using GemmItemFn = GemmItem (*)(const void* ctx, int64_t i);

// Grouped convolution with few channels per group (grouped_avx2). Weights
// of group grp, block q of `block` output channels (4 for grouped_avx2 and
// grouped_avx512, 16 for grouped_oc_avx512), input channel c,
// tap t lie at grp * grouped_group_stride + ((q * cg + c) * ks + t) * block
// + (m % block); the channels past mg in the last block are zero. w is
// [Cout, cg, kh, kw]. Portable.
constexpr int64_t kGroupedMaxCpg = 64;
inline int64_t grouped_group_stride(int64_t mg, int64_t cg, int64_t ks, int64_t block = 4) {
  return round_up(mg, block) * cg * ks;
}
void grouped_pack_weights(const float* w, int64_t group, int64_t mg, int64_t cg, int64_t ks, float* dst,
                          int64_t block = 4);
// The shapes grouped_avx2 computes: 2-D 3x3, group > 1 and not depthwise,
// at most kGroupedMaxCpg input and output channels per group, unit dilation
// (any strides and pads).
inline bool grouped_applies(const ConvGeom& g) {
  return g.group > 1 && !g.is_depthwise() && g.kd == 1 && g.id == 1 && g.od == 1 && g.dh == 1 && g.dw == 1 &&
         g.cg() >= 1 && g.cg() <= kGroupedMaxCpg && g.mg() >= 1 && g.mg() <= kGroupedMaxCpg && g.kh == 3 &&
         g.kw == 3;
}

// The shapes grouped_oc_avx512 computes: 2-D, unit dilation, not
// depthwise, at most kOcMaxCin input channels per group, kernels up to 7x7,
// column stride 1 or 2 (any group count; the kernel factory decides where
// it pays).
constexpr int64_t kOcMaxCin = 512;
inline bool grouped_oc_applies(const ConvGeom& g) {
  return !g.is_depthwise() && g.kd == 1 && g.id == 1 && g.od == 1 && g.dh == 1 && g.dw == 1 && g.cg() >= 1 &&
         g.cg() <= kOcMaxCin && g.kh <= 7 && g.kw <= 7 && (g.sw == 1 || g.sw == 2);
}

// Depthwise convolution vectorized over 16 channels (depthwise_avx512):
// weights of channel c, tap t (of kd*kh*kw) at ((c / 16) * ks + t) * 16 +
// c % 16, the channels past C in the last block zero. w is [C, 1, k...].
// Portable.
inline int64_t depthwise_packed_size(int64_t channels, int64_t ks) { return round_up(channels, 16) * ks; }
void depthwise_pack_weights(const float* w, int64_t channels, int64_t ks, float* dst);
// The same from int8 weights (depthwise_s8_avx512).
void depthwise_pack_weights_s8(const int8_t* w, int64_t channels, int64_t ks, float* dst);
// One tile's exact int32 sums from depthwise_s8_avx512: rows[m * 16 + p]
// for channel c0 + m (m < channels), output pixel p < n, the tile's pixels
// contiguous in the plane: channel c0 + m's first at NCHW output element
// idx + m * out_plane.
using DepthwiseTileSink = void (*)(const void* ctx, const int32_t* rows, int channels, int n, int64_t c0,
                                   int64_t idx, int64_t out_plane);
// The shapes depthwise_avx512 computes: depthwise, 1-D to 3-D, column
// stride 1 or 2 (any kernel, pads, dilations, row and depth strides).
inline bool depthwise512_applies(const ConvGeom& g) { return g.is_depthwise() && (g.sw == 1 || g.sw == 2); }

// Winograd F(2x2, 3x3): U_i = (G g G^T)_i for the 16 positions i of the 4x4
// transform, each an [M x C] matrix packed like A (pack_a), one after the
// other: 16 * packed_a_size(m, c) floats. w is [M, C, 3, 3]. Portable.
inline int64_t winograd_weights_size(int64_t m, int64_t c) { return 16 * packed_a_size(m, c); }
void winograd_pack_weights(const float* w, int64_t m, int64_t c, float* dst);

// Computes one image of a Winograd convolution another way (see winograd_avx2).
using WinogradFallback = void (*)(const void* ctx, int64_t image);

// A packed SGEMM of one tier (sgemm_avx2, sgemm_avx512).
using SgemmFn = void (*)(ThreadPool& pool, const GemmSpec& spec, GemmItemFn item_fn, const void* item_ctx,
                         void* scratch);

#if !defined(ENGINE_FORCE_REF)
// Scratch the driver needs for `threads` threads, in bytes.
size_t sgemm_scratch_bytes(const GemmSpec& spec, int threads);
// Runs every item's GEMM, parallel over (item, row chunk, column block)
// tasks. `scratch` holds sgemm_scratch_bytes(spec, pool.num_threads()) bytes,
// 64-byte aligned.
void sgemm_avx2(ThreadPool& pool, const GemmSpec& spec, GemmItemFn item_fn, const void* item_ctx, void* scratch);
// The same on AVX-512 (12x32 zmm tile, same panel layout and scratch; call
// only when use_avx512()).
void sgemm_avx512(ThreadPool& pool, const GemmSpec& spec, GemmItemFn item_fn, const void* item_ctx, void* scratch);

// The im2col packer for conv: ctx is a ConvGeom, src the first input channel
// of one (image, group). k = (c, kd, kh, kw) row-major, n = output position.
void pack_b_im2col(const void* ctx, const float* src, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* dst);

// Depthwise convolution (group == Cin == Cout), direct, AVX2; parallel over
// (image, channel) planes. `scratch` holds depthwise_scratch_bytes(g,
// pool.num_threads()) bytes, 64-byte aligned.
size_t depthwise_scratch_bytes(const ConvGeom& g, int threads);
void depthwise_avx2(ThreadPool& pool, const ConvGeom& g, const float* x, const float* w, const float* b,
                    const float* z, const Activation& act, float* y, void* scratch);

// The same vectorized over 16 channels per zmm (depthwise512_applies(g);
// call only when use_avx512()), with weights from depthwise_pack_weights;
// parallel over (image, block of 16 channels, output depth, band of output
// rows). `scratch` holds depthwise512_scratch_bytes(g, pool.num_threads()).
size_t depthwise512_scratch_bytes(const ConvGeom& g, int threads);
void depthwise_avx512(ThreadPool& pool, const ConvGeom& g, const float* x, const float* w_packed, const float* b,
                      const float* z, const Activation& act, float* y, void* scratch);
// The same kernel on int8 input (padding: x_zp) and int8 weights packed by
// depthwise_pack_weights_s8, for the int8 QConv (quant/): int8 products are
// whole numbers below 2^15 and up to 127 taps sum below 2^24, so the float
// sums are exact; each tile's are handed to sink as int32 rows, one per
// channel (the QConv epilogue's input). Same scratch.
void depthwise_s8_avx512(ThreadPool& pool, const ConvGeom& g, const int8_t* x, int8_t x_zp, const float* w_packed,
                         DepthwiseTileSink sink, const void* sink_ctx, void* scratch);

// Grouped convolution (grouped_applies(g)), direct, AVX2, with weights from
// grouped_pack_weights; parallel over (image, group, block of output rows).
// `scratch` holds grouped_scratch_bytes(g, pool.num_threads()) bytes,
// 64-byte aligned.
size_t grouped_scratch_bytes(const ConvGeom& g, int threads);
void grouped_avx2(ThreadPool& pool, const ConvGeom& g, const float* x, const float* w_packed, const float* b,
                  const float* z, const Activation& act, float* y, void* scratch);
// The same on AVX-512 (16 columns per vector; call only when use_avx512()).
// Same scratch.
void grouped_avx512(ThreadPool& pool, const ConvGeom& g, const float* x, const float* w_packed, const float* b,
                    const float* z, const Activation& act, float* y, void* scratch);
// The same vectorized over 16 output channels instead of output columns
// (grouped_oc.h), for groups of >= 16 output channels; weights from
// grouped_pack_weights(..., 16), g.sw 1 or 2, same scratch.
void grouped_oc_avx512(ThreadPool& pool, const ConvGeom& g, const float* x, const float* w_packed, const float* b,
                       const float* z, const Activation& act, float* y, void* scratch);

// Winograd F(2x2, 3x3) convolution (g.is_winograd_shape()) with weights from
// winograd_pack_weights; y = act(conv + b + z). `scratch` holds
// winograd_scratch_bytes(g, pool.num_threads()) bytes, 64-byte aligned.
size_t winograd_scratch_bytes(const ConvGeom& g, int threads);
// `gemm` runs the 16 transformed GEMMs (sgemm_avx2 or sgemm_avx512). An
// image whose input holds an infinity or a NaN is handed to
// fallback(fallback_ctx, image) instead, before any of its output is
// written (the transforms would turn +-inf into NaN; direct convolution
// keeps onnxruntime's +-inf).
void winograd_avx2(ThreadPool& pool, const ConvGeom& g, const float* x, const float* u, const float* b,
                   const float* z, const Activation& act, float* y, void* scratch, SgemmFn gemm,
                   WinogradFallback fallback, const void* fallback_ctx);

#else
// ENGINE_FORCE_REF builds leave the *_avx2.cc files out and use_avx2() is
// always false, so these are never reached; they only keep the callers
// linking.
inline size_t sgemm_scratch_bytes(const GemmSpec&, int) { return 0; }
inline void sgemm_avx2(ThreadPool&, const GemmSpec&, GemmItemFn, const void*, void*) {
  ENGINE_CHECK(false, "AVX2 SGEMM called in a reference-only build");
}
inline void sgemm_avx512(ThreadPool&, const GemmSpec&, GemmItemFn, const void*, void*) {
  ENGINE_CHECK(false, "AVX-512 SGEMM called in a reference-only build");
}
inline void pack_b_im2col(const void*, const float*, int64_t, int64_t, int64_t, int64_t, float*) {
  ENGINE_CHECK(false, "AVX2 im2col called in a reference-only build");
}
inline size_t depthwise_scratch_bytes(const ConvGeom&, int) { return 0; }
inline size_t depthwise512_scratch_bytes(const ConvGeom&, int) { return 0; }
inline void depthwise_avx512(ThreadPool&, const ConvGeom&, const float*, const float*, const float*, const float*,
                             const Activation&, float*, void*) {
  ENGINE_CHECK(false, "AVX-512 depthwise called in a reference-only build");
}
inline void depthwise_s8_avx512(ThreadPool&, const ConvGeom&, const int8_t*, int8_t, const float*, DepthwiseTileSink,
                                const void*, void*) {
  ENGINE_CHECK(false, "AVX-512 depthwise called in a reference-only build");
}
inline size_t winograd_scratch_bytes(const ConvGeom&, int) { return 0; }
inline size_t grouped_scratch_bytes(const ConvGeom&, int) { return 0; }
inline void grouped_avx2(ThreadPool&, const ConvGeom&, const float*, const float*, const float*, const float*,
                         const Activation&, float*, void*) {
  ENGINE_CHECK(false, "AVX2 grouped conv called in a reference-only build");
}
inline void grouped_avx512(ThreadPool&, const ConvGeom&, const float*, const float*, const float*, const float*,
                           const Activation&, float*, void*) {
  ENGINE_CHECK(false, "AVX-512 grouped conv called in a reference-only build");
}
inline void grouped_oc_avx512(ThreadPool&, const ConvGeom&, const float*, const float*, const float*, const float*,
                              const Activation&, float*, void*) {
  ENGINE_CHECK(false, "AVX-512 grouped conv called in a reference-only build");
}

inline void winograd_avx2(ThreadPool&, const ConvGeom&, const float*, const float*, const float*, const float*,
                          const Activation&, float*, void*, SgemmFn, WinogradFallback, const void*) {
  ENGINE_CHECK(false, "AVX2 Winograd called in a reference-only build");
}
inline void depthwise_avx2(ThreadPool&, const ConvGeom&, const float*, const float*, const float*, const float*,
                           const Activation&, float*, void*) {
  ENGINE_CHECK(false, "AVX2 depthwise called in a reference-only build");
}
#endif

}  // namespace conv_gemm
}  // namespace engine
