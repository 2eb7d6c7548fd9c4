// The CPU executor; run() releases the GIL, and so do the calls that take
// the executor's run lock (they wait for a run in progress on another thread).
#include "bindings/common.h"
#include "cpu/executor.h"

namespace engine::py_bind {

void register_runtime(py::module_& m) {
  py::class_<Executor, std::shared_ptr<Executor>>(m, "Executor")
      .def(py::init([](const Graph& g, int num_threads) {
             // The executor gets its own copy, so later rewrites of `g` in
             // Python cannot change a compiled engine.
             std::shared_ptr<const Graph> copy(g.clone());
             ExecutorOptions opts;
             opts.num_threads = num_threads;
             return std::make_shared<Executor>(copy, opts);
           }),
           py::arg("graph"), py::arg("num_threads") = 0)
      .def_property_readonly("num_threads", &Executor::num_threads)
      .def_property_readonly("arena_bytes",
                             [](const Executor& ex) {
                               py::gil_scoped_release nogil;
                               return ex.arena_bytes();
                             })
      .def_property("memory_limit", &Executor::memory_limit, &Executor::set_memory_limit)
      .def("run",
           [](Executor& ex, const std::vector<py::array>& arrays) {
             const auto& gin = ex.graph().inputs();
             std::vector<Tensor> inputs;
             inputs.reserve(arrays.size());
             for (size_t i = 0; i < arrays.size(); ++i)
               inputs.push_back(tensor_from_array(arrays[i], i < gin.size() ? "input '" + gin[i]->name() + "'" : "input"));
             std::vector<Tensor> outputs;
             {
               py::gil_scoped_release nogil;
               outputs = ex.run(inputs);
               inputs.clear();
             }
             py::list l;
             for (const Tensor& t : outputs) l.append(array_from_tensor(t));
             return l;
           })
      .def("set_profiling", &Executor::set_profiling, py::call_guard<py::gil_scoped_release>())
      .def("last_profile", [](const Executor& ex) {
        std::vector<LayerProfile> layers;
        {
          py::gil_scoped_release nogil;
          layers = ex.last_profile();
        }
        py::list l;
        for (const LayerProfile& p : layers) {
          py::dict d;
          d["name"] = p.name;
          d["op"] = p.op;
          d["kernel"] = p.kernel;
          d["ms"] = p.ms;
          d["flops"] = p.flops;
          d["executed"] = p.executed;
          d["origin"] = p.origin;
          l.append(d);
        }
        return l;
      });
}

}  // namespace engine::py_bind
