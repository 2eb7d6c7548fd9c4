// The graph IR: Graph owns Nodes and Values.
//
// Invariants (checked by verify()):
//  - every Value has at most one producer; a Value without producer is a
//    graph input or a constant (or an omitted optional input, never stored);
//  - each Node's inputs are produced earlier in nodes() (topological order);
//  - a Value's uses list each (node, input index) pair that reads it.
// Pointers to Nodes and Values stay valid until the object is removed.
// Constant tensors are shared between graph copies and never mutated in
// place: a pass that changes a weight makes a new Tensor.
// Thread-safety: none; a Graph is built and rewritten by one thread, and is
// read-only once an executor is compiled from it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "ir/op_kind.h"

namespace engine {

class Node;

struct Attribute {
  // Codes are ONNX's AttributeProto.AttributeType.
  enum class Type : int { kFloat = 1, kInt = 2, kString = 3, kTensor = 4, kFloats = 6, kInts = 7, kStrings = 8 };
  Type type = Type::kInt;
  float f = 0.f;
  int64_t i = 0;
  std::string s;
  std::vector<float> floats;
  std::vector<int64_t> ints;
  std::vector<std::string> strings;
  std::shared_ptr<const Tensor> t;

  static Attribute of_int(int64_t v) { Attribute a; a.type = Type::kInt; a.i = v; return a; }
  static Attribute of_float(float v) { Attribute a; a.type = Type::kFloat; a.f = v; return a; }
  static Attribute of_string(std::string v) { Attribute a; a.type = Type::kString; a.s = std::move(v); return a; }
  static Attribute of_ints(std::vector<int64_t> v) { Attribute a; a.type = Type::kInts; a.ints = std::move(v); return a; }
  static Attribute of_floats(std::vector<float> v) { Attribute a; a.type = Type::kFloats; a.floats = std::move(v); return a; }
  static Attribute of_tensor(std::shared_ptr<const Tensor> v) { Attribute a; a.type = Type::kTensor; a.t = std::move(v); return a; }
};
using Attributes = std::map<std::string, Attribute>;

struct Use {
  Node* node;
  int index;  // which input of node
};

class Value {
 public:
  const std::string& name() const { return name_; }
  DType dtype() const { return dtype_; }
  // Rank and dims; a dim of -1 is unknown (e.g. the dynamic batch axis).
  bool has_shape() const { return has_shape_; }
  const Shape& shape() const { return shape_; }
  void set_type(DType dtype) { dtype_ = dtype; }
  void set_shape(Shape shape) { shape_ = std::move(shape); has_shape_ = true; }
  void clear_shape() { shape_.clear(); has_shape_ = false; }

  Node* producer() const { return producer_; }
  const std::vector<Use>& uses() const { return uses_; }
  bool is_constant() const { return constant_ != nullptr; }
  const std::shared_ptr<const Tensor>& constant() const { return constant_; }
  bool is_graph_input() const { return is_input_; }
  bool is_graph_output() const { return is_output_; }

 private:
  friend class Graph;
  std::string name_;
  DType dtype_ = DType::kUndefined;
  Shape shape_;
  bool has_shape_ = false;
  Node* producer_ = nullptr;
  std::vector<Use> uses_;
  std::shared_ptr<const Tensor> constant_;
  bool is_input_ = false;
  bool is_output_ = false;
};

class Node {
 public:
  OpKind kind() const { return kind_; }
  const std::string& name() const { return name_; }
  // The op type and domain as imported ("Conv", ""); for kUnknown these name
  // the op we could not map.
  const std::string& op_type() const { return op_type_; }
  const std::string& domain() const { return domain_; }
  // "node 'conv1' (Conv)": the prefix of every error about this node.
  std::string describe() const;

  int num_inputs() const { return static_cast<int>(inputs_.size()); }
  int num_outputs() const { return static_cast<int>(outputs_.size()); }
  // nullptr where an optional input/output is omitted.
  Value* input(int i) const { return i < num_inputs() ? inputs_[i] : nullptr; }
  Value* output(int i) const { return i < num_outputs() ? outputs_[i] : nullptr; }
  const std::vector<Value*>& inputs() const { return inputs_; }
  const std::vector<Value*>& outputs() const { return outputs_; }

