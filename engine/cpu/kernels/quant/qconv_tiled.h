// The task structure shared by the ISA int8 conv files (qconv_avx2.cc,
// qconv_avx512vnni.cc): im2col, column chunks, threads. Include it only from
// those files: everything here has internal linkage, so each file compiles
// its own copy with its own ISA flags (a shared out-of-line copy could let
// the linker hand AVX-512 code to an AVX2-only CPU).
//
//   C[rows = output channels, columns = output positions] = W[M x K] * im2col(x)[K x P]
// Columns are the batch's merged output positions: column q is position
// q % hw of image q / hw, so small images (7x7) fill whole panels at batch >
// 1; output (image i, channel c, position p) is at (i * m + c) * hw + p.
// The columns are cut into panels of 16 and the panels into chunks (~192 KB
// packed, a chunk stays in L2 while every weight tile walks across it). A
// task is (group, chunk, M split): it packs its chunk's panels into a
// thread-local buffer, kKGroup im2col rows at a time through a small row
// buffer (no separate im2col pass, no barrier between images), then runs the
// micro-kernel over its weight tiles and the fused epilogue. Threads take
// tasks from a shared counter, so on a busy machine a descheduled thread
// holds the others up for one task at most; every output is written by one
// task with exact integer sums, so the bits never depend on the schedule.
//
// Padding: every padded input position (borders, depth padding) holds the
// input's zero point g.x_zp, the int8 value of a real 0 ("zero-bordered"
// below means that). The sums then include x_zp * w for those taps, which
// the caller removes with the -x_zp * sum_k w bias (qconv_kernel.cc). For
// symmetric inputs x_zp is 0 and nothing changes.
//
// A Traits class supplies the ISA part:
//   static constexpr int kMR (weight rows per tile), kKGroup (k rows packed
//   together: 4 for vpdpbusd, 2 for vpmaddwd), kNV (panels per kernel call);
//   const uint8_t* a_tile(grp, mt): packed weights of one tile;
//   void pack_group(const int8_t* const rows[kKGroup], int64_t ncols,
//                   uint8_t* out, int64_t panel_stride): one k group of every
//                   panel of the chunk (64 bytes per panel), panel j at
//                   out + j * panel_stride;
//   void kernel(int nv, int nr, const uint8_t* a, const uint8_t* b,
//               int64_t panel_stride, int64_t groups, int32_t* tile,
//               int64_t c0): tile is [kMR][16 * kNV] int32, of which
//               columns [0, nr) are used; its rows are output channels
//               c0 .. (a tier may start the sums at a per-channel constant
//               that its epilogue then leaves out);
//   void epilogue(const int32_t* tile, int mr, int nr, int64_t c0,
//                 const TileCols<...>& cols): stores the outputs;
//   static constexpr bool kQuads: the tier reads quad planes (4-byte k
//   groups, TiledPlan::quads) when its caller packed the weights for them:
//   then also a_tile_quads(grp, mt) (pack_a_quads' tiles) and
//   kernel_quads(nv, nr, a, b, off, groups, tile, c0) (k group p at b + off[p]);
//   pad_quads interleaves the planes with pack_group.
//   void thread_begin() const, thread_end() const: a thread's first and
//   last acts in one call's tasks (AMX loads its tile configuration and
//   releases the tiles; the other tiers do nothing);
//   static constexpr bool kQuadRows: pad_quads makes the quad-plane rows of
//   strides 1 and 2 with quad_rows(src[4], pl, w, wp, sw, phases, x_zp,
//   dst, phase_stride) (one padded row of a channel quad, every phase)
//   instead of pack_group on a row buffer;
//   static constexpr bool kTapMajorQuads: the quad planes' k groups in
//   (tap, quad) order instead of (quad, tap): then 16 consecutive groups of
//   one tap lie 4 * chan_bytes apart (AMX loads them as one strided tile);
//   static constexpr bool kQuadCols: the tier may run quad columns
//   (TiledPlan::quad_cols: kernel_quads over a task's copy of the quad
//   planes, k groups at any offsets; AMX's tiles want the planes' stride).
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu/kernels/quant/quant_kernels.h"

namespace engine::qk {
namespace {

inline size_t tiled_align64(size_t n) { return (n + 63) / 64 * 64; }

// Fills dst[0, run) with what one kernel tap reads for output positions
// ox0 .. ox0 + run - 1 of one output row: input row iy of `plane` (one
// channel of one image) at columns ox * sw + col_off, g.x_zp (the real 0) in the padding.
// [lo, hi) are the output columns whose input column lies inside the row.
inline void im2col_run(const ConvGeom& g, const int8_t* plane, int64_t iy, int64_t col_off, int64_t lo,
                       int64_t hi, int64_t ox0, int64_t run, int8_t* dst) {
  if (iy < 0 || iy >= g.h) {
    std::memset(dst, g.x_zp, run);
    return;
  }
  const int8_t* src = plane + iy * g.w + col_off;
#if defined(__AVX512BW__)
  if (g.sw == 1) {
    // Masked byte loads read only the valid columns (masked-off lanes do not
    // fault) and fill the padding with zeros in the same store: no call for
    // the short rows of small images.
    for (int64_t o = 0; o < run; o += 64) {
      const int64_t n = std::min<int64_t>(64, run - o), first = ox0 + o;
      const int64_t a = std::max<int64_t>(lo - first, 0), b = std::min<int64_t>(hi - first, n);
      const __mmask64 all = n == 64 ? ~0ull : (1ull << n) - 1;
      __mmask64 valid = 0;
      if (b > a) valid = (b - a == 64 ? ~0ull : ((1ull << (b - a)) - 1)) << a;
      _mm512_mask_storeu_epi8(dst + o, all, _mm512_mask_loadu_epi8(_mm512_set1_epi8(g.x_zp), valid, src + first));
    }
    return;
  }
#endif
  const int64_t vlo = std::min(std::max(lo, ox0), ox0 + run), vhi = std::max(std::min(hi, ox0 + run), vlo);
  std::memset(dst, g.x_zp, vlo - ox0);
  if (g.sw == 1) {
    std::memcpy(dst + (vlo - ox0), src + vlo, vhi - vlo);
  } else if (g.sw == 2) {
    // Every other byte, 16 at a time, while the 32-byte load stays inside
    // this input row (so it never reads past the tensor).
    const __m256i even = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1, 0, 2, 4, 6, 8,
                                          10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1);
    int64_t ox = vlo;
    for (; ox + 16 <= vhi && col_off + 2 * ox + 32 <= g.w; ox += 16) {
      __m256i v = _mm256_shuffle_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 2 * ox)), even);
      v = _mm256_permute4x64_epi64(v, 0x08);  // qwords 0 and 2 -> low 128 bits
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + (ox - ox0)), _mm256_castsi256_si128(v));
    }
    for (; ox < vhi; ++ox) dst[ox - ox0] = src[2 * ox];
  } else {
    for (int64_t ox = vlo; ox < vhi; ++ox) dst[ox - ox0] = src[ox * g.sw];
  }
  std::memset(dst + (vhi - ox0), g.x_zp, ox0 + run - vhi);
}

