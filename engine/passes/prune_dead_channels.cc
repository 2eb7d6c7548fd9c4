// prune_dead_channels: conv output channels that are constant are removed,
// with everything that carries them, and their value moves into the biases
// of the convs that read them.
//
// After BN folding a channel whose BN scale was zero (network slimming,
// polarization pruning) is a conv output row with W[o] == 0: the constant
// b[o] (= beta[o]). Follow it through what preserves the channel index:
//   activations (Relu: relu(b) is 0 for b <= 0, the constant relu(b) else),
//   residual Adds (c1 + c2), depthwise convs (group o: in*sum(Wdw[o]) + bdw[o]),
//   max and average pools, global pools and Flatten (c; an average pool that
//   counts its zero padding keeps only c == 0)
// until it reaches the convs (group 1) and Gemms that mix channels. The
// tensors so coupled form a *component*: every tensor in it has the same
// channel axis, and a channel leaves all of them or none. Channel o is
// removed when
//   - it is a known constant c in every tensor of the component (every conv
//     producing one of them has a zero row o; both operands of a residual Add
//     agree), and
//   - every mixing reader either gets c == 0 (dead: dropping W_next[:, o] is
//     exact, zero padding included) or has no padding (then
//     Conv(x, W) = Conv(x without o, W[:, not o]) + c * sum(W[k, o, taps]), so
//     the constant moves into the bias exactly; with padding the border sees
//     0 instead of c and would differ).
//   Gemm(A, B, C) reads the channel as A's column: C[k] += c * B(o, k).
// The rewrite narrows the component's tensors in place (their producers drop
// rows, depthwise convs drop groups, readers drop columns) and folds the
// constants into the readers' biases.
// Preconditions (each a refusal with its reason): float32 constant weights,
// not shared; convs of group 1 or depthwise (one input channel per group,
// multiplier 1); Adds without broadcasting; nothing else reads or produces a
// tensor of the component (a Concat, a graph output, a Gemm producing it);
// not every channel is removed.
// Why: pruned BN channels cost their full compute until they are removed;
// removing them from both the producer and the consumers is what makes a
// slimmed network faster, and with residual blocks the channel is shared by
// a whole stage, which only a component-wide view can see.
#include <cmath>
#include <functional>
#include <limits>
#include <unordered_map>

#include "passes/evaluate.h"
#include "passes/pass.h"
#include "passes/util.h"

namespace engine {
namespace {

// A component of this size is not a residual stage any more; give up rather
// than spend the sweep on it.
constexpr size_t kMaxComponentValues = 4096;

bool is_conv(const Node* n) { return n && (n->kind() == OpKind::kConv || n->kind() == OpKind::kFusedConv); }
bool is_gemm(const Node* n) { return n && (n->kind() == OpKind::kGemm || n->kind() == OpKind::kFusedGemm); }

// Elementwise ops of one tensor input (other inputs scalar constants) that
// map a constant channel to a constant channel.
bool is_unary(OpKind k) {
  switch (k) {
    case OpKind::kRelu: case OpKind::kLeakyRelu: case OpKind::kClip: case OpKind::kSigmoid:
    case OpKind::kHardSigmoid: case OpKind::kHardSwish: case OpKind::kTanh: case OpKind::kGelu:
    case OpKind::kSoftplus: case OpKind::kSoftsign: case OpKind::kElu: case OpKind::kSelu:
    case OpKind::kMish: case OpKind::kErf: case OpKind::kNeg: case OpKind::kAbs: case OpKind::kIdentity:
      return true;
    default:
      return false;
  }
}

// A FusedConv's activation on one scalar; nullopt for one this pass does not
// know (then every channel counts as unknown).
std::optional<float> fused_activation(const Node& n, float x) {
  std::string act = n.attr_string("activation", "");
  auto p = n.attr_floats("activation_params");
  auto sigmoid = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };
  if (act.empty()) return x;
  if (act == "Relu") return x > 0.f ? x : 0.f;
  if (act == "LeakyRelu" && p.size() == 1) return x >= 0.f ? x : x * p[0];
  if (act == "Clip" && p.size() == 2) return std::min(std::max(x, p[0]), p[1]);
  if (act == "Sigmoid") return static_cast<float>(sigmoid(x));
  if (act == "HardSigmoid" && p.size() == 2) return std::min(1.f, std::max(0.f, p[0] * x + p[1]));
  if (act == "HardSwish") return x * std::min(1.f, std::max(0.f, x / 6.f + 0.5f));
  if (act == "SiLU") return static_cast<float>(x * sigmoid(x));
  if (act == "Gelu") return static_cast<float>(0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))));
  return std::nullopt;
}

