// The Preprocess kernel (ir/preprocess.h gives the op's meaning): uint8
// frames -> resized, centre-cropped, normalized float32 planes.
//
// Separable resampling with precomputed per-axis tables: every output
// column (row) reads a fixed-size window of `taps` input pixels from
// start[o], with weights w[o * stride + k] (windows near the right edge are
// shifted left and their weights moved, so all windows have the same size;
// stride pads taps to even with zero weights for the AVX2 pair loads).
// Nearest is the one-tap case, bilinear two taps, antialiased bilinear the
// triangle filter's width. Only the crop window is computed: the tables map
// output indices straight to input pixels.
//
// Per image, output rows go in bands: the horizontal pass turns each input
// row a band needs into three planar float rows (RGB order, width ow), the
// vertical pass blends `taps` of them per output row and applies
// v * scale[c] + bias[c] (scale = 1 / (255 std), bias = -mean / std). Bands
// of all images are claimed dynamically by the pool's threads. NV12 frames
// are first converted to RGB, row by row, for the columns the windows read.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/kernel.h"

namespace engine {
namespace preprocess {

struct AxisTable {
  int taps = 0;    // window size (>= 1)
  int stride = 0;  // taps rounded up to even
  std::vector<int32_t> start;
  std::vector<float> w;  // out_len * stride
};

// Resampling of one axis of `in_len` pixels resized to `resized_len`, for
// output indices [offset, offset + out_len) of the resized axis.
void build_axis_table(bool nearest, bool antialias, int64_t in_len, int64_t resized_len, int64_t offset,
                      int64_t out_len, AxisTable* t);

// Horizontal pass over one row of interleaved 3-byte pixels:
//   out[p * ld + o] = sum_{k < taps} w[o * stride + k] * row[3 * (start[o] + k) + ch(p)]
// for planes p = 0, 1, 2 and o < out_w, where ch(p) = bgr ? 2 - p : p.
// The SIMD versions read up to 16 bytes past the last pixel they use: the
// caller pads the row when that could leave the buffer.
void hpass_u8_ref(const uint8_t* row, const int32_t* start, const float* w, int taps, int stride, int64_t out_w,
                  bool bgr, float* out, int64_t ld);
void hpass_u8_avx2(const uint8_t* row, const int32_t* start, const float* w, int taps, int stride, int64_t out_w,
                   bool bgr, float* out, int64_t ld);
void hpass_u8_avx512(const uint8_t* row, const int32_t* start, const float* w, int taps, int stride, int64_t out_w,
                     bool bgr, float* out, int64_t ld);

// NV12 to interleaved RGB for pixels [x0, x1) of one row (ir/preprocess.h
// gives the fixed-point BT.601 formula): y is the row of the Y plane, uv the
// row of the chroma plane that covers it.
void nv12_row_to_rgb_ref(const uint8_t* y, const uint8_t* uv, int64_t x0, int64_t x1, uint8_t* rgb);
void nv12_row_to_rgb_avx2(const uint8_t* y, const uint8_t* uv, int64_t x0, int64_t x1, uint8_t* rgb);

// Vertical pass: rows k = 0 .. taps-1 start at src + k * row_stride, each
// three planes of ld floats (ld a multiple of 16: the SIMD forms load whole
// vectors past out_w);
//   dst[p][o] = (sum_k wy[k] * src[k * row_stride + p * ld + o]) * scale[p] + bias[p].
void vpass_f32_ref(const float* src, int64_t row_stride, const float* wy, int taps, int64_t out_w, int64_t ld,
                   const float* scale, const float* bias, float* const* dst);
void vpass_f32_avx2(const float* src, int64_t row_stride, const float* wy, int taps, int64_t out_w, int64_t ld,
                    const float* scale, const float* bias, float* const* dst);
void vpass_f32_avx512(const float* src, int64_t row_stride, const float* wy, int taps, int64_t out_w, int64_t ld,
                      const float* scale, const float* bias, float* const* dst);

std::unique_ptr<Kernel> create_preprocess(const Node& node);

}  // namespace preprocess
}  // namespace engine
