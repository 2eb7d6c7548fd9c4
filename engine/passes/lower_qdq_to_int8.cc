// lower_qdq_to_int8
//
//   x_q ─DQ(sx)─┐
//   w_q ─DQ(sw)─┼─ Conv ─ [ChannelAffine(s, t)] ─ [Add(·, DQ(sz)(z_q) | z_f)] ─ [Relu|Clip] ─ [Q(sy) ...]
//   b ──────────┘
//     ==>  QConv(x_q, w_q, b', z) {x_scale=sx, w_scale=sw*s, z_scale=sz, y_scale=sy,
//                                  activation=Relu|Clip},  b' = b*s + t
//   (Gemm ==> QGemm likewise, weights transposed to [M, K] once.)
//   The Conv may be 2-D (NCHW) or 3-D (NCDHW: the video families' Conv3d);
//   QConv takes both, so 3-D layers no longer run as float fake-quant.
//
// Preconditions, checked as a flat list of guards with a reason each (a
// refusal leaves the node alone and is not an error):
//  - activation input and int8 residual: DequantizeLinear of int8 data with
//    one positive scale and one constant zero point (0, as TensorRT
//    requires, or any int8 value: onnxruntime's asymmetric u8 activations,
//    which the first rewrite here turns into int8 ones, arrive so); the zero
//    points become the fused node's x/z/y_zero_point attributes;
//  - weights: an int8 constant behind DQ, or a float constant under Q -> DQ
//    with the same parameters (fake-quant exports; folded to int8 here with
//    the QuantizeLinear kernel's own rounding), one scale or one per output
//    channel, zero point 0;
//  - bias: absent, a float constant, or DQ of an int32 constant;
//  - every value swallowed into the fused node has exactly one use and is
//    not a graph output;
//  - the requantize step needs every user of the last value to be a Q to
//    int8 with the same scale and zero point; those Qs disappear, their users
//    read the int8 output directly (a Q whose output is a graph output may
//    be folded when it is the only user: the graph output keeps its name).
// The ChannelAffine is what fold_bn_into_conv makes of a BatchNormalization
// it could not fold into the (dequantized, so not constant) weights, as
// ModelOpt leaves it between the DQ'd Conv and the next Q. It is absorbed
// exactly: DQ(w_q, sw) * s = w_q * (sw * s), so the int8 weights stay as
// the model quantized them and only the per-channel float multiplier and
// bias change (a negative gamma gives a negative multiplier, which the
// epilogue takes as is).
// Why: this is the placement TensorRT and ModelOpt use for residual CNNs
// (quantize every Conv/Gemm input and each residual Add's skip input), so
// one pattern covers conv-bn-relu chains and residual blocks.
// uint8 activations (onnxruntime's quantize_static default: QUInt8, zero
// point z in 0..255) are rewritten first, exactly: a Q to uint8 whose users
// are all DequantizeLinear nodes with its scale and zero point becomes a Q
// to int8 with zero point z - 128, and its DQs read that: q8 = q_u8 - 128
// for every value (saturate(round(x / s) + z) - 128 = saturate_int8(round(x
// / s) + z - 128)), and (q8 - (z - 128)) * s = (q_u8 - z) * s. The int8
// kernels then see one form. A uint8 graph input or output stays as it is.
// Pipeline position (registry.cc, "int8"): after fold_bn_into_conv (BN is a
// ChannelAffine by then) and before fuse_conv_add_relu (which would hide the
// Conv inside a FusedConv); eliminate_dead_code then removes the Q/DQ nodes
// the rewrites orphaned.
#include "passes/lower_qdq_to_int8.h"

#include <cmath>
#include <set>

#include "ir/infer.h"
#include "passes/pass.h"
#include "passes/pass_manager.h"

namespace engine {
namespace {

Node* producer_of_kind(const Value* v, OpKind kind) {
  Node* p = v ? v->producer() : nullptr;
  return p && p->kind() == kind ? p : nullptr;
}

bool const_of(const Value* v, DType t) { return v && v->is_constant() && v->constant()->dtype() == t; }

std::vector<float> floats_of(const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) out[i] = static_cast<float>(t.float_at(i));
  return out;
}

// "" when the zero point is absent or a constant of type `t` holding zeros;
// else why not (weights and biases: symmetric only).
std::string zero_point_problem(const Value* zp, DType t, const char* what) {
  if (!zp) return "";
  if (!zp->is_constant()) return str_cat(what, " zero point is not a constant");
  if (zp->constant()->dtype() != t)
    return str_cat(what, " is quantized to ", dtype_name(zp->constant()->dtype()), " (the int8 kernels take ",
                   dtype_name(t), " only)");
  for (int64_t i = 0; i < zp->constant()->numel(); ++i)
    if (zp->constant()->int_at(i) != 0)
      return str_cat(what, " has a non-zero zero point (asymmetric; the int8 kernels take symmetric only)");
  return "";
}

bool positive_finite(float s) { return s > 0.f && std::isfinite(s); }

// The same formula as the QuantizeLinear kernel (zero point 0): the folded
// weights equal what running Q would produce.
int8_t quantize_s8(float x, float scale) {
  float v = x / scale;
  v = v > -128.f ? v : -128.f;
  v = v < 127.f ? v : 127.f;
  return static_cast<int8_t>(static_cast<int32_t>(std::nearbyint(v)));
}

// "" when the zero point is absent (0) or one int8 constant, in *zp; else why not.
std::string act_zero_point(const Value* zp, const char* what, int32_t* out) {
  *out = 0;
  if (!zp) return "";
  if (!zp->is_constant()) return str_cat(what, " zero point is not a constant");
  if (zp->constant()->dtype() != DType::kInt8)
    return str_cat(what, " is quantized to ", dtype_name(zp->constant()->dtype()), " (the int8 kernels take int8, ",
                   "and uint8 where it can be rewritten to int8)");
  if (zp->constant()->numel() != 1) return str_cat(what, " has more than one zero point (per-tensor only)");
  *out = static_cast<int32_t>(zp->constant()->int_at(0));
  return "";
}

}  // namespace

