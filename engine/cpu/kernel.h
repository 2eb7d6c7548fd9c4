// The interface between the executor and kernels.
//
// Lifecycle (XNNPACK's): the executor *compiles* a graph by asking the
// KernelRegistry for each node's KernelInfo and calling create(node) once;
// create reads attributes and constant inputs (weights) and pre-packs them.
// At run time the executor has already inferred every output shape
// (ir/infer.h) and allocated the outputs; run() only computes.
//
// Kernel rules:
//  - create() throws Error(kUnsupportedOperator) for a variant it does not
//    support (an attribute value, a dtype), with a message naming the node;
//    the executor collects these for every node and reports them at once.
//  - run() gets inputs (nullptr for omitted optional inputs) and outputs with
//    their final shapes. Inputs that are constants in the graph may also
//    arrive at run time as ordinary tensors (weights fed as graph inputs), so
//    a kernel must work without pre-packed weights too.
//  - run() may throw engine::Error for data-dependent problems (an index out
//    of range); it must not allocate in the hot path: use ctx.scratch().
//  - Parallelism goes through ctx.pool. Kernels are not called concurrently.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "core/tensor.h"
#include "cpu/thread_pool.h"
#include "ir/graph.h"

namespace engine {

class KernelContext {
 public:
  explicit KernelContext(ThreadPool* pool) : pool_(pool) {}
  ThreadPool& pool() { return *pool_; }
  // A 64-byte aligned scratch buffer of at least `bytes`, valid until the
  // next scratch() call; grows as needed and is reused across runs.
  void* scratch(size_t bytes);

 private:
  ThreadPool* pool_;
  std::shared_ptr<void> scratch_;
  size_t scratch_size_ = 0;
};

class Kernel {
 public:
  virtual ~Kernel() = default;
  virtual void run(KernelContext& ctx, const std::vector<const Tensor*>& inputs,
                   const std::vector<Tensor*>& outputs) = 0;
  // Short description of the implementation chosen, for per-layer reports
  // ("conv2d_f32_avx2 im2col+gemm").
  virtual std::string describe() const { return ""; }
};

struct KernelInfo {
  std::function<std::unique_ptr<Kernel>(const Node&)> create;
  // Output 0 may share input 0's storage (Reshape, Flatten, Squeeze,
  // Unsqueeze, Identity, Dropout). The executor then binds both to the same
  // memory; run() must still copy when the pointers differ (a graph output).
  bool alias_output0 = false;
  // Output 0 may take over the storage of this input (-1: none) when
  // nothing reads that input after the node and it has output 0's dtype and
  // size: FusedConv's residual Z, which its kernels read element by element
  // just before writing the same element of Y. Y then overwrites Z in the
  // cache instead of streaming into a third buffer. run() sees both
  // pointers equal.
  int inplace_input = -1;
};

class KernelRegistry {
 public:
  static KernelRegistry& get();
  void add(OpKind kind, KernelInfo info) { infos_[static_cast<int>(kind)] = std::move(info); }
  const KernelInfo* find(OpKind kind) const {
    const KernelInfo& k = infos_[static_cast<int>(kind)];
    return k.create ? &k : nullptr;
  }

 private:
  KernelRegistry();
  KernelInfo infos_[static_cast<int>(OpKind::kNumOpKinds)];
};

// Per-family registration, defined in cpu/kernels/<family>/register.cc.
void register_conv_gemm_kernels(KernelRegistry& r);
void register_elementwise_kernels(KernelRegistry& r);
void register_norm_pool_kernels(KernelRegistry& r);
void register_shape_ops_kernels(KernelRegistry& r);
void register_quant_kernels(KernelRegistry& r);
void register_preprocess_kernels(KernelRegistry& r);

// A kernel from a lambda, for simple ops.
template <typename F>
class LambdaKernel final : public Kernel {
 public:
  explicit LambdaKernel(F f) : f_(std::move(f)) {}
  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    f_(ctx, in, out);
  }

 private:
  F f_;
};
template <typename F>
std::unique_ptr<Kernel> make_kernel(F f) {
  return std::make_unique<LambdaKernel<F>>(std::move(f));
}

}  // namespace engine
