// The driver of the packed SGEMM, shared by the ISA tiers: task planning
// (items x column blocks x row chunks), B/A block packing into the panel
// layout of conv_gemm.h, and the parallel loop. A tier supplies `Sweep`,
// which runs its micro-kernels over one packed A block x one packed B block:
//   Sweep::run(spec, item, A~ (panels [pb, pe)), B~ (columns [n0, n0+nc)), kc, tile args, B~'s strides)
// B~ is packed panels (k rows kNR floats apart, panels kNR * kc apart), or,
// where the Sweep reads B in place (Sweep::kDirectB: a row-major B whose
// rows are whole panels, as a 1x1 conv's input at 56x56 or 28x28), B itself
// (k rows b_rs apart, panels kNR apart): no B pack at all.
// Both tiers use the same panel layout (kMR = 6 rows, kNR = 16 columns per
// panel), so weights pre-packed in create() serve either tier; the AVX-512
// sweep reads two panels at a time for its 12x32 tile.
// Include only from *_avx2*.cc / *_avx512*.cc files; internal linkage.
#pragma once

#include <immintrin.h>

#include <atomic>
#include <cstring>

#include "cpu/kernels/conv_gemm/sgemm_tiles_avx2.h"

namespace engine {
namespace conv_gemm {
namespace {

constexpr int64_t kNcMax = 256;   // columns per task block (B~ = kc x nc <= 256 KB)
constexpr int64_t kMcBlock = 96;  // rows per A~ block (96 x 256 floats = 96 KB)

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
  // Task order within an item: row chunk major when A outweighs B (M > N:
  // deep layers at small batch), so that a thread's run of tasks
  // (AffineTasks) covers its rows for every column block and reads its part
  // of A only; column block major otherwise (its columns of B only).
  bool rows_major = false;
  bool direct_b = false;  // B read in place (make_plan)

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

// direct_ok: the Sweep can read B in place (Sweep::kDirectB).
Plan make_plan(const GemmSpec& s, int threads, bool direct_ok = false) {
  Plan p;
  // B read in place: row-major, every column block whole panels (n a
  // multiple of kNR; blocks split at panels). A 1x1 conv at 56x56 with 64
  // input channels spent 15% of its time packing B (Zen 4, one thread).
  p.direct_b = direct_ok && !s.b_packed && !s.pack_b_fn && s.b_cs == 1 && s.n % kNR == 0;
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
  p.rows_major = p.mchunks > 1 && s.m > s.n;
  p.shared_b = !s.b_packed && !p.direct_b && p.mchunks > 1;
  p.shared_floats = p.shared_b ? static_cast<size_t>(s.items * p.nblocks * s.k * p.nc) : 0;
  p.b_floats = s.b_packed || p.shared_b || p.direct_b ? 0 : static_cast<size_t>(p.kc_max * p.nc);
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
template <typename Sweep>
void run_task(const GemmSpec& s, const Plan& p, const GemmItem& it, int64_t mchunk, int64_t nblock, float* buf_a,
              float* buf_b, const float* shared_b) {
  int64_t n0, nc, p0, p1;
  p.block(nblock, s.n, &n0, &nc);
  p.chunk(mchunk, &p0, &p1);
  const int64_t mpad = s.a_rows > 0 ? round_up(s.a_rows, kMR) : p.mpanels * kMR;
  const int64_t block_panels = round_up(kMcBlock, kMR) / kMR;
  for (int64_t k0 = 0; k0 < s.k; k0 += p.kc_max) {
    const int64_t kc = std::min(p.kc_max, s.k - k0);
    const float* bp;
    int64_t bks = kNR, bps = kNR * kc;  // B~'s k-row and panel strides
    if (s.b_packed) {
      bp = it.b + k0 * p.npad + n0 * kc;
    } else if (p.direct_b) {
      bp = it.b + k0 * s.b_rs + n0;
      bks = s.b_rs;
      bps = kNR;
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
        ap = it.a + k0 * mpad + (s.a_row0 / kMR + pb) * kMR * kc;
      } else {
        pack_a_block(it.a, s.a_rs, s.a_cs, pb * kMR, std::min(s.m, pe * kMR), k0, kc, buf_a);
        ap = buf_a;
      }
      Sweep::run(s, it, ap, bp, pb, pe, n0, nc, kc, t, bks, bps);
    }
  }
}


template <typename Sweep>
void sgemm_run(ThreadPool& pool, const GemmSpec& spec, GemmItemFn item_fn, const void* item_ctx, void* scratch) {
  if (spec.m <= 0 || spec.n <= 0 || spec.items <= 0) return;
  const int threads = pool.num_threads();
  const Plan p = make_plan(spec, threads, Sweep::kDirectB);
  const size_t per_thread = aligned_bytes(p.a_floats) + aligned_bytes(p.b_floats);
  auto* base = static_cast<char*>(scratch);
  float* shared = reinterpret_cast<float*>(base + threads * per_thread);
  const int64_t block_floats = spec.k * p.nc;
  const int64_t pack_tasks = p.shared_b ? spec.items * p.nblocks * p.kblocks : 0;
  std::atomic<int64_t> packed{0};
  // Tasks are handed out as AffineTasks: thread t starts on the t-th run of
  // tasks (in the order Plan::rows_major picks) and on the t-th run of B
  // blocks to pack; cores shared with other work and uneven last blocks
  // then cost less than a static split would.
  AffineTasks pack_claims(pack_tasks, threads), claims(p.tasks, threads);
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
      for (int64_t t = pack_claims.claim(tid); t >= 0; t = pack_claims.claim(tid)) {
        const int64_t ib = t / p.kblocks, k0 = (t % p.kblocks) * p.kc_max;
        pack_b_any(spec, p, item_at(ib / p.nblocks), ib % p.nblocks, k0, std::min(p.kc_max, spec.k - k0),
                   shared + ib * block_floats + k0 * p.nc);
        packed.fetch_add(1, std::memory_order_release);
      }
      for (int64_t i = 0; packed.load(std::memory_order_acquire) < pack_tasks; ++i) spin_wait_step(i);
    }
    for (int64_t task = claims.claim(tid); task >= 0; task = claims.claim(tid)) {
      // Order: item, then column block and row chunk (Plan::rows_major).
      const int64_t item = task / (p.nblocks * p.mchunks);
      const int64_t rest = task % (p.nblocks * p.mchunks);
      const int64_t nblock = p.rows_major ? rest % p.nblocks : rest / p.mchunks;
      const int64_t mchunk = p.rows_major ? rest / p.nblocks : rest % p.mchunks;
      const float* sb = p.shared_b ? shared + (item * p.nblocks + nblock) * block_floats : nullptr;
      run_task<Sweep>(spec, p, item_at(item), mchunk, nblock, buf_a, buf_b, sb);
    }
  };
  if (p.tasks == 1) {
    worker(0, 1);
  } else {
    pool.run_any(by_ref(worker));
  }
}


}  // namespace
}  // namespace conv_gemm
}  // namespace engine
