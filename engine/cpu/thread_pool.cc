#include "cpu/thread_pool.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

#include "core/error.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define ENGINE_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define ENGINE_PAUSE() __asm__ __volatile__("yield")
#else
#define ENGINE_PAUSE() ((void)0)
#endif

namespace engine {

void spin_wait_step(int64_t step) {
  if ((step & 63) == 63) std::this_thread::yield();
  else ENGINE_PAUSE();
}

std::vector<int> process_cpus() {
  std::vector<int> cpus;
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
#endif
  return cpus;
}

namespace {

bool read_text(const std::string& path, std::string* out) {
  std::ifstream f(path);
  if (!f) return false;
  std::ostringstream text;
  text << f.rdbuf();
  *out = text.str();
  return true;
}

bool parse_int(const std::string& text, long long* v) {
  const char* s = text.c_str();
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(s, &end, 10);
  if (end == s || errno != 0) return false;
  *v = x;
  return true;
}

// The CPUs one cgroup directory allows (0: no limit, or none written).
double cgroup_dir_limit(const std::string& dir) {
  std::string text;
  if (read_text(dir + "/cpu.max", &text)) {  // v2: "max 100000" or "150000 100000"
    std::istringstream in(text);
    std::string quota;
    long long q = 0, period = 0;
    if (in >> quota >> period && quota != "max" && parse_int(quota, &q) && q > 0 && period > 0)
      return static_cast<double>(q) / static_cast<double>(period);
    return 0.0;
  }
  std::string qt, pt;  // v1: a quota of -1 means none
  long long q = 0, period = 0;
  if (read_text(dir + "/cpu.cfs_quota_us", &qt) && read_text(dir + "/cpu.cfs_period_us", &pt) && parse_int(qt, &q) &&
      parse_int(pt, &period) && q > 0 && period > 0)
    return static_cast<double>(q) / static_cast<double>(period);
  return 0.0;
}

// The smallest CPU limit over the process's cgroup and its ancestors, in
// the v2 hierarchy and the v1 cpu controller's (0: none). Inside a
// container the cgroup's own directory is usually the mount's root, which
// the walk up reaches as well.
double cgroup_cpu_limit(const std::string& root) {
  std::string text;
  if (!read_text(root + "/proc/self/cgroup", &text)) return 0.0;
  double limit = 0.0;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    const size_t a = line.find(':'), b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1);
    std::string path = line.substr(b + 1);
    std::vector<std::string> mounts;
    if (controllers.empty()) {
      mounts = {root + "/sys/fs/cgroup", root + "/sys/fs/cgroup/unified"};  // v2; hybrid hosts mount it at unified
    } else if (("," + controllers + ",").find(",cpu,") != std::string::npos) {
      mounts = {root + "/sys/fs/cgroup/" + controllers, root + "/sys/fs/cgroup/cpu"};
    } else {
      continue;
    }
    if (path.empty() || path[0] != '/') path = "/" + path;
    for (const std::string& mount : mounts) {
      for (std::string p = path;;) {
        const double l = cgroup_dir_limit(p == "/" ? mount : mount + p);
        if (l > 0.0 && (limit == 0.0 || l < limit)) limit = l;
        if (p == "/") break;
        const size_t slash = p.find_last_of('/');
        p = slash == 0 ? "/" : p.substr(0, slash);
      }
    }
  }
  return limit;
}

}  // namespace

CpuBudget cpu_budget(const std::vector<int>& cpus, const std::string& root) {
  CpuBudget b;
  b.cpus = static_cast<int>(cpus.size());
  std::set<std::string> cores;
  for (int c : cpus) {
    std::string siblings;
    if (!read_text(root + "/sys/devices/system/cpu/cpu" + std::to_string(c) + "/topology/thread_siblings_list",
                   &siblings)) {
      cores.clear();
      break;
    }
    cores.insert(siblings.substr(0, siblings.find_last_not_of(" \n") + 1));
  }
  b.cores = cores.empty() ? b.cpus : static_cast<int>(cores.size());
  b.quota = cgroup_cpu_limit(root);
  int threads = b.cores;
  if (b.quota > 0.0) threads = std::min<int>(threads, static_cast<int>(std::ceil(b.quota - 1e-9)));
  b.threads = std::max(threads, 1);
  return b;
}

int default_threads() {
  if (const char* env = std::getenv("PYENGINE_NUM_THREADS"); env != nullptr && *env != '\0') {
    long long v = 0;
    const std::string text(env);
    const bool ok = parse_int(text, &v) && text.find_first_not_of("0123456789") == std::string::npos;
    ENGINE_ENFORCE(ok && v >= 1 && v <= 4096, kInvalidArgument, "PYENGINE_NUM_THREADS='", text,
                   "': expected a thread count from 1 to 4096 (or leave it unset: one thread per physical core)");
    return static_cast<int>(v);
  }
  const std::vector<int> cpus = process_cpus();
  if (cpus.empty()) return ThreadPool::hardware_threads();
  return cpu_budget(cpus).threads;
}

AffineTasks::AffineTasks(int64_t n, int slots) : slots_(std::max(slots, 1)) {
  ENGINE_ENFORCE(n >= 0 && n < (int64_t{1} << 32), kInternal, "AffineTasks: ", n, " tasks");
  if (slots_ > kInline) heap_.reset(new Range[slots_]);
  ranges_ = heap_ ? heap_.get() : inline_;
  for (int s = 0; s < slots_; ++s) {
    const uint64_t lo = static_cast<uint64_t>(n * s / slots_), hi = static_cast<uint64_t>(n * (s + 1) / slots_);
    ranges_[s].v.store(lo | hi << 32, std::memory_order_relaxed);
  }
}