enum class Kind { kConv, kDepthwise, kGemm, kElementwise };

struct Member {
  Node* node;
  Kind kind;
  bool rows = false;  // conv output 0 is in the component: drop its rows
  bool cols = false;  // conv/gemm input 0 is in the component: drop its columns
  // Convs: which weight rows are all zero, each row's sum, whether it pads.
  std::vector<char> zero;
  std::vector<float> sums;
  bool padded = false;
};

// Per-channel facts of one tensor of the component.
struct Channels {
  std::vector<float> value;
  std::vector<char> known;
};

struct Component {
  int64_t channels = 0;
  std::vector<Value*> values;  // discovery order; values[0] is the root conv's output
  std::unordered_map<const Value*, int> value_index;
  std::vector<Member> members;
  std::unordered_map<const Node*, int> member_index;
};

// Builds the component of `start`; returns the reason it cannot be pruned
// (structure only), or "" on success.
class ComponentBuilder {
 public:
  explicit ComponentBuilder(Component* c) : c_(c) {}

  std::string build(Value* start) {
    c_->channels = start->has_shape() && start->shape().size() >= 2 ? start->shape()[1] : -1;
    if (c_->channels <= 0) return str_cat("the channel count of '", start->name(), "' is unknown");
    std::string why = add_value(start);
    for (size_t i = 0; why.empty() && i < c_->values.size(); ++i) why = expand(c_->values[i]);
    return why;
  }

 private:
  std::string add_value(Value* v) {
    if (c_->value_index.count(v)) return "";
    if (c_->values.size() >= kMaxComponentValues)
      return str_cat("more than ", kMaxComponentValues, " tensors share the channels");
    if (v->dtype() != DType::kFloat32) return str_cat("'", v->name(), "' is not float32");
    if (!v->has_shape() || v->shape().size() < 2 || v->shape()[1] != c_->channels)
      return str_cat("'", v->name(), "' does not have the ", c_->channels, " channels on axis 1 (shape ",
                     v->has_shape() ? shape_str(v->shape()) : std::string("unknown"), ")");
    c_->value_index[v] = static_cast<int>(c_->values.size());
    c_->values.push_back(v);
    return "";
  }

  Member& member(Node* n, Kind k) {
    auto it = c_->member_index.find(n);
    if (it != c_->member_index.end()) return c_->members[it->second];
    c_->member_index[n] = static_cast<int>(c_->members.size());
    Member m;
    m.node = n;
    m.kind = k;
    c_->members.push_back(std::move(m));
    return c_->members.back();
  }

  static const char* weight_problem(const Value* w) {
    if (!w || !is_float32_constant(w)) return "is not a float32 constant";
    if (w->uses().size() != 1) return "is shared with another node";
    return nullptr;
  }

  // The producer and every reader of a tensor of the component.
  std::string expand(Value* v) {
    if (v->is_graph_output()) return str_cat("'", v->name(), "' is a graph output");
    Node* p = v->producer();
    if (!p) return str_cat("'", v->name(), "' is a graph input or a constant");
    for (int i = 0; i < p->num_outputs(); ++i)
      if (p->output(i) == v) {
        if (std::string why = visit(p, -1 - i); !why.empty()) return why;
      }
    for (const Use& u : v->uses())
      if (std::string why = visit(u.node, u.index); !why.empty()) return why;
    return "";
  }

