// Quantization entry points: the Q/DQ -> int8 lowering.
#include "bindings/common.h"
#include "ir/graph.h"
#include "passes/lower_qdq_to_int8.h"

namespace engine::py_bind {

void register_quant(py::module_& m) {
  m.def("lower_qdq_to_int8", [](Graph& g) { lower_qdq_to_int8(g); }, py::arg("graph"),
        "Rewrites Q/DQ groups around Conv/Gemm into int8 QConv/QGemm nodes, in place.");
}

}  // namespace engine::py_bind
