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
// Images go in groups (below); a group's work is cut into one unit per
// thread, and each unit runs the whole pipeline on its own buffers:
//  1. input transform: per input channel, the unit's input rows are copied
//     into a zero-padded plane (pads cost nothing after that), 8 tiles at a
//     time are read as even/odd columns of two 16-float loads per row, and
//     the 16 V_i values go to line buffers, then into the unit's packed B
//     panels;
//  2. the 16 GEMMs on the packed SGEMM, one thread (U_i pre-packed in
//     create()), into the unit's M_i;
//  3. output transform, per output channel, 8 tiles at a time, with bias,
//     residual and activation applied before the only store of Y.
// A unit is a run of tile rows (all output channels) where the group has
// >= kUnitColumns tiles per unit, else a run of output channels (all
// tiles; each such unit transforms the whole input, which is the unit's
// extra work: with 16-64 channels the transforms cost about as much as the
// GEMMs, so on 2 threads a channel split speeds a small conv up far less
// than a row split does). Either way no data passes between threads inside a conv,
// and a thread's tile rows are the image rows it wrote in the layer before:
// where the cores do not share a cache, the three passes handing their data
// from thread to thread (each split its own way) made a 3x3 conv at batch 1
// barely faster on 2 threads than on 1.
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
// im2col GEMM); pass 3 runs after every unit's pass 1 and skips it.
#include <atomic>
#include <cstring>

#include "cpu/kernels/conv_gemm/activation_avx2.h"
#include "cpu/kernels/conv_gemm/conv_gemm.h"
#include "cpu/kernels/conv_gemm/sgemm_tiles_avx2.h"

