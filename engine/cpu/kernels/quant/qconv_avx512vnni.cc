// int8 convolution, AVX512-VNNI (qconv_avx512vnni).
//
//   C[MR x 16*NV] (int32) = A_tile[MR x K] (weights, s8) * B[K x 16*NV]
//   (im2col of the input, u8), then the fused epilogue (quant_kernels.h)
//   on 16 lanes at a time.
// Rows are output channels, columns output positions (of the whole batch,
// see OutMap), so a tile row is up to 48 contiguous NCHW outputs. One vpdpbusd does 64
// multiply-adds (16 lanes x 4 consecutive k), four times the AVX2 int16
// path's vpmaddwd on a ymm.
//
// Signedness: vpdpbusd takes one unsigned and one signed operand. The
// activations are packed as u8: unchanged when they are known to be >= 0
// (x_nonneg: a requantized Relu output), otherwise XORed with 0x80 (= +128)
// and the sum corrected by corr[m] = 128 * sum_k w[m, k]. Padding is packed
// as the value 0 (0x80 when shifted), so the correction is the same for every
// output position. Both forms are exact in int32 (wrapping arithmetic, and
// the true result fits, see kMaxK in qconv_kernel.cc), so the accumulators
// equal the reference's bit for bit; the epilogue repeats epilogue_one()'s
// float operations in the same order (no FMA contraction: no_contract16).
//
// Layouts: A as pack_a_vnni() writes it ([kq][MR][4] per tile, a 4-byte k
// group broadcast as one int32); B in panels of 16 columns, [kq][16][4] u8,
// packed per task from that task's im2col (see Tiling).
// Preconditions: only entered when use_avx512_vnni(); ws sized by
// qconv_avx512vnni_workspace().
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "cpu/kernels/quant/quant_kernels.h"

// GCC 12's own avx512fintrin.h trips -Wmaybe-uninitialized (its
// _mm512_undefined_* helpers initialize a variable with itself).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace engine::qk {
namespace {

constexpr int kNV = 3;  // 16-column panels per micro-kernel call: 8 x 3 = 24 accumulators.
constexpr int kTileLd = 16 * kNV;

inline __m512 no_contract16(__m512 v) {
  __asm__("" : "+v"(v));
  return v;
}

inline int32_t load_i32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

size_t align64(size_t n) { return (n + 63) / 64 * 64; }

// MR x (16 * NV) tile over kq groups of 4; b panels are bstride bytes apart.
template <int NV>
void kernel_vnni(const int8_t* a, const uint8_t* b, int64_t bstride, int64_t kq, int32_t* c) {
  __m512i acc[kVnniMR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < kVnniMR; ++r)
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_si512();
  for (int64_t p = 0; p < kq; ++p) {
    __m512i bv[NV];
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_loadu_si512(b + v * bstride + p * 64);
#pragma GCC unroll 8
    for (int r = 0; r < kVnniMR; ++r) {
      const __m512i av = _mm512_set1_epi32(load_i32(a + (p * kVnniMR + r) * 4));
#pragma GCC unroll 3
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], bv[v], av);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < kVnniMR; ++r)
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) _mm512_storeu_si512(c + r * kTileLd + v * 16, acc[r][v]);
}

