// Kernel registration for the quant family (see cpu/kernel.h for the contract).
#include "cpu/kernel.h"

namespace engine {

void register_quant_kernels(KernelRegistry& r) {}

}  // namespace engine
