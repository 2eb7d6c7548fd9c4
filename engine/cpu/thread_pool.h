// A small fork-join thread pool for kernels.
//
// parallel_for splits [0, n) into contiguous chunks, one per thread (the
// calling thread takes chunk 0), and returns when all are done. Workers spin
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
  // fn(tid, nthreads) on every thread.
  void run(const std::function<void(int, int)>& fn);
  // fn(begin, end) over chunks of [0, n); chunks are at least `grain` items.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

  static int hardware_threads();

 private:
  void worker(int tid);

  int num_threads_;
  std::vector<std::thread> threads_;
  const std::function<void(int, int)>* task_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
};

}  // namespace engine