// The epilogue on up to 16 lanes (mask m) of channel c; same operations,
// same order as epilogue_one().
inline void epilogue16(const Epilogue& e, __m512i acc, __m512 mul, __m512i bi, __m512 bf, int64_t idx,
                       __mmask16 m) {
  if (e.bias_i32) acc = _mm512_add_epi32(acc, bi);
  __m512 v = no_contract16(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), mul));
  if (e.bias_f32) v = _mm512_add_ps(v, bf);
  if (e.z_f32) {
    v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, e.z_f32 + idx));
  } else if (e.z_s8) {
    const __m128i z8 = _mm_maskz_loadu_epi8(m, e.z_s8 + idx);
    const __m512 z = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(z8));
    v = _mm512_add_ps(v, no_contract16(_mm512_mul_ps(z, _mm512_set1_ps(e.z_scale))));
  }
  if (e.act == Act::kRelu) {
    v = _mm512_max_ps(v, _mm512_setzero_ps());
  } else if (e.act == Act::kClip) {
    v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(e.act_lo)), _mm512_set1_ps(e.act_hi));
  }
  if (e.requant) {
    __m512 q = _mm512_div_ps(v, _mm512_set1_ps(e.y_scale));
    q = _mm512_min_ps(_mm512_max_ps(q, _mm512_set1_ps(-128.f)), _mm512_set1_ps(127.f));
    // cvtps2dq rounds half to even (MXCSR default), as nearbyint does; the
    // value is already in [-128, 127], so the narrowing is plain truncation.
    _mm512_mask_cvtepi32_storeu_epi8(e.y_s8 + idx, m, _mm512_cvtps_epi32(q));
  } else {
    _mm512_mask_storeu_ps(e.y_f32 + idx, m, v);
  }
}

// Columns live in the batch's merged output space: column q is position
// q % hw of image q / hw, so small images (7x7) fill whole panels at batch >
// 1. Output element (image i, channel c, position p) is at (i * m + c) * hw + p.
struct OutMap {
  int64_t hw, m;
};

// Tile rows are channels c0..c0+mr-1, columns the nr merged columns from
// col. A 16-lane group that crosses images is stored as masked segments,
// each with its own base (lanes below a segment are masked off, so the
// shifted base never touches memory outside the tensors).
void epilogue_tile(const Epilogue& e, const int32_t* tile, int mr, int nr, int64_t c0, int64_t col,
                   const OutMap& om, const int32_t* corr) {
  for (int r = 0; r < mr; ++r) {
    const int64_t c = c0 + r;
    const int32_t* t = tile + r * kTileLd;
    const __m512 mul = _mm512_set1_ps(e.mul[c]);
    const __m512i bi = _mm512_set1_epi32(e.bias_i32 ? e.bias_i32[c] : 0);
    const __m512 bf = _mm512_set1_ps(e.bias_f32 ? e.bias_f32[c] : 0.f);
    const __m512i cr = _mm512_set1_epi32(corr ? corr[c] : 0);
    for (int j = 0; j < nr; j += 16) {
      const int lanes = std::min(16, nr - j);
      const __m512i acc = _mm512_sub_epi32(_mm512_loadu_si512(t + j), cr);
      const int64_t q0 = col + j;
      int64_t img = q0 / om.hw;
      int l0 = 0;
      while (l0 < lanes) {
        const int64_t q = q0 + l0;
        const int seg = static_cast<int>(std::min<int64_t>(lanes - l0, (img + 1) * om.hw - q));
        const __mmask16 m = static_cast<__mmask16>(((1u << seg) - 1) << l0);
        epilogue16(e, acc, mul, bi, bf, (img * om.m + c) * om.hw + (q - img * om.hw) - l0, m);
        l0 += seg;
        ++img;
      }
    }
  }
}

// Fills dst[0, run) with what one kernel tap reads for output positions
// ox0 .. ox0 + run - 1 of one output row: input row iy of `plane` (one
// channel of one image) at columns ox * sw + col_off, 0 in the padding.
// [lo, hi) are the output columns whose input column lies inside the row.
inline void im2col_run(const ConvGeom& g, const int8_t* plane, int64_t iy, int64_t col_off, int64_t lo,
                       int64_t hi, int64_t ox0, int64_t run, int8_t* dst) {
  if (iy < 0 || iy >= g.h) {
    std::memset(dst, 0, run);
    return;
  }
  const int8_t* src = plane + iy * g.w + col_off;
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
      _mm512_mask_storeu_epi8(dst + o, all, _mm512_maskz_loadu_epi8(valid, src + first));
    }
    return;
  }
  const int64_t vlo = std::min(std::max(lo, ox0), ox0 + run), vhi = std::max(std::min(hi, ox0 + run), vlo);
  std::memset(dst, 0, vlo - ox0);
  if (g.sw == 2) {
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
  std::memset(dst + (vhi - ox0), 0, ox0 + run - vhi);
}

