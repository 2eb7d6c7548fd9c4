// Shape and type inference, one function per op kind.
//
// The same functions serve two callers:
//  - static inference on the IR (infer_shapes), where a dim may be -1
//    (unknown, e.g. the dynamic batch): propagate -1 wherever a result depends
//    on an unknown dim or an unknown value;
//  - the CPU executor's planning step, where every input dim is concrete and
//    the values of small integer tensors (shape tensors) are known, so every
//    output dim must come out concrete.
// An infer function reads the node's attributes and input infos, fills the
// output infos (dtype, shape, and optionally a known value, as Shape does),
// and throws Error(kShape or kInvalidModel) naming the node when the inputs
// are inconsistent.
#pragma once

#include <memory>
#include <vector>

#include "core/checked_math.h"
#include "ir/graph.h"

namespace engine {

struct ValueInfo {
  DType dtype = DType::kUndefined;
  bool has_shape = false;
  Shape shape;                          // -1 = unknown dim
  std::shared_ptr<const Tensor> value;  // known contents, if any

  static ValueInfo of(DType t, Shape s) { ValueInfo v; v.dtype = t; v.has_shape = true; v.shape = std::move(s); return v; }
  int rank() const { return static_cast<int>(shape.size()); }
  bool fully_known() const;  // has_shape and no -1 dims
};

class InferContext {
 public:
  InferContext(const Node& node, std::vector<const ValueInfo*> inputs, int num_outputs)
      : node_(node), inputs_(std::move(inputs)), outputs_(num_outputs) {}
  const Node& node() const { return node_; }
  int num_inputs() const { return static_cast<int>(inputs_.size()); }
  int num_outputs() const { return static_cast<int>(outputs_.size()); }
  bool has_input(int i) const { return i < num_inputs() && inputs_[i] != nullptr; }
  // Precondition: has_input(i).
  const ValueInfo& input(int i) const;
  ValueInfo& output(int i) { return outputs_.at(i); }
  std::vector<ValueInfo>& outputs() { return outputs_; }

  // Throws Error(kShape) prefixed with the node's description.
  template <typename... Args>
  [[noreturn]] void fail(Args&&... args) const {
    engine::fail(ErrorKind::kShape, node_.describe(), ": ", std::forward<Args>(args)...);
  }
  // Overflow-checked size arithmetic: fails (kShape, naming the node) when
  // the result does not fit in int64.
  int64_t add(int64_t a, int64_t b) const {
    int64_t r;
    if (!checked_add(a, b, &r)) fail("size arithmetic overflows int64 (", a, " + ", b, ")");
    return r;
  }
  int64_t mul(int64_t a, int64_t b) const {
    int64_t r;
    if (!checked_mul(a, b, &r)) fail("size arithmetic overflows int64 (", a, " * ", b, ")");
    return r;
  }
  // Checks each entry of a size attribute (pads, strides, ...) lies in
  // [lo, kMaxDim]; fails naming the attribute.
  void check_range(const char* attr, const std::vector<int64_t>& v, int64_t lo) const {
    for (int64_t x : v)
      if (x < lo || x > kMaxDim)
        fail(attr, " ", shape_str(v), " is out of range: each entry must be in [", lo, ", ", kMaxDim, "]");
  }

 private:
  const Node& node_;
  std::vector<const ValueInfo*> inputs_;
  std::vector<ValueInfo> outputs_;
};

using InferFn = void (*)(InferContext&);

class InferRegistry {
 public:
  static InferRegistry& get();
  void add(OpKind kind, InferFn fn) { fns_[static_cast<int>(kind)] = fn; }
  InferFn find(OpKind kind) const { return fns_[static_cast<int>(kind)]; }

 private:
  InferRegistry();
  InferFn fns_[static_cast<int>(OpKind::kNumOpKinds)] = {};
};

// Per-family registration, defined in ir/infer/<family>.cc.
void register_conv_gemm_infer(InferRegistry& r);
void register_elementwise_infer(InferRegistry& r);
void register_norm_pool_infer(InferRegistry& r);
void register_shape_ops_infer(InferRegistry& r);
void register_quant_infer(InferRegistry& r);
void register_preprocess_infer(InferRegistry& r);

// Runs inference for one node, then checks every output shape against the
// limits of core/checked_math.h (kShape naming the node and output). Throws
// kUnsupportedOperator when the op has no inference function.
void infer_node(InferContext& ctx);

// Static inference over the whole graph: fills dtype and shape of every
// computed value (unknown dims stay -1). Values whose shape cannot be
// inferred keep has_shape() == false.
void infer_shapes(Graph& g);

// Helpers shared by infer functions.
// numpy broadcasting of two shapes (-1 propagates); fails on a mismatch.
Shape broadcast_shapes(const InferContext& ctx, const Shape& a, const Shape& b);
// Normalizes a possibly negative axis for a tensor of the given rank.
int64_t normalize_axis(const InferContext& ctx, int64_t axis, int64_t rank);
// The inputs of ctx concatenated on `axis` (normalized against their rank):
// the first input's dtype, -1 where a size is unknown; fails on different
// ranks, scalars, or sizes that differ off the axis (Concat's inference).
ValueInfo concat_info(const InferContext& ctx, int64_t axis);

}  // namespace engine
