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
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace engine {

// One step of a spin-wait: a pause, and every 64th step a yield, so that
// with more threads than cores the thread being waited for (queued on this
// core) gets to run.
void spin_wait_step(int64_t step);

// The CPUs this process may run on (Linux: its affinity mask, in order);
// empty where that is not known.
std::vector<int> process_cpus();

// What a set of CPUs offers a compute-bound pool: the CPUs, the physical
// cores among them (distinct thread_siblings_list entries; the CPU count
// where sysfs does not say), the CPU limit of the process's cgroup (cpu.max,
// or cpu.cfs_quota_us / cpu.cfs_period_us in cgroup v1, over its cgroup
// and each ancestor; 0: none), and the threads that follows from them:
// min(cores, ceil(quota)), at least 1. `root` prefixes the /sys and /proc
// paths read (tests pass a made-up tree).
struct CpuBudget {
  int cpus = 0;
  int cores = 0;
  double quota = 0.0;
  int threads = 1;
};
CpuBudget cpu_budget(const std::vector<int>& cpus, const std::string& root = "");

// The thread count of a pool made with num_threads <= 0: PYENGINE_NUM_THREADS
// when set (an integer from 1 to 4096, else kInvalidArgument), otherwise
// cpu_budget(process_cpus()).threads. One thread per physical core: the
// int8 and FP32 kernels keep a core's vector units busy, so its second
// hardware thread adds no throughput, only a second share of the caches and
// a partner to wait for (two threads on SMT siblings ran a VNNI loop at half
// speed each, measured on a 2-vCPU VM whose host paired them at times).
// Threads beyond the affinity mask or a container's CPU quota take turns
// on the same CPUs, each spin-wait then costing a time slice.
int default_threads();

// A callable as a lambda holding one pointer to it: small enough for
// std::function's inline buffer, so handing it to the thread pool does not
// allocate on every call. `f` must outlive the call.
template <typename F>
auto by_ref(F& f) {
  return [p = &f](auto... args) { (*p)(args...); };
}

// Tasks [0, n) for the slots of one run_any call, claimed with locality:
// slot s owns the contiguous home range [s * n / slots, (s + 1) * n / slots)
// and takes it in order from the front; once it is empty, the slot steals
// from the back of the other ranges (the next slot's first). A slot that
// never shows up (a late worker on a busy machine) thus costs nothing, and
// otherwise every slot works on the same part of the data in every kernel:
// with tasks ordered by output position (pixels, tiles, rows), what one
// thread writes is what it reads next. That matters where the cores do not
// share a cache: measured on a 2-vCPU VM whose vCPUs sat on cores 350 ns
// apart (55 ns when they share the L3), dynamic first-come claims (each
// kernel's data bouncing between the cores) ran ResNet-18 1.5x slower there.
class AffineTasks {
 public:
  AffineTasks(int64_t n, int slots);
  AffineTasks(const AffineTasks&) = delete;
  AffineTasks& operator=(const AffineTasks&) = delete;
  // The next task for `slot` (0 <= slot < slots), or -1 when none is left.
  int64_t claim(int slot);

 private:
  struct alignas(64) Range {
    std::atomic<uint64_t> v{0};  // front (low 32 bits) | back (high 32 bits): tasks [front, back) are open
  };
  static constexpr int kInline = 8;
  int slots_;
  Range inline_[kInline];
  std::unique_ptr<Range[]> heap_;
  Range* ranges_;
};

class ThreadPool {
 public:
  // num_threads <= 0 means default_threads().
  //
  // Workers may run on any CPU the process may use except the one the
  // calling thread is on when a job starts (Linux; PYENGINE_THREAD_STEERING=0
  // turns it off). Without that, a worker woken after an idle spell can be
  // queued on the caller's CPU (the scheduler's wake-affine placement) and
  // wait there for milliseconds until the load balancer moves it: measured
  // on a 2-vCPU VM, ResNet-18 INT8 at batch 1 run every 50 ms took 11 ms
  // (its first half on one thread) instead of 6.5 ms.
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
  // Chunks are claimed as AffineTasks: thread t starts on the t-th part.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

  static int hardware_threads();

 private:
  void worker(int tid);
  void run_impl(const std::function<void(int, int)>& fn, bool all);
  void steer_workers();

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
  // Workers are kept off the CPU the calling thread runs on (steer_workers):
  // the CPUs the process may use when the pool was made, whether steering is
  // on, and the caller's CPU the workers were last steered away from.
  std::vector<int> allowed_cpus_;
  bool steer_ = false;
  int steered_from_ = -1;
};

}  // namespace engine