// im2col rows [kk0, kk1) of merged columns [p0, p1) for one group: row kk =
// (ci, ki, kj) of the group's K rows lands at out + (kk - kk0) * ld.
// Counters step through (ci, ki, kj) and (image, oy, ox): no divisions in
// the loops.
void im2col_rows(const ConvGeom& g, const int8_t* x, int64_t grp, int64_t p0, int64_t p1, int64_t kk0, int64_t kk1,
                 int8_t* out, int64_t ld) {
  const int64_t hw = g.oh * g.ow, khw = g.kh * g.kw;
  const int64_t img_start = p0 / hw, oy_start = (p0 % hw) / g.ow, ox_start = p0 % g.ow;
  int64_t ci = grp * g.cg() + kk0 / khw, ki = (kk0 / g.kw) % g.kh, kj = kk0 % g.kw;
  for (int64_t kk = kk0; kk < kk1; ++kk) {
    const int64_t col_off = kj * g.dw - g.pl;
    // Output columns whose input column ox * sw + col_off is in [0, w).
    int64_t lo = 0, hi = 0;
    if (col_off < 0) lo = std::min<int64_t>(g.ow, (-col_off + g.sw - 1) / g.sw);
    if (g.w - col_off > 0) hi = std::min<int64_t>(g.ow, (g.w - col_off + g.sw - 1) / g.sw);
    hi = std::max(hi, lo);
    int8_t* row = out + (kk - kk0) * ld;
    int64_t img = img_start, oy = oy_start, ox0 = ox_start;
    for (int64_t q = p0; q < p1;) {
      const int64_t run = std::min(g.ow - ox0, p1 - q);
      const int8_t* plane = x + (img * g.c + ci) * g.h * g.w;
      im2col_run(g, plane, oy * g.sh - g.pt + ki * g.dh, col_off, lo, hi, ox0, run, row + (q - p0));
      q += run;
      ox0 = 0;
      if (++oy == g.oh) {
        oy = 0;
        ++img;
      }
    }
    if (++kj == g.kw) {
      kj = 0;
      if (++ki == g.kh) {
        ki = 0;
        ++ci;
      }
    }
  }
}

// Packs one k group: rows r[0..3] (ncols columns each) into the [16][4]
// slot of every panel (panel j's slot at out + j * panel_stride), XORing
// every byte with `flip` (0x80 or 0).
void pack_quad(const int8_t* const r[4], int64_t ncols, uint8_t flip, uint8_t* out, int64_t panel_stride) {
  const __m128i fx = _mm_set1_epi8(static_cast<char>(flip));
  alignas(16) int8_t tmp[4][16];
  for (int64_t col = 0, j = 0; col < ncols; col += 16, ++j) {
    const int8_t* s[4] = {r[0] + col, r[1] + col, r[2] + col, r[3] + col};
    if (ncols - col < 16) {
      for (int i = 0; i < 4; ++i) {
        std::memset(tmp[i], 0, 16);
        std::memcpy(tmp[i], s[i], ncols - col);
        s[i] = tmp[i];
      }
    }
    const __m128i r0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s[0]));
    const __m128i r1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s[1]));
    const __m128i r2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s[2]));
    const __m128i r3 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s[3]));
    const __m128i t0 = _mm_unpacklo_epi8(r0, r1), t1 = _mm_unpackhi_epi8(r0, r1);
    const __m128i t2 = _mm_unpacklo_epi8(r2, r3), t3 = _mm_unpackhi_epi8(r2, r3);
    __m128i* o = reinterpret_cast<__m128i*>(out + j * panel_stride);
    _mm_storeu_si128(o + 0, _mm_xor_si128(_mm_unpacklo_epi16(t0, t2), fx));  // columns 0-3
    _mm_storeu_si128(o + 1, _mm_xor_si128(_mm_unpackhi_epi16(t0, t2), fx));  // columns 4-7
    _mm_storeu_si128(o + 2, _mm_xor_si128(_mm_unpacklo_epi16(t1, t3), fx));  // columns 8-11
    _mm_storeu_si128(o + 3, _mm_xor_si128(_mm_unpackhi_epi16(t1, t3), fx));  // columns 12-15
  }
}

