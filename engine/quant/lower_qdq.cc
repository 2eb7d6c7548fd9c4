// lower_qdq_to_int8 (see lower_qdq.h for the rewrite and what it accepts).
//
//   x_q ─DQ(sx)─┐
//   w_q ─DQ(sw)─┼─ Conv ─ [Add(·, DQ(sz)(z_q) | z_f)] ─ [Relu|Clip] ─ [Q(sy) ...]
//   b ──────────┘
//     ==>  QConv(x_q, w_q, b, z) {x_scale=sx, w_scale=sw, z_scale=sz, y_scale=sy,
//                                 activation=Relu|Clip}
//
// Preconditions for each step, checked as a flat list of guards (a failed
// guard leaves the node alone, it is not an error):
//  - activation and residual quantizers: int8, zero point 0, one scale;
//  - weights: int8 constant (or a float constant under Q -> DQ with the same
//    parameters, folded here) with one scale or one per output channel;
//  - every value swallowed into the fused node (the Conv's output, the Add's)
//    has exactly one use and is not a graph output;
//  - the requantize step needs every user of the last value to be a Q with
//    the same int8 scale and zero point 0; those Qs disappear, their users
//    read QConv's int8 output directly.
// Why: this is the placement TensorRT and ModelOpt use for residual CNNs
// (quantize every Conv/Gemm input and each residual Add's skip input), so
// one pattern covers conv-bn-relu chains and residual blocks.
#include "quant/lower_qdq.h"

#include <cmath>
#include <set>

#include "ir/infer.h"
#include "quant/int8_maxpool.h"

