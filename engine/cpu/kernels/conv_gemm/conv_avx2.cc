// AVX2 pieces of convolution that are not the SGEMM itself:
//
// pack_b_im2col: the im2col matrix of one (image, group),
//   B[(c, kd, kh, kw), (od, oh, ow)] = x[c, od*sd - pd + kd*dd, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]
//   (0 outside the input), written block by block straight into the packed
//   panel layout the micro-kernel reads. The full im2col matrix never exists:
//   each task materializes only its kc x nc block, which stays in L2 for the
//   FMAs that follow. Along an output row the source is a strided (for unit
//   stride: contiguous) run of an input row, so most of the work is 16-float
//   vector copies; padding becomes zero runs computed per row, not per
//   element.
//
// depthwise_avx2: group == Cin == Cout, one (image, channel) plane per task,
//   y[o] = act(sum_t w[t] * x[o*s - p + t*d] + b + z[o]).
//   A GEMM would have M = 1 per group; instead columns whose taps are all
//   inside the input get 8-wide register accumulators over every tap (one
//   store per output vector), and the few border columns run scalar code
//   with bounds checks.
#include <cstring>

#include "cpu/kernels/conv_gemm/activation_avx2.h"
#include "cpu/kernels/conv_gemm/conv_gemm.h"

namespace engine {
namespace conv_gemm {
namespace {

// Smallest o >= 0 with o*s + off >= 0.
inline int64_t first_valid(int64_t off, int64_t s) { return off >= 0 ? 0 : (-off + s - 1) / s; }
// Smallest o >= 0 with o*s + off >= limit.
inline int64_t first_past(int64_t off, int64_t s, int64_t limit) {
  return limit - off <= 0 ? 0 : (limit - off + s - 1) / s;
}

}  // namespace

namespace {

// Source elements [lo, hi) of 8 consecutive floats at p (masked-out lanes
// are neither read nor faulted on, so p may point outside the input).
inline __m256 load_range(const float* p, int64_t lo, int64_t hi) {
  if (lo <= 0 && hi >= 8) return _mm256_loadu_ps(p);
  if (hi <= lo || hi <= 0 || lo >= 8) return _mm256_setzero_ps();
  return _mm256_maskload_ps(p, tail_mask(static_cast<int>(std::min<int64_t>(hi, 8))) &
                                   ~tail_mask(static_cast<int>(std::max<int64_t>(lo, 0))));
}

// dst[0, len) = 0. May write up to 8 floats past len (see im2col_line).
inline void zero_run(float* dst, int64_t len) {
  for (int64_t e = 0; e < len; e += 8) _mm256_storeu_ps(dst + e, _mm256_setzero_ps());
}

// dst[e] = src[e * S] for e in [0, len); reads only inside that range, may
// write up to 8 floats past len.
template <int S>
inline void copy_run(float* dst, const float* src, int64_t len, int64_t stride) {
  int64_t e = 0;
  if constexpr (S == 1) {
    for (; e + 8 <= len; e += 8) _mm256_storeu_ps(dst + e, _mm256_loadu_ps(src + e));
    if (e < len) _mm256_storeu_ps(dst + e, load_range(src + e, 0, len - e));
  } else if constexpr (S == 2) {
    // Even elements of 16 loaded floats; the last vector reads only source
    // elements up to 2*(len-1).
    for (; e < len; e += 8) {
      const int64_t hi = 2 * (len - e) - 1;
      const __m256 v0 = load_range(src + 2 * e, 0, hi), v1 = load_range(src + 2 * e + 8, 0, hi - 8);
      const __m256 ev = _mm256_shuffle_ps(v0, v1, 0x88);  // a0 a2 b0 b2 | a4 a6 b4 b6
      _mm256_storeu_ps(dst + e, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), 0xD8)));
    }
  } else {
    for (; e < len; ++e) dst[e] = src[e * stride];
  }
}

