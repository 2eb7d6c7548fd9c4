#include "passes/evaluate.h"

#include "cpu/kernel.h"
#include "cpu/thread_pool.h"

namespace engine {

bool can_evaluate(OpKind kind) {
  if (kind == OpKind::kUnknown || kind == OpKind::kNumOpKinds) return false;
  return KernelRegistry::get().find(kind) && InferRegistry::get().find(kind);
}

std::vector<ValueInfo> infer_outputs(const Node& node, const std::vector<const ValueInfo*>& inputs) {
  InferContext ctx(node, inputs, node.num_outputs());
  infer_node(ctx);
  return ctx.outputs();
}

std::vector<std::shared_ptr<const Tensor>> evaluate_node(const Node& node,
                                                         const std::vector<const Tensor*>& inputs,
                                                         const std::vector<ValueInfo>& outputs) {
  const KernelInfo* info = KernelRegistry::get().find(node.kind());
  ENGINE_ENFORCE(info, kUnsupportedOperator, node.describe(), ": no CPU kernel to evaluate it");
  std::unique_ptr<Kernel> kernel = info->create(node);
  // One thread: folded tensors are small, and a pool per call would cost
  // more than the work.
  static ThreadPool pool(1);
  KernelContext kctx(&pool);
  std::vector<std::shared_ptr<Tensor>> owned(outputs.size());
  std::vector<Tensor*> out(outputs.size(), nullptr);
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (!node.output(static_cast<int>(i))) continue;
    owned[i] = std::make_shared<Tensor>(outputs[i].dtype, outputs[i].shape);
    out[i] = owned[i].get();
  }
  kernel->run(kctx, inputs, out);
  return {owned.begin(), owned.end()};
}

}  // namespace engine