  const Attributes& attrs() const { return attrs_; }
  Attributes& mutable_attrs() { return attrs_; }
  bool has_attr(const std::string& n) const { return attrs_.count(n) != 0; }
  int64_t attr_int(const std::string& n, int64_t def) const;
  float attr_float(const std::string& n, float def) const;
  std::string attr_string(const std::string& n, const std::string& def) const;
  std::vector<int64_t> attr_ints(const std::string& n, std::vector<int64_t> def = {}) const;
  std::vector<float> attr_floats(const std::string& n, std::vector<float> def = {}) const;
  void set_attr(const std::string& n, Attribute a) { attrs_[n] = std::move(a); }

  // ONNX node names this node was made from (itself, or every node a pass
  // fused into it), for per-layer reports.
  const std::vector<std::string>& origin() const { return origin_; }
  void add_origin(const std::vector<std::string>& names);

 private:
  friend class Graph;
  OpKind kind_ = OpKind::kUnknown;
  std::string name_, op_type_, domain_;
  std::vector<Value*> inputs_, outputs_;
  Attributes attrs_;
  std::vector<std::string> origin_;
};

class Graph {
 public:
  Graph() = default;
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  // A structural deep copy (constant tensors are shared, see above).
  std::unique_ptr<Graph> clone() const;

  // --- building -----------------------------------------------------------
  // Returns the value named `name`, creating it (untyped) if needed.
  Value* get_or_add_value(const std::string& name);
  Value* find_value(const std::string& name) const;
  Value* add_value(const std::string& name, DType dtype, const Shape* shape);
  Value* add_constant(const std::string& name, std::shared_ptr<const Tensor> t);
  // Turns a value into a constant (constant folding) or replaces its data.
  void set_constant(Value* v, std::shared_ptr<const Tensor> t);
  void add_input(Value* v);
  // Puts `to` in `from`'s place among the graph inputs (same position);
  // `from` stops being an input (insert_preprocess gives it a producer).
  void replace_input(Value* from, Value* to);
  void add_output(Value* v);
  // Adds a node; inputs/outputs may contain nullptr for omitted optionals.
  // Outputs must not have a producer yet.
  Node* add_node(OpKind kind, const std::string& name, const std::vector<Value*>& inputs,
                 const std::vector<Value*>& outputs, Attributes attrs = {},
                 const std::string& op_type = "", const std::string& domain = "");
  // A name not used by any value or node, starting with `prefix`.
  std::string unique_name(const std::string& prefix);

  // --- rewriting ----------------------------------------------------------
  void set_input(Node* n, int index, Value* v);
  void set_inputs(Node* n, const std::vector<Value*>& inputs);
  // Detaches the node from its inputs and outputs and deletes it; its
  // outputs stay as values without producer (remove them or reuse them).
  void remove_node(Node* n);
  // Points every use of `from` at `to`. If `from` is a graph output, `to`
  // takes its place there and its name (so graph output names never change).
  void replace_all_uses(Value* from, Value* to);
  // Removes values that have no producer, no uses and are not graph
  // inputs/outputs (dangling after rewrites).
  void remove_unused_values();
  // Re-establishes topological order of nodes(); throws kInvalidModel on a
  // cycle or on a value read before it is produced.
  void topo_sort();
  // Renames a value (keeps names unique).
  void rename_value(Value* v, const std::string& name);

  // --- reading ------------------------------------------------------------
  const std::vector<Node*>& nodes() const { return order_; }
  const std::vector<Value*>& inputs() const { return inputs_; }
  const std::vector<Value*>& outputs() const { return outputs_; }
  std::vector<Value*> values() const;
  std::vector<Value*> constants() const;
  size_t num_nodes() const { return order_.size(); }
  int num_uses(const Value* v) const { return static_cast<int>(v->uses_.size()); }
  // Free-form metadata carried into plans (e.g. "producer_name").
  std::map<std::string, std::string>& metadata() { return metadata_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::vector<std::unique_ptr<Node>> node_storage_;
  std::vector<Node*> order_;
  std::vector<std::unique_ptr<Value>> value_storage_;
  std::unordered_map<std::string, Value*> by_name_;
  std::vector<Value*> inputs_, outputs_;
  std::map<std::string, std::string> metadata_;
  int64_t name_counter_ = 0;
};

// Checks the invariants above plus per-op arity; throws kInvalidModel naming
// the node or value at fault.
void verify(const Graph& g);

// One node per line, stable, for golden tests and bug reports:
//   %y: float32[?,64,56,56] = Conv(%x, %w, %b) {group=1, kernel_shape=[3,3]}  # conv1
std::string to_text(const Graph& g);

}  // namespace engine
