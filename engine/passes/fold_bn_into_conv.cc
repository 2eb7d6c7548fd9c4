// fold_bn_into_conv: BatchNorm, and any per-channel affine by constants, is
// absorbed by the linear op next to it.
//
//   BN(x; g, b, mu, var, eps)  is the affine  x*s + t,  s = g / sqrt(var + eps),
//                                                      t = b - mu * s   (per channel c)
//   Mul/Add/Sub/Div(x, k), k constant along one axis (or a scalar), are affines too.
//
//   backward, into the producer (always exact up to rounding):
//     Conv(x, W, b) -> affine        ==>  Conv(x, W * s[o], b * s + t)        (1-D/2-D/3-D, grouped)
//     Gemm(A, B, C) -> affine(axis 1) ==> Gemm(A, B * s[n], beta*C*s + t)
//     MatMul(A, B) -> affine(last)   ==>  MatMul(A, B * s[n])  (a shift needs 2-D A: Gemm(A, B*s, t))
//     Add(MatMul(A, B), c) -> affine ==>  Add(MatMul(A, B * s[n]), c * s + t)   (nn.Linear on N-D input)
//   forward, into consuming convolutions (a shift is exact only without
//   padding: zero padding of the shifted input is not the shift of zero
//   padding; a pure scale is exact with any padding, s * 0 = 0):
//     affine -> Conv(., W, b), pads 0  ==>  Conv(x, W * s[i], b + sum_{i,k} W[o,i,k] * t[i])
//     scale  -> Conv(., W, b)          ==>  Conv(x, W * s[i], b)
//   (the affine a BN, a ChannelAffine, or a Mul/Add/Sub/Div by a constant
//   scalar or [C, 1, ...] tensor: SkipInit/Fixup scalars and input
//   normalization in front of a conv)
//     affine -> Gemm(., B, C), transA 0 ==> Gemm(x, s[k] * B, beta*C + alpha * t @ B)
//   otherwise:
//     BN(x)                          ==>  ChannelAffine(x, s, t)   (domain pyengine)
//     two consecutive channel affines ==>  one ChannelAffine
//
// Preconditions: parameters and weights constant float32; the weight not
// shared with another node (it would have to be duplicated); the value between
// the two ops read only by them and not a graph output; the affine varies
// along the op's output-channel axis (input-channel axis, forward); BN in
// inference mode with its statistics outputs unused.
// Why: BN after every conv is a full pass over the activation; folded it
// costs nothing. Lowering the rest to ChannelAffine lets one rule absorb BN,
// layer scales (ConvNeXt), SkipInit/Fixup scalars and exported bias Adds
// alike (tract's canonicalize-then-fold).
#include <cmath>

#include "passes/pass.h"
#include "passes/util.h"

