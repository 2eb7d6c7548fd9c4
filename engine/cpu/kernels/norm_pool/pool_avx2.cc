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
// AveragePool then divides by count_d * count_h * count_w (precomputed).
#include <algorithm>
#include <limits>

#include "cpu/kernels/norm_pool/avx2_math.h"
#include "cpu/kernels/norm_pool/norm_pool.h"

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
  return kMax ? _mm256_max_ps(a, b) : _mm256_add_ps(a, b);
}
template <bool kMax>
inline float op(float a, float b) {
  return kMax ? std::max(a, b) : a + b;
}

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
  for (; i < w; ++i) {
    float v = rows[0][i];
    for (int r = 1; r < nr; ++r) v = op<kMax>(v, rows[r][i]);
    dst[i] = v;
  }
}

// y[ow] = reduce_kw buf[ow*s + kw*d], divided by cnt_w[ow] * cnt_dh for
// AveragePool.
template <bool kMax>
void horizontal(const PoolGeom& g, const float* buf, float* y, const float* cnt_w, float cnt_dh) {
  const int64_t ow_n = g.out[2], k = g.kernel[2], s = g.stride[2], d = g.dilation[2];
  int64_t ow = 0;
  const __m256 vdh = _mm256_set1_ps(cnt_dh);
  if (s == 1 || s == 2) {
    for (; ow + 8 <= ow_n; ow += 8) {
      const float* p = buf + ow * s;
      __m256 acc = s == 1 ? _mm256_loadu_ps(p) : load_even(p);
      for (int64_t t = 1; t < k; ++t)
        acc = op<kMax>(acc, s == 1 ? _mm256_loadu_ps(p + t * d) : load_even(p + t * d));
      if (!kMax) acc = _mm256_div_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(cnt_w + ow), vdh));
      _mm256_storeu_ps(y + ow, acc);
    }
  }
  for (; ow < ow_n; ++ow) {
    const float* p = buf + ow * s;
    float acc = p[0];
    for (int64_t t = 1; t < k; ++t) acc = op<kMax>(acc, p[t * d]);
    y[ow] = kMax ? acc : acc / (cnt_w[ow] * cnt_dh);
  }
}

template <bool kMax>
void pool_plane(const PoolGeom& g, const float* x, float* y, const float* cnt, float* work) {
  float* buf = work;
  auto** rows = reinterpret_cast<const float**>(reinterpret_cast<char*>(work) + round64(buf_len(g) * sizeof(float)));
  const int64_t H = g.in[1], W = g.in[2];
  const float* cnt_d = cnt;
  const float* cnt_h = cnt ? cnt + g.out[0] : nullptr;
  const float* cnt_w = cnt ? cnt + g.out[0] + g.out[1] : nullptr;
  for (int64_t od = 0; od < g.out[0]; ++od) {
    for (int64_t oh = 0; oh < g.out[1]; ++oh) {
      int nr = 0;
      for (int64_t kd = 0; kd < g.kernel[0]; ++kd) {
        const int64_t id = od * g.stride[0] - g.pad_begin[0] + kd * g.dilation[0];
        if (id < 0 || id >= g.in[0]) continue;
        for (int64_t kh = 0; kh < g.kernel[1]; ++kh) {
          const int64_t ih = oh * g.stride[1] - g.pad_begin[1] + kh * g.dilation[1];
          if (ih >= 0 && ih < H) rows[nr++] = x + (id * H + ih) * W;
        }
      }
      vertical<kMax>(rows, nr, buf + g.pad_begin[2], W, identity(g));
      horizontal<kMax>(g, buf, y + (od * g.out[1] + oh) * g.out[2], cnt_w, kMax ? 1.f : cnt_d[od] * cnt_h[oh]);
    }
  }
}

}  // namespace

size_t pool_work_bytes_avx2(const PoolGeom& g) {
  return round64(buf_len(g) * sizeof(float)) + round64(g.kernel[0] * g.kernel[1] * sizeof(const float*));
}

void init_pool_work_avx2(const PoolGeom& g, float* work) { std::fill(work, work + buf_len(g), identity(g)); }

void pool_plane_f32_avx2(const PoolGeom& g, const float* x, float* y, const float* cnt, float* work) {
  if (g.is_max) pool_plane<true>(g, x, y, cnt, work);
  else pool_plane<false>(g, x, y, cnt, work);
}

}  // namespace engine
