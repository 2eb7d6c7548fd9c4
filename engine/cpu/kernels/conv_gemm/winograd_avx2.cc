// Winograd F(2x2, 3x3) convolution, AVX2 (3x3 kernel, unit strides and
// dilations, one group, any pads). Each 2x2 output tile is
//   Y = A^T [ sum_c U_c (.) (B^T d_c B) ] A,   U = G g G^T (4x4 per (m, c)),
// so with the 16 positions i of the 4x4 transform as separate matrices,
//   M_i[m, t] = sum_c U_i[m, c] V_i[c, t]      (16 GEMMs, t = tile)
// costs 16 multiplies per 4 outputs instead of 36: 2.25x fewer FLOPs than
// the im2col GEMM. F(2x2, 3x3) transforms only add, subtract and halve, so
// the result is as accurate as direct convolution (larger tiles, F(4x4,
// 3x3), would save more but lose about two digits).
//
// Per group of images, three parallel passes:
//  1. input transform, per (image, channel): the plane is copied into a
//     zero-padded buffer (pads cost nothing after that), 8 tiles at a time
//     are read as even/odd columns of two 16-float loads per row, and the 16
//     V_i values go to line buffers that are then copied into packed B
//     panels, the group's images side by side (image j's tiles are columns
//     [j*T, j*T + T) of the GEMMs);
//  2. the 16 GEMMs on the packed SGEMM (U_i pre-packed in create(), V_i
//     pre-packed by pass 1), into M_i;
//  3. output transform, per (image, output channel), 8 tiles at a time, with
//     bias, residual and activation applied before the only store of Y.
// A group holds as many images as keep the GEMMs near kGroupColumns
// columns: small planes (14x14 -> 49 tiles, 7x7 -> 16) would otherwise give
// GEMMs too narrow to fill the tiles, and every image would stream all of
// U_i (16 x Cout x Cin floats, 16 MB for 512 channels) from memory again.
// Measured at batch 8 on one thread (Zen 4): 7x7 outputs, 512 channels 13%
// less CPU time, 14x14 x 256 5% less; groups past ~192 columns made 28x28
// planes slower (bigger V_i and M_i buffers), so those stay one image each.
// IEEE: the transforms subtract inputs, so an infinite input would turn
// into inf - inf = NaN where direct convolution gives +-inf (onnxruntime's
// result). Pass 1 therefore notes any non-finite input (x * 0 is NaN
// exactly for +-inf and NaN, one FMA per input vector while the plane is
// copied), and such an image goes to the caller's fallback (the direct
// im2col GEMM) before any of its output is written.
#include <atomic>
#include <cstring>

#include "cpu/kernels/conv_gemm/activation_avx2.h"
#include "cpu/kernels/conv_gemm/conv_gemm.h"
#include "cpu/kernels/conv_gemm/sgemm_tiles_avx2.h"

namespace engine {
namespace conv_gemm {
namespace {

constexpr int64_t kGroupColumns = 192;

struct WinoDims {
  int64_t th, tw, t, tpad;  // tiles per image (rows, columns, total, padded to kNR)
  int64_t group;            // images per group (GEMM columns: group * t)
  int64_t rows, pitch;      // zero-padded input plane
  int64_t line;             // floats per line buffer
  int64_t v_stride;         // floats per packed V_i (a full group)
  int64_t m_stride;         // floats per M_i (row stride: the group's columns, slack for 8-tile reads)
  size_t per_thread;        // bytes: padded plane + 16 lines
};

size_t align64(size_t bytes) { return (bytes + 63) / 64 * 64; }

WinoDims wino_dims(const ConvGeom& g) {
  WinoDims d;
  d.th = (g.oh + 1) / 2;
  d.tw = (g.ow + 1) / 2;
  d.t = d.th * d.tw;
  d.tpad = round_up(d.t, kNR);
  d.group = std::max<int64_t>(1, std::min(g.batch, kGroupColumns / d.t));
  // Tile (ty, tx) reads padded rows 2ty..2ty+3; a chunk of 8 tiles from tx0
  // reads padded columns 2tx0 .. 2tx0+17.
  d.rows = 2 * d.th + 2;
  d.pitch = round_up(2 * d.tw + 16, 8);
  d.line = d.tpad + 16;
  d.v_stride = packed_b_size(g.cin, d.group * d.t);
  d.m_stride = g.cout * d.group * d.t + 16;
  d.per_thread = align64(static_cast<size_t>(d.rows * d.pitch + 16 * d.line) * sizeof(float));
  return d;
}

// The GEMMs of a group of `images` images.
GemmSpec wino_spec(const ConvGeom& g, const WinoDims& d, int64_t images) {
  GemmSpec s;
  s.m = g.cout;
  s.n = images * d.t;
  s.k = g.cin;
  s.items = 16;
  s.a_packed = true;
  s.b_packed = true;
  s.ldc = s.n;
  return s;
}

struct WinoItems {
  const float* u;
  int64_t u_stride;
  const float* v;
  int64_t v_stride;
  float* m;
  int64_t m_stride;
};

GemmItem wino_item(const void* ctx, int64_t i) {
  const auto& w = *static_cast<const WinoItems*>(ctx);
  GemmItem it;
  it.a = w.u + i * w.u_stride;
  it.b = w.v + i * w.v_stride;
  it.c = w.m + i * w.m_stride;
  return it;
}

// Even and odd elements of the 16 floats at p.
inline void load_pair(const float* p, __m256* even, __m256* odd) {
  const __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
  *even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8));
  *odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)), 0xD8));
}