namespace engine {
namespace {

// x * s + t along `axis` of x (s, t of length C), or along every element
// (axis -1, s and t of length 1).
struct Affine {
  Value* x = nullptr;
  int64_t axis = -1;
  int64_t rank = -1;
  std::vector<float> s, t;
  float scale(int64_t c) const { return s.size() == 1 ? s[0] : s[c]; }
  float shift(int64_t c) const { return t.size() == 1 ? t[0] : t[c]; }
  bool per_tensor() const { return axis < 0; }
  bool has_shift() const {
    for (float v : t)
      if (v != 0.f) return true;
    return false;
  }
  int64_t channels() const { return per_tensor() ? -1 : static_cast<int64_t>(s.size()); }
};

bool is_affine_kind(OpKind k) {
  return k == OpKind::kBatchNormalization || k == OpKind::kChannelAffine || k == OpKind::kMul || k == OpKind::kAdd ||
         k == OpKind::kSub || k == OpKind::kDiv;
}

int64_t rank_of(const Value* v) {
  if (v->has_shape()) return static_cast<int64_t>(v->shape().size());
  const Node* p = v->producer();
  if (!p) return -1;
  if ((p->kind() == OpKind::kConv || p->kind() == OpKind::kFusedConv) && p->input(1) && p->input(1)->has_shape())
    return static_cast<int64_t>(p->input(1)->shape().size());
  if (p->kind() == OpKind::kGemm || p->kind() == OpKind::kFusedGemm) return 2;
  return -1;
}

// The affine a node computes on its data input, or nullopt with *why.
std::optional<Affine> affine_of(const Node& n, std::string* why) {
  Affine a;
  switch (n.kind()) {
    case OpKind::kBatchNormalization: {
      if (n.attr_int("training_mode", 0) != 0) {
        *why = "BatchNormalization is in training mode";
        return std::nullopt;
      }
      for (int o = 1; o < n.num_outputs(); ++o)
        if (n.output(o) && (!n.output(o)->uses().empty() || n.output(o)->is_graph_output())) {
          *why = "BatchNormalization's running statistics outputs are used";
          return std::nullopt;
        }
      auto g = float_values(n.input(1)), b = float_values(n.input(2)), mu = float_values(n.input(3)),
           var = float_values(n.input(4));
      if (!g || !b || !mu || !var) {
        *why = "BatchNormalization parameters are not constant";
        return std::nullopt;
      }
      size_t c = g->size();
      if (b->size() != c || mu->size() != c || var->size() != c) {
        *why = "BatchNormalization parameters have different lengths";
        return std::nullopt;
      }
      double eps = n.attr_float("epsilon", 1e-5f);
      a.s.resize(c);
      a.t.resize(c);
      for (size_t i = 0; i < c; ++i) {
        double s = (*g)[i] / std::sqrt(static_cast<double>((*var)[i]) + eps);
        a.s[i] = static_cast<float>(s);
        a.t[i] = static_cast<float>((*b)[i] - (*mu)[i] * s);
      }
      a.x = n.input(0);
      a.axis = 1;
      a.rank = rank_of(a.x);
      return a;
    }
    case OpKind::kChannelAffine: {
      auto s = float_values(n.input(1));
      auto t = n.num_inputs() > 2 && n.input(2) ? float_values(n.input(2)) : std::optional<std::vector<float>>();
      if (!s || (n.num_inputs() > 2 && n.input(2) && !t)) {
        *why = "ChannelAffine parameters are not constant";
        return std::nullopt;
      }
      a.s = *s;
      a.t = t ? *t : std::vector<float>(s->size(), 0.f);
      a.x = n.input(0);
      a.axis = 1;
      a.rank = rank_of(a.x);
      return a;
    }
    case OpKind::kMul:
    case OpKind::kAdd:
    case OpKind::kSub:
    case OpKind::kDiv: {
      if (n.num_inputs() != 2 || !n.input(0) || !n.input(1)) return std::nullopt;
      int ci = is_float32_constant(n.input(1)) ? 1 : is_float32_constant(n.input(0)) ? 0 : -1;
      if (ci < 0 || n.input(1 - ci)->is_constant()) {
        *why = "no constant operand";
        return std::nullopt;
      }
      if (ci == 0 && n.kind() == OpKind::kDiv) {
        *why = "divides a constant by the input";
        return std::nullopt;
      }
      a.x = n.input(1 - ci);
      if (a.x->dtype() != DType::kFloat32 && a.x->dtype() != DType::kUndefined) {
        *why = "not float32";
        return std::nullopt;
      }
      a.rank = rank_of(a.x);
      const Value* k = n.input(ci);
      const Shape& ks = k->shape();
      if (a.rank < 0) {
        *why = "the input's rank is unknown";
        return std::nullopt;
      }
      if (static_cast<int64_t>(ks.size()) > a.rank) {
        *why = "the constant broadcasts the input to a higher rank";
        return std::nullopt;
      }
      int64_t offset = a.rank - static_cast<int64_t>(ks.size());
      for (size_t d = 0; d < ks.size(); ++d) {
        if (ks[d] == 1) continue;
        int64_t axis = offset + static_cast<int64_t>(d);
        if (a.axis >= 0) {
          *why = "the constant varies along more than one axis";
          return std::nullopt;
        }
        if (a.x->has_shape() && a.x->shape()[axis] >= 0 && a.x->shape()[axis] != ks[d]) {
          *why = "the constant broadcasts the input";
          return std::nullopt;
        }
        a.axis = axis;
      }
      std::vector<float> kv = *float_values(k);
      size_t c = kv.size();
      switch (n.kind()) {
        case OpKind::kMul: a.s = kv; a.t.assign(c, 0.f); break;
        case OpKind::kAdd: a.s.assign(c, 1.f); a.t = kv; break;
        case OpKind::kSub:
          if (ci == 1) {
            a.s.assign(c, 1.f);
            a.t.resize(c);
            for (size_t i = 0; i < c; ++i) a.t[i] = -kv[i];
          } else {
            a.s.assign(c, -1.f);
            a.t = kv;
          }
          break;
        default:  // Div(x, k)
          a.s.resize(c);
          for (size_t i = 0; i < c; ++i) {
            if (kv[i] == 0.f) {
              *why = "divides by zero";
              return std::nullopt;
            }
            a.s[i] = 1.f / kv[i];
          }
          a.t.assign(c, 0.f);
      }
      return a;
    }
    default:
      *why = "not an affine op";
      return std::nullopt;
  }
}

// Composition: first a, then b (both on the same axis, or per-tensor).
Affine compose(const Affine& a, const Affine& b, int64_t channels) {
  Affine r;
  r.x = a.x;
  r.axis = a.per_tensor() ? b.axis : a.axis;
  r.rank = a.rank;
  int64_t c = r.axis < 0 ? 1 : channels;
  r.s.resize(c);
  r.t.resize(c);
  for (int64_t i = 0; i < c; ++i) {
    r.s[i] = a.scale(i) * b.scale(i);
    r.t[i] = a.shift(i) * b.scale(i) + b.shift(i);
  }
  return r;
}

// A channel count consistent with the affine (per-tensor affines take the
// op's); false when they disagree.
bool channels_agree(const Affine& a, int64_t channels) {
  return a.per_tensor() || a.channels() == channels;
}

std::vector<float> weights(const Value* v) { return *float_values(v); }

// --- backward fold --------------------------------------------------------

enum class TargetKind { kConv, kGemm, kMatMul, kLinear, kAffine };

struct BackwardFold {
  TargetKind kind;
  Affine affine;       // the root's affine (composed with the linear Add's for kLinear)
  Node* target;        // Conv / Gemm / MatMul / the Add of kLinear / the inner affine
  Node* matmul;        // kLinear: the MatMul
  int64_t channels;
};

// Conv-like producer whose weight may be rewritten.
const char* weight_problem(const Value* w) {
  if (!w || !w->is_constant()) return "the weight is not constant";
  if (w->dtype() != DType::kFloat32) return "the weight is not float32";
  if (w->uses().size() != 1) return "the weight is shared with another node";
  return nullptr;
}

MatchResult fail_with(bool loud, std::string reason) { return MatchResult::no_match(std::move(reason), !loud); }

class FoldIntoProducer final : public Pattern {
 public:
  explicit FoldIntoProducer(OpKind kind) : kind_(kind) {}
  std::string_view name() const override { return "fold_into_producer"; }
  OpKind root() const override { return kind_; }

