// Channels-last int8 convolution, AVX512-VNNI (qconv_nhwc_avx512vnni).
//
//   C[P x M] (int32) = X[P x K] (input, u8) * W[K x M] (weights, s8)
// Rows are the batch's output positions, columns output channels. The input
// is [N, H, W, C] int8, so a row's k group (4 consecutive channels of one
// input position under one tap) is 4 contiguous bytes: the micro-kernel
// broadcasts it straight from the input, through a table of row pointers per
// tap (padding taps point at a row of x_zp), with no pack, no im2col and no
// padded copy; the NCHW tier (qconv_avx512vnni.cc) transposes every k group
// into panels or quad planes first. The weights are the vector operand:
// blocks of 64 output channels, [tap][channel quad][64][4] bytes
// (pack_w_nhwc), four zmm per k group. A tile is kRows positions x 64
// channels: 24 accumulators, 4 weight registers, one broadcast; a block of
// at most 16 or 32 channels (a conv with 16 or 32 outputs, or the last
// block of 80 or 160) runs only the one or two zmm columns it has.
//
// The epilogue works on a tile row at a time: 64 consecutive NHWC outputs
// of one position, whose per-channel terms (multiplier, float bias, the
// sums' start) are the same vectors for every row, and whose 64 int8
// results are one store. Its float operations are epilogue_one()'s in the
// same order (qconv_avx512vnni.h: epi_value, quantize16; no FMA
// contraction; narrow64), and the integer sums are exact, so the outputs are the
// reference's bits (qconv_nhwc_ref).
//
// Signedness as in the NCHW tier: inputs known to be >= 0 are used as u8;
// others are XORed with 0x80 (+128) as they are broadcast and the sums start
// at -corr[m] = -128 * sum_k w[m, k] (the padding row, x_zp, is shifted
// alike, so the correction holds at every position).
//
// Tasks: (row chunk, group of channel blocks), each tile of the chunk's
// rows run against every block of the group in turn (nhwc_plan says why);
// chunks are cut for about 16 tasks per thread (a late thread takes less),
// claimed as AffineTasks (thread t starts on the t-th part of the rows).
// A task's row pointers (fill_pointers) are made once per chunk.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "cpu/kernels/quant/qconv_avx512vnni.h"

