// reparam_branches: parallel branches on one input, summed, become one conv
// (RepVGG, ACNet, DBB-style structural re-parameterization).
//
//   Conv_1(x, W1, b1) + ... + Conv_n(x, Wn, bn) [+ x | + ChannelAffine(x, s, t)]
//     ==>  Conv(x, W, b),  W = sum_i pad_K(W_i) [+ s * delta],  b = sum_i b_i [+ t]
//
// where pad_K centers each kxk kernel in the largest KxK and delta is the
// identity kernel (1 at the centre tap for output channel o, input o).
// Preconditions: every term reads the same x; the convs share group, strides
// and dilations and have constant weights; every K - k_i is even and the
// kernels' centres align: pb_i + d*(K - k_i)/2 is the same for all branches,
// and so is pb_i + pe_i - d*(k_i - 1) (same output size for any input size);
// an identity term needs stride 1, Cout == Cin and the centre on a tap; the
// Adds and branch outputs are read only by the sum and are not graph
// outputs; no term broadcasts.
// Why: after BN folding each branch is a biased conv and convolution is
// linear in its kernel, so the n convs plus the identity are one conv of the
// largest kernel: a RepVGG block runs as a single 3x3 Conv(+Relu).
#include <cmath>

#include "passes/pass.h"
#include "passes/util.h"

namespace engine {
namespace {

struct Term {
  Value* value;
  Node* node;           // Conv / ChannelAffine / BN; nullptr for bare x
  std::vector<float> s, t;  // identity terms: per-channel scale and shift
};

struct Reparam {
  Value* x = nullptr;
  std::vector<Node*> adds;
  std::vector<Term> terms;
  ConvGeometry geo;  // merged
  int64_t cout = 0;
};

void collect(Value* v, bool is_root, std::vector<Node*>* adds, std::vector<Value*>* terms, int depth) {
  Node* p = producer_of(v);
  bool expand = p && p->kind() == OpKind::kAdd && p->num_inputs() == 2 && p->input(0) && p->input(1) &&
                !p->input(0)->is_constant() && !p->input(1)->is_constant() && (is_root || single_use(v)) && depth < 16;
  if (!expand) {
    terms->push_back(v);
    return;
  }
  adds->push_back(p);
  collect(p->input(0), false, adds, terms, depth + 1);
  collect(p->input(1), false, adds, terms, depth + 1);
}

// Identity-like term: x, ChannelAffine(x) or inference BN(x).
bool identity_term(Value* v, Term* out, std::string* why) {
  Node* p = producer_of(v);
  out->value = v;
  out->node = nullptr;
  if (p && p->kind() == OpKind::kChannelAffine) {
    auto s = float_values(p->input(1));
    auto t = p->num_inputs() > 2 && p->input(2) ? float_values(p->input(2)) : std::optional<std::vector<float>>();
    if (!s || (p->num_inputs() > 2 && p->input(2) && !t)) {
      *why = "ChannelAffine parameters are not constant";
      return false;
    }
    out->node = p;
    out->s = *s;
    out->t = t ? *t : std::vector<float>(s->size(), 0.f);
    return true;
  }
  if (p && p->kind() == OpKind::kBatchNormalization) {
    auto g = float_values(p->input(1)), b = float_values(p->input(2)), mu = float_values(p->input(3)),
         var = float_values(p->input(4));
    if (!g || !b || !mu || !var || p->attr_int("training_mode", 0) != 0) {
      *why = "BatchNormalization parameters are not constant";
      return false;
    }
    double eps = p->attr_float("epsilon", 1e-5f);
    out->node = p;
    for (size_t c = 0; c < g->size(); ++c) {
      double s = (*g)[c] / std::sqrt(static_cast<double>((*var)[c]) + eps);
      out->s.push_back(static_cast<float>(s));
      out->t.push_back(static_cast<float>((*b)[c] - (*mu)[c] * s));
    }
    return true;
  }
  return true;  // bare x; s, t stay empty (scale 1, shift 0)
}

Value* source_of(Value* term) {
  Node* p = producer_of(term);
  if (p && (p->kind() == OpKind::kConv || p->kind() == OpKind::kChannelAffine ||
            p->kind() == OpKind::kBatchNormalization))
    return p->input(0);
  return term;
}

class ReparamBranches final : public Pattern {
 public:
  std::string_view name() const override { return "reparam_branches"; }
  OpKind root() const override { return OpKind::kAdd; }

