// Depthwise convolution (group == Cin == Cout), AVX2, for 1-D/2-D/3-D:
//   y[n, c, o] = act(sum_t w[c, t] * x[n, c, o*s - p + t*d] + b[c] + z[n, c, o])
//
// A GEMM per channel would have M = 1. Instead each (image, channel) plane is
// first copied into a zero-padded per-thread buffer (borders and a few
// slack columns), so that every output vector is computed with plain vector
// loads: no bounds checks, no scalar border columns (with a 7x7 kernel on a
// 28x28 plane the borders are 40% of the outputs). Up to 6 vectors of two
// output rows at a time accumulate every tap in registers (see dw_rows), and
// bias, residual and activation are applied before the single store. The
// copy costs one pass over the input, small next to KD*KH*KW taps per output.
// Stride 2 along W reads 16 floats and keeps the even ones; other strides
// gather.
#include <cstring>

#include "cpu/kernels/conv_gemm/activation_avx2.h"
#include "cpu/kernels/conv_gemm/conv_gemm.h"

namespace engine {
namespace conv_gemm {
namespace {

// The padded plane: depth pd_n x rows ph_n x pitch floats; input element
// (id, ih, iw) sits at ((id + pd) * ph_n + ih + ph) * pitch + iw + pw.
struct PaddedDims {
  int64_t pd_n, ph_n, pitch;
  int64_t floats() const { return pd_n * ph_n * pitch; }
};

PaddedDims padded_dims(const ConvGeom& g) {
  PaddedDims d;
  d.pd_n = (g.od - 1) * g.sd + (g.kd - 1) * g.dd + 1;
  d.ph_n = (g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1;
  // The last vector of a row computes up to 7 extra outputs, and stride 2
  // reads 16 floats per 8 outputs: slack of 8*sw + 8 floats keeps every
  // read inside the buffer.
  d.pitch = round_up((g.ow - 1) * g.sw + (g.kw - 1) * g.dw + 1 + 8 * g.sw + 8, 8);
  return d;
}

inline void copy_floats(float* dst, const float* src, int64_t n) {
  int64_t e = 0;
  for (; e + 8 <= n; e += 8) _mm256_storeu_ps(dst + e, _mm256_loadu_ps(src + e));
  if (e < n) {
    const __m256i m = tail_mask(static_cast<int>(n - e));
    _mm256_maskstore_ps(dst + e, m, _mm256_maskload_ps(src + e, m));
  }
}

// Copies the plane into the interior of buf. The border of buf is zero from
// the start of the call and never written, so it is not cleared per plane.
void pad_plane(const ConvGeom& g, const PaddedDims& d, const float* x, float* buf) {
  const int64_t lead = std::min(g.pw, d.pitch);
  const int64_t copy_w = std::max<int64_t>(0, std::min(g.iw, d.pitch - lead));
  const int64_t id_end = std::min(g.id, d.pd_n - g.pd), ih_end = std::min(g.ih, d.ph_n - g.ph);
  for (int64_t id = 0; id < id_end; ++id)
    for (int64_t ih = 0; ih < ih_end; ++ih)
      copy_floats(buf + ((id + g.pd) * d.ph_n + ih + g.ph) * d.pitch + lead, x + (id * g.ih + ih) * g.iw, copy_w);
}

// 8 outputs whose first input is at p, W stride S (0: any, via idx).
template <int S>
inline __m256 load_taps(const float* p, __m256i idx) {
  if constexpr (S == 1) {
    return _mm256_loadu_ps(p);
  } else if constexpr (S == 2) {
    const __m256 e = _mm256_shuffle_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8), 0x88);
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8));
  } else {
    return _mm256_i32gather_ps(p, idx, 4);
  }
}

