// sink_channels_last: a channels-last island of an NCHW network, rewritten
// in NCHW so that its linear layers become 1x1 convolutions.
//
//   Transpose(x, perm=[0,2,3,1]) -> op_1 -> ... -> op_k -> Transpose(perm=[0,3,1,2])
//   ==>  op_1' -> ... -> op_k'   on x itself (both Transposes gone)
// where each op_i reads the previous value and maps to its NCHW form:
//   LayerNormalization(axis=-1, scale [C], bias [C]?)  ==>  ChannelLayerNorm(x, scale, bias) {epsilon}
//   MatMul(., W) with W a constant [C, C']             ==>  Conv(., W^T as [C', C, 1, 1])
//   Add/Sub/Mul/Div(., k), k a constant scalar or
//     [..., C'] with every other dim 1 (either order)  ==>  the same op with k as [C', 1, 1]
//   a unary elementwise op (Relu, Gelu, Sigmoid, ...)  ==>  itself
// ConvNeXt writes its blocks this way (permute, LayerNorm, Linear, GELU,
// Linear, layer scale, permute back) and its LayerNorm2d as permute,
// layer_norm, permute; so do other "MLP on channels-last" blocks.
// Why: the island's MatMuls then run as pointwise convolutions, whose
// epilogue takes the bias, the GELU and the residual Add (FusedConv), and
// whose INT8 form is the QConv kernel; the layer scale and the bias fold
// into the conv (fold_bn_into_conv, next in the pipeline); and the two
// Transposes, each a full pass over the tensor, are gone. ChannelLayerNorm
// normalizes each position over the channels in the NCHW layout (moments in
// double, as LayerNormalization's kernels), within the FP32 tolerance of
// the Transpose-LayerNorm-Transpose it replaces.
// Preconditions: x is 4-D float32; every value of the island (the first
// Transpose's output included) is read by exactly the next op and is not a
// graph output; constants as listed; at most kMaxOps ops. Anything else in
// the chain (a Q/DQ pair, a Reshape, a second reader) refuses the whole
// island, with the reason.
#include <algorithm>

#include "passes/pass.h"
#include "passes/util.h"

namespace engine {
namespace {

constexpr int kMaxOps = 64;

bool has_perm(const Node* n, const std::vector<int64_t>& perm) {
  return is_op(n, OpKind::kTranspose) && n->attr_ints("perm") == perm;
}

bool unary_elementwise(OpKind k) {
  switch (k) {
    case OpKind::kRelu: case OpKind::kLeakyRelu: case OpKind::kSigmoid: case OpKind::kHardSigmoid:
    case OpKind::kHardSwish: case OpKind::kTanh: case OpKind::kGelu: case OpKind::kSoftplus:
    case OpKind::kSoftsign: case OpKind::kElu: case OpKind::kSelu: case OpKind::kMish: case OpKind::kErf:
    case OpKind::kExp: case OpKind::kLog: case OpKind::kSqrt: case OpKind::kReciprocal: case OpKind::kNeg:
    case OpKind::kAbs:
      return true;
    default:
      return false;
  }
}

bool binary_elementwise(OpKind k) {
  return k == OpKind::kAdd || k == OpKind::kSub || k == OpKind::kMul || k == OpKind::kDiv;
}

// The channels-last constant k as an NCHW broadcast operand: a scalar stays
// as it is (nullopt shape means "keep"); [..., C] with every other dim 1
// becomes [C, 1, 1]. False when k varies along another axis.
bool channel_operand(const Value* k, std::optional<Shape>* nchw) {
  if (!is_float32_constant(k)) return false;
  const Shape& s = k->constant()->shape();
  if (s.size() > 4) return false;
  if (k->constant()->numel() == 1) {
    nchw->reset();
    return true;
  }
  for (size_t i = 0; i + 1 < s.size(); ++i)
    if (s[i] != 1) return false;
  *nchw = Shape{s.back(), 1, 1};
  return true;
}

struct Island {
  Node* first;               // Transpose to channels-last
  Node* last;                // Transpose back
  std::vector<Node*> ops;    // in order
};

class SinkChannelsLast final : public Pattern {
 public:
  std::string_view name() const override { return "sink_channels_last"; }
  OpKind root() const override { return OpKind::kTranspose; }

