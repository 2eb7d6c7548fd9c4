// In ENGINE_FORCE_REF builds the ISA files (*_avx2.cc, *_avx512*.cc, *_amx.cc)
// are not compiled and use_avx2() / use_avx512_vnni() are always false, so
// the kernels never call their ISA entry points; these definitions only
// satisfy the linker.
#if defined(ENGINE_FORCE_REF)
#include "cpu/kernels/quant/quant_kernels.h"

namespace engine::qk {

#define ENGINE_QK_UNREACHABLE ENGINE_CHECK(false, "AVX2 kernel called in an ENGINE_FORCE_REF build")

void quantize_run_s8_avx2(const float*, int8_t*, int64_t, float, int32_t) { ENGINE_QK_UNREACHABLE; }
void quantize_run_u8_avx2(const float*, uint8_t*, int64_t, float, int32_t) { ENGINE_QK_UNREACHABLE; }
void dequantize_run_s8_avx2(const int8_t*, float*, int64_t, float, int32_t) { ENGINE_QK_UNREACHABLE; }
void dequantize_run_u8_avx2(const uint8_t*, float*, int64_t, float, int32_t) { ENGINE_QK_UNREACHABLE; }
void fused_quantize_run_s8_avx2(const float*, int8_t*, int64_t, float, bool, float, int32_t) { ENGINE_QK_UNREACHABLE; }
void fused_channel_bias_run_f32_avx2(const float*, float*, int64_t, float, bool) { ENGINE_QK_UNREACHABLE; }
void pack_a(const int8_t*, int64_t, int64_t, int64_t, int64_t, int16_t*) { ENGINE_QK_UNREACHABLE; }
void pack_b(const int8_t*, int64_t, int64_t, int64_t, int64_t, int16_t*) { ENGINE_QK_UNREACHABLE; }
size_t qconv_avx2_workspace(const ConvGeom&, int) { ENGINE_QK_UNREACHABLE; }
void qconv_avx2(ThreadPool&, const ConvGeom&, const int8_t*, const int16_t*, const Epilogue&, void*) {
  ENGINE_QK_UNREACHABLE;
}
void pack_a_u8(const int8_t*, int64_t, int64_t, int64_t, int8_t*) { ENGINE_QK_UNREACHABLE; }
size_t qconv_avx2_u8_workspace(const ConvGeom&, int, bool) { ENGINE_QK_UNREACHABLE; }
void qconv_avx2_u8(ThreadPool&, const ConvGeom&, const int8_t*, const int8_t*, const int8_t*, const Epilogue&, void*,
                   const U8DotKernels*) {
  ENGINE_QK_UNREACHABLE;
}
const U8DotKernels kU8DotAvxVnni{nullptr, nullptr};
const U8DotKernels kU8DotEvex{nullptr, nullptr};
void pack_a_vnni(const int8_t*, int64_t, int64_t, int64_t, int8_t*, int32_t*) { ENGINE_QK_UNREACHABLE; }
size_t qconv_avx512vnni_workspace(const ConvGeom&, int, bool) { ENGINE_QK_UNREACHABLE; }
void qconv_avx512vnni(ThreadPool&, const ConvGeom&, const int8_t*, bool, const int8_t*, const int8_t*, const int32_t*,
                      const Epilogue&, void*) {
  ENGINE_QK_UNREACHABLE;
}
void pack_w_nhwc(const int8_t*, int64_t, int64_t, int64_t, int8_t*, int32_t*) { ENGINE_QK_UNREACHABLE; }
void pack_w_dw_nhwc(const int8_t*, int64_t, int64_t, int8_t*, int32_t*) { ENGINE_QK_UNREACHABLE; }
size_t qconv_nhwc_avx512vnni_workspace(const ConvGeom&, int) { ENGINE_QK_UNREACHABLE; }
void qconv_nhwc_avx512vnni(ThreadPool&, const ConvGeom&, const int8_t*, bool, const int8_t*, const int32_t*,
                           const Epilogue&, void*) {
  ENGINE_QK_UNREACHABLE;
}
size_t qconv_dw_nhwc_avx512vnni_workspace(const ConvGeom&, int) { ENGINE_QK_UNREACHABLE; }
void qconv_dw_nhwc_avx512vnni(ThreadPool&, const ConvGeom&, const int8_t*, bool, const int8_t*, const int32_t*,
                              const Epilogue&, void*) {
  ENGINE_QK_UNREACHABLE;
}
void pack_a_amx(const int8_t*, int64_t, int64_t, int64_t, int8_t*, int32_t*) { ENGINE_QK_UNREACHABLE; }
void pack_a_amx_quads(const int8_t*, int64_t, int64_t, int64_t, int64_t, int8_t*) { ENGINE_QK_UNREACHABLE; }
size_t qconv_amx_workspace(const ConvGeom&, int, bool) { ENGINE_QK_UNREACHABLE; }
void qconv_amx(ThreadPool&, const ConvGeom&, const int8_t*, bool, const int8_t*, const int8_t*, const int32_t*,
               const Epilogue&, void*, bool) {
  ENGINE_QK_UNREACHABLE;
}
void qconv_depthwise_avx2(ThreadPool&, const ConvGeom&, const int8_t*, const int8_t*, const Epilogue&, void*) {
  ENGINE_QK_UNREACHABLE;
}
size_t qconv_depthwise_avx512vnni_workspace(const ConvGeom&, int, bool) { ENGINE_QK_UNREACHABLE; }
void qconv_depthwise_avx512vnni(ThreadPool&, const ConvGeom&, const int8_t*, const int8_t*, const float*,
                                const Epilogue&, void*) {
  ENGINE_QK_UNREACHABLE;
}
size_t maxpool_s8_avx2_workspace(const PoolS8Geom&) { ENGINE_QK_UNREACHABLE; }
void maxpool_s8_avx2(const PoolS8Geom&, const int8_t*, int8_t*, void*) { ENGINE_QK_UNREACHABLE; }
bool maxpool_s8_avx512_applies(const PoolS8Geom&) { ENGINE_QK_UNREACHABLE; }
void maxpool_s8_avx512(const PoolS8Geom&, const int8_t*, int8_t*) { ENGINE_QK_UNREACHABLE; }
void qadd_run_s8_avx2(const int8_t*, const int8_t*, int8_t*, int64_t, const QAddParams&) { ENGINE_QK_UNREACHABLE; }
void qadd_run_s8_avx512(const int8_t*, const int8_t*, int8_t*, int64_t, const QAddParams&) { ENGINE_QK_UNREACHABLE; }
size_t qgemm_avx2_workspace(int64_t, int64_t) { ENGINE_QK_UNREACHABLE; }
void qgemm_avx2(ThreadPool&, int64_t, int64_t, int64_t, const int8_t*, const int16_t*, const Epilogue&, void*) {
  ENGINE_QK_UNREACHABLE;
}

}  // namespace engine::qk
#endif
