// AVX2 MaxPool / AveragePool over one (n, c) plane (see pool_ref.cc for the
// semantics). The window is separable, so each output row is computed in two
// steps:
//  1. vertical: reduce the input rows its (depth, height) taps hit (only the
//     valid ones) into a row buffer, vectorized along W;
//  2. horizontal: y[ow] = reduce over kw of buf[ow * stride + kw * dilation].
// The row buffer is laid out in padded coordinates and its padding holds the
// reduction's identity (lowest float for max, 0 for sum), so step 2 needs no
// bounds checks: padding and ceil_mode's partial windows come for free.
// Stride 1 loads contiguous vectors, stride 2 (ResNet's 3x3/2 max pool)
// de-interleaves 16 floats into the 8 even ones; other strides are scalar.
// Partial vectors at the end of a row are vectors too (see below).
// MaxPool propagates NaN: any NaN tap gives NaN (max_nan), like the
// reference; onnxruntime's MLAS pool keeps or drops it by position.
// AveragePool then scales by 1 / (count_d * count_h * count_w), precomputed
// per dim.
#include <algorithm>
#include <limits>

#include "cpu/kernels/norm_pool/avx2_math.h"
#include "cpu/kernels/norm_pool/norm_pool.h"
#include "cpu/simd/vec_scalar.h"

namespace engine {
namespace {

size_t round64(size_t b) { return (b + 63) / 64 * 64; }

// Floats in the row buffer: the padded row, plus slack for the 16-float
// loads of the last stride-2 vector.
int64_t buf_len(const PoolGeom& g) {
  const int64_t need = std::max(g.pad_begin[2] + g.in[2],
                                (g.out[2] - 1) * g.stride[2] + (g.kernel[2] - 1) * g.dilation[2] + 1);
  return (need + 32 + 15) / 16 * 16;
}

float identity(const PoolGeom& g) { return g.is_max ? std::numeric_limits<float>::lowest() : 0.f; }

// The 8 even-indexed floats of p[0..16).
inline __m256 load_even(const float* p) {
  const __m256 e = _mm256_shuffle_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8), _MM_SHUFFLE(2, 0, 2, 0));
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0)));
}

template <bool kMax>
inline __m256 op(__m256 a, __m256 b) {
  return kMax ? simd::avx2::max_nan(a, b) : _mm256_add_ps(a, b);
}
template <bool kMax>
inline float op(float a, float b) {
  return kMax ? simd::scalar::max_nan(a, b) : a + b;
}

// Lanes [0, r) on, for 1 <= r <= 8.
inline __m256i tail_mask(int64_t r) {
  static const int32_t kBits[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kBits + 8 - r));
}

// Rows narrower than a few vectors (7x7, 14x14, 28x28 planes) would spend
// most of their time in scalar tails, so tails are vectors too. Masked
// stores are slow on some AMD cores, so none is used: the vertical tail
// loads masked, fills the off lanes with the identity and stores the whole
// vector into the padding (which holds the identity anyway).
template <bool kMax>
void vertical(const float* const* rows, int nr, float* dst, int64_t w, float fill) {
  if (nr == 0) {
    std::fill(dst, dst + w, fill);
    return;
  }
  int64_t i = 0;
  for (; i + 8 <= w; i += 8) {
    __m256 v = _mm256_loadu_ps(rows[0] + i);
    for (int r = 1; r < nr; ++r) v = op<kMax>(v, _mm256_loadu_ps(rows[r] + i));
    _mm256_storeu_ps(dst + i, v);
  }
  if (i < w) {
    const __m256i m = tail_mask(w - i);
    __m256 v = _mm256_maskload_ps(rows[0] + i, m);
    for (int r = 1; r < nr; ++r) v = op<kMax>(v, _mm256_maskload_ps(rows[r] + i, m));
    _mm256_storeu_ps(dst + i, _mm256_blendv_ps(_mm256_set1_ps(fill), v, _mm256_castsi256_ps(m)));
  }
}

// y[ow] = reduce_kw buf[ow*s + kw*d], times inv_w[ow] * inv_dh (the
// reciprocal window counts) for AveragePool: multiplying instead of dividing
// costs at most an ulp and keeps the divider off the critical path.
// A partial last vector is recomputed overlapping the previous one (same
// values, plain store); rows shorter than a vector go through a small
// buffer. Reading whole vectors past the row is safe: the row buffer has
// slack and inv_w is padded.
template <bool kMax, int kStride>
inline __m256 window8(const float* p, int64_t k, int64_t d) {
  __m256 acc = kStride == 1 ? _mm256_loadu_ps(p) : load_even(p);
  for (int64_t t = 1; t < k; ++t) acc = op<kMax>(acc, kStride == 1 ? _mm256_loadu_ps(p + t * d) : load_even(p + t * d));
  return acc;
}

