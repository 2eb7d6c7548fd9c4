// The quant kernel family: QuantizeLinear / DequantizeLinear element runs and
// the int8 convolution / gemm (QConv, QGemm) with their fused epilogue.
//
// Exactness contract: every AVX2 function here produces the same bits as its
// reference. Integer accumulation is exact in both (int32 sums of int8
// products, order-independent). The float epilogue performs the same IEEE
// operations in the same order; the only trap is the compiler contracting
// a*b+c into an FMA in the AVX2 files (built with -mfma), so every product
// that feeds an addition goes through no_contract() first.
//
// The scalar helpers below are `static inline` on purpose: they are compiled
// into AVX2 and non-AVX2 translation units alike, and internal linkage keeps
// the linker from picking an AVX2-compiled copy for the reference path.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "cpu/kernel.h"

namespace engine::qk {

// Opaque to the optimizer: the value must be materialized before its next use,
// so a multiply and a following add cannot be fused into one rounding.
static inline float no_contract(float v) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __asm__("" : "+x"(v));
#elif defined(__GNUC__) && defined(__aarch64__)
  __asm__("" : "+w"(v));
#else
  volatile float t = v;
  v = t;
#endif
  return v;
}

// maxps/minps semantics (the second operand wins on NaN and on equal zeros),
// so the scalar and vector paths agree even there.
static inline float max_ps1(float a, float b) { return a > b ? a : b; }
static inline float min_ps1(float a, float b) { return a < b ? a : b; }

// ---------------------------------------------------------------------------
// QuantizeLinear / DequantizeLinear on one run of elements sharing a scale and
// zero point (a whole tensor, one channel's plane, or one block).
//
// y = saturate(round_half_even(x / scale) + zp), evaluated as ONNX Runtime's
// MLAS does: clamp(x / scale, lo - zp, hi - zp), round, then add zp. The two
// orders agree for every finite x; NaN maps to lo - zp + zp = lo.
template <typename T>
static inline T quantize_one(float x, float scale, int32_t zp) {
  const float lo = static_cast<float>(static_cast<int32_t>(std::numeric_limits<T>::lowest()) - zp);
  const float hi = static_cast<float>(static_cast<int32_t>(std::numeric_limits<T>::max()) - zp);
  float v = min_ps1(max_ps1(x / scale, lo), hi);
  return static_cast<T>(static_cast<int32_t>(std::nearbyint(v)) + zp);
}

// y = (x - zp) * scale, the difference taken in int32 (exact), then one
// rounding in the conversion to float and one in the product.
template <typename T>
static inline float dequantize_one(T x, float scale, int32_t zp) {
  return static_cast<float>(static_cast<int32_t>(x) - zp) * scale;
}

template <typename T>
void quantize_run_ref(const float* x, T* y, int64_t n, float scale, int32_t zp);
template <typename T>
void dequantize_run_ref(const T* x, float* y, int64_t n, float scale, int32_t zp);

// AVX2 versions for the types activations use; same bits as the references.
void quantize_run_s8_avx2(const float* x, int8_t* y, int64_t n, float scale, int32_t zp);
void quantize_run_u8_avx2(const float* x, uint8_t* y, int64_t n, float scale, int32_t zp);
void dequantize_run_s8_avx2(const int8_t* x, float* y, int64_t n, float scale, int32_t zp);
void dequantize_run_u8_avx2(const uint8_t* x, float* y, int64_t n, float scale, int32_t zp);
// FusedQuantize's run: y = quantize_one(act(x + bias)), act Relu (NaN stays
// NaN) or none. The ref loop and the AVX2 run give the same bits.
void fused_quantize_run_s8_ref(const float* x, int8_t* y, int64_t n, float bias, bool relu, float scale, int32_t zp);
void fused_quantize_run_s8_avx2(const float* x, int8_t* y, int64_t n, float bias, bool relu, float scale, int32_t zp);
// FusedChannelBias's run: y = act(x + bias) in float (the same add and Relu).
void fused_channel_bias_run_f32_ref(const float* x, float* y, int64_t n, float bias, bool relu);
void fused_channel_bias_run_f32_avx2(const float* x, float* y, int64_t n, float bias, bool relu);