namespace engine::qk {
namespace {

constexpr int kRows = 6;                   // output positions per tile
constexpr int64_t kBlockBytes = kNhwcNR * 4;  // one k group of a 64-channel block

inline int32_t load_i32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Both kernels' row chunks: about 16 tasks per thread when each chunk of
// output positions makes `per_chunk` tasks (one per block or block group),
// whole tiles of `tile_rows` positions, at least 4 tiles; then the padding
// row (x_zp, C + 64 bytes) and a thread's table of row pointers per tap.
struct Chunking {
  int64_t rows = 0, count = 0;
  size_t zero_bytes = 0, per_thread = 0;
  // The workspace: the padding row, then a table per thread.
  size_t workspace(int threads) const { return zero_bytes + per_thread * static_cast<size_t>(std::max(threads, 1)); }
};

Chunking chunking(const ConvGeom& g, int64_t p, int64_t taps, int64_t per_chunk, int tile_rows, int threads) {
  Chunking c;
  const int64_t target = 16 * std::max(threads, 1);
  const int64_t want = std::max<int64_t>(1, (target + per_chunk - 1) / per_chunk);
  c.rows = round_up(std::max<int64_t>(4 * tile_rows, (p + want - 1) / want), tile_rows);
  c.count = (p + c.rows - 1) / c.rows;
  c.zero_bytes = static_cast<size_t>(round_up(g.c + 64, 64));
  c.per_thread = static_cast<size_t>(round_up(c.rows * taps * static_cast<int64_t>(sizeof(void*)), 64));
  return c;
}

struct NhwcPlan {
  int64_t p = 0;             // output positions (rows), n * oh * ow
  int64_t taps = 0, cq = 0;  // kernel taps, channel quads
  int64_t blocks = 0;        // 64-channel blocks
  int64_t block_groups = 0, blocks_per_group = 0;
  Chunking ck;
};

NhwcPlan nhwc_plan(const ConvGeom& g, int threads) {
  NhwcPlan t;
  t.p = g.n * g.oh * g.ow;
  t.taps = g.kh * g.kw;
  t.cq = g.c / 4;
  t.blocks = (g.m + kNhwcNR - 1) / kNhwcNR;
  const int64_t k = t.taps * g.c;
  // A task runs every tile of its rows against each of its blocks in turn:
  // the tile's input (6 x K bytes) stays in L1 across the blocks, and a
  // row's outputs and residual are one contiguous run. Its blocks'
  // weights, re-read for every tile, are kept within ~24 KB (L1): with
  // K <= 192 several blocks (a K = 64 conv's epilogue and its residual
  // stream dominate, and read better a whole row at a time), else one
  // block per task, its weights then loaded from L1 or L2 (measured on Zen
  // 4: 512 KB of blocks per task, meant for L2, ran a 512 -> 2048 1x1 at
  // 7x7 1.4x slower than one block).
  t.blocks_per_group = std::clamp<int64_t>(24 * 1024 / (kNhwcNR * std::max<int64_t>(k, 1)), 1, t.blocks);
  t.block_groups = (t.blocks + t.blocks_per_group - 1) / t.blocks_per_group;
  t.ck = chunking(g, t.p, t.taps, t.block_groups, kRows, threads);
  return t;
}

// R rows x 16 NV channels (NV of a block's four zmm columns: a block with
// fewer channels computes only the columns it has) over `taps` taps of cq
// k groups each: row r of tap t reads k group q at ptr[r * taps + t] + 4 q;
// the block's weights for (t, q) at w + (t * cq + q) * kBlockBytes. The
// sums start at `start` and end in out[r * 64 + channel] (a stored tile:
// with the epilogue inlined after the loop GCC spilled accumulators inside
// it).
template <int R, int NV, bool kFlip>
void tile_kernel(const int8_t* const* ptr, int64_t taps, int64_t cq, const int8_t* w, const int32_t* start,
                 int32_t* out) {
  __m512i acc[R][NV], s[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) s[v] = _mm512_loadu_si512(start + 16 * v);
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = s[v];
  const __m512i flip = _mm512_set1_epi32(static_cast<int>(0x80808080u));
  for (int64_t t = 0; t < taps; ++t) {
    const int8_t* rp[R];
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) rp[r] = ptr[r * taps + t];
    const int8_t* wq = w + t * cq * kBlockBytes;
    for (int64_t q = 0; q < cq; ++q, wq += kBlockBytes) {
      __m512i wv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) wv[v] = _mm512_loadu_si512(wq + 64 * v);
#pragma GCC unroll 6
      for (int r = 0; r < R; ++r) {
        __m512i b = _mm512_set1_epi32(load_i32(rp[r] + 4 * q));
        if (kFlip) b = _mm512_xor_si512(b, flip);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], b, wv[v]);
      }
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm512_store_si512(out + r * 64 + 16 * v, acc[r][v]);
}

// The zmm columns a tile of a block with n channels computes: 1, 2 or 4
// (three are computed as four: fewer kernels, and a 48-channel block is rare).
inline int block_columns(int64_t n) { return n <= 16 ? 1 : n <= 32 ? 2 : 4; }

// The per-block epilogue terms: multiplier and float bias of channels c0 ..
// c0 + 63 (zeros past the last channel), and the mask of those channels.
struct BlockTerms {
  __m512 mul[4], bf[4];
  __mmask64 bytes;  // valid channels, one bit each
  __mmask16 lanes[4];
};

inline BlockTerms block_terms(const Epilogue& e, int64_t c0, int64_t m) {
  BlockTerms b;
  const int64_t n = std::min<int64_t>(kNhwcNR, m - c0);
  b.bytes = n == 64 ? ~0ull : (1ull << n) - 1;
  for (int v = 0; v < 4; ++v) {
    const int64_t nv = std::clamp<int64_t>(n - 16 * v, 0, 16);
    b.lanes[v] = static_cast<__mmask16>(nv == 16 ? 0xFFFFu : (1u << nv) - 1);
    b.mul[v] = _mm512_maskz_loadu_ps(b.lanes[v], e.mul + c0 + 16 * v);
    b.bf[v] = e.bias_f32 ? _mm512_maskz_loadu_ps(b.lanes[v], e.bias_f32 + c0 + 16 * v) : _mm512_setzero_ps();
  }
  return b;
}

