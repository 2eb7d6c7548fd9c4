// Shape inference for the norm_pool family (see ir/infer.h for the contract).
#include "ir/infer.h"

namespace engine {

void register_norm_pool_infer(InferRegistry& r) {}

}  // namespace engine