  // `via`: the input index through which the component reaches `n`, or
  // -1 - k for its output k.
  std::string visit(Node* n, int via) {
    const std::string what = via >= 0 ? "read by " : "produced by ";
    if (is_conv(n)) {
      const Value* w = n->input(1);
      if (const char* why = weight_problem(w)) return str_cat("the weight of ", n->describe(), " ", why);
      if (w->shape().size() < 3) return str_cat(n->describe(), " has a weight of rank < 3");
      int64_t group = n->attr_int("group", 1);
      bool depthwise = group > 1 && w->shape()[0] == group && w->shape()[1] == 1;
      if (group != 1 && !depthwise)
        return str_cat("the channels are ", what, "grouped ", n->describe(), " (group ", group,
                       "): a channel cannot leave a group of several");
      if (n->num_inputs() > 2 && n->input(2) && !is_float32_constant(n->input(2)))
        return str_cat("the bias of ", n->describe(), " is not a float32 constant");
      if (via == 1 || via == 2) return str_cat(n->describe(), " reads the channels as its weight or bias");
      Value* z = n->num_inputs() > 3 ? n->input(3) : nullptr;
      if (depthwise) {
        member(n, Kind::kDepthwise);
        if (auto why = add_value(n->input(0)); !why.empty()) return why;
        if (auto why = add_value(n->output(0)); !why.empty()) return why;
        if (z) return add_value(z);
        return "";
      }
      Member& m = member(n, Kind::kConv);
      if (via == 0) {
        m.cols = true;
        return "";
      }
      m.rows = true;  // through its output or its residual input z
      if (auto why = add_value(n->output(0)); !why.empty()) return why;
      if (z) return add_value(z);
      return "";
    }
    if (is_gemm(n)) {
      if (via != 0) return str_cat("the channels are ", what, n->describe(), " other than as its input A");
      if (n->attr_int("transA", 0) != 0) return str_cat(n->describe(), " transposes A");
      if (n->attr_float("alpha", 1.f) != 1.f || n->attr_float("beta", 1.f) != 1.f)
        return str_cat(n->describe(), " has alpha or beta other than 1");
      const Value* b = n->input(1);
      if (const char* why = weight_problem(b)) return str_cat("the weight of ", n->describe(), " ", why);
      if (b->shape().size() != 2) return str_cat("the weight of ", n->describe(), " is not a matrix");
      if (n->num_inputs() > 2 && n->input(2)) {
        const Value* c = n->input(2);
        int64_t k = b->shape()[n->attr_int("transB", 0) ? 0 : 1];
        if (!is_float32_constant(c) || (c->constant()->numel() != 1 && c->constant()->numel() != k))
          return str_cat("the bias of ", n->describe(), " is not a float32 constant of 1 or ", k, " values");
      }
      member(n, Kind::kGemm).cols = true;
      return "";
    }
    if (is_unary(n->kind())) {
      if (via != 0 && via != -1) return str_cat("the channels are ", what, n->describe(), " as a parameter");
      for (int i = 1; i < n->num_inputs(); ++i) {
        const Value* in = n->input(i);
        if (in && (!in->is_constant() || in->constant()->numel() != 1))
          return str_cat(n->describe(), " has a parameter that is not a constant scalar");
      }
      member(n, Kind::kElementwise);
      if (auto why = add_value(n->input(0)); !why.empty()) return why;
      return add_value(n->output(0));
    }
    if (n->kind() == OpKind::kAdd) {
      if (n->num_inputs() != 2 || !same_shape(n->input(0), n->input(1)) || !same_shape(n->input(0), n->output(0)))
        return str_cat(n->describe(), " broadcasts: its operands and output differ in shape");
      member(n, Kind::kElementwise);
      for (Value* x : {n->input(0), n->input(1), n->output(0)})
        if (auto why = add_value(x); !why.empty()) return why;
      return "";
    }
    if (n->kind() == OpKind::kMaxPool || n->kind() == OpKind::kAveragePool) {
      if (via != 0 && via != -1) return str_cat("the channels are ", what, n->describe(), " as its indices");
      if (n->num_outputs() > 1 && n->output(1)) return str_cat(n->describe(), " also returns indices");
      member(n, Kind::kElementwise);
      if (auto why = add_value(n->input(0)); !why.empty()) return why;
      return add_value(n->output(0));
    }
    if (n->kind() == OpKind::kGlobalAveragePool || n->kind() == OpKind::kGlobalMaxPool ||
        (n->kind() == OpKind::kFlatten && n->attr_int("axis", 1) == 1 && n->input(0)->has_shape() &&
         shape_numel(Shape(n->input(0)->shape().begin() + 2, n->input(0)->shape().end())) == 1)) {
      member(n, Kind::kElementwise);
      if (auto why = add_value(n->input(0)); !why.empty()) return why;
      return add_value(n->output(0));
    }
    return str_cat("the channels are ", what, n->describe(), ", which this pass cannot narrow");
  }

