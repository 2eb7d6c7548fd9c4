#include "cpu/executor.h"

#include <algorithm>
#include <cstring>

#include "core/checked_math.h"
#include "cpu/dispatch.h"

namespace engine {

struct Executor::Plan {
  std::vector<ValueInfo> infos;                        // per value index
  std::vector<std::shared_ptr<const Tensor>> known;    // constants and values folded at plan time
  std::vector<int> runtime_nodes;                      // indices into nodes_, in order
  std::vector<int64_t> offset;                         // arena offset per value, -1 if not in arena
  std::vector<int> alias_of;                           // value whose storage this value shares, or -1
  std::vector<double> flops;                           // per node, for these shapes
  std::vector<char> executed;                          // per node: 1 if run (not folded)
  size_t arena_bytes = 0;
  int64_t run_bytes = 0;  // arena + computed outputs: what a run allocates
};

namespace {

constexpr size_t kMaxPlans = 16;

size_t align_up(size_t n) { return (n + kTensorAlignment - 1) / kTensorAlignment * kTensorAlignment; }

double node_flops(const Node& n, const std::vector<ValueInfo>& in, const std::vector<ValueInfo>& out) {
  switch (n.kind()) {
    case OpKind::kConv:
    case OpKind::kFusedConv:
    case OpKind::kQConv: {
      if (in.size() < 2 || out.empty()) return 0;
      // 2 * N * Cout * spatial_out * (Cin/group * prod(kernel))
      const Shape& w = in[1].shape;
      double k = 1;
      for (size_t i = 1; i < w.size(); ++i) k *= static_cast<double>(w[i]);
      return 2.0 * static_cast<double>(shape_numel(out[0].shape)) * k;
    }
    case OpKind::kGemm:
    case OpKind::kFusedGemm:
    case OpKind::kQGemm:
    case OpKind::kMatMul: {
      if (in.size() < 2 || out.empty() || in[0].shape.empty()) return 0;
      int64_t kdim = n.kind() == OpKind::kMatMul || !n.attr_int("transA", 0) ? in[0].shape.back()
                                                                                 : in[0].shape.front();
      return 2.0 * static_cast<double>(shape_numel(out[0].shape)) * static_cast<double>(kdim);
    }
    default:
      return 0;
  }
}

}  // namespace

namespace {

// Graph inputs that feed shape operands are treated like TensorRT's shape
// tensors: their values are part of the plan key and known while planning,
// so a shape given as a graph input (Reshape's shape, Slice's starts,
// Resize's scales, ...) resolves to concrete output shapes.
constexpr int64_t kMaxValueInputElements = 64;

bool is_shape_operand(OpKind k, int index) {
  switch (k) {
    case OpKind::kReshape: case OpKind::kExpand: case OpKind::kTile:
    case OpKind::kSqueeze: case OpKind::kUnsqueeze: case OpKind::kSplit:
    case OpKind::kReduceMean: case OpKind::kReduceSum: case OpKind::kReduceMax: case OpKind::kReduceMin:
      return index == 1;
    case OpKind::kSlice: case OpKind::kPad: case OpKind::kResize:
      return index >= 1;
    case OpKind::kConstantOfShape: case OpKind::kRange:
      return true;
    default:
      return false;
  }
}

}  // namespace

Executor::Executor(std::shared_ptr<const Graph> graph, ExecutorOptions options)
    : graph_(std::move(graph)), pool_(options.num_threads), kctx_(&pool_) {
  set_memory_limit(options.memory_limit);
  nodes_ = graph_->nodes();
  values_ = graph_->values();
  for (size_t i = 0; i < values_.size(); ++i) value_index_[values_[i]] = static_cast<int>(i);

  // Compile: a kernel per node. Collect every problem before failing, so a
  // user learns all unsupported operators of a model in one go.
  // Unknown ops are grouped by type ("Foo (3 nodes: a, b, c)"); variants a
  // kernel refused keep their own message, which names the node.
  std::map<std::string, std::vector<std::string>> unknown;
  std::vector<std::string> refused;
  kernels_.resize(nodes_.size());
  infos_.resize(nodes_.size(), nullptr);
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const Node& n = *nodes_[i];
    const KernelInfo* info = n.kind() == OpKind::kUnknown ? nullptr : KernelRegistry::get().find(n.kind());
    if (!info || !InferRegistry::get().find(n.kind())) {
      std::string domain = n.domain().empty() ? "" : str_cat(" (domain '", n.domain(), "')");
      unknown[n.op_type() + domain].push_back(n.name());
      continue;
    }
    try {
      kernels_[i] = info->create(n);
      infos_[i] = info;
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::kUnsupportedOperator) throw;
      refused.push_back(e.what());
    }
  }
  if (!unknown.empty() || !refused.empty()) {
    std::string msg = "the CPU backend cannot run this model:";
    for (const auto& [op, names] : unknown) {
      msg += str_cat("\n  - operator ", op, " is not supported (", names.size(), " node", names.size() > 1 ? "s" : "", ": ");
      for (size_t k = 0; k < names.size() && k < 5; ++k) msg += (k ? ", '" : "'") + names[k] + "'";
      msg += names.size() > 5 ? ", ...)" : ")";
    }
    for (const auto& r : refused) msg += "\n  - " + r;
    throw Error(ErrorKind::kUnsupportedOperator, msg);
  }
  for (Value* v : graph_->inputs()) {
    bool shape_operand = false;
    for (const Use& u : v->uses()) shape_operand |= is_shape_operand(u.node->kind(), u.index);
    value_input_.push_back(shape_operand);
  }
  node_ms_.assign(nodes_.size(), 0.0);
}