  MatchResult match(const Graph&, const Node& n) const override {
    NOT_APPLICABLE_IF(n.num_inputs() != 2 || !n.input(0) || !n.input(1), "not a binary Add");
    Reparam r;
    std::vector<Value*> values;
    collect(n.output(0), true, &r.adds, &values, 0);
    NOT_APPLICABLE_IF(values.size() < 2, "not a sum");
    // The common input: a conv term's input decides (a bare identity term
    // is its own source).
    int convs = 0;
    for (Value* v : values) {
      Node* p = producer_of(v);
      if (is_op(p, OpKind::kConv)) {
        r.x = p->input(0);
        ++convs;
      }
    }
    NOT_APPLICABLE_IF(convs == 0, "no term is a Conv");
    for (Value* v : values)
      NOT_APPLICABLE_IF(v != r.x && source_of(v) != r.x, "the terms do not all read the same input");
    for (Value* v : values)
      NO_MATCH_IF(!same_shape(v, n.output(0)), "term '", v->name(), "' shape is not known to equal the sum's");

    std::optional<ConvGeometry> ref;
    int64_t best_k = -1;
    for (Value* v : values) {
      Node* p = producer_of(v);
      if (v != r.x) NO_MATCH_IF(!single_use(v), "branch output '", v->name(), "' has other users or is a graph output");
      Term term;
      if (v == r.x) {
        term.value = v;
        term.node = nullptr;
      } else if (is_op(p, OpKind::kConv)) {
        std::string why;
        auto geo = conv_geometry(*p, &why);
        NO_MATCH_IF(!geo, p->describe(), ": ", why);
        NO_MATCH_IF(!is_float32_constant(p->input(1)), p->describe(), ": weight is not a float32 constant");
        NO_MATCH_IF(p->input(2) && !is_float32_constant(p->input(2)), p->describe(), ": bias is not constant");
        if (!ref) {
          ref = geo;
        } else {
          NO_MATCH_IF(geo->group != ref->group, "branches differ in group");
          NO_MATCH_IF(geo->strides != ref->strides, "branches differ in stride");
          NO_MATCH_IF(geo->dilations != ref->dilations, "branches differ in dilation");
          NO_MATCH_IF(geo->out_channels != ref->out_channels || geo->in_channels_per_group != ref->in_channels_per_group,
                      "branches differ in channels");
          NO_MATCH_IF(geo->rank != ref->rank, "branches differ in rank");
        }
        int64_t k = 1;
        for (int64_t d : geo->kernel) k *= d;
        if (k > best_k) best_k = k;
        term.value = v;
        term.node = p;
      } else {
        std::string why;
        NO_MATCH_IF(!identity_term(v, &term, &why), why);
      }
      r.terms.push_back(term);
    }
    // Merged kernel: per spatial dim the largest k; check centring.
    const int rank = ref->rank;
    ConvGeometry m = *ref;
    for (int d = 0; d < rank; ++d) {
      int64_t kmax = 0;
      for (const Term& t : r.terms)
        if (t.node && t.node->kind() == OpKind::kConv) kmax = std::max(kmax, t.node->input(1)->shape()[2 + d]);
      m.kernel[d] = kmax;
      int64_t dil = ref->dilations[d];
      int64_t begin = -1, span = 0;
      bool first = true;
      for (const Term& t : r.terms) {
        if (!t.node || t.node->kind() != OpKind::kConv) continue;
        std::string why;
        ConvGeometry g = *conv_geometry(*t.node, &why);
        int64_t k = g.kernel[d];
        NO_MATCH_IF((kmax - k) % 2 != 0, "kernel sizes ", k, " and ", kmax, " cannot be centred on each other");
        int64_t b = g.pads[d] + dil * (kmax - k) / 2;
        int64_t s = g.pads[d] + g.pads[d + rank] - dil * (k - 1);
        if (first) {
          begin = b;
          span = s;
          first = false;
        }
        NO_MATCH_IF(b != begin || s != span, "branch paddings do not align the kernel centres");
      }
      m.pads[d] = begin;
      m.pads[d + rank] = span + dil * (kmax - 1) - begin;
      NO_MATCH_IF(m.pads[d + rank] < 0, "merged padding would be negative");
    }
    r.cout = m.out_channels;
    bool has_identity = false;
    for (const Term& t : r.terms) has_identity = has_identity || !t.node || t.node->kind() != OpKind::kConv;
    if (has_identity) {
      for (int d = 0; d < rank; ++d) {
        NO_MATCH_IF(m.strides[d] != 1, "an identity branch needs stride 1");
        NO_MATCH_IF(m.pads[d] % m.dilations[d] != 0 || m.pads[d] / m.dilations[d] >= m.kernel[d],
                    "the identity does not fall on a kernel tap");
      }
      NO_MATCH_IF(m.out_channels != m.in_channels_per_group * m.group, "an identity branch needs Cout == Cin");
      NO_MATCH_IF(m.out_channels / m.group != m.in_channels_per_group, "an identity branch needs Cout == Cin per group");
      for (const Term& t : r.terms)
        NO_MATCH_IF(t.node && t.node->kind() != OpKind::kConv && t.s.size() != 1 &&
                        static_cast<int64_t>(t.s.size()) != m.out_channels,
                    "identity branch has the wrong channel count");
    }
    r.geo = m;
    Match match;
    match.nodes = {const_cast<Node*>(&n)};
    match.data = r;
    return match;
  }

