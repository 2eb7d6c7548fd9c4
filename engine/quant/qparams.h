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

// Round half to even, independent of the FPU rounding mode (std::nearbyint
// would follow fesetround). T is float or double.
template <typename T>
inline T round_half_even(T v) {
  T r = std::floor(v);
  T diff = v - r;
  if (diff > T(0.5)) return r + T(1);
  if (diff < T(0.5)) return r;
  return std::fmod(r, T(2)) == T(0) ? r : r + T(1);
}

// scale = amax / 127. A zero (or non-finite) range gives scale 1: every
// value it quantizes is 0 anyway, and QuantizeLinear divides by the scale.
inline float scale_from_amax(float amax) {
  if (!(amax > 0.f) || !std::isfinite(amax)) return 1.f;
  return amax / static_cast<float>(kInt8Max);
}

// x / scale rounded and clamped to [-127, 127]; x / scale is computed in
// float32 (not x * (1 / scale)) to match numpy and onnxruntime bit for bit.
// Clamped first (the same result: the bounds are integers), then rounded
// half to even by adding and subtracting 1.5 * 2^23, exact for |q| < 2^22
// under IEEE round-to-nearest-even (the build does not use -ffast-math):
// branch-free, so the calibration's SQNR loop over every activation value
// (TensorObserver::update) vectorizes; round_half_even's floor and fmod cost
// ~15 ns a value there. A NaN x has no int8 value (callers check first).
inline int8_t quantize_value(float x, float scale) {
  constexpr float kRoundingBias = 12582912.f;  // 1.5 * 2^23
  const float q = std::min(std::max(x / scale, -static_cast<float>(kInt8Max)), static_cast<float>(kInt8Max));
  return static_cast<int8_t>((q + kRoundingBias) - kRoundingBias);
}

inline float fake_quantize(float x, float scale) { return static_cast<float>(quantize_value(x, scale)) * scale; }

// Per-tensor (axis < 0, one scale) or per-channel (scale[c] along `axis`)
// symmetric int8 parameters; zero points are all 0 and not stored.
struct QParams {
  std::vector<float> scale;
  int axis = -1;
};

}  // namespace engine