  MatchResult match(const Graph&, const Node& n) const override {
    // BN and ChannelAffine are expected to fold: say why they do not. A Mul
    // or Add is usually not an affine at all: stay quiet unless explaining.
    bool loud = kind_ == OpKind::kBatchNormalization || kind_ == OpKind::kChannelAffine;
    std::string why;
    auto a = affine_of(n, &why);
    if (!a) return fail_with(loud && why != "no constant operand", why);
    Node* p = producer_of(a->x);
    if (!p) return fail_with(loud, str_cat("input '", a->x->name(), "' is not computed by a node"));
    const char* pname = p->op_type().c_str();
    if (!single_use(a->x))
      return fail_with(loud || p->kind() == OpKind::kConv || p->kind() == OpKind::kGemm,
                       str_cat("the ", pname, " output '", a->x->name(), "' has other users or is a graph output"));
    switch (p->kind()) {
      case OpKind::kConv:
      case OpKind::kFusedConv:
        return match_conv(n, *a, p);
      case OpKind::kGemm:
        return match_gemm(n, *a, p);
      case OpKind::kMatMul:
        return match_matmul(n, *a, p, loud);
      case OpKind::kAdd: {
        std::string inner_why;
        auto bias = affine_of(*p, &inner_why);
        if (bias && is_op(producer_of(bias->x), OpKind::kMatMul)) return match_linear(n, *a, p, loud);
        return match_affine_chain(n, *a, p, loud);
      }
      default:
        return match_affine_chain(n, *a, p, loud);
    }
  }

  void rewrite(Rewriter& rw, const Match& m) const override {
    const auto& f = std::any_cast<const BackwardFold&>(m.data);
    Node* root = m.nodes[0];
    Value* y = root->output(0);
    switch (f.kind) {
      case TargetKind::kConv: rewrite_conv(rw, root, f, y); break;
      case TargetKind::kGemm: rewrite_gemm(rw, root, f, y); break;
      case TargetKind::kMatMul: rewrite_matmul(rw, root, f, y); break;
      case TargetKind::kLinear: rewrite_linear(rw, root, f, y); break;
      case TargetKind::kAffine: rewrite_affine(rw, root, f, y); break;
    }
  }

 private:
  static MatchResult found(const Node& n, Node* p, const Affine& a, TargetKind kind, int64_t channels) {
    NO_MATCH_IF(!channels_agree(a, channels), "the affine has ", a.channels(), " channels, the ", p->op_type(), " ",
                channels);
    BackwardFold f;
    f.kind = kind;
    f.affine = a;
    f.target = p;
    f.matmul = nullptr;
    f.channels = channels;
    Match m;
    m.nodes = {const_cast<Node*>(&n), p};
    m.data = f;
    return m;
  }

  static MatchResult match_conv(const Node& n, const Affine& a, Node* p) {
    if (p->kind() == OpKind::kFusedConv) {
      NO_MATCH_IF(!p->attr_string("activation", "").empty(), "the FusedConv applies an activation");
      NO_MATCH_IF(p->num_inputs() > 3 && p->input(3), "the FusedConv adds a residual");
    }
    if (const char* w = weight_problem(p->input(1))) return fail_with(true, str_cat(p->op_type(), ": ", w));
    NO_MATCH_IF(p->input(2) && !is_float32_constant(p->input(2)), "the conv bias is not constant");
    NO_MATCH_IF(p->input(1)->shape().size() < 3, "the conv weight rank is below 3");
    int64_t rank = static_cast<int64_t>(p->input(1)->shape().size());
    NO_MATCH_IF(!a.per_tensor() && (a.axis != 1 || a.rank != rank), "the affine is not along the conv's channel axis");
    return found(n, p, a, TargetKind::kConv, p->input(1)->shape()[0]);
  }

  static MatchResult match_gemm(const Node& n, const Affine& a, Node* p) {
    if (const char* w = weight_problem(p->input(1))) return fail_with(true, str_cat("Gemm: ", w));
    NO_MATCH_IF(p->input(2) && !is_float32_constant(p->input(2)), "the Gemm bias is not constant");
    NO_MATCH_IF(!a.per_tensor() && a.axis != 1, "the affine is not along the Gemm's output features");
    const Shape& bs = p->input(1)->shape();
    NO_MATCH_IF(bs.size() != 2, "Gemm weight is not 2-D");
    return found(n, p, a, TargetKind::kGemm, p->attr_int("transB", 0) ? bs[0] : bs[1]);
  }

  static MatchResult match_matmul(const Node& n, const Affine& a, Node* p, bool loud) {
    if (const char* w = weight_problem(p->input(1))) return fail_with(loud, str_cat("MatMul: ", w));
    const Shape& bs = p->input(1)->shape();
    NO_MATCH_IF(bs.size() != 2, "MatMul weight is not 2-D");
    NO_MATCH_IF(!a.per_tensor() && a.axis != a.rank - 1, "the affine is not along the MatMul's output features");
    int64_t arank = rank_of(p->input(0));
    if (a.has_shift() && arank != 2)
      return fail_with(loud, str_cat("a MatMul on a rank-", arank, " input has no bias to take the shift"));
    return found(n, p, a, TargetKind::kMatMul, bs[1]);
  }

