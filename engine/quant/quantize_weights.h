// Per-channel symmetric int8 weight quantization (TensorRT's weight scheme).
//
//   amax[c]  = max |w[..., c, ...]|           over every element of channel c
//   scale[c] = amax[c] / 127                   (1 where amax[c] == 0)
//   q        = clamp(round_half_even(w / scale[c]), -127, 127)
//
// A pure function: the input tensor is not modified and the result owns
// fresh storage. Precondition: float32 weights, 0 <= axis < rank.
// Round trip bound: |w - q * scale[c]| <= scale[c] / 2 for every element.
#pragma once

#include <vector>

#include "core/tensor.h"
#include "quant/qparams.h"

namespace engine {

struct QuantizedWeights {
  Tensor values;               // int8, same shape as the input
  std::vector<float> scale;    // one per channel along `axis`
  int axis = 0;
};

// Throws kDType for non-float32 input and kInvalidArgument for a bad axis.
QuantizedWeights quantize_weights(const Tensor& w, int axis = 0);

// The float tensor q * scale[c] (for error measurements and tests).
Tensor dequantize_weights(const QuantizedWeights& q);

}  // namespace engine