Executor::~Executor() = default;

void Executor::check_inputs(const std::vector<Tensor>& inputs) const {
  const auto& gin = graph_->inputs();
  ENGINE_ENFORCE(inputs.size() == gin.size(), kInvalidArgument, "the model has ", gin.size(),
                 " inputs but ", inputs.size(), " were given");
  for (size_t i = 0; i < gin.size(); ++i) {
    const Value* v = gin[i];
    const Tensor& t = inputs[i];
    ENGINE_ENFORCE(t.dtype() == v->dtype(), kDType, "input '", v->name(), "' must be ", dtype_name(v->dtype()),
                   ", got ", dtype_name(t.dtype()));
    if (!v->has_shape()) continue;
    const Shape& want = v->shape();
    bool ok = static_cast<size_t>(t.rank()) == want.size();
    for (size_t d = 0; ok && d < want.size(); ++d) ok = want[d] < 0 || want[d] == t.shape()[d];
    ENGINE_ENFORCE(ok, kShape, "input '", v->name(), "' must have shape ", shape_str(want), ", got ",
                   shape_str(t.shape()));
    for (int64_t d : t.shape())
      ENGINE_ENFORCE(d >= 0, kShape, "input '", v->name(), "' has a negative dim");
  }
}


std::shared_ptr<Executor::Plan> Executor::make_plan(const std::vector<Tensor>& inputs) {
  std::vector<Shape> shapes;
  for (const Tensor& t : inputs) shapes.push_back(t.shape());
  auto plan = std::make_shared<Plan>();
  const size_t nv = values_.size();
  plan->infos.resize(nv);
  plan->known.resize(nv);
  plan->offset.assign(nv, -1);
  plan->alias_of.assign(nv, -1);
  plan->flops.assign(nodes_.size(), 0.0);
  plan->executed.assign(nodes_.size(), 0);
  for (size_t i = 0; i < nv; ++i) {
    const Value* v = values_[i];
    if (v->is_constant()) {
      plan->infos[i] = ValueInfo::of(v->dtype(), v->shape());
      plan->infos[i].value = v->constant();
      plan->known[i] = v->constant();
    }
  }
  const auto& gin = graph_->inputs();
  for (size_t i = 0; i < gin.size(); ++i) {
    int vi = value_index_[gin[i]];
    plan->infos[vi] = ValueInfo::of(gin[i]->dtype(), shapes[i]);
    if (value_input_[i] && inputs[i].numel() <= kMaxValueInputElements) {
      auto value = std::make_shared<Tensor>(inputs[i].clone());
      plan->infos[vi].value = value;
      plan->known[vi] = value;
    }
  }

  // Shapes, and plan-time evaluation of nodes whose inputs are all known.
  for (size_t ni = 0; ni < nodes_.size(); ++ni) {
    const Node& n = *nodes_[ni];
    std::vector<const ValueInfo*> ptrs(n.num_inputs(), nullptr);
    bool all_known = true;
    for (int i = 0; i < n.num_inputs(); ++i) {
      if (!n.input(i)) continue;
      int vi = value_index_[n.input(i)];
      ptrs[i] = &plan->infos[vi];
      all_known = all_known && plan->known[vi] != nullptr;
    }
    InferContext ctx(n, ptrs, n.num_outputs());
    infer_node(ctx);
    std::vector<ValueInfo> in_copy;
    for (auto* p : ptrs) in_copy.push_back(p ? *p : ValueInfo());
    for (int o = 0; o < n.num_outputs(); ++o) {
      if (!n.output(o)) continue;
      const ValueInfo& info = ctx.output(o);
      ENGINE_ENFORCE(info.fully_known(), kShape, n.describe(), ": could not determine the shape of output '",
                     n.output(o)->name(), "' for input shapes ", shape_str(shapes.empty() ? Shape{} : shapes[0]));
      plan->infos[value_index_[n.output(o)]] = info;
    }
    plan->flops[ni] = node_flops(n, in_copy, ctx.outputs());
    bool outputs_known = true;
    for (int o = 0; o < n.num_outputs(); ++o)
      if (n.output(o) && !ctx.output(o).value) outputs_known = false;
    if (outputs_known && n.num_outputs() > 0) {
      for (int o = 0; o < n.num_outputs(); ++o)
        if (n.output(o)) plan->known[value_index_[n.output(o)]] = ctx.output(o).value;
      continue;
    }
    if (all_known) {
      // Fold now: shape arithmetic that depends on the input shapes.
      std::vector<const Tensor*> in(n.num_inputs(), nullptr);
      for (int i = 0; i < n.num_inputs(); ++i)
        if (n.input(i)) in[i] = plan->known[value_index_[n.input(i)]].get();
      std::vector<std::shared_ptr<Tensor>> out_t(n.num_outputs());
      std::vector<Tensor*> out(n.num_outputs(), nullptr);
      for (int o = 0; o < n.num_outputs(); ++o) {
        if (!n.output(o)) continue;
        const ValueInfo& info = ctx.output(o);
        out_t[o] = std::make_shared<Tensor>(info.dtype, info.shape);
        out[o] = out_t[o].get();
      }
      kernels_[ni]->run(kctx_, in, out);
      for (int o = 0; o < n.num_outputs(); ++o) {
        if (!n.output(o)) continue;
        int vi = value_index_[n.output(o)];
        plan->known[vi] = out_t[o];
        plan->infos[vi].value = out_t[o];
      }
      continue;
    }
    plan->runtime_nodes.push_back(static_cast<int>(ni));
  }
  for (int ni : plan->runtime_nodes) plan->executed[ni] = 1;

  // Lifetimes, in steps of the runtime schedule, of values that live in the
  // arena: outputs of runtime nodes that are not graph outputs.
  const int steps = static_cast<int>(plan->runtime_nodes.size());
  std::vector<int> first(nv, -1), last(nv, -1);
  std::vector<char> in_arena(nv, 0);
  for (int s = 0; s < steps; ++s) {
    const Node& n = *nodes_[plan->runtime_nodes[s]];
    for (Value* o : n.outputs()) {
      if (!o) continue;
      int vi = value_index_[o];
      first[vi] = last[vi] = s;
      in_arena[vi] = !o->is_graph_output();
    }
  }
  for (int s = 0; s < steps; ++s) {
    const Node& n = *nodes_[plan->runtime_nodes[s]];
    for (Value* v : n.inputs())
      if (v) last[value_index_[v]] = std::max(last[value_index_[v]], s);
  }
  // Aliases (Reshape-like ops): the output shares the input's storage, whose
  // lifetime then extends to the alias's last use.
  std::vector<int> root(nv);
  for (size_t i = 0; i < nv; ++i) root[i] = static_cast<int>(i);
  for (int s = 0; s < steps; ++s) {
    int ni = plan->runtime_nodes[s];
    const Node& n = *nodes_[ni];
    if (!infos_[ni]->alias_output0 || !n.output(0) || !n.input(0)) continue;
    int out = value_index_[n.output(0)], in = value_index_[n.input(0)];
    if (!in_arena[out]) continue;
    int r = root[in];
    bool input_ok = in_arena[r] || values_[r]->is_graph_input();
    if (!input_ok) continue;
    root[out] = r;
    plan->alias_of[out] = r;
    in_arena[out] = 0;
    if (in_arena[r]) last[r] = std::max(last[r], last[out]);
  }
  // In place (KernelInfo::inplace_input): output 0 takes the storage of an
  // arena input that this node reads last, unless another of its inputs
  // shares that storage (the kernel would overwrite what it still reads).
  // Roots are followed to the end: an alias planned above may point at a
  // value that takes another's storage here.
  auto storage_of = [&](int v) {
    while (root[v] != v) v = root[v];
    return v;
  };
  for (int s = 0; s < steps; ++s) {
    const int ni = plan->runtime_nodes[s];
    const Node& n = *nodes_[ni];
    const int idx = infos_[ni]->inplace_input;
    if (idx < 0 || idx >= n.num_inputs() || !n.input(idx) || !n.output(0)) continue;
    const int out = value_index_[n.output(0)], r = storage_of(value_index_[n.input(idx)]);
    if (!in_arena[out] || !in_arena[r] || last[r] != s) continue;
    const ValueInfo &vo = plan->infos[out], &vr = plan->infos[r];
    if (vo.dtype != vr.dtype || checked_nbytes(vo.shape, vo.dtype) != checked_nbytes(vr.shape, vr.dtype)) continue;
    bool shared = false;
    for (int i = 0; i < n.num_inputs(); ++i)
      if (i != idx && n.input(i) && storage_of(value_index_[n.input(i)]) == r) shared = true;
    if (shared) continue;
    root[out] = r;
    plan->alias_of[out] = r;
    in_arena[out] = 0;
    last[r] = std::max(last[r], last[out]);
  }
  // Greedy by size (largest first), first fit among placed buffers whose
  // lifetimes overlap.
  struct Buf { int v; size_t size; int64_t offset; };
  std::vector<Buf> bufs;
  // Sizes were checked against the per-tensor limit by infer_node, so each
  // fits in int64; the placement sums below are checked all the same.
  for (size_t i = 0; i < nv; ++i)
    if (in_arena[i]) {
      const int64_t bytes = checked_nbytes(plan->infos[i].shape, plan->infos[i].dtype);
      ENGINE_ENFORCE(bytes >= 0, kShape, "value '", values_[i]->name(), "' of shape ",
                     shape_str(plan->infos[i].shape), " does not fit in memory");
      bufs.push_back({static_cast<int>(i), align_up(std::max<size_t>(1, static_cast<size_t>(bytes))), 0});
    }
  std::sort(bufs.begin(), bufs.end(), [](const Buf& a, const Buf& b) { return a.size > b.size || (a.size == b.size && a.v < b.v); });
  std::vector<Buf> placed;
  size_t total = 0;
  for (Buf& b : bufs) {
    std::vector<std::pair<int64_t, int64_t>> busy;
    for (const Buf& p : placed)
      if (!(last[p.v] < first[b.v] || last[b.v] < first[p.v])) busy.push_back({p.offset, p.offset + static_cast<int64_t>(p.size)});
    std::sort(busy.begin(), busy.end());
    int64_t off = 0;
    for (auto& iv : busy) {
      if (add_or_fail(off, static_cast<int64_t>(b.size), "memory plan") <= iv.first) break;
      off = std::max(off, iv.second);
    }
    b.offset = off;
    plan->offset[b.v] = off;
    total = std::max(total, static_cast<size_t>(add_or_fail(off, static_cast<int64_t>(b.size), "memory plan")));
    placed.push_back(b);
  }
  plan->arena_bytes = total;
  // What a run allocates besides the arena: outputs that are computed.
  int64_t out_bytes = 0;
  for (Value* o : graph_->outputs()) {
    const int vi = value_index_[o];
    if (plan->known[vi] || o->is_graph_input()) continue;
    out_bytes = add_or_fail(out_bytes, checked_nbytes(plan->infos[vi].shape, plan->infos[vi].dtype), "outputs");
  }
  plan->run_bytes = add_or_fail(static_cast<int64_t>(total), out_bytes, "memory plan");
  return plan;
}

