// Packed SGEMM for AVX2+FMA with a fused epilogue, BLIS-style:
//
//   for each task (item, row chunk, column block of nc):     parallel, dynamic
//     for k0 in K by kc:                                     kc = gemm_kc(K) <= 256
//       B~ = pack B[k0:k0+kc, n0:n0+nc]  (or the pre-packed / shared block)  ~L2
//       for row blocks of kMcBlock rows within the chunk:
//         A~ = pack A rows (or the pre-packed block)
//         for each 6-row panel of A~:                                  L1
//           for each 16-column panel of B~:                            L2
//             micro-kernel: 6x16 accumulators (12 ymm) += A~ panel x B~ panel
//             on the last k block: + bias / residual, activation, store
//
// Why this shape: the 6x16 tile uses 12 accumulators + 2 B vectors + 1 A
// broadcast = 15 of 16 ymm registers and issues 12 FMAs per 2 loads, enough
// to keep both FMA pipes busy with latency 4. Edge tiles use the same code
// instantiated for fewer rows / one vector of columns, with masked loads and
// stores, and tails of at most 4 columns a kernel that vectorizes over rows,
// so there are no scalar tails. The epilogue runs on registers right after
// the last k block, so bias, residual and activation cost no extra pass over
// the output. Column panels innermost (B~ streams from L2, the A panel stays
// in L1) makes each sweep write 6 output rows sequentially, which measured
// up to 20% faster than the BLIS order on short-K layers whose output goes
// to memory (1x1 convs with 64 input channels).
#include <atomic>
#include <cstring>

#include "cpu/kernels/conv_gemm/activation_avx2.h"
#include "cpu/kernels/conv_gemm/conv_gemm.h"

namespace engine {
namespace conv_gemm {
namespace {

constexpr int64_t kNcMax = 256;   // columns per task block (B~ = kc x nc <= 256 KB)
constexpr int64_t kMcBlock = 96;  // rows per A~ block (96 x 256 floats = 96 KB)

struct TileArgs {
  float* c;
  int64_t ldc;
  const float* bias_m;  // at the tile's first row, or null
  const float* bias_n;  // at the tile's first column, or null
  const float* z;       // at the tile's first element, or null
  int64_t ldz;
  float alpha;
  bool load_c;
  bool last;
  const Activation* act;
};

// acc[R][NV] += A panel (kc x kMR) x B panel (kc x kNR, first NV vectors),
// then the epilogue; nr <= 8*NV valid columns.
// The k loop keeps its accumulators in named locals: an array whose address
// the epilogue takes would be kept in memory (GCC then stores all twelve
// accumulators every iteration).
#define ENGINE_ROW(r)                                                        \
  if constexpr (R > r) {                                                     \
    const __m256 av = _mm256_broadcast_ss(a + k * kMR + r);                  \
    c##r##0 = _mm256_fmadd_ps(av, b0, c##r##0);                              \
    if constexpr (NV == 2) c##r##1 = _mm256_fmadd_ps(av, b1, c##r##1);       \
  }

// acc[R][NV] = A panel (kc x kMR) x B panel (kc x kNR, first NV vectors),
// then the epilogue; nr <= 8*NV valid columns.
template <int R, int NV>
void micro_kernel(int64_t kc, const float* a, const float* b, int nr, const TileArgs& t) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(b + k * kNR);
    const __m256 b1 = NV == 2 ? _mm256_load_ps(b + k * kNR + 8) : b0;
    ENGINE_ROW(0)
    ENGINE_ROW(1)
    ENGINE_ROW(2)
    ENGINE_ROW(3)
    ENGINE_ROW(4)
    ENGINE_ROW(5)
  }
  __m256 acc[kMR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};

  const bool full = nr == 8 * NV;
  __m256i mask[NV];
  for (int v = 0; v < NV; ++v) mask[v] = tail_mask(std::max(0, std::min(8, nr - 8 * v)));
  auto load = [&](const float* p, int v) {
    return full ? _mm256_loadu_ps(p + 8 * v) : _mm256_maskload_ps(p + 8 * v, mask[v]);
  };

