// Transpose: y[i_0, ..., i_k] = x[i_perm^-1...], i.e. out axis j is input
// axis perm[j] (default: reversed axes).
//
// The permutation is first reduced: size-1 axes are dropped and input axes
// that stay adjacent and in order in the output are merged. What remains is
// one of:
//  - nothing to permute                 -> one memcpy;
//  - innermost input axis stays last    -> strided_copy, one memcpy per row;
//  - otherwise                          -> a batch of 2-D transposes between
//    the input's innermost axis and the output's innermost axis, walked in
//    column blocks (8x8 AVX2 register transposes for 4-byte elements,
//    64x16 AVX-512 BW blocks for 1-byte elements).
// ConvNeXt's NCHW<->NHWC (perm [0,2,3,1] / [0,3,1,2]) reduce to exactly one
// batched [C, HW] <-> [HW, C] transpose, and so do the int8 ones at the
// edges of a channels-last int8 ResNet (passes/int8_channels_last).
// Works for every dtype by element size.
#include <algorithm>
#include <cstring>

#include "cpu/dispatch.h"
#include "cpu/kernel_table.h"
#include "cpu/kernels/shape_ops/shape_ops.h"

namespace engine {
namespace shape_ops {
namespace {

template <typename T>
void transpose2d_tiled(const T* src, int64_t src_ld, T* dst, int64_t dst_ld, int64_t rows, int64_t cols) {
  constexpr int64_t kTile = 16;
  for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
    const int64_t r1 = std::min(rows, r0 + kTile);
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      const int64_t c1 = std::min(cols, c0 + kTile);
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t r = r0; r < r1; ++r) dst[c * dst_ld + r] = src[r * src_ld + c];
    }
  }
}

class Transpose final : public Kernel {
 public:
  Transpose(const Node& node, bool avx2, bool b8_avx512)
      : what_(node.describe()),
        has_perm_(node.has_attr("perm")),
        perm_(node.attr_ints("perm")),
        avx2_(avx2),
        b8_avx512_(b8_avx512),
        esize_(node.input(0)->dtype() == DType::kUndefined ? 0 : dtype_size(node.input(0)->dtype())) {}

  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    const Tensor& x = *in[0];
    const int r = x.rank();
    check_rank(what_, r);
    const size_t esize = dtype_size(x.dtype());
    if (x.numel() == 0) return;
    int64_t perm[kMaxRank];
    for (int i = 0; i < r; ++i) perm[i] = has_perm_ ? perm_[i] : r - 1 - i;

    // Drop size-1 axes, renumbering the others in input order.
    int map[kMaxRank], m = 0;
    int64_t dims[kMaxRank];
    for (int a = 0; a < r; ++a) {
      if (x.shape()[a] == 1) {
        map[a] = -1;
      } else {
        map[a] = m;
        dims[m++] = x.shape()[a];
      }
    }
    int q[kMaxRank], k = 0;
    for (int i = 0; i < r; ++i)
      if (map[perm[i]] >= 0) q[k++] = map[perm[i]];
    // Merge runs of consecutive input axes: group g covers input axes
    // [first[g], first[g] + len[g]); groups are listed in output order.
    int first[kMaxRank], len[kMaxRank], g = 0;
    for (int i = 0; i < k; ++i) {
      if (g > 0 && q[i] == first[g - 1] + len[g - 1]) {
        ++len[g - 1];
      } else {
        first[g] = q[i];
        len[g] = 1;
        ++g;
      }
    }
    if (g <= 1) {
      parallel_memcpy(ctx, out[0]->raw(), x.raw(), x.nbytes());
      return;
    }
    // Group index in input order for each output position, and merged dims.
    int in_pos[kMaxRank];  // output position -> input-order group index
    int64_t gdim[kMaxRank];
    for (int j = 0; j < g; ++j) {
      int rank_in = 0;
      for (int i = 0; i < g; ++i)
        if (first[i] < first[j]) ++rank_in;
      in_pos[j] = rank_in;
      int64_t p = 1;
      for (int t = 0; t < len[j]; ++t) p *= dims[first[j] + t];
      gdim[rank_in] = p;
    }
    int64_t in_stride[kMaxRank], out_stride[kMaxRank];
    in_stride[g - 1] = 1;
    for (int i = g - 2; i >= 0; --i) in_stride[i] = in_stride[i + 1] * gdim[i + 1];
    out_stride[g - 1] = 1;
    for (int j = g - 2; j >= 0; --j) out_stride[j] = out_stride[j + 1] * gdim[in_pos[j + 1]];

    if (in_pos[g - 1] == g - 1) {
      int64_t shape[kMaxRank], strides[kMaxRank];
      for (int j = 0; j < g; ++j) {
        shape[j] = gdim[in_pos[j]];
        strides[j] = in_stride[in_pos[j]];
      }
      strided_copy(ctx, out[0]->raw(), x.raw(), shape, strides, g, esize);
      return;
    }

