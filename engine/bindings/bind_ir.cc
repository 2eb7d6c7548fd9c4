// Graph: built by pyengine/onnx_io.py, inspected to write ONNX back.
#include "bindings/common.h"
#include "core/checked_math.h"
#include "ir/graph.h"
#include "ir/infer.h"
#include "ir/preprocess.h"

namespace engine::py_bind {
namespace {

Shape shape_from(const py::object& o) {
  Shape s;
  for (auto d : o) s.push_back(py::cast<int64_t>(d));
  return s;
}

// Attributes arrive as (onnx_attribute_type, value) pairs, so an empty list
// keeps its declared type.
Attribute attr_from(const std::string& node, const std::string& name, const py::tuple& tv) {
  int type = py::cast<int>(tv[0]);
  py::object v = tv[1];
  Attribute a;
  a.type = static_cast<Attribute::Type>(type);
  switch (a.type) {
    case Attribute::Type::kInt: a.i = py::cast<int64_t>(v); break;
    case Attribute::Type::kFloat: a.f = py::cast<float>(v); break;
    case Attribute::Type::kString: a.s = py::cast<std::string>(v); break;
    case Attribute::Type::kInts: a.ints = py::cast<std::vector<int64_t>>(v); break;
    case Attribute::Type::kFloats: a.floats = py::cast<std::vector<float>>(v); break;
    case Attribute::Type::kStrings: a.strings = py::cast<std::vector<std::string>>(v); break;
    case Attribute::Type::kTensor:
      a.t = std::make_shared<Tensor>(tensor_from_array(py::cast<py::array>(v), node + "." + name));
      break;
    default:
      fail(ErrorKind::kUnsupportedOperator, "node '", node, "': attribute '", name, "' has ONNX type ", type,
           " (graphs and sparse tensors as attributes are not supported)");
  }
  return a;
}

py::tuple attr_to(const Attribute& a) {
  int type = static_cast<int>(a.type);
  switch (a.type) {
    case Attribute::Type::kInt: return py::make_tuple(type, a.i);
    case Attribute::Type::kFloat: return py::make_tuple(type, a.f);
    case Attribute::Type::kString: return py::make_tuple(type, py::bytes(a.s));
    case Attribute::Type::kInts: return py::make_tuple(type, a.ints);
    case Attribute::Type::kFloats: return py::make_tuple(type, a.floats);
    case Attribute::Type::kStrings: {
      py::list l;
      for (auto& s : a.strings) l.append(py::bytes(s));
      return py::make_tuple(type, l);
    }
    case Attribute::Type::kTensor: return py::make_tuple(type, array_from_tensor(*a.t));
  }
  return py::make_tuple(type, py::none());
}

py::object shape_or_none(const Value* v) {
  if (!v->has_shape()) return py::none();
  return py::cast(v->shape());
}

Value* need_value(Graph& g, const std::string& name) {
  Value* v = g.find_value(name);
  ENGINE_ENFORCE(v, kInvalidArgument, "no value named '", name, "' in the graph");
  return v;
}

}  // namespace

void register_ir(py::module_& m) {
  py::class_<Graph, std::shared_ptr<Graph>>(m, "Graph")
      .def(py::init<>())
      .def("add_input",
           [](Graph& g, const std::string& name, int dtype, py::object shape) {
             ENGINE_ENFORCE(dtype_is_valid(dtype), kUnsupportedOperator, "graph input '", name,
                            "' has an unsupported element type (ONNX code ", dtype, ")");
             Shape s;
             if (!shape.is_none()) s = shape_from(shape);
             if (!shape.is_none()) check_tensor_size(s, static_cast<DType>(dtype), "graph input '" + name + "'");
             Value* v = g.add_value(name, static_cast<DType>(dtype), shape.is_none() ? nullptr : &s);
             g.add_input(v);
           })
      .def("add_initializer",
           [](Graph& g, const std::string& name, const py::array& a) {
             g.add_constant(name, std::make_shared<Tensor>(tensor_from_array(a, "initializer '" + name + "'")));
           })
      .def("set_value_info",
           [](Graph& g, const std::string& name, int dtype, py::object shape) {
             Value* v = g.get_or_add_value(name);
             if (v->is_constant()) return;
             if (dtype_is_valid(dtype)) v->set_type(static_cast<DType>(dtype));
             if (!shape.is_none()) {
               Shape s = shape_from(shape);
               check_tensor_size(s, v->dtype(), "value_info of '" + name + "'");
               v->set_shape(s);
             }
           })
      .def("add_node",
           [](Graph& g, const std::string& op_type, const std::string& domain, const std::string& name,
              const std::vector<std::string>& inputs, const std::vector<std::string>& outputs, const py::dict& attrs) {
             std::vector<Value*> ins, outs;
             for (auto& n : inputs) ins.push_back(n.empty() ? nullptr : g.get_or_add_value(n));
             for (auto& n : outputs) outs.push_back(n.empty() ? nullptr : g.get_or_add_value(n));
             Attributes as;
             for (auto kv : attrs) {
               std::string an = py::cast<std::string>(kv.first);
               as[an] = attr_from(name, an, py::cast<py::tuple>(kv.second));
             }
             OpKind kind = op_kind_from_name(domain, op_type);
             g.add_node(kind, name, ins, outs, std::move(as), op_type, domain == "ai.onnx" ? "" : domain);
           },
           py::arg("op_type"), py::arg("domain"), py::arg("name"), py::arg("inputs"), py::arg("outputs"),
           py::arg("attrs"))
      .def("add_output",
           [](Graph& g, const std::string& name) {
             Value* v = need_value(g, name);
             ENGINE_ENFORCE(!v->is_graph_output(), kInvalidModel, "the graph output '", name,
                            "' is listed twice; output names must be unique");
             g.add_output(v);
           })
      .def("finalize",
           [](Graph& g) {
             g.topo_sort();
             verify(g);
             infer_shapes(g);
           },
           "Sorts the nodes, verifies the graph and infers shapes.")
      .def("verify", [](const Graph& g) { verify(g); })
      .def("infer_shapes", [](Graph& g) { infer_shapes(g); })
      .def("clone", [](const Graph& g) { return std::shared_ptr<Graph>(g.clone()); })
      .def("to_text", [](const Graph& g) { return to_text(g); })
      .def_property_readonly("num_nodes", [](const Graph& g) { return g.num_nodes(); })
      .def("inputs",
           [](const Graph& g) {
             py::list l;
             for (Value* v : g.inputs())
               l.append(py::make_tuple(v->name(), static_cast<int>(v->dtype()), shape_or_none(v)));
             return l;
           })
      .def("outputs",
           [](const Graph& g) {
             py::list l;
             for (Value* v : g.outputs())
               l.append(py::make_tuple(v->name(), static_cast<int>(v->dtype()), shape_or_none(v)));
             return l;
           })
      .def("nodes",
           [](const Graph& g) {
             py::list l;
             for (Node* n : g.nodes()) {
               py::dict d;
               d["op_type"] = n->op_type();
               d["domain"] = n->domain();
               d["name"] = n->name();
               py::list ins, outs;
               for (Value* v : n->inputs()) ins.append(v ? v->name() : std::string());
               for (Value* v : n->outputs()) outs.append(v ? v->name() : std::string());
               d["inputs"] = ins;
               d["outputs"] = outs;
               py::dict attrs;
               for (auto& kv : n->attrs()) attrs[py::str(kv.first)] = attr_to(kv.second);
               d["attrs"] = attrs;
               d["origin"] = n->origin();
               l.append(d);
             }
             return l;
           })
      .def("values",
           [](const Graph& g) {
             py::list l;
             for (Value* v : g.values())
               l.append(py::make_tuple(v->name(), static_cast<int>(v->dtype()), shape_or_none(v), v->is_constant()));
             return l;
           },
           "(name, onnx dtype code, shape or None, is_constant) for every value.")
      .def("constant",
           [](Graph& g, const std::string& name) -> py::object {
             Value* v = need_value(g, name);
             if (!v->is_constant()) return py::none();
             return array_from_tensor(*v->constant());
           })
      .def("insert_preprocess",
           [](Graph& g, const std::string& input, const py::dict& attrs) {
             Attributes as;
             for (auto kv : attrs) {
               std::string an = py::cast<std::string>(kv.first);
               as[an] = attr_from("preprocess", an, py::cast<py::tuple>(kv.second));
             }
             insert_preprocess(g, input, std::move(as));
             verify(g);
             infer_shapes(g);
           },
           py::arg("input"), py::arg("attrs"),
           "Puts a Preprocess node (ir/preprocess.h) in front of graph input `input`; the new uint8 "
           "frames input takes its name. Attributes as (onnx type, value) pairs.")
      .def("metadata", [](const Graph& g) { return g.metadata(); })
      .def("set_metadata", [](Graph& g, const std::string& k, const std::string& v) { g.metadata()[k] = v; });
}

}  // namespace engine::py_bind