template <bool kMax, int kStride>
void horizontal_vec(const PoolGeom& g, const float* buf, float* y, const float* inv_w, float inv_dh) {
  const int64_t ow_n = g.out[2], k = g.kernel[2], d = g.dilation[2];
  const __m256 vdh = _mm256_set1_ps(inv_dh);
  auto one = [&](int64_t ow) {
    const __m256 acc = window8<kMax, kStride>(buf + ow * kStride, k, d);
    return kMax ? acc : _mm256_mul_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(inv_w + ow), vdh));
  };
  if (ow_n < 8) {
    alignas(32) float tmp[8];
    _mm256_store_ps(tmp, one(0));
    for (int64_t i = 0; i < ow_n; ++i) y[i] = tmp[i];
    return;
  }
  int64_t ow = 0;
  for (; ow + 8 <= ow_n; ow += 8) _mm256_storeu_ps(y + ow, one(ow));
  if (ow < ow_n) _mm256_storeu_ps(y + ow_n - 8, one(ow_n - 8));
}

template <bool kMax>
void horizontal(const PoolGeom& g, const float* buf, float* y, const float* inv_w, float inv_dh) {
  if (g.stride[2] == 1) return horizontal_vec<kMax, 1>(g, buf, y, inv_w, inv_dh);
  if (g.stride[2] == 2) return horizontal_vec<kMax, 2>(g, buf, y, inv_w, inv_dh);
  const int64_t k = g.kernel[2], s = g.stride[2], d = g.dilation[2];
  for (int64_t ow = 0; ow < g.out[2]; ++ow) {
    const float* p = buf + ow * s;
    float acc = p[0];
    for (int64_t t = 1; t < k; ++t) acc = op<kMax>(acc, p[t * d]);
    y[ow] = kMax ? acc : acc * (inv_w[ow] * inv_dh);
  }
}

// Output rows per batch: the vertical pass fills a batch of row buffers
// before the horizontal pass reads any of them, so the horizontal pass's
// unaligned loads never wait on the vertical pass's just-issued stores (a
// failed store-to-load forward). A batch stays within about 32 KB.
int64_t batch_rows(const PoolGeom& g) {
  return std::max<int64_t>(1, std::min<int64_t>(g.out[1], 8192 / buf_len(g)));
}

template <bool kMax>
void pool_plane(const PoolGeom& g, const float* x, float* y, const float* inv_cnt, float* work) {
  const int64_t len = buf_len(g), batch = batch_rows(g);
  float* bufs = work;
  auto** rows = reinterpret_cast<const float**>(reinterpret_cast<char*>(work) + round64(batch * len * sizeof(float)));
  const int64_t H = g.in[1], W = g.in[2];
  const float* inv_d = inv_cnt;
  const float* inv_h = inv_cnt ? inv_cnt + g.out[0] : nullptr;
  const float* inv_w = inv_cnt ? inv_cnt + g.out[0] + g.out[1] : nullptr;
  for (int64_t od = 0; od < g.out[0]; ++od) {
    for (int64_t oh0 = 0; oh0 < g.out[1]; oh0 += batch) {
      const int64_t oh1 = std::min(g.out[1], oh0 + batch);
      for (int64_t oh = oh0; oh < oh1; ++oh) {
        int nr = 0;
        for (int64_t kd = 0; kd < g.kernel[0]; ++kd) {
          const int64_t id = od * g.stride[0] - g.pad_begin[0] + kd * g.dilation[0];
          if (id < 0 || id >= g.in[0]) continue;
          for (int64_t kh = 0; kh < g.kernel[1]; ++kh) {
            const int64_t ih = oh * g.stride[1] - g.pad_begin[1] + kh * g.dilation[1];
            if (ih >= 0 && ih < H) rows[nr++] = x + (id * H + ih) * W;
          }
        }
        vertical<kMax>(rows, nr, bufs + (oh - oh0) * len + g.pad_begin[2], W, identity(g));
      }
      for (int64_t oh = oh0; oh < oh1; ++oh)
        horizontal<kMax>(g, bufs + (oh - oh0) * len, y + (od * g.out[1] + oh) * g.out[2], inv_w,
                         kMax ? 1.f : inv_d[od] * inv_h[oh]);
    }
  }
}

}  // namespace

size_t pool_work_bytes_avx2(const PoolGeom& g) {
  return round64(batch_rows(g) * buf_len(g) * sizeof(float)) +
         round64(g.kernel[0] * g.kernel[1] * sizeof(const float*));
}

void init_pool_work_avx2(const PoolGeom& g, float* work) {
  std::fill(work, work + batch_rows(g) * buf_len(g), identity(g));
}

void pool_plane_f32_avx2(const PoolGeom& g, const float* x, float* y, const float* inv_cnt, float* work) {
  if (g.is_max) pool_plane<true>(g, x, y, inv_cnt, work);
  else pool_plane<false>(g, x, y, inv_cnt, work);
}

}  // namespace engine