// One tile row: position `row`, channels c0 .. c0 + 16 NV - 1 (idx = row *
// m + c0; the block's mask covers no channel past them).
template <bool kRequant, int kZ, bool kBounded, int NV>
inline void epilogue_row(const EpiConst& k, const BlockTerms& b, const int32_t* sums, int64_t idx) {
  __m512i acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = _mm512_load_si512(sums + 16 * v);
  const Epilogue& e = k.e;
  __m512 z[NV];
  for (int v = 0; v < NV; ++v) z[v] = _mm512_setzero_ps();
  if (kZ == 1) {
    for (int v = 0; v < NV; ++v) z[v] = _mm512_maskz_loadu_ps(b.lanes[v], e.z_f32 + idx + 16 * v);
  } else if (kZ == 2) {
    for (int v = 0; v < NV; ++v) {
      const __m128i zb = b.bytes == ~0ull ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(e.z_s8 + idx + 16 * v))
                                          : _mm_maskz_loadu_epi8(b.lanes[v], e.z_s8 + idx + 16 * v);
      __m512i zi = _mm512_cvtepi8_epi32(zb);
      if (e.z_zp) zi = _mm512_sub_epi32(zi, k.z_zp);
      z[v] = _mm512_cvtepi32_ps(zi);
    }
  }
  __m512 val[NV];
  for (int v = 0; v < NV; ++v) val[v] = epi_value(k, acc[v], b.mul[v], b.bf[v], z[v]);
  if (kRequant) {
    __m512i q[4];
    for (int v = 0; v < 4; ++v) q[v] = quantize16<kBounded>(k, val[v % NV]);  // (repeats past NV: masked off)
    const __m512i bytes = narrow64(k, q[0], q[1], q[2], q[3]);
    if (b.bytes == ~0ull) _mm512_storeu_si512(e.y_s8 + idx, bytes);
    else _mm512_mask_storeu_epi8(e.y_s8 + idx, b.bytes, bytes);
  } else {
    for (int v = 0; v < NV; ++v) _mm512_mask_storeu_ps(e.y_f32 + idx + 16 * v, b.lanes[v], val[v]);
  }
}

// Row pointers of rows r0 .. r1 - 1, every tap: ptr[(r - r0) * taps + t].
// The position is stepped, not divided out per row (three divisions a row
// cost about what a 1x1 conv with 64 input channels computes for it), and a
// 1x1 stride-1 conv's rows are simply consecutive positions.
void fill_pointers(const ConvGeom& g, const int8_t* x, const int8_t* zero, int64_t r0, int64_t r1, int64_t taps,
                   const int8_t** ptr) {
  if (g.is_pointwise()) {
    for (int64_t r = r0; r < r1; ++r) ptr[r - r0] = x + r * g.c;
    return;
  }
  const int64_t ohw = g.oh * g.ow;
  // Offsets of the taps from a window's top-left input position; a window
  // wholly inside the image (most of them) takes them without a bounds test.
  int64_t off[64];
  const bool direct = taps <= 64;
  if (direct)
    for (int64_t ky = 0; ky < g.kh; ++ky)
      for (int64_t kx = 0; kx < g.kw; ++kx) off[ky * g.kw + kx] = (ky * g.dh * g.w + kx * g.dw) * g.c;
  const int64_t span_y = (g.kh - 1) * g.dh, span_x = (g.kw - 1) * g.dw;
  int64_t n = r0 / ohw, oy = r0 % ohw / g.ow, ox = r0 % g.ow;
  for (int64_t r = r0; r < r1; ++r) {
    const int8_t** row = ptr + (r - r0) * taps;
    const int8_t* img = x + n * g.h * g.w * g.c;
    const int64_t iy0 = oy * g.sh - g.pt, ix0 = ox * g.sw - g.pl;
    if (direct && iy0 >= 0 && iy0 + span_y < g.h && ix0 >= 0 && ix0 + span_x < g.w) {
      const int8_t* base = img + (iy0 * g.w + ix0) * g.c;
      for (int64_t t = 0; t < taps; ++t) row[t] = base + off[t];
    } else {
      for (int64_t ky = 0; ky < g.kh; ++ky) {
        const int64_t iy = iy0 + ky * g.dh;
        const bool y_in = iy >= 0 && iy < g.h;
        for (int64_t kx = 0; kx < g.kw; ++kx) {
          const int64_t ix = ix0 + kx * g.dw;
          row[ky * g.kw + kx] = y_in && ix >= 0 && ix < g.w ? img + (iy * g.w + ix) * g.c : zero;
        }
      }
    }
    if (++ox == g.ow) {
      ox = 0;
      if (++oy == g.oh) {
        oy = 0;
        ++n;
      }
    }
  }
}

