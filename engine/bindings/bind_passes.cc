// The graph optimizer: the pass list and the PassManager, as plain data.
#include "bindings/common.h"
#include "passes/pass_manager.h"

namespace engine::py_bind {

void register_passes(py::module_& m) {
  m.def("default_passes",
        [] {
          py::list l;
          for (const Pass* p : default_passes()) l.append(py::make_tuple(std::string(p->name()), std::string(p->summary())));
          return l;
        },
        "The default pipeline in order, as (name, summary) pairs.");

  m.def("pipeline_passes",
        [](const std::string& name) {
          const std::vector<const Pass*>* p = find_pipeline(name);
          ENGINE_ENFORCE(p, kInvalidArgument, "unknown pipeline '", name, "'");
          py::list l;
          for (const Pass* x : *p) l.append(py::make_tuple(std::string(x->name()), std::string(x->summary())));
          return l;
        },
        py::arg("name"), "A named pipeline (default, quantize, int8) in order, as (name, summary) pairs.");

  m.def("run_passes",
        [](Graph& g, py::object passes, const std::vector<std::string>& disable, int stop_after, bool verify_each,
           bool explain, int max_iterations, int max_rounds, const std::string& pipeline) {
          PassManagerOptions o;
          o.pipeline = pipeline;
          if (!passes.is_none()) o.passes = py::cast<std::vector<std::string>>(passes);
          o.disable = disable;
          o.stop_after = stop_after;
          o.verify_each = verify_each;
          o.explain = explain;
          o.max_iterations = max_iterations;
          o.max_rounds = max_rounds;
          PassReport r = run_passes(g, o);
          py::dict d;
          py::list passes_out;
          for (const PassStats& s : r.passes) {
            py::dict p;
            p["name"] = s.name;
            p["count"] = s.rewrites;
            p["sweeps"] = s.sweeps;
            p["ms"] = s.ms;
            p["patterns"] = s.patterns;
            passes_out.append(p);
          }
          d["passes"] = passes_out;
          d["nodes_before"] = r.nodes_before;
          d["nodes_after"] = r.nodes_after;
          d["ops_before"] = r.ops_before;
          d["ops_after"] = r.ops_after;
          py::list refused;
          for (const Refusal& x : r.refused) {
            py::dict e;
            e["pass"] = x.pass;
            e["pattern"] = x.pattern;
            e["node"] = x.node;
            e["op"] = x.op;
            e["reason"] = x.reason;
            e["quiet"] = x.quiet;
            refused.append(e);
          }
          d["refused"] = refused;
          py::list rewrites;
          for (const RewriteRecord& x : r.rewrites) {
            py::dict e;
            e["pass"] = x.pass;
            e["pattern"] = x.pattern;
            e["removed"] = x.removed;
            e["added"] = x.added;
            rewrites.append(e);
          }
          d["rewrites"] = rewrites;
          d["rounds"] = r.rounds;
          d["pass_runs"] = r.pass_runs;
          d["stopped"] = r.stopped;
          d["hit_cap"] = r.hit_cap;
          return d;
        },
        py::arg("graph"), py::arg("passes") = py::none(), py::arg("disable") = std::vector<std::string>(),
        py::arg("stop_after") = -1, py::arg("verify_each") = false, py::arg("explain") = false,
        py::arg("max_iterations") = 100, py::arg("max_rounds") = 4, py::arg("pipeline") = "default",
        "Runs the pass pipeline on `graph` in place; returns the report as a dict.");
}

}  // namespace engine::py_bind