  Component* c_;
};

std::vector<float> row_sums(const Tensor& w) {
  int64_t rows = w.dim(0), per = rows ? w.numel() / rows : 0;
  std::vector<float> s(rows, 0.f);
  for (int64_t o = 0; o < rows; ++o)
    for (int64_t i = 0; i < per; ++i) s[o] += w.data<float>()[o * per + i];
  return s;
}

std::vector<char> zero_rows(const Tensor& w) {
  int64_t rows = w.dim(0), per = rows ? w.numel() / rows : 0;
  std::vector<char> z(rows, 1);
  for (int64_t o = 0; o < rows; ++o)
    for (int64_t i = 0; z[o] && i < per; ++i) z[o] = w.data<float>()[o * per + i] == 0.f;
  return z;
}

bool has_padding(const Node& conv) {
  std::string why;
  auto geo = conv_geometry(conv, &why);
  if (!geo) return true;
  for (int64_t p : geo->pads)
    if (p != 0) return true;
  return false;
}

// AveragePool counting pad positions (count_include_pad=1 with pads).
bool averages_padding(const Node& pool) {
  if (pool.attr_int("count_include_pad", 0) == 0) return false;
  std::string ap = pool.attr_string("auto_pad", "NOTSET");
  if (ap == "SAME_UPPER" || ap == "SAME_LOWER") return true;
  for (int64_t p : pool.attr_ints("pads"))
    if (p != 0) return true;
  return false;
}

float bias_at(const Node& n, int64_t o) {
  if (n.num_inputs() < 3 || !n.input(2)) return 0.f;
  const Tensor& b = *n.input(2)->constant();
  return b.data<float>()[b.numel() == 1 ? 0 : o];
}

// Per-channel constants of every tensor of the component.
class ChannelValues {
 public:
  explicit ChannelValues(const Component& c) : c_(c), state_(c.values.size(), 0), ch_(c.values.size()) {}

  const Channels& of(int vi) {
    if (state_[vi] == 2) return ch_[vi];
    ENGINE_CHECK(state_[vi] == 0, "prune_dead_channels: a cycle through '", c_.values[vi]->name(), "'");
    state_[vi] = 1;
    compute(vi);
    state_[vi] = 2;
    return ch_[vi];
  }
  const Channels& of(const Value* v) { return of(c_.value_index.at(v)); }

 private:
  void compute(int vi) {
    const Value* v = c_.values[vi];
    int64_t C = c_.channels;
    Channels out{std::vector<float>(C, 0.f), std::vector<char>(C, 0)};
    const Node* n = v->producer();
    const Member& m = c_.members[c_.member_index.at(n)];
    if (m.kind == Kind::kConv || m.kind == Kind::kDepthwise) {
      const Channels* in = m.kind == Kind::kDepthwise ? &of(n->input(0)) : nullptr;
      for (int64_t o = 0; o < C; ++o) {
        float b = bias_at(*n, o);
        if (m.zero[o]) {
          out.value[o] = b, out.known[o] = 1;
        } else if (in && in->known[o] && (in->value[o] == 0.f || !m.padded)) {
          out.value[o] = in->value[o] * m.sums[o] + b, out.known[o] = 1;
        }
      }
      if (n->num_inputs() > 3 && n->input(3)) {
        const Channels& z = of(n->input(3));
        for (int64_t o = 0; o < C; ++o) {
          out.known[o] = out.known[o] && z.known[o];
          out.value[o] += z.value[o];
        }
      }
      if (n->kind() == OpKind::kFusedConv)
        for (int64_t o = 0; o < C; ++o) {
          if (!out.known[o]) continue;
          auto a = fused_activation(*n, out.value[o]);
          out.known[o] = a.has_value();
          out.value[o] = a.value_or(0.f);
        }
    } else if (n->kind() == OpKind::kAdd) {
      const Channels& a = of(n->input(0));
      const Channels& b = of(n->input(1));
      for (int64_t o = 0; o < C; ++o) {
        out.known[o] = a.known[o] && b.known[o];
        out.value[o] = a.value[o] + b.value[o];
      }
    } else if (is_unary(n->kind())) {
      out = of(n->input(0));
      apply_unary(*n, &out);
    } else if (n->kind() == OpKind::kAveragePool && averages_padding(*n)) {
      // The padded border averages c with zeros: constant only for c == 0.
      out = of(n->input(0));
      for (int64_t o = 0; o < C; ++o) out.known[o] = out.known[o] && out.value[o] == 0.f;
    } else {  // MaxPool (pads are -inf), AveragePool, global pools, Flatten: c stays c
      out = of(n->input(0));
    }
    ch_[vi] = std::move(out);
  }

