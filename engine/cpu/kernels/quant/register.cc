// Kernel registration for the quant family (see cpu/kernel.h for the contract).
#include "cpu/kernel.h"
#include "cpu/kernels/quant/quant_kernels.h"

namespace engine {

void register_quant_kernels(KernelRegistry& r) {
  r.add(OpKind::kQuantizeLinear, {qk::create_quantize_linear, false});
  r.add(OpKind::kDequantizeLinear, {qk::create_dequantize_linear, false});
  r.add(OpKind::kQConv, {qk::create_qconv, false});
  r.add(OpKind::kQGemm, {qk::create_qgemm, false});
}

}  // namespace engine
