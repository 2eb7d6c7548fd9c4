// Shape inference for the conv_gemm family (see ir/infer.h for the contract).
#include "ir/infer.h"

namespace engine {

void register_conv_gemm_infer(InferRegistry& r) {}

}  // namespace engine
