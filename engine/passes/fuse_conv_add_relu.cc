// fuse_conv_add_relu: a convolution's epilogue runs inside the convolution.
//   Add(Conv(x, W, b), z)        ==>  FusedConv(x, W, b, z) {activation=""}
//   act(Conv(x, W, b))           ==>  FusedConv(x, W, b) {activation=act}
//   act(FusedConv(.., z) {""})   ==>  FusedConv(.., z) {activation=act}
//   y * Sigmoid(y), y = Conv(..) ==>  FusedConv(..) {activation="SiLU"}
//   act(Gemm(A, B, C)), y * Sigmoid(y) with y = Gemm(..)  ==>  FusedGemm(A, B, C) {activation}
// FusedConv(X, W, B?, Z?) = act(Conv(X, W, B) + Z) (engine/ir/ops.def);
// act in {Relu, Clip, LeakyRelu, Sigmoid, HardSigmoid, HardSwish, SiLU, Gelu,
// GeluTanh (Gelu with approximate="tanh")},
// activation_params: Clip [min, max], LeakyRelu [alpha], HardSigmoid
// [alpha, beta], others [].
// Preconditions: the conv (gemm) output is read only by the fused op and is
// not a graph output; the residual z has exactly the conv output's shape (no
// broadcasting, which a per-element epilogue cannot do) and is float32;
// Clip bounds are constants.
// Why: a residual block's tail (conv, add, relu) becomes one pass over the
// output instead of three, with the add and activation applied while the
// conv's output tile is still in registers.
#include <limits>

#include "passes/pass.h"
#include "passes/util.h"

namespace engine {
namespace {

struct Activation {
  std::string name;
  std::vector<float> params;
};

// The activation a node applies, or a reason it cannot be fused.
std::optional<Activation> activation_of(const Node& n, std::string* why) {
  Activation a;
  switch (n.kind()) {
    case OpKind::kRelu: a.name = "Relu"; break;
    case OpKind::kSigmoid: a.name = "Sigmoid"; break;
    case OpKind::kHardSwish: a.name = "HardSwish"; break;
    case OpKind::kLeakyRelu:
      a.name = "LeakyRelu";
      a.params = {n.attr_float("alpha", 0.01f)};
      break;
    case OpKind::kHardSigmoid:
      a.name = "HardSigmoid";
      a.params = {n.attr_float("alpha", 0.2f), n.attr_float("beta", 0.5f)};
      break;
    case OpKind::kGelu:
      if (n.attr_string("approximate", "none") == "tanh") {
        a.name = "GeluTanh";
        break;
      }
      if (n.attr_string("approximate", "none") != "none") {
        *why = "Gelu with approximate=" + n.attr_string("approximate", "");
        return std::nullopt;
      }
      a.name = "Gelu";
      break;
    case OpKind::kClip: {
      float lo = n.attr_float("min", -std::numeric_limits<float>::infinity());
      float hi = n.attr_float("max", std::numeric_limits<float>::infinity());
      for (int i = 1; i <= 2; ++i) {
        if (n.num_inputs() <= i || !n.input(i)) continue;
        auto v = float_values(n.input(i));
        if (!v || v->size() != 1) {
          *why = "Clip bounds are not constant scalars";
          return std::nullopt;
        }
        (i == 1 ? lo : hi) = (*v)[0];
      }
      a.name = "Clip";
      a.params = {lo, hi};
      break;
    }
    default:
      *why = "not a fusable activation";
      return std::nullopt;
  }
  return a;
}

// A Conv/Gemm (or fused one without activation yet) whose output `v` may
// take an epilogue; nullptr when the producer is something else.
Node* fusable_producer(const Value* v) {
  Node* p = producer_of(v);
  if (!p) return nullptr;
  switch (p->kind()) {
    case OpKind::kConv:
    case OpKind::kGemm:
      return p;
    case OpKind::kFusedConv:
    case OpKind::kFusedGemm:
      return p->attr_string("activation", "").empty() ? p : nullptr;
    default:
      return nullptr;
  }
}

bool is_conv(const Node* n) { return n->kind() == OpKind::kConv || n->kind() == OpKind::kFusedConv; }

// Replaces producer `p` (and the epilogue nodes in `drop`) by its fused form
// computing `y`.
void fuse(Rewriter& rw, Node* p, const std::vector<Node*>& drop, Value* y, Value* z, const Activation& act) {
  bool conv = is_conv(p);
  std::vector<Value*> ins = p->inputs();
  if (conv) {
    ins.resize(4, nullptr);
    if (z) ins[3] = z;
  }
  Attributes attrs = p->attrs();
  if (!act.name.empty() || !attrs.count("activation")) attrs["activation"] = Attribute::of_string(act.name);
  if (!act.name.empty() || !attrs.count("activation_params"))
    attrs["activation_params"] = Attribute::of_floats(act.params);
  std::string name = p->name();
  for (Node* d : drop) rw.remove(d);
  rw.remove(p);
  rw.add_node(conv ? OpKind::kFusedConv : OpKind::kFusedGemm, name, ins, {y}, attrs);
}

class FuseResidualAdd final : public Pattern {
 public:
  std::string_view name() const override { return "conv_add"; }
  OpKind root() const override { return OpKind::kAdd; }
  MatchResult match(const Graph&, const Node& n) const override {
    NOT_APPLICABLE_IF(n.num_inputs() != 2 || !n.input(0) || !n.input(1), "not a binary Add");
    std::string last_reason;
    for (int i = 0; i < 2; ++i) {
      Value* y = n.input(i);
      Value* z = n.input(1 - i);
      Node* p = fusable_producer(y);
      if (!p || !is_conv(p) || (p->num_inputs() > 3 && p->input(3))) continue;
      if (!single_use(y)) {
        last_reason = str_cat("the conv output '", y->name(), "' has other users or is a graph output");
        continue;
      }
      if (z->is_constant()) {
        last_reason = "the other operand is a constant (a bias for fold_bn_into_conv)";
        continue;
      }
      if (!same_shape(y, z) || !same_shape(y, n.output(0))) {
        last_reason = str_cat("the residual's shape ", z->has_shape() ? shape_str(z->shape()) : "?",
                              " is not known to equal the conv output's ",
                              y->has_shape() ? shape_str(y->shape()) : "?");
        continue;
      }
      if (z->dtype() != DType::kFloat32) {
        last_reason = "the residual is not float32";
        continue;
      }
      Match m;
      m.nodes = {const_cast<Node*>(&n), p};
      m.data = z;
      return m;
    }
    NOT_APPLICABLE_IF(last_reason.empty(), "no operand is a conv output");
    NO_MATCH_IF(true, last_reason);
  }
  void rewrite(Rewriter& rw, const Match& m) const override {
    Node* add = m.nodes[0];
    fuse(rw, m.nodes[1], {add}, add->output(0), std::any_cast<Value*>(m.data), Activation{});
  }
};

class FuseActivation final : public Pattern {
 public:
  explicit FuseActivation(OpKind kind) : kind_(kind) {}
  std::string_view name() const override { return "activation"; }
  OpKind root() const override { return kind_; }
  MatchResult match(const Graph&, const Node& n) const override {
    Node* p = fusable_producer(n.input(0));
    NOT_APPLICABLE_IF(!p, "input is not a Conv or Gemm output");
    NO_MATCH_IF(!single_use(n.input(0)), "the ", p->op_type(), " output '", n.input(0)->name(),
                "' has other users or is a graph output");
    std::string why;
    auto act = activation_of(n, &why);
    NO_MATCH_IF(!act, why);
    Match m;
    m.nodes = {const_cast<Node*>(&n), p};
    m.data = *act;
    return m;
  }
  void rewrite(Rewriter& rw, const Match& m) const override {
    Node* act = m.nodes[0];
    fuse(rw, m.nodes[1], {act}, act->output(0), nullptr, std::any_cast<const Activation&>(m.data));
  }