  void rewrite(Rewriter& rw, const Match& mt) const override {
    const auto& r = std::any_cast<const Reparam&>(mt.data);
    const ConvGeometry& m = r.geo;
    const int rank = m.rank;
    int64_t cout = r.cout, cig = m.in_channels_per_group, cog = cout / m.group;
    int64_t ksize = 1;
    for (int64_t k : m.kernel) ksize *= k;
    std::vector<float> w(static_cast<size_t>(cout * cig * ksize), 0.f);
    std::vector<float> b(static_cast<size_t>(cout), 0.f);
    // Row-major strides of the merged kernel.
    std::vector<int64_t> kstride(rank, 1);
    for (int d = rank - 2; d >= 0; --d) kstride[d] = kstride[d + 1] * m.kernel[d + 1];
    std::string name;
    int64_t best = -1;
    for (const Term& t : r.terms) {
      if (t.node && t.node->kind() == OpKind::kConv) {
        const Shape& ws = t.node->input(1)->shape();
        std::vector<float> src = *float_values(t.node->input(1));
        int64_t kn = 1;
        for (int d = 0; d < rank; ++d) kn *= ws[2 + d];
        if (kn > best) {
          best = kn;
          name = t.node->name();
        }
        std::vector<int64_t> off(rank);
        for (int d = 0; d < rank; ++d) off[d] = (m.kernel[d] - ws[2 + d]) / 2;
        for (int64_t oi = 0; oi < cout * cig; ++oi) {
          for (int64_t k = 0; k < kn; ++k) {
            // Unravel k over the branch kernel, re-ravel into the merged one.
            int64_t rem = k, dst = 0;
            for (int d = rank - 1; d >= 0; --d) {
              int64_t idx = rem % ws[2 + d];
              rem /= ws[2 + d];
              dst += (idx + off[d]) * kstride[d];
            }
            w[oi * ksize + dst] += src[oi * kn + k];
          }
        }
        if (t.node->input(2)) {
          std::vector<float> bias = *float_values(t.node->input(2));
          for (int64_t o = 0; o < cout; ++o) b[o] += bias.size() == 1 ? bias[0] : bias[o];
        }
      } else {
        int64_t centre = 0;
        for (int d = 0; d < rank; ++d) centre += (m.pads[d] / m.dilations[d]) * kstride[d];
        for (int64_t o = 0; o < cout; ++o) {
          float s = t.s.empty() ? 1.f : t.s.size() == 1 ? t.s[0] : t.s[o];
          float sh = t.t.empty() ? 0.f : t.t.size() == 1 ? t.t[0] : t.t[o];
          int64_t i = o - (o / cog) * cig;
          w[(o * cig + i) * ksize + centre] += s;
          b[o] += sh;
        }
      }
    }
    Node* root = mt.nodes[0];
    Value* y = root->output(0);
    Shape ws = {cout, cig};
    ws.insert(ws.end(), m.kernel.begin(), m.kernel.end());
    Value* wv = rw.add_constant(name + "_reparam_weight", float_tensor(ws, w));
    Value* bv = rw.add_constant(name + "_reparam_bias", float_tensor({cout}, b));
    for (Node* a : r.adds) rw.remove(a);
    for (const Term& t : r.terms)
      if (t.node) rw.remove(t.node);
    rw.add_node(OpKind::kConv, name, {r.x, wv, bv}, {y}, conv_attrs(m));
  }
};

}  // namespace

std::unique_ptr<Pass> make_reparam_branches() {
  std::vector<std::unique_ptr<Pattern>> p;
  p.push_back(std::make_unique<ReparamBranches>());
  return std::make_unique<PatternPass>(
      "reparam_branches", "merge parallel conv branches (+identity) summed by Add into one conv (RepVGG/ACNet)",
      std::move(p));
}

}  // namespace engine
