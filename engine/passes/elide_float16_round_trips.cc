// elide_float16_round_trips
//   Cast<f32>(Cast<f16>(x32))   ==>   x32
// Preconditions: x is float32 and computed by a node (the rounding of the
// network input itself is kept); the outer Cast's output is not a graph
// output. Not exact: it drops the float16 rounding of x.
// Why: in the int8 pipeline only. After widen_float16, a float16 Q/DQ model
// (ModelOpt's default) has such a pair between every two layers: between a
// DequantizeLinear and its Conv, between Conv, BatchNorm, Relu and the next
// QuantizeLinear. They would hide the DQ -> Conv -> ... -> Q groups from
// lower_qdq_to_int8. The int8 kernels then compute as TensorRT computes such
// a model (integer accumulation, float32 epilogue), which keeps more
// precision than the float16 layers do; the difference is float16 rounding
// (2^-11 relative), far below one int8 step. precision="fp32" keeps every
// rounding and matches onnxruntime on the float16 layers.
#include "passes/pass.h"

namespace engine {
namespace {

class ElideRoundTrip final : public Pattern {
 public:
  std::string_view name() const override { return "elide_float16_round_trips"; }
  OpKind root() const override { return OpKind::kCast; }

  MatchResult match(const Graph&, const Node& n) const override {
    const Value* y = n.output(0);
    NOT_APPLICABLE_IF(!y || y->dtype() != DType::kFloat32, "not a Cast to float32");
    const Node* inner = n.input(0) ? n.input(0)->producer() : nullptr;
    NOT_APPLICABLE_IF(!inner || inner->kind() != OpKind::kCast || inner->output(0)->dtype() != DType::kFloat16,
                      "input is not a Cast to float16");
    NOT_APPLICABLE_IF(!inner->input(0) || inner->input(0)->dtype() != DType::kFloat32, "not a float32 round trip");
    NO_MATCH_IF(y->is_graph_output(), "output '", y->name(), "' is a graph output");
    // The network input's conversion to float16 is the model's data, not a
    // layer's rounding, and no fusion needs it gone.
    NO_MATCH_IF(!inner->input(0)->producer(), "rounds the graph input '", inner->input(0)->name(), "'");
    return Match{{const_cast<Node*>(&n)}, {}};
  }

  void rewrite(Rewriter& rw, const Match& m) const override {
    Node* n = m.nodes[0];
    Value* x = n->input(0)->producer()->input(0);
    rw.replace(n->output(0), x);
    rw.remove(n);
  }
};

}  // namespace

std::unique_ptr<Pass> make_elide_float16_round_trips() {
  std::vector<std::unique_ptr<Pattern>> p;
  p.push_back(std::make_unique<ElideRoundTrip>());
  return std::make_unique<PatternPass>("elide_float16_round_trips",
                                       "int8 pipeline: drop float16 roundings between layers (Cast f32<-f16<-f32)",
                                       std::move(p));
}

}  // namespace engine
