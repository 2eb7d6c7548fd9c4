// Small helpers shared by the pass files: reading constants and conv
// attributes, and the use-count preconditions every fusion checks.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "ir/graph.h"

namespace engine {

inline Node* producer_of(const Value* v) { return v ? v->producer() : nullptr; }
inline bool is_op(const Node* n, OpKind k) { return n && n->kind() == k; }

// The value is read by exactly one node input and is not a graph output:
// the precondition for folding its producer into its consumer.
inline bool single_use(const Value* v) { return v->uses().size() == 1 && !v->is_graph_output(); }

// The constant's elements as float (float32/float64/float16 constants);
// nullopt for other dtypes.
std::optional<std::vector<float>> float_values(const Value* v);
// Integer constant as int64 values; nullopt when not an integer constant.
std::optional<std::vector<int64_t>> int_values(const Value* v);
bool is_float32_constant(const Value* v);

Tensor float_tensor(const Shape& shape, const std::vector<float>& data);
Tensor int64_tensor(const Shape& shape, const std::vector<int64_t>& data);

// A static shape: has_shape and no unknown dims.
bool static_shape(const Value* v);
// Both shapes known and equal dim by dim (an unknown dim matches only an
// unknown dim, as the symbolic batch axis of both sides does).
bool same_shape(const Value* a, const Value* b);

// Conv geometry read from a Conv / FusedConv node (spatial rank from the
// weight's rank, or kernel_shape).
struct ConvGeometry {
  int rank = 0;                    // spatial rank
  std::vector<int64_t> kernel;     // k per spatial dim
  std::vector<int64_t> strides, dilations;
  std::vector<int64_t> pads;       // 2*rank: begins then ends
  int64_t group = 1;
  std::string auto_pad = "NOTSET";
  int64_t out_channels = -1, in_channels_per_group = -1;
};
// nullopt (with *why) when the geometry cannot be read statically: weight
// shape unknown, auto_pad SAME_* (pads depend on the input size).
std::optional<ConvGeometry> conv_geometry(const Node& conv, std::string* why);
// Conv attributes for the given geometry (auto_pad written as explicit pads).
Attributes conv_attrs(const ConvGeometry& geo);

// Whether x >= 0 everywhere, from its producer: a Relu, Sigmoid, Abs, a Clip
// at min >= 0, a FusedConv/FusedGemm with such an activation, or a pool of
// such a value.
bool non_negative(const Value* x, int depth = 0);

// Whether an elementwise activation maps 0 to 0 (for channel pruning).
bool activation_keeps_zero(const Node& act);

}  // namespace engine
