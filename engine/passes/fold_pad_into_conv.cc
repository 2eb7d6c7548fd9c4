// fold_pad_into_conv: an explicit Pad becomes the consumer's own padding.
//   Conv(Pad(x, p, constant 0))                 ==>  Conv(x) {pads += p}
//   MaxPool(Pad(x, p, constant v))              ==>  MaxPool(x) {pads += p}
//       when v = -inf, or v <= 0 and x >= 0 (x is a Relu-like output);
//   AveragePool(Pad(x, p, constant 0))          ==>  AveragePool(x) {pads += p, count_include_pad=1}
// Preconditions: mode "constant"; non-negative pads on spatial axes only;
// the Pad's output is read only by this op and is not a graph output; no
// auto_pad SAME_*; pools: ceil_mode 0 (ceil windows may start inside padding
// that the op would ignore but an explicit Pad makes real), total pads below
// the (dilated) kernel so every window keeps a real element (then the pad
// value is never the max), MaxPool's indices unused, AveragePool either
// unpadded or already counting its pads.
// Why: the pad becomes free (no copy of the activation) and the convolution
// kernels handle borders in their own loops.
#include <cmath>
#include <limits>

#include "passes/pass.h"
#include "passes/util.h"

namespace engine {
namespace {

struct PadFold {
  std::vector<int64_t> pads;  // 2*spatial rank, begins then ends
  float value = 0.f;
};

// Reads Pad's spatial pads for an input of rank r (opset 11+: input 1, and
// optional axes input 3; older: attributes).
MatchResult read_pad(const Node& pad, int64_t r, PadFold* out) {
  NO_MATCH_IF(pad.attr_string("mode", "constant") != "constant", "Pad mode is ", pad.attr_string("mode", ""));
  std::vector<int64_t> raw;
  if (pad.num_inputs() > 1 && pad.input(1)) {
    auto v = int_values(pad.input(1));
    NO_MATCH_IF(!v, "Pad pads are not constant");
    raw = *v;
  } else {
    raw = pad.attr_ints("pads");
  }
  std::vector<int64_t> axes;
  if (pad.num_inputs() > 3 && pad.input(3)) {
    auto v = int_values(pad.input(3));
    NO_MATCH_IF(!v, "Pad axes are not constant");
    axes = *v;
  } else {
    for (int64_t i = 0; i < r; ++i) axes.push_back(i);
  }
  NO_MATCH_IF(raw.size() != 2 * axes.size(), "Pad has ", raw.size(), " pads for ", axes.size(), " axes");
  std::vector<int64_t> full(2 * r, 0);
  for (size_t i = 0; i < axes.size(); ++i) {
    int64_t a = axes[i] < 0 ? axes[i] + r : axes[i];
    NO_MATCH_IF(a < 0 || a >= r, "Pad axis out of range");
    full[a] = raw[i];
    full[a + r] = raw[i + axes.size()];
  }
  for (int64_t a = 0; a < r; ++a) {
    NO_MATCH_IF(full[a] < 0 || full[a + r] < 0, "Pad crops (negative pads)");
    NO_MATCH_IF(a < 2 && (full[a] || full[a + r]), "Pad pads the batch or channel axis");
  }
  float value = pad.attr_float("value", 0.f);
  if (pad.num_inputs() > 2 && pad.input(2)) {
    auto v = float_values(pad.input(2));
    NO_MATCH_IF(!v || v->size() != 1, "Pad value is not a constant scalar");
    value = (*v)[0];
  }
  out->value = value;
  out->pads.clear();
  for (int64_t a = 2; a < r; ++a) out->pads.push_back(full[a]);
  for (int64_t a = 2; a < r; ++a) out->pads.push_back(full[a + r]);
  return Match{};
}

// The input rank: from the Pad's input shape, else the consumer's kernel.
int64_t input_rank(const Node& pad, int64_t kernel_rank) {
  const Value* x = pad.input(0);
  if (x && x->has_shape()) return static_cast<int64_t>(x->shape().size());
  return kernel_rank + 2;
}

struct FoldData {
  std::vector<int64_t> pads;  // the consumer's new pads
};

class FoldPadInto final : public Pattern {
 public:
  explicit FoldPadInto(OpKind kind) : kind_(kind) {}
  std::string_view name() const override { return "fold_pad"; }
  OpKind root() const override { return kind_; }

