// widen_float16
//   y16 = op(x16, c16, ...)   ==>   y32 = op(Cast<f32>(x16), float32(c16), ...);  y16 = Cast<f16>(y32)
// for every node that reads or writes float16 (except Cast and the ops that
// only look at shapes), so float16 models run on the float32 kernels.
// Preconditions: none beyond the node reading or writing float16; float16
// constants become float32 constants (exact: every half is a float).
// Why this and not float16 kernels: it is how onnxruntime's CPU provider
// runs the float16 layers it has no kernel for (its InsertCastTransformer):
// compute in float32, store float16. Each layer's result is rounded to
// float16 once, as a float16 layer's is, so the model computes what
// onnxruntime computes for it (up to float32 rounding inside the layer).
// This matters for ModelOpt's default INT8 output, which keeps the layers it
// does not quantize (BatchNorm, Add, pools, the classifier, even the Q/DQ
// scales) in float16 behind a Cast of the network input.
// Pipeline position: first, in every pipeline: nothing else handles float16.
// elide_float16_round_trips (int8 pipeline only) then removes the
// Cast<f32>(Cast<f16>(x)) pairs this leaves between consecutive layers.
#include <map>

#include "passes/pass.h"

namespace engine {
namespace {

bool skipped(OpKind k) {
  // Cast converts any dtype itself; Shape/Size read no element; Constant
  // and ConstantOfShape carry their values as attributes (fold_constants
  // turns Constant into a constant value, whose reader is widened).
  return k == OpKind::kCast || k == OpKind::kShape || k == OpKind::kConstant || k == OpKind::kConstantOfShape;
}

bool touches_float16(const Node& n) {
  for (const Value* v : n.inputs())
    if (v && v->dtype() == DType::kFloat16) return true;
  for (const Value* v : n.outputs())
    if (v && v->dtype() == DType::kFloat16) return true;
  return false;
}

Tensor widen(const Tensor& h) {
  Tensor t(DType::kFloat32, h.shape());
  const uint16_t* src = h.data<uint16_t>();
  float* dst = t.data<float>();
  for (int64_t i = 0; i < h.numel(); ++i) dst[i] = half_to_float(src[i]);
  return t;
}

class WidenFloat16 final : public Pattern {
 public:
  std::string_view name() const override { return "widen_float16"; }
  OpKind root() const override { return kAnyOp; }

  MatchResult match(const Graph&, const Node& n) const override {
    NOT_APPLICABLE_IF(!touches_float16(n), "no float16 input or output");
    NOT_APPLICABLE_IF(skipped(n.kind()), n.op_type(), " handles float16 itself");
    NO_MATCH_IF(n.has_attr("dtype") || n.has_attr("to"), "the output type is set by an attribute");
    return Match{{const_cast<Node*>(&n)}, {}};
  }

  void rewrite(Rewriter& rw, const Match& m) const override {
    Node* n = m.nodes[0];
    const std::string name = n->name();
    const OpKind kind = n->kind();
    const Attributes attrs = n->attrs();
    std::vector<Value*> inputs(n->inputs().begin(), n->inputs().end());
    std::vector<Value*> outputs(n->outputs().begin(), n->outputs().end());
    std::vector<std::pair<Value*, Value*>> narrow;  // (float32 result, float16 value it feeds)
    for (size_t i = 0; i < outputs.size(); ++i) {
      Value* o = outputs[i];
      if (!o || o->dtype() != DType::kFloat16) continue;
      Value* w = rw.add_value(o->name() + "_f32", DType::kFloat32, o->has_shape() ? &o->shape() : nullptr);
      narrow.push_back({w, o});
      outputs[i] = w;
    }
    rw.remove(n);
    std::map<Value*, Value*> widened;  // an input read twice is cast once
    for (size_t i = 0; i < inputs.size(); ++i) {
      Value* v = inputs[i];
      if (!v || v->dtype() != DType::kFloat16) continue;
      Value*& w = widened[v];
      if (w) {
      } else if (v->is_constant()) {
        w = rw.add_constant(v->name() + "_f32", widen(*v->constant()));
      } else {
        w = rw.add_value(v->name() + "_f32", DType::kFloat32, v->has_shape() ? &v->shape() : nullptr);
        rw.add_node(OpKind::kCast, name + "_in" + std::to_string(i) + "_to_f32", {v}, {w},
                    {{"to", Attribute::of_int(static_cast<int64_t>(DType::kFloat32))}});
      }
      inputs[i] = w;
    }
    rw.add_node(kind, name, inputs, outputs, attrs);
    for (auto& [w, o] : narrow)
      rw.add_node(OpKind::kCast, name + "_to_f16", {w}, {o}, {{"to", Attribute::of_int(static_cast<int64_t>(DType::kFloat16))}});
  }
};

}  // namespace

std::unique_ptr<Pass> make_widen_float16() {
  std::vector<std::unique_ptr<Pattern>> p;
  p.push_back(std::make_unique<WidenFloat16>());
  return std::make_unique<PatternPass>("widen_float16", "run float16 layers in float32 with float16 storage (Casts)",
                                       std::move(p));
}

}  // namespace engine