// Whether x[0, n) holds an infinity or a NaN.
bool any_nonfinite(const float* x, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  const __m256 zero = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), zero, acc);
  float t = 0.f;
  for (; i < n; ++i) t += x[i] * 0.f;
  return _mm256_movemask_ps(_mm256_cmp_ps(acc, acc, _CMP_UNORD_Q)) != 0 || t != t;
}

// Pass 1 for channel c of image j of a group of `images`: V_i[c, j*t ..]
// into the packed B matrices at v (the last image also zeroes the columns
// past the group's end in the last panel: never stored, but kept finite for
// the FMAs). Returns false (and skips the transform) when the plane holds a
// non-finite value.
bool input_transform(const ConvGeom& g, const WinoDims& d, const float* xc, int64_t c, int64_t j, int64_t images,
                     float* buf, float* lines, float* v) {
  if (any_nonfinite(xc, g.ih * g.iw)) return false;
  // Interior of the padded plane (its border is zero from the start of the
  // call and never written).
  const int64_t lead = std::min(g.pw, d.pitch);
  const int64_t copy_w = std::max<int64_t>(0, std::min(g.iw, d.pitch - lead));
  const int64_t ih_end = std::min(g.ih, d.rows - g.ph);
  for (int64_t ih = 0; ih < ih_end; ++ih)
    std::memcpy(buf + (ih + g.ph) * d.pitch + lead, xc + ih * g.iw, copy_w * sizeof(float));

  for (int64_t ty = 0; ty < d.th; ++ty) {
    const float* row = buf + 2 * ty * d.pitch;
    for (int64_t tx0 = 0; tx0 < d.tw; tx0 += 8) {
      // e[r][nu] = (d_r B)[nu] for input row r: d0-d2, d1+d2, d2-d1, d1-d3.
      __m256 e[4][4];
      for (int r = 0; r < 4; ++r) {
        __m256 d0, d1, d2, d3;
        load_pair(row + r * d.pitch + 2 * tx0, &d0, &d1);
        load_pair(row + r * d.pitch + 2 * tx0 + 2, &d2, &d3);
        e[r][0] = _mm256_sub_ps(d0, d2);
        e[r][1] = _mm256_add_ps(d1, d2);
        e[r][2] = _mm256_sub_ps(d2, d1);
        e[r][3] = _mm256_sub_ps(d1, d3);
      }
      float* out = lines + ty * d.tw + tx0;
      for (int nu = 0; nu < 4; ++nu) {
        _mm256_storeu_ps(out + (0 * 4 + nu) * d.line, _mm256_sub_ps(e[0][nu], e[2][nu]));
        _mm256_storeu_ps(out + (1 * 4 + nu) * d.line, _mm256_add_ps(e[1][nu], e[2][nu]));
        _mm256_storeu_ps(out + (2 * 4 + nu) * d.line, _mm256_sub_ps(e[2][nu], e[1][nu]));
        _mm256_storeu_ps(out + (3 * 4 + nu) * d.line, _mm256_sub_ps(e[1][nu], e[3][nu]));
      }
    }
  }
  // Lines -> packed panels (the group's layout: npad columns per k row).
  const int64_t kc_max = gemm_kc(g.cin);
  const int64_t k0 = c / kc_max * kc_max, kc = std::min(kc_max, g.cin - k0);
  const int64_t cols = images * d.t, npad = round_up(cols, kNR);
  const bool last = j == images - 1;
  for (int i = 0; i < 16; ++i) {
    float* line = lines + i * d.line;
    float* row = v + i * d.v_stride + k0 * npad + (c - k0) * kNR;
    if (last)
      for (int64_t e = d.t; e < d.t + (npad - cols); ++e) line[e] = 0.f;
    put_run(row, kc, j * d.t, line, d.t + (last ? npad - cols : 0));
  }
  return true;
}