// Both kernels' task loop: tasks (chunk of the p output rows, unit), units
// fastest, claimed as AffineTasks (thread t starts on the t-th part of the
// rows). ws starts with the padding row (x_zp) and then a table of row
// pointers per thread, filled once per chunk (fill_pointers). Each task runs
// body(k, ptr, zero, r0, r1, unit) for rows [r0, r1) with the thread's own
// copy k of k0 (a copy no store can alias: see epilogue_tile).
template <class Body>
void for_each_chunk_task(ThreadPool& pool, const ConvGeom& g, const int8_t* x, int64_t p, int64_t taps,
                         const Chunking& ck, int64_t units, const EpiConst& k0, void* ws, const Body& body) {
  auto* zero = static_cast<int8_t*>(ws);
  std::memset(zero, g.x_zp, ck.zero_bytes);
  char* tables = static_cast<char*>(ws) + ck.zero_bytes;
  AffineTasks tasks(ck.count * units, pool.num_threads());
  auto worker = [&](int slot, int) {
    const EpiConst k = k0;
    auto** ptr = reinterpret_cast<const int8_t**>(tables + ck.per_thread * static_cast<size_t>(slot));
    int64_t filled = -1;
    for (int64_t task = tasks.claim(slot); task >= 0; task = tasks.claim(slot)) {
      const int64_t chunk = task / units, unit = task % units;
      const int64_t r0 = chunk * ck.rows, r1 = std::min(p, r0 + ck.rows);
      if (filled != chunk) {
        fill_pointers(g, x, zero, r0, r1, taps, ptr);
        filled = chunk;
      }
      body(k, static_cast<const int8_t* const*>(ptr), static_cast<const int8_t*>(zero), r0, r1, unit);
    }
  };
  pool.run_any(by_ref(worker));
}

template <bool kFlip, bool kRequant, int kZ, bool kBounded>
void run_nhwc(ThreadPool& pool, const ConvGeom& g, const int8_t* x, const int8_t* packed_w, const int32_t* start,
              const EpiConst& k0, void* ws) {
  const NhwcPlan t = nhwc_plan(g, pool.num_threads());
  const int64_t block_w = t.taps * t.cq * kBlockBytes;
  for_each_chunk_task(pool, g, x, t.p, t.taps, t.ck, t.block_groups, k0, ws,
                      [&](const EpiConst& k, const int8_t* const* ptr, const int8_t*, int64_t r0, int64_t r1,
                          int64_t bg) {
      alignas(64) int32_t sums[kRows * 64];
      const int64_t b0 = bg * t.blocks_per_group, b1 = std::min(t.blocks, b0 + t.blocks_per_group);
      for (int64_t r = r0; r < r1; r += kRows) {
        const int rows = static_cast<int>(std::min<int64_t>(kRows, r1 - r));
        const int8_t* const* p = ptr + (r - r0) * t.taps;
        if (kZ == 2 && r + kRows < r1) {
          // The next tile's residual rows: one line per block and row, a
          // stride of m bytes, which the hardware prefetchers missed.
          const int rn = static_cast<int>(std::min<int64_t>(kRows, r1 - r - kRows));
          for (int i = 0; i < rn; ++i)
            for (int64_t blk = b0; blk < b1; ++blk)
              _mm_prefetch(reinterpret_cast<const char*>(k.e.z_s8 + (r + kRows + i) * g.m + blk * kNhwcNR),
                           _MM_HINT_T0);
        }
        for (int64_t blk = b0; blk < b1; ++blk) {
          const int64_t c0 = blk * kNhwcNR;
          const int32_t* st = start + c0;  // (start has a block of zeros past m)
          const int8_t* w = packed_w + blk * block_w;
          const BlockTerms terms = block_terms(k.e, c0, g.m);
          auto tile = [&](auto nv) {
            constexpr int NV = decltype(nv)::value;
            switch (rows) {
              case 6: tile_kernel<6, NV, kFlip>(p, t.taps, t.cq, w, st, sums); break;
              case 5: tile_kernel<5, NV, kFlip>(p, t.taps, t.cq, w, st, sums); break;
              case 4: tile_kernel<4, NV, kFlip>(p, t.taps, t.cq, w, st, sums); break;
              case 3: tile_kernel<3, NV, kFlip>(p, t.taps, t.cq, w, st, sums); break;
              case 2: tile_kernel<2, NV, kFlip>(p, t.taps, t.cq, w, st, sums); break;
              default: tile_kernel<1, NV, kFlip>(p, t.taps, t.cq, w, st, sums); break;
            }
            for (int i = 0; i < rows; ++i)
              epilogue_row<kRequant, kZ, kBounded, NV>(k, terms, sums + i * 64, (r + i) * g.m + c0);
          };
          switch (block_columns(g.m - c0)) {
            case 1: tile(std::integral_constant<int, 1>{}); break;
            case 2: tile(std::integral_constant<int, 2>{}); break;
            default: tile(std::integral_constant<int, 4>{}); break;
          }
        }
      }
  });
}

