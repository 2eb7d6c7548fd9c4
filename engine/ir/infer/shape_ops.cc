// Shape inference for the shape_ops family (see ir/infer.h for the contract).
#include "ir/infer.h"

namespace engine {

void register_shape_ops_infer(InferRegistry& r) {}

}  // namespace engine
