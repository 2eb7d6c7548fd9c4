// The pipelines: ordered lists. Each entry says why it sits where it does;
// the PassManager runs each to a fixed point and repeats the list while
// anything changed.
//   default   float models (precision="fp32"; a Q/DQ model then runs its
//             Q/DQ nodes as float fake-quant, as onnxruntime does).
//   quantize  a float model that pyengine will calibrate and give Q/DQ
//             (insert_qdq): the default without the epilogue fusion.
//   int8      a graph with Q/DQ (a pre-quantized model, or insert_qdq's
//             output), lowered to the int8 kernels.
#include "passes/pass_manager.h"

namespace engine {

namespace {

struct Registry {
  std::vector<std::unique_ptr<Pass>> owned;
  std::vector<const Pass*> pipeline, quantize, int8;

  const Pass* add(std::unique_ptr<Pass> p) {
    owned.push_back(std::move(p));
    return owned.back().get();
  }

  Registry() {
    const Pass* dce = add(make_eliminate_dead_code());
    const Pass* widen = add(make_widen_float16());
    const Pass* identity = add(make_eliminate_identity());
    const Pass* constants = add(make_fold_constants());
    const Pass* reshapes = add(make_merge_reshapes());
    const Pass* pads = add(make_fold_pad_into_conv());
    const Pass* bn = add(make_fold_bn_into_conv());
    const Pass* reparam = add(make_reparam_branches());
    const Pass* restore = add(make_restore_residuals());
    const Pass* prune = add(make_prune_dead_channels());
    const Pass* fuse = add(make_fuse_conv_add_relu());
    const Pass* gelu = add(make_fuse_gelu());
    const Pass* se = add(make_fuse_squeeze_excitation());
    const Pass* ibn = add(make_fuse_channel_split_norm());
    const Pass* channels_last = add(make_sink_channels_last());
    const Pass* elide16 = add(make_elide_float16_round_trips());
    const Pass* u8 = add(make_u8_activations_to_int8());
    const Pass* lower = add(make_lower_qdq_to_int8());
    const Pass* lower_pool = add(make_lower_int8_maxpool());
    const Pass* nhwc = add(make_int8_channels_last());
    // Not in a pipeline: fit_int8_layout runs it (with the forward pass) on
    // plans as they load.
    add(make_int8_channels_first());
    const Pass* float_q = add(make_fuse_float_quantize());
    const Pass* bias_relu = add(make_fuse_channel_bias_relu());
    pipeline = {
        // Before everything: no kernel and no pass handles float16 values
        // (ModelOpt's default output); after it the graph is float32 with
        // Casts where float16 storage rounds.
        widen,
        // First: PyTorch dedups equal initializers by routing them through
        // Identity nodes, so BN parameters and weights are only seen as
        // constants once the Identities are gone.
        identity,
        // Before anything that wants constant weights: Constant nodes,
        // Shape/Gather/Concat chains on static shapes, weight transposes.
        constants,
        // Folding leaves the chains it evaluated without users; they would
        // count as "other users" in every single-use precondition below.
        dce,
        // Shape plumbing is canonical before the conv passes look through it.
        reshapes,
        // On folded constants (the exporters' Constant nodes); before BN
        // folding, which would take GELU's "* 0.5" for a scale to fold.
        gelu,
        // After gelu (a GELU is then one elementwise node of the island),
        // before BN folding, which folds the island's bias Adds and layer
        // scale into its new 1x1 convs, and before fusion.
        channels_last,
        // Before BN folding: the forward fold of an affine into a following
        // Conv needs the conv's final pads; and before fusion, which would
        // hide the Conv inside a FusedConv.
        pads,
        // After identity/constant folding (parameters must be constants),
        // before reparam (branches must be bare Convs) and before fusion (a
        // fused activation or residual would block the fold).
        bn,
        // After BN folding: each branch is then a Conv with bias, or the
        // bare/affine identity; before fusion, which would fuse the branch
        // sum into one of the branch convs as a residual.
        reparam,
        // After BN folding (an RM block's convs are then biased Convs with
        // their Dirac channels) and before fusion, which fuses the restored
        // Add into conv2's epilogue; before pruning, which then sees the
        // narrower block. In the quantize pipeline too: calibration sees the
        // residual block, and conv2's weight scales its trained weights.
        restore,
        // On folded weights (a zero BN gamma shows up only after folding)
        // and after reparam (merged convs can be pruned too); before fusion,
        // so the activation between producer and consumer is still a node.
        prune,
        // After BN folding (the BN of IBN's batch half is then a
        // ChannelAffine, an SE conv's BN folded) and before fusion, which
        // would hide the SE's Convs inside FusedConvs. Also in the quantize
        // pipeline: the fused ops run in float between the int8 convs.
        se,
        ibn,
        // Last of the rewrites: fused nodes are opaque to every pass above.
        fuse,
        // The per-channel Add and Relu no conv epilogue took (DenseNet's
        // Concat -> BN shift -> Relu, a pre-activation block's input).
        bias_relu,
        // Whatever the rewrites orphaned.
        dce,
    };
    // Q/DQ placement (insert_qdq), TensorRT and the int8 lowering look for
    // plain Conv -> Add -> Relu, which the epilogue fusions would hide inside
    // FusedConv and FusedChannelBias: leave them out.
    for (const Pass* p : pipeline)
      if (p != fuse && p != bias_relu) quantize.push_back(p);
    int8 = {
        widen,
        // Right after widening: the float16 roundings it leaves between
        // layers would separate every DQ from its Conv and every Conv from
        // its Q (see the pass for why dropping them is sound here).
        elide16,
        identity,
        constants,
        dce,
        reshapes,
        // A GELU in a quantized model runs in float between its DQ and Q.
        gelu,
        pads,
        // Canonicalizes a BatchNorm left between a DQ'd Conv and the next Q
        // (ModelOpt does not fold it) into a ChannelAffine, which the
        // lowering absorbs; BNs on constant float weights fold as usual.
        bn,
        // Float SE / IBN blocks of a pre-quantized model (those pyengine
        // quantized were fused before calibration, in the quantize pipeline).
        se,
        ibn,
        // Before fusion (FusedConv hides the Conv), after BN handling.
        // reparam_branches and prune_dead_channels are left out: they
        // rewrite float weights, and a quantized model's weights are what
        // its Q/DQ say.
        // uint8 activations (onnxruntime's) as int8 with zero point - 128,
        // the one form the lowering and the int8 kernels take.
        u8,
        lower,
        // After the lowering (it needs QConvs): the stem's MaxPool runs on
        // the QConv's requantized int8 output.
        lower_pool,
        // After both lowerings (it converts QConvs, and needs the int8
        // MaxPool to see that the convs after a pooled stem read values >=
        // 0) and before anything else touches the int8 tensors: runs of
        // QConvs go channels-last where the VNNI kernel reads its input in
        // place (dispatch.h, Int8Layout). The later passes only fuse float
        // ops, which it leaves alone.
        nhwc,
        // After both lowerings: the Q nodes left (no int8 op absorbed them)
        // take the float Concat / Add / Relu before them (DenseNet's).
        float_q,
        // The layers the model left in float (the classifier, say) still
        // get their epilogues fused.
        fuse,
        bias_relu,
        // The Q/DQ nodes the lowering orphaned.
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

const std::vector<const Pass*>* find_pipeline(const std::string& name) {
  if (name == "default") return &registry().pipeline;
  if (name == "quantize") return &registry().quantize;
  if (name == "int8") return &registry().int8;
  return nullptr;
}

std::vector<std::string> pipeline_names() { return {"default", "quantize", "int8"}; }

const Pass* find_pass(const std::string& name) {
  for (const auto& p : registry().owned)
    if (p->name() == name) return p.get();
  return nullptr;
}

}  // namespace engine