// im2col rows [kk0, kk1) of merged columns [p0, p1) for one group: row kk =
// (ci, kz, ki, kj) of the group's K rows lands at out + (kk - kk0) * ld.
// Column q is output position (oz, oy, ox) of image q / ohw() (oz = 0 for
// 2-D). Counters step through (ci, kz, ki, kj) and (image, oz, oy, ox): no
// divisions in the loops. A tap whose input frame iz lies in the depth
// padding reads g.x_zp for the whole output row.
inline void im2col_rows(const ConvGeom& g, const int8_t* x, int64_t grp, int64_t p0, int64_t p1, int64_t kk0,
                        int64_t kk1, int8_t* out, int64_t ld) {
  const int64_t hw = g.ohw(), ohw2 = g.oh * g.ow, khw = g.kh * g.kw, taps = g.kd * khw;
  const int64_t img_start = p0 / hw, rem = p0 % hw;
  if (g.is_pointwise()) {
    // Row kk is channel kk's plane of each image the columns span: one copy
    // per image, where the general walk below goes output row by output row
    // (14 pixels at a time on a 14x14 image).
    for (int64_t kk = kk0; kk < kk1; ++kk) {
      const int8_t* plane = x + (img_start * g.c + grp * g.cg() + kk) * hw;
      for (int64_t q = p0, off = rem; q < p1; plane += g.c * hw, off = 0) {
        const int64_t run = std::min(hw - off, p1 - q);
        std::memcpy(out + (kk - kk0) * ld + (q - p0), plane + off, static_cast<size_t>(run));
        q += run;
      }
    }
    return;
  }
  const int64_t oz_start = rem / ohw2, oy_start = (rem % ohw2) / g.ow, ox_start = rem % g.ow;
  int64_t ci = grp * g.cg() + kk0 / taps, kz = (kk0 / khw) % g.kd, ki = (kk0 / g.kw) % g.kh, kj = kk0 % g.kw;
  for (int64_t kk = kk0; kk < kk1; ++kk) {
    const int64_t col_off = kj * g.dw - g.pl;
    // Output columns whose input column ox * sw + col_off is in [0, w).
    int64_t lo = 0, hi = 0;
    if (col_off < 0) lo = std::min<int64_t>(g.ow, (-col_off + g.sw - 1) / g.sw);
    if (g.w - col_off > 0) hi = std::min<int64_t>(g.ow, (g.w - col_off + g.sw - 1) / g.sw);
    hi = std::max(hi, lo);
    int8_t* row = out + (kk - kk0) * ld;
    int64_t img = img_start, oz = oz_start, oy = oy_start, ox0 = ox_start;
    for (int64_t q = p0; q < p1;) {
      const int64_t run = std::min(g.ow - ox0, p1 - q);
      const int64_t iz = oz * g.sd - g.pf + kz * g.dd;
      if (iz < 0 || iz >= g.d) {
        std::memset(row + (q - p0), g.x_zp, static_cast<size_t>(run));
      } else {
        const int8_t* plane = x + ((img * g.c + ci) * g.d + iz) * g.h * g.w;
        im2col_run(g, plane, oy * g.sh - g.pt + ki * g.dh, col_off, lo, hi, ox0, run, row + (q - p0));
      }
      q += run;
      ox0 = 0;
      if (++oy == g.oh) {
        oy = 0;
        if (++oz == g.od) {
          oz = 0;
          ++img;
        }
      }
    }
    if (++kj == g.kw) {
      kj = 0;
      if (++ki == g.kh) {
        ki = 0;
        if (++kz == g.kd) {
          kz = 0;
          ++ci;
        }
      }
    }
  }
}

// A tile's columns [col, col + nr) in groups of W lanes, each group split
// into segments at image boundaries (one segment unless hw is small or the
// group straddles two images). Lane l of segment s in group j stores to
// base[j][s] + c * hw + l for channel c.
template <int W, int G>
struct TileCols {
  int groups = 0;
  int count[G];
  uint32_t mask[G][W];
  int64_t base[G][W];
  int64_t hw = 0;

  void compute(int64_t col, int nr, int64_t out_hw, int64_t m) {
    hw = out_hw;
    groups = (nr + W - 1) / W;
    int64_t img = col / hw;
    if (col + nr <= (img + 1) * hw) {  // one image: one segment per group
      for (int j = 0; j < groups; ++j) {
        const int lanes = std::min(W, nr - j * W);
        count[j] = 1;
        mask[j][0] = lanes == 32 ? ~0u : (1u << lanes) - 1u;
        base[j][0] = img * m * hw + (col + j * W - img * hw);
      }
      return;
    }
    for (int j = 0; j < groups; ++j) {
      const int lanes = std::min(W, nr - j * W);
      const int64_t q0 = col + j * W;
      int n = 0;
      for (int l0 = 0; l0 < lanes; ++n) {
        const int64_t q = q0 + l0;
        while ((img + 1) * hw <= q) ++img;
        const int seg = static_cast<int>(std::min<int64_t>(lanes - l0, (img + 1) * hw - q));
        mask[j][n] = (seg == 32 ? ~0u : (1u << seg) - 1u) << l0;
        base[j][n] = img * m * hw + (q - img * hw) - l0;
        l0 += seg;
      }
      count[j] = n;
    }
  }

  // The padded-row column space (TiledPlan::padded): tile columns q ..
  // q + nr - 1 of one output frame, column q = oy * wp + ox, the frame's
  // first output at frame_base, channels chan_stride apart. Columns with
  // ox >= ow (the row's padding) or oy >= oh are computed but not stored:
  // they get no segment.
  void compute_padded(int64_t q, int nr, int64_t frame_base, int64_t chan_stride, int64_t wp, int64_t ow,
                      int64_t oh) {
    hw = chan_stride;
    groups = (nr + W - 1) / W;
    int64_t oy = q / wp, ox = q % wp;
    for (int j = 0; j < groups; ++j) {
      const int lanes = std::min(W, nr - j * W);
      int n = 0;
      for (int l = 0; l < lanes && oy < oh;) {
        const int run = static_cast<int>(std::min<int64_t>(lanes - l, wp - ox));
        const int valid = static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(run, ow - ox)));
        if (valid > 0) {
          mask[j][n] = (valid == 32 ? ~0u : (1u << valid) - 1u) << l;
          base[j][n] = frame_base + oy * ow + ox - l;
          ++n;
        }
        l += run;
        ox += run;
        if (ox == wp) {
          ox = 0;
          ++oy;
        }
      }
      count[j] = n;
    }
  }
};

// Where a tile's columns go, the same for each of its rows (channel c adds
// c * hw): lane group j (W columns) lies in cols.count[j] segments, usually
// one (a group that crosses images or padded-row ends has several). Lane
// W j + l of a row goes to off[r] + W j + l for the run r whose mask holds
// that lane: consecutive segments that continue one another share a run, so
// a row of one-image columns is one run. (Masked-off lanes never touch
// memory, so the shifted offsets are harmless.)
template <int W, int G>
struct TileRunsOf {
  static_assert(W * G <= 64, "a row's lanes fit one mask");
  int n = 0;
  int64_t off[W * G];
  uint64_t mask[W * G];
  explicit TileRunsOf(const TileCols<W, G>& cols) {
    for (int j = 0; j < cols.groups; ++j)
      for (int s = 0; s < cols.count[j]; ++s) {
        const int64_t o = cols.base[j][s] - W * j;
        if (n == 0 || off[n - 1] != o) {
          off[n] = o;
          mask[n++] = 0;
        }
        mask[n - 1] |= static_cast<uint64_t>(cols.mask[j][s] & ((uint64_t{1} << W) - 1)) << (W * j);
      }
  }
  // Group j's lanes of mask m.
  static uint32_t group(uint64_t m, int j) { return static_cast<uint32_t>(m >> (W * j)) & ((uint64_t{1} << W) - 1); }
  static constexpr uint64_t kAll = W * G == 64 ? ~uint64_t{0} : (uint64_t{1} << (W * G)) - 1;
};

