// Packed SGEMM for AVX2+FMA with a fused epilogue, BLIS-style:
//
//   for each task (item, row chunk, column block of nc):     parallel, dynamic
//     for k0 in K by kc:                                     kc = gemm_kc(K) <= 256
//       B~ = pack B[k0:k0+kc, n0:n0+nc]  (or the pre-packed / shared block)  ~L2
//       for row blocks of kMcBlock rows within the chunk:
//         A~ = pack A rows (or the pre-packed block)
//         for each 6-row panel of A~:                                  L1
//           for each 16-column panel of B~:                            L2
//             micro-kernel: 6x16 accumulators (12 ymm) += A~ panel x B~ panel
//             on the last k block: + bias / residual, activation, store
//
// Why this shape: the 6x16 tile uses 12 accumulators + 2 B vectors + 1 A
// broadcast = 15 of 16 ymm registers and issues 12 FMAs per 2 loads, enough
// to keep both FMA pipes busy with latency 4. Edge tiles use the same code
// instantiated for fewer rows / one vector of columns, with masked loads and
// stores, and tails of at most 4 columns a kernel that vectorizes over rows,
// so there are no scalar tails. The epilogue runs on registers right after
// the last k block, so bias, residual and activation cost no extra pass over
// the output. Column panels innermost (B~ streams from L2, the A panel stays
// in L1) makes each sweep write 6 output rows sequentially, which measured
// up to 20% faster than the BLIS order on short-K layers whose output goes
// to memory (1x1 convs with 64 input channels).
#include <atomic>
#include <cstring>

#include "cpu/kernels/conv_gemm/activation_avx2.h"
#include "cpu/kernels/conv_gemm/sgemm_driver.h"

namespace engine {
namespace conv_gemm {
namespace {

// 6x16 tiles: column panels innermost within each row panel.
struct Avx2Sweep {
  // B~ is always packed (bks, bps: kNR, kNR * kc). Reading B in place (as
  // the AVX-512 sweep does) measured 0.81-1.12x on a 1x1 conv at 56x56 with
  // 64 output channels, and 1.07-1.22x with 256 or 512 (alternating A/B, the
  // tier capped to AVX2 on Zen 4, a noisy VM): not shown to pay here.
  static constexpr bool kDirectB = false;
  static void run(const GemmSpec& s, const GemmItem& it, const float* ap, const float* bp, int64_t pb, int64_t pe,
                  int64_t n0, int64_t nc, int64_t kc, TileArgs& t, int64_t, int64_t) {
    const int64_t qn = (nc + kNR - 1) / kNR;
    for (int64_t pi = pb; pi < pe; ++pi) {
      for (int64_t q = 0; q < qn; ++q) {
        const int nr = static_cast<int>(std::min<int64_t>(kNR, nc - q * kNR));
        const float* bq = bp + q * kNR * kc;
        const int64_t row = pi * kMR;
        const int mr = static_cast<int>(std::min<int64_t>(kMR, s.m - row));
        const float* a = ap + (pi - pb) * kMR * kc;
        set_tile(t, s, it, row, n0 + q * kNR);
        if (nr <= 4) {
          kColKernels[nr - 1](kc, a, bq, mr, t);
        } else if (nr > 8 && nr <= 12) {
          // 9-12 columns: one full 8-wide vector, then the column kernel on
          // the panel's columns 8.. (7-10 FMA cycles per k, not 12).
          kKernels[mr - 1][0](kc, a, bq, 8, t);
          set_tile(t, s, it, row, n0 + q * kNR + 8);
          kColKernels[nr - 9](kc, a, bq + 8, mr, t);
        } else {
          kKernels[mr - 1][nr > 8 ? 1 : 0](kc, a, bq, nr, t);
        }
      }
    }
  }
};

}  // namespace

size_t sgemm_scratch_bytes(const GemmSpec& spec, int threads) {
  const Plan p = make_plan(spec, threads);
  return static_cast<size_t>(threads) * (aligned_bytes(p.a_floats) + aligned_bytes(p.b_floats)) +
         aligned_bytes(p.shared_floats) + 64;
}

void sgemm_avx2(ThreadPool& pool, const GemmSpec& spec, GemmItemFn item_fn, const void* item_ctx, void* scratch) {
  sgemm_run<Avx2Sweep>(pool, spec, item_fn, item_ctx, scratch);
}

}  // namespace conv_gemm
}  // namespace engine
