// Microkernels of the norm_pool family, shared by the Kernel classes.
//
// Every primitive has a portable `_ref` version (plain loops: the fallback and
// the test oracle) and, where it pays off, an `_avx2` version that is only
// entered when use_avx2() is true (the files are built with -mavx2 -mfma).
// Kernels pick the pointers once in create() (NormPoolFns), never per call.
//
// Conventions: float32 data, contiguous rows; `n` counts elements. No
// primitive allocates or throws; they assume their preconditions.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "cpu/dispatch.h"
#include "cpu/kernel.h"
#include "cpu/kernel_table.h"

// The function for the active ISA: fn##_avx2 when its line in the kernel
// table (cpu/kernels.def) is usable, else fn##_ref; NORM_POOL_TIER names it.
// A macro because ENGINE_FORCE_REF builds leave the AVX2 files out, so their
// symbols must not even be named there.
#if defined(ENGINE_FORCE_REF)
#define NORM_POOL_PICK(fn) (fn##_ref)
#define NORM_POOL_TIER(fn) "ref"
#else
#define NORM_POOL_PICK(fn) (::engine::kernel_usable(#fn "_avx2") ? fn##_avx2 : fn##_ref)
#define NORM_POOL_TIER(fn) (::engine::kernel_usable(#fn "_avx2") ? "avx2" : "ref")
#endif

