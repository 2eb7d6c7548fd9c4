// fuse_squeeze_excitation: a squeeze-excitation block becomes one op.
//
//   x -> GlobalAveragePool | ReduceMean(spatial axes)  -> [Flatten|Reshape|Squeeze]
//     -> Conv 1x1 | Gemm (W1, b1) -> Relu -> Conv 1x1 | Gemm (W2, b2)
//     -> [Reshape|Unsqueeze] -> Sigmoid | HardSigmoid -> [Reshape|Unsqueeze]
//     -> [Expand to x's shape] -> Mul(x, gate)
//   ==>  SqueezeExcite(x, W1 [Cr, C], b1 [Cr], W2 [C, Cr], b2 [C]) {gate, gate_params}
// (engine/ir/ops.def; the torchvision/timm form uses 1x1 Convs on [N, C, 1, 1],
// the original SENet form Linear layers on the flattened [N, C]; the shape
// plumbing between is whatever the exporter wrote, checked by shapes.)
// Preconditions: float32 with static channel counts; weights and biases
// constant; Conv 1x1, group 1, no padding; Gemm transA = 0 (alpha/beta are
// folded into the weights); the gate has shape [N, C, 1, ...] against x's
// [N, C, D1, ...] (no other broadcast); every intermediate value (pooled,
// hidden, gate) is read only by the chain and is not a graph output.
// Then, as the epilogue of the fused op (an SE-ResNet bottleneck's tail):
//   Add(SqueezeExcite(x, ..), z)        ==>  SqueezeExcite(x, .., z)
//   Relu(SqueezeExcite(..))             ==>  SqueezeExcite(..) {activation="Relu"}
// (z float32 with exactly the output's shape; the SE output read only there).
// Why: the unfused block is 6 to 9 nodes, four of them on tiny tensors whose
// dispatch costs more than their math; fused, x is read once to pool and
// once to scale (cpu/kernels/norm_pool/squeeze_excite.cc).
#include "passes/pass.h"
#include "passes/util.h"