// line[0, nc) = row k = (c, kd, kh, kw) of the im2col matrix, columns
// [n0, n0 + nc), for W stride S (0: any). Output rows are walked in order
// and each piece may overrun its end by up to 8 floats: the next piece (or
// the line's slack) is written afterwards, so the overrun is harmless.
// (od0, oh0, ow0) is the output position of column n0.
template <int S>
void im2col_line(const ConvGeom& g, const float* xc, int64_t d_off, int64_t h_off, int64_t w_off, int64_t od0,
                 int64_t oh0, int64_t ow0, int64_t nc, float* line) {
  const int64_t sw = S == 0 ? g.sw : S;
  // Output columns [ow_lo, ow_hi) read inside the input row for this kw.
  const int64_t ow_lo = std::min(g.ow, first_valid(w_off, sw));
  const int64_t ow_hi = std::max(ow_lo, std::min(g.ow, first_past(w_off, sw, g.iw)));
  int64_t od = od0, oh = oh0, ow = ow0;
  for (int64_t i = 0; i < nc;) {
    const int64_t len = std::min(g.ow - ow, nc - i);
    const int64_t id = od * g.sd + d_off, ih = oh * g.sh + h_off;
    float* d = line + i;
    if (id < 0 || id >= g.id || ih < 0 || ih >= g.ih) {
      zero_run(d, len);
    } else {
      const int64_t a = std::min(std::max(ow_lo, ow), ow + len);
      const int64_t b = std::min(std::max(ow_hi, a), ow + len);
      if (a > ow) zero_run(d, a - ow);
      if (b > a) copy_run<S>(d + (a - ow), xc + (id * g.ih + ih) * g.iw + a * sw + w_off, b - a, sw);
      if (ow + len > b) zero_run(d + (b - ow), ow + len - b);
    }
    i += len;
    ow += len;
    if (ow == g.ow) {
      ow = 0;
      if (++oh == g.oh) {
        oh = 0;
        ++od;
      }
    }
  }
}

}  // namespace

// Two steps per k row: the row's nc columns are built contiguously in a
// line buffer (vector copies of input row runs and zero runs for padding,
// which is what im2col costs anyway), then scattered into the panels with
// aligned 16-float copies. Writing the panels directly would split every
// run at panel boundaries into short, branchy pieces. The scatter of row kk
// runs after row kk+1 is built (two line buffers): reading a line right
// after its overlapping unaligned stores would stall on store forwarding.
void pack_b_im2col(const void* ctx, const float* src, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* dst) {
  const ConvGeom& g = *static_cast<const ConvGeom*>(ctx);
  constexpr int64_t kMaxCols = 256;
  if (nc > kMaxCols) {
    for (int64_t c0 = 0; c0 < nc; c0 += kMaxCols)
      pack_b_im2col(ctx, src, k0, kc, n0 + c0, std::min(kMaxCols, nc - c0), dst + c0 * kc);
    return;
  }
  alignas(64) float lines[2][kMaxCols + 16];
  const int64_t panels = (nc + kNR - 1) / kNR;
  const int64_t in_plane = g.in_plane(), ks = g.ksize();
  const int64_t od0 = n0 / (g.oh * g.ow), oh0 = (n0 / g.ow) % g.oh, ow0 = n0 % g.ow;
  auto scatter = [&](int64_t kk) {
    const float* line = lines[kk & 1];
    float* drow = dst + kk * kNR;
    for (int64_t q = 0; q < panels; ++q) {
      float* d = drow + q * kNR * kc;
      _mm256_store_ps(d, _mm256_load_ps(line + q * kNR));
      _mm256_store_ps(d + 8, _mm256_load_ps(line + q * kNR + 8));
    }
  };
  int64_t c = k0 / ks, t = k0 % ks;
  int64_t kd = t / (g.kh * g.kw), kh = (t / g.kw) % g.kh, kw = t % g.kw;
  for (int64_t kk = 0; kk < kc; ++kk) {
    const float* xc = src + c * in_plane;
    const int64_t d_off = kd * g.dd - g.pd, h_off = kh * g.dh - g.ph, w_off = kw * g.dw - g.pw;
    float* line = lines[kk & 1];
    if (g.sw == 1) im2col_line<1>(g, xc, d_off, h_off, w_off, od0, oh0, ow0, nc, line);
    else if (g.sw == 2) im2col_line<2>(g, xc, d_off, h_off, w_off, od0, oh0, ow0, nc, line);
    else im2col_line<0>(g, xc, d_off, h_off, w_off, od0, oh0, ow0, nc, line);
    if (kk > 0) scatter(kk - 1);
    if (++kw == g.kw) {
      kw = 0;
      if (++kh == g.kh) {
        kh = 0;
        if (++kd == g.kd) {
          kd = 0;
          ++c;
        }
      }
    }
  }
  if (kc > 0) scatter(kc - 1);
}

