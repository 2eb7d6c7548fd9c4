// eliminate_identity: ops that return their input unchanged.
//   Identity(x)                                  ==> x
//   Dropout(x) (inference; mask unused)          ==> x
//   Reshape/Flatten/Squeeze/Unsqueeze(x) with output shape == shape(x)  ==> x
//   Cast(x, to=dtype(x))                         ==> x
//   Transpose(x, perm=identity)                  ==> x
//   Transpose(Transpose(x, p), q), p[q[i]] == i  ==> x
// Preconditions: for a graph output y = op(x), x must be computed by a node
// (x then takes y's name; a graph input, another output or a constant cannot
// be renamed, and ONNX cannot express output == input without a node).
// Why first in the pipeline: PyTorch's exporter routes deduplicated
// initializers (shared BN statistics) through Identity nodes; once these are
// gone, parameters are plain constants that the folding passes can read.
#include "passes/pass.h"
#include "passes/util.h"

namespace engine {
namespace {

// out = op(in) is a no-op; may it be bypassed?
MatchResult bypass_match(const Node& n, Value* out, Value* in) {
  NOT_APPLICABLE_IF(!in || !out, "missing input or output");
  NO_MATCH_IF(out->is_graph_output() && (in->is_graph_input() || in->is_graph_output() || in->is_constant()),
              "output '", out->name(), "' is a graph output and its input '", in->name(),
              "' is a graph input, output or constant");
  Match m;
  m.nodes = {const_cast<Node*>(&n)};
  m.data = std::pair<Value*, Value*>(out, in);
  return m;
}

void bypass(Rewriter& rw, const Match& m) {
  auto [out, in] = std::any_cast<std::pair<Value*, Value*>>(m.data);
  rw.replace(out, in);
  rw.remove(m.nodes[0]);
}

class RemoveIdentity final : public Pattern {
 public:
  std::string_view name() const override { return "identity"; }
  OpKind root() const override { return OpKind::kIdentity; }
  MatchResult match(const Graph&, const Node& n) const override { return bypass_match(n, n.output(0), n.input(0)); }
  void rewrite(Rewriter& rw, const Match& m) const override { bypass(rw, m); }
};

class RemoveDropout final : public Pattern {
 public:
  std::string_view name() const override { return "dropout"; }
  OpKind root() const override { return OpKind::kDropout; }
  MatchResult match(const Graph&, const Node& n) const override {
    if (n.num_inputs() > 2 && n.input(2)) {
      auto mode = int_values(n.input(2));
      if (!mode && n.input(2)->is_constant() && n.input(2)->dtype() == DType::kBool)
        mode = std::vector<int64_t>{*n.input(2)->constant()->data<uint8_t>()};
      NO_MATCH_IF(!mode || mode->size() != 1, "training_mode is not a constant");
      NO_MATCH_IF((*mode)[0] != 0, "training_mode is true");
    }
    Value* mask = n.output(1);
    NO_MATCH_IF(mask && (!mask->uses().empty() || mask->is_graph_output()), "the mask output is used");
    return bypass_match(n, n.output(0), n.input(0));
  }
  void rewrite(Rewriter& rw, const Match& m) const override { bypass(rw, m); }
};

// Whether Reshape(x, target) keeps x's shape, from x's shape and the
// constant target (copy-0 and the single -1 resolve to x's own dims).
bool reshape_keeps_shape(const Node& n) {
  const Value* x = n.input(0);
  if (!x->has_shape() || n.num_inputs() < 2) return false;
  auto target = int_values(n.input(1));
  if (!target || target->size() != x->shape().size()) return false;
  bool allowzero = n.attr_int("allowzero", 0) != 0;
  int minus_one = 0;
  for (size_t i = 0; i < target->size(); ++i) {
    int64_t t = (*target)[i], d = x->shape()[i];
    if (d == 0) return false;  // -1 is ambiguous on empty tensors
    if (t == 0 && !allowzero) continue;
    if (t == -1) {
      ++minus_one;
      continue;
    }
    if (t != d) return false;
  }
  // With every other dim equal, a single -1 resolves to x's own dim.
  return minus_one <= 1;
}

class RemoveNoOpReshape final : public Pattern {
 public:
  explicit RemoveNoOpReshape(OpKind kind) : kind_(kind) {}
  std::string_view name() const override { return "noop_reshape"; }
  OpKind root() const override { return kind_; }
  MatchResult match(const Graph&, const Node& n) const override {
    const Value* x = n.input(0);
    const Value* y = n.output(0);
    NOT_APPLICABLE_IF(!x || !y, "missing input or output");
    bool same = kind_ == OpKind::kReshape && reshape_keeps_shape(n);
    if (!same && x->has_shape() && same_shape(x, y)) {
      // Equal element counts: with at most one unknown dim, equal known dims
      // force the unknown one to be equal too.
      int unknown = 0;
      bool zero = false;
      for (int64_t d : x->shape()) {
        unknown += d < 0;
        zero = zero || d == 0;
      }
      same = unknown <= 1 && !zero;
    }
    NOT_APPLICABLE_IF(!same, "changes the shape (or the shape is not known)");
    return bypass_match(n, n.output(0), n.input(0));
  }
  void rewrite(Rewriter& rw, const Match& m) const override { bypass(rw, m); }

