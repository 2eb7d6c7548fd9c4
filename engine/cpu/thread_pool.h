// A small fork-join thread pool for kernels.
//
// parallel_for splits [0, n) into contiguous chunks that the calling thread
// and the workers claim dynamically, and returns when all are done. Workers spin
// briefly before sleeping, so back-to-back kernels at batch 1 do not pay a
// futex wake-up each. Not reentrant: a kernel must not call parallel_for from
// inside a parallel_for body. One pool per executor; run() is serialized by
// the executor.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace engine {

class ThreadPool {
 public:
  // num_threads <= 0 means one per hardware thread.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }
  // fn(tid, nthreads) on every thread (static partitions by tid).
  void run(const std::function<void(int, int)>& fn);
  // fn(slot, nthreads) on the calling thread (slot 0) and on each worker that
  // wakes up while the caller's fn still runs (slots 1 ..). For bodies that
  // claim their work dynamically (an atomic counter): a worker that is late
  // or descheduled (a loaded machine, a busy sibling core) then costs
  // nothing, where run() waits for it. Returns when the caller's fn and
  // every worker that joined have returned. Slots are unique within a call,
  // so they may index per-thread scratch.
  void run_any(const std::function<void(int, int)>& fn);
  // fn(begin, end) over chunks of [0, n); chunks are at least `grain` items.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

  static int hardware_threads();

 private:
  void worker(int tid);
  void run_impl(const std::function<void(int, int)>& fn, bool all);

  int num_threads_;
  std::vector<std::thread> threads_;
  const std::function<void(int, int)>* task_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  // The open job's generation, 0 between jobs. A worker counts itself in
  // active_ before checking it, so closing a job (store 0, then wait for
  // active_ == 0) never leaves a worker inside a finished job's fn.
  std::atomic<uint64_t> open_gen_{0};
  std::atomic<int> active_{0};
  bool all_ = true;  // the open job needs every worker (run) or any (run_any)
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
};

}  // namespace engine