void activate_avx2(float* x, int64_t n, const Activation& act) {
  if (act.kind == Act::kNone) return;
  with_act(act, [&](const auto& op) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, op(_mm256_loadu_ps(x + i)));
    if (i < n) {
      const __m256i m = tail_mask(static_cast<int>(n - i));
      _mm256_maskstore_ps(x + i, m, op(_mm256_maskload_ps(x + i, m)));
    }
  });
}

namespace {

// One output row of a depthwise plane: columns [lo, hi) have every kw tap
// inside the input; `rows` lists the input rows of the valid (kd, kh) taps
// and `wrows` their kw weights.
void depthwise_row(const ConvGeom& g, const float* const* rows, const float* const* wrows, int ntaps, float bias,
                   const float* zrow, float* yrow, int64_t lo, int64_t hi) {
  const int64_t kw = g.kw, sw = g.sw, dw = g.dw, pw = g.pw;
  auto scalar = [&](int64_t ow) {
    float acc = bias;
    for (int t = 0; t < ntaps; ++t)
      for (int64_t j = 0; j < kw; ++j) {
        const int64_t iw = ow * sw - pw + j * dw;
        if (iw >= 0 && iw < g.iw) acc += wrows[t][j] * rows[t][iw];
      }
    yrow[ow] = zrow ? acc + zrow[ow] : acc;
  };
  for (int64_t ow = 0; ow < lo; ++ow) scalar(ow);
  const __m256 vb = _mm256_set1_ps(bias);
  int64_t ow = lo;
  if (sw == 1) {
    for (; ow + 32 <= hi; ow += 32) {
      __m256 a0 = vb, a1 = vb, a2 = vb, a3 = vb;
      for (int t = 0; t < ntaps; ++t) {
        const float* src = rows[t] + ow - pw;
        for (int64_t j = 0; j < kw; ++j) {
          const __m256 wv = _mm256_broadcast_ss(wrows[t] + j);
          const float* s = src + j * dw;
          a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(s), a0);
          a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(s + 8), a1);
          a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(s + 16), a2);
          a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(s + 24), a3);
        }
      }
      if (zrow) {
        a0 = _mm256_add_ps(a0, _mm256_loadu_ps(zrow + ow));
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(zrow + ow + 8));
        a2 = _mm256_add_ps(a2, _mm256_loadu_ps(zrow + ow + 16));
        a3 = _mm256_add_ps(a3, _mm256_loadu_ps(zrow + ow + 24));
      }
      _mm256_storeu_ps(yrow + ow, a0);
      _mm256_storeu_ps(yrow + ow + 8, a1);
      _mm256_storeu_ps(yrow + ow + 16, a2);
      _mm256_storeu_ps(yrow + ow + 24, a3);
    }
    for (; ow + 8 <= hi; ow += 8) {
      __m256 a0 = vb;
      for (int t = 0; t < ntaps; ++t) {
        const float* src = rows[t] + ow - pw;
        for (int64_t j = 0; j < kw; ++j)
          a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(wrows[t] + j), _mm256_loadu_ps(src + j * dw), a0);
      }
      if (zrow) a0 = _mm256_add_ps(a0, _mm256_loadu_ps(zrow + ow));
      _mm256_storeu_ps(yrow + ow, a0);
    }
  } else {
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                           _mm256_set1_epi32(static_cast<int>(sw)));
    for (; ow + 8 <= hi; ow += 8) {
      __m256 a0 = vb;
      for (int t = 0; t < ntaps; ++t) {
        const float* src = rows[t] + ow * sw - pw;
        for (int64_t j = 0; j < kw; ++j)
          a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(wrows[t] + j), _mm256_i32gather_ps(src + j * dw, idx, 4), a0);
      }
      if (zrow) a0 = _mm256_add_ps(a0, _mm256_loadu_ps(zrow + ow));
      _mm256_storeu_ps(yrow + ow, a0);
    }
  }
  for (; ow < g.ow; ++ow) scalar(ow);
}

