// Rewriter and the pattern sweep.
#include "passes/pass.h"

namespace engine {

namespace {

bool shapes_compatible(const Value* a, const Value* b) {
  if (!a->has_shape() || !b->has_shape()) return true;
  if (a->shape().size() != b->shape().size()) return false;
  for (size_t i = 0; i < a->shape().size(); ++i) {
    int64_t x = a->shape()[i], y = b->shape()[i];
    if (x >= 0 && y >= 0 && x != y) return false;
  }
  return true;
}

bool node_name_free(const Graph& g, const std::string& name) {
  for (const Node* n : g.nodes())
    if (n->name() == name) return false;
  return true;
}

}  // namespace

Value* Rewriter::add_constant(const std::string& hint, Tensor t) {
  std::string name = g_.find_value(hint) ? g_.unique_name(hint) : hint;
  return g_.add_constant(name, std::make_shared<const Tensor>(std::move(t)));
}

Value* Rewriter::add_value(const std::string& hint, DType dtype, const Shape* shape) {
  std::string name = g_.find_value(hint) ? g_.unique_name(hint) : hint;
  return g_.add_value(name, dtype, shape);
}

Node* Rewriter::add_node(OpKind kind, const std::string& name, const std::vector<Value*>& inputs,
                         const std::vector<Value*>& outputs, Attributes attrs, const std::vector<const Node*>& from) {
  std::string unique = !name.empty() && node_name_free(g_, name) ? name : g_.unique_name(name.empty() ? op_name(kind) : name);
  Node* n = g_.add_node(kind, unique, inputs, outputs, std::move(attrs));
  std::vector<std::string> origin = removed_origins_;
  for (const Node* f : from) origin.insert(origin.end(), f->origin().begin(), f->origin().end());
  n->add_origin(origin);
  record_.added.push_back(n->name());
  return n;
}

void Rewriter::replace(Value* from, Value* to) {
  ENGINE_CHECK(from->dtype() == DType::kUndefined || to->dtype() == DType::kUndefined || from->dtype() == to->dtype(),
               record_.pattern, ": replacing '", from->name(), "' (", dtype_name(from->dtype()), ") by '", to->name(),
               "' (", dtype_name(to->dtype()), ")");
  ENGINE_CHECK(shapes_compatible(from, to), record_.pattern, ": replacing '", from->name(), "' ",
               shape_str(from->shape()), " by '", to->name(), "' ", shape_str(to->shape()));
  g_.replace_all_uses(from, to);
}

void Rewriter::set_constant(Value* v, std::shared_ptr<const Tensor> t) {
  ENGINE_CHECK(!v->producer(), record_.pattern, ": '", v->name(), "' is still computed");
  ENGINE_CHECK(v->dtype() == DType::kUndefined || v->dtype() == t->dtype(), record_.pattern, ": folding '",
               v->name(), "' changes its dtype");
  g_.set_constant(v, std::move(t));
}

void Rewriter::set_input(Node* n, int index, Value* v) { g_.set_input(n, index, v); }

void Rewriter::set_inputs(Node* n, const std::vector<Value*>& inputs) { g_.set_inputs(n, inputs); }

void Rewriter::narrow(Value* v, const Shape& shape) {
  ENGINE_CHECK(!v->is_constant() && !v->is_graph_input() && !v->is_graph_output(), record_.pattern,
               ": narrowing '", v->name(), "', which is not an intermediate value");
  ENGINE_CHECK(!v->has_shape() || v->shape().size() == shape.size(), record_.pattern, ": narrowing '", v->name(),
               "' ", shape_str(v->shape()), " to ", shape_str(shape), " changes its rank");
  v->set_shape(shape);
}

void Rewriter::changed(const Node* n) {
  record_.removed.push_back(n->name());
  record_.added.push_back(n->name());
}

void Rewriter::set_attr(Node* n, const std::string& name, Attribute a) { n->set_attr(name, std::move(a)); }

void Rewriter::remove(Node* n) {
  record_.removed.push_back(n->name());
  removed_origins_.insert(removed_origins_.end(), n->origin().begin(), n->origin().end());
  if (alive_) alive_->erase(n);
  g_.remove_node(n);
}

void PassContext::refuse(Refusal r) { refusals_.push_back(std::move(r)); }

int PatternPass::run_once(Graph& g, PassContext& ctx) const {
  // Nodes are visited in the order of a snapshot; a node removed by an
  // earlier rewrite in this sweep leaves `alive` and is skipped (its memory
  // may already hold a new node), and nodes added by rewrites wait for the
  // next sweep.
  std::vector<Node*> snapshot = g.nodes();
  std::unordered_set<const Node*> alive(snapshot.begin(), snapshot.end());
  int changes = 0;
  std::vector<Refusal> pending;
  for (Node* n : snapshot) {
    if (!alive.count(n)) continue;
    pending.clear();
    bool rewritten = false;
    for (const auto& p : patterns_) {
      if (p->root() != kAnyOp && p->root() != n->kind()) continue;
      MatchResult r = p->match(g, *n);
      if (!r) {
        if (!r.quiet() || ctx.explain())
          pending.push_back({name_, std::string(p->name()), n->name(), n->op_type(), r.reason(), r.quiet()});
        continue;
      }
      Rewriter rw(g, name_, std::string(p->name()), &alive);
      p->rewrite(rw, r.match());
      ctx.log(rw.record());
      ctx.count(std::string(p->name()));
      ++changes;
      rewritten = true;
      break;
    }
    // A node another pattern rewrote was not refused.
    if (!rewritten)
      for (auto& r : pending) ctx.refuse(std::move(r));
  }
  if (changes) {
    g.topo_sort();
    g.remove_unused_values();
  }
  return changes;
}

}  // namespace engine
