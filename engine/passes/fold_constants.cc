// fold_constants
//   op(c1, ..., cn), every input constant        ==>  constant op(c1, ..., cn)
//   Constant{value=t}                            ==>  constant t
//   Shape/Gather/Slice/Unsqueeze/Concat/... on static dims  ==>  constant
//   Reshape(x, s(x)) where s only reads x's own dims or one unknown
//                                                ==>  Reshape(x, [.., 0, .., -1])
// Preconditions: the op has shape inference and a CPU kernel (the evaluator,
// passes/evaluate.h); no output is a graph output (the model's interface
// keeps its computed outputs); the folded outputs stay under a size budget;
// Q/DQ nodes stay (they mark quantization points, not arithmetic).
// Why the budget: folding must not grow the model. ConstantOfShape, Expand,
// Tile or Range can turn a few bytes into megabytes that are cheaper to
// compute at run time than to store and load; an output no larger than its
// inputs (a transposed weight) is always folded.
// Why the symbolic part: PyTorch exports x.view(x.size(0), -1) as a chain
// over Shape(x), whose batch dim is unknown until run time; reading "dim 0
// of x" symbolically lets the chain fold to a constant target instead of
// running five shape ops per inference.
#include <cstring>

#include "passes/evaluate.h"
#include "passes/pass.h"
#include "passes/shape_arith.h"
#include "passes/util.h"

