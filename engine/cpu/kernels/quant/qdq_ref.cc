// QuantizeLinear / DequantizeLinear runs, reference loops (see the formulas
// and the rounding order in quant_kernels.h).
#include "cpu/kernels/quant/quant_kernels.h"

namespace engine::qk {

template <typename T>
void quantize_run_ref(const float* x, T* y, int64_t n, float scale, int32_t zp) {
  for (int64_t i = 0; i < n; ++i) y[i] = quantize_one<T>(x[i], scale, zp);
}

template <typename T>
void dequantize_run_ref(const T* x, float* y, int64_t n, float scale, int32_t zp) {
  for (int64_t i = 0; i < n; ++i) y[i] = dequantize_one<T>(x[i], scale, zp);
}

template void quantize_run_ref<int8_t>(const float*, int8_t*, int64_t, float, int32_t);
template void quantize_run_ref<uint8_t>(const float*, uint8_t*, int64_t, float, int32_t);
template void quantize_run_ref<int16_t>(const float*, int16_t*, int64_t, float, int32_t);
template void quantize_run_ref<uint16_t>(const float*, uint16_t*, int64_t, float, int32_t);
template void dequantize_run_ref<int8_t>(const int8_t*, float*, int64_t, float, int32_t);
template void dequantize_run_ref<uint8_t>(const uint8_t*, float*, int64_t, float, int32_t);
template void dequantize_run_ref<int16_t>(const int16_t*, float*, int64_t, float, int32_t);
template void dequantize_run_ref<uint16_t>(const uint16_t*, float*, int64_t, float, int32_t);
template void dequantize_run_ref<int32_t>(const int32_t*, float*, int64_t, float, int32_t);

}  // namespace engine::qk