// ---------------------------------------------------------------------------
// The int8 conv / gemm epilogue. For output element `idx` of channel `c`,
// given the int32 accumulator acc:
//   acc += bias_i32[c]                        (wrapping int32 add)
//   v  = float(acc) * mul[c]
//   v += bias_f32[c]
//   v += z_f32[idx] * z_scale   or   v += float(z_s8[idx] - z_zp) * z_scale
//   v  = act(v)                               (Relu: max(v, 0); Clip: min(max(v, act_lo), act_hi))
//   y_s8[idx] = saturate(round_half_even(v) + y_zp)   or   y_f32[idx] = v
// Tensors are addressed by flat index over the whole output (conv: NCHW,
// gemm: [N, M]); residuals have the output's shape.
// The float terms are in output units: EpilogueAttrs::make (qconv_kernel.cc)
// sets mul[c] = x_scale * w_scale[c], and for a requantized output divides
// mul, bias_f32, z_scale (1 for a float residual) and the Clip bounds by
// y_scale once per call, so an output costs a multiply where
// DequantizeLinear -> Conv -> QuantizeLinear would also divide (a vector
// division costs several multiplies' throughput on every x86 core; with 64
// input channels the epilogue is as many instructions as the MACs). Against
// that float graph an output can differ by one step where v / y_scale lies
// within rounding of a .5 tie; every tier here computes exactly these
// operations.
// Zero points (asymmetric activations: onnxruntime's u8 Q/DQ, stored here as
// int8 with zero point - 128; see lower_qdq_to_int8.cc): the requantize is
// clamp(v, -128 - y_zp, 127 - y_zp), round, add y_zp, which for y_zp = 0 is
// the symmetric one. The input's zero point x_zp (ConvGeom::x_zp) never
// reaches the epilogue: the reference subtracts it from every input value,
// the SIMD tiers pad with it and fold -x_zp * sum_k w[c, k] into bias_i32
// (exact in wrapping int32).
enum class Act : int { kNone = 0, kRelu = 1, kClip = 2 };

struct Epilogue {
  const float* mul = nullptr;
  const int32_t* bias_i32 = nullptr;
  const float* bias_f32 = nullptr;
  const float* z_f32 = nullptr;
  const int8_t* z_s8 = nullptr;
  float z_scale = 1.f;
  int32_t z_zp = 0;
  Act act = Act::kNone;
  float act_lo = 0.f, act_hi = 0.f;
  bool requant = false;
  int32_t y_zp = 0;
  float* y_f32 = nullptr;
  int8_t* y_s8 = nullptr;
  // Set by the kernel that made the epilogue when every v it can produce is
  // finite with |v| < 2^31 - 256 (no float residual; |mul| * 2^31 + |bias_f32|
  // + 256 |z_scale| below that): a SIMD requantize may then leave the clamp
  // to 127 - y_zp to its saturating narrowing (same bits).
  bool v_bounded = false;
};

static inline void epilogue_one(const Epilogue& e, int32_t acc, int64_t c, int64_t idx) {
  if (e.bias_i32) acc = static_cast<int32_t>(static_cast<uint32_t>(acc) + static_cast<uint32_t>(e.bias_i32[c]));
  float v = no_contract(static_cast<float>(acc) * e.mul[c]);
  if (e.bias_f32) v = v + e.bias_f32[c];
  if (e.z_f32) v = v + no_contract(e.z_f32[idx] * e.z_scale);
  else if (e.z_s8) v = v + no_contract(static_cast<float>(static_cast<int32_t>(e.z_s8[idx]) - e.z_zp) * e.z_scale);
  if (e.act == Act::kRelu) v = max_ps1(v, 0.f);
  else if (e.act == Act::kClip) v = min_ps1(max_ps1(v, e.act_lo), e.act_hi);
  if (e.requant) {
    const float q = min_ps1(max_ps1(v, static_cast<float>(-128 - e.y_zp)), static_cast<float>(127 - e.y_zp));
    e.y_s8[idx] = static_cast<int8_t>(static_cast<int32_t>(std::nearbyint(q)) + e.y_zp);
  } else {
    e.y_f32[idx] = v;
  }
}

