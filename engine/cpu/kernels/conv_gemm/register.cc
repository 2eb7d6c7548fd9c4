// Kernel registration for the conv_gemm family (see cpu/kernel.h for the contract).
#include "cpu/kernel.h"

namespace engine {

void register_conv_gemm_kernels(KernelRegistry& r) {}

}  // namespace engine