  if (t.alpha != 1.f) {
    const __m256 al = _mm256_set1_ps(t.alpha);
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_mul_ps(acc[r][v], al);
  }
  if (t.load_c)
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_add_ps(acc[r][v], load(t.c + r * t.ldc, v));
  if (t.last) {
    if (t.bias_m)
      for (int r = 0; r < R; ++r) {
        const __m256 bm = _mm256_broadcast_ss(t.bias_m + r);
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_add_ps(acc[r][v], bm);
      }
    if (t.bias_n)
      for (int v = 0; v < NV; ++v) {
        const __m256 bn = load(t.bias_n, v);
        for (int r = 0; r < R; ++r) acc[r][v] = _mm256_add_ps(acc[r][v], bn);
      }
    if (t.z)
      for (int r = 0; r < R; ++r)
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_add_ps(acc[r][v], load(t.z + r * t.ldz, v));
    if (t.act->kind != Act::kNone)
      with_act(*t.act, [&](const auto& op) {
        for (int r = 0; r < R; ++r)
          for (int v = 0; v < NV; ++v) acc[r][v] = op(acc[r][v]);
      });
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) {
      float* p = t.c + r * t.ldc + 8 * v;
      if (full) _mm256_storeu_ps(p, acc[r][v]);
      else _mm256_maskstore_ps(p, mask[v], acc[r][v]);
    }
}

#undef ENGINE_ROW

// Narrow column tails (nr <= 4, e.g. the 49th column of a 7x7 output): the
// 6x8 kernel would spend 6 FMAs per k on mostly dead columns. Here the six
// rows of A form one vector and each column j accumulates A_k * B[k, j] in
// U independent chains (k unrolled) to cover the FMA latency. mr rows valid.
#define ENGINE_COL(j, u)                                                                       \
  if constexpr (NRT > j && U > u)                                                              \
    c##j##u = _mm256_fmadd_ps(av##u, _mm256_broadcast_ss(b + (k + u) * kNR + j), c##j##u);

template <int NRT>
void micro_kernel_cols(int64_t kc, const float* a, const float* b, int mr, const TileArgs& t) {
  constexpr int U = NRT <= 2 ? 4 : 2;
  const __m256i rows = tail_mask(kMR);  // never read past the panel's end
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
  __m256 c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  int64_t k = 0;
  for (; k + U <= kc; k += U) {
    const __m256 av0 = _mm256_maskload_ps(a + k * kMR, rows);
    const __m256 av1 = _mm256_maskload_ps(a + (k + 1) * kMR, rows);
    __m256 av2 = av0, av3 = av0;
    if constexpr (U == 4) {
      av2 = _mm256_maskload_ps(a + (k + 2) * kMR, rows);
      av3 = _mm256_maskload_ps(a + (k + 3) * kMR, rows);
    }
    ENGINE_COL(0, 0) ENGINE_COL(0, 1) ENGINE_COL(0, 2) ENGINE_COL(0, 3)
    ENGINE_COL(1, 0) ENGINE_COL(1, 1) ENGINE_COL(1, 2) ENGINE_COL(1, 3)
    ENGINE_COL(2, 0) ENGINE_COL(2, 1)
    ENGINE_COL(3, 0) ENGINE_COL(3, 1)
  }
  for (; k < kc; ++k) {
    const __m256 av0 = _mm256_maskload_ps(a + k * kMR, rows);
    ENGINE_COL(0, 0) ENGINE_COL(1, 0) ENGINE_COL(2, 0) ENGINE_COL(3, 0)
  }
  alignas(32) float acc[4][8];
  _mm256_store_ps(acc[0], _mm256_add_ps(_mm256_add_ps(c00, c01), _mm256_add_ps(c02, c03)));
  _mm256_store_ps(acc[1], _mm256_add_ps(_mm256_add_ps(c10, c11), _mm256_add_ps(c12, c13)));
  _mm256_store_ps(acc[2], _mm256_add_ps(c20, c21));
  _mm256_store_ps(acc[3], _mm256_add_ps(c30, c31));
  for (int r = 0; r < mr; ++r)
    for (int j = 0; j < NRT; ++j) {
      float v = acc[j][r] * t.alpha;
      float* c = t.c + r * t.ldc + j;
      if (t.load_c) v += *c;
      if (t.last) {
        if (t.bias_m) v += t.bias_m[r];
        if (t.bias_n) v += t.bias_n[j];
        if (t.z) v += t.z[r * t.ldz + j];
        v = activate(v, *t.act);
      }
      *c = v;
    }
}

#undef ENGINE_COL

using ColKernel = void (*)(int64_t, const float*, const float*, int, const TileArgs&);
const ColKernel kColKernels[4] = {micro_kernel_cols<1>, micro_kernel_cols<2>, micro_kernel_cols<3>,
                                  micro_kernel_cols<4>};

using MicroKernel = void (*)(int64_t, const float*, const float*, int, const TileArgs&);

// [rows - 1][vectors - 1]
const MicroKernel kKernels[kMR][2] = {
    {micro_kernel<1, 1>, micro_kernel<1, 2>}, {micro_kernel<2, 1>, micro_kernel<2, 2>},
    {micro_kernel<3, 1>, micro_kernel<3, 2>}, {micro_kernel<4, 1>, micro_kernel<4, 2>},
    {micro_kernel<5, 1>, micro_kernel<5, 2>}, {micro_kernel<6, 1>, micro_kernel<6, 2>},
};

// Copies len contiguous floats into B panels starting at column i of the
// panel row drow (column i lives at drow + (i / kNR) * kNR * kc + i % kNR).
inline void put_run(float* drow, int64_t kc, int64_t i, const float* src, int64_t len) {
  while (len > 0) {
    const int64_t j = i % kNR;
    const int64_t l = std::min(len, kNR - j);
    float* d = drow + (i / kNR) * kNR * kc + j;
    if (l == kNR) {
      _mm256_store_ps(d, _mm256_loadu_ps(src));
      _mm256_store_ps(d + 8, _mm256_loadu_ps(src + 8));
    } else {
      for (int64_t e = 0; e < l; ++e) d[e] = src[e];
    }
    i += l;
    src += l;
    len -= l;
  }
}

// B block [k0, k0+kc) x [n0, n0+nc) of a strided matrix into panels.
void pack_b_block(const float* b, int64_t rs, int64_t cs, int64_t k0, int64_t kc, int64_t n0, int64_t nc,
                  float* dst) {
  for (int64_t kk = 0; kk < kc; ++kk) {
    const float* src = b + (k0 + kk) * rs + n0 * cs;
    float* drow = dst + kk * kNR;
    if (cs == 1) {
      put_run(drow, kc, 0, src, nc);
    } else {
      for (int64_t i = 0; i < nc; ++i) drow[(i / kNR) * kNR * kc + i % kNR] = src[i * cs];
    }
  }
}

// A rows [r0, r1) x [k0, k0+kc) of a strided matrix into panels (rows past
// r1 within the last panel are zero).
void pack_a_block(const float* a, int64_t rs, int64_t cs, int64_t r0, int64_t r1, int64_t k0, int64_t kc,
                  float* dst) {
  for (int64_t p = 0; r0 + p * kMR < r1; ++p) {
    float* d = dst + p * kMR * kc;
    for (int r = 0; r < kMR; ++r) {
      const int64_t i = r0 + p * kMR + r;
      if (i < r1) {
        const float* src = a + i * rs + k0 * cs;
        for (int64_t kk = 0; kk < kc; ++kk) d[kk * kMR + r] = src[kk * cs];
      } else {
        for (int64_t kk = 0; kk < kc; ++kk) d[kk * kMR + r] = 0.f;
      }
    }
  }
}

struct Plan {
  int64_t kc_max, mpanels, npanels, npad, nblocks, mchunks, tasks, kblocks;
  int64_t nc;  // widest column block (floats, a multiple of kNR)
  size_t b_floats, a_floats;  // per-thread buffers
  // When M is split, the row chunks of one (item, column block) share its B
  // blocks, packed once by a first parallel phase: shared_floats for all of
  // them, (item, block) at (item * nblocks + block) * k * nc, k block k0
  // at k0 * nc within.
  bool shared_b;
  size_t shared_floats;