// How a call is cut into tasks: columns are the batch's merged output
// positions, cut into chunks of 16-column panels (~192 KB packed: a chunk
// stays in L2 while every A tile walks across it). A task is (group, chunk,
// M split): it builds its chunk's packed panels in a thread-local buffer,
// four im2col rows at a time through a small (L1) row buffer, with no
// separate im2col pass and no barrier between images, and runs the
// tiles. Chunks are made a multiple of the thread count when there are
// several, and the M split gives every thread work when there are few
// (batch 1 at 7x7).
struct Tiling {
  int64_t p, k, kq, mg, mt_count, nt_count, chunk, chunks, msplit, tasks;
  size_t cols_bytes, packed_bytes;
};

Tiling tiling(const ConvGeom& g, int threads) {
  Tiling t;
  threads = std::max(threads, 1);
  t.p = g.n * g.oh * g.ow;
  t.k = g.k();
  t.kq = round_up(t.k, 4) / 4;
  t.mg = g.mg();
  t.mt_count = round_up(t.mg, kVnniMR) / kVnniMR;
  t.nt_count = round_up(t.p, 16) / 16;
  const int64_t panel_bytes = t.kq * 64;
  const int64_t max_chunk = std::max<int64_t>(kNV, (192 << 10) / panel_bytes / kNV * kNV);
  t.chunks = (t.nt_count + max_chunk - 1) / max_chunk;
  if (t.chunks > 1) t.chunks = round_up(t.chunks, threads);
  t.chunk = (t.nt_count + t.chunks - 1) / t.chunks;
  t.chunks = (t.nt_count + t.chunk - 1) / t.chunk;
  const int64_t outer = g.group * t.chunks;
  t.msplit = 1;
  if (outer % threads != 0) t.msplit = round_up((4 * threads + outer - 1) / outer, threads);
  else if (outer < 2 * threads) t.msplit = (4 * threads + outer - 1) / outer;
  t.msplit = std::max<int64_t>(1, std::min(t.msplit, t.mt_count));
  t.tasks = outer * t.msplit;
  t.cols_bytes = align64(static_cast<size_t>(4 * t.chunk * 16));
  t.packed_bytes = align64(static_cast<size_t>(t.chunk * panel_bytes));
  return t;
}

}  // namespace

void pack_a_vnni(const int8_t* src, int64_t rs, int64_t rows, int64_t k, int8_t* out, int32_t* corr) {
  const int64_t kq = round_up(k, 4) / 4;
  for (int64_t mt = 0; mt < round_up(rows, kVnniMR) / kVnniMR; ++mt) {
    int8_t* tile = out + mt * kq * kVnniMR * 4;
    for (int64_t p = 0; p < kq; ++p)
      for (int r = 0; r < kVnniMR; ++r)
        for (int h = 0; h < 4; ++h) {
          const int64_t row = mt * kVnniMR + r, kk = 4 * p + h;
          tile[(p * kVnniMR + r) * 4 + h] = row < rows && kk < k ? src[row * rs + kk] : 0;
        }
  }
  for (int64_t r = 0; r < rows; ++r) {
    int32_t s = 0;
    for (int64_t kk = 0; kk < k; ++kk) s += src[r * rs + kk];
    corr[r] = 128 * s;
  }
}

size_t qconv_avx512vnni_workspace(const ConvGeom& g, int threads) {
  const Tiling t = tiling(g, threads);
  return (t.cols_bytes + t.packed_bytes) * static_cast<size_t>(std::max(threads, 1));
}