  // The node's own CPU kernel on the known channels (so the folded constant
  // is what the engine would have computed).
  static void apply_unary(const Node& n, Channels* ch) {
    std::vector<float> xs;
    for (size_t o = 0; o < ch->known.size(); ++o)
      if (ch->known[o]) xs.push_back(ch->value[o]);
    if (xs.empty()) return;
    auto fail = [&] { std::fill(ch->known.begin(), ch->known.end(), 0); };
    if (!can_evaluate(n.kind())) return fail();
    Tensor t = float_tensor({static_cast<int64_t>(xs.size())}, xs);
    std::vector<ValueInfo> infos(n.num_inputs());
    std::vector<const ValueInfo*> ptrs(n.num_inputs(), nullptr);
    std::vector<const Tensor*> tensors(n.num_inputs(), nullptr);
    infos[0] = ValueInfo::of(DType::kFloat32, t.shape());
    infos[0].value = nullptr;
    ptrs[0] = &infos[0];
    tensors[0] = &t;
    for (int i = 1; i < n.num_inputs(); ++i) {
      const Value* v = n.input(i);
      if (!v) continue;
      infos[i] = ValueInfo::of(v->dtype(), v->shape());
      infos[i].value = v->constant();
      ptrs[i] = &infos[i];
      tensors[i] = v->constant().get();
    }
    std::vector<std::shared_ptr<const Tensor>> r;
    try {
      r = evaluate_node(n, tensors, infer_outputs(n, ptrs));
    } catch (const Error&) {
      return fail();
    }
    if (r.empty() || !r[0] || r[0]->dtype() != DType::kFloat32 || r[0]->numel() != static_cast<int64_t>(xs.size()))
      return fail();
    size_t k = 0;
    for (size_t o = 0; o < ch->known.size(); ++o)
      if (ch->known[o]) ch->value[o] = r[0]->data<float>()[k++];
  }

  const Component& c_;
  std::vector<int> state_;
  std::vector<Channels> ch_;
};

struct Plan {
  Component comp;
  std::vector<int64_t> keep, drop;
  std::vector<Channels> values;  // per component tensor
};

// Why channel o cannot be removed ("" if it can).
std::string channel_problem(const Plan& pl, int64_t o) {
  const Component& c = pl.comp;
  for (size_t vi = 0; vi < c.values.size(); ++vi) {
    if (pl.values[vi].known[o]) continue;
    const Value* v = c.values[vi];
    const Node* p = v->producer();
    const Member& m = c.members[c.member_index.at(p)];
    if (m.kind == Kind::kConv && !m.zero[o])
      return str_cat("channel ", o, " is not constant in every tensor that shares it: ", p->describe(),
                     " computes it into '", v->name(), "' (a channel shared through residual Adds is removed "
                     "only where every producer agrees)");
  }
  for (size_t vi = 0; vi < c.values.size(); ++vi)
    if (!pl.values[vi].known[o])
      return str_cat("channel ", o, " of '", c.values[vi]->name(), "' is not a constant");
  for (const Member& m : c.members) {
    if (!m.cols || m.kind != Kind::kConv) continue;
    float v = pl.values[c.value_index.at(m.node->input(0))].value[o];
    if (v != 0.f && m.padded)
      return str_cat("channel ", o, " is the constant ", v, " (not 0) where padded ", m.node->describe(),
                     " reads it: the border would see 0 instead (only unpadded consumers, such as 1x1 convs, "
                     "absorb a constant channel)");
  }
  return "";
}

// The given rows of a weight (first axis), in order.
std::vector<float> gather_rows(const Tensor& w, const std::vector<int64_t>& rows) {
  int64_t per = w.dim(0) ? w.numel() / w.dim(0) : 0;
  std::vector<float> out;
  out.reserve(rows.size() * per);
  for (int64_t o : rows) out.insert(out.end(), w.data<float>() + o * per, w.data<float>() + (o + 1) * per);
  return out;
}