  // Add(MatMul(A, B), c) -> root affine.
  MatchResult match_linear(const Node& n, const Affine& a, Node* add, bool loud) const {
    std::string why;
    auto bias = affine_of(*add, &why);
    Node* mm = producer_of(bias->x);
    NO_MATCH_IF(!single_use(bias->x), "the MatMul output has other users");
    if (const char* w = weight_problem(mm->input(1))) return fail_with(loud, str_cat("MatMul: ", w));
    const Shape& bs = mm->input(1)->shape();
    NO_MATCH_IF(bs.size() != 2, "MatMul weight is not 2-D");
    int64_t last = bias->rank - 1;
    NO_MATCH_IF(!bias->per_tensor() && bias->axis != last, "the bias is not along the MatMul's output features");
    NO_MATCH_IF(!a.per_tensor() && a.axis != last, "the affine is not along the MatMul's output features");
    int64_t channels = bs[1];
    NO_MATCH_IF(!channels_agree(a, channels) || !channels_agree(*bias, channels), "channel counts disagree");
    BackwardFold f;
    f.kind = TargetKind::kLinear;
    f.affine = compose(*bias, a, channels);
    f.affine.axis = last;
    f.target = add;
    f.matmul = mm;
    f.channels = channels;
    Match m;
    m.nodes = {const_cast<Node*>(&n), add, mm};
    m.data = f;
    return m;
  }

  // affine -> affine, both along axis 1 of the same value: one ChannelAffine.
  MatchResult match_affine_chain(const Node& n, const Affine& a, Node* p, bool loud) const {
    NOT_APPLICABLE_IF(!is_affine_kind(p->kind()), "input is produced by ", p->op_type());
    std::string why;
    auto inner = affine_of(*p, &why);
    if (!inner) return fail_with(loud, str_cat("input is produced by ", p->op_type(), " (", why, ")"));
    NOT_APPLICABLE_IF(n.kind() != OpKind::kChannelAffine && n.kind() != OpKind::kBatchNormalization &&
                          p->kind() != OpKind::kChannelAffine && p->kind() != OpKind::kBatchNormalization &&
                          !(p->kind() == OpKind::kMul && n.kind() == OpKind::kAdd),
                      "neither op is a channel affine");
    int64_t axis = inner->per_tensor() ? a.axis : inner->axis;
    NO_MATCH_IF(axis != 1 || (!a.per_tensor() && a.axis != 1), "the affines are not along the channel axis");
    NO_MATCH_IF(inner->rank < 2, "the input's rank is unknown or below 2");
    int64_t channels = !inner->per_tensor() ? inner->channels() : a.channels();
    if (channels < 0 && inner->x->has_shape()) channels = inner->x->shape()[1];
    NO_MATCH_IF(channels < 0, "the channel count is unknown");
    NO_MATCH_IF(!channels_agree(a, channels) || !channels_agree(*inner, channels), "channel counts disagree");
    BackwardFold f;
    f.kind = TargetKind::kAffine;
    f.affine = compose(*inner, a, channels);
    f.affine.axis = 1;
    if (f.affine.s.size() == 1 && channels > 1) {
      f.affine.s.assign(channels, f.affine.s[0]);
      f.affine.t.assign(channels, f.affine.t[0]);
    }
    f.target = p;
    f.matmul = nullptr;
    f.channels = channels;
    Match m;
    m.nodes = {const_cast<Node*>(&n), p};
    m.data = f;
    return m;
  }

  static void rewrite_conv(Rewriter& rw, Node* root, const BackwardFold& f, Value* y) {
    Node* conv = f.target;
    std::vector<float> w = weights(conv->input(1));
    Shape ws = conv->input(1)->shape();
    int64_t co = ws[0];
    int64_t per = co ? static_cast<int64_t>(w.size()) / co : 0;
    std::vector<float> b = conv->input(2) ? weights(conv->input(2)) : std::vector<float>(co, 0.f);
    if (b.size() == 1 && co > 1) b.assign(co, b[0]);
    for (int64_t o = 0; o < co; ++o) {
      float s = f.affine.scale(o);
      for (int64_t i = 0; i < per; ++i) w[o * per + i] *= s;
      b[o] = b[o] * s + f.affine.shift(o);
    }
    std::string name = conv->name();
    std::vector<Value*> ins = conv->inputs();
    ins.resize(std::max<size_t>(ins.size(), 3), nullptr);
    ins[1] = rw.add_constant(conv->input(1)->name(), float_tensor(ws, w));
    ins[2] = rw.add_constant(name + "_bias", float_tensor({co}, b));
    Attributes attrs = conv->attrs();
    OpKind kind = conv->kind();
    rw.remove(root);
    rw.remove(conv);
    rw.add_node(kind, name, ins, {y}, attrs);
  }

