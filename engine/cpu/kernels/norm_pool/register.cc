// Kernel registration for the norm_pool family (see cpu/kernel.h for the contract).
#include "cpu/kernel.h"

namespace engine {

void register_norm_pool_kernels(KernelRegistry& r) {}

}  // namespace engine
