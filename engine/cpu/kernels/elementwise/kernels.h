// Elementwise kernels (cpu/kernel.h objects) and the helpers they share.
// The kernels own shapes, broadcasting, dtype dispatch and threading; the
// arithmetic is in the loops of elementwise.h. Not for *_avx2.cc files.
#pragma once

#include <memory>
#include <string>

#include "cpu/dispatch.h"
#include "cpu/kernel.h"
#include "cpu/kernels/elementwise/elementwise.h"

namespace engine {
namespace eltwise {

// Elements per thread below which splitting a loop costs more than it
// saves: a cheap op streams 16K floats in a few microseconds, about the cost
// of waking the pool; transcendental ops do ~10x the work per element.
constexpr int64_t kGrain = 16384;
constexpr int64_t kGrainHeavy = 4096;

// Runs body(begin, end) over [0, n), split across the pool only when every
// thread gets at least `grain` items. The lambda handed to the pool captures
// one reference, so std::function stores it without allocating.
template <typename F>
void parallel_range(KernelContext& ctx, int64_t n, int64_t grain, const F& body) {
  if (n <= 0) return;
  if (n < 2 * grain || ctx.pool().num_threads() == 1) {
    body(int64_t{0}, n);
    return;
  }
  ctx.pool().parallel_for(n, [&body](int64_t b, int64_t e) { body(b, e); }, grain);
}

// "f32", "i64", ...: kernel descriptions ("add_f32_avx2").
const char* dtype_short(DType t);
// The dtype of node input i as imported, kUndefined if absent or unknown.
DType input_dtype(const Node& n, int i);

std::unique_ptr<Kernel> make_unary_kernel(const Node& node, Unary op);
std::unique_ptr<Kernel> make_clip_kernel(const Node& node);
std::unique_ptr<Kernel> make_cast_kernel(const Node& node);
std::unique_ptr<Kernel> make_channel_affine_kernel(const Node& node);
std::unique_ptr<Kernel> make_binary_kernel(const Node& node, Binary op);
// Max, Min, Sum (kAdd) and Mean (kAdd then divide) over 1..N inputs.
std::unique_ptr<Kernel> make_variadic_kernel(const Node& node, Binary op, bool mean);
std::unique_ptr<Kernel> make_where_kernel(const Node& node);

}  // namespace eltwise
}  // namespace engine
