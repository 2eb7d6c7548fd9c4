// The AVX-VNNI microkernel's source (qconv_u8dot.h) EVEX-encoded: vpdpbusd
// on ymm with AVX512-VNNI + VL, the same operation. Not a speed path (the
// vnni tier has its own zmm kernels): it lets the AVX2 QConv kernel with
// the AVX-VNNI microkernel be tested on AVX512-VNNI CPUs
// (PYENGINE_AVXVNNI=evex, dispatch.h).
#include "cpu/kernels/quant/qconv_u8dot.h"

namespace engine::qk {
namespace {
struct EvexDot {
  static __m256i add(__m256i acc, __m256i x, __m256i w) { return _mm256_dpbusd_epi32(acc, x, w); }
};
}  // namespace

const U8DotKernels kU8DotEvex{&U8DotKernel<EvexDot>::panel, &U8DotKernel<EvexDot>::quads};

}  // namespace engine::qk