  static void rewrite_gemm(Rewriter& rw, Node* root, const BackwardFold& f, Value* y) {
    Node* gemm = f.target;
    bool trans_b = gemm->attr_int("transB", 0) != 0;
    float alpha = gemm->attr_float("alpha", 1.f), beta = gemm->attr_float("beta", 1.f);
    Shape bs = gemm->input(1)->shape();
    std::vector<float> w = weights(gemm->input(1));
    int64_t n_out = f.channels, k = trans_b ? bs[1] : bs[0];
    for (int64_t kk = 0; kk < k; ++kk)
      for (int64_t n = 0; n < n_out; ++n) {
        int64_t idx = trans_b ? n * k + kk : kk * n_out + n;
        w[idx] *= f.affine.scale(n);
      }
    // C' = beta * C * s + t, broadcast to [N] or [M, N] as C demands.
    Shape cs = {n_out};
    std::vector<float> c(n_out, 0.f);
    if (gemm->input(2)) {
      Shape orig = gemm->input(2)->shape();
      std::vector<float> cv = weights(gemm->input(2));
      int64_t rows = orig.size() == 2 ? orig[0] : 1;
      int64_t cols = orig.empty() ? 1 : orig.back();
      cs = rows > 1 || orig.size() == 2 ? Shape{rows, n_out} : Shape{n_out};
      c.assign(rows * n_out, 0.f);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t n = 0; n < n_out; ++n) c[r * n_out + n] = cv[r * cols + (cols == 1 ? 0 : n)];
    }
    for (size_t i = 0; i < c.size(); ++i) {
      int64_t n = static_cast<int64_t>(i) % n_out;
      c[i] = beta * c[i] * f.affine.scale(n) + f.affine.shift(n);
    }
    std::string name = gemm->name();
    Value* a = gemm->input(0);
    Value* b = rw.add_constant(gemm->input(1)->name(), float_tensor(bs, w));
    Value* cc = rw.add_constant(name + "_bias", float_tensor(cs, c));
    Attributes attrs = gemm->attrs();
    attrs["beta"] = Attribute::of_float(1.f);
    attrs["alpha"] = Attribute::of_float(alpha);
    rw.remove(root);
    rw.remove(gemm);
    rw.add_node(OpKind::kGemm, name, {a, b, cc}, {y}, attrs);
  }

  static std::vector<float> scaled_columns(const Value* b, const BackwardFold& f) {
    std::vector<float> w = weights(b);
    int64_t n_out = f.channels, k = b->shape()[0];
    for (int64_t kk = 0; kk < k; ++kk)
      for (int64_t n = 0; n < n_out; ++n) w[kk * n_out + n] *= f.affine.scale(n);
    return w;
  }

  static std::vector<float> per_channel(const std::vector<float>& v, int64_t n) {
    return v.size() == 1 ? std::vector<float>(n, v[0]) : v;
  }

  static void rewrite_matmul(Rewriter& rw, Node* root, const BackwardFold& f, Value* y) {
    Node* mm = f.target;
    std::string name = mm->name();
    Value* a = mm->input(0);
    Shape bs = mm->input(1)->shape();
    Value* b = rw.add_constant(mm->input(1)->name(), float_tensor(bs, scaled_columns(mm->input(1), f)));
    bool shift = f.affine.has_shift();
    Value* t = shift ? rw.add_constant(name + "_bias", float_tensor({f.channels}, per_channel(f.affine.t, f.channels)))
                     : nullptr;
    rw.remove(root);
    rw.remove(mm);
    if (shift) rw.add_node(OpKind::kGemm, name, {a, b, t}, {y});  // 2-D A (checked in match)
    else rw.add_node(OpKind::kMatMul, name, {a, b}, {y});
  }

  static void rewrite_linear(Rewriter& rw, Node* root, const BackwardFold& f, Value* y) {
    Node* add = f.target;
    Node* mm = f.matmul;
    std::string name = mm->name();
    Value* a = mm->input(0);
    Value* mid = mm->output(0);
    Shape bs = mm->input(1)->shape();
    Value* b = rw.add_constant(mm->input(1)->name(), float_tensor(bs, scaled_columns(mm->input(1), f)));
    Value* t = rw.add_constant(add->name() + "_bias", float_tensor({f.channels}, per_channel(f.affine.t, f.channels)));
    std::string add_name = add->name();
    rw.remove(root);
    rw.remove(add);
    rw.remove(mm);
    rw.add_node(OpKind::kMatMul, name, {a, b}, {mid});
    rw.add_node(OpKind::kAdd, add_name, {mid, t}, {y});
  }

  static void rewrite_affine(Rewriter& rw, Node* root, const BackwardFold& f, Value* y) {
    std::string name = f.target->name();
    Value* x = f.affine.x;
    int64_t c = static_cast<int64_t>(f.affine.s.size());
    Value* s = rw.add_constant(name + "_scale", float_tensor({c}, f.affine.s));
    Value* t = rw.add_constant(name + "_shift", float_tensor({c}, f.affine.t));
    rw.remove(root);
    rw.remove(f.target);
    rw.add_node(OpKind::kChannelAffine, name, {x, s, t}, {y});
  }

  OpKind kind_;
};

// --- forward fold ---------------------------------------------------------

struct ForwardFold {
  Affine affine;
  std::vector<Node*> consumers;
};

class FoldIntoConsumers final : public Pattern {
 public:
  explicit FoldIntoConsumers(OpKind kind) : kind_(kind) {}
  std::string_view name() const override { return "fold_into_consumers"; }
  OpKind root() const override { return kind_; }