namespace engine {
namespace {

bool is_shape_op(const Node* n) {
  return n && (n->kind() == OpKind::kReshape || n->kind() == OpKind::kFlatten || n->kind() == OpKind::kSqueeze ||
               n->kind() == OpKind::kUnsqueeze);
}

// Numel of a static shape (batch dim may be unknown: counted as 1).
bool per_image_numel(const Value* v, int64_t* out) {
  if (!v->has_shape() || v->shape().empty()) return false;
  int64_t n = 1;
  for (size_t d = 1; d < v->shape().size(); ++d) {
    if (v->shape()[d] < 0) return false;
    n *= v->shape()[d];
  }
  *out = n;
  return true;
}

// Whether `g` (the gate as the Mul reads it, below any Expand) has shape
// [N, C, 1, ...] against x's [N, C, D1, ...]: from its static shape, or, where
// the importer left dims unknown, from the constant target of the Reshape or
// the axes of the Unsqueeze that made it. *desc describes what was seen.
bool gate_shape_ok(const Value* g, const Shape& xs, std::string* desc) {
  const int64_t c = xs[1];
  const size_t rank = xs.size();
  auto tail_ones = [&](const std::vector<int64_t>& s) {
    for (size_t d = 2; d < s.size(); ++d)
      if (s[d] != 1) return false;
    return true;
  };
  if (g->has_shape()) {
    const Shape& gs = g->shape();
    *desc = shape_str(gs);
    bool known = gs.size() == rank && gs[1] >= 0;
    for (size_t d = 2; known && d < gs.size(); ++d) known = gs[d] >= 0;
    if (known) return gs[1] == c && tail_ones(gs) && (gs[0] < 0 || xs[0] < 0 || gs[0] == xs[0]);
  }
  const Node* p = g->producer();
  if (is_op(p, OpKind::kReshape) && p->num_inputs() > 1) {
    auto s = int_values(p->input(1));
    if (!s) return false;
    *desc = str_cat("(Reshape to ", shape_str(*s), ")");
    if (s->size() != rank || !tail_ones(*s)) return false;
    const int64_t n0 = (*s)[0], c1 = (*s)[1];
    const bool batch_ok = n0 == 0 || n0 == -1 || (xs[0] >= 0 && n0 == xs[0]);
    return batch_ok && (c1 == c || (c1 == -1 && n0 != -1));
  }
  if (is_op(p, OpKind::kUnsqueeze)) {
    auto axes = p->num_inputs() > 1 && p->input(1) ? int_values(p->input(1))
                                                  : std::optional<std::vector<int64_t>>(p->attr_ints("axes"));
    if (!axes) return false;
    *desc = str_cat("(Unsqueeze of axes ", shape_str(*axes), ")");
    std::vector<bool> seen(rank, false);
    for (int64_t a : *axes) {
      const int64_t ax = a < 0 ? a + static_cast<int64_t>(rank) : a;
      if (ax < 2 || ax >= static_cast<int64_t>(rank) || seen[ax]) return false;
      seen[ax] = true;
    }
    // The unsqueezed value must be [N, C]: rank 2 with C features.
    const Value* in = p->input(0);
    return axes->size() + 2 == rank && (!in->has_shape() || (in->shape().size() == 2 && in->shape()[1] == c));
  }
  if (desc->empty()) *desc = "(shape unknown)";
  return false;
}

struct Fc {
  std::vector<float> w;  // [out, in] row-major
  std::vector<float> b;  // [out]
  int64_t in = 0, out = 0;
};

// A 1x1 Conv or a Gemm as y = W x + b, or nullopt with *why.
std::optional<Fc> fc_of(const Node& n, std::string* why) {
  Fc f;
  const Value* w = n.input(1);
  if (!w || !is_float32_constant(w)) {
    *why = str_cat(n.describe(), ": the weight is not a float32 constant");
    return std::nullopt;
  }
  const Value* b = n.num_inputs() > 2 ? n.input(2) : nullptr;
  if (b && !is_float32_constant(b)) {
    *why = str_cat(n.describe(), ": the bias is not a float32 constant");
    return std::nullopt;
  }
  std::vector<float> wv = *float_values(w);
  const Shape& ws = w->shape();
  if (n.kind() == OpKind::kConv) {
    std::string gwhy;
    auto geo = conv_geometry(n, &gwhy);
    if (!geo) {
      *why = str_cat(n.describe(), ": ", gwhy);
      return std::nullopt;
    }
    bool ones = geo->group == 1;
    for (int64_t k : geo->kernel) ones = ones && k == 1;
    for (int64_t p : geo->pads) ones = ones && p == 0;
    if (!ones) {
      *why = str_cat(n.describe(), " is not a 1x1 convolution without groups or padding");
      return std::nullopt;
    }
    f.out = ws[0];
    f.in = ws[1];
    f.w = std::move(wv);
    if (b) f.b = *float_values(b);
  } else {
    if (n.attr_int("transA", 0) != 0 || ws.size() != 2) {
      *why = str_cat(n.describe(), ": transposes its input or has a weight that is not 2-D");
      return std::nullopt;
    }
    const bool tb = n.attr_int("transB", 0) != 0;
    const float alpha = n.attr_float("alpha", 1.f), beta = n.attr_float("beta", 1.f);
    f.out = tb ? ws[0] : ws[1];
    f.in = tb ? ws[1] : ws[0];
    f.w.resize(wv.size());
    for (int64_t o = 0; o < f.out; ++o)
      for (int64_t i = 0; i < f.in; ++i) f.w[o * f.in + i] = alpha * (tb ? wv[o * f.in + i] : wv[i * f.out + o]);
    if (b) {
      if (b->shape().size() == 2 && b->shape()[0] != 1) {
        *why = str_cat(n.describe(), ": the bias varies along the batch");
        return std::nullopt;
      }
      f.b = *float_values(b);
      for (float& v : f.b) v *= beta;
    }
  }
  if (f.b.empty()) f.b.assign(f.out, 0.f);
  if (f.b.size() == 1 && f.out > 1) f.b.assign(f.out, f.b[0]);
  if (static_cast<int64_t>(f.b.size()) != f.out) {
    *why = str_cat(n.describe(), ": the bias has ", f.b.size(), " elements for ", f.out, " outputs");
    return std::nullopt;
  }
  return f;
}

struct SeMatch {
  Value* x;
  Fc fc1, fc2;
  std::string gate;
  std::vector<float> gate_params;
};

class FuseSqueezeExcitation final : public Pattern {
 public:
  std::string_view name() const override { return "squeeze_excitation"; }
  OpKind root() const override { return OpKind::kMul; }

