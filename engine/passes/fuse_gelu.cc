// fuse_gelu: the GELU subgraphs the PyTorch exporters emit become one Gelu.
//
//   erf form   0.5 * x * (1 + Erf(x / sqrt 2))                 ==> Gelu(x)
//   tanh form  0.5 * x * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))
//                                                              ==> Gelu(x) {approximate="tanh"}
// The products are matched as products, not as one node order: the outer
// product is flattened through single-use Muls into {constant, x, 1 + T}
// (TorchScript emits Mul(Mul(x, A), 0.5), dynamo Mul(x, Mul(0.5, A)), a hand
// written module Mul(Mul(x, 0.5), A)); x / sqrt 2 may be Div(x, 1.4142135) or
// Mul(x, 0.70710678); x^3 may be Pow(x, 3) or x * x * x (TorchScript's tanh
// form). Constants must be scalars within 1e-5 (relative) of the formula's,
// which the exporters write rounded to float32. opset 20's Gelu op (dynamo at
// opset >= 20) is imported as is and needs no pass.
// Preconditions: every intermediate value is read only by the pattern and is
// not a graph output; x is float32; constants are float scalars that do not
// broadcast x to a higher rank.
// Why: five to eight elementwise passes over the tensor become one, and a
// Gelu after a Conv/Gemm then runs in its epilogue (fuse_conv_add_relu).
#include <cmath>

#include "passes/pass.h"
#include "passes/util.h"

namespace engine {
namespace {

constexpr double kRelTol = 1e-5;

bool near(double v, double want) { return std::fabs(v - want) <= kRelTol * std::fabs(want); }

// A float constant with one element that does not raise x's rank.
std::optional<double> scalar_of(const Value* v, const Value* x) {
  if (!v || !v->is_constant() || v->constant()->numel() != 1) return std::nullopt;
  auto f = float_values(v);
  if (!f) return std::nullopt;
  size_t rank = v->shape().size();
  if (rank > 1 && !(x && x->has_shape() && rank <= x->shape().size())) return std::nullopt;
  return static_cast<double>((*f)[0]);
}

// A product of scalar constants, powers of x and other factors, read through
// single-use Mul, Div-by-constant and Pow(x, 2|3) nodes.
struct Product {
  double coef = 1.0;
  int xpow = 0;
  std::vector<Value*> others;  // factors that are neither constants nor x
  std::vector<Node*> nodes;    // the nodes read through, consumers first
};

void flatten(Value* v, const Value* x, bool is_root, Product* p, int depth = 0) {
  if (x && v == x) {
    p->xpow += 1;
    return;
  }
  if (auto c = scalar_of(v, x)) {
    p->coef *= *c;
    return;
  }
  Node* n = producer_of(v);
  if (!n || depth > 8 || (!is_root && !single_use(v)) || v->dtype() != DType::kFloat32) {
    p->others.push_back(v);
    return;
  }
  if (n->kind() == OpKind::kMul && n->num_inputs() == 2) {
    p->nodes.push_back(n);
    flatten(n->input(0), x, false, p, depth + 1);
    flatten(n->input(1), x, false, p, depth + 1);
    return;
  }
  if (n->kind() == OpKind::kDiv && n->num_inputs() == 2) {
    auto c = scalar_of(n->input(1), x);
    if (c && *c != 0.0) {
      p->nodes.push_back(n);
      p->coef /= *c;
      flatten(n->input(0), x, false, p, depth + 1);
      return;
    }
  }
  if (n->kind() == OpKind::kPow && x && n->input(0) == x) {
    auto e = scalar_of(n->input(1), x);
    if (e && (*e == 2.0 || *e == 3.0)) {
      p->nodes.push_back(n);
      p->xpow += static_cast<int>(*e);
      return;
    }
  }
  p->others.push_back(v);
}

struct GeluMatch {
  Value* x;
  bool tanh;
};

class FuseGelu final : public Pattern {
 public:
  std::string_view name() const override { return "gelu"; }
  OpKind root() const override { return OpKind::kMul; }