namespace engine {
namespace conv_gemm {
namespace {

constexpr int64_t kGroupColumns = 192;
// 32 tiles (one 32-column SGEMM block) per unit. Measured on 2 threads
// (Zen 4, alternating A/B against 128, which split 16x16 and 28x28 planes by
// channels at batch 1): CIFAR ResNet-110 (32x32 input) 0.92x at batch 1 and
// 0.81x at batch 8, DenseNet-121 0.92x / 0.97x, ResNet-18 1.00x / 0.96x,
// ResNet-50 b1 1.00x; 16 (8x8 planes split 2 tile rows a unit) 1.04-1.05x.
// Not kept either (CIFAR ResNet-110, 2 threads): more units than threads, 2
// or 4 a thread, 1.03x / 1.09x slower alone and no faster beside a process
// spinning on one of the two cores (1.01x / 1.05x); pass 3 in the same
// parallel region as passes 1-2 where y is not the residual's buffer, 0.99-1.00x.
constexpr int64_t kUnitColumns = 32;

struct WinoDims {
  int64_t th, tw, t;     // tiles per image (rows, columns, total)
  int64_t group;         // images per group (GEMM columns: group * t)
  int64_t rows, pitch;   // zero-padded input plane
  int64_t line;          // floats per line buffer
};

size_t align64(size_t bytes) { return (bytes + 63) / 64 * 64; }

WinoDims wino_dims(const ConvGeom& g) {
  WinoDims d;
  d.th = (g.oh + 1) / 2;
  d.tw = (g.ow + 1) / 2;
  d.t = d.th * d.tw;
  d.group = std::max<int64_t>(1, std::min(g.batch, kGroupColumns / d.t));
  // Tile (ty, tx) reads padded rows 2ty..2ty+3; a chunk of 8 tiles from tx0
  // reads padded columns 2tx0 .. 2tx0+17.
  d.rows = 2 * d.th + 2;
  d.pitch = round_up(2 * d.tw + 16, 8);
  d.line = round_up(d.t, kNR) + 16;
  return d;
}

// One unit of a group of `images` images: tile rows [r0, r1) of the group
// (row r is tile row r % th of image r / th) for output channels [m0, m1).
struct WinoUnit {
  int64_t r0, r1, m0, m1;
};

// The units of a group: at most `threads`, by tile rows or by channels.
// (Small convs are split too: a floor of 2M multiply-adds per unit, which
// kept CIFAR-size layers on one thread, helped only where the cores do not
// share a cache and cost 30-45% where they do.)
int64_t wino_units(const ConvGeom& g, const WinoDims& d, int64_t images, int threads, WinoUnit* out) {
  const int64_t rows = images * d.th;
  if (images * d.t >= kUnitColumns * threads || threads == 1) {
    const int64_t n = std::min<int64_t>(threads, rows);
    for (int64_t u = 0; u < n; ++u) out[u] = {rows * u / n, rows * (u + 1) / n, 0, g.cout};
    return n;
  }
  const int64_t panels = (g.cout + kMR - 1) / kMR, n = std::min<int64_t>(threads, panels);
  for (int64_t u = 0; u < n; ++u)
    out[u] = {0, rows, panels * u / n * kMR, std::min(g.cout, panels * (u + 1) / n * kMR)};
  return n;
}

// A unit's buffers: the padded plane and 16 lines, V_i (packed B, Cin rows,
// the unit's columns), M_i (m1 - m0 rows of the unit's columns, slack for
// 8-tile reads past the last), the one-thread SGEMM's scratch.
struct UnitLayout {
  int64_t cols, npad, v_stride, m_stride;
  size_t plane_off, v_off, m_off, gemm_off, bytes;
};

GemmSpec wino_spec(const ConvGeom& g, const WinoUnit& u, int64_t cols) {
  GemmSpec s;
  s.m = u.m1 - u.m0;
  s.n = cols;
  s.k = g.cin;
  s.items = 16;
  s.a_packed = true;
  s.a_row0 = u.m0;
  s.a_rows = g.cout;
  s.b_packed = true;
  s.ldc = s.n;
  return s;
}

UnitLayout unit_layout(const ConvGeom& g, const WinoDims& d, const WinoUnit& u) {
  UnitLayout l;
  l.cols = (u.r1 - u.r0) * d.tw;
  l.npad = round_up(l.cols, kNR);
  l.v_stride = packed_b_size(g.cin, l.cols);
  l.m_stride = (u.m1 - u.m0) * l.cols + 16;
  l.plane_off = 0;
  l.v_off = align64(static_cast<size_t>(d.rows * d.pitch + 16 * d.line) * sizeof(float));
  l.m_off = l.v_off + align64(16 * static_cast<size_t>(l.v_stride) * sizeof(float));
  l.gemm_off = l.m_off + align64(16 * static_cast<size_t>(l.m_stride) * sizeof(float));
  l.bytes = l.gemm_off + align64(sgemm_scratch_bytes(wino_spec(g, u, l.cols), 1));
  return l;
}

// The bytes the largest unit needs, over the full and the last group.
size_t unit_bytes(const ConvGeom& g, const WinoDims& d, int threads) {
  std::vector<WinoUnit> units(static_cast<size_t>(threads));
  size_t most = 0;
  for (int64_t images : {d.group, (g.batch - 1) % d.group + 1}) {
    const int64_t n = wino_units(g, d, images, threads, units.data());
    for (int64_t u = 0; u < n; ++u) most = std::max(most, unit_layout(g, d, units[u]).bytes);
  }
  return most;
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

// Pass 1 for channel c of image j, tile rows [ty0, ty1), into the unit's
// packed B matrices at v (npad columns; these tiles from column col0;
// `pad` more zero columns after them, kept finite for the FMAs). Returns
// false (and skips the transform) when the input rows it reads hold a
// non-finite value.
bool input_transform(const ConvGeom& g, const WinoDims& d, const float* xc, int64_t c, int64_t ty0, int64_t ty1,
                     float* buf, float* lines, float* v, int64_t v_stride, int64_t npad, int64_t col0, int64_t pad) {
  // Input rows of padded rows [2 ty0, 2 ty1 + 2), within the plane.
  const int64_t ih0 = std::max<int64_t>(0, 2 * ty0 - g.ph);
  const int64_t ih1 = std::min({g.ih, d.rows - g.ph, 2 * ty1 + 2 - g.ph});
  if (ih1 > ih0 && any_nonfinite(xc + ih0 * g.iw, (ih1 - ih0) * g.iw)) return false;
  // Interior of the padded plane (its border is zero from the start of the
  // call and never written).
  const int64_t lead = std::min(g.pw, d.pitch);
  const int64_t copy_w = std::max<int64_t>(0, std::min(g.iw, d.pitch - lead));
  for (int64_t ih = ih0; ih < ih1; ++ih)
    std::memcpy(buf + (ih + g.ph) * d.pitch + lead, xc + ih * g.iw, copy_w * sizeof(float));

  for (int64_t ty = ty0; ty < ty1; ++ty) {
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
      float* out = lines + (ty - ty0) * d.tw + tx0;
      for (int nu = 0; nu < 4; ++nu) {
        _mm256_storeu_ps(out + (0 * 4 + nu) * d.line, _mm256_sub_ps(e[0][nu], e[2][nu]));
        _mm256_storeu_ps(out + (1 * 4 + nu) * d.line, _mm256_add_ps(e[1][nu], e[2][nu]));
        _mm256_storeu_ps(out + (2 * 4 + nu) * d.line, _mm256_sub_ps(e[2][nu], e[1][nu]));
        _mm256_storeu_ps(out + (3 * 4 + nu) * d.line, _mm256_sub_ps(e[1][nu], e[3][nu]));
      }
    }
  }
  // Lines -> packed panels (npad columns per k row).
  const int64_t kc_max = gemm_kc(g.cin);
  const int64_t k0 = c / kc_max * kc_max, kc = std::min(kc_max, g.cin - k0);
  const int64_t count = (ty1 - ty0) * d.tw;
  for (int i = 0; i < 16; ++i) {
    float* line = lines + i * d.line;
    float* row = v + i * v_stride + k0 * npad + (c - k0) * kNR;
    for (int64_t e = count; e < count + pad; ++e) line[e] = 0.f;
    put_run(row, kc, col0, line, count + pad);
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

// Pass 3 for output channel m of image j, tile rows [ty0, ty1): tile (ty, tx)
// of M_i at src + i * m_stride + (ty - ty0) * tw + tx.
template <typename Op>
void output_transform(const ConvGeom& g, const WinoDims& d, const float* src, int64_t m_stride, int64_t ty0,
                      int64_t ty1, float bias_v, const float* z, float* y, const Op& op) {
  const __m256 bias = _mm256_set1_ps(bias_v);
  for (int64_t ty = ty0; ty < ty1; ++ty) {
    const int64_t oy = 2 * ty;
    float* y0 = y + oy * g.ow;
    const float* z0 = z ? z + oy * g.ow : nullptr;
    const bool second = oy + 1 < g.oh;
    for (int64_t tx0 = 0; tx0 < d.tw; tx0 += 8) {
      const float* t0 = src + (ty - ty0) * d.tw + tx0;
      __m256 s0[4], s1[4];
      for (int nu = 0; nu < 4; ++nu) {
        const __m256 m0 = _mm256_loadu_ps(t0 + (0 * 4 + nu) * m_stride);
        const __m256 m1 = _mm256_loadu_ps(t0 + (1 * 4 + nu) * m_stride);
        const __m256 m2 = _mm256_loadu_ps(t0 + (2 * 4 + nu) * m_stride);
        const __m256 m3 = _mm256_loadu_ps(t0 + (3 * 4 + nu) * m_stride);
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

// Runs fn(unit) for every unit; parallel_for's AffineTasks give thread t
// unit t first.
template <typename F>
void for_units(ThreadPool& pool, int64_t n, const F& fn) {
  auto body = [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) fn(u);
  };
  pool.parallel_for(n, by_ref(body));
}

// Calls fn(j, ty0, ty1, col) for the tile-row runs of unit u, image by
// image: tile rows [ty0, ty1) of image j are the unit's columns from col.
template <typename F>
void for_segments(const WinoDims& d, const WinoUnit& u, const F& fn) {
  for (int64_t r = u.r0; r < u.r1;) {
    const int64_t j = r / d.th, ty0 = r % d.th, ty1 = std::min(d.th, ty0 + (u.r1 - r));
    fn(j, ty0, ty1, (r - u.r0) * d.tw);
    r += ty1 - ty0;
  }
}

// Pass 3 for a unit whose M_i are at mbuf: its output channels over its
// tile rows, skipping images with a non-finite input (the fallback's).
template <typename Op>
void output_unit(const ConvGeom& g, const WinoDims& d, const WinoUnit& un, const UnitLayout& l, const float* mbuf,
                 int64_t n0, const std::atomic<bool>* nonfinite, const float* b, const float* z, float* y,
                 const Op& op) {
  const int64_t out_plane = g.out_plane();
  for_segments(d, un, [&](int64_t j, int64_t ty0, int64_t ty1, int64_t col) {
    if (nonfinite[j].load(std::memory_order_relaxed)) return;
    const int64_t n = n0 + j;
    for (int64_t m = un.m0; m < un.m1; ++m)
      output_transform(g, d, mbuf + (m - un.m0) * l.cols + col, l.m_stride, ty0, ty1, b ? b[m] : 0.f,
                       z ? z + (n * g.cout + m) * out_plane : nullptr, y + (n * g.cout + m) * out_plane, op);
  });
}

// A group whose units are runs of output channels (a small plane): pass 1
// is split by input channels, each thread transforming its share of them
// into one V (unit 0's, every unit's columns being the group's), so no
// thread transforms the whole input; then each unit runs its GEMMs on that V
// and its output transform. The input transform of 16-64 channels costs
// about as much as the GEMMs, which is what made every unit transforming
// all of it slow (measured: CIFAR ResNet-110's 8x8 stage).
void by_channels(ThreadPool& pool, const ConvGeom& g, const WinoDims& d, const float* x, const float* u,
                 const float* b, const float* z, const Activation& act, float* y, int64_t n0, int64_t images,
                 const WinoUnit* units, int64_t nunits, char* base, size_t per_unit, SgemmFn gemm,
                 std::atomic<bool>* nonfinite, WinogradFallback fallback, const void* fallback_ctx) {
  static ThreadPool serial(1);
  const int64_t in_plane = g.in_plane();
  const UnitLayout shared = unit_layout(g, d, units[0]);
  auto* v = reinterpret_cast<float*>(base + shared.v_off);
  for_units(pool, nunits, [&](int64_t ui) {
    const UnitLayout l = unit_layout(g, d, units[ui]);
    char* mine = base + ui * per_unit;
    auto* plane = reinterpret_cast<float*>(mine + l.plane_off);
    const int64_t c0 = g.cin * ui / nunits, c1 = g.cin * (ui + 1) / nunits;
    for_segments(d, units[ui], [&](int64_t j, int64_t ty0, int64_t ty1, int64_t col) {
      const int64_t pad = col + (ty1 - ty0) * d.tw == l.cols ? l.npad - l.cols : 0;
      for (int64_t c = c0; c < c1 && !nonfinite[j].load(std::memory_order_relaxed); ++c)
        if (!input_transform(g, d, x + ((n0 + j) * g.cin + c) * in_plane, c, ty0, ty1, plane,
                             plane + d.rows * d.pitch, v, shared.v_stride, shared.npad, col, pad))
          nonfinite[j].store(true, std::memory_order_relaxed);
    });
  });
  for (int64_t j = 0; j < images; ++j)
    if (nonfinite[j].load()) fallback(fallback_ctx, n0 + j);
  const int64_t u_stride = packed_a_size(g.cout, g.cin);
  with_act(act, [&](const auto& op) {
    for_units(pool, nunits, [&](int64_t ui) {
      const WinoUnit& un = units[ui];
      const UnitLayout l = unit_layout(g, d, un);
      char* mine = base + ui * per_unit;
      const WinoItems items{u, u_stride, v, shared.v_stride, reinterpret_cast<float*>(mine + l.m_off), l.m_stride};
      gemm(serial, wino_spec(g, un, l.cols), wino_item, &items, mine + l.gemm_off);
      output_unit(g, d, un, l, reinterpret_cast<const float*>(mine + l.m_off), n0, nonfinite, b, z, y, op);
    });
  });
}

}  // namespace

size_t winograd_scratch_bytes(const ConvGeom& g, int threads) {
  const WinoDims d = wino_dims(g);
  return static_cast<size_t>(std::max(threads, 1)) * align64(unit_bytes(g, d, std::max(threads, 1))) + 64;
}

void winograd_avx2(ThreadPool& pool, const ConvGeom& g, const float* x, const float* u, const float* b,
                   const float* z, const Activation& act, float* y, void* scratch, SgemmFn gemm,
                   WinogradFallback fallback, const void* fallback_ctx) {
  static ThreadPool serial(1);  // each unit's GEMMs run on the thread that owns the unit
  const WinoDims d = wino_dims(g);
  const int threads = pool.num_threads();
  const size_t per_unit = align64(unit_bytes(g, d, threads));
  char* base = static_cast<char*>(scratch);
  for (int t = 0; t < threads; ++t) std::memset(base + t * per_unit, 0, d.rows * d.pitch * sizeof(float));

  const int64_t in_plane = g.in_plane();
  const int64_t u_stride = packed_a_size(g.cout, g.cin);
  std::vector<WinoUnit> units(static_cast<size_t>(threads));
  for (int64_t n0 = 0; n0 < g.batch; n0 += d.group) {
    const int64_t images = std::min(d.group, g.batch - n0);
    const int64_t nunits = wino_units(g, d, images, threads, units.data());
    // Per image of the group: whether its input held an infinity or a NaN.
    std::atomic<bool> nonfinite[kGroupColumns];
    for (int64_t j = 0; j < images; ++j) nonfinite[j].store(false, std::memory_order_relaxed);
    if (nunits > 1 && units[0].m1 < g.cout) {
      by_channels(pool, g, d, x, u, b, z, act, y, n0, images, units.data(), nunits, base, per_unit, gemm, nonfinite,
                  fallback, fallback_ctx);
      continue;
    }
    // Passes 1 and 2, unit by unit.
    for_units(pool, nunits, [&](int64_t ui) {
      const WinoUnit& un = units[ui];
      const UnitLayout l = unit_layout(g, d, un);
      char* mine = base + ui * per_unit;
      auto* plane = reinterpret_cast<float*>(mine + l.plane_off);
      auto* v = reinterpret_cast<float*>(mine + l.v_off);
      for_segments(d, un, [&](int64_t j, int64_t ty0, int64_t ty1, int64_t col) {
        const int64_t pad = col + (ty1 - ty0) * d.tw == l.cols ? l.npad - l.cols : 0;
        for (int64_t c = 0; c < g.cin && !nonfinite[j].load(std::memory_order_relaxed); ++c)
          if (!input_transform(g, d, x + ((n0 + j) * g.cin + c) * in_plane, c, ty0, ty1, plane,
                               plane + d.rows * d.pitch, v, l.v_stride, l.npad, col, pad))
            nonfinite[j].store(true, std::memory_order_relaxed);
      });
      // The GEMMs also run over the columns of an image with a non-finite
      // input; those results are never read.
      const WinoItems items{u, u_stride, v, l.v_stride, reinterpret_cast<float*>(mine + l.m_off), l.m_stride};
      gemm(serial, wino_spec(g, un, l.cols), wino_item, &items, mine + l.gemm_off);
    });
    for (int64_t j = 0; j < images; ++j)
      if (nonfinite[j].load()) fallback(fallback_ctx, n0 + j);
    // Pass 3, unit by unit (the same thread as its passes 1 and 2, mostly).
    with_act(act, [&](const auto& op) {
      for_units(pool, nunits, [&](int64_t ui) {
        const WinoUnit& un = units[ui];
        const UnitLayout l = unit_layout(g, d, un);
        output_unit(g, d, un, l, reinterpret_cast<const float*>(base + ui * per_unit + l.m_off), n0, nonfinite, b,
                    z, y, op);
      });
    });
  }
}

}  // namespace conv_gemm
}  // namespace engine
