// Per-channel int8 weight quantization; see quantize_weights.h for the formula.
// Weights are viewed as [outer, channels, inner] around `axis`, so one loop
// serves Conv (axis 0), transposed Gemm and MatMul weights (last axis).
#include "quant/quantize_weights.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace engine {
namespace {

struct AxisView {
  int64_t outer = 1, channels = 1, inner = 1;
};

AxisView view_around(const Shape& shape, int axis) {
  AxisView v;
  for (int i = 0; i < static_cast<int>(shape.size()); ++i) {
    if (i < axis) v.outer *= shape[i];
    else if (i == axis) v.channels = shape[i];
    else v.inner *= shape[i];
  }
  return v;
}

}  // namespace

QuantizedWeights quantize_weights(const Tensor& w, int axis) {
  ENGINE_ENFORCE(w.dtype() == DType::kFloat32, kDType, "quantize_weights: weights must be float32, got ",
                 dtype_name(w.dtype()));
  ENGINE_ENFORCE(axis >= 0 && axis < w.rank(), kInvalidArgument, "quantize_weights: axis ", axis,
                 " is out of range for a weight of shape ", shape_str(w.shape()));
  const AxisView v = view_around(w.shape(), axis);
  const float* src = w.data<float>();

  QuantizedWeights out;
  out.axis = axis;
  out.values = Tensor(DType::kInt8, w.shape());
  std::vector<float> amax(v.channels, 0.f);
  for (int64_t o = 0; o < v.outer; ++o)
    for (int64_t c = 0; c < v.channels; ++c) {
      const float* p = src + (o * v.channels + c) * v.inner;
      float m = amax[c];
      for (int64_t i = 0; i < v.inner; ++i) m = std::max(m, std::fabs(p[i]));
      amax[c] = m;
    }
  out.scale.resize(v.channels);
  for (int64_t c = 0; c < v.channels; ++c) out.scale[c] = scale_from_amax(amax[c]);

  int8_t* dst = out.values.data<int8_t>();
  for (int64_t o = 0; o < v.outer; ++o)
    for (int64_t c = 0; c < v.channels; ++c) {
      const int64_t base = (o * v.channels + c) * v.inner;
      const float s = out.scale[c];
      for (int64_t i = 0; i < v.inner; ++i) dst[base + i] = quantize_value(src[base + i], s);
    }
  return out;
}

Tensor dequantize_weights(const QuantizedWeights& q) {
  const AxisView v = view_around(q.values.shape(), q.axis);
  Tensor out(DType::kFloat32, q.values.shape());
  const int8_t* src = q.values.data<int8_t>();
  float* dst = out.data<float>();
  for (int64_t o = 0; o < v.outer; ++o)
    for (int64_t c = 0; c < v.channels; ++c) {
      const int64_t base = (o * v.channels + c) * v.inner;
      for (int64_t i = 0; i < v.inner; ++i) dst[base + i] = static_cast<float>(src[base + i]) * q.scale[c];
    }
  return out;
}

}  // namespace engine
