#include "ir/infer.h"

namespace engine {

bool ValueInfo::fully_known() const {
  if (!has_shape) return false;
  for (int64_t d : shape)
    if (d < 0) return false;
  return true;
}

const ValueInfo& InferContext::input(int i) const {
  ENGINE_CHECK(has_input(i), node_.describe(), " input ", i, " is missing");
  return *inputs_[i];
}

InferRegistry::InferRegistry() {
  register_conv_gemm_infer(*this);
  register_elementwise_infer(*this);
  register_norm_pool_infer(*this);
  register_shape_ops_infer(*this);
  register_quant_infer(*this);
  register_preprocess_infer(*this);
}

InferRegistry& InferRegistry::get() {
  static InferRegistry registry;
  return registry;
}

void infer_node(InferContext& ctx) {
  InferFn fn = InferRegistry::get().find(ctx.node().kind());
  if (!fn)
    fail(ErrorKind::kUnsupportedOperator, ctx.node().describe(), ": no shape inference for this operator");
  fn(ctx);
  // Every output of every op, whatever its infer function computed: no dim
  // above kMaxDim, no tensor above the per-tensor byte limit. Static shapes
  // fail here at build / load time; dynamic ones at the first run.
  for (int i = 0; i < ctx.num_outputs(); ++i) {
    const ValueInfo& info = ctx.output(i);
    if (!info.has_shape) continue;
    const Value* v = i < ctx.node().num_outputs() ? ctx.node().output(i) : nullptr;
    check_tensor_size(info.shape, info.dtype,
                      str_cat(ctx.node().describe(), ", output '", v ? v->name() : std::to_string(i), "'"));
  }
}

void infer_shapes(Graph& g) {
  for (Node* n : g.nodes()) {
    if (!InferRegistry::get().find(n->kind())) continue;
    std::vector<ValueInfo> in_infos(n->num_inputs());
    std::vector<const ValueInfo*> ptrs(n->num_inputs(), nullptr);
    for (int i = 0; i < n->num_inputs(); ++i) {
      Value* v = n->input(i);
      if (!v) continue;
      in_infos[i].dtype = v->dtype();
      in_infos[i].has_shape = v->has_shape();
      in_infos[i].shape = v->shape();
      in_infos[i].value = v->constant();
      ptrs[i] = &in_infos[i];
    }
    InferContext ctx(*n, ptrs, n->num_outputs());
    infer_node(ctx);
    for (int i = 0; i < n->num_outputs(); ++i) {
      Value* o = n->output(i);
      if (!o) continue;
      const ValueInfo& info = ctx.output(i);
      if (info.dtype != DType::kUndefined) o->set_type(info.dtype);
      if (info.has_shape) {
        // Keep more specific dims that import already knew (ONNX shape
        // inference sometimes knows a dim we only see as -1).
        if (o->has_shape() && o->shape().size() == info.shape.size()) {
          Shape merged = info.shape;
          for (size_t d = 0; d < merged.size(); ++d)
            if (merged[d] < 0) merged[d] = o->shape()[d];
          o->set_shape(merged);
        } else {
          o->set_shape(info.shape);
        }
      }
    }
  }
}

Shape broadcast_shapes(const InferContext& ctx, const Shape& a, const Shape& b) {
  size_t r = std::max(a.size(), b.size());
  Shape out(r);
  for (size_t i = 0; i < r; ++i) {
    int64_t da = i < r - a.size() ? 1 : a[i - (r - a.size())];
    int64_t db = i < r - b.size() ? 1 : b[i - (r - b.size())];
    if (da == 1) out[i] = db;
    else if (db == 1) out[i] = da;
    else if (da < 0 || db < 0) out[i] = da < 0 ? db : da;  // one unknown: the known one wins
    else if (da == db) out[i] = da;
    else ctx.fail("shapes ", shape_str(a), " and ", shape_str(b), " cannot be broadcast");
  }
  return out;
}

int64_t normalize_axis(const InferContext& ctx, int64_t axis, int64_t rank) {
  if (axis < -rank || axis >= rank) ctx.fail("axis ", axis, " is out of range for rank ", rank);
  return axis < 0 ? axis + rank : axis;
}

}  // namespace engine
