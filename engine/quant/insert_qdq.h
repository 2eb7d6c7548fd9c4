// insert_qdq: places QuantizeLinear/DequantizeLinear pairs the way TensorRT
// wants them for residual networks (shared/TENSORRT.md), from calibrated
// activation ranges.
//
//   x --Q(scale_x)--DQ--> Conv/Gemm/MatMul <--DQ(axis)-- int8 W, scale_w[c]
//
// Placement:
//   - every Conv, Gemm and MatMul (and pyengine's FusedConv/FusedGemm): the
//     activation input gets a per-tensor pair, scale = amax / 127; a constant
//     weight becomes an int8 initializer (per output channel, quantize_weights)
//     read through DequantizeLinear(axis); biases stay float32;
//   - residual Adds: the skip input is quantized, so that the other input, the
//     output of a Conv (possibly through BatchNormalization/ChannelAffine/
//     Identity, each read only by the chain), can fuse Conv+Add(+Relu) with
//     int8 in and out. When both inputs are such Conv outputs (a projection
//     shortcut), input 0 is the main branch (PyTorch's `out += identity`) and
//     input 1 the skip. An Add with no Conv input stays float, and so does
//     one whose sum reaches a comparison through a few elementwise ops (a
//     spiking neuron's membrane update h = v + conv(x), then h - v_th >= 0:
//     the membrane v is state, not a residual stream);
//   - FusedConv's residual input Z is quantized like a skip input;
//   - nothing on Conv outputs, so nothing between Conv, BN and ReLU;
//   - one pair per tensor, shared by all the consumers that want it
//     quantized; consumers that do not (or are kept in float) keep reading the
//     float tensor.
// Zero points are int8 zeros (symmetric). Weights reached through Identity
// nodes (as exporters emit for shared parameters) are resolved to their
// constant; Identity nodes left without readers are removed.
//
// Preconditions: the graph holds no Q/DQ nodes yet (kInvalidArgument).
// A layer is left in float, and listed in `skipped` with the reason, when its
// weight is not constant or its activation has no calibrated amax.
#pragma once

#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "ir/graph.h"

namespace engine {

struct InsertQdqOptions {
  // Calibrated |x| range per activation tensor name.
  std::map<std::string, float> amax;
  // Node names (or ONNX names a fused node was made from) left in float:
  // neither their activations, weights nor skip inputs are quantized.
  std::set<std::string> keep_fp32;
  // Asymmetric activations (a CPU option; TensorRT takes symmetric only):
  // a tensor that is non-negative by construction (a Relu output, a
  // Clip(min >= 0) or Sigmoid output, a pooling of one) is quantized over
  // [0, amax] with scale amax / 255 and int8 zero point -128 (onnxruntime's
  // u8 with zero point 0, stored as int8): one more bit than the symmetric
  // form spends on values that never occur. Others stay symmetric.
  bool asymmetric_nonnegative = false;
};

struct InsertQdqResult {
  // Nodes that read at least one quantized input, in graph order.
  std::vector<std::string> quantized_nodes;
  // (node, reason) for quantizable nodes left in float.
  std::vector<std::pair<std::string, std::string>> skipped;
  // Activation tensor -> per-tensor scale of its Q/DQ pair.
  std::map<std::string, float> activation_scales;
  // Activation tensor -> its zero point, where it is not 0 (asymmetric).
  std::map<std::string, int> activation_zero_points;
  // Activation tensor -> nodes reading its dequantized value.
  std::map<std::string, std::vector<std::string>> activation_consumers;
  // Weight tensor (the float constant's name) -> nodes reading it quantized.
  std::map<std::string, std::vector<std::string>> weight_consumers;
  int num_activation_pairs = 0;
  int num_weights = 0;
};

InsertQdqResult insert_qdq(Graph& g, const InsertQdqOptions& options);

}  // namespace engine
