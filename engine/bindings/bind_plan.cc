// Plan files.
#include <cstring>

#include "bindings/common.h"
#include "plan/plan.h"

namespace engine::py_bind {

void register_plan(py::module_& m) {
  m.def(
      "save_plan",
      [](const Graph& g, const std::string& metadata_json, const std::string& path, const py::bytes& engine) {
        std::string blob = engine;
        py::gil_scoped_release nogil;
        save_plan(g, metadata_json, path, blob);
      },
      py::arg("graph"), py::arg("metadata_json"), py::arg("path"), py::arg("engine") = py::bytes());
  m.def(
      "plan_bytes",
      [](const Graph& g, const std::string& metadata_json, const py::bytes& engine) {
        return py::bytes(write_plan(g, metadata_json, std::string(engine)));
      },
      py::arg("graph"), py::arg("metadata_json"), py::arg("engine") = py::bytes());
  m.def("load_plan", [](const std::string& path) {
    PlanContents c;
    {
      py::gil_scoped_release nogil;
      c = load_plan(path);
    }
    return py::make_tuple(std::shared_ptr<Graph>(std::move(c.graph)), c.metadata_json);
  });
  m.def("plan_from_bytes", [](const py::bytes& b, const std::string& source) {
    std::string s = b;
    auto buf = aligned_storage(s.size());
    std::memcpy(buf.get(), s.data(), s.size());
    PlanContents c = read_plan(buf, s.size(), source);
    return py::make_tuple(std::shared_ptr<Graph>(std::move(c.graph)), c.metadata_json);
  });
  // (graph, metadata, engine bytes or None): plans with a backend engine section.
  m.def("load_plan_sections", [](const std::string& path) {
    PlanContents c;
    {
      py::gil_scoped_release nogil;
      c = load_plan(path);
    }
    py::object blob = c.engine_blob.empty() ? py::object(py::none()) : py::object(py::bytes(c.engine_blob));
    return py::make_tuple(std::shared_ptr<Graph>(std::move(c.graph)), c.metadata_json, blob);
  });
  m.def("plan_sections_from_bytes", [](const py::bytes& b, const std::string& source) {
    std::string s = b;
    auto buf = aligned_storage(s.size());
    std::memcpy(buf.get(), s.data(), s.size());
    PlanContents c = read_plan(buf, s.size(), source);
    py::object blob = c.engine_blob.empty() ? py::object(py::none()) : py::object(py::bytes(c.engine_blob));
    return py::make_tuple(std::shared_ptr<Graph>(std::move(c.graph)), c.metadata_json, blob);
  });
  m.def("plan_checksum", [](const py::bytes& b) {
    std::string s = b;
    return plan_checksum(s.data(), s.size());
  }, "The plan format's 64-bit checksum (format.md), for tools and tests.");
  m.attr("PLAN_FORMAT_VERSION") = kPlanFormatVersion;
}

}  // namespace engine::py_bind
