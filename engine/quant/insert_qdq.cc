// insert_qdq: Q/DQ placement for TensorRT-style explicit int8 (rules and
// preconditions in insert_qdq.h).
//
// Two phases: first every node says which of its inputs it wants quantized
// (an activation per tensor, or a constant weight per channel), reading the
// graph only; then the pairs are created, one per tensor, and the requesting
// inputs are rewired. Deciding before rewriting keeps the residual-Add
// analysis (which looks at producers) independent of pairs already placed.
#include "quant/insert_qdq.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "quant/qparams.h"
#include "quant/quantize_weights.h"

namespace engine {
namespace {

enum class Role { kActivation, kWeight };

struct Request {
  Node* node;
  int input;
  Role role;
  int axis;  // weights: the per-channel axis
};

bool kept_in_float(const Node& n, const std::set<std::string>& keep) {
  if (keep.count(n.name())) return true;
  for (const std::string& o : n.origin())
    if (keep.count(o)) return true;
  return false;
}

// Follows Identity nodes back to a constant (exporters route shared or
// renamed parameters through Identity); nullptr if the value is not one.
const Value* constant_source(const Value* v) {
  while (v && !v->is_constant()) {
    const Node* p = v->producer();
    if (!p || p->kind() != OpKind::kIdentity) return nullptr;
    v = p->input(0);
  }
  return v;
}

bool is_float_activation(const Value* v) {
  return v && !v->is_constant() && (v->dtype() == DType::kFloat32 || v->dtype() == DType::kUndefined);
}

// True if `v` is the output of a Conv that could take an Add into its
// epilogue: reached through ops a conv absorbs (BN, per-channel affine,
// Identity), each value on the way read only by the chain.
bool is_fusable_conv_output(const Value* v) {
  while (v) {
    if (v->uses().size() != 1 || v->is_graph_output()) return false;
    const Node* p = v->producer();
    if (!p) return false;
    switch (p->kind()) {
      case OpKind::kConv:
        return true;
      case OpKind::kFusedConv:
        return p->attr_string("activation", "").empty() && !p->input(3);
      case OpKind::kBatchNormalization:
      case OpKind::kChannelAffine:
      case OpKind::kIdentity:
        v = p->input(0);
        break;
      default:
        return false;
    }
  }
  return false;
}

// True if `v` reaches a comparison (Greater, GreaterOrEqual, Less,
// LessOrEqual, Equal) through at most `depth` elementwise arithmetic nodes:
// the Add that made it is a spiking neuron's membrane update (h = v + I,
// then h - v_th >= 0), not a residual connection.
bool feeds_comparison(const Value* v, int depth = 3) {
  for (const auto& use : v->uses()) {
    const Node* c = use.node;
    switch (c->kind()) {
      case OpKind::kGreater:
      case OpKind::kGreaterOrEqual:
      case OpKind::kLess:
      case OpKind::kLessOrEqual:
      case OpKind::kEqual:
        return true;
      case OpKind::kSub:
      case OpKind::kAdd:
      case OpKind::kMul:
      case OpKind::kDiv:
        if (depth > 0 && feeds_comparison(c->output(0), depth - 1)) return true;
        break;
      default:
        break;
    }
  }
  return false;
}

bool same_known_shape(const Value* a, const Value* b) {
  if (!a->has_shape() || !b->has_shape()) return true;  // unknown: assume a residual
  return a->shape() == b->shape();
}

bool name_taken(const Graph& g, const std::string& name) {
  if (g.find_value(name)) return true;
  for (const Node* n : g.nodes())
    if (n->name() == name) return true;
  return false;
}

// `base` itself when free (readable names in the exported ONNX), else a
// numbered variant.
std::string fresh_name(Graph& g, const std::string& base) {
  return name_taken(g, base) ? g.unique_name(base) : base;
}

std::shared_ptr<const Tensor> scalar_float(float v) {
  auto t = std::make_shared<Tensor>(DType::kFloat32, Shape{});
  t->data<float>()[0] = v;
  return t;
}

std::shared_ptr<const Tensor> int8_zeros(const Shape& shape) {
  auto t = std::make_shared<Tensor>(DType::kInt8, shape);
  std::memset(t->raw(), 0, t->nbytes());
  return t;
}

// True when every value of v is >= 0 by construction (see
// InsertQdqOptions::asymmetric_nonnegative).
bool nonnegative_by_construction(const Value* v, int depth = 0) {
  const Node* p = v ? v->producer() : nullptr;
  if (!p || depth > 8) return false;
  switch (p->kind()) {
    case OpKind::kRelu:
    case OpKind::kSigmoid:
      return true;
    case OpKind::kClip: {
      const Value* lo = p->num_inputs() > 1 ? p->input(1) : nullptr;
      if (lo && lo->is_constant() && lo->constant()->dtype() == DType::kFloat32 && lo->constant()->numel() == 1)
        return lo->constant()->data<float>()[0] >= 0.f;
      return !lo && p->attr_float("min", -1.f) >= 0.f;
    }
    case OpKind::kMaxPool:
    case OpKind::kAveragePool:
    case OpKind::kGlobalAveragePool:
    case OpKind::kGlobalMaxPool:
      return nonnegative_by_construction(p->input(0), depth + 1);
    default:
      return false;
  }
}

class QdqBuilder {
 public:
  QdqBuilder(Graph& g, InsertQdqResult& result, bool asymmetric) : g_(g), result_(result), asymmetric_(asymmetric) {}