// Calls f(requant, z) with the epilogue's kind as compile-time constants
// (std::bool_constant; z: 0 no residual, 1 float, 2 int8), so the ISA
// files' tile epilogues can be straight-line code for each kind.
template <class F>
void with_epilogue_kind(const Epilogue& e, const F& f) {
  using Z0 = std::integral_constant<int, 0>;
  using Z1 = std::integral_constant<int, 1>;
  using Z2 = std::integral_constant<int, 2>;
  const int z = e.z_f32 ? 1 : e.z_s8 ? 2 : 0;
  if (e.requant) {
    if (z == 0) f(std::true_type{}, Z0{});
    else if (z == 1) f(std::true_type{}, Z1{});
    else f(std::true_type{}, Z2{});
  } else {
    if (z == 0) f(std::false_type{}, Z0{});
    else if (z == 1) f(std::false_type{}, Z1{});
    else f(std::false_type{}, Z2{});
  }
}

// How one call is cut into tasks (see the top of this file).
//
// Convs other than the plain 1x1 may instead run "padded": the input is
// first copied once into zero-bordered phase planes, and each image's
// columns are q = oy * wp + ox, ox < wp. With strides sh x sw, phase (a, b)
// of a channel holds padded pixels (i * sh + a, j * sw + b) as a plane hp x
// wp (hp = oh + (kh-1)*dh / sh, wp = ow + (kw-1)*dw / sw; stride 1 has one
// phase, the zero-bordered input itself). Tap (ki, kj) reads phase
// ((ki*dh) % sh, (kj*dw) % sw) at row oy + (ki*dh) / sh, column ox +
// (kj*dw) / sw, so im2col row (ci, ki, kj) over the columns is one
// contiguous run (tap_off): the pack reads the planes directly, with no
// im2col pass. The wp - ow columns at the end of every row are computed and
// thrown away, so it is used only where that costs less than the im2col
// (see tiled_plan). Panels and chunks then never straddle two images.
// 3-D convs run padded frame by frame: every (image, output frame oz) is one
// column space as above, the planes are made per input frame (d of them per
// channel), and k row (ci, kz, ki, kj) reads frame iz = oz*sd - pf + kz*dd
// of channel ci at tap (ki, kj), or a zero row when iz is in the depth
// padding. When the planes would equal the input (1x1 taps, stride 1 and
// no pads in H and W: a (kt, 1, 1) temporal conv) no copy is made: the pack
// reads the input's frames directly.
constexpr int kMaxPaddedTaps = 64;
struct TiledPlan {
  int64_t p, k, groups, mg, mt_count, nt_count, chunk, chunks, msplit, tasks;
  int64_t panel_bytes, ld;
  bool tail_rides = false;  // merged columns: the last chunk also holds the last panel (<= 4 columns), past `chunk`
  size_t rows_bytes, packed_bytes;
  bool padded = false;
  int64_t hp = 0, wp = 0, p_img = 0, nt_img = 0, cpi = 0;  // padded: plane, columns, panels, chunks per frame
  int64_t frames = 0;                                       // padded: n * od column spaces
  bool direct = false;                                      // padded: the planes are the input itself
  bool subsampled = false;                                  // strided 1x1: merged columns over the (0, 0) phase plane
  int64_t phases = 1, chan_bytes = 0;                       // padded: sh * sw planes per channel, their bytes
  uint64_t used_phases = 0;                                 // padded: bit a * sw + b: a tap reads phase (a, b)
  int64_t tap_off[kMaxPaddedTaps];                          // padded: tap ki * kw + kj's offset in a channel
  size_t pad_bytes = 0;                                     // padded: the shared input copy (+ read slack)
  // Quad planes (T::kQuads, 2-D padded convs with cg % 4 == 0, when the
  // caller has weights packed in (channel quad, tap) k order): the padded
  // copy interleaves 4 channels, [c/4][phases][hp][wp][4] per image, so the
  // 64 bytes of one k group (4 channels at one tap) for 16 consecutive
  // columns are already one panel slot. The kernel reads them there (at
  // quad_off[group] from the chunk's first column): no per-task packing.
  bool quads = false;
  std::vector<int64_t> quad_off;                            // quads, quad_cols: k group p's byte offset
  // Quad columns (T::kQuadCols, where quad planes could be read but the
  // padded rows' thrown-away columns would cost more than a copy): the
  // columns are the merged ones, and each task copies its chunk's columns
  // of every k group out of the quad planes (one run per output row),
  // group p at col_off[p] of its buffer; the kernel reads them there as it
  // reads quad planes. 7x7 outputs at batch 8: 392 columns computed, where
  // the padded rows compute 8 x 64.
  bool quad_cols = false;
  std::vector<int64_t> col_off;                             // quad_cols: k group p's offset in a task's buffer
  size_t workspace(int threads) const {
    return pad_bytes + (rows_bytes + packed_bytes) * static_cast<size_t>(threads);
  }
};

