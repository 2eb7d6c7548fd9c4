// Kernel registration for the norm_pool family (see cpu/kernel.h for the
// contract; the kernels live in the files named after their op), and the
// threading helper they share.
#include <algorithm>
#include <atomic>

#include "cpu/kernels/norm_pool/norm_pool.h"

namespace engine {

void parallel_chunks(KernelContext& ctx, int64_t n, int64_t grain,
                     const std::function<void(int64_t, int64_t, int)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int threads = ctx.pool().num_threads();
  if (threads <= 1 || n <= grain) {
    fn(0, n, 0);
    return;
  }
  // Up to 4 chunks per thread, claimed dynamically (run_any): a worker that
  // is late (descheduled on a busy machine) leaves its share to the others
  // instead of stalling the whole op, as a fixed chunk per thread would.
  const int64_t chunks = std::min<int64_t>(4 * threads, (n + grain - 1) / grain);
  std::atomic<int64_t> next{0};
  ctx.pool().run_any([&](int tid, int) {
    for (;;) {
      const int64_t c = next.fetch_add(1, std::memory_order_relaxed);
      if (c >= chunks) return;
      const int64_t begin = n * c / chunks, end = n * (c + 1) / chunks;
      if (begin < end) fn(begin, end, tid);
    }
  });
}

void register_norm_pool_kernels(KernelRegistry& r) {
  r.add(OpKind::kBatchNormalization, {make_batch_norm_kernel, false});
  r.add(OpKind::kInstanceNormalization, {make_group_norm_kernel, false});
  r.add(OpKind::kGroupNormalization, {make_group_norm_kernel, false});
  r.add(OpKind::kSqueezeExcite, {make_squeeze_excite_kernel, false});
  r.add(OpKind::kChannelSplitNorm, {make_channel_split_norm_kernel, false});
  r.add(OpKind::kLayerNormalization, {make_layer_norm_kernel, false});
  r.add(OpKind::kChannelLayerNorm, {make_channel_layer_norm_kernel, false});
  r.add(OpKind::kMaxPool, {make_pool_kernel, false});
  r.add(OpKind::kAveragePool, {make_pool_kernel, false});
  r.add(OpKind::kGlobalAveragePool, {make_global_pool_kernel, false});
  r.add(OpKind::kGlobalMaxPool, {make_global_pool_kernel, false});
  r.add(OpKind::kReduceMean, {make_reduce_kernel, false});
  r.add(OpKind::kReduceSum, {make_reduce_kernel, false});
  r.add(OpKind::kReduceMax, {make_reduce_kernel, false});
  r.add(OpKind::kReduceMin, {make_reduce_kernel, false});
  r.add(OpKind::kSoftmax, {make_softmax_kernel, false});
  r.add(OpKind::kLogSoftmax, {make_softmax_kernel, false});
}

}  // namespace engine
