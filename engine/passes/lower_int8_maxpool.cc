// lower_int8_maxpool: keeps activations int8 across a MaxPool.
//
//   QConv(...) [float out] -> MaxPool -> Q(s) -> ...
//     ==>  QConv(...) {y_scale = s} [int8 out] -> MaxPool [int8] -> ...
//
// Exact: quantization q(v) = saturate(round_half_even(v / s) + zp) is monotone
// non-decreasing, so q(max(window)) = max(q(window)); the int8 MaxPool skips
// padded positions as the float one does (a window with no input position,
// impossible for a valid geometry, gives -128 = q(-inf)). The requantize that
// QConv's epilogue performs is the QuantizeLinear formula itself
// (quant_kernels.h), so the int8 result is bit for bit what the float graph's
// Q produced. (A NaN may differ: the float path's MaxPool decides which NaN
// survives, the int8 path saturates it first.)
//
// Guards: a 2-D MaxPool with one output (no Indices), auto_pad NOTSET or
// VALID; its input is a float QConv output used only by the MaxPool and not a
// graph output; every user of the MaxPool's output is a QuantizeLinear to
// int8 with the same scalar scale and zero point, none a graph output.
// Why: in torchvision ResNets the stem's conv -> relu -> maxpool would
// otherwise write and re-read a float tensor 4x the int8 size, and the next
// conv could not see that its input is >= 0 (the u8 VNNI path).
// Runs in the int8 pipeline right after lower_qdq_to_int8 (it needs QConvs).
//
// The second form is the Q/DQ onnxruntime's quantize_static puts around a pool, once
// lower_qdq_to_int8 has made the producer int8:
//
//   t [int8] -> DequantizeLinear(s, zp) -> MaxPool -> Q(s, zp) -> ...
//     ==>  t -> MaxPool [int8] -> ...
//
// Exact for the same scalar s and zp on both sides: Q(DQ(v)) = v (|v - zp|
// <= 255, so s * (v - zp) / s is within a few ulps of the integer and rounds
// back to it), and the max commutes with the monotone DQ and Q as above.
// Without it onnxruntime's u8s8 ResNet-50 pooled its stem in float (a float
// tensor 4x the int8 one, written and read back): 1.8 ms against 0.9 ms at
// batch 8 (Zen 4).
#include <cmath>

#include "ir/infer.h"
#include "passes/lower_qdq_to_int8.h"
#include "passes/pass.h"

namespace engine {
namespace {

// A QuantizeLinear to int8 with one positive scale and one zero point.
bool int8_q(const Node* q, float* scale, int64_t* zero_point) {
  if (q->kind() != OpKind::kQuantizeLinear || q->attr_int("block_size", 0) != 0) return false;
  const Value* s = q->input(1);
  if (!s || !s->is_constant() || s->constant()->dtype() != DType::kFloat32 || s->constant()->numel() != 1)
    return false;
  const Value* zp = q->input(2);
  *zero_point = 0;
  if (zp) {
    if (!zp->is_constant() || zp->constant()->dtype() != DType::kInt8 || zp->constant()->numel() != 1) return false;
    *zero_point = zp->constant()->int_at(0);
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
  Node* producer = x ? x->producer() : nullptr;
  if (!producer || x->is_graph_output()) return false;
  Value* dq_input = nullptr;
  float dq_scale = 0.f;
  int32_t dq_zp = 0;
  const bool from_dq = match_act_dq(x, "the pool's input", &dq_input, &dq_scale, &dq_zp).empty();
  if (!from_dq && (producer->kind() != OpKind::kQConv || producer->has_attr("y_scale") || x->uses().size() != 1))
    return false;
  Value* y = mp->output(0);
  if (!y || y->is_graph_output() || y->uses().empty()) return false;
  std::vector<Node*> qs;
  float scale = 0.f;
  int64_t zero_point = 0;
  for (const auto& use : y->uses()) {
    float s = 0.f;
    int64_t zp = 0;
    if (!int8_q(use.node, &s, &zp) || use.index != 0) return false;
    if (!qs.empty() && (s != scale || zp != zero_point)) return false;
    scale = s;
    zero_point = zp;
    qs.push_back(use.node);
  }
  if (from_dq) {
    if (scale != dq_scale || zero_point != dq_zp) return false;
    g.set_input(mp, 0, dq_input);  // the DQ stays while other nodes read it
  } else {
    producer->set_attr("y_scale", Attribute::of_float(scale));
    if (zero_point) producer->set_attr("y_zero_point", Attribute::of_int(zero_point));
    x->set_type(DType::kInt8);
  }
  y->set_type(DType::kInt8);
  for (Node* q : qs) {
    g.replace_all_uses(q->output(0), y);
    g.remove_node(q);
  }
  return true;
}

class LowerInt8MaxPool final : public Pass {
 public:
  std::string_view name() const override { return "lower_int8_maxpool"; }
  std::string_view summary() const override { return "QConv -> MaxPool -> Q and int8 -> DQ -> MaxPool -> Q run the MaxPool on int8"; }

  int run_once(Graph& g, PassContext& ctx) const override {
    std::vector<Node*> pools;
    for (Node* n : g.nodes())
      if (n->kind() == OpKind::kMaxPool) pools.push_back(n);
    RewriteRecord rec;
    rec.pass = rec.pattern = std::string(name());
    int changed = 0;
    for (Node* mp : pools) {
      std::string mp_name = mp->name();
      if (try_rewrite(g, mp)) {
        rec.removed.push_back(mp_name);
        ++changed;
      }
    }
    if (changed) {
      g.remove_unused_values();
      g.topo_sort();
      ctx.count(std::string(name()), changed);
      ctx.log(std::move(rec));
    }
    return changed;
  }
};

}  // namespace

std::unique_ptr<Pass> make_lower_int8_maxpool() { return std::make_unique<LowerInt8MaxPool>(); }

}  // namespace engine