class PruneDeadChannels final : public Pattern {
 public:
  explicit PruneDeadChannels(OpKind kind) : kind_(kind) {}
  std::string_view name() const override { return "prune_dead_channels"; }
  OpKind root() const override { return kind_; }

  MatchResult match(const Graph&, const Node& p) const override {
    NOT_APPLICABLE_IF(!is_float32_constant(p.input(1)) || p.input(1)->shape().size() < 3, "weight not constant");
    // Read in place first: this runs on every conv of every sweep, and most
    // weights have no zero row at all.
    std::vector<char> zero = zero_rows(*p.input(1)->constant());
    int64_t zeros = std::count(zero.begin(), zero.end(), 1);
    NOT_APPLICABLE_IF(zeros == 0, "no output channel has all-zero weights");
    NOT_APPLICABLE_IF(!p.output(0), "no output");

    Plan pl;
    ComponentBuilder builder(&pl.comp);
    std::string why = builder.build(p.output(0));
    NO_MATCH_IF(!why.empty(), why);
    for (Member& mem : pl.comp.members) {
      if (mem.kind != Kind::kConv && mem.kind != Kind::kDepthwise) continue;
      const Tensor& w = *mem.node->input(1)->constant();
      mem.padded = has_padding(*mem.node);
      if (mem.rows || mem.kind == Kind::kDepthwise) mem.zero = zero_rows(w);
      if (mem.kind == Kind::kDepthwise) mem.sums = row_sums(w);
      const Value* b = mem.node->num_inputs() > 2 ? mem.node->input(2) : nullptr;
      NO_MATCH_IF(b && b->constant()->numel() != 1 && b->constant()->numel() != w.dim(0),
                  "the bias of ", mem.node->describe(), " has ", b->constant()->numel(), " values for ", w.dim(0),
                  " output channels");
    }
    ChannelValues cv(pl.comp);
    for (size_t vi = 0; vi < pl.comp.values.size(); ++vi) pl.values.push_back(cv.of(static_cast<int>(vi)));
    std::string first_problem;
    for (int64_t o = 0; o < pl.comp.channels; ++o) {
      std::string problem = channel_problem(pl, o);
      if (problem.empty()) {
        pl.drop.push_back(o);
      } else {
        pl.keep.push_back(o);
        if (first_problem.empty() && o < static_cast<int64_t>(zero.size()) && zero[o]) first_problem = problem;
      }
    }
    NO_MATCH_IF(pl.drop.empty(), first_problem.empty() ? "no channel is constant everywhere" : first_problem);
    NO_MATCH_IF(pl.keep.empty(), "every channel of '", p.output(0)->name(), "' is constant");
    Match m;
    m.nodes = {const_cast<Node*>(&p)};
    m.data = std::move(pl);
    return m;
  }