// ---------------------------------------------------------------------------
// Depthwise (qconv_dw_nhwc_avx512vnni): the NHWC input holds 64 channels of
// a position in one zmm, and vpdpbusd sums 4 taps per 32-bit lane, so the 4
// taps' input vectors are interleaved per channel first (bytes, then
// 16-bit pairs):
//   a = lo8(x0, x1), b = hi8(x0, x1), c = lo8(x2, x3), d = hi8(x2, x3)
//   q0 = lo16(a, c), q1 = hi16(a, c), q2 = lo16(b, d), q3 = hi16(b, d)
// within each 128-bit lane L, q_k's dword i holds channel 16 L + 4 k + i's
// four taps, so q_k times its weight vector (packed in that order) sums
// those 16 channels; at the end a 4x4 transpose of 128-bit lanes turns the
// four accumulators back into channel order. 8 shuffles and 4 vpdpbusd per
// 4 taps of 64 channels at a position: 3x3 kernels are padded to 12 taps
// (zero weights, the padding row). Tiles of kDwRows positions, tasks and
// row pointers as run_nhwc's, the same epilogue (epilogue_row), so the
// outputs are the reference's bits.

constexpr int kDwRows = 4;  // positions per tile: 16 accumulators

struct DwNhwcPlan {
  int64_t p = 0, taps = 0, groups = 0, blocks = 0;
  Chunking ck;
};

DwNhwcPlan dw_nhwc_plan(const ConvGeom& g, int threads) {
  DwNhwcPlan t;
  t.p = g.n * g.oh * g.ow;
  t.taps = g.kh * g.kw;
  t.groups = (t.taps + 3) / 4;
  t.blocks = (g.c + kNhwcNR - 1) / kNhwcNR;
  t.ck = chunking(g, t.p, t.taps, t.blocks, kDwRows, threads);
  return t;
}

