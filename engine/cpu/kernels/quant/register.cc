// Kernel registration for the quant family (see cpu/kernel.h for the contract).
#include "cpu/kernel.h"
#include "cpu/kernels/quant/quant_kernels.h"

namespace engine {

void register_quant_kernels(KernelRegistry& r) {
  r.add(OpKind::kQuantizeLinear, {qk::create_quantize_linear, false});
  r.add(OpKind::kDequantizeLinear, {qk::create_dequantize_linear, false});
  r.add(OpKind::kQConv, {qk::create_qconv, false});
  r.add(OpKind::kQGemm, {qk::create_qgemm, false});
  r.add(OpKind::kQAdd, {qk::create_qadd, false});
  r.add(OpKind::kFusedQuantize, {qk::create_fused_quantize, false});
  r.add(OpKind::kFusedChannelBias, {qk::create_fused_channel_bias, false});
  // MaxPool on int8 data (lower_int8_maxpool) is this family's; float
  // MaxPool stays with the norm_pool family, registered before this one.
  const KernelInfo* pool = r.find(OpKind::kMaxPool);
  ENGINE_CHECK(pool, "the norm_pool kernels must be registered before the quant kernels");
  auto float_pool = pool->create;
  r.add(OpKind::kMaxPool, {[float_pool](const Node& n) {
                             if (n.input(0) && n.input(0)->dtype() == DType::kInt8) return qk::create_maxpool_s8(n);
                             return float_pool(n);
                           },
                           false});
}

}  // namespace engine