// Accumulators are named locals (an indexed array ends up on the stack).
// For narrow chunks (V <= 2) taps from odd input rows go to a second set
// (c0.., c1..), so that no accumulator chains more than about half the
// taps: with few vectors the FMA latency, not throughput, bounds the loop.
#define ENGINE_DW_VECS(F, A, B) F(0, A, B) F(1, A, B) F(2, A, B) F(3, A, B) F(4, A, B) F(5, A, B)
#define ENGINE_DW_DECL(v, A, B) __m256 a0##v = bias, a1##v = bias, c0##v = _mm256_setzero_ps(), c1##v = c0##v;
// One input row: tap of output row 0 into A, of output row 1 into B.
#define ENGINE_DW_ONE(v, A, B) \
  if constexpr (V > v) A##v = _mm256_fmadd_ps(wa, load_taps<S>(p + 8 * v * sw, idx), A##v);
#define ENGINE_DW_TWO(v, A, B)                           \
  if constexpr (V > v) {                                 \
    const __m256 xv = load_taps<S>(p + 8 * v * sw, idx); \
    A##v = _mm256_fmadd_ps(wa, xv, A##v);                \
    B##v = _mm256_fmadd_ps(wb, xv, B##v);                \
  }
// Input row `row` with weight rows wra (for A) and wrb (for B, two-row form).
#define ENGINE_DW_INROW_ONE(A, wra)                         \
  for (int64_t kw = 0; kw < kw_n; ++kw) {                   \
    const __m256 wa = _mm256_broadcast_ss((wra) + kw);      \
    const float* p = row + kw * dw;                         \
    ENGINE_DW_VECS(ENGINE_DW_ONE, A, A)                     \
  }
#define ENGINE_DW_INROW_TWO(A, B, wra, wrb)                 \
  for (int64_t kw = 0; kw < kw_n; ++kw) {                   \
    const __m256 wa = _mm256_broadcast_ss((wra) + kw);      \
    const __m256 wb = _mm256_broadcast_ss((wrb) + kw);      \
    const float* p = row + kw * dw;                         \
    ENGINE_DW_VECS(ENGINE_DW_TWO, A, B)                     \
  }