// (Declared in lower_qdq_to_int8.h: lower_int8_maxpool matches the same DQ.)
std::string match_act_dq(const Value* v, const char* what, Value** q, float* scale, int32_t* zero_point) {
  Node* dq = producer_of_kind(v, OpKind::kDequantizeLinear);
  if (!dq) return str_cat(what, " is not produced by a DequantizeLinear");
  if (dq->attr_int("block_size", 0) != 0) return str_cat(what, " is block-quantized");
  Value* x = dq->input(0);
  Value* s = dq->input(1);
  if (!x || x->dtype() != DType::kInt8)
    return str_cat(what, " is dequantized from ", x ? dtype_name(x->dtype()) : "nothing",
                   " (the int8 kernels take int8 only)");
  if (!const_of(s, DType::kFloat32)) return str_cat(what, " scale is not a float32 constant");
  if (s->constant()->numel() != 1) return str_cat(what, " has more than one scale (per-tensor only)");
  std::string zp = act_zero_point(dq->input(2), what, zero_point);
  if (!zp.empty()) return zp;
  *scale = s->constant()->data<float>()[0];
  if (!positive_finite(*scale)) return str_cat(what, " scale is not positive and finite");
  *q = x;
  return "";
}

namespace {

// A Q node quantizing to int8 with one scale and one zero point; both.
std::string requant_problem(const Node* q, float* scale, int32_t* zero_point) {
  if (q->kind() != OpKind::kQuantizeLinear) return str_cat("it is read by ", q->describe(), ", not a QuantizeLinear");
  if (q->attr_int("block_size", 0) != 0) return str_cat(q->describe(), " is block-quantized");
  const Value* s = q->input(1);
  if (!const_of(s, DType::kFloat32) || s->constant()->numel() != 1)
    return str_cat(q->describe(), " does not have one float32 constant scale");
  const Value* zp = q->input(2);
  if (zp) {
    std::string why = act_zero_point(zp, q->describe().c_str(), zero_point);
    if (!why.empty()) return why;
  } else if (q->attr_int("output_dtype", 0) != 0 && q->attr_int("output_dtype", 0) != static_cast<int64_t>(DType::kInt8)) {
    return str_cat(q->describe(), " does not quantize to int8");
  } else if (q->attr_int("output_dtype", 0) == 0 && q->output(0)->dtype() != DType::kInt8) {
    return str_cat(q->describe(), " does not quantize to int8");
  }
  *scale = s->constant()->data<float>()[0];
  if (!positive_finite(*scale)) return str_cat(q->describe(), " scale is not positive and finite");
  return "";
}

// Every user of `v` is a Q to int8 with one scale and zero point (the
// fused node's requantize): those Qs, the scale and zero point; or why not.
std::string requant_users(const Value* v, std::vector<Node*>* qs, float* scale, int32_t* zero_point) {
  std::set<Node*> found;
  for (const Use& u : v->uses()) {
    float s = 0.f;
    int32_t zp = 0;
    std::string why = u.index != 0 ? str_cat("it is read by ", u.node->describe(), " as a parameter")
                                   : requant_problem(u.node, &s, &zp);
    if (why.empty() && !found.empty() && (s != *scale || zp != *zero_point))
      why = "its QuantizeLinear users use different scales or zero points";
    if (why.empty() && u.node->output(0)->is_graph_output() && v->uses().size() > 1)
      why = "a QuantizeLinear output is a graph output and there are other users";
    if (!why.empty()) return why;
    *scale = s;
    *zero_point = zp;
    found.insert(u.node);
  }
  qs->assign(found.begin(), found.end());
  return "";
}

struct Weights {
  Value* value = nullptr;                // an existing int8 constant, or
  std::shared_ptr<const Tensor> folded;  // int8 made here from float weights
  std::vector<float> scale;              // 1 or one per channel
  const Tensor& tensor() const { return folded ? *folded : *value->constant(); }
};

// `rank` for a conv's weights: 4 (2-D) or 5 (3-D).
constexpr int kConvWeightRank = -1;

// `v` = DQ(w_q) with w_q an int8 constant of rank `rank`, per-tensor or per
// channel along `axis`; or DQ(Q(w_f)) with w_f a float constant and the Q
// using the DQ's parameters. "" or why not.
std::string match_weight_dq(const Value* v, int rank, int axis, Weights* out) {
  Node* dq = producer_of_kind(v, OpKind::kDequantizeLinear);
  if (!dq) {
    if (v && v->is_constant()) return "the weight is a float constant (not quantized by the model)";
    return "the weight is not produced by a DequantizeLinear";
  }
  if (dq->attr_int("block_size", 0) != 0) return "the weight is block-quantized";
  auto rank_ok = [rank](int64_t r) { return rank == kConvWeightRank ? r == 4 || r == 5 : r == rank; };
  Value* x = dq->input(0);
  Value* s = dq->input(1);
  if (!x || !const_of(s, DType::kFloat32) || s->constant()->rank() > 1)
    return "the weight scale is not a float32 constant of rank <= 1";
  std::string zp = zero_point_problem(dq->input(2), DType::kInt8, "the weight");
  if (!zp.empty()) return zp;
  out->scale = floats_of(*s->constant());
  for (float f : out->scale)
    if (!positive_finite(f)) return "a weight scale is not positive and finite";
  auto axis_ok = [&](const Node& n, const Tensor& w) {
    if (out->scale.size() == 1 && s->constant()->rank() <= 1) return true;
    int64_t a = n.attr_int("axis", 1);
    if (a < 0) a += w.rank();
    return a == axis && w.dim(axis) == static_cast<int64_t>(out->scale.size());
  };
  if (x->is_constant()) {
    if (x->constant()->dtype() != DType::kInt8)
      return str_cat("the weight is stored as ", dtype_name(x->constant()->dtype()), " (int8 only)");
    if (!rank_ok(x->constant()->rank())) return str_cat("the weight has rank ", x->constant()->rank());
    if (!axis_ok(*dq, *x->constant())) return str_cat("the weight scales are not per output channel (axis ", axis, ")");
    out->value = x;
    return "";
  }
  Node* q = producer_of_kind(x, OpKind::kQuantizeLinear);
  if (!q) return "the weight DequantizeLinear reads neither a constant nor a QuantizeLinear";
  if (q->attr_int("block_size", 0) != 0) return "the weight is block-quantized";
  if (!const_of(q->input(0), DType::kFloat32)) return "the fake-quantized weight is not a float32 constant";
  const Tensor& wf = *q->input(0)->constant();
  if (!rank_ok(wf.rank())) return str_cat("the weight has rank ", wf.rank());
  if (!axis_ok(*dq, wf) || !axis_ok(*q, wf)) return str_cat("the weight scales are not per output channel (axis ", axis, ")");
  if (!const_of(q->input(1), DType::kFloat32) || floats_of(*q->input(1)->constant()) != out->scale)
    return "the weight QuantizeLinear and DequantizeLinear scales differ";
  if (x->dtype() != DType::kInt8) return str_cat("the weight is quantized to ", dtype_name(x->dtype()), " (int8 only)");
  zp = zero_point_problem(q->input(2), DType::kInt8, "the weight");
  if (!zp.empty()) return zp;
  auto t = std::make_shared<Tensor>(DType::kInt8, wf.shape());
  const float* src = wf.data<float>();
  int8_t* dst = t->data<int8_t>();
  int64_t inner = 1;
  for (int64_t i = axis + 1; i < wf.rank(); ++i) inner *= wf.dim(i);
  const int64_t channels = wf.dim(axis);
  for (int64_t i = 0; i < wf.numel(); ++i)
    dst[i] = quantize_s8(src[i], out->scale.size() == 1 ? out->scale[0] : out->scale[(i / inner) % channels]);
  out->folded = t;
  return "";
}

// The bias: absent, a float constant, or DQ(int32 constant), as m float
// values (vals) and, where its scale is exactly x_scale * w_scale[c], the
// int32 constant itself (then it adds to the accumulator).
struct Bias {
  bool present = false;
  std::vector<float> vals;  // float value per channel (beta applied)
  Value* int32 = nullptr;   // the exact int32 form, when it exists
  Value* f32 = nullptr;     // the float constant as is, when usable
};

std::string match_bias(Value* v, int64_t m, float beta, float x_scale, const std::vector<float>& w_scale, Bias* out) {
  if (!v) return "";
  out->present = true;
  auto broadcast = [&](const Tensor& t) { return t.numel() == m || t.numel() == 1; };
  auto plain = [&](const Tensor& t) { return t.rank() <= 1 || (t.rank() == 2 && t.dim(0) == 1); };
  out->vals.assign(static_cast<size_t>(m), 0.f);
  if (const_of(v, DType::kFloat32)) {
    const Tensor& t = *v->constant();
    if (!broadcast(t) || !plain(t)) return "the bias does not broadcast as one value per output channel";
    for (int64_t c = 0; c < m; ++c) out->vals[c] = t.data<float>()[t.numel() == 1 ? 0 : c] * beta;
    if (t.numel() == m && t.rank() == 1 && beta == 1.f) out->f32 = v;
    return "";
  }
  Node* dq = producer_of_kind(v, OpKind::kDequantizeLinear);
  if (!dq || dq->attr_int("block_size", 0) != 0 || !const_of(dq->input(0), DType::kInt32))
    return "the bias is neither a float32 constant nor DequantizeLinear of an int32 constant";
  const Tensor& b = *dq->input(0)->constant();
  if (!broadcast(b) || !plain(b)) return "the bias does not broadcast as one value per output channel";
  if (!const_of(dq->input(1), DType::kFloat32)) return "the bias scale is not a float32 constant";
  std::string zp = zero_point_problem(dq->input(2), DType::kInt32, "the bias");
  if (!zp.empty()) return zp;
  const std::vector<float> s = floats_of(*dq->input(1)->constant());
  if (!(s.size() == 1 || static_cast<int64_t>(s.size()) == m)) return "the bias has neither one scale nor one per channel";
  bool exact = beta == 1.f && b.numel() == m && b.rank() == 1;
  for (int64_t c = 0; exact && c < m; ++c)
    exact = s[s.size() == 1 ? 0 : c] == x_scale * w_scale[w_scale.size() == 1 ? 0 : c];
  if (exact) out->int32 = dq->input(0);
  for (int64_t c = 0; c < m; ++c) {
    const int32_t q = b.data<int32_t>()[b.numel() == 1 ? 0 : c];
    // The DequantizeLinear kernel's arithmetic, then Gemm's beta.
    out->vals[c] = static_cast<float>(q) * s[s.size() == 1 ? 0 : c] * beta;
  }
  return "";
}

bool swallowable(const Value* v) { return v && !v->is_graph_output() && v->uses().size() == 1; }

// Shapes that cannot be proven different (unknown dims match anything).
bool shapes_may_match(const Value* a, const Value* b) {
  if (!a->has_shape() || !b->has_shape()) return true;
  if (a->shape().size() != b->shape().size()) return false;
  for (size_t i = 0; i < a->shape().size(); ++i) {
    const int64_t x = a->shape()[i], y = b->shape()[i];
    if (x >= 0 && y >= 0 && x != y) return false;
  }
  return true;
}

// What follows the Conv/Gemm and is fused into it.
struct Epilogue {
  std::vector<Node*> absorbed;
  std::vector<float> affine_s, affine_t;  // ChannelAffine (empty: none)
  Value* z = nullptr;
  bool z_int8 = false;
  float z_scale = 1.f;
  int32_t z_zp = 0;
  std::string act;
  std::vector<float> act_params;
  Value* last = nullptr;       // the float value the fused node replaces
  std::vector<Node*> requant;  // Q nodes folded in
  float y_scale = 1.f;
  int32_t y_zp = 0;
  std::string no_requant;      // why the output stays float
};

// Reads Clip's bounds from inputs (opset 11+) or attributes (older).
bool clip_bounds(const Node& clip, float* lo, float* hi) {
  *lo = clip.attr_float("min", -INFINITY);
  *hi = clip.attr_float("max", INFINITY);
  for (int i = 1; i <= 2; ++i) {
    const Value* b = clip.input(i);
    if (!b) continue;
    if (!const_of(b, DType::kFloat32) || b->constant()->numel() != 1) return false;
    (i == 1 ? *lo : *hi) = b->constant()->data<float>()[0];
  }
  return true;
}

// ChannelAffine(y, s, t) with constant [m] (or one-element) s and t.
bool channel_affine(const Node& n, const Value* y, int64_t m, std::vector<float>* s, std::vector<float>* t) {
  if (n.kind() != OpKind::kChannelAffine || n.input(0) != y || !n.output(0)) return false;
  const Value* sv = n.input(1);
  const Value* tv = n.num_inputs() > 2 ? n.input(2) : nullptr;
  if (!const_of(sv, DType::kFloat32) || (tv && !const_of(tv, DType::kFloat32))) return false;
  auto ok = [&](const Tensor& x) { return x.numel() == m || x.numel() == 1; };
  if (!ok(*sv->constant()) || (tv && !ok(*tv->constant()))) return false;
  s->assign(static_cast<size_t>(m), 0.f);
  t->assign(static_cast<size_t>(m), 0.f);
  for (int64_t c = 0; c < m; ++c) {
    (*s)[c] = sv->constant()->data<float>()[sv->constant()->numel() == 1 ? 0 : c];
    if (tv) (*t)[c] = tv->constant()->data<float>()[tv->constant()->numel() == 1 ? 0 : c];
  }
  return true;
}

Epilogue match_epilogue(Value* y, int64_t m) {
  Epilogue ep;
  ep.last = y;
  if (swallowable(ep.last)) {
    Node* a = ep.last->uses()[0].node;
    if (channel_affine(*a, ep.last, m, &ep.affine_s, &ep.affine_t)) {
      ep.absorbed.push_back(a);
      ep.last = a->output(0);
    }
  }
  if (swallowable(ep.last)) {
    const Use u = ep.last->uses()[0];
    Node* add = u.node;
    Value* other = add->kind() == OpKind::kAdd && add->num_inputs() == 2 ? add->input(1 - u.index) : nullptr;
    if (other && other != ep.last && !other->is_constant() && add->output(0) && other->dtype() == DType::kFloat32 &&
        shapes_may_match(other, ep.last) && shapes_may_match(add->output(0), ep.last)) {
      Value* zq = nullptr;
      float zs = 1.f;
      int32_t zz = 0;
      if (match_act_dq(other, "the residual", &zq, &zs, &zz).empty()) {
        ep.z = zq;
        ep.z_int8 = true;
        ep.z_scale = zs;
        ep.z_zp = zz;
      } else {
        ep.z = other;
      }
      ep.absorbed.push_back(add);
      ep.last = add->output(0);
    }
  }
  if (swallowable(ep.last)) {
    Node* a = ep.last->uses()[0].node;
    float lo, hi;
    if (a->kind() == OpKind::kRelu && a->output(0)) {
      ep.act = "Relu";
      ep.absorbed.push_back(a);
      ep.last = a->output(0);
    } else if (a->kind() == OpKind::kClip && a->output(0) && ep.last->uses()[0].index == 0 && clip_bounds(*a, &lo, &hi)) {
      ep.act = "Clip";
      ep.act_params = {lo, hi};
      ep.absorbed.push_back(a);
      ep.last = a->output(0);
    }
  }
  if (ep.last->uses().empty()) {
    ep.no_requant = "the output is a graph output";
    return ep;
  }
  if (ep.last->is_graph_output()) {
    ep.no_requant = "the float output is also a graph output";
    return ep;
  }
  ep.no_requant = requant_users(ep.last, &ep.requant, &ep.y_scale, &ep.y_zp);
  if (!ep.no_requant.empty()) ep.requant.clear();
  return ep;
}

struct Lowering {
  OpKind kind;
  Node* root = nullptr;
  Attributes attrs;
  Value* xq = nullptr;
  float x_scale = 0.f;
  int32_t x_zp = 0;
  Weights w;
  Bias bias;
  Epilogue ep;
};

class LowerQdq final : public Pattern {
 public:
  // root: Conv or Gemm (lowered), or FusedConv / FusedGemm: a float layer
  // that fuse_conv_add_relu fused after this pass refused it; matching it
  // again (never rewriting) keeps the refusal's reason in the report of the
  // pipeline's last round.
  explicit LowerQdq(OpKind root) : root_(root) {}
  std::string_view name() const override { return conv() ? "qconv" : "qgemm"; }
  OpKind root() const override { return root_; }

