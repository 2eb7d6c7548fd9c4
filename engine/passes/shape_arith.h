// Symbolic evaluation of the small integer tensors PyTorch's exporter builds
// shapes from: Shape(x) -> Gather/Slice -> Unsqueeze -> Concat -> Reshape.
// Each element is a known integer, "dim `axis` of value `of`", or unknown.
// This lets fold_constants fold such chains when the dims they read are
// static even though other dims (the batch) are not, and turn
// x.view(x.size(0), -1) into Reshape(x, [0, -1]).
#pragma once

#include <optional>
#include <vector>

#include "ir/graph.h"

namespace engine {

struct SymDim {
  enum class Kind { kKnown, kDimOf, kUnknown };
  Kind kind = Kind::kUnknown;
  int64_t value = 0;            // kKnown
  const Value* of = nullptr;    // kDimOf
  int64_t axis = 0;             // kDimOf

  static SymDim known(int64_t v) { SymDim d; d.kind = Kind::kKnown; d.value = v; return d; }
  static SymDim dim_of(const Value* v, int64_t axis) { SymDim d; d.kind = Kind::kDimOf; d.of = v; d.axis = axis; return d; }
  bool is_known() const { return kind == Kind::kKnown; }
};

struct SymTensor {
  bool scalar = false;          // rank 0 (else rank 1)
  std::vector<SymDim> elems;
  bool all_known() const;
};

// The symbolic contents of an integer value of rank <= 1, or nullopt when
// it cannot be followed (too long, unsupported producer, not an integer).
std::optional<SymTensor> symbolic_value(const Value* v);

}  // namespace engine
