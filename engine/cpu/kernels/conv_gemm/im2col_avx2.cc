// The im2col packer of the AVX2 convolution: the B operand of one
// (image, group)'s GEMM,
//   B[(c, kd, kh, kw), (od, oh, ow)] = x[c, od*sd - pd + kd*dd, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]
// (0 outside the input), written block by block straight into the packed
// panel layout the micro-kernel reads. The full im2col matrix never exists:
// each SGEMM task materializes only its kc x nc block, which stays in L2 for
// the FMAs that follow. Along an output row the source is a strided (for
// unit stride: contiguous) run of an input row, so the work is vector copies
// and zero runs computed per row, not per element.

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

// Fast path for unit H/W strides with OW == IW and a single output depth
// slice (3x3 "same" convs): output position n then reads input element
// n + h_off*IW + w_off of its plane, so one k row of the block is a single
// contiguous run copied straight into the panels. Columns whose input column
// falls outside the row depend only on kw: `keep` holds, per panel, the lane
// masks of the columns to keep for this kw (computed once per call), and
// rows outside the input are cut from the copied range.
void im2col_same_width_row(const ConvGeom& g, const float* plane, int64_t h_off, int64_t w_off, int64_t n0,
                           int64_t nc, int64_t kc, const __m256* keep, float* drow) {
  const int64_t ow = g.ow, iw = g.iw;
  // Columns [a, b) of the block lie in output rows whose input row exists.
  const int64_t oh_a = std::max<int64_t>(0, -h_off), oh_b = std::min(g.oh, g.ih - h_off);
  const int64_t shift = h_off * iw + w_off;  // source index = n + shift
  // Also stay inside the plane: the excluded columns are edge columns.
  const int64_t a = std::max({oh_a * ow - n0, -n0 - shift, int64_t{0}});
  const int64_t b = std::min({oh_b * ow - n0, g.ih * iw - n0 - shift, nc});
  const float* src = plane + n0 + shift;  // column i reads src[i]
  const int64_t panels = (nc + kNR - 1) / kNR;
  for (int64_t q = 0; q < panels; ++q) {
    const int64_t c0 = q * kNR;
    float* d = drow + q * kNR * kc;
    _mm256_store_ps(d, _mm256_and_ps(keep[2 * q], load_range(src + c0, a - c0, b - c0)));
    _mm256_store_ps(d + 8, _mm256_and_ps(keep[2 * q + 1], load_range(src + c0 + 8, a - c0 - 8, b - c0 - 8)));
  }
}

// keep[(kw * panels + q) * 2 + h]: lanes of panel q (half h) whose input
// column ow + kw*dw - pw lies inside the row, for the block [n0, n0 + nc).
void same_width_masks(const ConvGeom& g, int64_t n0, int64_t nc, __m256* keep) {
  const int64_t panels = (nc + kNR - 1) / kNR;
  alignas(32) int32_t lanes[kNR];
  for (int64_t kw = 0; kw < g.kw; ++kw) {
    const int64_t w_off = kw * g.dw - g.pw;
    for (int64_t q = 0; q < panels; ++q) {
      for (int j = 0; j < kNR; ++j) {
        const int64_t col = q * kNR + j, iw = (n0 + col) % g.ow + w_off;
        lanes[j] = col < nc && iw >= 0 && iw < g.iw ? -1 : 0;
      }
      keep[(kw * panels + q) * 2] = _mm256_castsi256_ps(_mm256_load_si256(reinterpret_cast<__m256i*>(lanes)));
      keep[(kw * panels + q) * 2 + 1] =
          _mm256_castsi256_ps(_mm256_load_si256(reinterpret_cast<__m256i*>(lanes + 8)));
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
  constexpr int64_t kMaxMaskKw = 8;
  const bool same_width = g.sw == 1 && g.sh == 1 && g.ow == g.iw && g.od == 1 && g.kw <= kMaxMaskKw;
  __m256 keep[kMaxMaskKw * (kMaxCols / kNR) * 2];  // 8 KB
  if (same_width) same_width_masks(g, n0, nc, keep);
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
    if (same_width) {
      const int64_t id = d_off;
      if (id < 0 || id >= g.id) {
        for (int64_t q = 0; q < panels; ++q) {
          float* d = dst + kk * kNR + q * kNR * kc;
          _mm256_store_ps(d, _mm256_setzero_ps());
          _mm256_store_ps(d + 8, _mm256_setzero_ps());
        }
      } else {
        im2col_same_width_row(g, xc + id * g.ih * g.iw, h_off, w_off, n0, nc, kc, keep + kw * panels * 2,
                              dst + kk * kNR);
      }
    } else if (g.sw == 1) im2col_line<1>(g, xc, d_off, h_off, w_off, od0, oh0, ow0, nc, line);
    else if (g.sw == 2) im2col_line<2>(g, xc, d_off, h_off, w_off, od0, oh0, ow0, nc, line);
    else im2col_line<0>(g, xc, d_off, h_off, w_off, od0, oh0, ow0, nc, line);
    if (kk > 0 && !same_width) scatter(kk - 1);
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
  if (kc > 0 && !same_width) scatter(kc - 1);
}

}  // namespace conv_gemm
}  // namespace engine