  MatchResult match(const Graph&, const Node& n) const override {
    NOT_APPLICABLE_IF(n.num_inputs() != 2 || !n.input(0) || !n.input(1), "not a binary Mul");
    for (int xi = 0; xi < 2; ++xi) {
      Value* x = n.input(xi);
      Value* gv = n.input(1 - xi);
      std::vector<Node*> chain = {const_cast<Node*>(&n)};
      // Back from the gate operand to the Sigmoid, through shape ops.
      // An Expand to x's shape (SENet's y.expand_as(x)) is the Mul's own
      // broadcast made explicit: the broadcast is checked on its input.
      Value* v = gv;
      Value* bcast = gv;
      Node* p = producer_of(v);
      while ((is_shape_op(p) || is_op(p, OpKind::kExpand)) && single_use(v)) {
        chain.push_back(p);
        v = p->input(0);
        if (p->kind() == OpKind::kExpand) bcast = v;
        p = producer_of(v);
      }
      if (!is_op(p, OpKind::kSigmoid) && !is_op(p, OpKind::kHardSigmoid)) continue;
      Node* gate = p;
      // From here on it is a gating Mul: the rest is loud.
      auto result = match_from_gate(n, x, bcast, gate, v, chain);
      if (result || !result.quiet()) return result;
    }
    NOT_APPLICABLE_IF(true, "no operand is a Sigmoid/HardSigmoid gate");
  }