#define ENGINE_DW_STORE(v, A, B)                                        \
  if constexpr (V > v) {                                                \
    out[0][v] = kSplit ? _mm256_add_ps(a0##v, c0##v) : a0##v;           \
    out[1][v] = kSplit ? _mm256_add_ps(a1##v, c1##v) : a1##v;           \
  }

// R output rows (oh, oh+1 when R == 2, which needs unit H stride and
// dilation) x V vectors of columns from ow0, all taps in registers. With
// R == 2 the rows share KH-1 input rows, so each input vector loaded feeds
// two FMAs: depthwise convolution is bound by loads, not FMAs. `valid`
// columns of the last vector are stored.
template <int S, int V, int R, typename Op>
void dw_rows(const ConvGeom& g, const PaddedDims& d, const float* buf, const float* w, __m256 bias, int64_t od,
             int64_t oh, int64_t ow0, __m256i idx, const float* z, float* y, int64_t valid, const Op& op) {
  constexpr bool kSplit = V <= 2;
  const int64_t sw = S == 0 ? g.sw : S;
  ENGINE_DW_VECS(ENGINE_DW_DECL, a, a)
  const int64_t kh_n = g.kh, kw_n = g.kw, dw = g.dw;
  for (int64_t kd = 0; kd < g.kd; ++kd) {
    const float* plane = buf + (od * g.sd + kd * g.dd) * d.ph_n * d.pitch + ow0 * sw;
    const float* wd = w + kd * kh_n * kw_n;
    if constexpr (R == 2) {
      // Input row oh + j feeds output row oh with tap j and row oh+1 with
      // tap j-1; even j accumulate into a0/a1, odd j into c0/c1 (kSplit).
      const float* row = plane + oh * d.pitch;
      ENGINE_DW_INROW_ONE(a0, wd)
      int64_t j = 1;
      for (; j + 1 < kh_n; j += 2) {
        row = plane + (oh + j) * d.pitch;
        if constexpr (kSplit) { ENGINE_DW_INROW_TWO(c0, c1, wd + j * kw_n, wd + (j - 1) * kw_n) }
        else { ENGINE_DW_INROW_TWO(a0, a1, wd + j * kw_n, wd + (j - 1) * kw_n) }
        row = plane + (oh + j + 1) * d.pitch;
        ENGINE_DW_INROW_TWO(a0, a1, wd + (j + 1) * kw_n, wd + j * kw_n)
      }
      if (j < kh_n) {
        row = plane + (oh + j) * d.pitch;
        if constexpr (kSplit) { ENGINE_DW_INROW_TWO(c0, c1, wd + j * kw_n, wd + (j - 1) * kw_n) }
        else { ENGINE_DW_INROW_TWO(a0, a1, wd + j * kw_n, wd + (j - 1) * kw_n) }
        ++j;
      }
      row = plane + (oh + kh_n) * d.pitch;
      if (kSplit && (kh_n & 1)) { ENGINE_DW_INROW_ONE(c1, wd + (kh_n - 1) * kw_n) }
      else { ENGINE_DW_INROW_ONE(a1, wd + (kh_n - 1) * kw_n) }
    } else {
      int64_t kh = 0;
      for (; kh + 1 < kh_n; kh += 2) {
        const float* row = plane + (oh * g.sh + kh * g.dh) * d.pitch;
        ENGINE_DW_INROW_ONE(a0, wd + kh * kw_n)
        row = plane + (oh * g.sh + (kh + 1) * g.dh) * d.pitch;
        if constexpr (kSplit) { ENGINE_DW_INROW_ONE(c0, wd + (kh + 1) * kw_n) }
        else { ENGINE_DW_INROW_ONE(a0, wd + (kh + 1) * kw_n) }
      }
      if (kh < kh_n) {
        const float* row = plane + (oh * g.sh + kh * g.dh) * d.pitch;
        ENGINE_DW_INROW_ONE(a0, wd + kh * kw_n)
      }
    }
  }
  __m256 out[2][6];
  ENGINE_DW_VECS(ENGINE_DW_STORE, a, a)
  for (int r = 0; r < R; ++r) {
    const int64_t o = (od * g.oh + oh + r) * g.ow + ow0;
    for (int v = 0; v < V; ++v) {
      const int64_t n = v == V - 1 ? valid : 8;
      __m256 x = out[r][v];
      if (n == 8) {
        if (z) x = _mm256_add_ps(x, _mm256_loadu_ps(z + o + 8 * v));
        _mm256_storeu_ps(y + o + 8 * v, op(x));
      } else {
        const __m256i m = tail_mask(static_cast<int>(n));
        if (z) x = _mm256_add_ps(x, _mm256_maskload_ps(z + o + 8 * v, m));
        _mm256_maskstore_ps(y + o + 8 * v, m, op(x));
      }
    }
  }
}

#undef ENGINE_DW_VECS
#undef ENGINE_DW_DECL
#undef ENGINE_DW_ONE
#undef ENGINE_DW_TWO
#undef ENGINE_DW_INROW_ONE
#undef ENGINE_DW_INROW_TWO
#undef ENGINE_DW_STORE

template <int S, int R, typename Op>
void dw_rows_v(int v, const ConvGeom& g, const PaddedDims& d, const float* buf, const float* w, __m256 bias,
               int64_t od, int64_t oh, int64_t ow0, __m256i idx, const float* z, float* y, int64_t valid,
               const Op& op) {
  switch (v) {
    case 1: dw_rows<S, 1, R>(g, d, buf, w, bias, od, oh, ow0, idx, z, y, valid, op); break;
    case 2: dw_rows<S, 2, R>(g, d, buf, w, bias, od, oh, ow0, idx, z, y, valid, op); break;
    case 3: dw_rows<S, 3, R>(g, d, buf, w, bias, od, oh, ow0, idx, z, y, valid, op); break;
    case 4: dw_rows<S, 4, R>(g, d, buf, w, bias, od, oh, ow0, idx, z, y, valid, op); break;
    case 5: dw_rows<S, 5, R>(g, d, buf, w, bias, od, oh, ow0, idx, z, y, valid, op); break;
    default: dw_rows<S, 6, R>(g, d, buf, w, bias, od, oh, ow0, idx, z, y, valid, op); break;
  }
}

template <int S, typename Op>
void dw_plane(const ConvGeom& g, const PaddedDims& d, const float* buf, const float* w, float b, const float* z,
              float* y, const Op& op) {
  const __m256 bias = _mm256_set1_ps(b);
  const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                         _mm256_set1_epi32(static_cast<int>(g.sw)));
  // Column chunks of at most 6 vectors, as even as possible.
  const int64_t vecs = (g.ow + 7) / 8;
  const int64_t chunks = (vecs + 5) / 6;
  const int64_t per_chunk = (vecs + chunks - 1) / chunks;
  const bool pairs = g.sh == 1 && g.dh == 1;
  for (int64_t od = 0; od < g.od; ++od)
    for (int64_t oh = 0; oh < g.oh;) {
      const bool two = pairs && oh + 1 < g.oh;
      for (int64_t v0 = 0; v0 < vecs; v0 += per_chunk) {
        const int v = static_cast<int>(std::min(per_chunk, vecs - v0));
        const int64_t ow0 = v0 * 8;
        const int64_t valid = std::min<int64_t>(8, g.ow - (ow0 + (v - 1) * 8));
        if (two) dw_rows_v<S, 2>(v, g, d, buf, w, bias, od, oh, ow0, idx, z, y, valid, op);
        else dw_rows_v<S, 1>(v, g, d, buf, w, bias, od, oh, ow0, idx, z, y, valid, op);
      }
      oh += two ? 2 : 1;
    }
}

}  // namespace