// Geometry of one QConv call, 2-D (NCHW) or 3-D (NCDHW: depth d = frames).
// Pads are the resolved front/top/left pads (auto_pad already applied);
// back/bottom/right pads only shape od/oh/ow. A 2-D conv is the 3-D one with
// d = kd = od = sd = dd = 1 and pf = 0 (the defaults), so every kernel reads
// one geometry. Per channel the input holds d*h*w values and the output
// od*oh*ow (ihw(), ohw()).
struct ConvGeom {
  int64_t n = 0, c = 0, h = 0, w = 0;   // input
  int64_t m = 0, kh = 0, kw = 0;        // weights [m, c/group, (kd,) kh, kw]
  int64_t oh = 0, ow = 0;               // output spatial
  int64_t group = 1;
  int64_t sh = 1, sw = 1, dh = 1, dw = 1, pt = 0, pl = 0;
  int64_t d = 1, kd = 1, od = 1, sd = 1, dd = 1, pf = 0;  // the depth axis (3-D only)
  int8_t x_zp = 0;  // the input's zero point: the value the SIMD tiers pad with (real 0)
  int64_t cg() const { return c / group; }
  int64_t mg() const { return m / group; }
  int64_t k() const { return cg() * kd * kh * kw; }
  int64_t ihw() const { return d * h * w; }
  int64_t ohw() const { return od * oh * ow; }
  bool is_pointwise() const {
    return kd == 1 && kh == 1 && kw == 1 && sd == 1 && sh == 1 && sw == 1 && pf == 0 && pt == 0 && pl == 0 &&
           od == d && oh == h && ow == w;
  }
};

// References: plain loops, single-threaded; the test oracle.
void qconv_ref(const ConvGeom& g, const int8_t* x, const int8_t* w, const Epilogue& e);
// y[n, m] = epilogue(sum_k (a[n, k] - a_zp) * w[m, k]).
void qgemm_ref(int64_t n, int64_t m, int64_t k, const int8_t* a, const int8_t* w, const Epilogue& e,
               int32_t a_zp = 0);

// ---------------------------------------------------------------------------
// AVX2 int8 GEMM (see qconv_avx2.cc). Operands are widened to int16 and
// multiplied with vpmaddwd: exact, unlike vpmaddubsw, which saturates its
// pair sums. A tile is kMR rows by kNR columns.
constexpr int kMR = 6;
constexpr int kNR = 16;

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Packed "A" (the operand broadcast along rows): ceil(rows/kMR) tiles, each
// [ceil(k/2)][kMR][2] int16, zero padded.
inline int64_t packed_a_elems(int64_t rows, int64_t k) { return round_up(rows, kMR) * round_up(k, 2); }
// Packed "B" (the operand vectorized along columns): ceil(cols/kNR) panels,
// each [ceil(k/2)][kNR][2] int16, zero padded.
inline int64_t packed_b_elems(int64_t k, int64_t cols) { return round_up(cols, kNR) * round_up(k, 2); }

// Packs a [rows x k] int8 matrix with element (r, kk) at src[r * rs + kk * ks].
void pack_a(const int8_t* src, int64_t rs, int64_t ks, int64_t rows, int64_t k, int16_t* out);
// Packs a [k x cols] int8 matrix with element (kk, j) at src[kk * ks + j * cs].
void pack_b(const int8_t* src, int64_t ks, int64_t cs, int64_t k, int64_t cols, int16_t* out);

// QConv with weights packed per group (group g at packed_w + g * packed_a_elems(mg, k)).
// ws: qconv_avx2_workspace(g, pool.num_threads()) bytes, 64-byte aligned.
size_t qconv_avx2_workspace(const ConvGeom& g, int threads);
void qconv_avx2(ThreadPool& pool, const ConvGeom& g, const int8_t* x, const int16_t* packed_w, const Epilogue& e,
                void* ws);
