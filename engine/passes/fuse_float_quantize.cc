// fuse_float_quantize: the float ops that feed a QuantizeLinear, in one pass.
//
//   [Concat(axis=1)] -> [Add(per-channel constant)] -> [Relu] -> QuantizeLinear(s, zp)
//     ==>  FusedQuantize(Concat's inputs) {scale = s, zero_point = zp, bias, activation}
//
// (at least one of the bracketed ops). Where a quantized model leaves float
// ops between its int8 convs, each wrote a float tensor that the next read
// back: DenseNet's dense layers concatenate the block's float conv outputs
// and apply the next layer's BatchNorm (its scale folded into the conv after
// the Relu, its shift left as an Add) and Relu before the Q. Measured on
// DenseNet-121 INT8 at batch 1 (2 threads, Zen 4): 62 Concat, 62 Add, 62
// Relu and 63 QuantizeLinear nodes took 3.3 of 12.6 ms.
//
// Exact: the kernel performs the same float add, the same Relu (a NaN stays
// NaN, as the Relu kernel leaves it) and QuantizeLinear's own formula
// (quant_kernels.h, quantize_one) on each element, and the concatenation is
// a copy. Guards: the Q is per-tensor (one scale > 0, an int8 zero point or
// output_dtype int8) and its output not a graph output; every intermediate
// is read only by the next op of the chain and is not a graph output; the
// Concat joins float tensors of one rank >= 2 on axis 1; the Add's other
// operand is a float constant of one value per channel ([C, 1, ...] or
// [1, C, 1, ...] broadcast against the channel axis; [C] for a 2-D input),
// the channel count known. A Concat on another axis stays and the rest
// fuses. Runs in the int8 pipeline after the lowering, which has then taken
// every Q its int8 convs absorb.
//
// The float form (FusedChannelBias; the default pipeline and the int8
// pipeline's float layers, after the epilogue fusion):
//
//   [Concat(axis=1)] -> Add(per-channel constant) -> Relu
//     ==>  FusedChannelBias(Concat's inputs) {bias, activation = "Relu"}
//
// what an FP32 DenseNet's dense layers (3 passes over a float tensor: 62 of
// each in DenseNet-121) and a pre-activation ResNet's block inputs (the
// BatchNorm's shift and Relu on the residual sum, which has other readers)
// leave between their convs. Exact too (the same add and Relu, a copy).
#include <cmath>

#include "passes/pass.h"
#include "passes/util.h"