std::shared_ptr<Executor::Plan> Executor::plan_for(const std::vector<Tensor>& inputs) {
  std::vector<Shape> key;
  for (size_t i = 0; i < inputs.size(); ++i) {
    key.push_back(inputs[i].shape());
    if (value_input_[i] && inputs[i].numel() <= kMaxValueInputElements) {
      // Bit patterns, so float values (Resize scales) key exactly too.
      Shape bits(inputs[i].nbytes() / sizeof(int64_t) + 1, 0);
      std::memcpy(bits.data(), inputs[i].raw(), inputs[i].nbytes());
      key.push_back(bits);
    }
  }
  std::shared_ptr<Plan> plan;
  auto it = plans_.find(key);
  if (it != plans_.end()) {
    plan = it->second;
  } else {
    plan = make_plan(inputs);
    if (plans_.size() >= kMaxPlans) {
      plans_.erase(plan_order_.front());
      plan_order_.erase(plan_order_.begin());
    }
    plans_[key] = plan;
    plan_order_.push_back(key);
  }
  return plan;
}

std::vector<Shape> Executor::output_shapes(const std::vector<Tensor>& inputs) {
  check_inputs(inputs);
  std::lock_guard<std::mutex> lock(mu_);
  std::shared_ptr<Plan> plan = plan_for(inputs);
  std::vector<Shape> shapes;
  for (Value* o : graph_->outputs()) shapes.push_back(plan->infos[value_index_[o]].shape);
  return shapes;
}