  MatchResult match(const Graph&, const Node& t) const override {
    NOT_APPLICABLE_IF(!has_perm(&t, {0, 2, 3, 1}), "not a Transpose to channels-last (perm 0,2,3,1)");
    Value* x = t.input(0);
    NO_MATCH_IF(!x || x->dtype() != DType::kFloat32, "the input is not float32");
    NO_MATCH_IF(!x->has_shape() || x->shape().size() != 4, "the input is not known to be 4-D");
    Island isl{const_cast<Node*>(&t), nullptr, {}};
    Value* v = t.output(0);
    int64_t c = x->shape()[1];  // channels of v (-1: unknown)
    for (int step = 0;; ++step) {
      NO_MATCH_IF(step > kMaxOps, "no Transpose back to NCHW within ", kMaxOps, " ops");
      NO_MATCH_IF(!single_use(v), "the channels-last value '", v->name(), "' has other readers or is a graph output");
      Node* r = v->uses()[0].node;
      const int index = v->uses()[0].index;
      if (has_perm(r, {0, 3, 1, 2})) {
        isl.last = r;
        break;
      }
      const OpKind k = r->kind();
      if (k == OpKind::kLayerNormalization) {
        const int64_t axis = r->attr_int("axis", -1);
        NO_MATCH_IF(axis != -1 && axis != 3, r->describe(), " normalizes from axis ", axis, ", not the channels");
        NO_MATCH_IF(index != 0, r->describe(), " reads the island as a parameter");
        NO_MATCH_IF(!is_float32_constant(r->input(1)) || r->input(1)->constant()->numel() != c || c < 0,
                    r->describe(), ": the scale is not a constant per channel");
        NO_MATCH_IF(r->input(2) && (!is_float32_constant(r->input(2)) || r->input(2)->constant()->numel() != c),
                    r->describe(), ": the bias is not a constant per channel");
        for (int o = 1; o < r->num_outputs(); ++o)
          NO_MATCH_IF(r->output(o) && (!r->output(o)->uses().empty() || r->output(o)->is_graph_output()),
                      r->describe(), ": its mean or inverse deviation output is used");
      } else if (k == OpKind::kMatMul) {
        NO_MATCH_IF(index != 0, r->describe(), " multiplies the island from the right");
        const Value* w = r->input(1);
        NO_MATCH_IF(!is_float32_constant(w) || w->constant()->rank() != 2, r->describe(),
                    ": the weight is not a constant matrix");
        NO_MATCH_IF(c < 0 || w->constant()->shape()[0] != c, r->describe(), ": the weight has ",
                    w->constant()->shape()[0], " rows for ", c, " channels");
        c = w->constant()->shape()[1];
      } else if (binary_elementwise(k)) {
        std::optional<Shape> s;
        NO_MATCH_IF(!channel_operand(r->input(1 - index), &s), r->describe(),
                    ": the other operand is not a constant scalar or per-channel vector");
        NO_MATCH_IF(s && c >= 0 && (*s)[0] != c, r->describe(), ": the operand has ", (*s)[0], " entries for ", c,
                    " channels");
      } else if (unary_elementwise(k)) {
        for (int i = 1; i < r->num_inputs(); ++i)
          NO_MATCH_IF(r->input(i), r->describe(), " has extra inputs");
      } else if (k == OpKind::kClip) {
        for (int i = 1; i < r->num_inputs(); ++i)
          NO_MATCH_IF(r->input(i) && !(is_float32_constant(r->input(i)) && r->input(i)->constant()->numel() == 1),
                      r->describe(), ": min/max are not constant scalars");
        NO_MATCH_IF(index != 0, r->describe(), " reads the island as min or max");
      } else {
        NO_MATCH_IF(true, r->describe(), " has no channels-first form here");
      }
      NO_MATCH_IF(r->num_outputs() < 1 || !r->output(0), r->describe(), " has no output");
      isl.ops.push_back(r);
      v = r->output(0);
    }
    NO_MATCH_IF(isl.ops.empty(), "the Transposes cancel (eliminate_identity's job)");
    Match m;
    m.nodes = {isl.first};
    m.nodes.insert(m.nodes.end(), isl.ops.begin(), isl.ops.end());
    m.nodes.push_back(isl.last);
    m.data = isl;
    return m;
  }