  MatchResult match_from_gate(const Node& mul, Value* x, Value* gv, Node* gate, Value* gate_out,
                              std::vector<Node*> chain) const {
    // Walk back: gate <- [shape ops] <- fc2 <- Relu <- fc1 <- [shape ops] <- pool(x).
    NO_MATCH_IF(!single_use(gate_out), "the gate '", gate_out->name(), "' has other readers or is a graph output");
    chain.push_back(gate);
    Value* v = gate->input(0);
    Node* p = producer_of(v);
    while (is_shape_op(p) && single_use(v)) {
      chain.push_back(p);
      v = p->input(0);
      p = producer_of(v);
    }
    NOT_APPLICABLE_IF(!is_op(p, OpKind::kConv) && !is_op(p, OpKind::kGemm),
                      "the gate is not computed by a Conv or Gemm");
    NO_MATCH_IF(!single_use(v), "the second Conv/Gemm output has other readers");
    Node* fc2 = p;
    chain.push_back(fc2);
    v = fc2->input(0);
    Node* relu = producer_of(v);
    NOT_APPLICABLE_IF(!is_op(relu, OpKind::kRelu), "the second Conv/Gemm does not read a Relu");
    NO_MATCH_IF(!single_use(v), "the hidden activation has other readers");
    chain.push_back(relu);
    v = relu->input(0);
    Node* fc1 = producer_of(v);
    NOT_APPLICABLE_IF(!is_op(fc1, OpKind::kConv) && !is_op(fc1, OpKind::kGemm), "the Relu does not read a Conv or Gemm");
    NO_MATCH_IF(!single_use(v), "the first Conv/Gemm output has other readers");
    chain.push_back(fc1);
    v = fc1->input(0);
    p = producer_of(v);
    while (is_shape_op(p) && single_use(v)) {
      chain.push_back(p);
      v = p->input(0);
      p = producer_of(v);
    }
    NOT_APPLICABLE_IF(!is_op(p, OpKind::kGlobalAveragePool) && !is_op(p, OpKind::kReduceMean),
                      "the first Conv/Gemm does not read a global average pool");
    NO_MATCH_IF(p->input(0) != x, "the pool reads '", p->input(0)->name(), "', not the gated tensor '", x->name(),
                "'");
    NO_MATCH_IF(!single_use(v), "the pooled value '", v->name(), "' has other readers or is a graph output");
    chain.push_back(p);
    // Shapes: x [N, C, D...], pooled [N, C, 1...] or [N, C], gate [N, C, 1...].
    NO_MATCH_IF(x->dtype() != DType::kFloat32, "the input is not float32");
    NO_MATCH_IF(!x->has_shape() || x->shape().size() < 3, "the input's rank is unknown or below 3");
    const Shape& xs = x->shape();
    const int64_t c = xs[1];
    NO_MATCH_IF(c < 0, "the channel count is unknown");
    if (p->kind() == OpKind::kReduceMean) {
      auto axes = p->num_inputs() > 1 && p->input(1) ? int_values(p->input(1))
                                                    : std::optional<std::vector<int64_t>>(p->attr_ints("axes"));
      NO_MATCH_IF(!axes, "ReduceMean axes are not constant");
      std::vector<bool> seen(xs.size(), false);
      for (int64_t a : *axes) {
        int64_t ax = a < 0 ? a + static_cast<int64_t>(xs.size()) : a;
        if (ax >= 0 && ax < static_cast<int64_t>(xs.size())) seen[ax] = true;
      }
      bool spatial = !seen[0] && !seen[1];
      for (size_t d = 2; d < xs.size(); ++d) spatial = spatial && seen[d];
      NO_MATCH_IF(!spatial, "ReduceMean does not average exactly the spatial axes");
    }
    std::string why;
    auto f1 = fc_of(*fc1, &why);
    NO_MATCH_IF(!f1, why);
    auto f2 = fc_of(*fc2, &why);
    NO_MATCH_IF(!f2, why);
    NO_MATCH_IF(f1->in != c || f2->out != c || f2->in != f1->out, "the channel counts do not chain: ", c, " -> ",
                f1->in, "x", f1->out, " -> ", f2->in, "x", f2->out, " -> ", c);
    int64_t pooled = 0;
    NO_MATCH_IF(!per_image_numel(v, &pooled) || pooled != c, "the pooled value is not C = ", c,
                " values per image");
    // The gate must broadcast as [N, C, 1, ...] over x.
    const Value* y = mul.output(0);
    NO_MATCH_IF(!y->has_shape() || y->shape() != xs, "the Mul's output does not have the input's shape");
    std::string gshape;
    NO_MATCH_IF(!gate_shape_ok(gv, xs, &gshape), "the Mul broadcasts the gate ", gshape, " over ", shape_str(xs),
                " differently from [N, C, 1, ...]");
    // Channel-wise fc inputs: a Conv on [N, C, 1, 1] or a Gemm on [N, C].
    for (Node* fc : {fc1, fc2}) {
      const Value* in = fc->input(0);
      NO_MATCH_IF(!in->has_shape(), fc->describe(), ": input shape unknown");
      const Shape& s = in->shape();
      bool ok = fc->kind() == OpKind::kGemm ? s.size() == 2 : s.size() >= 3;
      for (size_t d = 2; ok && d < s.size(); ++d) ok = s[d] == 1;
      NO_MATCH_IF(!ok, fc->describe(), " does not act on one vector per image (input ", shape_str(s), ")");
    }
    SeMatch m;
    m.x = x;
    m.fc1 = std::move(*f1);
    m.fc2 = std::move(*f2);
    if (gate->kind() == OpKind::kSigmoid) {
      m.gate = "Sigmoid";
    } else {
      m.gate = "HardSigmoid";
      m.gate_params = {gate->attr_float("alpha", 0.2f), gate->attr_float("beta", 0.5f)};
    }
    Match r;
    r.nodes = chain;
    r.data = m;
    return r;
  }