  // Column block b and row chunk c, split at panel granularity into parts
  // that differ by at most one panel.
  void block(int64_t b, int64_t n, int64_t* n0, int64_t* ncols) const {
    const int64_t q0 = b * npanels / nblocks, q1 = (b + 1) * npanels / nblocks;
    *n0 = q0 * kNR;
    *ncols = std::min(q1 * kNR, n) - *n0;
  }
  void chunk(int64_t c, int64_t* p0, int64_t* p1) const {
    *p0 = c * mpanels / mchunks;
    *p1 = (c + 1) * mpanels / mchunks;
  }
};

Plan make_plan(const GemmSpec& s, int threads) {
  Plan p;
  p.kc_max = gemm_kc(s.k);
  p.kblocks = (s.k + p.kc_max - 1) / p.kc_max;
  p.mpanels = (s.m + kMR - 1) / kMR;
  p.npanels = (s.n + kNR - 1) / kNR;
  p.npad = p.npanels * kNR;
  // Column blocks are the cheap way to make tasks (each just packs its own
  // part of B): aim for 4 per thread, so that dynamic scheduling evens out
  // a core that other work slows down, but keep blocks at least 4 panels
  // wide so each A panel still meets enough columns. Then round the task
  // count up to a multiple of the thread count.
  int64_t nb = (p.npanels + kNcMax / kNR - 1) / (kNcMax / kNR);
  if (threads > 1) {
    const int64_t want = (4 * threads + s.items - 1) / s.items;
    nb = std::max(nb, std::min(want, p.npanels / 4));
    while ((s.items * nb) % threads != 0 && nb < p.npanels && s.items * nb < 16 * threads) ++nb;
  }
  p.nblocks = std::max<int64_t>(1, std::min(nb, p.npanels));
  p.nc = (p.npanels + p.nblocks - 1) / p.nblocks * kNR;
  // Row chunks: when items x column blocks give fewer than 4 tasks per
  // thread (small outputs: 14x14, 7x7 at batch 1), split M too, into chunks
  // of at least 4 panels; the chunks of a column block share its packed B.
  const int64_t base = s.items * p.nblocks;
  p.mchunks = 1;
  if (threads > 1 && base < 4 * threads) {
    const int64_t most = std::max<int64_t>(1, p.mpanels / 4);
    p.mchunks = std::min(most, (4 * threads + base - 1) / base);
    while ((base * p.mchunks) % threads != 0 && p.mchunks < most) ++p.mchunks;
  }
  p.tasks = base * p.mchunks;
  p.shared_b = !s.b_packed && p.mchunks > 1;
  p.shared_floats = p.shared_b ? static_cast<size_t>(s.items * p.nblocks * s.k * p.nc) : 0;
  p.b_floats = s.b_packed || p.shared_b ? 0 : static_cast<size_t>(p.kc_max * p.nc);
  const int64_t chunk_rows = (p.mpanels + p.mchunks - 1) / p.mchunks * kMR;
  p.a_floats = s.a_packed ? 0 : static_cast<size_t>(std::min<int64_t>(round_up(kMcBlock, kMR), chunk_rows) * p.kc_max);
  return p;
}

size_t aligned_bytes(size_t floats) { return round_up(static_cast<int64_t>(floats * sizeof(float)), 64); }

// Packs B block [k0, k0+kc) x columns of `nblock` into dst (panel layout).
void pack_b_any(const GemmSpec& s, const Plan& p, const GemmItem& it, int64_t nblock, int64_t k0, int64_t kc,
                float* dst) {
  int64_t n0, nc;
  p.block(nblock, s.n, &n0, &nc);
  if (s.pack_b_fn) s.pack_b_fn(s.pack_b_ctx, it.b, k0, kc, n0, nc, dst);
  else pack_b_block(it.b, s.b_rs, s.b_cs, k0, kc, n0, nc, dst);
  // Zero the unused columns of a partial last panel: they are never stored,
  // but stale scratch could hold denormals or NaNs that slow the FMAs down.
  if (nc % kNR != 0) {
    float* last = dst + (nc / kNR) * kNR * kc;
    for (int64_t kk = 0; kk < kc; ++kk) std::memset(last + kk * kNR + nc % kNR, 0, (kNR - nc % kNR) * sizeof(float));
  }
}

// shared_b: this (item, block)'s B packed by phase 1 (Plan::shared_b), or null.
void run_task(const GemmSpec& s, const Plan& p, const GemmItem& it, int64_t mchunk, int64_t nblock, float* buf_a,
              float* buf_b, const float* shared_b) {
  int64_t n0, nc, p0, p1;
  p.block(nblock, s.n, &n0, &nc);
  p.chunk(mchunk, &p0, &p1);
  const int64_t mpad = p.mpanels * kMR;
  const int64_t qn = (nc + kNR - 1) / kNR;
  const int64_t block_panels = round_up(kMcBlock, kMR) / kMR;
  for (int64_t k0 = 0; k0 < s.k; k0 += p.kc_max) {
    const int64_t kc = std::min(p.kc_max, s.k - k0);
    const float* bp;
    if (s.b_packed) {
      bp = it.b + k0 * p.npad + n0 * kc;
    } else if (shared_b) {
      bp = shared_b + k0 * p.nc;
    } else {
      pack_b_any(s, p, it, nblock, k0, kc, buf_b);
      bp = buf_b;
    }
    TileArgs t;
    t.ldc = s.ldc;
    t.ldz = s.ldz;
    t.alpha = s.ep.alpha;
    t.load_c = k0 > 0 || s.ep.c_init;
    t.last = k0 + kc >= s.k;
    t.act = &s.ep.act;
    for (int64_t pb = p0; pb < p1; pb += block_panels) {
      const int64_t pe = std::min(p1, pb + block_panels);
      const float* ap;
      if (s.a_packed) {
        ap = it.a + k0 * mpad + pb * kMR * kc;
      } else {
        pack_a_block(it.a, s.a_rs, s.a_cs, pb * kMR, std::min(s.m, pe * kMR), k0, kc, buf_a);
        ap = buf_a;
      }
      for (int64_t pi = pb; pi < pe; ++pi) {
        for (int64_t q = 0; q < qn; ++q) {
          const int64_t col = n0 + q * kNR;
          const int nr = static_cast<int>(std::min<int64_t>(kNR, nc - q * kNR));
          const float* bq = bp + q * kNR * kc;
          const int64_t row = pi * kMR;
          const int mr = static_cast<int>(std::min<int64_t>(kMR, s.m - row));
          t.c = it.c + row * s.ldc + col;
          t.bias_m = it.bias_m ? it.bias_m + row : nullptr;
          t.bias_n = it.bias_n ? it.bias_n + col : nullptr;
          t.z = it.z ? it.z + row * s.ldz + col : nullptr;
          if (nr <= 4) kColKernels[nr - 1](kc, ap + (pi - pb) * kMR * kc, bq, mr, t);
          else kKernels[mr - 1][nr > 8 ? 1 : 0](kc, ap + (pi - pb) * kMR * kc, bq, nr, t);
        }
      }
    }
  }
}

}  // namespace