  // Q -> DQ on an activation; returns the dequantized value.
  Value* activation(Value* x, float amax) {
    auto it = activations_.find(x);
    if (it != activations_.end()) return it->second;
    const std::string& name = x->name();
    const bool unsigned_range = asymmetric_ && nonnegative_by_construction(x);
    // [0, amax] over the int8 values -128 .. 127 (zero point -128).
    const float scale = unsigned_range ? (amax > 0.f && std::isfinite(amax) ? amax / 255.f : 1.f)
                                       : scale_from_amax(amax);
    auto zt = std::make_shared<Tensor>(DType::kInt8, Shape{});
    zt->data<int8_t>()[0] = static_cast<int8_t>(unsigned_range ? -128 : 0);
    if (unsigned_range) result_.activation_zero_points[name] = -128;
    Value* s = g_.add_constant(fresh_name(g_, name + "_scale"), scalar_float(scale));
    Value* zp = g_.add_constant(fresh_name(g_, name + "_zero_point"), zt);
    const Shape* shape = x->has_shape() ? &x->shape() : nullptr;
    Value* q = g_.add_value(fresh_name(g_, name + "_quantized"), DType::kInt8, shape);
    Value* dq = g_.add_value(fresh_name(g_, name + "_dequantized"), DType::kFloat32, shape);
    g_.add_node(OpKind::kQuantizeLinear, fresh_name(g_, name + "_QuantizeLinear"), {x, s, zp}, {q});
    g_.add_node(OpKind::kDequantizeLinear, fresh_name(g_, name + "_DequantizeLinear"), {q, s, zp}, {dq});
    activations_[x] = dq;
    result_.activation_scales[name] = scale;
    result_.num_activation_pairs += 1;
    return dq;
  }

  // int8 per-channel constant -> DQ(axis); returns the dequantized value.
  Value* weight(const Value* w, int axis) {
    auto key = std::make_pair(w, axis);
    auto it = weights_.find(key);
    if (it != weights_.end()) return it->second;
    const std::string& name = w->name();
    QuantizedWeights qw = quantize_weights(*w->constant(), axis);
    const int64_t channels = w->constant()->dim(axis);
    auto scale = std::make_shared<Tensor>(DType::kFloat32, Shape{channels});
    std::copy(qw.scale.begin(), qw.scale.end(), scale->data<float>());
    Value* q = g_.add_constant(fresh_name(g_, name + "_quantized"), std::make_shared<Tensor>(qw.values));
    Value* s = g_.add_constant(fresh_name(g_, name + "_scale"), scale);
    Value* zp = g_.add_constant(fresh_name(g_, name + "_zero_point"), int8_zeros({channels}));
    const Shape shape = w->constant()->shape();
    Value* dq = g_.add_value(fresh_name(g_, name + "_dequantized"), DType::kFloat32, &shape);
    Attributes attrs;
    attrs["axis"] = Attribute::of_int(axis);
    g_.add_node(OpKind::kDequantizeLinear, fresh_name(g_, name + "_DequantizeLinear"), {q, s, zp}, {dq},
                std::move(attrs));
    weights_[key] = dq;
    result_.num_weights += 1;
    return dq;
  }

 private:
  Graph& g_;
  InsertQdqResult& result_;
  bool asymmetric_;
  std::map<const Value*, Value*> activations_;
  std::map<std::pair<const Value*, int>, Value*> weights_;
};

class Planner {
 public:
  Planner(const InsertQdqOptions& options, InsertQdqResult& result) : options_(options), result_(result) {}

  void plan(Node* n) {
    switch (n->kind()) {
      case OpKind::kConv:
      case OpKind::kFusedConv:
        plan_weighted(n, 1, 0);
        if (n->kind() == OpKind::kFusedConv && n->input(3) && planned_)
          activation_if_calibrated(n, 3);
        break;
      case OpKind::kGemm:
      case OpKind::kFusedGemm:
        plan_weighted(n, 1, n->attr_int("transB", 0) ? 0 : 1);
        break;
      case OpKind::kMatMul:
        plan_matmul(n);
        break;
      case OpKind::kAdd:
        plan_residual_add(n);
        break;
      default:
        break;
    }
  }

  const std::vector<Request>& requests() const { return requests_; }

 private:
  bool calibrated(const Value* v) const { return v && options_.amax.count(v->name()) != 0; }

  void skip(const Node* n, std::string reason) { result_.skipped.emplace_back(n->name(), std::move(reason)); }