// The u8 path for inputs known to be >= 0 (vpmaddubsw, exact there: see
// qconv_avx2.cc). Weights packed per group as ceil(mg/kU8MR) tiles of
// [ceil(k/4)][kU8MR][4] int8, zero padded (group g at packed_w + g *
// packed_a_u8_bytes(mg, k)).
constexpr int kU8MR = 4;
inline int64_t packed_a_u8_bytes(int64_t rows, int64_t k) { return round_up(rows, kU8MR) * round_up(k, 4); }
void pack_a_u8(const int8_t* src, int64_t rs, int64_t rows, int64_t k, int8_t* out);
// ws: qconv_avx2_u8_workspace(g, threads, packed_w_quads != nullptr) bytes;
// packed_w_quads: pack_a_quads<kU8MR>'s weights, or null.
size_t qconv_avx2_u8_workspace(const ConvGeom& g, int threads, bool quads);
// The u8 path's 4x16 microkernel on vpdpbusd (ymm), one instruction where
// qconv_avx2.cc's takes three (qconv_u8dot.h): AVX-VNNI's VEX form
// (qconv_u8dot_avxvnni.cc), and the same source EVEX-encoded
// (qconv_u8dot_evex_avx512vnni.cc), which AVX512-VNNI CPUs run, for the
// tests (dispatch.h, AvxVnniUse). `panel` reads packed panel k group p at
// b + 64 p, `quads` the quad planes' at b + off[p]; both write the 4x16
// int32 tile to c as the AVX2 one (U8DotKernel<MaddubsDot>) does.
struct U8DotKernels {
  void (*panel)(const int8_t* a, const uint8_t* b, int64_t kq, int32_t* c);
  void (*quads)(const int8_t* a, const uint8_t* b, const int64_t* off, int64_t kq, int32_t* c);
};
extern const U8DotKernels kU8DotAvxVnni;
extern const U8DotKernels kU8DotEvex;
// u8dot: one of the above, or null for vpmaddubsw.
void qconv_avx2_u8(ThreadPool& pool, const ConvGeom& g, const int8_t* x, const int8_t* packed_w,
                   const int8_t* packed_w_quads, const Epilogue& e, void* ws, const U8DotKernels* u8dot);
// QGemm with the weights packed as B: pack_b(w, 1, k, k, m, ...).
size_t qgemm_avx2_workspace(int64_t n, int64_t k);
void qgemm_avx2(ThreadPool& pool, int64_t n, int64_t m, int64_t k, const int8_t* a, const int16_t* packed_w,
                const Epilogue& e, void* ws);

// ---------------------------------------------------------------------------
// out[r] = scale * sum_k w[r, k] for rows x k int8 weights (row r at src +
// r * rs), wrapping int32: the sums an input zero point folds into the bias
// (scale 1, qconv_kernel.cc) and the +128 shift's corrections (scale 128:
// pack_a_vnni, pack_a_amx).
inline void weight_sums(const int8_t* src, int64_t rs, int64_t rows, int64_t k, int32_t scale, int32_t* out) {
  for (int64_t r = 0; r < rows; ++r) {
    int32_t s = 0;
    for (int64_t kk = 0; kk < k; ++kk) s += src[r * rs + kk];
    out[r] = scale * s;
  }
}