// R positions x the 64 channels from c0 (`bytes`: the valid ones) over every
// tap group; sums (with `start`) into out[r * 64 + channel].
template <int R, bool kFlip>
void dw_tile(const int8_t* const* ptr, int64_t taps, int64_t groups, const int8_t* zero, int64_t c0,
             __mmask64 bytes, const int8_t* w, const int32_t* start, int32_t* out) {
  __m512i acc[R][4];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) acc[r][k] = _mm512_setzero_si512();
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t q = 0; q < groups; ++q, w += 4 * 64) {
    __m512i wv[4];
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) wv[k] = _mm512_loadu_si512(w + 64 * k);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      __m512i x[4];
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const int64_t t = 4 * q + j;
        const int8_t* p = (t < taps ? ptr[r * taps + t] : zero) + c0;
        x[j] = _mm512_maskz_loadu_epi8(bytes, p);
        if (kFlip) x[j] = _mm512_xor_si512(x[j], flip);
      }
      const __m512i a = _mm512_unpacklo_epi8(x[0], x[1]), b = _mm512_unpackhi_epi8(x[0], x[1]);
      const __m512i c = _mm512_unpacklo_epi8(x[2], x[3]), d = _mm512_unpackhi_epi8(x[2], x[3]);
      acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], _mm512_unpacklo_epi16(a, c), wv[0]);
      acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], _mm512_unpackhi_epi16(a, c), wv[1]);
      acc[r][2] = _mm512_dpbusd_epi32(acc[r][2], _mm512_unpacklo_epi16(b, d), wv[2]);
      acc[r][3] = _mm512_dpbusd_epi32(acc[r][3], _mm512_unpackhi_epi16(b, d), wv[3]);
    }
  }
  // acc[r][k] lane L = channels 16 L + 4 k .. + 3; channel vector v (16 v ..
  // 16 v + 15) is lane v of acc[r][0..3].
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    const __m512i t0 = _mm512_shuffle_i32x4(acc[r][0], acc[r][1], 0x44);
    const __m512i t1 = _mm512_shuffle_i32x4(acc[r][0], acc[r][1], 0xEE);
    const __m512i t2 = _mm512_shuffle_i32x4(acc[r][2], acc[r][3], 0x44);
    const __m512i t3 = _mm512_shuffle_i32x4(acc[r][2], acc[r][3], 0xEE);
    const __m512i v[4] = {_mm512_shuffle_i32x4(t0, t2, 0x88), _mm512_shuffle_i32x4(t0, t2, 0xDD),
                          _mm512_shuffle_i32x4(t1, t3, 0x88), _mm512_shuffle_i32x4(t1, t3, 0xDD)};
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k)
      _mm512_store_si512(out + r * 64 + 16 * k, _mm512_add_epi32(v[k], _mm512_loadu_si512(start + 16 * k)));
  }
}

template <bool kFlip, bool kRequant, int kZ, bool kBounded>
void run_dw_nhwc(ThreadPool& pool, const ConvGeom& g, const int8_t* x, const int8_t* packed_w, const int32_t* start,
                 const EpiConst& k0, void* ws) {
  const DwNhwcPlan t = dw_nhwc_plan(g, pool.num_threads());
  const int64_t block_w = t.groups * 4 * 64;
  for_each_chunk_task(pool, g, x, t.p, t.taps, t.ck, t.blocks, k0, ws,
                      [&](const EpiConst& k, const int8_t* const* ptr, const int8_t* zero, int64_t r0, int64_t r1,
                          int64_t blk) {
      alignas(64) int32_t sums[kDwRows * 64];
      const int64_t c0 = blk * kNhwcNR;
      const BlockTerms terms = block_terms(k.e, c0, g.m);
      const int8_t* w = packed_w + blk * block_w;
      for (int64_t r = r0; r < r1; r += kDwRows) {
        const int rows = static_cast<int>(std::min<int64_t>(kDwRows, r1 - r));
        const int8_t* const* p = ptr + (r - r0) * t.taps;
        switch (rows) {
          case 4: dw_tile<4, kFlip>(p, t.taps, t.groups, zero, c0, terms.bytes, w, start + c0, sums); break;
          case 3: dw_tile<3, kFlip>(p, t.taps, t.groups, zero, c0, terms.bytes, w, start + c0, sums); break;
          case 2: dw_tile<2, kFlip>(p, t.taps, t.groups, zero, c0, terms.bytes, w, start + c0, sums); break;
          default: dw_tile<1, kFlip>(p, t.taps, t.groups, zero, c0, terms.bytes, w, start + c0, sums); break;
        }
        for (int i = 0; i < rows; ++i)
          epilogue_row<kRequant, kZ, kBounded, 4>(k, terms, sums + i * 64, (r + i) * g.m + c0);
      }
  });
}