void depthwise_plane(const ConvGeom& g, const float* xp, const float* wp, float bias, const float* zp,
                     const Activation& act, float* yp) {
  // Interior columns: ow*sw - pw >= 0 and ow*sw - pw + (kw-1)*dw < iw.
  const int64_t lo = std::min(g.ow, first_valid(-g.pw, g.sw));
  const int64_t hi = std::max(lo, std::min(g.ow, first_past(-g.pw + (g.kw - 1) * g.dw, g.sw, g.iw)));
  constexpr int kMaxTaps = 64;
  const float* rows[kMaxTaps];
  const float* wrows[kMaxTaps];
  for (int64_t od = 0; od < g.od; ++od)
    for (int64_t oh = 0; oh < g.oh; ++oh) {
      const int64_t o = (od * g.oh + oh) * g.ow;
      float* yrow = yp + o;
      const float* zrow = zp ? zp + o : nullptr;
      // Taps are accumulated kMaxTaps (kd, kh) rows at a time; kernels with
      // more rows than that chain through yrow as the bias of the next batch.
      int ntaps = 0;
      bool first = true;
      auto flush = [&] {
        if (first) {
          depthwise_row(g, rows, wrows, ntaps, bias, zrow, yrow, lo, hi);
        } else {
          // Continue from the partial sums already in yrow.
          for (int64_t ow = 0; ow < g.ow; ++ow) {
            float acc = yrow[ow];
            for (int t = 0; t < ntaps; ++t)
              for (int64_t j = 0; j < g.kw; ++j) {
                const int64_t iw = ow * g.sw - g.pw + j * g.dw;
                if (iw >= 0 && iw < g.iw) acc += wrows[t][j] * rows[t][iw];
              }
            yrow[ow] = acc;
          }
        }
        first = false;
        ntaps = 0;
      };
      for (int64_t kd = 0; kd < g.kd; ++kd) {
        const int64_t id = od * g.sd - g.pd + kd * g.dd;
        if (id < 0 || id >= g.id) continue;
        for (int64_t kh = 0; kh < g.kh; ++kh) {
          const int64_t ih = oh * g.sh - g.ph + kh * g.dh;
          if (ih < 0 || ih >= g.ih) continue;
          if (ntaps == kMaxTaps) flush();
          rows[ntaps] = xp + (id * g.ih + ih) * g.iw;
          wrows[ntaps] = wp + (kd * g.kh + kh) * g.kw;
          ++ntaps;
        }
      }
      if (first || ntaps > 0) flush();
      activate_avx2(yrow, g.ow, act);
    }
}

}  // namespace

void depthwise_avx2(ThreadPool& pool, const ConvGeom& g, const float* x, const float* w, const float* b,
                    const float* z, const Activation& act, float* y) {
  const int64_t planes = g.batch * g.cout, in_plane = g.in_plane(), out_plane = g.out_plane();
  const int64_t ks = g.ksize();
  pool.parallel_for(planes, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t c = p % g.cout;
      depthwise_plane(g, x + p * in_plane, w + c * ks, b ? b[c] : 0.f, z ? z + p * out_plane : nullptr, act,
                      y + p * out_plane);
    }
  });
}

}  // namespace conv_gemm
}  // namespace engine