// AVX512-VNNI int8 conv (see qconv_avx512vnni.cc). vpdpbusd multiplies
// unsigned by signed bytes and sums groups of 4 into int32 lanes, exactly
// (no saturation, unlike vpmaddubsw). The activations are the unsigned
// operand: values known to be >= 0 (a requantized Relu output) are used as
// they are; otherwise they are shifted by +128 (x ^ 0x80) at pack time, and
//   sum_k (x + 128) * w = sum_k x * w + 128 * sum_k w
// is corrected with corr[m] = 128 * sum_k w[m, k] (int32, computed at pack
// time), which is exact in wrapping int32 arithmetic.
// Weights ("A", broadcast) are packed per group as ceil(mg/kVnniMR) tiles of
// [ceil(k/4)][kVnniMR][4] int8, zero padded.
constexpr int kVnniMR = 8;
inline int64_t packed_a_vnni_bytes(int64_t rows, int64_t k) { return round_up(rows, kVnniMR) * round_up(k, 4); }
// Packs rows x k int8 weights (row stride rs) and writes corr[r] = 128 * sum_k w[r, k].
void pack_a_vnni(const int8_t* src, int64_t rs, int64_t rows, int64_t k, int8_t* out, int32_t* corr);
// The 4-byte k-group weight layout of the VNNI and AVX2 u8 kernels: rows
// (row r at src + r * rs) as ceil(rows/MR) tiles of [kq][MR][4] int8, zero
// padded; byte h of k group p of row r is src[r * rs + col(p, h)], or 0
// where col(p, h) < 0. pack_a_vnni (MR = kVnniMR) and pack_a_u8 (MR =
// kU8MR) take k in order; pack_a_quads below takes it in quad-plane order.
template <int MR, class Col>
void pack_a_groups(const int8_t* src, int64_t rs, int64_t rows, int64_t kq, const Col& col, int8_t* out) {
  for (int64_t mt = 0; mt < round_up(rows, MR) / MR; ++mt) {
    int8_t* tile = out + mt * kq * MR * 4;
    for (int64_t p = 0; p < kq; ++p)
      for (int r = 0; r < MR; ++r)
        for (int h = 0; h < 4; ++h) {
          const int64_t row = mt * MR + r, j = col(p, h);
          tile[(p * MR + r) * 4 + h] = row < rows && j >= 0 ? src[row * rs + j] : 0;
        }
  }
}
// k in order: group p holds k = 4p .. 4p + 3 (zeros past k).
template <int MR>
void pack_a_k4(const int8_t* src, int64_t rs, int64_t rows, int64_t k, int8_t* out) {
  pack_a_groups<MR>(
      src, rs, rows, round_up(k, 4) / 4, [k](int64_t p, int h) { return 4 * p + h < k ? 4 * p + h : -1; }, out);
}
// The same weights in (channel quad, tap) k order, for 2-D convs with
// cg % 4 == 0 (one group; the caller steps by packed_a_*_bytes(mg, k)): the
// k order of the quad planes (qconv_tiled.h, TiledPlan::quads), which such
// a conv reads instead of packing its input per task. Same sums, so
// pack_a_vnni's corr holds.
template <int MR>
void pack_a_quads(const int8_t* src, int64_t rs, int64_t rows, int64_t cg, int64_t taps, int8_t* out) {
  pack_a_groups<MR>(src, rs, rows, cg / 4 * taps,
                    [taps](int64_t p, int h) { return (p / taps * 4 + h) * taps + p % taps; }, out);
}
// A 2-D 1x1 conv with whole channel quads: pack_a_k4's k order is the quad
// planes' (one tap), so the tiers' packed weights serve as their quad
// weights too (qconv_tiled.h reads quad planes for the strided ones).
inline bool pointwise_quads(const ConvGeom& g) {
  return g.d == 1 && g.kd == 1 && g.kh == 1 && g.kw == 1 && g.cg() % 4 == 0;
}
// ws: qconv_avx512vnni_workspace(g, threads, packed_w_quads != nullptr)
// bytes, 64-byte aligned. x_nonneg: every input value is >= 0 (then corr is
// not used). packed_w_quads: pack_a_quads<kVnniMR>'s weights, or null.
size_t qconv_avx512vnni_workspace(const ConvGeom& g, int threads, bool quads);
void qconv_avx512vnni(ThreadPool& pool, const ConvGeom& g, const int8_t* x, bool x_nonneg, const int8_t* packed_w,
                      const int8_t* packed_w_quads, const int32_t* corr, const Epilogue& e, void* ws);