size_t depthwise_scratch_bytes(const ConvGeom& g, int threads) {
  return static_cast<size_t>(threads) * round_up(padded_dims(g).floats() * sizeof(float), 64) + 64;
}

void depthwise_avx2(ThreadPool& pool, const ConvGeom& g, const float* x, const float* w, const float* b,
                    const float* z, const Activation& act, float* y, void* scratch) {
  const PaddedDims d = padded_dims(g);
  const size_t per_thread = round_up(d.floats() * sizeof(float), 64);
  const int64_t planes = g.batch * g.cout, in_plane = g.in_plane(), out_plane = g.out_plane();
  const int64_t ks = g.ksize();
  // Planes are claimed as AffineTasks: each thread takes its own range from
  // its own cache line (one shared counter cost a round trip between the
  // cores per plane, ~100 ns: most of the time of a 960-channel 7x7 layer).
  const int threads = pool.num_threads();
  AffineTasks tasks(planes, threads);
  auto worker = [&](int tid, int) {
    float* buf = reinterpret_cast<float*>(static_cast<char*>(scratch) + tid * per_thread);
    std::memset(buf, 0, d.floats() * sizeof(float));
    with_act(act, [&](const auto& op) {
      for (int64_t p = tasks.claim(tid); p >= 0; p = tasks.claim(tid)) {
        const int64_t c = p % g.cout;
        pad_plane(g, d, x + p * in_plane, buf);
        const float* zp = z ? z + p * out_plane : nullptr;  // dw_plane indexes the whole plane
        const float bias = b ? b[c] : 0.f;
        if (g.sw == 1) dw_plane<1>(g, d, buf, w + c * ks, bias, zp, y + p * out_plane, op);
        else if (g.sw == 2) dw_plane<2>(g, d, buf, w + c * ks, bias, zp, y + p * out_plane, op);
        else dw_plane<0>(g, d, buf, w + c * ks, bias, zp, y + p * out_plane, op);
      }
    });
  };
  if (planes == 1 || threads == 1) {
    worker(0, 1);
  } else {
    pool.run_any(by_ref(worker));
  }
}

}  // namespace conv_gemm
}  // namespace engine
