// fuse_channel_split_norm: IBN-Net's mixed normalization without copies.
//
//   Split(x, [k, C-k], axis=1) -> InstanceNormalization(x0) | BN(x1) -> Concat(axis=1)
//   ==>  ChannelSplitNorm(x, in_scale, in_bias, s, t) {epsilon, instance_channels=k, instance_first=1}
// and the mirrored order (BN on the first part, instance_first=0). The BN may
// already be a ChannelAffine (fold_bn_into_conv lowers an unfoldable BN) and
// is passed on as its per-channel affine s = g / sqrt(var + eps),
// t = beta - mean * s.
// Why this op and not views: the CPU executor binds every value to one
// contiguous arena buffer and aliases only whole buffers at offset 0
// (Reshape-like ops); a channel slice of an [N, C, H, W] tensor is contiguous
// only for N = 1, so Split outputs and Concat inputs cannot be views of one
// buffer at any batch size. One op that writes each output channel in place
// does the same job for every batch: no split halves, no normalized halves,
// no concatenation copy.
// Preconditions: the Split has exactly the two outputs, along axis 1, each
// read only by its normalization, which is read only by the Concat (in the
// Split's order, axis 1); static channel counts; BN in inference mode with
// constant parameters; float32.
#include <cmath>

#include "passes/pass.h"
#include "passes/util.h"

namespace engine {
namespace {

int64_t axis_of(const Node& n, const Value* x) {
  int64_t axis = n.attr_int("axis", 0);
  if (axis < 0 && x->has_shape()) axis += static_cast<int64_t>(x->shape().size());
  return axis;
}

struct SplitNormMatch {
  Value* x;
  Value* in_scale;
  Value* in_bias;
  float eps;
  int64_t k;
  bool instance_first;
  std::vector<float> s, t;
};

// The per-channel affine of a BN or ChannelAffine with constant parameters.
bool affine_params(const Node& n, int64_t c, std::vector<float>* s, std::vector<float>* t, std::string* why) {
  if (n.kind() == OpKind::kBatchNormalization) {
    if (n.attr_int("training_mode", 0) != 0) {
      *why = "the BatchNormalization is in training mode";
      return false;
    }
    for (int o = 1; o < n.num_outputs(); ++o)
      if (n.output(o) && (!n.output(o)->uses().empty() || n.output(o)->is_graph_output())) {
        *why = "the BatchNormalization's statistics outputs are used";
        return false;
      }
    auto g = float_values(n.input(1)), b = float_values(n.input(2)), m = float_values(n.input(3)),
         v = float_values(n.input(4));
    if (!g || !b || !m || !v) {
      *why = "the BatchNormalization parameters are not constant";
      return false;
    }
    if (static_cast<int64_t>(g->size()) != c || b->size() != g->size() || m->size() != g->size() ||
        v->size() != g->size()) {
      *why = "the BatchNormalization parameters do not have one entry per channel";
      return false;
    }
    const double eps = n.attr_float("epsilon", 1e-5f);
    s->resize(c);
    t->resize(c);
    for (int64_t i = 0; i < c; ++i) {
      const double sc = (*g)[i] / std::sqrt(static_cast<double>((*v)[i]) + eps);
      (*s)[i] = static_cast<float>(sc);
      (*t)[i] = static_cast<float>((*b)[i] - (*m)[i] * sc);
    }
    return true;
  }
  auto sv = float_values(n.input(1));
  auto tv = n.num_inputs() > 2 && n.input(2) ? float_values(n.input(2)) : std::optional<std::vector<float>>();
  if (!sv || (n.num_inputs() > 2 && n.input(2) && !tv)) {
    *why = "the ChannelAffine parameters are not constant";
    return false;
  }
  if (!tv) tv = std::vector<float>(sv->size(), 0.f);
  auto widen = [c](std::vector<float>& a) {
    if (a.size() == 1) a.assign(c, a[0]);
    return static_cast<int64_t>(a.size()) == c;
  };
  if (!widen(*sv) || !widen(*tv)) {
    *why = "the ChannelAffine parameters do not have one entry per channel";
    return false;
  }
  *s = *sv;
  *t = *tv;
  return true;
}

class FuseChannelSplitNorm final : public Pattern {
 public:
  std::string_view name() const override { return "channel_split_norm"; }
  OpKind root() const override { return OpKind::kConcat; }