  void rewrite(Rewriter& rw, const Match& m) const override {
    const auto& pl = std::any_cast<const Plan&>(m.data);
    const Component& c = pl.comp;
    const int64_t kept = static_cast<int64_t>(pl.keep.size());
    // Constants at the input of each reader, for the channels that go.
    auto dropped_values = [&](const Value* v) {
      std::vector<float> out;
      for (int64_t o : pl.drop) out.push_back(pl.values[c.value_index.at(v)].value[o]);
      return out;
    };
    for (const Member& mem : c.members) {
      Node* n = mem.node;
      if (mem.kind == Kind::kElementwise) {
        rw.changed(n);
        continue;
      }
      const Tensor& w = *n->input(1)->constant();
      const Tensor* bt = n->num_inputs() > 2 && n->input(2) ? n->input(2)->constant().get() : nullptr;
      if (mem.kind == Kind::kGemm) {
        // A: [N, C] x B: [C, K] (transB=0) or [K, C] (transB=1).
        bool tb = n->attr_int("transB", 0) != 0;
        int64_t K = tb ? w.dim(0) : w.dim(1), C = tb ? w.dim(1) : w.dim(0);
        auto at = [&](int64_t o, int64_t k) { return w.data<float>()[tb ? k * C + o : o * K + k]; };
        std::vector<float> b2(K, 0.f), w2;
        for (int64_t k = 0; k < K; ++k) b2[k] = bt ? bt->data<float>()[bt->numel() == 1 ? 0 : k] : 0.f;
        std::vector<float> cs = dropped_values(n->input(0));
        for (int64_t k = 0; k < K; ++k)
          for (size_t j = 0; j < pl.drop.size(); ++j) b2[k] += cs[j] * at(pl.drop[j], k);
        if (tb) {
          for (int64_t k = 0; k < K; ++k)
            for (int64_t o : pl.keep) w2.push_back(at(o, k));
        } else {
          for (int64_t o : pl.keep)
            for (int64_t k = 0; k < K; ++k) w2.push_back(at(o, k));
        }
        Shape ws = tb ? Shape{K, kept} : Shape{kept, K};
        rw.set_input(n, 1, rw.add_constant(n->input(1)->name(), float_tensor(ws, w2)));
        Value* bias = rw.add_constant(n->name() + "_bias", float_tensor({K}, b2));
        if (n->num_inputs() > 2) {
          rw.set_input(n, 2, bias);
        } else {
          std::vector<Value*> ins = n->inputs();
          ins.push_back(bias);
          rw.set_inputs(n, ins);
        }
        rw.changed(n);
        continue;
      }
      // Convs. Rows: all of them, or the kept ones when the output narrows.
      const Shape& ws = w.shape();
      int64_t rows = ws[0], cin = ws[1], taps = rows && cin ? w.numel() / (rows * cin) : 0;
      std::vector<int64_t> row_ids;
      bool narrow_rows = mem.rows || mem.kind == Kind::kDepthwise;
      if (narrow_rows) {
        row_ids = pl.keep;
      } else {
        for (int64_t o = 0; o < rows; ++o) row_ids.push_back(o);
      }
      std::vector<float> b2;
      for (int64_t o : row_ids) b2.push_back(bt ? bt->data<float>()[bt->numel() == 1 ? 0 : o] : 0.f);
      std::vector<float> w2;
      Shape ws2 = ws;
      if (mem.cols) {
        // Group-1 reader: drop input columns, fold their constants.
        std::vector<float> cs = dropped_values(n->input(0));
        for (size_t r = 0; r < row_ids.size(); ++r) {
          const float* row = w.data<float>() + row_ids[r] * cin * taps;
          for (size_t j = 0; j < pl.drop.size(); ++j) {
            if (cs[j] == 0.f) continue;
            float s = 0.f;
            for (int64_t t = 0; t < taps; ++t) s += row[pl.drop[j] * taps + t];
            b2[r] += cs[j] * s;
          }
          for (int64_t i : pl.keep) w2.insert(w2.end(), row + i * taps, row + (i + 1) * taps);
        }
        ws2[1] = kept;
      } else {
        w2 = gather_rows(w, row_ids);
      }
      ws2[0] = static_cast<int64_t>(row_ids.size());
      rw.set_input(n, 1, rw.add_constant(n->input(1)->name(), float_tensor(ws2, w2)));
      bool need_bias = bt != nullptr;
      for (float b : b2) need_bias = need_bias || b != 0.f;
      if (need_bias) {
        Value* bias = rw.add_constant(n->name() + "_bias", float_tensor({ws2[0]}, b2));
        if (n->num_inputs() > 2) {
          rw.set_input(n, 2, bias);
        } else {
          std::vector<Value*> ins = n->inputs();
          ins.push_back(bias);
          rw.set_inputs(n, ins);
        }
      }
      if (mem.kind == Kind::kDepthwise) rw.set_attr(n, "group", Attribute::of_int(kept));
      if (n->has_attr("kernel_shape") == false)
        rw.set_attr(n, "kernel_shape", Attribute::of_ints(Shape(ws.begin() + 2, ws.end())));
      rw.changed(n);
    }
    for (Value* v : c.values) {
      Shape s = v->shape();
      s[1] = kept;
      rw.narrow(v, s);
    }
  }

 private:
  OpKind kind_;
};

}  // namespace

std::unique_ptr<Pass> make_prune_dead_channels() {
  std::vector<std::unique_ptr<Pattern>> p;
  p.push_back(std::make_unique<PruneDeadChannels>(OpKind::kConv));
  p.push_back(std::make_unique<PruneDeadChannels>(OpKind::kFusedConv));
  return std::make_unique<PatternPass>(
      "prune_dead_channels",
      "remove constant conv output channels (zero weights: dead behind Relu, or folded into unpadded readers' "
      "biases), across residual Adds and depthwise convs",
      std::move(p));
}

}  // namespace engine
