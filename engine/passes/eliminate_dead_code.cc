// eliminate_dead_code
//   node n with no output read by any node and none a graph output  ==>  (removed)
// then every value with neither producer nor users that is not a graph
// input/output (orphaned constants, old weights) is dropped.
// Preconditions: none; inference ops have no side effects, so an unread
// result is never needed. Graph inputs stay even when unused: they are the
// model's interface.
// Why a sweep and not a pattern: one reverse pass over the topological order
// removes whole dead chains at once (a consumer is visited before its
// producers), where a pattern would need one fixed-point sweep per link.
#include "passes/pass.h"

namespace engine {
namespace {

class EliminateDeadCode final : public Pass {
 public:
  std::string_view name() const override { return "eliminate_dead_code"; }
  std::string_view summary() const override { return "remove nodes whose results nobody reads"; }

  int run_once(Graph& g, PassContext& ctx) const override {
    std::vector<Node*> order = g.nodes();
    RewriteRecord rec;
    rec.pass = rec.pattern = std::string(name());
    int removed = 0;
    for (auto it = order.rbegin(); it != order.rend(); ++it) {
      Node* n = *it;
      bool live = false;
      for (Value* o : n->outputs())
        if (o && (!o->uses().empty() || o->is_graph_output())) live = true;
      if (live) continue;
      rec.removed.push_back(n->name());
      g.remove_node(n);
      ++removed;
    }
    // Dropping orphaned values alone is bookkeeping, not a rewrite: it does
    // not count towards the fixed point.
    g.remove_unused_values();
    if (removed) {
      ctx.count(std::string(name()), removed);
      ctx.log(std::move(rec));
    }
    return removed;
  }
};

}  // namespace

std::unique_ptr<Pass> make_eliminate_dead_code() { return std::make_unique<EliminateDeadCode>(); }

}  // namespace engine
