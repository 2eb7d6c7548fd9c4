// Ops whose output is their input, reinterpreted: Reshape, Flatten, Squeeze,
// Unsqueeze, Identity, and Dropout at inference.
//
//   y = x   (same bytes, the new shape comes from shape inference)
// These are registered with alias_output0, so the executor normally binds y
// to x's memory and run() does nothing; it copies only when the executor
// could not alias (y is a graph output, or the node is evaluated at plan
// time into a fresh tensor).
// Dropout's optional mask is all true: inference drops nothing.
#include "cpu/kernels/shape_ops/shape_ops.h"

#include <cstring>

namespace engine {
namespace shape_ops {
namespace {

class AliasCopy final : public Kernel {
 public:
  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    if (out[0]->raw() != in[0]->raw()) parallel_memcpy(ctx, out[0]->raw(), in[0]->raw(), in[0]->nbytes());
  }
  std::string describe() const override { return "alias_copy"; }
};

class Dropout final : public Kernel {
 public:
  explicit Dropout(const Node& node) : what_(node.describe()) {}
  void run(KernelContext& ctx, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) override {
    // training_mode may arrive at run time; random dropout is not supported.
    if (in.size() > 2 && in[2] && in[2]->numel() > 0)
      ENGINE_ENFORCE(in[2]->int_at(0) == 0, kUnsupportedOperator, what_, ": training_mode=true is not supported");
    if (out[0]->raw() != in[0]->raw()) parallel_memcpy(ctx, out[0]->raw(), in[0]->raw(), in[0]->nbytes());
    if (out.size() > 1 && out[1] && out[1]->nbytes()) std::memset(out[1]->raw(), 1, out[1]->nbytes());
  }
  std::string describe() const override { return "dropout_inference"; }

 private:
  std::string what_;
};

}  // namespace

std::unique_ptr<Kernel> create_alias_copy(const Node&) { return std::make_unique<AliasCopy>(); }

std::unique_ptr<Kernel> create_dropout(const Node& node) {
  const Value* mode = node.input(2);
  if (mode && mode->is_constant() && mode->constant()->numel() > 0 && mode->constant()->int_at(0) != 0)
    fail(ErrorKind::kUnsupportedOperator, node.describe(), ": training_mode=true (random dropout) is not supported");
  return std::make_unique<Dropout>(node);
}

}  // namespace shape_ops
}  // namespace engine