template <class T>
TiledPlan tiled_plan(const ConvGeom& g, int threads, bool quads_ok = false) {
  TiledPlan t;
  threads = std::max(threads, 1);
  t.p = g.n * g.ohw();
  t.k = g.k();
  t.groups = (t.k + T::kKGroup - 1) / T::kKGroup;
  t.mg = g.mg();
  t.mt_count = (t.mg + T::kMR - 1) / T::kMR;
  t.nt_count = (t.p + 15) / 16;
  t.panel_bytes = t.groups * 64;
  // ~192 KB of packed panels per chunk; when the weights outweigh all the
  // panels (deep K, small images) up to 640 KB, so the weights stream past
  // fewer chunks (each chunk reads all of them once).
  int64_t budget = 192 << 10;
  const int64_t all_panels = t.nt_count * t.panel_bytes;
  if (t.mg * t.k * g.group > all_panels) budget = std::max(budget, std::min<int64_t>(all_panels, 640 << 10));
  const int64_t max_chunk = std::max<int64_t>(T::kNV, budget / t.panel_bytes / T::kNV * T::kNV);
  // (A 1x1 conv's im2col is one gather per k row: no taps to share. A
  // strided one with whole quads reads quad planes of its subsampled input
  // all the same: one pass over the input, where the subsampled plane below
  // and the per-task pack make two; the caller's packed weights are then
  // in quad order already, as pointwise_quads says.)
  const bool strided_pointwise = g.kd * g.kh * g.kw == 1 && g.sh * g.sw > 1;
  // Whether the tier can read quad planes here (2-D, whole channel quads).
  const bool quads = T::kQuads && quads_ok && g.d == 1 && g.kd == 1 && g.cg() % 4 == 0;
  if ((g.kd * g.kh * g.kw > 1 || (strided_pointwise && quads)) && g.kh * g.kw <= kMaxPaddedTaps &&
      g.sh * g.sw <= 16) {
    const int64_t wp = g.ow + (g.kw - 1) * g.dw / g.sw, hp = g.oh + (g.kh - 1) * g.dh / g.sh;
    const int64_t nt_img = (g.oh * wp + 15) / 16;
    // Worth it unless the thrown-away columns (and the per-image panel
    // rounding) cost much more than the merged im2col's columns: the im2col
    // costs per output row and k row, so on small images (7x7, 14x14) it
    // outweighs 30% more columns (measured on Zen 4, batch 1 and 8). Costs
    // in 1/16 panels; a last panel of <= 4 columns costs its columns (the
    // ISA kernels' narrow tail), others a whole panel.
    auto cost = [](int64_t cols) {
      const int64_t r = cols % 16;
      return cols / 16 * 16 + (r == 0 ? 0 : r <= 4 ? r : 16);
    };
    const int64_t frames = g.n * g.od;
    // With quad planes the padded rows pack nothing and quad columns copy
    // every k group's runs once per task: 1/16 more than the columns'
    // kernel time, about, where the vpdpbusd per k group and panel number
    // mg (>= 64 in ResNets). Chains of 3x3 convs at batch 8, Zen 4, 2
    // threads, against onnxruntime's u8s8 per layer: 512 channels at 7x7
    // 1.22x -> 0.98x, 256 at 14x14 1.15-1.23x -> 1.06-1.14x, 128 at 28x28
    // 1.13-1.17x -> 1.07-1.14x; at 56x56 (3.4% thrown away) the padded rows
    // stay, as they measured no slower there.
    const bool quad_cols = quads && T::kQuadCols && cost(t.p) * 17 < frames * cost(g.oh * wp) * 16;
    const int64_t merged = cost(t.p) * 3, pad = frames * cost(g.oh * wp) * 2;
    if (pad <= merged || quad_cols) {
      t.padded = !quad_cols;
      t.quad_cols = quad_cols;
      t.wp = wp;
      t.hp = hp;
      t.phases = g.sh * g.sw;
      // (A strided 1x1 reads phase (0, 0) only: the others get no room.)
      t.chan_bytes = (strided_pointwise ? 1 : t.phases) * hp * wp;
      for (int64_t ki = 0; ki < g.kh; ++ki)
        for (int64_t kj = 0; kj < g.kw; ++kj) {
          const int64_t ph = ki * g.dh % g.sh * g.sw + kj * g.dw % g.sw;
          t.used_phases |= uint64_t{1} << ph;
          t.tap_off[ki * g.kw + kj] = (ph * hp + ki * g.dh / g.sh) * wp + kj * g.dw / g.sw;
        }
      if (t.padded) {
        t.frames = frames;
        t.p_img = g.oh * wp;
        t.nt_img = nt_img;
        t.nt_count = frames * nt_img;
        t.cpi = (nt_img + max_chunk - 1) / max_chunk;
        if (t.cpi > 1 && frames % threads != 0) t.cpi = round_up(t.cpi, threads);
        t.chunk = (nt_img + t.cpi - 1) / t.cpi;
        // Whole tiles (kNV panels) where that keeps the chunk count: 17
        // panels run 5 whole tiles and a 2-panel one.
        const int64_t whole = round_up(t.chunk, T::kNV);
        if ((nt_img + whole - 1) / whole == t.cpi) t.chunk = whole;
        t.cpi = (nt_img + t.chunk - 1) / t.chunk;
        t.chunks = frames * t.cpi;
      }
      // (kw == 1: no thrown-away columns, so no read past the last frame.)
      t.direct = t.padded && t.phases == 1 && hp == g.h && wp == g.w && g.pt == 0 && g.pl == 0 && g.kw == 1;
      t.quads = quads && t.padded;
      if (quads) {
        // Group p = quad * taps + tap, or tap * quads + quad for
        // kTapMajorQuads (the weights' k order then).
        const int64_t taps = g.kh * g.kw, nq = g.cg() / 4;
        t.direct = false;
        t.quad_off.resize(static_cast<size_t>(t.groups));
        for (int64_t p = 0; p < t.groups; ++p) {
          const int64_t quad = T::kTapMajorQuads ? p % nq : p / taps, tap = T::kTapMajorQuads ? p / nq : p % taps;
          t.quad_off[p] = (quad * t.chan_bytes + t.tap_off[tap]) * 4;
        }
        // n * c / 4 quads of 4 * chan_bytes. Slack: the last quad's last
        // panels read up to 16 columns past its plane, beyond the widest
        // tap offset (less than a row).
        t.pad_bytes = tiled_align64(static_cast<size_t>(g.n * g.c * t.chan_bytes + 4 * (wp + 64)));
      } else if (!t.direct) {
        t.pad_bytes = tiled_align64(static_cast<size_t>(g.n * g.c * g.d * t.chan_bytes + wp + 64));
      }
    }
  }
  // A strided 2-D 1x1 conv (ResNet's downsampling shortcut) is a pointwise
  // conv on its input's phase (0, 0) plane, the subsampled input: pad_input
  // makes that plane once (x_zp where the pads reach), and the merged
  // columns then pack straight from it as from a pointwise conv's input,
  // where the im2col would gather again for every output row. ResNet-50's
  // at batch 8, 2 threads, Zen 4 (three alternating runs each, a noisy VM):
  // 1024 -> 2048 channels at 14x14 -> 7x7 2.4-4.4 -> 2.5-3.0 ms, 256 -> 512
  // at 56x56 -> 28x28 3.4-4.0 -> 3.0-3.4 ms; batch 1 as the padded planes.
  if (!t.padded && !t.quad_cols && g.kd == 1 && g.d == 1 && g.kh == 1 && g.kw == 1 && g.sh * g.sw > 1 &&
      g.sh * g.sw <= 16) {
    t.subsampled = true;
    t.hp = g.oh;
    t.wp = g.ow;
    t.phases = g.sh * g.sw;
    t.chan_bytes = g.oh * g.ow;  // only phase (0, 0) is made: the channels' planes back to back
    t.used_phases = 1;
    t.pad_bytes = tiled_align64(static_cast<size_t>(g.n * g.c * t.chan_bytes + t.wp + 64));
  }
  if (!t.padded) {
    // A last panel of <= 4 columns (the ISA kernels' narrow tail) rides
    // with the last chunk, and the chunks are whole tiles of kNV panels
    // where that keeps their count a multiple of the threads. A 3x3 conv
    // with 512 channels at 7x7, batch 1 (3 panels and 1 column; a chunk
    // budget of 3 panels) was cut in two chunks of 2 panels: half-width
    // tiles, 64 columns computed for 49. Now one 3-panel tile and the
    // tail: 0.89x the time on one thread, 0.92x on two (Zen 4); ResNet-18
    // b1 0.94x, ResNet-50 b1 0.98x, b8 1.00x (alternating A/B).
    const int64_t rem = t.p % 16;
    t.tail_rides = t.nt_count > 1 && rem >= 1 && rem <= 4;
    const int64_t nt = t.nt_count - (t.tail_rides ? 1 : 0);
    t.chunks = (nt + max_chunk - 1) / max_chunk;
    if (t.chunks > 1) t.chunks = round_up(t.chunks, threads);
    t.chunk = (nt + t.chunks - 1) / t.chunks;
    const int64_t whole = round_up(t.chunk, T::kNV), n = (nt + whole - 1) / whole;
    if (n == 1 || n % threads == 0) t.chunk = whole;
    t.chunks = (nt + t.chunk - 1) / t.chunk;
  }
  // Panels in the widest chunk (the last one, where the tail rides).
  const int64_t widest = t.chunk + (t.tail_rides ? 1 : 0);
  if (t.quad_cols) {
    t.col_off.resize(static_cast<size_t>(t.groups));
    // (64 bytes apart: a group's whole-vector copies never reach the next.)
    for (int64_t p = 0; p < t.groups; ++p) t.col_off[p] = p * (widest * 64 + 64);
  }
  const int64_t outer = g.group * t.chunks;
  t.msplit = 1;
  if (outer % threads != 0) t.msplit = round_up((4 * threads + outer - 1) / outer, threads);
  else if (outer < 2 * threads) t.msplit = (4 * threads + outer - 1) / outer;
  t.msplit = std::max<int64_t>(1, std::min(t.msplit, t.mt_count));
  t.tasks = outer * t.msplit;
  t.ld = widest * 16;
  // (Quad planes pack nothing per task: no row or panel buffers. Quad
  // columns copy whole vectors: up to 63 bytes past a group's last run.)
  t.rows_bytes = t.quads || t.quad_cols ? 0 : tiled_align64(static_cast<size_t>(T::kKGroup * t.ld));
  t.packed_bytes = t.quads ? 0
                            : tiled_align64(static_cast<size_t>(widest * t.panel_bytes +
                                                                (t.quad_cols ? 64 * t.groups : 0)));
  return t;
}

