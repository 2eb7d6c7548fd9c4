// Preprocess reference pieces: the per-axis resampling tables (the
// conventions of ir/preprocess.h) and the plain-loop horizontal and vertical
// passes, which are the fallback and the oracle of the AVX2 ones.
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "cpu/kernels/preprocess/preprocess.h"

namespace engine {
namespace preprocess {

void build_axis_table(bool nearest, bool antialias, int64_t in_len, int64_t resized_len, int64_t offset,
                      int64_t out_len, AxisTable* t) {
  ENGINE_CHECK(in_len > 0 && resized_len > 0 && offset >= 0 && offset + out_len <= resized_len);
  // Each output's window before the fixed-size shift: first pixel and weights.
  std::vector<int64_t> first(static_cast<size_t>(out_len));
  std::vector<std::vector<double>> weights(static_cast<size_t>(out_len));
  const double scale = static_cast<double>(in_len) / static_cast<double>(resized_len);
  for (int64_t o = 0; o < out_len; ++o) {
    const int64_t r = o + offset;
    std::vector<double>& wv = weights[static_cast<size_t>(o)];
    if (nearest) {
      // floor((r + 0.5) * in / out) in exact integer arithmetic.
      const __int128 num = static_cast<__int128>(2 * r + 1) * in_len;
      const int64_t src = static_cast<int64_t>(num / (2 * static_cast<__int128>(resized_len)));
      first[o] = std::min(src, in_len - 1);
      wv = {1.0};
    } else if (antialias && scale > 1.0) {
      // Pillow's precompute_coeffs with the triangle filter (support 1).
      const double center = (static_cast<double>(r) + 0.5) * scale;
      const double support = scale;  // filter support 1 widened by the scale
      int64_t xmin = static_cast<int64_t>(center - support + 0.5);
      if (xmin < 0) xmin = 0;
      int64_t xmax = std::min(static_cast<int64_t>(center + support + 0.5), in_len);
      if (xmax <= xmin) xmax = xmin + 1;
      double sum = 0;
      for (int64_t x = xmin; x < xmax; ++x) {
        const double v = std::max(0.0, 1.0 - std::fabs((static_cast<double>(x) - center + 0.5) / scale));
        wv.push_back(v);
        sum += v;
      }
      if (sum > 0)
        for (double& v : wv) v /= sum;
      first[o] = xmin;
    } else {
      // Half-pixel bilinear, source coordinate clamped to [0, in_len - 1].
      double src = (static_cast<double>(r) + 0.5) * scale - 0.5;
      if (src < 0) src = 0;
      int64_t i0 = static_cast<int64_t>(src);
      double lambda = src - static_cast<double>(i0);
      if (i0 >= in_len - 1) {
        i0 = in_len - 1;
        lambda = 0;
      }
      first[o] = i0;
      wv = lambda > 0 ? std::vector<double>{1.0 - lambda, lambda} : std::vector<double>{1.0};
    }
  }
  size_t taps = 1;
  for (const auto& wv : weights) taps = std::max(taps, wv.size());
  taps = std::min<size_t>(taps, static_cast<size_t>(in_len));
  t->taps = static_cast<int>(taps);
  t->stride = static_cast<int>(taps + (taps & 1));
  t->start.assign(static_cast<size_t>(out_len), 0);
  t->w.assign(static_cast<size_t>(out_len) * t->stride, 0.0f);
  for (int64_t o = 0; o < out_len; ++o) {
    const std::vector<double>& wv = weights[static_cast<size_t>(o)];
    const int64_t s = std::min<int64_t>(first[o], in_len - static_cast<int64_t>(taps));
    t->start[o] = static_cast<int32_t>(s);
    for (size_t k = 0; k < wv.size(); ++k) t->w[o * t->stride + (first[o] - s) + k] = static_cast<float>(wv[k]);
  }
}

void hpass_u8_ref(const uint8_t* row, const int32_t* start, const float* w, int taps, int stride, int64_t out_w,
                  bool bgr, float* out, int64_t ld) {
  for (int64_t o = 0; o < out_w; ++o) {
    const uint8_t* px = row + 3 * static_cast<int64_t>(start[o]);
    const float* wo = w + o * stride;
    float acc[3] = {0, 0, 0};
    for (int k = 0; k < taps; ++k)
      for (int c = 0; c < 3; ++c) acc[c] += wo[k] * static_cast<float>(px[3 * k + c]);
    for (int p = 0; p < 3; ++p) out[p * ld + o] = acc[bgr ? 2 - p : p];
  }
}

namespace {

inline uint8_t sat_u8(int v) { return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v); }

// BT.601 limited range in 20-bit fixed point: 1.164, 1.596, -0.813, -0.391,
// 2.018. The per-byte terms come from tables built once, so a pixel costs
// three adds, shifts and clamps (the chroma terms are shared by two pixels).
struct Nv12Tables {
  int y[256], rv[256], gv[256], gu[256], bu[256];
  Nv12Tables() {
    constexpr int kCy = 1220542, kCvr = 1673527, kCvg = -852492, kCug = -409993, kCub = 2116026;
    for (int i = 0; i < 256; ++i) {
      y[i] = std::max(i - 16, 0) * kCy + (1 << 19);  // with the rounding term
      rv[i] = kCvr * (i - 128);
      gv[i] = kCvg * (i - 128);
      gu[i] = kCug * (i - 128);
      bu[i] = kCub * (i - 128);
    }
  }
};

const Nv12Tables& nv12_tables() {
  static const Nv12Tables t;
  return t;
}

}  // namespace

void nv12_row_to_rgb_ref(const uint8_t* y, const uint8_t* uv, int64_t x0, int64_t x1, uint8_t* rgb) {
  const Nv12Tables& t = nv12_tables();
  for (int64_t x = x0; x < x1; ++x) {
    const int64_t c = x & ~int64_t{1};
    const int yy = t.y[y[x]], r = t.rv[uv[c + 1]], g = t.gv[uv[c + 1]] + t.gu[uv[c]], b = t.bu[uv[c]];
    rgb[3 * x] = sat_u8((yy + r) >> 20);
    rgb[3 * x + 1] = sat_u8((yy + g) >> 20);
    rgb[3 * x + 2] = sat_u8((yy + b) >> 20);
  }
}

void vpass_f32_ref(const float* src, int64_t row_stride, const float* wy, int taps, int64_t out_w, int64_t ld,
                   const float* scale, const float* bias, float* const* dst) {
  for (int p = 0; p < 3; ++p) {
    for (int64_t o = 0; o < out_w; ++o) {
      float acc = 0;
      for (int k = 0; k < taps; ++k) acc += wy[k] * src[k * row_stride + p * ld + o];
      dst[p][o] = acc * scale[p] + bias[p];
    }
  }
}

}  // namespace preprocess
}  // namespace engine