  void rewrite(Rewriter& rw, const Match& m) const override {
    const auto& se = std::any_cast<const SeMatch&>(m.data);
    Node* mul = m.nodes[0];
    Value* y = mul->output(0);
    const std::string name = mul->name();
    const std::string base = m.nodes.back()->name();  // the pool
    Value* w1 = rw.add_constant(base + "_se_w1", float_tensor({se.fc1.out, se.fc1.in}, se.fc1.w));
    Value* b1 = rw.add_constant(base + "_se_b1", float_tensor({se.fc1.out}, se.fc1.b));
    Value* w2 = rw.add_constant(base + "_se_w2", float_tensor({se.fc2.out, se.fc2.in}, se.fc2.w));
    Value* b2 = rw.add_constant(base + "_se_b2", float_tensor({se.fc2.out}, se.fc2.b));
    // Consumers first: each node's output is read only by nodes removed before.
    for (Node* n : m.nodes) rw.remove(n);
    Attributes attrs;
    attrs["gate"] = Attribute::of_string(se.gate);
    if (!se.gate_params.empty()) attrs["gate_params"] = Attribute::of_floats(se.gate_params);
    rw.add_node(OpKind::kSqueezeExcite, name, {se.x, w1, b1, w2, b2}, {y}, attrs);
  }
};

// An SqueezeExcite output that is not yet a residual or activated.
Node* bare_se(const Value* v) {
  Node* p = producer_of(v);
  if (!is_op(p, OpKind::kSqueezeExcite)) return nullptr;
  if (p->num_inputs() > 5 || !p->attr_string("activation", "").empty()) return nullptr;
  return p;
}
Node* se_without_activation(const Value* v) {
  Node* p = producer_of(v);
  return is_op(p, OpKind::kSqueezeExcite) && p->attr_string("activation", "").empty() ? p : nullptr;
}

// Add(SqueezeExcite(x, ..), z)  ==>  SqueezeExcite(x, .., z): the residual
// add of an SE-ResNet bottleneck, in the same pass as the scaling.
class FuseSeResidual final : public Pattern {
 public:
  std::string_view name() const override { return "se_residual"; }
  OpKind root() const override { return OpKind::kAdd; }
  MatchResult match(const Graph&, const Node& n) const override {
    NOT_APPLICABLE_IF(n.num_inputs() != 2 || !n.input(0) || !n.input(1), "not a binary Add");
    for (int i = 0; i < 2; ++i) {
      Node* se = bare_se(n.input(i));
      if (!se) continue;
      Value* z = n.input(1 - i);
      NO_MATCH_IF(!single_use(n.input(i)), "the SqueezeExcite output has other readers");
      NO_MATCH_IF(z->is_constant() || z->dtype() != DType::kFloat32, "the other operand is not a float32 tensor");
      NO_MATCH_IF(!same_shape(z, n.input(i)) || !same_shape(z, n.output(0)), "the residual's shape is not known to "
                  "equal the SqueezeExcite output's (no broadcasting in the epilogue)");
      Match m;
      m.nodes = {const_cast<Node*>(&n), se};
      m.data = z;
      return m;
    }
    NOT_APPLICABLE_IF(true, "no operand is a SqueezeExcite output");
  }
  void rewrite(Rewriter& rw, const Match& m) const override {
    Node* add = m.nodes[0];
    Node* se = m.nodes[1];
    std::vector<Value*> ins = se->inputs();
    ins.push_back(std::any_cast<Value*>(m.data));
    Attributes attrs = se->attrs();
    std::string name = se->name();
    Value* y = add->output(0);
    rw.remove(add);
    rw.remove(se);
    rw.add_node(OpKind::kSqueezeExcite, name, ins, {y}, attrs);
  }
};

// Relu(SqueezeExcite(..))  ==>  SqueezeExcite(..) {activation="Relu"}.
class FuseSeRelu final : public Pattern {
 public:
  std::string_view name() const override { return "se_relu"; }
  OpKind root() const override { return OpKind::kRelu; }
  MatchResult match(const Graph&, const Node& n) const override {
    Node* se = se_without_activation(n.input(0));
    NOT_APPLICABLE_IF(!se, "input is not a SqueezeExcite output");
    NO_MATCH_IF(!single_use(n.input(0)), "the SqueezeExcite output has other readers");
    Match m;
    m.nodes = {const_cast<Node*>(&n), se};
    return m;
  }
  void rewrite(Rewriter& rw, const Match& m) const override {
    Node* relu = m.nodes[0];
    Node* se = m.nodes[1];
    std::vector<Value*> ins = se->inputs();
    Attributes attrs = se->attrs();
    attrs["activation"] = Attribute::of_string("Relu");
    std::string name = se->name();
    Value* y = relu->output(0);
    rw.remove(relu);
    rw.remove(se);
    rw.add_node(OpKind::kSqueezeExcite, name, ins, {y}, attrs);
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_squeeze_excitation() {
  std::vector<std::unique_ptr<Pattern>> p;
  p.push_back(std::make_unique<FuseSqueezeExcitation>());
  p.push_back(std::make_unique<FuseSeResidual>());
  p.push_back(std::make_unique<FuseSeRelu>());
  return std::make_unique<PatternPass>(
      "fuse_squeeze_excitation",
      "fuse GlobalAveragePool -> Conv/Gemm -> Relu -> Conv/Gemm -> Sigmoid -> Mul into one SqueezeExcite",
      std::move(p));
}

}  // namespace engine