// Both kernels' entry: the sums' start per output channel (bias_i32 less the
// +128 shift's correction, wrapping; then a block's worth of zeros: masked
// loads read no further) and the compile-time variant, run(flip, requant,
// z kind, bounded, start, k) with each of the first four a
// std::integral_constant (bounded only where the output is requantized).
template <class Run>
void with_nhwc_variant(const ConvGeom& g, bool x_nonneg, const int32_t* corr, const Epilogue& e, const Run& run) {
  std::vector<int32_t> start(static_cast<size_t>(g.m + kNhwcNR), 0);
  for (int64_t c = 0; c < g.m; ++c)
    start[c] = static_cast<int32_t>(static_cast<uint32_t>(e.bias_i32 ? e.bias_i32[c] : 0) -
                                    static_cast<uint32_t>(x_nonneg ? 0 : corr[c]));
  const EpiConst k(e);
  auto go = [&](auto flip) {
    with_epilogue_kind(e, [&](auto requant, auto z) {
      if constexpr (decltype(requant)::value) {
        if (e.v_bounded) run(flip, requant, z, std::true_type{}, start.data(), k);
        else run(flip, requant, z, std::false_type{}, start.data(), k);
      } else {
        run(flip, requant, z, std::false_type{}, start.data(), k);
      }
    });
  };
  if (x_nonneg) go(std::false_type{});
  else go(std::true_type{});
}

}  // namespace

void pack_w_dw_nhwc(const int8_t* w, int64_t c, int64_t taps, int8_t* out, int32_t* corr) {
  const int64_t groups = (taps + 3) / 4;
  std::memset(out, 0, static_cast<size_t>(packed_w_dw_nhwc_bytes(c, taps)));
  for (int64_t ch = 0; ch < c; ++ch) {
    // Block, then lane L, vector k, dword i of the channel (dw_tile's order).
    const int64_t cl = ch % kNhwcNR, lane = cl / 16, vec = cl % 16 / 4, i = cl % 4;
    int8_t* blk = out + ch / kNhwcNR * groups * 4 * 64;
    for (int64_t t = 0; t < taps; ++t) blk[((t / 4) * 4 + vec) * 64 + lane * 16 + i * 4 + t % 4] = w[ch * taps + t];
  }
  weight_sums(w, taps, c, taps, 128, corr);
}

size_t qconv_dw_nhwc_avx512vnni_workspace(const ConvGeom& g, int threads) {
  return dw_nhwc_plan(g, threads).ck.workspace(threads);
}

void qconv_dw_nhwc_avx512vnni(ThreadPool& pool, const ConvGeom& g, const int8_t* x, bool x_nonneg,
                              const int8_t* packed_w, const int32_t* corr, const Epilogue& e, void* ws) {
  ENGINE_CHECK(qconv_dw_nhwc_avx512vnni_applies(g), "qconv_dw_nhwc_avx512vnni: not a 2-D depthwise conv");
  with_nhwc_variant(g, x_nonneg, corr, e, [&](auto f, auto r, auto z, auto b, const int32_t* start, const EpiConst& k) {
    run_dw_nhwc<decltype(f)::value, decltype(r)::value, decltype(z)::value, decltype(b)::value>(pool, g, x, packed_w,
                                                                                                start, k, ws);
  });
}

void pack_w_nhwc(const int8_t* w, int64_t m, int64_t c, int64_t taps, int8_t* out, int32_t* corr) {
  const int64_t cq = round_up(c, 4) / 4, k = c * taps;
  std::memset(out, 0, static_cast<size_t>(packed_w_nhwc_bytes(m, c, taps)));
  for (int64_t o = 0; o < m; ++o) {
    int8_t* blk = out + o / kNhwcNR * taps * cq * kBlockBytes + o % kNhwcNR * 4;
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t t = 0; t < taps; ++t) blk[(t * cq + ch / 4) * kBlockBytes + ch % 4] = w[(o * c + ch) * taps + t];
  }
  weight_sums(w, k, m, k, 128, corr);
}

size_t qconv_nhwc_avx512vnni_workspace(const ConvGeom& g, int threads) {
  return nhwc_plan(g, threads).ck.workspace(threads);
}

void qconv_nhwc_avx512vnni(ThreadPool& pool, const ConvGeom& g, const int8_t* x, bool x_nonneg,
                           const int8_t* packed_w, const int32_t* corr, const Epilogue& e, void* ws) {
  with_nhwc_variant(g, x_nonneg, corr, e, [&](auto f, auto r, auto z, auto b, const int32_t* start, const EpiConst& k) {
    run_nhwc<decltype(f)::value, decltype(r)::value, decltype(z)::value, decltype(b)::value>(pool, g, x, packed_w,
                                                                                             start, k, ws);
  });
}

}  // namespace engine::qk