  MatchResult match(const Graph&, const Node& n) const override {
    // BN and ChannelAffine are expected to fold somewhere: say why not. A
    // Mul/Add/Sub/Div is usually no affine in front of a conv at all: quiet
    // unless it is one and a precondition refuses it.
    bool loud = kind_ == OpKind::kBatchNormalization || kind_ == OpKind::kChannelAffine;
    std::string why;
    auto a = affine_of(n, &why);
    if (!a) return fail_with(loud, why);
    const Value* y = n.output(0);
    if (y->is_graph_output()) return fail_with(loud, str_cat("output '", y->name(), "' is a graph output"));
    if (y->uses().empty()) return fail_with(loud, "output unused");
    for (const Use& u : y->uses()) {
      Node* c = u.node;
      bool conv = c->kind() == OpKind::kConv || c->kind() == OpKind::kFusedConv;
      if (!conv && c->kind() != OpKind::kGemm)
        return fail_with(loud, str_cat("consumer ", c->describe(), " is not a Conv or Gemm"));
    }
    ForwardFold f;
    f.affine = *a;
    for (const Use& u : y->uses()) {
      Node* c = u.node;
      bool conv = c->kind() == OpKind::kConv || c->kind() == OpKind::kFusedConv;
      NO_MATCH_IF(u.index != 0, "consumer ", c->describe(), " reads it as a weight");
      if (const char* w = weight_problem(c->input(1))) return fail_with(true, str_cat(c->describe(), ": ", w));
      NO_MATCH_IF(c->input(2) && !is_float32_constant(c->input(2)), c->describe(), ": bias is not constant");
      if (conv) {
        auto geo = conv_geometry(*c, &why);
        NO_MATCH_IF(!geo, c->describe(), ": ", why);
        for (int64_t p : geo->pads)
          NO_MATCH_IF(p != 0 && a->has_shift(), c->describe(),
                      " pads its input (padding zeros are not shifted: not exact)");
        NO_MATCH_IF(!a->per_tensor() && (a->axis != 1 || a->rank != geo->rank + 2),
                    "the affine is not along the conv's input channels");
        NO_MATCH_IF(!a->per_tensor() && a->channels() != geo->in_channels_per_group * geo->group,
                    "channel counts disagree");
      } else {
        NO_MATCH_IF(c->attr_int("transA", 0) != 0, c->describe(), " transposes its input");
        NO_MATCH_IF(!a->per_tensor() && (a->axis != 1 || a->rank != 2), "the affine is not along the Gemm's input features");
        const Shape& bs = c->input(1)->shape();
        NO_MATCH_IF(bs.size() != 2, "Gemm weight is not 2-D");
        int64_t k = c->attr_int("transB", 0) ? bs[1] : bs[0];
        NO_MATCH_IF(!a->per_tensor() && a->channels() != k, "channel counts disagree");
      }
      f.consumers.push_back(c);
    }
    Match m;
    m.nodes = {const_cast<Node*>(&n)};
    m.data = f;
    return m;
  }

  void rewrite(Rewriter& rw, const Match& m) const override {
    const auto& f = std::any_cast<const ForwardFold&>(m.data);
    Node* root = m.nodes[0];
    for (Node* c : f.consumers) {
      if (c->kind() == OpKind::kGemm) rewrite_gemm(rw, c, f.affine);
      else rewrite_conv(rw, c, f.affine);
    }
    rw.remove(root);
  }

 private:
  static void rewrite_conv(Rewriter& rw, Node* conv, const Affine& a) {
    std::string why;
    ConvGeometry geo = *conv_geometry(*conv, &why);
    Shape ws = conv->input(1)->shape();
    std::vector<float> w = weights(conv->input(1));
    int64_t co = ws[0], cig = ws[1];
    int64_t ksize = static_cast<int64_t>(w.size()) / std::max<int64_t>(1, co * cig);
    int64_t cog = co / geo.group;
    std::vector<float> b = conv->input(2) ? weights(conv->input(2)) : std::vector<float>(co, 0.f);
    if (b.size() == 1 && co > 1) b.assign(co, b[0]);
    for (int64_t o = 0; o < co; ++o) {
      int64_t g = o / cog;
      double acc = b[o];
      for (int64_t i = 0; i < cig; ++i) {
        int64_t c = g * cig + i;
        float s = a.scale(c), t = a.shift(c);
        float* wk = &w[(o * cig + i) * ksize];
        for (int64_t k = 0; k < ksize; ++k) {
          acc += static_cast<double>(wk[k]) * t;
          wk[k] *= s;
        }
      }
      b[o] = static_cast<float>(acc);
    }
    rw.set_input(conv, 0, a.x);
    rw.set_input(conv, 1, rw.add_constant(conv->input(1)->name(), float_tensor(ws, w)));
    rw.set_input(conv, 2, rw.add_constant(conv->name() + "_bias", float_tensor({co}, b)));
  }