  MatchResult match(const Graph&, const Node& cat) const override {
    NOT_APPLICABLE_IF(cat.num_inputs() != 2 || !cat.input(0) || !cat.input(1), "not a Concat of two values");
    Node* norm[2] = {producer_of(cat.input(0)), producer_of(cat.input(1))};
    int in_idx = -1;
    for (int i = 0; i < 2; ++i)
      if (is_op(norm[i], OpKind::kInstanceNormalization)) in_idx = i;
    NOT_APPLICABLE_IF(in_idx < 0, "no input is an InstanceNormalization");
    Node* other = norm[1 - in_idx];
    NOT_APPLICABLE_IF(!is_op(other, OpKind::kBatchNormalization) && !is_op(other, OpKind::kChannelAffine),
                      "the other input is not a BatchNormalization or ChannelAffine");
    Node* split = producer_of(norm[0]->input(0));
    NOT_APPLICABLE_IF(!is_op(split, OpKind::kSplit) || producer_of(norm[1]->input(0)) != split,
                      "the normalizations do not read one Split");
    Value* x = split->input(0);
    NO_MATCH_IF(split->num_outputs() != 2, "the Split has ", split->num_outputs(), " outputs, not 2");
    NO_MATCH_IF(norm[0]->input(0) != split->output(0) || norm[1]->input(0) != split->output(1),
                "the Concat does not keep the Split's order");
    NO_MATCH_IF(axis_of(*split, x) != 1, "the Split is not along the channels (axis 1)");
    NO_MATCH_IF(axis_of(cat, cat.output(0)) != 1, "the Concat is not along the channels (axis 1)");
    for (int i = 0; i < 2; ++i) {
      NO_MATCH_IF(!single_use(split->output(i)), "the Split output '", split->output(i)->name(),
                  "' has other readers or is a graph output");
      NO_MATCH_IF(!single_use(norm[i]->output(0)), "the normalized part '", norm[i]->output(0)->name(),
                  "' has other readers or is a graph output");
    }
    NO_MATCH_IF(x->dtype() != DType::kFloat32, "the input is not float32");
    NO_MATCH_IF(!x->has_shape() || x->shape().size() < 3 || x->shape()[1] < 0, "the input's channel count is unknown");
    const int64_t c = x->shape()[1];
    // Channel counts of the two parts: the Split's sizes (input or
    // attribute), else an even split.
    std::vector<int64_t> sizes;
    if (split->num_inputs() > 1 && split->input(1)) {
      auto s = int_values(split->input(1));
      NO_MATCH_IF(!s, "the Split sizes are not constant");
      sizes = *s;
    } else if (split->has_attr("split")) {
      sizes = split->attr_ints("split");
    } else {
      NO_MATCH_IF(c % 2 != 0, "an even Split of ", c, " channels");
      sizes = {c / 2, c / 2};
    }
    NO_MATCH_IF(sizes.size() != 2 || sizes[0] < 0 || sizes[1] < 0 || sizes[0] + sizes[1] != c,
                "the Split sizes ", shape_str(sizes), " do not cover the ", c, " channels");
    const Node* in = norm[in_idx];
    NO_MATCH_IF(in->num_inputs() != 3 || !in->input(1) || !in->input(2), "the InstanceNormalization lacks parameters");
    SplitNormMatch m;
    m.x = x;
    m.in_scale = in->input(1);
    m.in_bias = in->input(2);
    m.eps = in->attr_float("epsilon", 1e-5f);
    m.k = sizes[in_idx];
    m.instance_first = in_idx == 0;
    std::string why;
    NO_MATCH_IF(!affine_params(*other, c - m.k, &m.s, &m.t, &why), why);
    Match r;
    r.nodes = {const_cast<Node*>(&cat), norm[0], norm[1], split};
    r.data = m;
    return r;
  }

  void rewrite(Rewriter& rw, const Match& m) const override {
    const auto& f = std::any_cast<const SplitNormMatch&>(m.data);
    Node* cat = m.nodes[0];
    Value* y = cat->output(0);
    const std::string name = cat->name();
    const int64_t ca = static_cast<int64_t>(f.s.size());
    Value* s = rw.add_constant(name + "_scale", float_tensor({ca}, f.s));
    Value* t = rw.add_constant(name + "_shift", float_tensor({ca}, f.t));
    for (Node* n : m.nodes) rw.remove(n);
    Attributes attrs;
    attrs["epsilon"] = Attribute::of_float(f.eps);
    attrs["instance_channels"] = Attribute::of_int(f.k);
    attrs["instance_first"] = Attribute::of_int(f.instance_first ? 1 : 0);
    rw.add_node(OpKind::kChannelSplitNorm, name, {f.x, f.in_scale, f.in_bias, s, t}, {y}, attrs);
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_channel_split_norm() {
  std::vector<std::unique_ptr<Pattern>> p;
  p.push_back(std::make_unique<FuseChannelSplitNorm>());
  return std::make_unique<PatternPass>(
      "fuse_channel_split_norm",
      "fuse IBN's Split -> InstanceNormalization | BatchNormalization -> Concat into one ChannelSplitNorm",
      std::move(p));
}

}  // namespace engine