// 16 outputs of one row (two interleaved tile columns), count of them valid.
template <typename Op>
inline void store_row(float* y, const float* z, __m256 lo, __m256 hi, __m256 bias, int64_t count, const Op& op) {
  __m256 v0 = _mm256_add_ps(_mm256_permute2f128_ps(lo, hi, 0x20), bias);
  __m256 v1 = _mm256_add_ps(_mm256_permute2f128_ps(lo, hi, 0x31), bias);
  if (count == 16) {
    if (z) {
      v0 = _mm256_add_ps(v0, _mm256_loadu_ps(z));
      v1 = _mm256_add_ps(v1, _mm256_loadu_ps(z + 8));
    }
    _mm256_storeu_ps(y, op(v0));
    _mm256_storeu_ps(y + 8, op(v1));
    return;
  }
  if (z) {
    v0 = _mm256_add_ps(v0, _mm256_maskload_ps(z, tail_mask(static_cast<int>(std::min<int64_t>(count, 8)))));
    if (count > 8) v1 = _mm256_add_ps(v1, _mm256_maskload_ps(z + 8, tail_mask(static_cast<int>(count - 8))));
  }
  alignas(32) float tmp[16];
  _mm256_store_ps(tmp, op(v0));
  _mm256_store_ps(tmp + 8, op(v1));
  for (int64_t e = 0; e < count; ++e) y[e] = tmp[e];
}

// Pass 3 for output channel m of image j of the group (M_i rows of ldm
// floats, image j's tiles from column j*t).
template <typename Op>
void output_transform(const ConvGeom& g, const WinoDims& d, const float* mbuf, int64_t ldm, int64_t j, int64_t m,
                      float bias_v, const float* z, float* y, const Op& op) {
  const __m256 bias = _mm256_set1_ps(bias_v);
  const int64_t plane = g.oh * g.ow;
  for (int64_t ty = 0; ty < d.th; ++ty) {
    const int64_t oy = 2 * ty;
    float* y0 = y + m * plane + oy * g.ow;
    const float* z0 = z ? z + m * plane + oy * g.ow : nullptr;
    const bool second = oy + 1 < g.oh;
    for (int64_t tx0 = 0; tx0 < d.tw; tx0 += 8) {
      const float* src = mbuf + m * ldm + j * d.t + ty * d.tw + tx0;
      __m256 s0[4], s1[4];
      for (int nu = 0; nu < 4; ++nu) {
        const __m256 m0 = _mm256_loadu_ps(src + (0 * 4 + nu) * d.m_stride);
        const __m256 m1 = _mm256_loadu_ps(src + (1 * 4 + nu) * d.m_stride);
        const __m256 m2 = _mm256_loadu_ps(src + (2 * 4 + nu) * d.m_stride);
        const __m256 m3 = _mm256_loadu_ps(src + (3 * 4 + nu) * d.m_stride);
        s0[nu] = _mm256_add_ps(_mm256_add_ps(m0, m1), m2);
        s1[nu] = _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3);
      }
      const __m256 y00 = _mm256_add_ps(_mm256_add_ps(s0[0], s0[1]), s0[2]);
      const __m256 y01 = _mm256_sub_ps(_mm256_sub_ps(s0[1], s0[2]), s0[3]);
      const int64_t ox = 2 * tx0, count = std::min<int64_t>(16, g.ow - ox);
      store_row(y0 + ox, z0 ? z0 + ox : nullptr, _mm256_unpacklo_ps(y00, y01), _mm256_unpackhi_ps(y00, y01), bias,
                count, op);
      if (second) {
        const __m256 y10 = _mm256_add_ps(_mm256_add_ps(s1[0], s1[1]), s1[2]);
        const __m256 y11 = _mm256_sub_ps(_mm256_sub_ps(s1[1], s1[2]), s1[3]);
        store_row(y0 + g.ow + ox, z0 ? z0 + g.ow + ox : nullptr, _mm256_unpacklo_ps(y10, y11),
                  _mm256_unpackhi_ps(y10, y11), bias, count, op);
      }
    }
  }
}