  void rewrite(Rewriter& rw, const Match& m) const override {
    const auto& isl = std::any_cast<const Island&>(m.data);
    struct NewNode {
      OpKind kind;
      std::string name;
      std::vector<Value*> inputs;
      Value* output;
      Attributes attrs;
    };
    std::vector<NewNode> built;
    Value* v = isl.first->input(0);  // NCHW
    const Value* prev = isl.first->output(0);
    for (size_t i = 0; i < isl.ops.size(); ++i) {
      Node* r = isl.ops[i];
      const Value* out = r->output(0);
      // The last op produces what the Transpose back produced (same NCHW
      // shape); the others new values, [N, H, W, C] -> [N, C, H, W].
      Value* y = isl.last->output(0);
      if (i + 1 < isl.ops.size()) {
        Shape nchw;
        const bool known = out->has_shape() && out->shape().size() == 4;
        if (known) nchw = {out->shape()[0], out->shape()[3], out->shape()[1], out->shape()[2]};
        y = rw.add_value(out->name() + "_nchw", out->dtype(), known ? &nchw : nullptr);
      }
      const int index = r->input(0) == prev ? 0 : 1;
      NewNode n{r->kind(), r->name(), r->inputs(), y, r->attrs()};
      n.inputs[index] = v;
      if (n.kind == OpKind::kLayerNormalization) {
        n.kind = OpKind::kChannelLayerNorm;
        n.attrs.clear();
        n.attrs["epsilon"] = Attribute::of_float(r->attr_float("epsilon", 1e-5f));
        n.inputs.resize(std::min<size_t>(n.inputs.size(), 3));
      } else if (n.kind == OpKind::kMatMul) {
        n.kind = OpKind::kConv;
        n.attrs.clear();
        const Tensor& w = *r->input(1)->constant();
        const int64_t ci = w.shape()[0], co = w.shape()[1];
        std::vector<float> wt(static_cast<size_t>(ci * co));
        const float* src = w.data<float>();
        for (int64_t a = 0; a < ci; ++a)
          for (int64_t b = 0; b < co; ++b) wt[b * ci + a] = src[a * co + b];
        n.inputs[1] = rw.add_constant(r->name() + "_weight", float_tensor({co, ci, 1, 1}, wt));
      } else if (binary_elementwise(n.kind)) {
        std::optional<Shape> s;
        channel_operand(r->input(1 - index), &s);
        if (s) {
          const Tensor& k = *r->input(1 - index)->constant();
          std::vector<float> data(k.data<float>(), k.data<float>() + k.numel());
          n.inputs[1 - index] = rw.add_constant(r->input(1 - index)->name() + "_nchw", float_tensor(*s, data));
        }
      }
      built.push_back(std::move(n));
      prev = out;
      v = y;
    }
    // Readers first: a removed node's outputs are then unread.
    rw.remove(isl.last);
    for (auto it = isl.ops.rbegin(); it != isl.ops.rend(); ++it) rw.remove(*it);
    rw.remove(isl.first);
    for (NewNode& n : built) rw.add_node(n.kind, n.name, n.inputs, {n.output}, std::move(n.attrs));
  }
};

}  // namespace

std::unique_ptr<Pass> make_sink_channels_last() {
  std::vector<std::unique_ptr<Pattern>> p;
  p.push_back(std::make_unique<SinkChannelsLast>());
  return std::make_unique<PatternPass>(
      "sink_channels_last",
      "rewrite Transpose(NHWC) -> LayerNorm/MatMul/elementwise -> Transpose(NCHW) islands in NCHW "
      "(ChannelLayerNorm, 1x1 Conv)",
      std::move(p));
}

}  // namespace engine
