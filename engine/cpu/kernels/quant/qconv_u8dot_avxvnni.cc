// The AVX2 QConv u8 path's microkernel on AVX-VNNI (VEX vpdpbusd, ymm):
// qconv_u8dot.h. Compiled with AVX2 + AVX-VNNI; entered only where the CPU
// has AVX-VNNI and PYENGINE_AVXVNNI switched it on (dispatch.h).
#include "cpu/kernels/quant/qconv_u8dot.h"

namespace engine::qk {
namespace {
struct VexDot {
  static __m256i add(__m256i acc, __m256i x, __m256i w) { return _mm256_dpbusd_avx_epi32(acc, x, w); }
};
}  // namespace

const U8DotKernels kU8DotAvxVnni{&U8DotKernel<VexDot>::panel, &U8DotKernel<VexDot>::quads};

}  // namespace engine::qk
