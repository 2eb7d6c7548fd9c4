#include "cpu/kernel.h"

namespace engine {

KernelRegistry::KernelRegistry() {
  register_conv_gemm_kernels(*this);
  register_elementwise_kernels(*this);
  register_norm_pool_kernels(*this);
  register_shape_ops_kernels(*this);
  register_quant_kernels(*this);
  register_preprocess_kernels(*this);
}

KernelRegistry& KernelRegistry::get() {
  static KernelRegistry registry;
  return registry;
}

void* KernelContext::scratch(size_t bytes) {
  if (bytes > scratch_size_) {
    scratch_size_ = bytes + bytes / 4;
    scratch_ = aligned_storage(scratch_size_);
  }
  return scratch_.get();
}

}  // namespace engine