  // Activation input 0 and constant weight input `w_index` (per channel on
  // `axis`), or nothing at all: a layer is int8 on both sides or not at all.
  void plan_weighted(Node* n, int w_index, int axis) {
    planned_ = false;
    Value* x = n->input(0);
    const Value* w = constant_source(n->input(w_index));
    if (!w) return skip(n, "its weight is not a constant");
    if (w->constant()->dtype() != DType::kFloat32) return skip(n, "its weight is not float32");
    if (axis >= w->constant()->rank()) return skip(n, "its weight has an unexpected rank");
    if (!is_float_activation(x)) return skip(n, "its input is not a float activation");
    if (!calibrated(x)) return skip(n, "no calibration data for its input '" + x->name() + "'");
    requests_.push_back({n, 0, Role::kActivation, -1});
    requests_.push_back({n, w_index, Role::kWeight, axis});
    planned_ = true;
  }

  void plan_matmul(Node* n) {
    Value* a = n->input(0);
    Value* b = n->input(1);
    if (constant_source(b)) {
      const int rank = constant_source(b)->constant()->rank();
      return plan_weighted(n, 1, rank >= 2 ? rank - 1 : 0);
    }
    // Two activations (attention-style products): both per tensor.
    if (!is_float_activation(a) || !is_float_activation(b)) return skip(n, "its inputs are not float activations");
    if (!calibrated(a) || !calibrated(b)) return skip(n, "no calibration data for its inputs");
    requests_.push_back({n, 0, Role::kActivation, -1});
    requests_.push_back({n, 1, Role::kActivation, -1});
  }

  void plan_residual_add(Node* n) {
    Value* a = n->input(0);
    Value* b = n->input(1);
    if (n->num_inputs() != 2 || !is_float_activation(a) || !is_float_activation(b) || a == b) return;
    if (!same_known_shape(a, b)) return;  // broadcasting: a bias or scale, not a residual
    const bool a_main = is_fusable_conv_output(a);
    const bool b_main = is_fusable_conv_output(b);
    if (!a_main && !b_main) return;
    // A membrane potential is state, not a residual stream: quantizing it
    // would add an error at every time step right before the threshold.
    if (feeds_comparison(n->output(0)))
      return skip(n, "its sum feeds a comparison (a spiking neuron's membrane update, not a residual)");
    const int skip_index = a_main ? 1 : 0;
    activation_if_calibrated(n, skip_index);
  }

  void activation_if_calibrated(Node* n, int index) {
    Value* v = n->input(index);
    if (!calibrated(v)) return skip(n, "no calibration data for its input '" + v->name() + "'");
    requests_.push_back({n, index, Role::kActivation, -1});
  }

  const InsertQdqOptions& options_;
  InsertQdqResult& result_;
  std::vector<Request> requests_;
  bool planned_ = false;
};

}  // namespace

InsertQdqResult insert_qdq(Graph& g, const InsertQdqOptions& options) {
  for (const Node* n : g.nodes())
    ENGINE_ENFORCE(n->kind() != OpKind::kQuantizeLinear && n->kind() != OpKind::kDequantizeLinear,
                   kInvalidArgument, "the model is already quantized (", n->describe(),
                   "); insert_qdq takes a float model");
  InsertQdqResult result;
  Planner planner(options, result);
  const std::vector<Node*> nodes = g.nodes();
  for (Node* n : nodes) {
    if (kept_in_float(*n, options.keep_fp32)) continue;
    planner.plan(n);
  }

  QdqBuilder builder(g, result, options.asymmetric_nonnegative);
  std::vector<Node*> identities;  // weight Identity chains that may lose their readers
  for (const Request& r : planner.requests()) {
    Value* in = r.node->input(r.input);
    if (r.role == Role::kActivation) {
      g.set_input(r.node, r.input, builder.activation(in, options.amax.at(in->name())));
      result.activation_consumers[in->name()].push_back(r.node->name());
    } else {
      const Value* w = constant_source(in);
      for (const Value* v = in; v != w; v = v->producer()->input(0))
        if (std::find(identities.begin(), identities.end(), v->producer()) == identities.end())
          identities.push_back(v->producer());
      g.set_input(r.node, r.input, builder.weight(w, r.axis));
      result.weight_consumers[w->name()].push_back(r.node->name());
    }
    if (result.quantized_nodes.empty() || result.quantized_nodes.back() != r.node->name())
      result.quantized_nodes.push_back(r.node->name());
  }
  // Remove Identity nodes nobody reads any more; repeat, since removing one
  // can free the Identity before it in a chain.
  for (bool changed = true; changed;) {
    changed = false;
    for (auto it = identities.begin(); it != identities.end(); ++it) {
      Value* out = (*it)->output(0);
      if (out && g.num_uses(out) == 0 && !out->is_graph_output()) {
        g.remove_node(*it);
        identities.erase(it);
        changed = true;
        break;
      }
    }
  }
  g.remove_unused_values();
  g.topo_sort();
  verify(g);
  return result;
}

}  // namespace engine