namespace engine {
namespace {

struct QuantizeChain {
  std::vector<Value*> inputs;  // the Concat's inputs, or the chain's one input
  std::vector<float> bias;     // per channel; empty without an Add
  bool relu = false;
  float scale = 0.f;
  int64_t zero_point = 0;
};

// The Add's per-channel constant for channel axis 1 of a rank-`rank`
// tensor with `channels` channels, or a reason it is not one.
std::string per_channel(const Value* c, int64_t rank, int64_t channels, std::vector<float>* out) {
  if (!c->is_constant() || c->dtype() != DType::kFloat32) return "the Add's other operand is not a float32 constant";
  const Shape& s = c->constant()->shape();
  const int64_t r = static_cast<int64_t>(s.size());
  // Broadcast aligns trailing axes: axis 1 of x is axis 1 - (rank - r) of c.
  const int64_t axis = 1 - (rank - r);
  if (r > rank || axis < 0) return str_cat("the Add's constant of shape ", shape_str(s), " is not one value per channel");
  for (int64_t i = 0; i < r; ++i)
    if (s[i] != (i == axis ? channels : 1))
      return str_cat("the Add's constant of shape ", shape_str(s), " is not one value per channel (", channels,
                     " channels)");
  auto v = float_values(c);
  if (!v) return "the Add's constant is not readable as float";
  *out = std::move(*v);
  return "";
}

bool concat_on_channels(const Node& concat, int64_t rank) {
  int64_t axis = concat.attr_int("axis", 0);
  if (axis < 0) axis += rank;
  if (axis != 1 || concat.num_inputs() < 1) return false;
  for (const Value* in : concat.inputs())
    if (!in || in->dtype() != DType::kFloat32 || !in->has_shape() || static_cast<int64_t>(in->shape().size()) != rank)
      return false;
  return true;
}

// The Add (per-channel constant) and Concat part of either form, from the
// Add's output x: fills c.bias and c.inputs and appends the nodes matched.
std::string match_bias_concat(Value* x, int64_t rank, QuantizeChain* c, std::vector<Node*>* nodes) {
  Node* p = producer_of(x);
  if (is_op(p, OpKind::kAdd) && p->num_inputs() == 2) {
    const int xi = p->input(0)->is_constant() ? 1 : 0;
    const int64_t channels = x->shape()[1];
    if (!single_use(x)) return str_cat("the Add output '", x->name(), "' has other users");
    if (channels < 0) return str_cat("the channel count of '", x->name(), "' is not known");
    std::string why = per_channel(p->input(1 - xi), rank, channels, &c->bias);
    if (!why.empty()) return why;
    if (!p->input(xi)->has_shape() || p->input(xi)->shape().size() != x->shape().size())
      return "the Add broadcasts its non-constant operand";
    nodes->push_back(p);
    x = p->input(xi);
    p = producer_of(x);
  }
  // A Concat that does not join channels (or not float tensors of one
  // rank) stays: the fused node then reads its output.
  if (is_op(p, OpKind::kConcat) && single_use(x) && concat_on_channels(*p, rank)) {
    nodes->push_back(p);
    c->inputs.assign(p->inputs().begin(), p->inputs().end());
  } else {
    c->inputs = {x};
  }
  return "";
}

// The matched chain (m.nodes, its last op first) as one `kind` node under
// the last op's name, taking over its output.
void replace_chain(Rewriter& rw, const Match& m, OpKind kind) {
  const auto& c = std::any_cast<const QuantizeChain&>(m.data);
  Node* last = m.nodes[0];
  Value* y = last->output(0);
  const std::string name = last->name();
  Attributes attrs;
  if (kind == OpKind::kFusedQuantize) {
    attrs["scale"] = Attribute::of_float(c.scale);
    if (c.zero_point) attrs["zero_point"] = Attribute::of_int(c.zero_point);
  }
  if (!c.bias.empty()) attrs["bias"] = Attribute::of_floats(c.bias);
  if (c.relu) attrs["activation"] = Attribute::of_string("Relu");
  // Consumers first: each removed node's output is read only by the node
  // removed before it (or is y, which the fused node takes over).
  for (Node* n : m.nodes) rw.remove(n);
  rw.add_node(kind, name, c.inputs, {y}, attrs);
}

class FuseFloatQuantize final : public Pattern {
 public:
  std::string_view name() const override { return "float_ops_into_quantize"; }
  OpKind root() const override { return OpKind::kQuantizeLinear; }