// Runs fn(index) for index in [0, n) on the pool, dynamically.
template <typename F>
void parallel_dynamic(ThreadPool& pool, int64_t n, const F& fn) {
  std::atomic<int64_t> next{0};
  auto worker = [&](int tid, int) {
    for (;;) {
      const int64_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= n) break;
      fn(tid, i);
    }
  };
  if (n <= 1 || pool.num_threads() == 1) {
    worker(0, 1);
  } else {
    const auto* w = &worker;  // one-pointer capture: no std::function allocation
    pool.run_any([w](int tid, int nt) { (*w)(tid, nt); });
  }
}

}  // namespace

size_t winograd_scratch_bytes(const ConvGeom& g, int threads) {
  const WinoDims d = wino_dims(g);
  return align64(16 * static_cast<size_t>(d.v_stride) * sizeof(float)) +
         align64(16 * static_cast<size_t>(d.m_stride) * sizeof(float)) +
         sgemm_scratch_bytes(wino_spec(g, d, d.group), threads) +
         static_cast<size_t>(threads) * d.per_thread + 64;
}

void winograd_avx2(ThreadPool& pool, const ConvGeom& g, const float* x, const float* u, const float* b,
                   const float* z, const Activation& act, float* y, void* scratch, SgemmFn gemm,
                   WinogradFallback fallback, const void* fallback_ctx) {
  const WinoDims d = wino_dims(g);
  const int threads = pool.num_threads();
  char* p = static_cast<char*>(scratch);
  float* v = reinterpret_cast<float*>(p);
  p += align64(16 * static_cast<size_t>(d.v_stride) * sizeof(float));
  float* mbuf = reinterpret_cast<float*>(p);
  p += align64(16 * static_cast<size_t>(d.m_stride) * sizeof(float));
  void* gemm_scratch = p;
  p += sgemm_scratch_bytes(wino_spec(g, d, d.group), threads);
  char* thread_bufs = p;
  for (int t = 0; t < threads; ++t) std::memset(thread_bufs + t * d.per_thread, 0, d.rows * d.pitch * sizeof(float));

  const int64_t in_plane = g.in_plane(), out_plane = g.out_plane();
  const WinoItems items{u, packed_a_size(g.cout, g.cin), v, d.v_stride, mbuf, d.m_stride};
  for (int64_t n0 = 0; n0 < g.batch; n0 += d.group) {
    const int64_t images = std::min(d.group, g.batch - n0);
    const GemmSpec spec = wino_spec(g, d, images);
    // Per image of the group: whether a plane held an infinity or a NaN.
    std::atomic<bool> nonfinite[kGroupColumns];
    for (int64_t j = 0; j < images; ++j) nonfinite[j].store(false, std::memory_order_relaxed);
    parallel_dynamic(pool, images * g.cin, [&](int tid, int64_t task) {
      const int64_t j = task / g.cin, c = task % g.cin;
      if (nonfinite[j].load(std::memory_order_relaxed)) return;
      float* buf = reinterpret_cast<float*>(thread_bufs + tid * d.per_thread);
      if (!input_transform(g, d, x + ((n0 + j) * g.cin + c) * in_plane, c, j, images, buf, buf + d.rows * d.pitch,
                           v))
        nonfinite[j].store(true, std::memory_order_relaxed);
    });
    // Images with a non-finite input take the fallback; the GEMMs still run
    // over their (unfinished) columns, whose results are never read.
    int64_t finite = 0;
    for (int64_t j = 0; j < images; ++j) {
      if (nonfinite[j].load()) fallback(fallback_ctx, n0 + j);
      else ++finite;
    }
    if (finite == 0) continue;
    gemm(pool, spec, wino_item, &items, gemm_scratch);
    with_act(act, [&](const auto& op) {
      parallel_dynamic(pool, images * g.cout, [&](int, int64_t task) {
        const int64_t j = task / g.cout, m = task % g.cout;
        if (nonfinite[j].load(std::memory_order_relaxed)) return;
        const int64_t n = n0 + j;
        output_transform(g, d, mbuf, spec.ldc, j, m, b ? b[m] : 0.f, z ? z + n * g.cout * out_plane : nullptr,
                         y + n * g.cout * out_plane, op);
      });
    });
  }
}

}  // namespace conv_gemm
}  // namespace engine