void qconv_avx512vnni(ThreadPool& pool, const ConvGeom& g, const int8_t* x, bool x_nonneg, const int8_t* packed_w,
                      const int32_t* corr, const Epilogue& e, void* ws) {
  const Tiling t = tiling(g, pool.num_threads());
  const int64_t a_tile = t.kq * kVnniMR * 4, b_panel = t.kq * 64, ld = t.chunk * 16;
  const uint8_t flip = x_nonneg ? 0 : 0x80;
  const int32_t* cr = x_nonneg ? nullptr : corr;
  const OutMap om{g.oh * g.ow, g.m};
  // Threads take tasks in order from a shared counter (not a fixed split):
  // on a busy machine a thread that is descheduled holds up the others for
  // one task at most. A thread keeps its last chunk and skips rebuilding it
  // when its next task is another M split of the same chunk. Every output is
  // written by one task with exact integer sums, so the bits do not depend
  // on which thread ran what.
  std::atomic<int64_t> next{0};
  auto body = [&](int tid, int) {
    char* mine = static_cast<char*>(ws) + (t.cols_bytes + t.packed_bytes) * static_cast<size_t>(tid);
    auto* cols = reinterpret_cast<int8_t*>(mine);
    auto* packed = reinterpret_cast<uint8_t*>(mine + t.cols_bytes);
    alignas(64) int32_t tile[kVnniMR * kTileLd];
    int64_t packed_id = -1;
    for (int64_t task = next.fetch_add(1, std::memory_order_relaxed); task < t.tasks;
         task = next.fetch_add(1, std::memory_order_relaxed)) {
      const int64_t id = task / t.msplit, ms = task % t.msplit;
      const int64_t ch = id % t.chunks, grp = id / t.chunks;
      const int64_t nt0 = ch * t.chunk, nts = std::min(t.nt_count, nt0 + t.chunk) - nt0;
      const int64_t p0 = nt0 * 16, p1 = std::min(t.p, (nt0 + nts) * 16);
      if (id != packed_id) {
        const int64_t img = p0 / om.hw, ncols = p1 - p0;
        // A 1x1 conv's im2col is the input itself: pack straight from it
        // while the chunk stays inside one image.
        const bool direct = g.is_pointwise() && (img + 1) * om.hw >= p1;
        const int8_t* src = x + (img * g.c + grp * g.cg()) * om.hw + (p0 - img * om.hw);
        for (int64_t kk0 = 0; kk0 < t.k; kk0 += 4) {
          const int64_t rows = std::min<int64_t>(4, t.k - kk0);
          const int8_t* r[4];
          if (direct) {
            for (int i = 0; i < 4; ++i) r[i] = i < rows ? src + (kk0 + i) * om.hw : cols;
            if (rows < 4) std::memset(cols, 0, ncols);  // rows past K read zeros
          } else {
            im2col_rows(g, x, grp, p0, p1, kk0, kk0 + rows, cols, ld);
            for (int i = 0; i < 4; ++i) r[i] = cols + i * ld;
            for (int64_t i = rows; i < 4; ++i) std::memset(cols + i * ld, 0, ncols);
          }
          pack_quad(r, ncols, flip, packed + kk0 * 16, b_panel);
        }
        packed_id = id;
      }
      const int8_t* wg = packed_w + grp * packed_a_vnni_bytes(t.mg, t.k);
      const int64_t mt_begin = t.mt_count * ms / t.msplit, mt_end = t.mt_count * (ms + 1) / t.msplit;
      for (int64_t mt = mt_begin; mt < mt_end; ++mt) {
        const int mr = static_cast<int>(std::min<int64_t>(kVnniMR, t.mg - mt * kVnniMR));
        const int64_t c0 = grp * t.mg + mt * kVnniMR;
        const int8_t* ap = wg + mt * a_tile;
        for (int64_t j = 0; j < nts; j += kNV) {
          const int nv = static_cast<int>(std::min<int64_t>(kNV, nts - j));
          const uint8_t* bp = packed + j * b_panel;
          if (nv == 3) kernel_vnni<3>(ap, bp, b_panel, t.kq, tile);
          else if (nv == 2) kernel_vnni<2>(ap, bp, b_panel, t.kq, tile);
          else kernel_vnni<1>(ap, bp, b_panel, t.kq, tile);
          const int64_t col = p0 + j * 16;
          const int nr = static_cast<int>(std::min<int64_t>(16 * nv, p1 - col));
          epilogue_tile(e, tile, mr, nr, c0, col, om, cr);
        }
      }
    }
  };
  pool.run(by_ref(body));
}

}  // namespace engine::qk