namespace engine {
namespace {

constexpr size_t kFoldBudgetBytes = size_t{1} << 20;

using Outputs = std::vector<std::shared_ptr<const Tensor>>;

// Constant{value|value_float|value_floats|value_int|value_ints}.
std::shared_ptr<const Tensor> constant_node_value(const Node& n) {
  auto it = n.attrs().find("value");
  if (it != n.attrs().end() && it->second.type == Attribute::Type::kTensor) return it->second.t;
  if (n.has_attr("value_float")) return std::make_shared<const Tensor>(float_tensor({}, {n.attr_float("value_float", 0)}));
  if (n.has_attr("value_floats")) {
    auto v = n.attr_floats("value_floats");
    return std::make_shared<const Tensor>(float_tensor({static_cast<int64_t>(v.size())}, v));
  }
  if (n.has_attr("value_int")) return std::make_shared<const Tensor>(int64_tensor({}, {n.attr_int("value_int", 0)}));
  if (n.has_attr("value_ints")) {
    auto v = n.attr_ints("value_ints");
    return std::make_shared<const Tensor>(int64_tensor({static_cast<int64_t>(v.size())}, v));
  }
  return nullptr;
}

MatchResult no_graph_outputs(const Node& n) {
  for (const Value* o : n.outputs())
    NO_MATCH_IF(o && o->is_graph_output(), "output '", o->name(), "' is a graph output");
  return Match{};
}

class FoldConstantNode final : public Pattern {
 public:
  std::string_view name() const override { return "constant_node"; }
  OpKind root() const override { return OpKind::kConstant; }
  MatchResult match(const Graph&, const Node& n) const override {
    if (MatchResult r = no_graph_outputs(n); !r) return r;
    NOT_APPLICABLE_IF(!n.output(0), "no output");
    auto t = constant_node_value(n);
    NO_MATCH_IF(!t, "unsupported Constant attribute (sparse or string)");
    Match m;
    m.nodes = {const_cast<Node*>(&n)};
    m.data = Outputs{t};
    return m;
  }
  void rewrite(Rewriter& rw, const Match& m) const override {
    Value* out = m.nodes[0]->output(0);
    rw.remove(m.nodes[0]);
    rw.set_constant(out, std::any_cast<const Outputs&>(m.data)[0]);
  }
};

class EvaluateNode final : public Pattern {
 public:
  std::string_view name() const override { return "evaluate"; }
  OpKind root() const override { return kAnyOp; }
  MatchResult match(const Graph&, const Node& n) const override {
    NOT_APPLICABLE_IF(n.kind() == OpKind::kConstant, "Constant nodes fold by attribute");
    NOT_APPLICABLE_IF(n.kind() == OpKind::kQuantizeLinear || n.kind() == OpKind::kDequantizeLinear,
                      "Q/DQ nodes mark quantization points and stay");
    NOT_APPLICABLE_IF(n.num_inputs() == 0, "no inputs");
    size_t in_bytes = 0;
    for (const Value* v : n.inputs()) {
      if (!v) continue;
      NOT_APPLICABLE_IF(!v->is_constant(), "input '", v->name(), "' is not constant");
      in_bytes += v->constant()->nbytes();
    }
    if (MatchResult r = no_graph_outputs(n); !r) return r;
    NO_MATCH_IF(!can_evaluate(n.kind()), "no CPU kernel to evaluate ", n.op_type());
    std::vector<ValueInfo> infos(n.num_inputs());
    std::vector<const ValueInfo*> ptrs(n.num_inputs(), nullptr);
    std::vector<const Tensor*> tensors(n.num_inputs(), nullptr);
    for (int i = 0; i < n.num_inputs(); ++i) {
      const Value* v = n.input(i);
      if (!v) continue;
      infos[i] = ValueInfo::of(v->dtype(), v->shape());
      infos[i].value = v->constant();
      ptrs[i] = &infos[i];
      tensors[i] = v->constant().get();
    }
    std::vector<ValueInfo> outs;
    try {
      outs = infer_outputs(n, ptrs);
    } catch (const Error& e) {
      NO_MATCH_IF(true, "shape inference failed: ", e.what());
    }
    size_t out_bytes = 0;
    bool values_known = true;
    for (int o = 0; o < n.num_outputs(); ++o) {
      if (!n.output(o)) continue;
      NO_MATCH_IF(!outs[o].fully_known(), "output shape not determined");
      out_bytes += static_cast<size_t>(shape_numel(outs[o].shape)) * dtype_size(outs[o].dtype);
      values_known = values_known && outs[o].value;
    }
    size_t limit = std::max(kFoldBudgetBytes, in_bytes);
    NO_MATCH_IF(out_bytes > limit, "folded outputs would take ", out_bytes, " bytes (limit ", limit, ")");
    Outputs result(n.num_outputs());
    if (values_known) {
      for (int o = 0; o < n.num_outputs(); ++o) result[o] = outs[o].value;
    } else {
      try {
        result = evaluate_node(n, tensors, outs);
      } catch (const Error& e) {
        NO_MATCH_IF(true, "the CPU kernel cannot evaluate it: ", e.what());
      }
    }
    Match m;
    m.nodes = {const_cast<Node*>(&n)};
    m.data = std::move(result);
    return m;
  }
  void rewrite(Rewriter& rw, const Match& m) const override {
    Node* n = m.nodes[0];
    std::vector<Value*> outs = n->outputs();
    rw.remove(n);
    const auto& vals = std::any_cast<const Outputs&>(m.data);
    for (size_t o = 0; o < outs.size(); ++o)
      if (outs[o]) rw.set_constant(outs[o], vals[o]);
  }
};

// Shape arithmetic over partially static shapes (see the header comment).
class FoldShapeArithmetic final : public Pattern {
 public:
  explicit FoldShapeArithmetic(OpKind kind) : kind_(kind) {}
  std::string_view name() const override { return "shape_arithmetic"; }
  OpKind root() const override { return kind_; }
  MatchResult match(const Graph&, const Node& n) const override {
    const Value* out = n.output(0);
    NOT_APPLICABLE_IF(!out || n.num_outputs() != 1, "not a single-output node");
    NOT_APPLICABLE_IF(dtype_is_float(out->dtype()), "not integer arithmetic");
    auto sym = symbolic_value(out);
    NOT_APPLICABLE_IF(!sym, "not a shape computation");
    NOT_APPLICABLE_IF(!sym->all_known(), "depends on dims unknown before run time");
    if (MatchResult r = no_graph_outputs(n); !r) return r;
    DType dt = out->dtype() == DType::kInt32 ? DType::kInt32 : DType::kInt64;
    Shape shape = sym->scalar ? Shape{} : Shape{static_cast<int64_t>(sym->elems.size())};
    auto t = std::make_shared<Tensor>(dt, shape);
    for (size_t i = 0; i < sym->elems.size(); ++i) {
      if (dt == DType::kInt32) t->data<int32_t>()[i] = static_cast<int32_t>(sym->elems[i].value);
      else t->data<int64_t>()[i] = sym->elems[i].value;
    }
    Match m;
    m.nodes = {const_cast<Node*>(&n)};
    m.data = Outputs{t};
    return m;
  }
  void rewrite(Rewriter& rw, const Match& m) const override {
    Value* out = m.nodes[0]->output(0);
    rw.remove(m.nodes[0]);
    rw.set_constant(out, std::any_cast<const Outputs&>(m.data)[0]);
  }

