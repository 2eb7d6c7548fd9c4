// Kernel registration for the elementwise family.
#include <algorithm>

#include "cpu/kernel.h"

namespace engine {

void register_elementwise_kernels(KernelRegistry& r) {
  r.add(OpKind::kRelu, {[](const Node&) {
          return make_kernel([](KernelContext&, const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) {
            const float* x = in[0]->data<float>();
            float* y = out[0]->data<float>();
            for (int64_t i = 0; i < in[0]->numel(); ++i) y[i] = std::max(x[i], 0.f);
          });
        }, false});
}

}  // namespace engine