  static void rewrite_gemm(Rewriter& rw, Node* gemm, const Affine& a) {
    bool trans_b = gemm->attr_int("transB", 0) != 0;
    float alpha = gemm->attr_float("alpha", 1.f), beta = gemm->attr_float("beta", 1.f);
    Shape bs = gemm->input(1)->shape();
    std::vector<float> w = weights(gemm->input(1));
    int64_t k = trans_b ? bs[1] : bs[0], n_out = trans_b ? bs[0] : bs[1];
    std::vector<double> shift(n_out, 0.0);
    for (int64_t kk = 0; kk < k; ++kk)
      for (int64_t n = 0; n < n_out; ++n) {
        float& wv = w[trans_b ? n * k + kk : kk * n_out + n];
        shift[n] += static_cast<double>(wv) * a.shift(kk);
        wv *= a.scale(kk);
      }
    Shape cs = {n_out};
    std::vector<float> c(n_out, 0.f);
    if (gemm->input(2)) {
      Shape orig = gemm->input(2)->shape();
      std::vector<float> cv = weights(gemm->input(2));
      int64_t rows = orig.size() == 2 ? orig[0] : 1;
      int64_t cols = orig.empty() ? 1 : orig.back();
      cs = orig.size() == 2 ? Shape{rows, n_out} : Shape{n_out};
      c.assign(rows * n_out, 0.f);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t n = 0; n < n_out; ++n) c[r * n_out + n] = cv[r * cols + (cols == 1 ? 0 : n)];
    }
    for (size_t i = 0; i < c.size(); ++i)
      c[i] = static_cast<float>(beta * c[i] + alpha * shift[static_cast<int64_t>(i) % n_out]);
    rw.set_input(gemm, 0, a.x);
    rw.set_input(gemm, 1, rw.add_constant(gemm->input(1)->name(), float_tensor(bs, w)));
    rw.set_input(gemm, 2, rw.add_constant(gemm->name() + "_bias", float_tensor(cs, c)));
    rw.set_attr(gemm, "beta", Attribute::of_float(1.f));
  }

  OpKind kind_;
};

// --- scale through a positively homogeneous activation --------------------
//
// relu(s*x + t) = s * relu(x + t/s) for s > 0 (LeakyRelu likewise): the shift
// stays in front of the activation as one Add, and the pure scale moves into
// the consuming convs, where it is exact even with padding (zero padding of
// s*y is s times zero padding of y). Pre-activation networks (BN-ReLU-Conv)
// lose a node per unit this way.

struct ScaleThrough {
  Affine affine;
  Node* act;
  std::vector<Node*> consumers;
};

// Scales input channel c of a consumer's weight by s[c].
void scale_input_channels(Rewriter& rw, Node* c, const Affine& a) {
  Shape ws = c->input(1)->shape();
  std::vector<float> w = weights(c->input(1));
  if (c->kind() == OpKind::kGemm) {
    bool trans_b = c->attr_int("transB", 0) != 0;
    int64_t k = trans_b ? ws[1] : ws[0], n_out = trans_b ? ws[0] : ws[1];
    for (int64_t kk = 0; kk < k; ++kk)
      for (int64_t n = 0; n < n_out; ++n) w[trans_b ? n * k + kk : kk * n_out + n] *= a.scale(kk);
  } else {
    int64_t co = ws[0], cig = ws[1];
    int64_t group = c->attr_int("group", 1);
    int64_t ksize = static_cast<int64_t>(w.size()) / std::max<int64_t>(1, co * cig);
    int64_t cog = co / std::max<int64_t>(1, group);
    for (int64_t o = 0; o < co; ++o)
      for (int64_t i = 0; i < cig; ++i) {
        float s = a.scale((o / cog) * cig + i);
        for (int64_t k = 0; k < ksize; ++k) w[(o * cig + i) * ksize + k] *= s;
      }
  }
  rw.set_input(c, 1, rw.add_constant(c->input(1)->name(), float_tensor(ws, w)));
}

class ScaleThroughActivation final : public Pattern {
 public:
  std::string_view name() const override { return "scale_through_activation"; }
  OpKind root() const override { return OpKind::kChannelAffine; }

  MatchResult match(const Graph&, const Node& n) const override {
    std::string why;
    auto a = affine_of(n, &why);
    NO_MATCH_IF(!a, why);
    const Value* y = n.output(0);
    NO_MATCH_IF(!single_use(y), "output '", y->name(), "' has other users or is a graph output");
    Node* act = y->uses()[0].node;
    NO_MATCH_IF(act->kind() != OpKind::kRelu && act->kind() != OpKind::kLeakyRelu,
                "consumer ", act->describe(), " is not a Conv, Gemm, Relu or LeakyRelu");
    for (float v : a->s) NO_MATCH_IF(!(v > 0.f), "a channel scale is not positive (cannot pass the activation)");
    ScaleThrough f;
    f.affine = *a;
    f.act = act;
    NO_MATCH_IF(!collect(act->output(0), a->rank, a->channels(), &f.consumers, &why, 0), why);
    Match m;
    m.nodes = {const_cast<Node*>(&n)};
    m.data = f;
    return m;
  }