// The phase planes of x for TiledPlan::padded: channel ci of image i (frame
// z of it, 3-D) at out + ((i * c + ci) * d + z) * chan_bytes, phase (a, b) at (a * sw + b) * hp * wp
// in it, row r, column j = input pixel (r * sh + a - pt, j * sw + b - pl),
// 0 outside the input. Phases no tap reads are left unwritten (only the
// thrown-away columns may read them).
inline void pad_input(ThreadPool& pool, const ConvGeom& g, const int8_t* x, const TiledPlan& t, int8_t* out) {
  // Items are (image, block of padded rows, block of channels and frames),
  // in that order: the tile tasks that read a row block are ordered the
  // same way, so the thread that pads rows is the one that (mostly) packs
  // them (AffineTasks). Rows are split only where a block spans >= 512
  // bytes of a plane: the rows of small planes share cache lines, and two
  // threads writing one line is slower than no split (7x7 planes: 8-byte
  // rows, a whole plane per line).
  const int64_t planes = g.c * g.d, want = 4 * pool.num_threads();
  const int64_t blocks = std::max<int64_t>(1, std::min({t.hp, t.hp * t.wp / 512, (want + g.n - 1) / g.n}));
  const int64_t cblocks = std::max<int64_t>(1, std::min(planes, (want + g.n * blocks - 1) / (g.n * blocks)));
  auto body = [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t img = item / (blocks * cblocks), rb = item / cblocks % blocks, cb = item % cblocks;
      const int64_t r_begin = t.hp * rb / blocks, r_end = t.hp * (rb + 1) / blocks;
      const int64_t pl_begin = img * planes + planes * cb / cblocks, pl_end = img * planes + planes * (cb + 1) / cblocks;
      for (int64_t pl = pl_begin; pl < pl_end; ++pl) {
        const int8_t* src = x + pl * g.h * g.w;
        for (int64_t a = 0; a < g.sh; ++a)
          for (int64_t b = 0; b < g.sw; ++b) {
            if (!(t.used_phases >> (a * g.sw + b) & 1u)) continue;
            int8_t* dst = out + pl * t.chan_bytes + (a * g.sw + b) * t.hp * t.wp;
            // Columns j whose input column j * sw + b - pl lies in [0, w).
            const int64_t off = g.pl - b;
            const int64_t jlo = std::min<int64_t>(t.wp, off > 0 ? (off + g.sw - 1) / g.sw : 0);
            const int64_t jhi = std::max(jlo, std::min<int64_t>(t.wp, g.w + off > 0 ? (g.w + off + g.sw - 1) / g.sw : 0));
            for (int64_t r = r_begin; r < r_end; ++r) {
              int8_t* d = dst + r * t.wp;
              const int64_t iy = r * g.sh + a - g.pt;
              if (iy < 0 || iy >= g.h) {
                std::memset(d, g.x_zp, static_cast<size_t>(t.wp));
                continue;
              }
              const int8_t* srow = src + iy * g.w - off;  // input column of j is srow[j * sw]
              std::memset(d, g.x_zp, static_cast<size_t>(jlo));
              if (g.sw == 1) {
                std::memcpy(d + jlo, srow + jlo, static_cast<size_t>(jhi - jlo));
              } else {
                int64_t j = jlo;
                if (g.sw == 2) {
                  // Every other byte, 16 at a time, while the 32-byte load
                  // stays inside this input row (srow[k] is valid for k <
                  // g.w + off).
                  const __m256i even = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1, 0,
                                                        2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1);
                  for (; j + 16 <= jhi && 2 * j + 32 <= g.w + off; j += 16) {
                    __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(srow + 2 * j));
                    v = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(v, even), 0x08);
                    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + j), _mm256_castsi256_si128(v));
                  }
                }
                for (; j < jhi; ++j) d[j] = srow[j * g.sw];
              }
              std::memset(d + jhi, g.x_zp, static_cast<size_t>(t.wp - jhi));
            }
          }
      }
    }
  };
  pool.parallel_for(g.n * blocks * cblocks, by_ref(body));
  // Thrown-away columns of the last plane read up to wp bytes past it.
  std::memset(out + g.n * g.c * g.d * t.chan_bytes, 0, static_cast<size_t>(t.wp + 64));
}