std::vector<Tensor> Executor::run(const std::vector<Tensor>& inputs) { return run_impl(inputs, nullptr); }

void Executor::run_into(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs) {
  run_impl(inputs, &outputs);
}

std::vector<Tensor> Executor::run_impl(const std::vector<Tensor>& inputs, const std::vector<Tensor>* outputs) {
  check_inputs(inputs);
  const auto& gout = graph_->outputs();
  if (outputs)
    ENGINE_ENFORCE(outputs->size() == gout.size(), kInvalidArgument, "the model has ", gout.size(),
                   " outputs but ", outputs->size(), " output buffers were given");
  std::lock_guard<std::mutex> lock(mu_);
  std::shared_ptr<Plan> plan = plan_for(inputs);
  last_plan_ = plan;
  if (outputs)
    for (size_t k = 0; k < gout.size(); ++k) {
      const ValueInfo& info = plan->infos[value_index_[gout[k]]];
      const Tensor& t = (*outputs)[k];
      ENGINE_ENFORCE(t.dtype() == info.dtype, kDType, "output '", gout[k]->name(), "' is ", dtype_name(info.dtype),
                     ", but its buffer is ", dtype_name(t.dtype()));
      ENGINE_ENFORCE(t.shape() == info.shape, kShape, "output '", gout[k]->name(), "' has shape ",
                     shape_str(info.shape), " for these inputs, but its buffer has shape ", shape_str(t.shape()));
      ENGINE_ENFORCE(t.raw() || t.nbytes() == 0, kInvalidArgument, "output '", gout[k]->name(),
                     "': the buffer is null");
    }
  const int64_t limit = memory_limit_.load();
  // Caller-owned outputs (run_into) cost the engine nothing: the arena only.
  const int64_t need = outputs ? static_cast<int64_t>(plan->arena_bytes) : plan->run_bytes;
  if (limit > 0 && need > limit)
    fail(ErrorKind::kShape, "this run needs ", need, " bytes (activation arena ", plan->arena_bytes,
         " + outputs ", need - static_cast<int64_t>(plan->arena_bytes), ") for input shapes ",
         shape_str(inputs.empty() ? Shape{} : inputs[0].shape()), ", above the engine's memory_limit of ", limit,
         " bytes");
  if (plan->arena_bytes > arena_size_) {
    arena_ = aligned_storage(plan->arena_bytes);
    arena_size_ = plan->arena_bytes;
  }

  const size_t nv = values_.size();
  std::vector<Tensor> tensors(nv);
  auto* base = static_cast<char*>(arena_.get());
  for (size_t i = 0; i < nv; ++i) {
    if (plan->known[i]) tensors[i] = *plan->known[i];
    else if (plan->offset[i] >= 0)
      tensors[i] = Tensor::borrow(plan->infos[i].dtype, plan->infos[i].shape, base + plan->offset[i], nullptr);
  }
  const auto& gin = graph_->inputs();
  for (size_t i = 0; i < gin.size(); ++i) tensors[value_index_[gin[i]]] = inputs[i];
  for (size_t k = 0; k < gout.size(); ++k) {
    int vi = value_index_[gout[k]];
    if (plan->known[vi] || gout[k]->is_graph_input()) continue;
    // Caller-owned buffers (run_into) are written in place; run() allocates.
    tensors[vi] = outputs ? (*outputs)[k] : Tensor(plan->infos[vi].dtype, plan->infos[vi].shape);
  }
  std::vector<const Tensor*> in;
  std::vector<Tensor*> out;
  for (int ni : plan->runtime_nodes) {
    const Node& n = *nodes_[ni];
    // Bind aliases to their root's storage, now that the root is bound.
    for (Value* o : n.outputs()) {
      if (!o) continue;
      int vi = value_index_[o];
      int r = plan->alias_of[vi];
      if (r >= 0)
        tensors[vi] = Tensor::borrow(plan->infos[vi].dtype, plan->infos[vi].shape, tensors[r].raw(), tensors[r].holder());
    }
    in.assign(n.num_inputs(), nullptr);
    out.assign(n.num_outputs(), nullptr);
    for (int i = 0; i < n.num_inputs(); ++i)
      if (n.input(i)) in[i] = &tensors[value_index_[n.input(i)]];
    for (int o = 0; o < n.num_outputs(); ++o)
      if (n.output(o)) out[o] = &tensors[value_index_[n.output(o)]];
    if (profiling_) {
      auto t0 = std::chrono::steady_clock::now();
      kernels_[ni]->run(kctx_, in, out);
      auto t1 = std::chrono::steady_clock::now();
      node_ms_[ni] = std::chrono::duration<double, std::milli>(t1 - t0).count();
    } else {
      kernels_[ni]->run(kctx_, in, out);
    }
    if (observer_)
      for (int o = 0; o < n.num_outputs(); ++o)
        if (out[o]) observer_(n, o, *out[o]);
  }
  if (outputs) {
    // Constants, folded values and pass-through inputs were not computed
    // into the caller's buffers: copy them there.
    for (size_t k = 0; k < gout.size(); ++k) {
      int vi = value_index_[gout[k]];
      if ((plan->known[vi] || gout[k]->is_graph_input()) && tensors[vi].nbytes() > 0)
        std::memcpy(const_cast<void*>((*outputs)[k].raw()), tensors[vi].raw(), tensors[vi].nbytes());
    }
    return {};
  }
  std::vector<Tensor> result;
  for (Value* o : graph_->outputs()) {
    int vi = value_index_[o];
    // Constants, folded values and pass-through inputs are copied so the
    // caller always owns what it gets.
    if (plan->known[vi] || o->is_graph_input()) result.push_back(tensors[vi].clone());
    else result.push_back(tensors[vi]);
  }
  return result;
}

std::vector<LayerProfile> Executor::last_profile() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<LayerProfile> out;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    LayerProfile p;
    p.name = nodes_[i]->name();
    p.op = nodes_[i]->op_type();
    p.kernel = kernels_[i] ? kernels_[i]->describe() : "";
    p.ms = node_ms_[i];
    p.flops = last_plan_ ? last_plan_->flops[i] : 0.0;
    p.executed = last_plan_ && last_plan_->executed[i];
    p.origin = nodes_[i]->origin();
    out.push_back(p);
  }
  return out;
}

}  // namespace engine
