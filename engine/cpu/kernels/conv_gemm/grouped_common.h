// Shared by the direct grouped convolutions (grouped_avx2.cc,
// grouped_avx512.cc, grouped_oc.h): the per-thread input buffer and the task
// loop. Private to engine/cpu/kernels/conv_gemm/; portable code.
#pragma once

#include <cstring>

#include "cpu/kernels/conv_gemm/conv_gemm.h"
#include "cpu/thread_pool.h"

namespace engine {
namespace conv_gemm {
// Internal linkage: each kernel's translation unit (compiled for its own
// ISA) keeps its own copy of these functions, so the linker cannot hand
// the AVX2 kernel an AVX-512 build of them.
namespace grouped_detail {
namespace {

struct GroupedDims {
  int64_t pitch;     // floats per buffered input row
  int64_t rows_blk;  // output rows per task
  int64_t buf_rows;  // buffered input rows per channel
  int64_t floats() const { return buf_rows * pitch; }
};

inline GroupedDims grouped_dims(const ConvGeom& g, int threads) {
  GroupedDims d;
  // The last vector of a row computes up to 15 extra outputs (AVX-512), and
  // stride 2 reads 2 vectors per vector of outputs: slack of 16*sw + 16
  // floats keeps every read inside the row, for both widths.
  d.pitch = round_up((g.ow - 1) * g.sw + g.kw + 16 * g.sw + 16, 16);
  // Rows per task: the buffer of all Cin/g channels within about 64 KB (L2),
  // and at least 4 tasks per thread.
  const int64_t per_row = g.cg() * g.sh * d.pitch;
  int64_t rb = std::max<int64_t>(1, (16384 / std::max<int64_t>(per_row, 1)));
  rb = std::min(rb, g.oh);
  const int64_t want = 4 * static_cast<int64_t>(threads);
  const int64_t planes = g.batch * g.group;
  if (planes * ((g.oh + rb - 1) / rb) < want) {
    const int64_t blocks = std::min(g.oh, (want + planes - 1) / planes);
    rb = std::min(rb, (g.oh + blocks - 1) / blocks);
  }
  d.rows_blk = rb;
  d.buf_rows = (rb - 1) * g.sh + g.kh;
  return d;
}

// One thread's row buffer in the scratch (grouped_scratch_bytes holds one
// per thread, for_each_task hands them out): 64-byte aligned.
inline size_t buffer_bytes(const ConvGeom& g, const GroupedDims& d) {
  return round_up(g.cg() * d.floats() * sizeof(float), 64);
}

// Copies input rows [ih0, ih0 + buf_rows) of cg channels (rows outside the
// image are zero) into buf, each row at lead offset pw. Only the row's
// image columns are written: the lead and the tail of every row are zero
// from the thread's first task in this call (`first`: the whole buffer is
// cleared), and no task writes there. The rows are a few dozen floats, so
// the copy is a loop the compiler vectorizes, not a libc call per row.
inline void fill_rows(const ConvGeom& g, const GroupedDims& d, const float* __restrict x, int64_t ih0,
                      float* __restrict buf, bool first) {
  const int64_t cg = g.cg(), in_plane = g.in_plane();
  const int64_t lead = g.pw, copy_w = std::max<int64_t>(0, std::min(g.iw, d.pitch - lead));
  if (first) std::memset(buf, 0, static_cast<size_t>(cg * d.floats()) * sizeof(float));
  for (int64_t c = 0; c < cg; ++c)
    for (int64_t r = 0; r < d.buf_rows; ++r) {
      float* __restrict dst = buf + (c * d.buf_rows + r) * d.pitch + lead;
      const int64_t ih = ih0 + r;
      if (ih < 0 || ih >= g.ih) {
        for (int64_t i = 0; i < copy_w; ++i) dst[i] = 0.f;
        continue;
      }
      const float* __restrict src = x + c * in_plane + ih * g.iw;
      for (int64_t i = 0; i < copy_w; ++i) dst[i] = src[i];
    }
}

// One task of a direct grouped conv: output rows [oh0, oh1) of group grp of
// image img, whose input rows are in buf (fill_rows); y_off is the offset
// of the group's first output channel in Y (and Z).
struct GroupedTask {
  const float* buf;
  int64_t img, grp, oh0, oh1, y_off;
};

// Runs body(const GroupedTask&) for every task (image, group, block of
// output rows), rows fastest, claimed as AffineTasks: each thread takes a
// contiguous range, so the two threads rarely write the cache lines where
// one task's rows meet the next one's (first-come claims alternated
// neighbouring row blocks between the threads: a stride-2 layer with 2-row
// tasks sped up 1.3x on two threads instead of 1.9x). `scratch` holds
// grouped_scratch_bytes(g, pool.num_threads()).
template <typename Body>
void for_each_task(ThreadPool& pool, const ConvGeom& g, const GroupedDims& d, const float* x, void* scratch,
                   const Body& body) {
  const int threads = pool.num_threads();
  const size_t per_thread = buffer_bytes(g, d);
  const int64_t blocks = (g.oh + d.rows_blk - 1) / d.rows_blk;
  const int64_t tasks = g.batch * g.group * blocks;
  AffineTasks claims(tasks, threads);
  auto worker = [&](int tid, int) {
    float* buf = reinterpret_cast<float*>(static_cast<char*>(scratch) + tid * per_thread);
    bool first = true;
    for (int64_t t = claims.claim(tid); t >= 0; t = claims.claim(tid)) {
      GroupedTask task;
      task.buf = buf;
      task.img = t / blocks / g.group;
      task.grp = t / blocks % g.group;
      task.oh0 = t % blocks * d.rows_blk;
      task.oh1 = std::min(g.oh, task.oh0 + d.rows_blk);
      task.y_off = (task.img * g.cout + task.grp * g.mg()) * g.out_plane();
      fill_rows(g, d, x + (task.img * g.cin + task.grp * g.cg()) * g.in_plane(), task.oh0 * g.sh - g.ph, buf, first);
      first = false;
      body(task);
    }
  };
  if (tasks == 1 || threads == 1) {
    worker(0, 1);
  } else {
    pool.run_any(by_ref(worker));
  }
}

}  // namespace
}  // namespace grouped_detail
}  // namespace conv_gemm
}  // namespace engine