 private:
  OpKind kind_;
};

// Reshape whose target is computed: each target element becomes a known
// number, 0 ("copy this dim of x", where the element is x's own dim at the
// same position), or -1 (at most one element left unknown).
class FoldReshapeTarget final : public Pattern {
 public:
  std::string_view name() const override { return "reshape_target"; }
  OpKind root() const override { return OpKind::kReshape; }
  MatchResult match(const Graph&, const Node& n) const override {
    const Value* x = n.input(0);
    const Value* s = n.input(1);
    NOT_APPLICABLE_IF(!x || !s || s->is_constant(), "target is already constant");
    auto sym = symbolic_value(s);
    NOT_APPLICABLE_IF(!sym || sym->scalar, "target is not a shape computation");
    bool allowzero = n.attr_int("allowzero", 0) != 0;
    const Value* y = n.output(0);
    bool out_known = y && y->has_shape() && y->shape().size() == sym->elems.size();
    std::vector<int64_t> target;
    int unknown = 0;
    for (size_t i = 0; i < sym->elems.size(); ++i) {
      const SymDim& d = sym->elems[i];
      if (d.is_known()) {
        target.push_back(d.value);
        unknown += d.value == -1;
      } else if (out_known && y->shape()[i] >= 0) {
        target.push_back(y->shape()[i]);
      } else if (!allowzero && d.kind == SymDim::Kind::kDimOf && d.of == x && d.axis == static_cast<int64_t>(i)) {
        target.push_back(0);
      } else {
        target.push_back(-1);
        ++unknown;
      }
    }
    NO_MATCH_IF(unknown > 1, "more than one target dim is unknown before run time");
    Match m;
    m.nodes = {const_cast<Node*>(&n)};
    m.data = target;
    return m;
  }
  void rewrite(Rewriter& rw, const Match& m) const override {
    Node* n = m.nodes[0];
    const auto& target = std::any_cast<const std::vector<int64_t>&>(m.data);
    Value* c = rw.add_constant(n->name() + "_shape", int64_tensor({static_cast<int64_t>(target.size())}, target));
    rw.set_input(n, 1, c);
  }
};

}  // namespace

std::unique_ptr<Pass> make_fold_constants() {
  std::vector<std::unique_ptr<Pattern>> p;
  p.push_back(std::make_unique<FoldConstantNode>());
  p.push_back(std::make_unique<EvaluateNode>());
  // The symbolic fallback also covers Shape(x) of a static but computed x,
  // which the evaluator cannot (x is not a constant).
  for (OpKind k : {OpKind::kShape, OpKind::kGather, OpKind::kSlice, OpKind::kUnsqueeze, OpKind::kSqueeze,
                   OpKind::kConcat, OpKind::kCast, OpKind::kAdd, OpKind::kSub, OpKind::kMul, OpKind::kDiv})
    p.push_back(std::make_unique<FoldShapeArithmetic>(k));
  p.push_back(std::make_unique<FoldReshapeTarget>());
  return std::make_unique<PatternPass>("fold_constants",
                                       "evaluate nodes whose inputs are constant (and static shape arithmetic)",
                                       std::move(p));
}

}  // namespace engine