// The quad planes (TiledPlan::quads): channel quad q of image i at out +
// (i * c / 4 + q) * 4 * chan_bytes, phase (a, b) at (a * sw + b) * hp * wp
// * 4 in it, padded pixel (row r, column j) at (r * wp + j) * 4, its 4
// channels' bytes in order as the tier's k-group pack, tr.pack_group, lays
// them out (VNNI XORs them with 0x80 for signed inputs); positions outside
// the input hold x_zp. Per padded input row (row r of the phases a) the 4
// channels' rows are copied with their borders into a row buffer and
// interleaved once by pack_group; each column phase b then takes every
// sw-th 4-byte column of it. A tier with kQuadRows does that row in
// registers (masked loads with the borders, the interleave, the phase
// split, stores into the planes) for strides 1 and 2: on the VNNI tier the
// row buffer's small memset/memcpy calls were most of pad_quads' time.
template <class T>
void pad_quads(ThreadPool& pool, const ConvGeom& g, const int8_t* x, const TiledPlan& t, const T& tr, int8_t* out) {
  const int64_t quads = g.n * g.c / 4, wp = t.wp, row_bytes = wp * 4;
  const int64_t want = 4 * pool.num_threads();
  const int64_t blocks = std::max<int64_t>(1, std::min({t.hp, t.hp * row_bytes / 2048, (want + quads - 1) / quads}));
  // Padded columns 0 .. wfull - 1: every column some phase reads (column
  // j * sw + b of the padded row for phase b, j < wp).
  const int64_t wfull = wp * g.sw, wf64 = round_up(wfull, 64);
  // Input columns [lo, hi) of the padded row hold input column jj - pl.
  const int64_t lo = std::min<int64_t>(wfull, g.pl), hi = std::max(lo, std::min<int64_t>(wfull, g.w + g.pl));
  auto body = [&](int64_t begin, int64_t end) {
    std::vector<int8_t> rows(static_cast<size_t>(4 * wf64));
    std::vector<uint8_t> inter(static_cast<size_t>(4 * wf64));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t qd = item / blocks, rb = item % blocks;
      const int64_t r_begin = t.hp * rb / blocks, r_end = t.hp * (rb + 1) / blocks;
      const int64_t img = qd / (g.c / 4), c0 = qd % (g.c / 4) * 4;
      for (int64_t a = 0; a < g.sh; ++a) {
        bool used = false;
        for (int64_t b = 0; b < g.sw; ++b) used |= (t.used_phases >> (a * g.sw + b) & 1u) != 0;
        if (!used) continue;
        for (int64_t r = r_begin; r < r_end; ++r) {
          const int64_t iy = r * g.sh + a - g.pt;
          if constexpr (T::kQuadRows) {
            if (g.sw <= 2) {
              const int8_t* src[4];
              for (int h = 0; h < 4; ++h)
                src[h] = iy < 0 || iy >= g.h ? nullptr : x + ((img * g.c + c0 + h) * g.h + iy) * g.w;
              tr.quad_rows(src, g.pl, g.w, wp, g.sw, static_cast<uint32_t>(t.used_phases >> (a * g.sw)),
                           static_cast<int8_t>(g.x_zp), out + qd * 4 * t.chan_bytes + (a * g.sw * t.hp + r) * row_bytes,
                           t.hp * row_bytes);
              continue;
            }
          }
          const int8_t* rp[4];
          for (int h = 0; h < 4; ++h) {
            int8_t* d = rows.data() + h * wf64;
            rp[h] = d;
            if (iy < 0 || iy >= g.h) {
              std::memset(d, g.x_zp, static_cast<size_t>(wfull));
              continue;
            }
            const int8_t* srow = x + ((img * g.c + c0 + h) * g.h + iy) * g.w;
            std::memset(d, g.x_zp, static_cast<size_t>(lo));
            std::memcpy(d + lo, srow + (lo - g.pl), static_cast<size_t>(hi - lo));
            std::memset(d + hi, g.x_zp, static_cast<size_t>(wfull - hi));
          }
          // The pack writes whole 64-byte panels, so into `inter`; the
          // plane rows get exactly their wp * 4 bytes (a neighbour row may
          // be another thread's).
          tr.pack_group(rp, wfull, inter.data(), 64);
          for (int64_t b = 0; b < g.sw; ++b) {
            if (!(t.used_phases >> (a * g.sw + b) & 1u)) continue;
            int8_t* dst = out + qd * 4 * t.chan_bytes + ((a * g.sw + b) * t.hp + r) * row_bytes;
            if (g.sw == 1) {
              std::memcpy(dst, inter.data(), static_cast<size_t>(row_bytes));
            } else {
              for (int64_t j = 0; j < wp; ++j) std::memcpy(dst + 4 * j, inter.data() + 4 * (j * g.sw + b), 4);
            }
          }
        }
      }
    }
  };
  pool.parallel_for(quads * blocks, by_ref(body));
  // The last frame's last panels read past its planes (the slack).
  std::memset(out + g.n * g.c * t.chan_bytes, 0, static_cast<size_t>(4 * (wp + 64)));
}

// TiledPlan::quad_cols: merged columns [p0, p1) (of one group's channels)
// of every k group p, copied out of the quad planes to out + col_off[p]:
// one run of 4-byte columns per output row, whole vectors at a time (a run
// may write up to a vector past its end: the next run, or the next group,
// or the buffer's slack, takes it; the planes' slack covers the reads).
inline void copy_quad_cols(const ConvGeom& g, const TiledPlan& t, const int8_t* planes, int64_t grp, int64_t p0,
                           int64_t p1, uint8_t* out) {
  struct Run {
    int64_t src, dst, bytes;
  };
  Run runs[64];
  const int64_t hw = g.ohw();
  int64_t img = p0 / hw, oy = p0 % hw / g.ow, ox = p0 % g.ow;
  for (int64_t q = p0; q < p1;) {
    int n = 0;
    for (; n < 64 && q < p1; ++n) {
      const int64_t len = std::min(g.ow - ox, p1 - q);
      // Quad 0 of (image img, group grp): (img * c + grp * cg) / 4 quads of 4 * chan_bytes in.
      runs[n] = {(img * g.c + grp * g.cg()) * t.chan_bytes + (oy * t.wp + ox) * 4, (q - p0) * 4, len * 4};
      q += len;
      ox = 0;
      if (++oy == g.oh) {
        oy = 0;
        ++img;
      }
    }
    for (int64_t p = 0; p < t.groups; ++p) {
      const int8_t* s = planes + t.quad_off[p];
      uint8_t* d = out + t.col_off[p];
      for (int r = 0; r < n; ++r) {
        const int8_t* rs = s + runs[r].src;
        uint8_t* rd = d + runs[r].dst;
#if defined(__AVX512F__)
        for (int64_t o = 0; o < runs[r].bytes; o += 64)
          _mm512_storeu_si512(rd + o, _mm512_loadu_si512(rs + o));
#else
        for (int64_t o = 0; o < runs[r].bytes; o += 32)
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(rd + o),
                              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rs + o)));
#endif
      }
    }
  }
}