size_t sgemm_scratch_bytes(const GemmSpec& spec, int threads) {
  const Plan p = make_plan(spec, threads);
  return static_cast<size_t>(threads) * (aligned_bytes(p.a_floats) + aligned_bytes(p.b_floats)) +
         aligned_bytes(p.shared_floats) + 64;
}

void sgemm_avx2(ThreadPool& pool, const GemmSpec& spec, GemmItemFn item_fn, const void* item_ctx, void* scratch) {
  if (spec.m <= 0 || spec.n <= 0 || spec.items <= 0) return;
  const int threads = pool.num_threads();
  const Plan p = make_plan(spec, threads);
  const size_t per_thread = aligned_bytes(p.a_floats) + aligned_bytes(p.b_floats);
  auto* base = static_cast<char*>(scratch);
  float* shared = reinterpret_cast<float*>(base + threads * per_thread);
  const int64_t block_floats = spec.k * p.nc;
  const int64_t pack_tasks = p.shared_b ? spec.items * p.nblocks * p.kblocks : 0;
  std::atomic<int64_t> next_pack{0}, packed{0}, next{0};
  // Tasks are handed out dynamically: cores shared with other work and
  // uneven last blocks then cost less than a static split would.
  auto worker = [&](int tid, int) {
    float* buf_a = reinterpret_cast<float*>(base + tid * per_thread);
    float* buf_b = reinterpret_cast<float*>(base + tid * per_thread + aligned_bytes(p.a_floats));
    int64_t last_item = -1;
    GemmItem it;
    auto item_at = [&](int64_t item) -> const GemmItem& {
      if (item != last_item) {
        it = item_fn(item_ctx, item);
        last_item = item;
      }
      return it;
    };
    if (pack_tasks > 0) {
      // Phase 1: every (item, column block, k block) of B, once.
      for (;;) {
        const int64_t t = next_pack.fetch_add(1, std::memory_order_relaxed);
        if (t >= pack_tasks) break;
        const int64_t ib = t / p.kblocks, k0 = (t % p.kblocks) * p.kc_max;
        pack_b_any(spec, p, item_at(ib / p.nblocks), ib % p.nblocks, k0, std::min(p.kc_max, spec.k - k0),
                   shared + ib * block_floats + k0 * p.nc);
        packed.fetch_add(1, std::memory_order_release);
      }
      while (packed.load(std::memory_order_acquire) < pack_tasks) _mm_pause();
    }
    for (;;) {
      const int64_t task = next.fetch_add(1, std::memory_order_relaxed);
      if (task >= p.tasks) break;
      // Order: item, column block, row chunk (row chunks of one block adjacent).
      const int64_t item = task / (p.nblocks * p.mchunks);
      const int64_t rest = task % (p.nblocks * p.mchunks);
      const int64_t nblock = rest / p.mchunks;
      const float* sb = p.shared_b ? shared + (item * p.nblocks + nblock) * block_floats : nullptr;
      run_task(spec, p, item_at(item), rest % p.mchunks, nblock, buf_a, buf_b, sb);
    }
  };
  if (p.tasks == 1) {
    worker(0, 1);
  } else {
    // A one-pointer capture keeps std::function in its inline storage: no
    // heap allocation per call.
    const auto* w = &worker;
    pool.run([w](int tid, int n) { (*w)(tid, n); });
  }
}

}  // namespace conv_gemm
}  // namespace engine
