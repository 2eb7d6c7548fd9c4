// Passes and patterns: the vocabulary of the graph optimizer.
//
// A Pattern is a local rewrite rooted at one op kind. match() inspects the
// graph read-only and returns either a Match (the nodes involved, plus any
// data the rewrite needs) or the *reason* it does not apply; rewrite() then
// changes the graph only through a Rewriter, which records what changed and
// refuses to replace a value by one of another dtype or shape.
//
// Two kinds of no-match, because a report listing every Relu that is "not a
// Conv" answers nothing:
//   NOT_APPLICABLE_IF(cond, reason...)  the node is not an instance of the
//       pattern at all (wrong producer, inputs not constant); the reason is
//       kept only when the PassManager explains (--explain).
//   NO_MATCH_IF(cond, reason...)  the pattern is there but a precondition
//       forbids the rewrite (output has other users, weight shared, value is
//       a graph output, padding not exact); always recorded and reported.
// Neither is an error: errors are for broken invariants.
//
// A Pass is what the registry lists and the user names (--disable-pass): one
// sweep over the graph, run by the PassManager until it changes nothing.
// Most passes are a PatternPass (a list of patterns); a few (dead code) are
// whole-graph sweeps.
// Thread-safety: passes are stateless and may be shared; a Graph is rewritten
// by one thread.
#pragma once

#include <any>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "core/error.h"
#include "ir/graph.h"

namespace engine {

// root() of a pattern that looks at every node (constant folding).
constexpr OpKind kAnyOp = OpKind::kNumOpKinds;

struct Match {
  std::vector<Node*> nodes;  // nodes[0] is the root by convention
  std::any data;             // pattern-specific facts computed by match()
};

class MatchResult {
 public:
  MatchResult(Match m) : ok_(true), match_(std::move(m)) {}  // NOLINT: implicit on purpose
  static MatchResult no_match(std::string reason, bool quiet) {
    MatchResult r;
    r.reason_ = std::move(reason);
    r.quiet_ = quiet;
    return r;
  }
  explicit operator bool() const { return ok_; }
  const Match& match() const { return match_; }
  const std::string& reason() const { return reason_; }
  bool quiet() const { return quiet_; }

 private:
  MatchResult() = default;
  bool ok_ = false;
  bool quiet_ = false;
  Match match_;
  std::string reason_;
};

#define NO_MATCH_IF(cond, ...)                                                         \
  do {                                                                                 \
    if (cond) return ::engine::MatchResult::no_match(::engine::str_cat(__VA_ARGS__), false); \
  } while (0)
#define NOT_APPLICABLE_IF(cond, ...)                                                   \
  do {                                                                                 \
    if (cond) return ::engine::MatchResult::no_match(::engine::str_cat(__VA_ARGS__), true); \
  } while (0)

// A refused match, as reported.
struct Refusal {
  std::string pass, pattern, node, op, reason;
  bool quiet = false;
};

// One rewrite, as logged: which pattern turned which nodes into which.
struct RewriteRecord {
  std::string pass, pattern;
  std::vector<std::string> removed, added;
};

// The only way patterns change a graph. New nodes get names derived from the
// nodes they replace and inherit their origin (the ONNX nodes they came
// from), so per-layer reports still find them. Nodes removed here are dropped
// from the sweep that is in progress (see PatternPass).
class Rewriter {
 public:
  Rewriter(Graph& g, std::string pass, std::string pattern, std::unordered_set<const Node*>* alive)
      : g_(g), alive_(alive) {
    record_.pass = std::move(pass);
    record_.pattern = std::move(pattern);
  }
  Graph& graph() { return g_; }

  // A new constant value with a unique name starting with `hint`.
  Value* add_constant(const std::string& hint, Tensor t);
  // A new computed value (typed as given; shape may be null).
  Value* add_value(const std::string& hint, DType dtype, const Shape* shape);
  // A new node. `name` is used as given when free, else made unique. Its
  // origin is the union of the origins of every node this rewrite removed
  // so far and of `from` (nodes still in the graph).
  Node* add_node(OpKind kind, const std::string& name, const std::vector<Value*>& inputs,
                 const std::vector<Value*>& outputs, Attributes attrs = {},
                 const std::vector<const Node*>& from = {});
  // Points every use of `from` at `to` (graph outputs keep their names).
  // Throws kInternal when dtype or known shapes differ: a pattern bug.
  void replace(Value* from, Value* to);
  // Makes a value whose producer was removed a constant (folding).
  void set_constant(Value* v, std::shared_ptr<const Tensor> t);
  void set_input(Node* n, int index, Value* v);
  void set_inputs(Node* n, const std::vector<Value*>& inputs);
  // Gives a computed value a new shape in place. Only for rewrites that
  // change its producer and every reader consistently in the same rewrite
  // (channel pruning narrows whole residual stages this way); a dtype change
  // or a rank change is a pattern bug (kInternal).
  void narrow(Value* v, const Shape& shape);
  // Records a node rewritten in place (inputs or attributes changed) in the
  // log, as removed and added under the same name.
  void changed(const Node* n);
  void set_attr(Node* n, const std::string& name, Attribute a);
  // Detaches and deletes the node; its outputs must be unused by then (or
  // replaced), else the graph would read a value nobody computes.
  void remove(Node* n);

