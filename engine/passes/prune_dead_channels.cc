// prune_dead_channels: output channels that are identically zero are removed,
// with the input channels of the conv that reads them.
//   P = Conv(x, W, b) with W[o, ...] == 0 and b[o] == 0 for o in D,
//   [act with act(0) == 0,]  C = Conv(P', V, c)
//     ==>  Conv(x, W[not D], b[not D]) -> [act] -> Conv(., V[:, not D], c)
// Preconditions: both convs have group 1 (removing a channel would break the
// group structure); the weights are constant float32 and not shared; the
// producer adds no residual (FusedConv without Z) and its activation, fused or
// a separate node, maps 0 to 0; every value between P and C is read only by
// the next op and is not a graph output (a residual Add or an output would
// see the missing channels); not every channel is dead.
// Why: channel pruning (network slimming) and BN layers with zero gamma leave
// such channels after folding; dropping them saves their compute in both
// convs, exactly: channel o of P's output is 0 everywhere (zero padding
// included), so it contributes nothing to C.
#include "passes/pass.h"
#include "passes/util.h"

namespace engine {
namespace {

bool fused_activation_keeps_zero(const Node& p) {
  std::string act = p.attr_string("activation", "");
  if (act.empty() || act == "Relu" || act == "LeakyRelu" || act == "HardSwish" || act == "SiLU" || act == "Gelu")
    return true;
  if (act == "Clip") {
    auto params = p.attr_floats("activation_params");
    return params.size() == 2 && params[0] <= 0.f && 0.f <= params[1];
  }
  return false;  // Sigmoid, HardSigmoid map 0 to a constant
}

struct Prune {
  std::vector<int64_t> keep;  // surviving channel indices
  Node* act = nullptr;        // separate activation node, if any
  Node* consumer = nullptr;
};

const char* weight_problem(const Value* w) {
  if (!w || !is_float32_constant(w)) return "weight is not a float32 constant";
  if (w->uses().size() != 1) return "weight is shared with another node";
  return nullptr;
}

class PruneDeadChannels final : public Pattern {
 public:
  explicit PruneDeadChannels(OpKind kind) : kind_(kind) {}
  std::string_view name() const override { return "prune_dead_channels"; }
  OpKind root() const override { return kind_; }

  MatchResult match(const Graph&, const Node& p) const override {
    NOT_APPLICABLE_IF(!is_float32_constant(p.input(1)) || p.input(1)->shape().size() < 3, "weight not constant");
    NOT_APPLICABLE_IF(p.input(2) && !is_float32_constant(p.input(2)), "bias not constant");
    const Tensor& wt = *p.input(1)->constant();
    int64_t co = wt.dim(0);
    // Read in place: this runs on every conv of every sweep, and most
    // weights have no zero row at all.
    const float* w = wt.data<float>();
    const Tensor* bt = p.input(2) ? p.input(2)->constant().get() : nullptr;
    int64_t per = co ? wt.numel() / co : 0;
    Prune pr;
    for (int64_t o = 0; o < co; ++o) {
      bool dead = !bt || bt->data<float>()[bt->numel() == 1 ? 0 : o] == 0.f;
      for (int64_t i = 0; dead && i < per; ++i) dead = w[o * per + i] == 0.f;
      if (!dead) pr.keep.push_back(o);
    }
    NOT_APPLICABLE_IF(static_cast<int64_t>(pr.keep.size()) == co, "no output channel is zero");
    NO_MATCH_IF(pr.keep.empty(), "every output channel is zero");
    NO_MATCH_IF(p.attr_int("group", 1) != 1, "the conv is grouped");
    if (const char* why = weight_problem(p.input(1))) NO_MATCH_IF(true, why);
    if (p.kind() == OpKind::kFusedConv) {
      NO_MATCH_IF(p.num_inputs() > 3 && p.input(3), "a residual is added to the zero channels");
      NO_MATCH_IF(!fused_activation_keeps_zero(p), "the fused activation does not map 0 to 0");
    }
    Value* v = p.output(0);
    NO_MATCH_IF(!single_use(v), "the output has other users or is a graph output");
    Node* next = v->uses()[0].node;
    if (next->kind() != OpKind::kConv && next->kind() != OpKind::kFusedConv) {
      NO_MATCH_IF(next->num_inputs() < 1 || next->input(0) != v || !activation_keeps_zero(*next),
                  "the output goes to ", next->describe(), ", not a Conv or an activation with act(0) = 0");
      NO_MATCH_IF(next->num_outputs() != 1 || !single_use(next->output(0)), "the activation output has other users");
      for (int i = 1; i < next->num_inputs(); ++i)
        NO_MATCH_IF(next->input(i) == v, "the activation reads the output twice");
      pr.act = next;
      next = next->output(0)->uses()[0].node;
    }
    NO_MATCH_IF(next->kind() != OpKind::kConv && next->kind() != OpKind::kFusedConv,
                "the consumer ", next->describe(), " is not a Conv");
    const Value* in = pr.act ? pr.act->output(0) : v;
    NO_MATCH_IF(next->input(0) != in, "the consumer reads the channels as a weight");
    NO_MATCH_IF(next->attr_int("group", 1) != 1, "the consumer conv is grouped");
    if (const char* why = weight_problem(next->input(1))) NO_MATCH_IF(true, "consumer ", why);
    NO_MATCH_IF(next->input(1)->shape().size() < 2 || next->input(1)->shape()[1] != co,
                "the consumer's input channels disagree");
    pr.consumer = next;
    Match m;
    m.nodes = {const_cast<Node*>(&p)};
    m.data = pr;
    return m;
  }

