// conv_grouped_oc_f32_avx512: the grouped convolution vectorized over 16
// output channels per zmm (grouped_oc.h has the algorithm), tiles of up to
// 16 pixels. Call only when use_avx512().
#include "cpu/kernels/conv_gemm/grouped_oc.h"
#include "cpu/kernels/conv_gemm/zmm_tile.h"

namespace engine {
namespace conv_gemm {

void grouped_oc_avx512(ThreadPool& pool, const ConvGeom& g, const float* x, const float* wpk, const float* b,
                       const float* z, const Activation& act, float* y, void* scratch) {
  oc_detail::run<Zmm>(pool, g, x, wpk, b, z, act, y, scratch);
}

}  // namespace conv_gemm
}  // namespace engine
