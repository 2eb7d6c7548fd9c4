// Quantization parameters: symmetric int8, zero point 0 (TensorRT's only
// form, see shared/TENSORRT.md).
//
//   q = clamp(round_half_even(x / scale), -127, 127),   x' = q * scale,
//   scale = amax / 127.
//
// -128 is never produced: the range is symmetric, so that negating a weight
// channel (a BN with negative gamma folded after quantization) negates its
// int8 values exactly, and int8 x int8 products never reach +2^14 from
// (-128)^2. Activations are per tensor, weights per output channel.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace engine {

constexpr int kInt8Max = 127;

// scale = amax / 127. A zero (or non-finite) range gives scale 1: every
// value it quantizes is 0 anyway, and QuantizeLinear divides by the scale.
inline float scale_from_amax(float amax) {
  if (!(amax > 0.f) || !std::isfinite(amax)) return 1.f;
  return amax / static_cast<float>(kInt8Max);
}

// x / scale rounded half to even and clamped to [-127, 127]; x / scale is
// computed in float32 (not x * (1 / scale)) to match numpy and onnxruntime
// bit for bit. Clamped first (the same result: the bounds are integers), so
// the truncating conversion cannot overflow, and one correction makes it the
// floor; the rounding is then integer arithmetic on the (exact) fraction, independent of the FPU
// rounding mode (std::nearbyint, or adding 1.5 * 2^23, would follow
// fesetround, which a host application may change) and branch-free: the
// calibration's SQNR loop over every activation value (observers.cc) is
// vectorized through fake_quantize, which is why the level stays an int
// there (a narrowing to int8 in between kept GCC from vectorizing it). A NaN
// x has no int8 value (callers check first).
inline int quantize_level(float x, float scale) {
  const float q = std::min(std::max(x / scale, -static_cast<float>(kInt8Max)), static_cast<float>(kInt8Max));
  const int t = static_cast<int>(q);                          // toward zero
  const int lo = t - static_cast<int>(q < static_cast<float>(t));  // floor(q)
  const float frac = q - static_cast<float>(lo);              // in [0, 1), exact
  // (bitwise, not || and &&: a branch on a random fraction mispredicts)
  const int up = static_cast<int>(frac > 0.5f) | (static_cast<int>(frac == 0.5f) & lo);
  return lo + (up & 1);
}

inline int8_t quantize_value(float x, float scale) { return static_cast<int8_t>(quantize_level(x, scale)); }

inline float fake_quantize(float x, float scale) { return static_cast<float>(quantize_level(x, scale)) * scale; }

// Per-tensor (axis < 0, one scale) or per-channel (scale[c] along `axis`)
// symmetric int8 parameters; zero points are all 0 and not stored.
struct QParams {
  std::vector<float> scale;
  int axis = -1;
};

}  // namespace engine