  const RewriteRecord& record() const { return record_; }

 private:
  Graph& g_;
  std::unordered_set<const Node*>* alive_;
  RewriteRecord record_;
  std::vector<std::string> removed_origins_;
};

class Pattern {
 public:
  virtual ~Pattern() = default;
  virtual std::string_view name() const = 0;
  virtual OpKind root() const = 0;
  virtual MatchResult match(const Graph& g, const Node& root) const = 0;
  virtual void rewrite(Rewriter& rw, const Match& m) const = 0;
};

// What one sweep reports back to the PassManager.
class PassContext {
 public:
  explicit PassContext(bool explain) : explain_(explain) {}
  bool explain() const { return explain_; }
  void refuse(Refusal r);
  void log(RewriteRecord r) { log_.push_back(std::move(r)); }
  void count(const std::string& pattern, int n = 1) { pattern_counts_[pattern] += n; }
  std::vector<Refusal>& refusals() { return refusals_; }
  std::vector<RewriteRecord>& rewrites() { return log_; }
  std::map<std::string, int>& pattern_counts() { return pattern_counts_; }

 private:
  bool explain_;
  std::vector<Refusal> refusals_;
  std::vector<RewriteRecord> log_;
  std::map<std::string, int> pattern_counts_;
};

class Pass {
 public:
  virtual ~Pass() = default;
  virtual std::string_view name() const = 0;
  // One line for `pyengine inspect --passes` and the report.
  virtual std::string_view summary() const = 0;
  // One sweep over the graph; returns the number of rewrites made. Leaves
  // the graph verified-clean (topologically sorted, no dangling values).
  virtual int run_once(Graph& g, PassContext& ctx) const = 0;
};

// A pass made of patterns: every node whose kind is a pattern's root is
// offered to the patterns in order; the first that matches rewrites.
class PatternPass final : public Pass {
 public:
  PatternPass(std::string name, std::string summary, std::vector<std::unique_ptr<Pattern>> patterns)
      : name_(std::move(name)), summary_(std::move(summary)), patterns_(std::move(patterns)) {}
  std::string_view name() const override { return name_; }
  std::string_view summary() const override { return summary_; }
  int run_once(Graph& g, PassContext& ctx) const override;
  const std::vector<std::unique_ptr<Pattern>>& patterns() const { return patterns_; }

 private:
  std::string name_, summary_;
  std::vector<std::unique_ptr<Pattern>> patterns_;
};

// Factories, one per pass file; the registry (registry.cc) orders them.
std::unique_ptr<Pass> make_eliminate_identity();
std::unique_ptr<Pass> make_fold_constants();
std::unique_ptr<Pass> make_eliminate_dead_code();
std::unique_ptr<Pass> make_merge_reshapes();
std::unique_ptr<Pass> make_fold_pad_into_conv();
std::unique_ptr<Pass> make_fold_bn_into_conv();
std::unique_ptr<Pass> make_reparam_branches();
std::unique_ptr<Pass> make_restore_residuals();
std::unique_ptr<Pass> make_prune_dead_channels();
std::unique_ptr<Pass> make_fuse_conv_add_relu();
std::unique_ptr<Pass> make_fuse_gelu();
std::unique_ptr<Pass> make_fuse_squeeze_excitation();
std::unique_ptr<Pass> make_fuse_channel_split_norm();
std::unique_ptr<Pass> make_sink_channels_last();
std::unique_ptr<Pass> make_widen_float16();
std::unique_ptr<Pass> make_elide_float16_round_trips();
std::unique_ptr<Pass> make_u8_activations_to_int8();
std::unique_ptr<Pass> make_lower_qdq_to_int8();
std::unique_ptr<Pass> make_lower_int8_maxpool();
std::unique_ptr<Pass> make_int8_channels_last();
std::unique_ptr<Pass> make_int8_channels_first();
std::unique_ptr<Pass> make_fuse_float_quantize();
std::unique_ptr<Pass> make_fuse_channel_bias_relu();

}  // namespace engine
