// Shape inference for the quant family (see ir/infer.h for the contract).
#include "ir/infer.h"

namespace engine {

void register_quant_infer(InferRegistry& r) {}

}  // namespace engine