  MatchResult match(const Graph&, const Node& n) const override {
    NOT_APPLICABLE_IF(n.num_inputs() != 2 || !n.output(0), "not a binary Mul");
    Product top;
    flatten(const_cast<Node&>(n).output(0), nullptr, true, &top);
    // flatten() on the root's own output reads the root itself as the first
    // Mul; its inputs were expanded below it.
    NOT_APPLICABLE_IF(top.others.size() != 2, "not a product of x and (1 + erf|tanh)");
    // Which factor is 1 + T?
    Value* x = nullptr;
    Node* add = nullptr;
    for (int i = 0; i < 2; ++i) {
      Node* a = producer_of(top.others[i]);
      if (!is_op(a, OpKind::kAdd) || a->num_inputs() != 2) continue;
      for (int j = 0; j < 2; ++j) {
        Node* t = producer_of(a->input(j));
        if ((is_op(t, OpKind::kErf) || is_op(t, OpKind::kTanh)) && scalar_of(a->input(1 - j), nullptr)) {
          add = a;
          x = top.others[1 - i];
        }
      }
    }
    NOT_APPLICABLE_IF(!add, "no factor is 1 + Erf(.) or 1 + Tanh(.)");
    int ti = is_op(producer_of(add->input(0)), OpKind::kErf) || is_op(producer_of(add->input(0)), OpKind::kTanh) ? 0 : 1;
    Node* t = producer_of(add->input(ti));
    bool tanh = t->kind() == OpKind::kTanh;
    const char* form = tanh ? "tanh-form GELU: " : "erf-form GELU: ";
    NO_MATCH_IF(x->dtype() != DType::kFloat32, form, "x is not float32");
    NO_MATCH_IF(!near(top.coef, 0.5), form, "the outer factor is ", top.coef, ", not 0.5");
    NO_MATCH_IF(!near(*scalar_of(add->input(1 - ti), nullptr), 1.0), form, "adds ",
                *scalar_of(add->input(1 - ti), nullptr), " to the ", t->op_type(), ", not 1");
    NO_MATCH_IF(!single_use(add->output(0)), form, "the value 1 + ", t->op_type(), " ('", add->output(0)->name(),
                "') has other users");
    NO_MATCH_IF(!single_use(t->output(0)), form, "the ", t->op_type(), " output '", t->output(0)->name(),
                "' has other users");
    std::vector<Node*> nodes = top.nodes;
    nodes.push_back(add);
    nodes.push_back(t);
    Product arg;
    flatten(t->input(0), x, false, &arg);
    if (!tanh) {
      NO_MATCH_IF(!arg.others.empty() || arg.xpow != 1, form, "the Erf argument is not a multiple of x");
      NO_MATCH_IF(!near(arg.coef, 1.0 / std::sqrt(2.0)), form, "the Erf argument is ", arg.coef,
                  " * x, not x / sqrt(2)");
    } else {
      NO_MATCH_IF(arg.others.size() != 1 || arg.xpow != 0, form, "the Tanh argument is not k * (x + c * x^3)");
      NO_MATCH_IF(!near(arg.coef, 0.7978845608028654 /* sqrt(2/pi) */), form, "the Tanh argument's factor is ", arg.coef,
                  ", not sqrt(2/pi)");
      Value* inner = arg.others[0];
      Node* sum = producer_of(inner);
      NO_MATCH_IF(!is_op(sum, OpKind::kAdd) || sum->num_inputs() != 2 || !single_use(inner), form,
                  "the Tanh argument is not k * (x + c * x^3) with single-use intermediates");
      int xi = sum->input(0) == x ? 0 : sum->input(1) == x ? 1 : -1;
      NO_MATCH_IF(xi < 0, form, "the Tanh argument does not add x");
      Product cube;
      flatten(sum->input(1 - xi), x, false, &cube);
      NO_MATCH_IF(!cube.others.empty() || cube.xpow != 3, form, "the Tanh argument does not add c * x^3");
      NO_MATCH_IF(!near(cube.coef, 0.044715), form, "the cubic coefficient is ", cube.coef, ", not 0.044715");
      nodes.insert(nodes.end(), arg.nodes.begin(), arg.nodes.end());
      nodes.push_back(sum);
      arg.nodes = cube.nodes;
    }
    nodes.insert(nodes.end(), arg.nodes.begin(), arg.nodes.end());
    // x * x * x reads x thrice and sqrt-2 Divs read it once: every node
    // collected must be distinct (a Mul reached twice would be a shared
    // intermediate, which single_use already excluded).
    for (size_t i = 0; i < nodes.size(); ++i)
      for (size_t j = i + 1; j < nodes.size(); ++j) NO_MATCH_IF(nodes[i] == nodes[j], form, "a node is reached twice");
    Match m;
    m.nodes = nodes;
    m.data = GeluMatch{x, tanh};
    return m;
  }

  void rewrite(Rewriter& rw, const Match& m) const override {
    const auto& g = std::any_cast<const GeluMatch&>(m.data);
    Node* root = m.nodes[0];
    Value* y = root->output(0);
    std::string name = root->name();
    // Consumers before producers: each removed node's output is read only by
    // nodes removed before it (or is y, which the Gelu takes over).
    for (Node* n : m.nodes) rw.remove(n);
    Attributes attrs;
    if (g.tanh) attrs["approximate"] = Attribute::of_string("tanh");
    rw.add_node(OpKind::kGelu, name, {g.x}, {y}, attrs);
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_gelu() {
  std::vector<std::unique_ptr<Pattern>> p;
  p.push_back(std::make_unique<FuseGelu>());
  return std::make_unique<PatternPass>("fuse_gelu",
                                       "replace the exported erf- and tanh-form GELU subgraphs by one Gelu node",
                                       std::move(p));
}

}  // namespace engine
