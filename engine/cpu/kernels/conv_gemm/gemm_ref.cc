// Reference GEMM with the family's epilogue, plain loops:
//   c[i, j] = act(alpha * sum_k a[i, k] b[k, j] + (c_init ? c[i, j] : 0)
//                 + bias_m[i] + bias_n[j] + z[i, j])
// Strided operands cover Gemm's transA/transB and MatMul's batch slices.
// The fallback where AVX2 is missing and the oracle of the packed SGEMM.
#include "cpu/kernels/conv_gemm/conv_gemm.h"

namespace engine {
namespace conv_gemm {

void gemm_ref(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_rs, int64_t a_cs, const float* b,
              int64_t b_rs, int64_t b_cs, float* c, int64_t ldc, const float* bias_m, const float* bias_n,
              const float* z, int64_t ldz, const Epilogue& ep) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      float acc = 0.f;
      for (int64_t kk = 0; kk < k; ++kk) acc += a[i * a_rs + kk * a_cs] * b[kk * b_rs + j * b_cs];
      float v = ep.alpha * acc;
      if (ep.c_init) v += c[i * ldc + j];
      if (bias_m) v += bias_m[i];
      if (bias_n) v += bias_n[j];
      if (z) v += z[i * ldz + j];
      c[i * ldc + j] = activate(v, ep.act);
    }
  }
}

}  // namespace conv_gemm
}  // namespace engine