    // Batched 2-D transpose between input axis a (innermost in the input)
    // and input axis b (innermost in the output).
    const int a = g - 1, b = in_pos[g - 1];
    int pa = 0;
    for (int j = 0; j < g; ++j)
      if (in_pos[j] == a) pa = j;
    int64_t bdim[kMaxRank], bsrc[kMaxRank], bdst[kMaxRank];
    int nb = 0;
    int64_t batches = 1;
    for (int j = 0; j < g; ++j) {
      if (j == pa || j == g - 1) continue;
      bdim[nb] = gdim[in_pos[j]];
      bsrc[nb] = in_stride[in_pos[j]];
      bdst[nb] = out_stride[j];
      batches *= bdim[nb];
      ++nb;
    }
    const int64_t rows = gdim[b], cols = gdim[a];
    const int64_t src_ld = in_stride[b], dst_ld = out_stride[pa];
    // Each transpose2d call takes all rows of a batch (measured fastest: the
    // column-block walk then writes whole destination lines). When there are
    // fewer batches than threads, each batch is split to give every thread
    // work: 2-byte and wider elements by rows, in multiples of 8; bytes along
    // the longer side, in multiples of 64, so that threads never share a
    // destination line (a destination row of a [64 x HW] int8 transpose is
    // one 64-byte line, which a row split would hand half to each thread).
    const bool parallel = x.nbytes() >= kParallelBytes && ctx.pool().num_threads() > 1;
    const int64_t threads = ctx.pool().num_threads();
    int64_t row_block = rows, col_block = cols;
    if (parallel && batches < threads) {
      if (esize == 1 && cols > rows) col_block = ((cols + threads - 1) / threads + 63) / 64 * 64;
      else if (esize == 1) row_block = ((rows + threads - 1) / threads + 63) / 64 * 64;
      else row_block = ((rows + threads - 1) / threads + 7) / 8 * 8;
    }
    const int64_t row_blocks = (rows + row_block - 1) / row_block;
    const int64_t col_blocks = (cols + col_block - 1) / col_block;
    const auto* src = static_cast<const char*>(x.raw());
    auto* dst = static_cast<char*>(out[0]->raw());
    const int64_t es = static_cast<int64_t>(esize);
    const bool avx2 = avx2_ && esize == 4;
    const bool b8_avx512 = b8_avx512_ && esize == 1;
    auto body = [&](int64_t begin, int64_t end) {
      for (int64_t u = begin; u < end; ++u) {
        const int64_t c0 = (u % col_blocks) * col_block;
        const int64_t r0 = (u / col_blocks % row_blocks) * row_block;
        int64_t batch = u / col_blocks / row_blocks;
        int64_t so = 0, dof = 0;
        for (int t = nb - 1; t >= 0; --t) {
          int64_t i = batch % bdim[t];
          batch /= bdim[t];
          so += i * bsrc[t];
          dof += i * bdst[t];
        }
        const int64_t nr = std::min(row_block, rows - r0), nc = std::min(col_block, cols - c0);
        const char* s = src + (so + r0 * src_ld + c0) * es;
        char* d = dst + (dof + c0 * dst_ld + r0) * es;
        if (avx2)
          transpose2d_b32_avx2(reinterpret_cast<const uint32_t*>(s), src_ld, reinterpret_cast<uint32_t*>(d), dst_ld,
                               nr, nc);
        else if (b8_avx512)
          transpose2d_b8_avx512(reinterpret_cast<const uint8_t*>(s), src_ld, reinterpret_cast<uint8_t*>(d), dst_ld,
                                nr, nc);
        else
          transpose2d_ref(s, src_ld, d, dst_ld, nr, nc, esize);
      }
    };
    const int64_t units = batches * row_blocks * col_blocks;
    if (!parallel) body(0, units);
    else ctx.pool().parallel_for(units, body);
  }

  // The variant that runs for the input's element size (0: not known when
  // the kernel was created; then the 4-byte choice, as before).
  std::string describe() const override {
    if (esize_ == 1) return b8_avx512_ ? "transpose_s8_avx512" : "transpose_ref";
    if (esize_ == 4 || esize_ == 0) return avx2_ ? "transpose_avx2" : "transpose_ref";
    return "transpose_ref";
  }

 private:
  std::string what_;
  bool has_perm_;
  std::vector<int64_t> perm_;
  bool avx2_;       // transpose_f32_avx2: 4-byte elements
  bool b8_avx512_;  // transpose_s8_avx512: 1-byte elements
  size_t esize_;    // the input's element size, 0 if unknown at creation
};

}  // namespace

void transpose2d_ref(const void* src, int64_t src_ld, void* dst, int64_t dst_ld, int64_t rows, int64_t cols,
                     size_t esize) {
  switch (esize) {
    case 1:
      transpose2d_tiled(static_cast<const uint8_t*>(src), src_ld, static_cast<uint8_t*>(dst), dst_ld, rows, cols);
      break;
    case 2:
      transpose2d_tiled(static_cast<const uint16_t*>(src), src_ld, static_cast<uint16_t*>(dst), dst_ld, rows, cols);
      break;
    case 4:
      transpose2d_tiled(static_cast<const uint32_t*>(src), src_ld, static_cast<uint32_t*>(dst), dst_ld, rows, cols);
      break;
    case 8:
      transpose2d_tiled(static_cast<const uint64_t*>(src), src_ld, static_cast<uint64_t*>(dst), dst_ld, rows, cols);
      break;
    default:
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c)
          std::memcpy(static_cast<char*>(dst) + (c * dst_ld + r) * esize,
                      static_cast<const char*>(src) + (r * src_ld + c) * esize, esize);
  }
}

std::unique_ptr<Kernel> create_transpose(const Node& node) {
  if (node.has_attr("perm")) {
    std::vector<int64_t> perm = node.attr_ints("perm");
    std::vector<char> seen(perm.size(), 0);
    for (int64_t p : perm) {
      if (p < 0 || p >= static_cast<int64_t>(perm.size()) || seen[p])
        fail(ErrorKind::kInvalidModel, node.describe(), ": perm is not a permutation");
      seen[p] = 1;
    }
    check_rank(node.describe(), static_cast<int>(perm.size()));
  }
  return std::make_unique<Transpose>(node, kernel_usable("transpose_f32_avx2"), kernel_usable("transpose_s8_avx512"));
}

}  // namespace shape_ops
}  // namespace engine
