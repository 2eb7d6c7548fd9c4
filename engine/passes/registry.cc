// The default pipeline: one ordered list. Each entry says why it sits where
// it does; the PassManager runs each to a fixed point and repeats the list
// while anything changed.
#include "passes/pass_manager.h"

namespace engine {

namespace {

struct Registry {
  std::vector<std::unique_ptr<Pass>> owned;
  std::vector<const Pass*> pipeline;

  const Pass* add(std::unique_ptr<Pass> p) {
    owned.push_back(std::move(p));
    return owned.back().get();
  }

  Registry() {
    const Pass* dce = add(make_eliminate_dead_code());
    pipeline = {
        // First: PyTorch dedups equal initializers by routing them through
        // Identity nodes, so BN parameters and weights are only seen as
        // constants once the Identities are gone.
        add(make_eliminate_identity()),
        // Before anything that wants constant weights: Constant nodes,
        // Shape/Gather/Concat chains on static shapes, weight transposes.
        add(make_fold_constants()),
        // Folding leaves the chains it evaluated without users; they would
        // count as "other users" in every single-use precondition below.
        dce,
        // Shape plumbing is canonical before the conv passes look through it.
        add(make_merge_reshapes()),
        // Before BN folding: the forward fold of an affine into a following
        // Conv needs the conv's final pads; and before fusion, which would
        // hide the Conv inside a FusedConv.
        add(make_fold_pad_into_conv()),
        // After identity/constant folding (parameters must be constants),
        // before reparam (branches must be bare Convs) and before fusion (a
        // fused activation or residual would block the fold).
        add(make_fold_bn_into_conv()),
        // After BN folding: each branch is then a Conv with bias, or the
        // bare/affine identity; before fusion, which would fuse the branch
        // sum into one of the branch convs as a residual.
        add(make_reparam_branches()),
        // On folded weights (a zero BN gamma shows up only after folding)
        // and after reparam (merged convs can be pruned too); before fusion,
        // so the activation between producer and consumer is still a node.
        add(make_prune_dead_channels()),
        // Last of the rewrites: fused nodes are opaque to every pass above.
        add(make_fuse_conv_add_relu()),
        // Whatever the rewrites orphaned.
        dce,
    };
  }
};

const Registry& registry() {
  static const Registry r;
  return r;
}

}  // namespace

const std::vector<const Pass*>& default_passes() { return registry().pipeline; }

const Pass* find_pass(const std::string& name) {
  for (const auto& p : registry().owned)
    if (p->name() == name) return p.get();
  return nullptr;
}

}  // namespace engine
