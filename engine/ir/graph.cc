#include "ir/graph.h"

#include <algorithm>
#include <sstream>
#include <unordered_set>

namespace engine {

std::string Node::describe() const {
  return str_cat("node '", name_, "' (", kind_ == OpKind::kUnknown ? op_type_ : std::string(op_name(kind_)), ")");
}

int64_t Node::attr_int(const std::string& n, int64_t def) const {
  auto it = attrs_.find(n);
  if (it == attrs_.end()) return def;
  ENGINE_ENFORCE(it->second.type == Attribute::Type::kInt, kInvalidModel, describe(), ": attribute '", n,
                 "' must be an int");
  return it->second.i;
}

float Node::attr_float(const std::string& n, float def) const {
  auto it = attrs_.find(n);
  if (it == attrs_.end()) return def;
  if (it->second.type == Attribute::Type::kInt) return static_cast<float>(it->second.i);
  ENGINE_ENFORCE(it->second.type == Attribute::Type::kFloat, kInvalidModel, describe(), ": attribute '", n,
                 "' must be a float");
  return it->second.f;
}

std::string Node::attr_string(const std::string& n, const std::string& def) const {
  auto it = attrs_.find(n);
  if (it == attrs_.end()) return def;
  ENGINE_ENFORCE(it->second.type == Attribute::Type::kString, kInvalidModel, describe(), ": attribute '", n,
                 "' must be a string");
  return it->second.s;
}

std::vector<int64_t> Node::attr_ints(const std::string& n, std::vector<int64_t> def) const {
  auto it = attrs_.find(n);
  if (it == attrs_.end()) return def;
  ENGINE_ENFORCE(it->second.type == Attribute::Type::kInts, kInvalidModel, describe(), ": attribute '", n,
                 "' must be a list of ints");
  return it->second.ints;
}

std::vector<float> Node::attr_floats(const std::string& n, std::vector<float> def) const {
  auto it = attrs_.find(n);
  if (it == attrs_.end()) return def;
  ENGINE_ENFORCE(it->second.type == Attribute::Type::kFloats, kInvalidModel, describe(), ": attribute '", n,
                 "' must be a list of floats");
  return it->second.floats;
}

void Node::add_origin(const std::vector<std::string>& names) {
  for (const auto& n : names)
    if (std::find(origin_.begin(), origin_.end(), n) == origin_.end()) origin_.push_back(n);
}

// ---------------------------------------------------------------------------

Value* Graph::find_value(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

Value* Graph::get_or_add_value(const std::string& name) {
  if (Value* v = find_value(name)) return v;
  return add_value(name, DType::kUndefined, nullptr);
}

Value* Graph::add_value(const std::string& name, DType dtype, const Shape* shape) {
  ENGINE_ENFORCE(!name.empty(), kInvalidModel, "a value has an empty name");
  ENGINE_ENFORCE(!by_name_.count(name), kInvalidModel, "value '", name, "' is defined twice");
  auto v = std::make_unique<Value>();
  v->name_ = name;
  v->dtype_ = dtype;
  if (shape) v->set_shape(*shape);
  Value* raw = v.get();
  value_storage_.push_back(std::move(v));
  by_name_[name] = raw;
  return raw;
}

Value* Graph::add_constant(const std::string& name, std::shared_ptr<const Tensor> t) {
  Value* v = find_value(name);
  if (!v) v = add_value(name, t->dtype(), &t->shape());
  set_constant(v, std::move(t));
  return v;
}

void Graph::set_constant(Value* v, std::shared_ptr<const Tensor> t) {
  v->dtype_ = t->dtype();
  v->set_shape(t->shape());
  v->constant_ = std::move(t);
}

void Graph::add_input(Value* v) {
  if (v->is_input_) return;
  v->is_input_ = true;
  inputs_.push_back(v);
}

void Graph::replace_input(Value* from, Value* to) {
  ENGINE_CHECK(from->is_input_ && !to->is_input_, "replace_input('", from->name_, "', '", to->name_, "')");
  std::replace(inputs_.begin(), inputs_.end(), from, to);
  from->is_input_ = false;
  to->is_input_ = true;
}

void Graph::add_output(Value* v) {
  if (v->is_output_) return;
  v->is_output_ = true;
  outputs_.push_back(v);
}

Node* Graph::add_node(OpKind kind, const std::string& name, const std::vector<Value*>& inputs,
                      const std::vector<Value*>& outputs, Attributes attrs, const std::string& op_type,
                      const std::string& domain) {
  auto n = std::make_unique<Node>();
  n->kind_ = kind;
  n->name_ = name.empty() ? unique_name(kind == OpKind::kUnknown ? op_type : op_name(kind)) : name;
  n->op_type_ = op_type.empty() ? std::string(op_name(kind)) : op_type;
  n->domain_ = op_type.empty() ? std::string(op_domain(kind)) : domain;
  n->attrs_ = std::move(attrs);
  n->origin_.push_back(n->name_);
  Node* raw = n.get();
  for (Value* o : outputs) {
    if (!o) { raw->outputs_.push_back(nullptr); continue; }
    ENGINE_ENFORCE(!o->producer_ && !o->is_constant() && !o->is_input_, kInvalidModel, raw->describe(),
                   ": output '", o->name(), "' is already produced elsewhere");
    o->producer_ = raw;
    raw->outputs_.push_back(o);
  }
  node_storage_.push_back(std::move(n));
  order_.push_back(raw);
  set_inputs(raw, inputs);
  return raw;
}

std::string Graph::unique_name(const std::string& prefix) {
  for (;;) {
    std::string name = str_cat(prefix, "_", name_counter_++);
    if (!by_name_.count(name)) {
      bool node_clash = false;
      for (Node* n : order_) if (n->name_ == name) { node_clash = true; break; }
      if (!node_clash) return name;
    }
  }
}

static void erase_use(Value* v, Node* n, int index, std::vector<Use>& uses) {
  for (auto it = uses.begin(); it != uses.end(); ++it)
    if (it->node == n && it->index == index) { uses.erase(it); return; }
}

void Graph::set_input(Node* n, int index, Value* v) {
  if (index >= n->num_inputs()) n->inputs_.resize(index + 1, nullptr);
  if (Value* old = n->inputs_[index]) erase_use(old, n, index, old->uses_);
  n->inputs_[index] = v;
  if (v) v->uses_.push_back({n, index});
}

void Graph::set_inputs(Node* n, const std::vector<Value*>& inputs) {
  for (int i = 0; i < n->num_inputs(); ++i)
    if (Value* old = n->inputs_[i]) erase_use(old, n, i, old->uses_);
  n->inputs_.clear();
  for (size_t i = 0; i < inputs.size(); ++i) set_input(n, static_cast<int>(i), inputs[i]);
  while (!n->inputs_.empty() && n->inputs_.back() == nullptr) n->inputs_.pop_back();
}

void Graph::remove_node(Node* n) {
  for (int i = 0; i < n->num_inputs(); ++i)
    if (Value* v = n->inputs_[i]) erase_use(v, n, i, v->uses_);
  for (Value* o : n->outputs_)
    if (o) o->producer_ = nullptr;
  order_.erase(std::remove(order_.begin(), order_.end(), n), order_.end());
  node_storage_.erase(std::remove_if(node_storage_.begin(), node_storage_.end(),
                                     [n](const std::unique_ptr<Node>& p) { return p.get() == n; }),
                      node_storage_.end());
}

void Graph::rename_value(Value* v, const std::string& name) {
  if (v->name_ == name) return;
  ENGINE_CHECK(!by_name_.count(name), "rename to existing value ", name);
  by_name_.erase(v->name_);
  v->name_ = name;
  by_name_[name] = v;
}

void Graph::replace_all_uses(Value* from, Value* to) {
  if (from == to) return;
  std::vector<Use> uses = from->uses_;
  for (const Use& u : uses) set_input(u.node, u.index, to);
  if (from->is_output_) {
    ENGINE_CHECK(!to->is_output_ && !to->is_input_,
                 "cannot make '", to->name(), "' replace graph output '", from->name(), "'");
    std::replace(outputs_.begin(), outputs_.end(), from, to);
    from->is_output_ = false;
    to->is_output_ = true;
    // Graph output names are part of the model's interface: keep them.
    std::string name = from->name_;
    rename_value(from, unique_name(name + "_replaced"));
    rename_value(to, name);
  }
}

void Graph::remove_unused_values() {
  std::vector<std::unique_ptr<Value>> kept;
  kept.reserve(value_storage_.size());
  for (auto& v : value_storage_) {
    if (!v->producer_ && v->uses_.empty() && !v->is_input_ && !v->is_output_) {
      by_name_.erase(v->name_);
    } else {
      kept.push_back(std::move(v));
    }
  }
  value_storage_ = std::move(kept);
}

void Graph::topo_sort() {
  // Kahn's algorithm, stable with respect to the current order so that text
  // dumps stay readable and diffs small.
  std::unordered_map<const Node*, int> pending;
  std::unordered_map<const Node*, size_t> position;
  for (size_t i = 0; i < order_.size(); ++i) position[order_[i]] = i;
  for (Node* n : order_) {
    int deps = 0;
    for (Value* v : n->inputs_)
      if (v && v->producer_) ++deps;
    pending[n] = deps;
  }
  std::vector<Node*> ready;
  for (Node* n : order_)
    if (pending[n] == 0) ready.push_back(n);
  std::vector<Node*> out;
  out.reserve(order_.size());
  auto by_pos = [&](Node* a, Node* b) { return position[a] > position[b]; };
  std::make_heap(ready.begin(), ready.end(), by_pos);
  while (!ready.empty()) {
    std::pop_heap(ready.begin(), ready.end(), by_pos);
    Node* n = ready.back();
    ready.pop_back();
    out.push_back(n);
    for (Value* o : n->outputs_) {
      if (!o) continue;
      for (const Use& u : o->uses_) {
        if (--pending[u.node] == 0) {
          ready.push_back(u.node);
          std::push_heap(ready.begin(), ready.end(), by_pos);
        }
      }
    }
  }
  if (out.size() != order_.size()) {
    for (Node* n : order_)
      if (pending[n] > 0)
        fail(ErrorKind::kInvalidModel, "the graph has a cycle through ", n->describe());
  }
  order_ = std::move(out);
}

std::vector<Value*> Graph::values() const {
  std::vector<Value*> v;
  v.reserve(value_storage_.size());
  for (auto& p : value_storage_) v.push_back(p.get());
  return v;
}

std::vector<Value*> Graph::constants() const {
  std::vector<Value*> v;
  for (auto& p : value_storage_)
    if (p->is_constant()) v.push_back(p.get());
  return v;
}

std::unique_ptr<Graph> Graph::clone() const {
  auto g = std::make_unique<Graph>();
  for (auto& p : value_storage_) {
    Value* v = g->add_value(p->name_, p->dtype_, p->has_shape_ ? &p->shape_ : nullptr);
    v->constant_ = p->constant_;
  }
  for (Value* v : inputs_) g->add_input(g->find_value(v->name_));
  for (Node* n : order_) {
    std::vector<Value*> ins, outs;
    for (Value* v : n->inputs_) ins.push_back(v ? g->find_value(v->name_) : nullptr);
    for (Value* v : n->outputs_) outs.push_back(v ? g->find_value(v->name_) : nullptr);
    Node* c = g->add_node(n->kind_, n->name_, ins, outs, n->attrs_, n->op_type_, n->domain_);
    c->origin_ = n->origin_;
  }
  for (Value* v : outputs_) g->add_output(g->find_value(v->name_));
  g->metadata_ = metadata_;
  g->name_counter_ = name_counter_;
  return g;
}

}  // namespace engine