// ---------------------------------------------------------------------------
// Channels-last int8 conv (QConv with channels_last = 1; ops.def): x is
// [N, H, W, C], y and an int8 residual z are [N, OH, OW, M]; 2-D, one group.
// Output (n, oy, ox, c) is at flat index ((n * OH + oy) * OW + ox) * M + c,
// the Epilogue's idx. The ConvGeom is the NCHW one (g.c = C, g.h = H, ...);
// only the memory order differs.
void qconv_nhwc_ref(const ConvGeom& g, const int8_t* x, const int8_t* w, const Epilogue& e);
// VNNI (qconv_nhwc_avx512vnni.cc): the GEMM has output positions as rows and
// output channels as columns, C[P x M] = X[P x K] * W[K x M]: each row
// broadcasts one 4-byte k group of a position's input (4 consecutive
// channels, in place in the NHWC input: no pack, no im2col; padding taps read
// a row of g.x_zp), the columns are 64 output channels (4 zmm) of packed
// weights, and the epilogue's per-channel terms are vectors shared by every
// row. Weights: ceil(M/64) blocks of [taps][ceil(C/4)][64][4] int8, k in
// (tap = ky * kw + kx, channel quad) order, zero padded; corr[m] = 128 *
// sum_k w[m, k] (the +128 shift of inputs not known to be >= 0, as VNNI's).
constexpr int kNhwcNR = 64;
inline int64_t packed_w_nhwc_bytes(int64_t m, int64_t c, int64_t taps) {
  return round_up(m, kNhwcNR) * taps * round_up(c, 4);
}
// w: [m, c, kh, kw] int8 (taps = kh * kw).
void pack_w_nhwc(const int8_t* w, int64_t m, int64_t c, int64_t taps, int8_t* out, int32_t* corr);
// Needs g.cg() % 4 == 0 and group 1 (qconv_nhwc_avx512vnni_applies).
inline bool qconv_nhwc_avx512vnni_applies(const ConvGeom& g) {
  return g.group == 1 && g.c % 4 == 0 && g.d == 1 && g.kd == 1;
}
size_t qconv_nhwc_avx512vnni_workspace(const ConvGeom& g, int threads);
void qconv_nhwc_avx512vnni(ThreadPool& pool, const ConvGeom& g, const int8_t* x, bool x_nonneg,
                           const int8_t* packed_w, const int32_t* corr, const Epilogue& e, void* ws);
// Depthwise (group == C == M, one input channel per group), channels-last,
// VNNI: a vector holds 16 channels of one position, so the NHWC input is
// read in place, 64 channels at a time; each vpdpbusd sums 4 taps of 16
// channels (the taps' input bytes interleaved per channel in registers).
// Weights: ceil(C/64) blocks of [ceil(taps/4)][4][64] int8 (packed_w_dw_nhwc
// says in which order), corr as pack_w_nhwc's.
inline int64_t packed_w_dw_nhwc_bytes(int64_t c, int64_t taps) {
  return round_up(c, kNhwcNR) * round_up(taps, 4);
}
// w: [c, 1, kh, kw] int8 (taps = kh * kw).
void pack_w_dw_nhwc(const int8_t* w, int64_t c, int64_t taps, int8_t* out, int32_t* corr);
inline bool qconv_dw_nhwc_avx512vnni_applies(const ConvGeom& g) {
  return g.group == g.c && g.group == g.m && g.group > 1 && g.d == 1 && g.kd == 1;
}
size_t qconv_dw_nhwc_avx512vnni_workspace(const ConvGeom& g, int threads);
void qconv_dw_nhwc_avx512vnni(ThreadPool& pool, const ConvGeom& g, const int8_t* x, bool x_nonneg,
                              const int8_t* packed_w, const int32_t* corr, const Epilogue& e, void* ws);

// ---------------------------------------------------------------------------
// AMX-INT8 conv (see qconv_amx.cc; off until tested on an AMX CPU:
// dispatch.h, AmxUse): the VNNI tier's panels, +128 shift and epilogue, with
// tdpbsud tiles of 16 output channels x 64 k as the micro-kernel. Weights
// packed per group as ceil(mg/kAmxMR) tiles of [ceil(k/64)][kAmxMR][64] int8
// (row-major k, zero padded); corr as pack_a_vnni's.
constexpr int kAmxMR = 16;
inline int64_t packed_a_amx_bytes(int64_t rows, int64_t k) { return round_up(rows, kAmxMR) * round_up(k, 64); }
void pack_a_amx(const int8_t* src, int64_t rs, int64_t rows, int64_t k, int8_t* out, int32_t* corr);
// The same weights with k in (tap, channel quad) order, for 2-D convs with
// cg % 64 == 0 (one group; same size and corr): the quad planes' order on
// this tier (qconv_tiled.h, kTapMajorQuads).
void pack_a_amx_quads(const int8_t* src, int64_t rs, int64_t rows, int64_t cg, int64_t taps, int8_t* out);
// ws: qconv_amx_workspace(g, threads, packed_w_quads != nullptr) bytes,
// 64-byte aligned. emulated: the tile instructions emulated in C++
// (AmxUse::kEmulated; any VNNI CPU).
size_t qconv_amx_workspace(const ConvGeom& g, int threads, bool quads);
void qconv_amx(ThreadPool& pool, const ConvGeom& g, const int8_t* x, bool x_nonneg, const int8_t* packed_w,
               const int8_t* packed_w_quads, const int32_t* corr, const Epilogue& e, void* ws, bool emulated);