 private:
  OpKind kind_;
};

class RemoveNoOpCast final : public Pattern {
 public:
  std::string_view name() const override { return "noop_cast"; }
  OpKind root() const override { return OpKind::kCast; }
  MatchResult match(const Graph&, const Node& n) const override {
    NOT_APPLICABLE_IF(!n.input(0) || n.input(0)->dtype() == DType::kUndefined, "input dtype unknown");
    NOT_APPLICABLE_IF(n.attr_int("to", 0) != static_cast<int64_t>(n.input(0)->dtype()), "changes the dtype");
    return bypass_match(n, n.output(0), n.input(0));
  }
  void rewrite(Rewriter& rw, const Match& m) const override { bypass(rw, m); }
};

// The perm of a Transpose, defaulting to reversal; empty when the rank is
// unknown.
std::vector<int64_t> transpose_perm(const Node& t) {
  if (t.has_attr("perm")) return t.attr_ints("perm");
  const Value* x = t.input(0);
  if (!x || !x->has_shape()) return {};
  std::vector<int64_t> p(x->shape().size());
  for (size_t i = 0; i < p.size(); ++i) p[i] = static_cast<int64_t>(p.size() - 1 - i);
  return p;
}

bool is_identity_perm(const std::vector<int64_t>& p) {
  for (size_t i = 0; i < p.size(); ++i)
    if (p[i] != static_cast<int64_t>(i)) return false;
  return true;
}

class RemoveIdentityTranspose final : public Pattern {
 public:
  std::string_view name() const override { return "identity_transpose"; }
  OpKind root() const override { return OpKind::kTranspose; }
  MatchResult match(const Graph&, const Node& n) const override {
    auto p = transpose_perm(n);
    NOT_APPLICABLE_IF(p.empty() || !is_identity_perm(p), "perm is not the identity");
    return bypass_match(n, n.output(0), n.input(0));
  }
  void rewrite(Rewriter& rw, const Match& m) const override { bypass(rw, m); }
};

class RemoveInverseTransposes final : public Pattern {
 public:
  std::string_view name() const override { return "inverse_transposes"; }
  OpKind root() const override { return OpKind::kTranspose; }
  MatchResult match(const Graph&, const Node& n) const override {
    const Node* first = producer_of(n.input(0));
    NOT_APPLICABLE_IF(!is_op(first, OpKind::kTranspose), "input is not a Transpose");
    auto p = transpose_perm(*first), q = transpose_perm(n);
    NOT_APPLICABLE_IF(p.empty() || p.size() != q.size(), "perms unknown");
    for (size_t i = 0; i < q.size(); ++i) {
      NOT_APPLICABLE_IF(q[i] < 0 || q[i] >= static_cast<int64_t>(p.size()), "perm out of range");
      NOT_APPLICABLE_IF(p[q[i]] != static_cast<int64_t>(i), "the two Transposes are not inverses");
    }
    // The first Transpose stays for its other users; dead code removes it
    // otherwise.
    return bypass_match(n, n.output(0), first->input(0));
  }
  void rewrite(Rewriter& rw, const Match& m) const override { bypass(rw, m); }
};

}  // namespace

std::unique_ptr<Pass> make_eliminate_identity() {
  std::vector<std::unique_ptr<Pattern>> p;
  p.push_back(std::make_unique<RemoveIdentity>());
  p.push_back(std::make_unique<RemoveDropout>());
  for (OpKind k : {OpKind::kReshape, OpKind::kFlatten, OpKind::kSqueeze, OpKind::kUnsqueeze})
    p.push_back(std::make_unique<RemoveNoOpReshape>(k));
  p.push_back(std::make_unique<RemoveNoOpCast>());
  p.push_back(std::make_unique<RemoveIdentityTranspose>());
  p.push_back(std::make_unique<RemoveInverseTransposes>());
  return std::make_unique<PatternPass>("eliminate_identity",
                                       "remove Identity, inference Dropout, no-op Reshape/Cast/Transpose and "
                                       "inverse Transpose pairs",
                                       std::move(p));
}

}  // namespace engine
