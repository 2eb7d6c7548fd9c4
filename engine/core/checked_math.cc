#include "core/checked_math.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <vector>

#include "core/tensor.h"

namespace engine {
namespace {

// Physical memory, or 2**40 where the system does not say.
int64_t default_limit() {
  if (const char* env = std::getenv("PYENGINE_MAX_TENSOR_BYTES")) {
    char* end = nullptr;
    long long v = std::strtoll(env, &end, 10);
    if (end != env && *end == '\0' && v > 0) return v;
  }
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  int64_t total;
  if (pages > 0 && page > 0 && checked_mul(pages, page, &total)) return total;
  return int64_t{1} << 40;
}

std::atomic<int64_t>& limit_slot() {
  static std::atomic<int64_t> limit{default_limit()};
  return limit;
}

}  // namespace

int64_t max_tensor_bytes() { return limit_slot().load(std::memory_order_relaxed); }

void set_max_tensor_bytes(int64_t bytes) {
  limit_slot().store(bytes > 0 ? bytes : default_limit(), std::memory_order_relaxed);
}

int64_t checked_nbytes(const std::vector<int64_t>& shape, DType dtype) {
  int64_t n = static_cast<int64_t>(dtype_size(dtype));
  if (n == 0) n = 1;
  for (int64_t d : shape)
    if (d >= 0 && !checked_mul(n, d, &n)) return -1;
  return n;
}

void check_tensor_size(const std::vector<int64_t>& shape, DType dtype, const std::string& what) {
  for (int64_t d : shape) {
    if (d < -1) fail(ErrorKind::kShape, what, ": shape ", shape_str(shape), " has a negative dim");
    if (d > kMaxDim)
      fail(ErrorKind::kShape, what, ": shape ", shape_str(shape), " has a dim of ", d,
           ", above pyengine's limit of ", kMaxDim, " per dim");
  }
  const int64_t bytes = checked_nbytes(shape, dtype);
  if (bytes < 0)
    fail(ErrorKind::kShape, what, ": a tensor of shape ", shape_str(shape), " has more than 2**63 bytes");
  if (bytes > max_tensor_bytes())
    fail(ErrorKind::kShape, what, ": a tensor of shape ", shape_str(shape), " (", dtype_name(dtype), ") needs ",
         bytes, " bytes, above the per-tensor limit of ", max_tensor_bytes(),
         " bytes (pyengine.set_max_tensor_bytes or PYENGINE_MAX_TENSOR_BYTES changes it)");
}

}  // namespace engine
