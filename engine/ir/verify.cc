// verify(): the IR's invariants, checked after import and (in tests) after
// every pass. A failure here is either a malformed model (at import) or a
// pass bug; the message names the node or value either way.
#include <sstream>
#include <unordered_set>

#include "ir/graph.h"

namespace engine {

void verify(const Graph& g) {
  std::unordered_set<const Value*> available;
  for (Value* v : g.inputs()) available.insert(v);
  for (Value* v : g.values())
    if (v->is_constant()) available.insert(v);
  std::unordered_set<std::string> node_names;
  for (Node* n : g.nodes()) {
    ENGINE_ENFORCE(node_names.insert(n->name()).second, kInvalidModel, "two nodes are named '", n->name(), "'");
    for (int i = 0; i < n->num_inputs(); ++i) {
      Value* v = n->input(i);
      if (!v) continue;
      ENGINE_ENFORCE(available.count(v), kInvalidModel, n->describe(), ": input '", v->name(),
                     "' is not a graph input, an initializer, or the output of an earlier node");
      bool found = false;
      for (const Use& u : v->uses()) found |= (u.node == n && u.index == i);
      ENGINE_CHECK(found, "use list of '", v->name(), "' misses ", n->describe());
    }
    for (Value* o : n->outputs()) {
      if (!o) continue;
      ENGINE_CHECK(o->producer() == n, "producer of '", o->name(), "' is not ", n->describe());
      ENGINE_ENFORCE(!available.count(o), kInvalidModel, n->describe(), ": output '", o->name(),
                     "' is also produced elsewhere");
      available.insert(o);
    }
  }
  for (Value* v : g.values()) {
    for (const Use& u : v->uses())
      ENGINE_CHECK(u.node->input(u.index) == v, "stale use of '", v->name(), "'");
    ENGINE_CHECK(!(v->producer() && v->is_constant()), "'", v->name(), "' is both computed and constant");
  }
  for (Value* v : g.outputs())
    ENGINE_ENFORCE(available.count(v), kInvalidModel, "graph output '", v->name(), "' is never computed");
}

namespace {

void print_attr(std::ostream& os, const Attribute& a) {
  switch (a.type) {
    case Attribute::Type::kInt: os << a.i; break;
    case Attribute::Type::kFloat: os << a.f; break;
    case Attribute::Type::kString: os << '"' << a.s << '"'; break;
    case Attribute::Type::kInts: {
      os << "[";
      for (size_t i = 0; i < a.ints.size(); ++i) os << (i ? "," : "") << a.ints[i];
      os << "]";
      break;
    }
    case Attribute::Type::kFloats: {
      os << "[";
      for (size_t i = 0; i < a.floats.size(); ++i) os << (i ? "," : "") << a.floats[i];
      os << "]";
      break;
    }
    case Attribute::Type::kStrings: {
      os << "[";
      for (size_t i = 0; i < a.strings.size(); ++i) os << (i ? "," : "") << '"' << a.strings[i] << '"';
      os << "]";
      break;
    }
    case Attribute::Type::kTensor:
      os << "tensor<" << dtype_name(a.t->dtype()) << shape_str(a.t->shape()) << ">";
      break;
  }
}

std::string type_str(const Value* v) {
  std::string s = dtype_name(v->dtype());
  return v->has_shape() ? s + shape_str(v->shape()) : s + "[*]";
}

}  // namespace

std::string to_text(const Graph& g) {
  std::ostringstream os;
  os << "graph(";
  for (size_t i = 0; i < g.inputs().size(); ++i)
    os << (i ? ", " : "") << "%" << g.inputs()[i]->name() << ": " << type_str(g.inputs()[i]);
  os << ") {\n";
  for (Value* v : g.values())
    if (v->is_constant() && !v->uses().empty())
      os << "  %" << v->name() << ": " << type_str(v) << " = constant\n";
  for (Node* n : g.nodes()) {
    os << "  ";
    for (int i = 0; i < n->num_outputs(); ++i) {
      Value* o = n->output(i);
      os << (i ? ", " : "") << (o ? "%" + o->name() + ": " + type_str(o) : std::string("_"));
    }
    os << " = " << (n->kind() == OpKind::kUnknown ? n->op_type() : op_name(n->kind())) << "(";
    for (int i = 0; i < n->num_inputs(); ++i) {
      Value* v = n->input(i);
      os << (i ? ", " : "") << (v ? "%" + v->name() : std::string("_"));
    }
    os << ")";
    if (!n->attrs().empty()) {
      os << " {";
      bool first = true;
      for (auto& kv : n->attrs()) {
        os << (first ? "" : ", ") << kv.first << "=";
        print_attr(os, kv.second);
        first = false;
      }
      os << "}";
    }
    os << "  # " << n->name() << "\n";
  }
  os << "  return ";
  for (size_t i = 0; i < g.outputs().size(); ++i) os << (i ? ", " : "") << "%" << g.outputs()[i]->name();
  os << "\n}\n";
  return os.str();
}

}  // namespace engine