// ---------------------------------------------------------------------------
// Depthwise int8 conv (one input and one output channel per group), 2-D or
// 3-D, on the AVX2 and VNNI tiers (qconv_tiled.h, run_depthwise): per (image,
// channel) a zero-bordered copy of the input, then vpmaddwd over pairs of
// taps, 16 output columns at a time. Taken for depthwise convs with 2 to
// kDwMaxTaps taps; others stay on the GEMM. w: the raw [c, 1, kd, kh, kw]
// weights. ws: qconv_depthwise_workspace(g, threads) bytes, 64-byte aligned.
constexpr int64_t kDwMaxTaps = 127;
struct DwPlan {
  int64_t dp = 0, hp = 0, wq = 0, row_bytes = 0, chan_bytes = 0, taps = 0;
  size_t acc_offset = 0, per_thread = 0;
};
// Buffer per thread: frames dp x rows hp x sw phases of wq columns (ow, the
// widest tap offset and 16 more, so a row's last 16-column load stays in
// it), then one output row of int32 accumulators.
inline DwPlan dw_plan(const ConvGeom& g) {
  DwPlan p;
  p.dp = (g.od - 1) * g.sd + (g.kd - 1) * g.dd + 1;
  p.hp = (g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1;
  p.wq = g.ow + (g.kw - 1) * g.dw / g.sw + 16;
  p.row_bytes = g.sw * p.wq;
  p.chan_bytes = p.dp * p.hp * p.row_bytes;
  p.taps = g.kd * g.kh * g.kw;
  p.acc_offset = static_cast<size_t>(round_up(p.chan_bytes, 64));
  p.per_thread = p.acc_offset + static_cast<size_t>(round_up(round_up(g.ow, 16) * 4, 64));
  return p;
}
inline bool qconv_depthwise_applies(const ConvGeom& g) {
  const int64_t taps = g.kd * g.kh * g.kw;
  return g.cg() == 1 && g.mg() == 1 && taps > 1 && taps <= kDwMaxTaps;
}
inline size_t qconv_depthwise_workspace(const ConvGeom& g, int threads) {
  return dw_plan(g).per_thread * static_cast<size_t>(threads < 1 ? 1 : threads);
}
void qconv_depthwise_avx2(ThreadPool& pool, const ConvGeom& g, const int8_t* x, const int8_t* w, const Epilogue& e,
                          void* ws);
// The VNNI tier's: with w_f32 (depthwise_pack_weights_s8's floats, or null)
// and the shapes qconv_depthwise_blocked_applies takes, conv_gemm's
// AVX-512 depthwise kernel, 16 channels per vector, on the int8 input with
// exact float sums (conv_gemm.h, depthwise_s8_avx512), then the same row
// epilogue; else run_depthwise. ws: qconv_depthwise_avx512vnni_workspace.
// Measured on Zen 4 against run_depthwise: 1.2-2.3x faster on rows of 7 to
// 28 outputs and with 7x7 kernels, 1.25-1.3x slower on 3x3 kernels over
// rows of 56 and 112 (where run_depthwise's rows fill its vectors and the
// blocked kernel's transposes cost as much as the taps), so those keep it.
inline bool qconv_depthwise_blocked_applies(const ConvGeom& g) {
  return qconv_depthwise_applies(g) && g.group == g.c && g.group == g.m && (g.sw == 1 || g.sw == 2) &&
         (g.ow <= 32 || g.kw >= 5);
}
size_t qconv_depthwise_avx512vnni_workspace(const ConvGeom& g, int threads, bool blocked);
void qconv_depthwise_avx512vnni(ThreadPool& pool, const ConvGeom& g, const int8_t* x, const int8_t* w,
                                const float* w_f32, const Epilogue& e, void* ws);

// ---------------------------------------------------------------------------
// int8 MaxPool on one NCHW plane (maxpool_s8.cc). pt/pl are the top/left
// pads; oh/ow come from the output (ceil_mode and end pads only shape them).
struct PoolS8Geom {
  int64_t h = 0, w = 0, oh = 0, ow = 0, kh = 1, kw = 1, sh = 1, sw = 1, dh = 1, dw = 1, pt = 0, pl = 0;
};
void maxpool_s8_ref(const PoolS8Geom& g, const int8_t* x, int8_t* y);
// Row-separable version; ws: maxpool_s8_avx2_workspace(g) bytes.
size_t maxpool_s8_avx2_workspace(const PoolS8Geom& g);
void maxpool_s8_avx2(const PoolS8Geom& g, const int8_t* x, int8_t* y, void* ws);
// Windows 2 or 3 columns wide at column stride 2, dilation 1,
// and at most 64 window rows (applies(g)), in registers. No workspace.
bool maxpool_s8_avx512_applies(const PoolS8Geom& g);
void maxpool_s8_avx512(const PoolS8Geom& g, const int8_t* x, int8_t* y);

// ---------------------------------------------------------------------------
// QAdd (ops.def): y = Q(DQ(a) + DQ(b) [, Relu]) over n elements, the Q/DQ
// kernels' own operations (dequantize_one, a float add, quantize_one).
//
// The quotient v / y_scale: a division costs 5-10x a multiply (the divider
// bounds the whole kernel), so the SIMD tiers may compute it as v * y_rcp
// (y_rcp = 1 / y_scale rounded) or that product refined by one residual
// step (e = fma(-q, y_scale, v); q + e * y_rcp, Markstein's correction).
// Either may round differently from the division for some v; the output,
// though, is a function of the two int8 inputs only, so QAddKernel runs the
// tier's kernel on all 65536 input pairs when it is created and takes the
// cheapest form whose every output equals qadd_one's (the division, when
// neither does): exact by construction, not by argument.
enum class QAddQuotient : int { kDivide, kReciprocal, kRefined };
struct QAddParams {
  float a_scale = 1.f, b_scale = 1.f, y_scale = 1.f;
  float y_rcp = 1.f;  // 1 / y_scale (kReciprocal, kRefined)
  int32_t a_zp = 0, b_zp = 0, y_zp = 0;
  bool relu = false;
  QAddQuotient quotient = QAddQuotient::kDivide;
};
static inline int8_t qadd_one(int8_t a, int8_t b, const QAddParams& p) {
  // no_contract: in the AVX2 file (-mfma) the product and the add must not fuse.
  float v = no_contract(dequantize_one<int8_t>(a, p.a_scale, p.a_zp)) +
            no_contract(dequantize_one<int8_t>(b, p.b_scale, p.b_zp));
  if (p.relu) v = max_ps1(v, 0.f);
  return quantize_one<int8_t>(v, p.y_scale, p.y_zp);
}
void qadd_run_s8_avx2(const int8_t* a, const int8_t* b, int8_t* y, int64_t n, const QAddParams& p);
void qadd_run_s8_avx512(const int8_t* a, const int8_t* b, int8_t* y, int64_t n, const QAddParams& p);

// Kernel factories (qdq_kernel.cc, qconv_kernel.cc, maxpool_s8.cc, qadd.cc, fused_quantize.cc), registered in register.cc.
std::unique_ptr<Kernel> create_quantize_linear(const Node& node);
std::unique_ptr<Kernel> create_dequantize_linear(const Node& node);
std::unique_ptr<Kernel> create_qconv(const Node& node);
std::unique_ptr<Kernel> create_qgemm(const Node& node);
std::unique_ptr<Kernel> create_maxpool_s8(const Node& node);
std::unique_ptr<Kernel> create_qadd(const Node& node);
std::unique_ptr<Kernel> create_fused_quantize(const Node& node);
std::unique_ptr<Kernel> create_fused_channel_bias(const Node& node);

}  // namespace engine::qk
