// Evaluates one node on constant inputs with the CPU reference path: the
// op's shape inference gives the output shapes, its CPU kernel the values.
// This is the only place passes/ depends on cpu/ (constant folding needs an
// evaluator, and a second implementation of every op would drift from the
// kernels the engine actually runs).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "ir/infer.h"

namespace engine {

// Whether the op has both an inference function and a CPU kernel.
bool can_evaluate(OpKind kind);

// Output infos of `node` for the given input infos (static inference).
std::vector<ValueInfo> infer_outputs(const Node& node, const std::vector<const ValueInfo*>& inputs);

// Runs the node. `inputs` holds one tensor per input (nullptr for omitted
// optional inputs); `outputs` are the inferred infos (fully known shapes).
// Throws engine::Error when the kernel rejects the variant.
std::vector<std::shared_ptr<const Tensor>> evaluate_node(const Node& node,
                                                         const std::vector<const Tensor*>& inputs,
                                                         const std::vector<ValueInfo>& outputs);

}  // namespace engine
