// merge_reshapes: consecutive data-movement ops become one.
//   R2(R1(x)), R1, R2 in {Reshape, Flatten, Squeeze, Unsqueeze}  ==>  Reshape(x, t)
//       t = R2's constant target when it has no copy-0 entries (it does not
//       depend on R1's output dims), else R2's output shape with its single
//       unknown dim as -1;
//   Transpose(Transpose(x, p), q)  ==>  Transpose(x, r), r[i] = p[q[i]].
// Preconditions: the inner op's output is read only by the outer op and is
// not a graph output (else both would still run); a target is only derived
// from a shape with at most one unknown dim and no zero dims.
// Why: exporters emit view/flatten/permute chains; each is a full copy in
// many runtimes and a node to schedule in ours. A Transpose pair that cancels
// is handled by eliminate_identity (this pass leaves an identity perm that
// it removes).
#include "passes/pass.h"
#include "passes/util.h"

namespace engine {
namespace {

bool reshape_like(const Node* n) {
  return n && (n->kind() == OpKind::kReshape || n->kind() == OpKind::kFlatten || n->kind() == OpKind::kSqueeze ||
               n->kind() == OpKind::kUnsqueeze);
}

class MergeReshapeChain final : public Pattern {
 public:
  explicit MergeReshapeChain(OpKind kind) : kind_(kind) {}
  std::string_view name() const override { return "reshape_chain"; }
  OpKind root() const override { return kind_; }
  MatchResult match(const Graph&, const Node& n) const override {
    Node* inner = producer_of(n.input(0));
    NOT_APPLICABLE_IF(!reshape_like(inner), "input is not produced by a reshape-like op");
    NO_MATCH_IF(!single_use(inner->output(0)), "the inner ", inner->op_type(), "'s output has other users");
    NOT_APPLICABLE_IF(!inner->input(0), "inner op has no input");
    std::vector<int64_t> target;
    bool have = false;
    if (n.kind() == OpKind::kReshape && n.num_inputs() > 1) {
      if (auto t = int_values(n.input(1))) {
        bool copies = false;
        for (int64_t d : *t) copies = copies || d == 0;
        if (!copies || n.attr_int("allowzero", 0) != 0) {
          target = *t;
          have = true;
        }
      }
    }
    if (!have) {
      const Value* y = n.output(0);
      NO_MATCH_IF(!y || !y->has_shape(), "output shape unknown");
      int unknown = 0;
      for (int64_t d : y->shape()) {
        NO_MATCH_IF(d == 0, "output has a zero dim");
        unknown += d < 0;
        target.push_back(d < 0 ? -1 : d);
      }
      NO_MATCH_IF(unknown > 1, "output has more than one unknown dim");
    }
    Match m;
    m.nodes = {const_cast<Node*>(&n), inner};
    m.data = target;
    return m;
  }
  void rewrite(Rewriter& rw, const Match& m) const override {
    Node* outer = m.nodes[0];
    Node* inner = m.nodes[1];
    const auto& target = std::any_cast<const std::vector<int64_t>&>(m.data);
    Value* x = inner->input(0);
    Value* y = outer->output(0);
    std::string name = outer->name();
    Attributes attrs;
    if (outer->kind() == OpKind::kReshape && outer->attr_int("allowzero", 0) != 0)
      attrs["allowzero"] = Attribute::of_int(1);
    rw.remove(outer);
    rw.remove(inner);
    Value* shape = rw.add_constant(name + "_shape", int64_tensor({static_cast<int64_t>(target.size())}, target));
    rw.add_node(OpKind::kReshape, name, {x, shape}, {y}, attrs);
  }

 private:
  OpKind kind_;
};

std::vector<int64_t> perm_of(const Node& t) {
  if (t.has_attr("perm")) return t.attr_ints("perm");
  const Value* x = t.input(0);
  if (!x || !x->has_shape()) return {};
  std::vector<int64_t> p(x->shape().size());
  for (size_t i = 0; i < p.size(); ++i) p[i] = static_cast<int64_t>(p.size() - 1 - i);
  return p;
}

class MergeTransposes final : public Pattern {
 public:
  std::string_view name() const override { return "transpose_chain"; }
  OpKind root() const override { return OpKind::kTranspose; }
  MatchResult match(const Graph&, const Node& n) const override {
    Node* inner = producer_of(n.input(0));
    NOT_APPLICABLE_IF(!is_op(inner, OpKind::kTranspose), "input is not a Transpose");
    NO_MATCH_IF(!single_use(inner->output(0)), "the inner Transpose's output has other users");
    auto p = perm_of(*inner), q = perm_of(n);
    NO_MATCH_IF(p.empty() || q.size() != p.size(), "perms unknown");
    std::vector<int64_t> r(q.size());
    for (size_t i = 0; i < q.size(); ++i) {
      NO_MATCH_IF(q[i] < 0 || q[i] >= static_cast<int64_t>(p.size()), "perm out of range");
      r[i] = p[q[i]];
    }
    Match m;
    m.nodes = {const_cast<Node*>(&n), inner};
    m.data = r;
    return m;
  }
  void rewrite(Rewriter& rw, const Match& m) const override {
    Node* outer = m.nodes[0];
    Node* inner = m.nodes[1];
    Value* x = inner->input(0);
    Value* y = outer->output(0);
    std::string name = outer->name();
    rw.remove(outer);
    rw.remove(inner);
    Attributes attrs;
    attrs["perm"] = Attribute::of_ints(std::any_cast<const std::vector<int64_t>&>(m.data));
    rw.add_node(OpKind::kTranspose, name, {x}, {y}, attrs);
  }
};

}  // namespace

std::unique_ptr<Pass> make_merge_reshapes() {
  std::vector<std::unique_ptr<Pattern>> p;
  for (OpKind k : {OpKind::kReshape, OpKind::kFlatten, OpKind::kSqueeze, OpKind::kUnsqueeze})
    p.push_back(std::make_unique<MergeReshapeChain>(k));
  p.push_back(std::make_unique<MergeTransposes>());
  return std::make_unique<PatternPass>("merge_reshapes",
                                       "merge consecutive Reshape/Flatten/Squeeze/Unsqueeze, and Transpose pairs",
                                       std::move(p));
}

}  // namespace engine