template <class T, class Cols>
void run_tiled(ThreadPool& pool, const ConvGeom& g, const int8_t* x, const TiledPlan& t, void* ws, const T& tr) {
  const int64_t hw = g.ohw();
  const int8_t* padded = t.direct ? x : static_cast<const int8_t*>(ws);
  if constexpr (T::kQuads) {
    if (t.quads || t.quad_cols) pad_quads(pool, g, x, t, tr, static_cast<int8_t*>(ws));
  }
  if ((t.padded && !t.direct && !t.quads) || t.subsampled) pad_input(pool, g, x, t, static_cast<int8_t*>(ws));
  // The merged columns' source: the input, or for a subsampled conv its
  // (0, 0) phase plane read as the input of a stride-1 pointwise conv.
  ConvGeom gm = g;
  const int8_t* xm = x;
  if (t.subsampled) {
    gm.h = g.oh;
    gm.w = g.ow;
    gm.sh = gm.sw = 1;
    gm.pt = gm.pl = 0;
    xm = padded;
  }
  char* thread_ws = static_cast<char*>(ws) + t.pad_bytes;
  AffineTasks tasks(t.tasks, pool.num_threads());
  auto body = [&](int tid, int) {
    char* mine = thread_ws + (t.rows_bytes + t.packed_bytes) * static_cast<size_t>(tid);
    auto* rowbuf = reinterpret_cast<int8_t*>(mine);
    auto* packed = reinterpret_cast<uint8_t*>(mine + t.rows_bytes);
    alignas(64) int32_t tile[T::kMR * 16 * T::kNV] = {};  // (a narrow tile's epilogue may read unused columns)
    Cols cols;
    int64_t packed_id = -1;
    int64_t task = tasks.claim(tid);
    if (task < 0) return;
    tr.thread_begin();
    for (; task >= 0; task = tasks.claim(tid)) {
      const int64_t id = task / t.msplit, ms = task % t.msplit;
      const int64_t ch = id % t.chunks, grp = id / t.chunks;
      int64_t nt0, nts, p0, p1, img = 0, oz = 0;
      if (t.padded) {  // p0, p1: columns of frame oz of image img's padded plane
        const int64_t frame = ch / t.cpi;
        img = frame / g.od;
        oz = frame % g.od;
        const int64_t local = ch % t.cpi * t.chunk;
        nts = std::min(t.chunk, t.nt_img - local);
        nt0 = frame * t.nt_img + local;
        p0 = local * 16;
        p1 = std::min(t.p_img, p0 + nts * 16);
      } else {
        nt0 = ch * t.chunk;
        nts = (ch == t.chunks - 1 ? t.nt_count : std::min(t.nt_count, nt0 + t.chunk)) - nt0;
        p0 = nt0 * 16;
        p1 = std::min(t.p, (nt0 + nts) * 16);
      }
      const int64_t ncols = p1 - p0;
      // A thread keeps its last chunk: its next task is often another M
      // split of the same chunk.
      if (t.quads) {
        // Nothing to pack: the kernel reads the quad planes of image img,
        // group grp, from the chunk's first column.
        packed_id = -1;
      } else if (t.quad_cols) {
        if (id != packed_id) copy_quad_cols(g, t, padded, grp, p0, p1, packed);
        packed_id = id;
      } else if (id != packed_id && t.padded) {
        // Frame iz of channel ci at src + (ci * d + iz) * chan_bytes.
        const int8_t* src = padded + (img * g.c + grp * g.cg()) * g.d * t.chan_bytes + p0;
        const int64_t taps = g.kh * g.kw, iz0 = oz * g.sd - g.pf;
        std::memset(rowbuf, g.x_zp, ncols);  // rows past K (weights 0) and taps in the depth padding (x_zp)
        int64_t ci = 0, kz = 0, tap = 0;  // of k row kk0 + i, stepped without divisions
        for (int64_t kk0 = 0; kk0 < t.k; kk0 += T::kKGroup) {
          const int64_t rows = std::min<int64_t>(T::kKGroup, t.k - kk0);
          const int8_t* r[T::kKGroup];
          for (int i = 0; i < T::kKGroup; ++i) {
            const int64_t iz = iz0 + kz * g.dd;
            r[i] = i < rows && iz >= 0 && iz < g.d ? src + (ci * g.d + iz) * t.chan_bytes + t.tap_off[tap] : rowbuf;
            if (++tap == taps) {
              tap = 0;
              if (++kz == g.kd) {
                kz = 0;
                ++ci;
              }
            }
          }
          tr.pack_group(r, ncols, packed + kk0 / T::kKGroup * 64, t.panel_bytes);
        }
        packed_id = id;
      } else if (id != packed_id) {
        const int64_t img = p0 / hw;
        // A 1x1 conv's im2col is the input itself: pack straight from it
        // while the chunk stays inside one image. (Measured and not kept,
        // 256 -> 64 at 56x56, batch 8, Zen 4: software prefetch of the rows
        // 1-4 k groups ahead, 0.99-1.00x; all k groups of 64 columns at a
        // time, so each panel is written front to back, 1.03x slower.)
        const bool direct = gm.is_pointwise() && (img + 1) * hw >= p1;
        const int8_t* src = xm + (img * g.c + grp * g.cg()) * hw + (p0 - img * hw);
        for (int64_t kk0 = 0; kk0 < t.k; kk0 += T::kKGroup) {
          const int64_t rows = std::min<int64_t>(T::kKGroup, t.k - kk0);
          const int8_t* r[T::kKGroup];
          if (direct) {
            for (int i = 0; i < T::kKGroup; ++i) r[i] = i < rows ? src + (kk0 + i) * hw : rowbuf;
            if (rows < T::kKGroup) std::memset(rowbuf, 0, ncols);  // rows past K read zeros
          } else {
            im2col_rows(gm, xm, grp, p0, p1, kk0, kk0 + rows, rowbuf, t.ld);
            for (int i = 0; i < T::kKGroup; ++i) r[i] = rowbuf + i * t.ld;
            for (int64_t i = rows; i < T::kKGroup; ++i) std::memset(rowbuf + i * t.ld, 0, ncols);
          }
          tr.pack_group(r, ncols, packed + kk0 / T::kKGroup * 64, t.panel_bytes);
        }
        packed_id = id;
      }
      // A weight tile stays in cache while it walks across the chunk.
      const int64_t mt_begin = t.mt_count * ms / t.msplit, mt_end = t.mt_count * (ms + 1) / t.msplit;
      for (int64_t mt = mt_begin; mt < mt_end; ++mt) {
        const int mr = static_cast<int>(std::min<int64_t>(T::kMR, t.mg - mt * T::kMR));
        for (int64_t j = 0; j < nts; j += T::kNV) {
          const int nv = static_cast<int>(std::min<int64_t>(T::kNV, nts - j));
          const int64_t col = p0 + j * 16;
          const int nr = static_cast<int>(std::min<int64_t>(16 * nv, p1 - col));
          const int64_t c0 = grp * t.mg + mt * T::kMR;  // the tile's first output channel
          if constexpr (T::kQuads) {
            if (t.quads) {
              // Channel quad (img * c + grp * cg) / 4, 4 * chan_bytes each.
              const int8_t* b = padded + (img * g.c + grp * g.cg()) * t.chan_bytes + col * 4;
              tr.kernel_quads(nv, nr, tr.a_tile_quads(grp, mt), reinterpret_cast<const uint8_t*>(b),
                              t.quad_off.data(), t.groups, tile, c0);
            } else if (t.quad_cols) {
              tr.kernel_quads(nv, nr, tr.a_tile_quads(grp, mt), packed + j * 64, t.col_off.data(), t.groups, tile,
                              c0);
            } else {
              tr.kernel(nv, nr, tr.a_tile(grp, mt), packed + j * t.panel_bytes, t.panel_bytes, t.groups, tile, c0);
            }
          } else {
            tr.kernel(nv, nr, tr.a_tile(grp, mt), packed + j * t.panel_bytes, t.panel_bytes, t.groups, tile, c0);
          }
          if (t.padded) cols.compute_padded(col, nr, img * g.m * hw + oz * g.oh * g.ow, hw, t.wp, g.ow, g.oh);
          else cols.compute(col, nr, hw, g.m);
          tr.epilogue(tile, mr, nr, c0, cols);
        }
      }
    }
    tr.thread_end();
  };
  // Tasks are claimed as AffineTasks: thread t takes the t-th run of chunks
  // (all their M splits, so a chunk is packed once) and then helps the
  // others; a worker that starts late (a busy machine) finds them taken and
  // returns, instead of being waited for.
  pool.run_any(by_ref(body));
}


