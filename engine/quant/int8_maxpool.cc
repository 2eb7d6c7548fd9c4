// lower_int8_maxpool (see int8_maxpool.h for the rewrite, why it is exact,
// and the guards).
#include "quant/int8_maxpool.h"

#include <cmath>

namespace engine {
namespace {

// A QuantizeLinear to int8 with zero point 0 and one positive scale.
bool int8_q(const Node* q, float* scale) {
  if (q->kind() != OpKind::kQuantizeLinear || q->attr_int("block_size", 0) != 0) return false;
  const Value* s = q->input(1);
  if (!s || !s->is_constant() || s->constant()->dtype() != DType::kFloat32 || s->constant()->numel() != 1)
    return false;
  const Value* zp = q->input(2);
  if (zp) {
    if (!zp->is_constant() || zp->constant()->dtype() != DType::kInt8 || zp->constant()->int_at(0) != 0) return false;
  } else if (q->attr_int("output_dtype", 0) != static_cast<int64_t>(DType::kInt8)) {
    return false;
  }
  *scale = s->constant()->data<float>()[0];
  return *scale > 0.f && std::isfinite(*scale) && q->output(0) && !q->output(0)->is_graph_output();
}

bool try_rewrite(Graph& g, Node* mp) {
  if (mp->num_outputs() > 1 && mp->output(1)) return false;
  if (mp->attr_ints("kernel_shape").size() != 2) return false;
  const std::string ap = mp->attr_string("auto_pad", "NOTSET");
  if (ap != "NOTSET" && ap != "VALID" && !ap.empty()) return false;
  Value* x = mp->input(0);
  Node* conv = x ? x->producer() : nullptr;
  if (!conv || conv->kind() != OpKind::kQConv || conv->has_attr("y_scale")) return false;
  if (x->is_graph_output() || x->uses().size() != 1) return false;
  Value* y = mp->output(0);
  if (!y || y->is_graph_output() || y->uses().empty()) return false;
  std::vector<Node*> qs;
  float scale = 0.f;
  for (const auto& use : y->uses()) {
    float s = 0.f;
    if (!int8_q(use.node, &s) || use.index != 0) return false;
    if (!qs.empty() && s != scale) return false;
    scale = s;
    qs.push_back(use.node);
  }
  conv->set_attr("y_scale", Attribute::of_float(scale));
  x->set_type(DType::kInt8);
  y->set_type(DType::kInt8);
  for (Node* q : qs) {
    g.replace_all_uses(q->output(0), y);
    g.remove_node(q);
  }
  return true;
}

}  // namespace

bool lower_int8_maxpool(Graph& g) {
  std::vector<Node*> pools;
  for (Node* n : g.nodes())
    if (n->kind() == OpKind::kMaxPool) pools.push_back(n);
  bool any = false;
  for (Node* mp : pools) any |= try_rewrite(g, mp);
  return any;
}

}  // namespace engine