  MatchResult match(const Graph&, const Node& n) const override {
    Node* node = const_cast<Node*>(&n);
    Lowering l;
    l.root = node;
    NOT_APPLICABLE_IF(n.num_inputs() < 2 || !n.output(0), "no weight input or no output");
    // A float layer the model did not quantize is not an instance.
    NOT_APPLICABLE_IF(!producer_of_kind(n.input(0), OpKind::kDequantizeLinear) &&
                          !producer_of_kind(n.input(1), OpKind::kDequantizeLinear),
                      "neither input is dequantized");
    NO_MATCH_IF(n.output(0)->dtype() != DType::kFloat32, "the output is ", dtype_name(n.output(0)->dtype()),
                ", not float32");
    std::string why = match_act_dq(n.input(0), "the input", &l.xq, &l.x_scale, &l.x_zp);
    NO_MATCH_IF(!why.empty(), why);
    int64_t m = 0;
    if (conv()) {
      l.kind = OpKind::kQConv;
      // 2-D (NCHW) and 3-D (NCDHW, video) convolutions; the weight's rank
      // says which (1-D convs stay float).
      why = match_weight_dq(n.input(1), kConvWeightRank, 0, &l.w);
      NO_MATCH_IF(!why.empty(), why, " (QConv takes 2-D and 3-D convolutions)");
      m = l.w.tensor().dim(0);
      for (const char* a : {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"})
        if (n.has_attr(a)) l.attrs[a] = n.attrs().at(a);
      why = match_bias(n.input(2), m, 1.f, l.x_scale, l.w.scale, &l.bias);
      NO_MATCH_IF(!why.empty(), why);
    } else {
      l.kind = OpKind::kQGemm;
      NO_MATCH_IF(n.attr_int("transA", 0) != 0, "transA is set");
      NO_MATCH_IF(l.xq->has_shape() && l.xq->shape().size() != 2, "the input is not 2-D");
      const bool trans_b = n.attr_int("transB", 0) != 0;
      why = match_weight_dq(n.input(1), 2, trans_b ? 0 : 1, &l.w);
      NO_MATCH_IF(!why.empty(), why);
      const float alpha = n.attr_float("alpha", 1.f);
      NO_MATCH_IF(!positive_finite(alpha), "alpha is not positive and finite");
      if (!trans_b) {
        // QGemm takes [M, K]: transpose [K, M] once here.
        const Tensor& src = l.w.tensor();
        const int64_t k = src.dim(0), mm = src.dim(1);
        auto t = std::make_shared<Tensor>(DType::kInt8, Shape{mm, k});
        for (int64_t i = 0; i < k; ++i)
          for (int64_t j = 0; j < mm; ++j) t->data<int8_t>()[j * k + i] = src.data<int8_t>()[i * mm + j];
        l.w.folded = t;
        l.w.value = nullptr;
      }
      if (alpha != 1.f)
        for (float& s : l.w.scale) s *= alpha;
      m = l.w.tensor().dim(0);
      why = match_bias(n.input(2), m, n.attr_float("beta", 1.f), l.x_scale, l.w.scale, &l.bias);
      NO_MATCH_IF(!why.empty(), why);
    }
    NO_MATCH_IF(fused(), "fused as a float layer before it could be lowered");
    l.ep = match_epilogue(n.output(0), m);
    Match mt{{node}, std::move(l)};
    return mt;
  }

  void rewrite(Rewriter& rw, const Match& mt) const override {
    const Lowering& l = std::any_cast<const Lowering&>(mt.data);
    const Epilogue& ep = l.ep;
    Node* root = l.root;
    const std::string name = root->name();
    const int64_t m = l.w.tensor().dim(0);
    Attributes attrs = l.attrs;
    std::vector<float> w_scale = l.w.scale;
    Value* bv = nullptr;
    if (!ep.affine_s.empty()) {
      // y = (acc * sx*sw[c] + b[c]) * s[c] + t[c]  ==>  acc * sx*(sw[c]*s[c]) + (b[c]*s[c] + t[c]).
      std::vector<float> ws(static_cast<size_t>(m)), b(static_cast<size_t>(m));
      for (int64_t c = 0; c < m; ++c) {
        ws[c] = w_scale[w_scale.size() == 1 ? 0 : c] * ep.affine_s[c];
        const float b0 = l.bias.present ? l.bias.vals[c] : 0.f;
        b[c] = b0 * ep.affine_s[c] + ep.affine_t[c];
      }
      w_scale = ws;
      Tensor t(DType::kFloat32, Shape{m});
      std::copy(b.begin(), b.end(), t.data<float>());
      bv = rw.add_constant(name + "_bias", std::move(t));
    } else if (l.bias.present) {
      if (l.bias.int32) {
        bv = l.bias.int32;
      } else if (l.bias.f32) {
        bv = l.bias.f32;
      } else {
        Tensor t(DType::kFloat32, Shape{m});
        std::copy(l.bias.vals.begin(), l.bias.vals.end(), t.data<float>());
        bv = rw.add_constant(name + "_bias", std::move(t));
      }
    }
    attrs["x_scale"] = Attribute::of_float(l.x_scale);
    attrs["w_scale"] = Attribute::of_floats(w_scale);
    if (ep.z_int8) attrs["z_scale"] = Attribute::of_float(ep.z_scale);
    if (!ep.requant.empty()) attrs["y_scale"] = Attribute::of_float(ep.y_scale);
    // Zero points only where they are not 0: symmetric graphs keep their form.
    if (l.x_zp) attrs["x_zero_point"] = Attribute::of_int(l.x_zp);
    if (ep.z_int8 && ep.z_zp) attrs["z_zero_point"] = Attribute::of_int(ep.z_zp);
    if (!ep.requant.empty() && ep.y_zp) attrs["y_zero_point"] = Attribute::of_int(ep.y_zp);
    if (!ep.act.empty()) attrs["activation"] = Attribute::of_string(ep.act);
    if (!ep.act_params.empty()) attrs["activation_params"] = Attribute::of_floats(ep.act_params);

    Value* wv = l.w.folded ? rw.add_constant(name + "_w_int8", Tensor(*l.w.folded)) : l.w.value;
    const bool requant = !ep.requant.empty();
    Value* out = rw.add_value(name + (requant ? "_int8" : "_out"), requant ? DType::kInt8 : DType::kFloat32,
                              ep.last->has_shape() ? &ep.last->shape() : nullptr);
    if (requant) {
      for (Node* q : ep.requant) rw.replace(q->output(0), out);
      for (Node* q : ep.requant) rw.remove(q);
    } else {
      rw.replace(ep.last, out);
    }
    for (auto it = ep.absorbed.rbegin(); it != ep.absorbed.rend(); ++it) rw.remove(*it);
    rw.remove(root);
    rw.add_node(l.kind, name, {l.xq, wv, bv, ep.z}, {out}, std::move(attrs));
  }

 private:
  bool conv() const { return root_ == OpKind::kConv || root_ == OpKind::kFusedConv; }
  bool fused() const { return root_ == OpKind::kFusedConv || root_ == OpKind::kFusedGemm; }
  OpKind root_;
};

// DQ(a) + DQ(b) -> [Relu] -> Q  ==>  QAdd(a, b): the residual Add of
// onnxruntime's Q/DQ graphs, whose convs requantize before the Add (so the
// conv lowering above cannot take the Add into its epilogue). Exact: QAdd
// performs the DQ, Add, Relu and Q kernels' operations (ops.def). Guards:
// both inputs DQs of int8 with one scale and zero point, the same static
// shape (no broadcasting); the Add (and Relu) outputs used once, not graph
// outputs; every user of the last value a Q to int8 with one scale and
// zero point.
struct QAddMatch {
  Node* add = nullptr;
  Node* relu = nullptr;
  Value* a = nullptr;
  Value* b = nullptr;
  float a_scale = 1.f, b_scale = 1.f, y_scale = 1.f;
  int32_t a_zp = 0, b_zp = 0, y_zp = 0;
  std::vector<Node*> qs;
};

class LowerQAdd final : public Pattern {
 public:
  std::string_view name() const override { return "qadd"; }
  OpKind root() const override { return OpKind::kAdd; }

  MatchResult match(const Graph&, const Node& n) const override {
    Node* add = const_cast<Node*>(&n);
    NOT_APPLICABLE_IF(n.num_inputs() != 2 || !n.output(0) ||
                          !producer_of_kind(n.input(0), OpKind::kDequantizeLinear) ||
                          !producer_of_kind(n.input(1), OpKind::kDequantizeLinear),
                      "not an Add of two dequantized tensors");
    QAddMatch m;
    m.add = add;
    std::string why = match_act_dq(n.input(0), "the first input", &m.a, &m.a_scale, &m.a_zp);
    if (why.empty()) why = match_act_dq(n.input(1), "the second input", &m.b, &m.b_scale, &m.b_zp);
    NO_MATCH_IF(!why.empty(), why);
    const Value* x = n.input(0);
    const Value* y = n.input(1);
    // Equal shapes (an unknown dim, the batch, on both sides alike): a
    // residual's two branches. QAdd checks the run-time shapes too.
    NO_MATCH_IF(!x->has_shape() || !y->has_shape() || x->shape() != y->shape(),
                "the inputs' shapes are not known to be equal (QAdd does not broadcast)");
    Value* last = add->output(0);
    if (swallowable(last) && last->uses()[0].node->kind() == OpKind::kRelu && last->uses()[0].node->output(0)) {
      m.relu = last->uses()[0].node;
      last = m.relu->output(0);
    }
    NO_MATCH_IF(last->is_graph_output() || last->uses().empty(), "the sum is a graph output or unused");
    why = requant_users(last, &m.qs, &m.y_scale, &m.y_zp);
    NO_MATCH_IF(!why.empty(), "the sum: ", why);
    return Match{{add}, std::move(m)};
  }

  void rewrite(Rewriter& rw, const Match& mt) const override {
    const QAddMatch& m = std::any_cast<const QAddMatch&>(mt.data);
    Attributes attrs;
    attrs["a_scale"] = Attribute::of_float(m.a_scale);
    attrs["b_scale"] = Attribute::of_float(m.b_scale);
    attrs["y_scale"] = Attribute::of_float(m.y_scale);
    if (m.a_zp) attrs["a_zero_point"] = Attribute::of_int(m.a_zp);
    if (m.b_zp) attrs["b_zero_point"] = Attribute::of_int(m.b_zp);
    if (m.y_zp) attrs["y_zero_point"] = Attribute::of_int(m.y_zp);
    if (m.relu) attrs["activation"] = Attribute::of_string("Relu");
    const Value* last = m.relu ? m.relu->output(0) : m.add->output(0);
    const std::string name = m.add->name();
    Value* out = rw.add_value(name + "_int8", DType::kInt8, last->has_shape() ? &last->shape() : nullptr);
    for (Node* q : m.qs) rw.replace(q->output(0), out);
    for (Node* q : m.qs) rw.remove(q);
    if (m.relu) rw.remove(m.relu);
    rw.remove(m.add);
    rw.add_node(OpKind::kQAdd, name, {m.a, m.b}, {out}, std::move(attrs));
  }
};

// The uint8 -> int8 rewrite of activations (see the top of the file). Root:
// the QuantizeLinear.
struct U8Activation {
  Node* q = nullptr;
  std::vector<Node*> dqs;
  int32_t zp = 0;  // the uint8 zero point
};

class U8ActivationToInt8 final : public Pattern {
 public:
  std::string_view name() const override { return "uint8_activation"; }
  OpKind root() const override { return OpKind::kQuantizeLinear; }

  MatchResult match(const Graph&, const Node& n) const override {
    Node* q = const_cast<Node*>(&n);
    Value* y = q->output(0);
    NOT_APPLICABLE_IF(!y || y->dtype() != DType::kUInt8, "not a QuantizeLinear to uint8");
    NO_MATCH_IF(q->attr_int("block_size", 0) != 0, "block-quantized");
    NO_MATCH_IF(y->is_graph_output(), "its uint8 output is a graph output");
    NO_MATCH_IF(y->uses().empty(), "its output is unused");
    const Value* s = q->input(1);
    NO_MATCH_IF(!const_of(s, DType::kFloat32) || s->constant()->numel() != 1, "the scale is not one float32 constant");
    const Value* zp = q->input(2);
    NO_MATCH_IF(zp && (!const_of(zp, DType::kUInt8) || zp->constant()->numel() != 1),
                "the zero point is not one uint8 constant");
    U8Activation u;
    u.q = q;
    u.zp = zp ? static_cast<int32_t>(zp->constant()->int_at(0)) : 0;
    const float scale = s->constant()->data<float>()[0];
    for (const Use& use : y->uses()) {
      Node* dq = use.node;
      NO_MATCH_IF(dq->kind() != OpKind::kDequantizeLinear || use.index != 0, "it is read by ", dq->describe(),
                  ", not only by DequantizeLinear nodes");
      NO_MATCH_IF(dq->attr_int("block_size", 0) != 0 || !dq->output(0), dq->describe(), " is block-quantized");
      const Value* ds = dq->input(1);
      const Value* dz = dq->input(2);
      NO_MATCH_IF(!const_of(ds, DType::kFloat32) || ds->constant()->numel() != 1 ||
                      ds->constant()->data<float>()[0] != scale,
                  dq->describe(), " does not use the QuantizeLinear's scale");
      NO_MATCH_IF(dz ? !const_of(dz, DType::kUInt8) || dz->constant()->numel() != 1 ||
                           dz->constant()->int_at(0) != u.zp
                     : u.zp != 0,
                  dq->describe(), " does not use the QuantizeLinear's zero point");
      u.dqs.push_back(dq);
    }
    return Match{{q}, std::move(u)};
  }

  void rewrite(Rewriter& rw, const Match& mt) const override {
    const U8Activation& u = std::any_cast<const U8Activation&>(mt.data);
    Tensor zt(DType::kInt8, Shape{});
    zt.data<int8_t>()[0] = static_cast<int8_t>(u.zp - 128);
    Value* zp = rw.add_constant(u.q->name() + "_zero_point_int8", std::move(zt));
    Value* y = u.q->output(0);
    Value* y8 = rw.add_value(y->name() + "_int8", DType::kInt8, y->has_shape() ? &y->shape() : nullptr);
    Value* x = u.q->input(0);
    Value* scale = u.q->input(1);
    const std::string qname = u.q->name();
    for (Node* dq : u.dqs) {
      Value* out = dq->output(0);
      Attributes attrs = dq->attrs();
      const std::string name = dq->name();
      Value* f = rw.add_value(out->name() + "_from_int8", out->dtype(), out->has_shape() ? &out->shape() : nullptr);
      rw.replace(out, f);
      rw.remove(dq);
      rw.add_node(OpKind::kDequantizeLinear, name, {y8, scale, zp}, {f}, attrs);
    }
    Attributes qattrs = u.q->attrs();
    qattrs.erase("output_dtype");
    rw.remove(u.q);
    rw.add_node(OpKind::kQuantizeLinear, qname, {x, scale, zp}, {y8}, std::move(qattrs));
  }
};

}  // namespace

std::unique_ptr<Pass> make_u8_activations_to_int8() {
  std::vector<std::unique_ptr<Pattern>> p;
  p.push_back(std::make_unique<U8ActivationToInt8>());
  return std::make_unique<PatternPass>("u8_activations_to_int8",
                                       "uint8 activation Q/DQ (zero point z) as int8 ones (zero point z - 128)",
                                       std::move(p));
}

std::unique_ptr<Pass> make_lower_qdq_to_int8() {
  std::vector<std::unique_ptr<Pattern>> p;
  p.push_back(std::make_unique<LowerQdq>(OpKind::kConv));
  p.push_back(std::make_unique<LowerQdq>(OpKind::kGemm));
  p.push_back(std::make_unique<LowerQdq>(OpKind::kFusedConv));
  p.push_back(std::make_unique<LowerQdq>(OpKind::kFusedGemm));
  p.push_back(std::make_unique<LowerQAdd>());
  return std::make_unique<PatternPass>("lower_qdq_to_int8",
                                       "run DQ -> Conv/Gemm -> [BN] [Add] [Relu] -> Q groups, and DQ + DQ -> Add -> Q, "
                                       "on the int8 kernels",
                                       std::move(p));
}

void lower_qdq_to_int8(Graph& g) {
  PassManagerOptions o;
  o.passes = {"u8_activations_to_int8", "lower_qdq_to_int8", "lower_int8_maxpool", "eliminate_dead_code"};
  run_passes(g, o);
  infer_shapes(g);
  verify(g);
}

}  // namespace engine