// ---------------------------------------------------------------------------
// Depthwise convs (one input and one output channel per group: ir-CSN's
// 3x3x3, MobileNet-style 3x3), 2-D or 3-D, outside the GEMM: there each
// channel would be a GEMM with one weight row, so 7 of the 8 VNNI rows (5 of
// 6, 3 of 4 on AVX2) would multiply zeros. Here a task is one (image,
// channel): its input is copied into a zero-bordered buffer (frames x rows x
// sw column phases, so every tap reads a contiguous run for stride sw), then
// each output row of 16 columns sums its taps two at a time with vpmaddwd:
// the two taps' int8 inputs widened to int16 and interleaved, times the
// (w0, w1) pair, summed into int32. Exact (|x * w| <= 2^14, a pair sum fits
// int32), so the accumulators are the reference's; the row then goes
// through the ISA file's vector epilogue (`row_epilogue(acc, n, c, idx)`).
template <class RowEpilogue>
void run_depthwise(ThreadPool& pool, const ConvGeom& g, const int8_t* x, const int8_t* w, void* ws,
                   const RowEpilogue& row_epilogue) {
  const DwPlan p = dw_plan(g);
  ENGINE_CHECK(p.taps <= kDwMaxTaps, "depthwise conv with too many taps");
  const int64_t tasks = g.n * g.c, ohw = g.ohw();
  // Claimed as AffineTasks: each thread from its own cache line (a shared
  // counter cost a round trip between the cores per task, most of the time
  // of a 7x7 layer with hundreds of channels).
  AffineTasks claims(tasks, pool.num_threads());
  auto body = [&](int tid, int) {
    int8_t* buf = static_cast<int8_t*>(ws) + p.per_thread * static_cast<size_t>(tid);
    auto* acc = reinterpret_cast<int32_t*>(buf + p.acc_offset);
    // Tap t's offset in buf relative to output (oz, oy, ox) = (0, 0, 0),
    // and the weights of taps (2i, 2i+1) as one int32 of two int16.
    int64_t off[kDwMaxTaps + 1];
    int32_t wpair[(kDwMaxTaps + 1) / 2];
    std::vector<int8_t> line(static_cast<size_t>(g.sw * p.wq + 32));  // a strided conv's padded input row
    for (int64_t task = claims.claim(tid); task >= 0; task = claims.claim(tid)) {
      const int64_t img = task / g.c, ch = task % g.c;
      const int8_t* src = x + task * g.ihw();
      // The zero-bordered copy: padded pixel (pz, pr, pc) is input (pz - pf,
      // pr - pt, pc - pl); column pc = j * sw + b lives in phase b at j.
      for (int64_t pz = 0; pz < p.dp; ++pz)
        for (int64_t pr = 0; pr < p.hp; ++pr) {
          int8_t* row = buf + (pz * p.hp + pr) * p.row_bytes;
          std::memset(row, g.x_zp, static_cast<size_t>(p.row_bytes));
          const int64_t iz = pz - g.pf, iy = pr - g.pt;
          if (iz < 0 || iz >= g.d || iy < 0 || iy >= g.h) continue;
          const int8_t* in = src + (iz * g.h + iy) * g.w;
          if (g.sw == 1) {
            const int64_t lo = std::max<int64_t>(0, g.pl), hi = std::min<int64_t>(p.wq, g.w + g.pl);
            if (hi > lo) std::memcpy(row + lo, in + lo - g.pl, static_cast<size_t>(hi - lo));
            continue;
          }
          // Strided: the padded line in one piece (line[c] is padded column
          // c), then split into its sw phases, phase b at j = line[j * sw + b]
          // (stride 2: 32 bytes into 16 even and 16 odd ones at a time).
          int8_t* ln = line.data();
          std::memset(ln, g.x_zp, line.size());
          const int64_t lo = std::max<int64_t>(0, g.pl), hi = std::min<int64_t>(g.sw * p.wq, g.w + g.pl);
          if (hi > lo) std::memcpy(ln + lo, in + lo - g.pl, static_cast<size_t>(hi - lo));
          int64_t j = 0;
          if (g.sw == 2) {
            const __m256i split = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
                                                   0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
            for (; j + 16 <= p.wq; j += 16) {
              // Per 128-bit lane: 8 even then 8 odd bytes; then even halves
              // of both lanes together, odd halves together.
              const __m256i v = _mm256_shuffle_epi8(
                  _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ln + 2 * j)), split);
              const __m256i q = _mm256_permute4x64_epi64(v, 0xD8);
              _mm_storeu_si128(reinterpret_cast<__m128i*>(row + j), _mm256_castsi256_si128(q));
              _mm_storeu_si128(reinterpret_cast<__m128i*>(row + p.wq + j), _mm256_extracti128_si256(q, 1));
            }
          }
          for (; j < p.wq; ++j)
            for (int64_t b = 0; b < g.sw; ++b) row[b * p.wq + j] = ln[j * g.sw + b];
        }
      const int8_t* wc = w + ch * p.taps;
      int64_t t = 0;
      for (int64_t kz = 0; kz < g.kd; ++kz)
        for (int64_t ki = 0; ki < g.kh; ++ki)
          for (int64_t kj = 0; kj < g.kw; ++kj, ++t)
            off[t] = ((kz * g.dd) * p.hp + ki * g.dh) * p.row_bytes + (kj * g.dw) % g.sw * p.wq + (kj * g.dw) / g.sw;
      const int64_t pairs = (p.taps + 1) / 2;
      if (p.taps % 2) off[p.taps] = off[p.taps - 1];  // the odd tap's partner: weight 0, a valid read
      for (int64_t i = 0; i < pairs; ++i) {
        const int32_t w0 = wc[2 * i], w1 = 2 * i + 1 < p.taps ? wc[2 * i + 1] : 0;
        wpair[i] = static_cast<int32_t>((static_cast<uint32_t>(static_cast<uint16_t>(w1)) << 16) |
                                        static_cast<uint16_t>(w0));
      }
      for (int64_t oz = 0; oz < g.od; ++oz)
        for (int64_t oy = 0; oy < g.oh; ++oy) {
          const int8_t* base = buf + ((oz * g.sd) * p.hp + oy * g.sh) * p.row_bytes;
          for (int64_t ox = 0; ox < g.ow; ox += 16) {
            // lo: columns 0-3 | 8-11, hi: 4-7 | 12-15 (vpunpck* work per 128-bit lane).
            __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
            for (int64_t i = 0; i < pairs; ++i) {
              const __m256i a = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(base + off[2 * i] + ox)));
              const __m256i b = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(base + off[2 * i + 1] + ox)));
              const __m256i wv = _mm256_set1_epi32(wpair[i]);
              lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(a, b), wv));
              hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(a, b), wv));
            }
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + ox), _mm256_permute2x128_si256(lo, hi, 0x20));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + ox + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
          }
          row_epilogue(acc, g.ow, ch, (img * g.c + ch) * ohw + (oz * g.oh + oy) * g.ow);
        }
    }
  };
  pool.run_any(by_ref(body));
}

}  // namespace
}  // namespace engine::qk