namespace engine {

// --- per-channel affine (BatchNorm, and the apply step of Instance/Group norm)
// y[i] = (x[i] - m) * a + b, i < n. Subtracting the mean first (instead of
// folding it into b) keeps full precision when |mean| >> std.
void affine_row_f32_ref(const float* x, float* y, int64_t n, float m, float a, float b);
void affine_row_f32_avx2(const float* x, float* y, int64_t n, float m, float a, float b);
// y[i] = (x[i] - m[i]) * a[i] + b[i], i < n.
void affine_vec_f32_ref(const float* x, float* y, int64_t n, const float* m, const float* a, const float* b);
void affine_vec_f32_avx2(const float* x, float* y, int64_t n, const float* m, const float* a, const float* b);

// --- moments: mean and population variance of x[0..n), two-pass (the second
// pass sums squared deviations, so no catastrophic cancellation).
void moments_f32_ref(const float* x, int64_t n, double* mean, double* var);
void moments_f32_avx2(const float* x, int64_t n, double* mean, double* var);

// --- LayerNorm of one row: y = (x - mean) * inv_std * gamma + beta, with
// inv_std = 1 / sqrt(var + eps); gamma/beta have n entries (beta may be null).
// Writes the row's mean and inv_std.
void layer_norm_row_f32_ref(const float* x, float* y, int64_t n, const float* gamma, const float* beta,
                            float eps, float* mean, float* inv_std);
void layer_norm_row_f32_avx2(const float* x, float* y, int64_t n, const float* gamma, const float* beta,
                             float eps, float* mean, float* inv_std);

// --- row reductions (global pooling, trailing-axes Reduce*)
float row_sum_f32_ref(const float* x, int64_t n);
float row_sum_f32_avx2(const float* x, int64_t n);
float row_max_f32_ref(const float* x, int64_t n);
float row_max_f32_avx2(const float* x, int64_t n);
float row_min_f32_ref(const float* x, int64_t n);
float row_min_f32_avx2(const float* x, int64_t n);

// --- squeeze-excitation (SqueezeExcite; squeeze_excite.cc runs them)
// The gate from the pooled means s[0..c): g = gate(W2 Relu(W1 s + b1) + b2),
// W1 [cr, c] and W2 [c, cr] row-major; `h` is cr floats of scratch. gate 0:
// Sigmoid; 1: HardSigmoid(alpha, beta).
struct SeGate {
  int kind = 0;
  float alpha = 0.2f, beta = 0.5f;
};
void squeeze_excite_gate_f32_ref(const float* s, const float* w1, const float* b1, const float* w2, const float* b2,
                                 int64_t c, int64_t cr, const SeGate& gate, float* h, float* g);
void squeeze_excite_gate_f32_avx2(const float* s, const float* w1, const float* b1, const float* w2,
                                  const float* b2, int64_t c, int64_t cr, const SeGate& gate, float* h, float* g);
void squeeze_excite_gate_f32_avx512(const float* s, const float* w1, const float* b1, const float* w2,
                                    const float* b2, int64_t c, int64_t cr, const SeGate& gate, float* h, float* g);
// y[r, :] = act(x[r, :] * g[r] (+ z[r, :])) for `rows` rows of `n` elements;
// z may be null; act is Relu when `relu`, else the identity.
void squeeze_excite_scale_f32_ref(const float* x, const float* g, const float* z, bool relu, int64_t rows, int64_t n,
                                  float* y);
void squeeze_excite_scale_f32_avx2(const float* x, const float* g, const float* z, bool relu, int64_t rows,
                                   int64_t n, float* y);
void squeeze_excite_scale_f32_avx512(const float* x, const float* g, const float* z, bool relu, int64_t rows,
                                     int64_t n, float* y);
float row_sum_f32_avx512(const float* x, int64_t n);

// --- softmax
// One contiguous row: y = softmax(x) (or log_softmax when `log`).
void softmax_row_f32_ref(const float* x, float* y, int64_t n, bool log);
void softmax_row_f32_avx2(const float* x, float* y, int64_t n, bool log);
// `ncols` independent columns of length `len`: element (k, j) at x[k*stride + j].
void softmax_cols_f32_ref(const float* x, float* y, int64_t len, int64_t stride, int64_t ncols, bool log);
void softmax_cols_f32_avx2(const float* x, float* y, int64_t len, int64_t stride, int64_t ncols, bool log);

// --- pooling over 1..3 spatial dims, viewed as (D, H, W) with leading dims of
// size 1. All vectors have 3 entries, outermost first.
struct PoolGeom {
  bool is_max = true;
  bool count_include_pad = false;
  int64_t in[3] = {1, 1, 1};
  int64_t out[3] = {1, 1, 1};
  int64_t kernel[3] = {1, 1, 1};
  int64_t stride[3] = {1, 1, 1};
  int64_t dilation[3] = {1, 1, 1};
  int64_t pad_begin[3] = {0, 0, 0};
  int64_t pad_end[3] = {0, 0, 0};
  int64_t in_plane() const { return in[0] * in[1] * in[2]; }
  int64_t out_plane() const { return out[0] * out[1] * out[2]; }
};
// AveragePool divisor along one dim for the window starting at `start`
// (onnxruntime's rule): taps inside the input, or with count_include_pad the
// taps inside the padded input [-pad_begin, in + pad_end).
int64_t pool_count(const PoolGeom& g, int dim, int64_t start);

// One (n, c) plane. `indices` (MaxPool only, may be null) receives
// `index_base` + the flat input index of each maximum, row-major or, with
// `col_major`, column-major (ONNX storage_order = 1).
void pool_plane_f32_ref(const PoolGeom& g, const float* x, float* y, int64_t* indices, int64_t index_base,
                        bool col_major);
// Bytes of per-thread work space pool_plane_f32_avx2 needs.
size_t pool_work_bytes_avx2(const PoolGeom& g);
// `inv_cnt` holds 1 / pool_count (1 where the count is 0) for every output
// position of each dim, laid out [out[0] | out[1] | out[2]] and followed by
// 8 readable floats (AveragePool only). `work` is 64-byte aligned
// and pool_work_bytes_avx2(g) long; init_pool_work_avx2 fills its padding
// once per thread before the planes.
void init_pool_work_avx2(const PoolGeom& g, float* work);
void pool_plane_f32_avx2(const PoolGeom& g, const float* x, float* y, const float* inv_cnt, float* work);

// Splits [0, n) into contiguous chunks of at least `grain` items (up to 4
// per thread), claimed dynamically; fn(begin, end, tid) with tid < pool
// threads (so that per-thread scratch can be indexed by it; one thread runs
// its chunks one after another).
void parallel_chunks(KernelContext& ctx, int64_t n, int64_t grain,
                     const std::function<void(int64_t, int64_t, int)>& fn);
// Items per chunk so that a chunk carries about 32K elements of work.
inline int64_t grain_for(int64_t elems_per_item) {
  const int64_t kWork = 32 * 1024;
  return elems_per_item >= kWork ? 1 : kWork / (elems_per_item > 0 ? elems_per_item : 1);
}

// Kernel factories (one file per op group); register.cc wires them up.
std::unique_ptr<Kernel> make_batch_norm_kernel(const Node& node);
std::unique_ptr<Kernel> make_group_norm_kernel(const Node& node);   // also InstanceNormalization
std::unique_ptr<Kernel> make_squeeze_excite_kernel(const Node& node);
std::unique_ptr<Kernel> make_channel_split_norm_kernel(const Node& node);
std::unique_ptr<Kernel> make_layer_norm_kernel(const Node& node);
std::unique_ptr<Kernel> make_channel_layer_norm_kernel(const Node& node);
// ChannelLayerNorm of `len` positions of one image stored channel-major
// (channel ch of position p at x[ch * stride + p]), vectorized across the
// positions (layer_norm_avx2.cc); the ref tier transposes to rows instead.
void layer_norm_channels_f32_avx2(const float* x, float* y, int64_t c, int64_t stride, int64_t len,
                                  const float* gamma, const float* beta, float eps);
std::unique_ptr<Kernel> make_pool_kernel(const Node& node);         // MaxPool, AveragePool
std::unique_ptr<Kernel> make_global_pool_kernel(const Node& node);  // GlobalAveragePool, GlobalMaxPool
std::unique_ptr<Kernel> make_reduce_kernel(const Node& node);       // ReduceMean/Sum/Max/Min
std::unique_ptr<Kernel> make_softmax_kernel(const Node& node);      // Softmax, LogSoftmax

}  // namespace engine