 private:
  OpKind kind_;
};

// SiLU / Swish as exported: Mul(y, Sigmoid(y)).
class FuseSiLU final : public Pattern {
 public:
  std::string_view name() const override { return "silu"; }
  OpKind root() const override { return OpKind::kMul; }
  MatchResult match(const Graph&, const Node& n) const override {
    NOT_APPLICABLE_IF(n.num_inputs() != 2 || !n.input(0) || !n.input(1), "not a binary Mul");
    for (int i = 0; i < 2; ++i) {
      Value* y = n.input(i);
      Node* sig = producer_of(n.input(1 - i));
      if (!is_op(sig, OpKind::kSigmoid) || sig->input(0) != y) continue;
      Node* p = fusable_producer(y);
      NOT_APPLICABLE_IF(!p, "x * Sigmoid(x) of a value that is not a Conv or Gemm output");
      NO_MATCH_IF(y->is_graph_output() || y->uses().size() != 2, "the ", p->op_type(), " output '", y->name(),
                  "' has users besides the SiLU");
      NO_MATCH_IF(!single_use(sig->output(0)), "the Sigmoid output has other users");
      Match m;
      m.nodes = {const_cast<Node*>(&n), sig, p};
      return m;
    }
    NOT_APPLICABLE_IF(true, "not x * Sigmoid(x)");
  }
  void rewrite(Rewriter& rw, const Match& m) const override {
    Node* mul = m.nodes[0];
    fuse(rw, m.nodes[2], {mul, m.nodes[1]}, mul->output(0), nullptr, Activation{"SiLU", {}});
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_conv_add_relu() {
  std::vector<std::unique_ptr<Pattern>> p;
  p.push_back(std::make_unique<FuseResidualAdd>());
  for (OpKind k : {OpKind::kRelu, OpKind::kClip, OpKind::kLeakyRelu, OpKind::kSigmoid, OpKind::kHardSigmoid,
                   OpKind::kHardSwish, OpKind::kGelu})
    p.push_back(std::make_unique<FuseActivation>(k));
  p.push_back(std::make_unique<FuseSiLU>());
  return std::make_unique<PatternPass>("fuse_conv_add_relu",
                                       "fuse residual Add and activation into Conv (FusedConv) and Gemm (FusedGemm)",
                                       std::move(p));
}

}  // namespace engine