namespace engine {
namespace {

Node* producer_of(const Value* v, OpKind kind) {
  Node* p = v ? v->producer() : nullptr;
  return p && p->kind() == kind ? p : nullptr;
}

bool const_of(const Value* v, DType t) { return v && v->is_constant() && v->constant()->dtype() == t; }

std::vector<float> floats_of(const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) out[i] = static_cast<float>(t.float_at(i));
  return out;
}

// A zero point that is absent, or a constant of type `t` holding zeros.
bool zero_point_ok(const Value* zp, DType t) {
  if (!zp) return true;
  if (!const_of(zp, t)) return false;
  for (int64_t i = 0; i < zp->constant()->numel(); ++i)
    if (zp->constant()->int_at(i) != 0) return false;
  return true;
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

// `v` = DQ(q) with q int8, one positive scale, zero point 0.
bool match_act_dq(const Value* v, Value** q, float* scale) {
  Node* dq = producer_of(v, OpKind::kDequantizeLinear);
  if (!dq || dq->attr_int("block_size", 0) != 0) return false;
  Value* x = dq->input(0);
  Value* s = dq->input(1);
  if (!x || x->dtype() != DType::kInt8) return false;
  if (!const_of(s, DType::kFloat32) || s->constant()->numel() != 1) return false;
  if (!zero_point_ok(dq->input(2), DType::kInt8)) return false;
  *scale = s->constant()->data<float>()[0];
  if (!positive_finite(*scale)) return false;
  *q = x;
  return true;
}

// A Q node quantizing to int8 with one scale and zero point 0; its scale.
bool match_requant_q(const Node* q, float* scale) {
  if (q->kind() != OpKind::kQuantizeLinear || q->attr_int("block_size", 0) != 0) return false;
  const Value* s = q->input(1);
  if (!const_of(s, DType::kFloat32) || s->constant()->numel() != 1) return false;
  const Value* zp = q->input(2);
  if (zp) {
    if (!zero_point_ok(zp, DType::kInt8)) return false;
  } else if (q->attr_int("output_dtype", 0) != static_cast<int64_t>(DType::kInt8)) {
    return false;
  }
  *scale = s->constant()->data<float>()[0];
  return positive_finite(*scale) && q->output(0) && !q->output(0)->is_graph_output();
}

struct Weights {
  Value* value = nullptr;               // an existing int8 constant, or
  std::shared_ptr<const Tensor> folded; // int8 made here from float weights
  std::vector<float> scale;             // 1 or one per channel
  const Tensor& tensor() const { return folded ? *folded : *value->constant(); }
};

// `v` = DQ(w_q) with w_q an int8 constant of rank `rank`, per-tensor or per
// channel along `axis`; or DQ(Q(w_f)) with w_f a float constant and the Q
// using the DQ's parameters.
bool match_weight_dq(const Value* v, int rank, int axis, Weights* out) {
  Node* dq = producer_of(v, OpKind::kDequantizeLinear);
  if (!dq || dq->attr_int("block_size", 0) != 0) return false;
  Value* x = dq->input(0);
  Value* s = dq->input(1);
  if (!x || !const_of(s, DType::kFloat32) || s->constant()->rank() > 1) return false;
  if (!zero_point_ok(dq->input(2), DType::kInt8)) return false;
  out->scale = floats_of(*s->constant());
  for (float f : out->scale)
    if (!positive_finite(f)) return false;
  auto axis_ok = [&](const Node& n, const Tensor& w) {
    if (out->scale.size() == 1 && s->constant()->rank() <= 1) return true;
    int64_t a = n.attr_int("axis", 1);
    if (a < 0) a += w.rank();
    return a == axis && w.dim(axis) == static_cast<int64_t>(out->scale.size());
  };
  if (const_of(x, DType::kInt8)) {
    if (x->constant()->rank() != rank || !axis_ok(*dq, *x->constant())) return false;
    out->value = x;
    return true;
  }
  Node* q = producer_of(x, OpKind::kQuantizeLinear);
  if (!q || q->attr_int("block_size", 0) != 0 || !const_of(q->input(0), DType::kFloat32)) return false;
  const Tensor& wf = *q->input(0)->constant();
  if (wf.rank() != rank || !axis_ok(*dq, wf) || !axis_ok(*q, wf)) return false;
  if (!const_of(q->input(1), DType::kFloat32) || floats_of(*q->input(1)->constant()) != out->scale) return false;
  const bool q_int8 = q->input(2) ? zero_point_ok(q->input(2), DType::kInt8)
                                  : q->attr_int("output_dtype", 0) == static_cast<int64_t>(DType::kInt8);
  if (!q_int8) return false;
  auto t = std::make_shared<Tensor>(DType::kInt8, wf.shape());
  const float* src = wf.data<float>();
  int8_t* dst = t->data<int8_t>();
  int64_t inner = 1;
  for (int i = axis + 1; i < rank; ++i) inner *= wf.dim(i);
  const int64_t channels = wf.dim(axis);
  for (int64_t i = 0; i < wf.numel(); ++i)
    dst[i] = quantize_s8(src[i], out->scale.size() == 1 ? out->scale[0] : out->scale[(i / inner) % channels]);
  out->folded = t;
  return true;
}

// The bias: absent, a float constant, or DQ(int32 constant). `m` channels;
// `beta` scales it (Gemm). Kept as int32 when its scale is exactly
// x_scale * w_scale[c] (then it adds to the accumulator); else dequantized
// to float, exactly as the DQ kernel would.
struct Bias {
  bool present = false;
  Value* value = nullptr;               // reuse as is, or
  std::shared_ptr<const Tensor> made;   // new constant
};

bool match_bias(Value* v, int64_t m, float beta, float x_scale, const std::vector<float>& w_scale, Bias* out) {
  if (!v) return true;
  out->present = true;
  auto broadcast = [&](const Tensor& t) { return t.numel() == m || t.numel() == 1; };
  auto plain = [&](const Tensor& t) { return t.rank() <= 1 || (t.rank() == 2 && t.dim(0) == 1); };
  auto float_bias = [&](const std::vector<float>& vals) {
    auto t = std::make_shared<Tensor>(DType::kFloat32, Shape{m});
    for (int64_t c = 0; c < m; ++c) t->data<float>()[c] = vals[vals.size() == 1 ? 0 : c] * beta;
    out->made = t;
  };
  if (const_of(v, DType::kFloat32)) {
    const Tensor& t = *v->constant();
    if (!broadcast(t) || !plain(t)) return false;
    if (t.numel() == m && t.rank() == 1 && beta == 1.f) out->value = v;
    else float_bias(floats_of(t));
    return true;
  }
  Node* dq = producer_of(v, OpKind::kDequantizeLinear);
  if (!dq || dq->attr_int("block_size", 0) != 0 || !const_of(dq->input(0), DType::kInt32)) return false;
  const Tensor& b = *dq->input(0)->constant();
  if (!broadcast(b) || !plain(b)) return false;
  if (!const_of(dq->input(1), DType::kFloat32) || !zero_point_ok(dq->input(2), DType::kInt32)) return false;
  const std::vector<float> s = floats_of(*dq->input(1)->constant());
  if (!(s.size() == 1 || static_cast<int64_t>(s.size()) == m)) return false;
  bool exact = beta == 1.f && b.numel() == m && b.rank() == 1;
  for (int64_t c = 0; exact && c < m; ++c)
    exact = s[s.size() == 1 ? 0 : c] == x_scale * w_scale[w_scale.size() == 1 ? 0 : c];
  if (exact) {
    out->value = dq->input(0);
    return true;
  }
  std::vector<float> vals(static_cast<size_t>(m));
  for (int64_t c = 0; c < m; ++c) {
    const int32_t q = b.data<int32_t>()[b.numel() == 1 ? 0 : c];
    vals[c] = static_cast<float>(q) * s[s.size() == 1 ? 0 : c];
  }
  float_bias(vals);
  return true;
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
  Value* z = nullptr;
  bool z_int8 = false;
  float z_scale = 1.f;
  std::string act;
  std::vector<float> act_params;
  Value* last = nullptr;        // the float value the fused node replaces
  std::vector<Node*> requant;   // Q nodes folded in
  float y_scale = 1.f;
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

Epilogue match_epilogue(Value* y) {
  Epilogue ep;
  ep.last = y;
  if (swallowable(ep.last)) {
    const Use u = ep.last->uses()[0];
    Node* add = u.node;
    Value* other = add->kind() == OpKind::kAdd && add->num_inputs() == 2 ? add->input(1 - u.index) : nullptr;
    if (other && other != ep.last && !other->is_constant() && add->output(0) &&
        shapes_may_match(other, ep.last)) {
      Value* zq = nullptr;
      float zs = 1.f;
      if (match_act_dq(other, &zq, &zs)) {
        ep.z = zq;
        ep.z_int8 = true;
        ep.z_scale = zs;
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
  if (!ep.last->is_graph_output() && !ep.last->uses().empty()) {
    std::set<Node*> qs;
    bool ok = true;
    float scale = 0.f;
    for (const Use& u : ep.last->uses()) {
      float s;
      if (u.index != 0 || !match_requant_q(u.node, &s) || (!qs.empty() && s != scale)) {
        ok = false;
        break;
      }
      scale = s;
      qs.insert(u.node);
    }
    if (ok) {
      ep.requant.assign(qs.begin(), qs.end());
      ep.y_scale = scale;
    }
  }
  return ep;
}

Value* add_const(Graph& g, const std::string& hint, std::shared_ptr<const Tensor> t) {
  return g.add_constant(g.unique_name(hint), std::move(t));
}

// Replaces `root` (Conv or Gemm) and its epilogue by one fused node.
void rewrite(Graph& g, Node* root, OpKind kind, Attributes attrs, Value* xq, float x_scale, const Weights& w,
             const Bias& bias, const Epilogue& ep) {
  const std::string name = root->name();
  attrs["x_scale"] = Attribute::of_float(x_scale);
  attrs["w_scale"] = Attribute::of_floats(w.scale);
  if (ep.z_int8) attrs["z_scale"] = Attribute::of_float(ep.z_scale);
  if (!ep.requant.empty()) attrs["y_scale"] = Attribute::of_float(ep.y_scale);
  if (!ep.act.empty()) attrs["activation"] = Attribute::of_string(ep.act);
  if (!ep.act_params.empty()) attrs["activation_params"] = Attribute::of_floats(ep.act_params);

  Value* wv = w.folded ? add_const(g, name + "_w_int8", w.folded) : w.value;
  Value* bv = bias.made ? add_const(g, name + "_bias", bias.made) : bias.value;
  const bool requant = !ep.requant.empty();
  Value* out = g.add_value(g.unique_name(name + (requant ? "_int8" : "_out")),
                           requant ? DType::kInt8 : DType::kFloat32,
                           ep.last->has_shape() ? &ep.last->shape() : nullptr);
  std::vector<std::string> origin = root->origin();
  for (Node* n : ep.absorbed) origin.insert(origin.end(), n->origin().begin(), n->origin().end());
  for (Node* q : ep.requant) origin.insert(origin.end(), q->origin().begin(), q->origin().end());

  if (requant) {
    for (Node* q : ep.requant) g.replace_all_uses(q->output(0), out);
    for (Node* q : ep.requant) g.remove_node(q);
  } else {
    g.replace_all_uses(ep.last, out);
  }
  for (auto it = ep.absorbed.rbegin(); it != ep.absorbed.rend(); ++it) g.remove_node(*it);
  g.remove_node(root);
  std::vector<Value*> inputs = {xq, wv, bias.present ? bv : nullptr, ep.z};
  Node* n = g.add_node(kind, name, inputs, {out}, std::move(attrs));
  n->add_origin(origin);
}

bool lower_conv(Graph& g, Node* conv) {
  Value* xq = nullptr;
  float x_scale = 0.f;
  if (conv->num_inputs() < 2 || !conv->output(0)) return false;
  if (!match_act_dq(conv->input(0), &xq, &x_scale)) return false;
  Weights w;
  if (!match_weight_dq(conv->input(1), 4, 0, &w)) return false;
  const int64_t m = w.tensor().dim(0);
  Bias bias;
  if (!match_bias(conv->input(2), m, 1.f, x_scale, w.scale, &bias)) return false;
  Attributes attrs;
  for (const char* a : {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"})
    if (conv->has_attr(a)) attrs[a] = conv->attrs().at(a);
  Epilogue ep = match_epilogue(conv->output(0));
  rewrite(g, conv, OpKind::kQConv, std::move(attrs), xq, x_scale, w, bias, ep);
  return true;
}

bool lower_gemm(Graph& g, Node* gemm) {
  Value* xq = nullptr;
  float x_scale = 0.f;
  if (gemm->num_inputs() < 2 || !gemm->output(0) || gemm->attr_int("transA", 0) != 0) return false;
  if (!match_act_dq(gemm->input(0), &xq, &x_scale)) return false;
  if (xq->has_shape() && xq->shape().size() != 2) return false;
  const bool trans_b = gemm->attr_int("transB", 0) != 0;
  Weights w;
  if (!match_weight_dq(gemm->input(1), 2, trans_b ? 0 : 1, &w)) return false;
  const float alpha = gemm->attr_float("alpha", 1.f);
  const float beta = gemm->attr_float("beta", 1.f);
  if (!positive_finite(alpha)) return false;
  if (!trans_b) {
    // QGemm takes [M, K]: transpose [K, M] once here.
    const Tensor& src = w.tensor();
    const int64_t k = src.dim(0), m = src.dim(1);
    auto t = std::make_shared<Tensor>(DType::kInt8, Shape{m, k});
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < m; ++j) t->data<int8_t>()[j * k + i] = src.data<int8_t>()[i * m + j];
    w.folded = t;
    w.value = nullptr;
  }
  if (alpha != 1.f)
    for (float& s : w.scale) s *= alpha;
  const int64_t m = w.tensor().dim(0);
  Bias bias;
  if (!match_bias(gemm->input(2), m, beta, x_scale, w.scale, &bias)) return false;
  Epilogue ep = match_epilogue(gemm->output(0));
  rewrite(g, gemm, OpKind::kQGemm, {}, xq, x_scale, w, bias, ep);
  return true;
}

// Removes Q/DQ nodes whose outputs nobody reads any more.
void remove_dead_qdq(Graph& g) {
  for (bool changed = true; changed;) {
    changed = false;
    const std::vector<Node*> nodes = g.nodes();
    for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {
      Node* n = *it;
      if (n->kind() != OpKind::kQuantizeLinear && n->kind() != OpKind::kDequantizeLinear) continue;
      bool dead = true;
      for (Value* o : n->outputs())
        if (o && (o->is_graph_output() || !o->uses().empty())) dead = false;
      if (!dead) continue;
      g.remove_node(n);
      changed = true;
    }
  }
}

}  // namespace

void lower_qdq_to_int8(Graph& g) {
  // Collect first: rewrites delete nodes, but never a Conv/Gemm other than
  // their own root, so these pointers stay valid.
  std::vector<Node*> todo;
  for (Node* n : g.nodes())
    if (n->kind() == OpKind::kConv || n->kind() == OpKind::kGemm) todo.push_back(n);
  bool any = false;
  for (Node* n : todo) any |= n->kind() == OpKind::kConv ? lower_conv(g, n) : lower_gemm(g, n);
  if (!any) return;
  lower_int8_maxpool(g);  // needs the lowered QConvs; see int8_maxpool.h
  remove_dead_qdq(g);
  g.remove_unused_values();
  g.topo_sort();
  infer_shapes(g);
  verify(g);
}

}  // namespace engine