int64_t AffineTasks::claim(int slot) {
  // Own range: from the front.
  std::atomic<uint64_t>& own = ranges_[slot].v;
  uint64_t v = own.load(std::memory_order_relaxed);
  while ((v & 0xffffffffu) < (v >> 32))
    if (own.compare_exchange_weak(v, v + 1, std::memory_order_relaxed)) return static_cast<int64_t>(v & 0xffffffffu);
  // Others': from the back, nearest slot first.
  for (int d = 1; d < slots_; ++d) {
    std::atomic<uint64_t>& other = ranges_[(slot + d) % slots_].v;
    uint64_t w = other.load(std::memory_order_relaxed);
    while ((w & 0xffffffffu) < (w >> 32))
      if (other.compare_exchange_weak(w, w - (uint64_t{1} << 32), std::memory_order_relaxed))
        return static_cast<int64_t>((w >> 32) - 1);
  }
  return -1;
}

int ThreadPool::hardware_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

ThreadPool::ThreadPool(int num_threads)
    : num_threads_(num_threads <= 0 ? default_threads() : num_threads) {
  for (int t = 1; t < num_threads_; ++t) threads_.emplace_back([this, t] { worker(t); });
#if defined(__linux__)
  const char* env = std::getenv("PYENGINE_THREAD_STEERING");
  if (!threads_.empty() && !(env && std::strcmp(env, "0") == 0)) allowed_cpus_ = process_cpus();
  steer_ = allowed_cpus_.size() > 1;
#endif
}

// Restricts the workers to the allowed CPUs but the caller's current one,
// when that changed since the last job (one getcpu per job, a few
// sched_setaffinity calls when the caller moved).
void ThreadPool::steer_workers() {
#if defined(__linux__)
  if (!steer_) return;
  const int cpu = sched_getcpu();
  if (cpu < 0 || cpu == steered_from_) return;
  steered_from_ = cpu;
  cpu_set_t set;
  CPU_ZERO(&set);
  bool excluded = false;
  for (int c : allowed_cpus_) {
    if (c == cpu) excluded = true;
    else CPU_SET(c, &set);
  }
  if (!excluded)  // the caller runs outside the pool's CPUs: the workers may use them all
    for (int c : allowed_cpus_) CPU_SET(c, &set);
  for (std::thread& t : threads_) pthread_setaffinity_np(t.native_handle(), sizeof set, &set);
#endif
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    generation_.fetch_add(1);
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void ThreadPool::worker(int tid) {
  uint64_t seen = 0;
  for (;;) {
    // Spin first: kernels come in quick succession during a run.
    uint64_t gen = generation_.load(std::memory_order_acquire);
    for (int spin = 0; gen == seen && spin < 20000; ++spin) {
      spin_wait_step(spin);
      gen = generation_.load(std::memory_order_acquire);
    }
    if (gen == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return generation_.load() != seen; });
      gen = generation_.load();
    }
    seen = gen;
    if (stop_) return;
    // Join the job only while it is open (run_any's caller may have finished
    // it alone); task_ and all_ are stable while we are counted in active_.
    active_.fetch_add(1, std::memory_order_seq_cst);
    if (open_gen_.load(std::memory_order_seq_cst) == gen) {
      const bool all = all_;
      (*task_)(tid, num_threads_);
      if (all) pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
    active_.fetch_sub(1, std::memory_order_release);
  }
}

void ThreadPool::run_impl(const std::function<void(int, int)>& fn, bool all) {
  if (num_threads_ == 1) {
    fn(0, 1);
    return;
  }
  steer_workers();
  // The previous job is closed and no worker is inside it (see below).
  task_ = &fn;
  all_ = all;
  pending_.store(all ? num_threads_ - 1 : 0, std::memory_order_relaxed);
  const uint64_t gen = generation_.load(std::memory_order_relaxed) + 1;
  open_gen_.store(gen, std::memory_order_seq_cst);
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation_.store(gen, std::memory_order_release);
  }
  cv_.notify_all();
  fn(0, num_threads_);
  if (all)
    for (int64_t i = 0; pending_.load(std::memory_order_acquire) != 0; ++i) spin_wait_step(i);
  open_gen_.store(0, std::memory_order_seq_cst);
  for (int64_t i = 0; active_.load(std::memory_order_acquire) != 0; ++i) spin_wait_step(i);
}

void ThreadPool::run(const std::function<void(int, int)>& fn) { run_impl(fn, true); }

void ThreadPool::run_any(const std::function<void(int, int)>& fn) { run_impl(fn, false); }

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  int64_t chunks = std::min<int64_t>(num_threads_, (n + grain - 1) / grain);
  if (chunks <= 1) {
    fn(0, n);
    return;
  }
  // Chunks of at least `grain` items, up to 4 per thread, claimed as
  // AffineTasks (run_any): a late worker leaves its share to the others.
  chunks = std::min<int64_t>(4 * num_threads_, (n + grain - 1) / grain);
  // One pointer of capture keeps the std::function in its inline storage:
  // no heap allocation per kernel call.
  struct Job {
    int64_t n, chunks;
    const std::function<void(int64_t, int64_t)>* fn;
    AffineTasks tasks;
  } job{n, chunks, &fn, AffineTasks(chunks, num_threads_)};
  Job* j = &job;
  run_any([j](int slot, int) {
    for (int64_t c = j->tasks.claim(slot); c >= 0; c = j->tasks.claim(slot)) {
      const int64_t begin = j->n * c / j->chunks, end = j->n * (c + 1) / j->chunks;
      if (begin < end) (*j->fn)(begin, end);
    }
  });
}

}  // namespace engine