  void rewrite(Rewriter& rw, const Match& m) const override {
    const auto& pr = std::any_cast<const Prune&>(m.data);
    Node* p = m.nodes[0];
    Node* c = pr.consumer;
    int64_t kept = static_cast<int64_t>(pr.keep.size());

    // Producer: keep rows.
    Shape ws = p->input(1)->shape();
    std::vector<float> w = *float_values(p->input(1));
    int64_t per = static_cast<int64_t>(w.size()) / ws[0];
    std::vector<float> w2, b2;
    std::vector<float> b = p->input(2) ? *float_values(p->input(2)) : std::vector<float>();
    for (int64_t o : pr.keep) {
      w2.insert(w2.end(), w.begin() + o * per, w.begin() + (o + 1) * per);
      if (!b.empty()) b2.push_back(b.size() == 1 ? b[0] : b[o]);
    }
    Shape ws2 = ws;
    ws2[0] = kept;
    std::vector<Value*> pin = p->inputs();
    pin[1] = rw.add_constant(p->input(1)->name(), float_tensor(ws2, w2));
    if (!b.empty()) pin[2] = rw.add_constant(p->name() + "_bias", float_tensor({kept}, b2));

    // Consumer: keep input channels.
    Shape vs = c->input(1)->shape();
    std::vector<float> v = *float_values(c->input(1));
    int64_t cin = vs[1];
    int64_t ksize = static_cast<int64_t>(v.size()) / (vs[0] * cin);
    std::vector<float> v2;
    for (int64_t o = 0; o < vs[0]; ++o)
      for (int64_t i : pr.keep)
        v2.insert(v2.end(), v.begin() + (o * cin + i) * ksize, v.begin() + (o * cin + i + 1) * ksize);
    Shape vs2 = vs;
    vs2[1] = kept;
    std::vector<Value*> cin_values = c->inputs();
    cin_values[1] = rw.add_constant(c->input(1)->name(), float_tensor(vs2, v2));

    auto narrowed = [&](const Value* old) {
      Shape s;
      bool known = old->has_shape() && old->shape().size() >= 2;
      if (known) {
        s = old->shape();
        s[1] = kept;
      }
      return rw.add_value(old->name() + "_pruned", old->dtype(), known ? &s : nullptr);
    };
    Value* mid = narrowed(p->output(0));
    Value* act_out = pr.act ? narrowed(pr.act->output(0)) : nullptr;
    Value* y = c->output(0);

    std::string pname = p->name(), cname = c->name();
    OpKind pkind = p->kind(), ckind = c->kind();
    Attributes pattrs = p->attrs(), cattrs = c->attrs();
    if (pattrs.count("kernel_shape") == 0) pattrs["kernel_shape"] = Attribute::of_ints(Shape(ws.begin() + 2, ws.end()));
    cin_values[0] = pr.act ? act_out : mid;
    rw.remove(c);
    rw.add_node(ckind, cname, cin_values, {y}, cattrs);
    if (pr.act) {
      std::vector<Value*> ain = pr.act->inputs();
      ain[0] = mid;
      OpKind akind = pr.act->kind();
      std::string aname = pr.act->name();
      Attributes aattrs = pr.act->attrs();
      rw.remove(pr.act);
      rw.add_node(akind, aname, ain, {act_out}, aattrs);
    }
    rw.remove(p);
    rw.add_node(pkind, pname, pin, {mid}, pattrs);
  }

 private:
  OpKind kind_;
};

}  // namespace

std::unique_ptr<Pass> make_prune_dead_channels() {
  std::vector<std::unique_ptr<Pattern>> p;
  p.push_back(std::make_unique<PruneDeadChannels>(OpKind::kConv));
  p.push_back(std::make_unique<PruneDeadChannels>(OpKind::kFusedConv));
  return std::make_unique<PatternPass>("prune_dead_channels",
                                       "remove all-zero conv output channels and the consumer's matching inputs",
                                       std::move(p));
}

}  // namespace engine