  MatchResult match(const Graph&, const Node& q) const override {
    NOT_APPLICABLE_IF(q.num_inputs() < 2 || !q.output(0), "not a QuantizeLinear with a scale");
    Value* x = q.input(0);
    Node* p = producer_of(x);
    NOT_APPLICABLE_IF(!is_op(p, OpKind::kRelu) && !is_op(p, OpKind::kAdd) && !is_op(p, OpKind::kConcat),
                      "no Concat, Add or Relu before the QuantizeLinear");
    const char* form = "Concat/Add/Relu into QuantizeLinear: ";
    QuantizeChain c;
    NO_MATCH_IF(q.attr_int("block_size", 0) != 0, form, "a blocked QuantizeLinear");
    const Value* s = q.input(1);
    NO_MATCH_IF(!s->is_constant() || s->dtype() != DType::kFloat32 || s->constant()->numel() != 1, form,
                "the scale is not one float32 constant");
    c.scale = s->constant()->data<float>()[0];
    NO_MATCH_IF(!(c.scale > 0.f) || !std::isfinite(c.scale), form, "the scale ", c.scale, " is not positive and finite");
    const Value* zp = q.num_inputs() > 2 ? q.input(2) : nullptr;
    if (zp) {
      NO_MATCH_IF(!zp->is_constant() || zp->dtype() != DType::kInt8 || zp->constant()->numel() != 1, form,
                  "the zero point is not one int8 constant");
      c.zero_point = zp->constant()->int_at(0);
    } else {
      NO_MATCH_IF(q.attr_int("output_dtype", 0) != static_cast<int64_t>(DType::kInt8), form,
                  "the output is not int8");
    }
    NO_MATCH_IF(q.output(0)->is_graph_output(), form, "the quantized tensor is a graph output");
    NO_MATCH_IF(x->dtype() != DType::kFloat32 || !x->has_shape() || x->shape().size() < 2, form,
                "the input '", x->name(), "' is not float32 of known rank >= 2");
    const int64_t rank = static_cast<int64_t>(x->shape().size());
    std::vector<Node*> nodes{const_cast<Node*>(&q)};
    if (is_op(p, OpKind::kRelu)) {
      NO_MATCH_IF(!single_use(x), form, "the Relu output '", x->name(), "' has other users");
      c.relu = true;
      nodes.push_back(p);
      x = p->input(0);
      p = producer_of(x);
    }
    const std::string why = match_bias_concat(x, rank, &c, &nodes);
    NO_MATCH_IF(!why.empty(), form, why);
    NO_MATCH_IF(nodes.size() == 1, form, "the Concat '", p->name(),
                "' has other users or does not join float tensors of one rank on the channel axis");
    Match m;
    m.nodes = std::move(nodes);
    m.data = std::move(c);
    return m;
  }

  void rewrite(Rewriter& rw, const Match& m) const override { replace_chain(rw, m, OpKind::kFusedQuantize); }
};

class FuseChannelBiasRelu final : public Pattern {
 public:
  std::string_view name() const override { return "concat_bias_relu"; }
  OpKind root() const override { return OpKind::kRelu; }

  MatchResult match(const Graph&, const Node& relu) const override {
    Value* x = relu.input(0);
    NOT_APPLICABLE_IF(!x || !relu.output(0) || !is_op(producer_of(x), OpKind::kAdd), "no Add before the Relu");
    const char* form = "[Concat ->] Add -> Relu: ";
    NO_MATCH_IF(x->dtype() != DType::kFloat32 || !x->has_shape() || x->shape().size() < 2, form, "the input '",
                x->name(), "' is not float32 of known rank >= 2");
    QuantizeChain c;
    c.relu = true;
    std::vector<Node*> nodes{const_cast<Node*>(&relu)};
    const std::string why = match_bias_concat(x, static_cast<int64_t>(x->shape().size()), &c, &nodes);
    NO_MATCH_IF(!why.empty(), form, why);
    Match m;
    m.nodes = std::move(nodes);
    m.data = std::move(c);
    return m;
  }

  void rewrite(Rewriter& rw, const Match& m) const override { replace_chain(rw, m, OpKind::kFusedChannelBias); }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_float_quantize() {
  std::vector<std::unique_ptr<Pattern>> p;
  p.push_back(std::make_unique<FuseFloatQuantize>());
  return std::make_unique<PatternPass>("fuse_float_quantize",
                                       "Concat -> Add (per channel) -> Relu -> QuantizeLinear as one FusedQuantize",
                                       std::move(p));
}

std::unique_ptr<Pass> make_fuse_channel_bias_relu() {
  std::vector<std::unique_ptr<Pattern>> p;
  p.push_back(std::make_unique<FuseChannelBiasRelu>());
  return std::make_unique<PatternPass>("fuse_channel_bias_relu",
                                       "[Concat ->] Add (per channel) -> Relu as one FusedChannelBias", std::move(p));
}

}  // namespace engine