  // The convs/Gemms that read s*z through ops that commute with a positive
  // per-channel scale (pools: max(s*z) = s*max(z), averages are linear;
  // flattening a [N, C, 1, ...] value keeps channel c as feature c).
  static bool collect(const Value* z, int64_t rank, int64_t channels, std::vector<Node*>* out, std::string* why,
                      int depth) {
    if (z->is_graph_output() || z->uses().empty() || depth > 8) {
      *why = str_cat("'", z->name(), "' is a graph output or unused");
      return false;
    }
    for (const Use& u : z->uses()) {
      Node* c = u.node;
      if (u.index != 0) {
        *why = str_cat(c->describe(), " reads the scaled value as a weight");
        return false;
      }
      switch (c->kind()) {
        case OpKind::kConv:
        case OpKind::kFusedConv:
        case OpKind::kGemm: {
          if (const char* w = weight_problem(c->input(1))) {
            *why = str_cat(c->describe(), ": ", w);
            return false;
          }
          const Shape& ws = c->input(1)->shape();
          bool ok = c->kind() == OpKind::kGemm
                        ? c->attr_int("transA", 0) == 0 && rank == 2 && ws.size() == 2 &&
                              (c->attr_int("transB", 0) ? ws[1] : ws[0]) == channels
                        : ws.size() >= 3 && rank == static_cast<int64_t>(ws.size()) &&
                              ws[1] * c->attr_int("group", 1) == channels;
          if (!ok) {
            *why = str_cat(c->describe(), ": ranks or channel counts disagree");
            return false;
          }
          out->push_back(c);
          break;
        }
        case OpKind::kGlobalAveragePool:
        case OpKind::kGlobalMaxPool:
        case OpKind::kAveragePool:
        case OpKind::kMaxPool:
          if (c->num_outputs() > 1 && c->output(1) && !c->output(1)->uses().empty()) {
            *why = str_cat(c->describe(), " has its indices used");
            return false;
          }
          if (!collect(c->output(0), rank, channels, out, why, depth + 1)) return false;
          break;
        case OpKind::kFlatten:
        case OpKind::kReshape: {
          const Value* o = c->output(0);
          bool ok = z->has_shape() && z->shape().size() >= 2 && o->has_shape() && o->shape().size() == 2 &&
                    z->shape()[1] == channels && o->shape()[1] == channels;
          for (size_t d = 2; ok && d < z->shape().size(); ++d) ok = z->shape()[d] == 1;
          if (!ok || (c->kind() == OpKind::kFlatten && c->attr_int("axis", 1) != 1)) {
            *why = str_cat(c->describe(), " does not keep channels as features");
            return false;
          }
          if (!collect(o, 2, channels, out, why, depth + 1)) return false;
          break;
        }
        default:
          *why = str_cat("the activation feeds ", c->describe(), ", not a Conv or Gemm");
          return false;
      }
    }
    return true;
  }

  void rewrite(Rewriter& rw, const Match& m) const override {
    const auto& f = std::any_cast<const ScaleThrough&>(m.data);
    Node* n = m.nodes[0];
    const Affine& a = f.affine;
    for (Node* c : f.consumers) scale_input_channels(rw, c, a);
    int64_t c = a.channels();
    std::vector<float> t(c);
    bool shift = false;
    for (int64_t i = 0; i < c; ++i) {
      t[i] = static_cast<float>(static_cast<double>(a.shift(i)) / a.scale(i));
      shift = shift || t[i] != 0.f;
    }
    std::string name = n->name();
    Value* y = n->output(0);
    rw.remove(n);
    if (!shift) {
      rw.set_input(f.act, 0, a.x);
      return;
    }
    if (a.rank >= 2) {
      Shape bs(a.rank - 1, 1);
      bs[0] = c;
      rw.add_node(OpKind::kAdd, name, {a.x, rw.add_constant(name + "_shift", float_tensor(bs, t))}, {y});
    } else {
      Value* ones = rw.add_constant(name + "_scale", float_tensor({c}, std::vector<float>(c, 1.f)));
      rw.add_node(OpKind::kChannelAffine, name, {a.x, ones, rw.add_constant(name + "_shift", float_tensor({c}, t))},
                  {y});
    }
  }
};

// --- lowering -------------------------------------------------------------

class LowerBatchNorm final : public Pattern {
 public:
  std::string_view name() const override { return "lower_batchnorm"; }
  OpKind root() const override { return OpKind::kBatchNormalization; }
  MatchResult match(const Graph&, const Node& n) const override {
    std::string why;
    auto a = affine_of(n, &why);
    NO_MATCH_IF(!a, why);
    NO_MATCH_IF(a->rank >= 0 && a->rank < 2, "input rank below 2");
    Match m;
    m.nodes = {const_cast<Node*>(&n)};
    m.data = *a;
    return m;
  }
  void rewrite(Rewriter& rw, const Match& m) const override {
    const auto& a = std::any_cast<const Affine&>(m.data);
    Node* bn = m.nodes[0];
    std::string name = bn->name();
    Value* y = bn->output(0);
    int64_t c = static_cast<int64_t>(a.s.size());
    Value* s = rw.add_constant(name + "_scale", float_tensor({c}, a.s));
    Value* t = rw.add_constant(name + "_shift", float_tensor({c}, a.t));
    rw.remove(bn);
    rw.add_node(OpKind::kChannelAffine, name, {a.x, s, t}, {y});
  }
};

}  // namespace

std::unique_ptr<Pass> make_fold_bn_into_conv() {
  std::vector<std::unique_ptr<Pattern>> p;
  // Per root node the order is the preference: into the producer (always
  // exact), into the consumers (exact only without padding), and only then
  // the standalone ChannelAffine.
  for (OpKind k : {OpKind::kBatchNormalization, OpKind::kChannelAffine, OpKind::kMul, OpKind::kAdd, OpKind::kSub,
                   OpKind::kDiv})
    p.push_back(std::make_unique<FoldIntoProducer>(k));
  for (OpKind k : {OpKind::kBatchNormalization, OpKind::kChannelAffine, OpKind::kMul, OpKind::kAdd, OpKind::kSub,
                   OpKind::kDiv})
    p.push_back(std::make_unique<FoldIntoConsumers>(k));
  p.push_back(std::make_unique<ScaleThroughActivation>());
  p.push_back(std::make_unique<LowerBatchNorm>());
  return std::make_unique<PatternPass>(
      "fold_bn_into_conv",
      "fold BatchNorm and per-channel Mul/Add by constants into Conv/Gemm/MatMul weights; lower the rest to "
      "ChannelAffine",
      std::move(p));
}

}  // namespace engine
