// Kernel registration for the shape_ops family (see cpu/kernel.h for the contract).
#include "cpu/kernel.h"

namespace engine {

void register_shape_ops_kernels(KernelRegistry& r) {}

}  // namespace engine