  MatchResult match(const Graph&, const Node& n) const override {
    Node* pad = producer_of(n.input(0));
    NOT_APPLICABLE_IF(!is_op(pad, OpKind::kPad), "input is not a Pad");
    NO_MATCH_IF(!single_use(pad->output(0)), "the Pad's output has other users");
    NO_MATCH_IF(n.attr_string("auto_pad", "NOTSET") != "NOTSET" && n.attr_string("auto_pad", "") != "VALID",
                "auto_pad is ", n.attr_string("auto_pad", ""));
    std::vector<int64_t> kernel;
    std::vector<int64_t> dil;
    if (kind_ == OpKind::kConv || kind_ == OpKind::kFusedConv) {
      std::string why;
      auto geo = conv_geometry(n, &why);
      NO_MATCH_IF(!geo, why);
      kernel = geo->kernel;
      dil = geo->dilations;
    } else {
      kernel = n.attr_ints("kernel_shape");
      NO_MATCH_IF(kernel.empty(), "kernel_shape missing");
      dil = n.attr_ints("dilations", std::vector<int64_t>(kernel.size(), 1));
      NO_MATCH_IF(n.attr_int("ceil_mode", 0) != 0, "ceil_mode=1 (windows could start inside the padding)");
    }
    int64_t r = input_rank(*pad, static_cast<int64_t>(kernel.size()));
    NO_MATCH_IF(r != static_cast<int64_t>(kernel.size()) + 2, "input rank disagrees with the kernel");
    PadFold pf;
    if (MatchResult res = read_pad(*pad, r, &pf); !res) return res;
    size_t sr = kernel.size();
    std::vector<int64_t> pads = n.attr_ints("pads", std::vector<int64_t>(2 * sr, 0));
    if (n.attr_string("auto_pad", "NOTSET") == "VALID") pads.assign(2 * sr, 0);
    NO_MATCH_IF(pads.size() != 2 * sr, "pads attribute has the wrong length");
    bool had_pads = false;
    for (int64_t p : pads) had_pads = had_pads || p != 0;
    for (size_t i = 0; i < 2 * sr; ++i) pads[i] += pf.pads[i];

    switch (kind_) {
      case OpKind::kConv:
      case OpKind::kFusedConv:
        NO_MATCH_IF(pf.value != 0.f, "Pad value is ", pf.value, " but the convolution pads with 0");
        break;
      case OpKind::kMaxPool: {
        bool ok = std::isinf(pf.value) && pf.value < 0;
        ok = ok || (pf.value <= 0.f && non_negative(pad->input(0)));
        NO_MATCH_IF(!ok, "Pad value ", pf.value, " could be the maximum of a window (not -inf, input not known >= 0)");
        NO_MATCH_IF(n.output(1) && (!n.output(1)->uses().empty() || n.output(1)->is_graph_output()),
                    "MaxPool indices are used");
        break;
      }
      case OpKind::kAveragePool:
        NO_MATCH_IF(pf.value != 0.f, "Pad value is ", pf.value, " but AveragePool pads with 0");
        NO_MATCH_IF(had_pads && n.attr_int("count_include_pad", 0) == 0,
                    "AveragePool has its own pads excluded from the count");
        break;
      default:
        break;
    }
    if (kind_ == OpKind::kMaxPool || kind_ == OpKind::kAveragePool) {
      for (size_t i = 0; i < sr; ++i) {
        int64_t extent = (kernel[i] - 1) * (i < dil.size() ? dil[i] : 1) + 1;
        NO_MATCH_IF(pads[i] >= extent || pads[i + sr] >= extent, "pads would reach the kernel size");
      }
    }
    Match m;
    m.nodes = {const_cast<Node*>(&n), pad};
    m.data = FoldData{pads};
    return m;
  }

  void rewrite(Rewriter& rw, const Match& m) const override {
    Node* n = m.nodes[0];
    Node* pad = m.nodes[1];
    const auto& d = std::any_cast<const FoldData&>(m.data);
    rw.set_input(n, 0, pad->input(0));
    rw.set_attr(n, "pads", Attribute::of_ints(d.pads));
    if (n->has_attr("auto_pad")) rw.set_attr(n, "auto_pad", Attribute::of_string("NOTSET"));
    if (kind_ == OpKind::kAveragePool) rw.set_attr(n, "count_include_pad", Attribute::of_int(1));
    n->add_origin(pad->origin());
    rw.remove(pad);
  }

 private:
  OpKind kind_;
};

}  // namespace

std::unique_ptr<Pass> make_fold_pad_into_conv() {
  std::vector<std::unique_ptr<Pattern>> p;
  for (OpKind k : {OpKind::kConv, OpKind::kFusedConv, OpKind::kMaxPool, OpKind::kAveragePool})
    p.push_back(std::make_unique<FoldPadInto>(k));
  return std::make_unique<PatternPass>("fold_pad_into_conv", "fold constant Pad nodes into Conv/MaxPool/AveragePool pads",
                                       std::move(p));
}

}  // namespace engine
