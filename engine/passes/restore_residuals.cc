// restore_residuals: identity channels carried through a conv pair (RMNet's
// "RM operation") become the residual Add they replaced.
//
//   Conv2(Relu(Conv1(x, [W1; D], [b1; 0])), [W2 | P], b2)
//     ==>  Add(Conv2(Relu(Conv1(x, W1, b1)), W2, b2), x)               P = D
//     ==>  Add(Conv2(Relu(Conv1(x, W1, b1)), W2, b2), Conv1x1(x, P'))  otherwise
//
// D's rows are Dirac kernels: conv1's identity rows copy input channel i_j to
// hidden channel j (1 at the identity tap, zeros elsewhere, bias 0), at
// conv1's stride. conv2 reads those channels through columns P that are
// nonzero only at its identity tap: when P is the identity (each output o
// reads hidden channel j with i_j = o, weight 1) and conv1 has stride 1,
// that is x itself; otherwise it is a 1x1 conv of x at conv1's stride, P'[o,
// i] = sum of P[o, j] over j with i_j = i: RMNet's downsampling blocks carry
// their projection shortcut this way (a 1x1 conv padded to 3x3 in conv2's
// identity columns). The Relu between the convs is optional; with one, x
// must be >= 0 by construction (a Relu output, or a pool of one), so
// Relu(x) == x on the identity channels.
// Preconditions (each a refusal with its reason): float32 constant weights,
// group 1; conv2 of stride 1 keeps the spatial size, and both convs' pads
// put the identity on a tap (pads = dilation * (k - 1) / 2 per side, so
// conv1's output is the 1x1 conv's size); the hidden tensors are read only
// by the pair and are not graph outputs; not every hidden channel is an
// identity. Identity weights must be 1 and biases 0 within 1e-6 (a BN folded
// onto an identity channel leaves a rounding there: RMNet's deploy form puts
// an identity BN there), the other entries of an identity row exactly 0.
// Why: the RM form removes the residual so that a plain network can be
// pruned or run on hardware without a residual path, at the cost of 2C
// hidden channels: both convs of the block do twice the work of the ResNet
// block they came from. This engine fuses the residual Add into a conv
// epilogue, so the restored block is half the FLOPs for free; and in INT8
// conv2's per-channel weight scale is no longer set by the identity's 1.0.
#include <algorithm>
#include <cmath>

#include "passes/pass.h"
#include "passes/util.h"

namespace engine {
namespace {

constexpr float kTol = 1e-6f;

// The flat index of the identity tap in a kernel of this geometry (the tap
// that reads input position s * y at output position y, s the stride), or -1
// when there is none or the output is not the size of a 1x1 conv's of that
// stride.
int64_t identity_tap(const ConvGeometry& g) {
  const int rank = g.rank;
  int64_t tap = 0;
  for (int d = 0; d < rank; ++d) {
    const int64_t k = g.kernel[d], dil = g.dilations[d], pb = g.pads[d], pe = g.pads[d + rank];
    if (pb % dil != 0 || pb / dil >= k || pb + pe != dil * (k - 1)) return -1;
    tap = tap * k + pb / dil;
  }
  return tap;
}

// Where conv1's output row j (over its cin inputs) is a Dirac: the input
// channel of its single nonzero entry when that entry is 1 (within kTol) at
// tap `tap`; -1 otherwise.
int64_t dirac_row(const std::vector<float>& w, int64_t j, int64_t cin, int64_t taps, int64_t tap) {
  int64_t found = -1;
  for (int64_t c = 0; c < cin; ++c) {
    const float* k = w.data() + (j * cin + c) * taps;
    for (int64_t t = 0; t < taps; ++t) {
      if (k[t] == 0.f) continue;
      if (found >= 0 || t != tap || std::fabs(k[t] - 1.f) > kTol) return -1;
      found = c;
    }
  }
  return found;
}

// Whether conv2's input column j (over its cout outputs) is zero at every
// tap but `tap`.
bool only_at_tap(const std::vector<float>& w, int64_t j, int64_t hid, int64_t cout, int64_t taps, int64_t tap) {
  for (int64_t o = 0; o < cout; ++o) {
    const float* k = w.data() + (o * hid + j) * taps;
    for (int64_t t = 0; t < taps; ++t)
      if (t != tap && k[t] != 0.f) return false;
  }
  return true;
}

struct Restore {
  Node *conv1 = nullptr, *relu = nullptr, *conv2 = nullptr;
  ConvGeometry g1, g2;
  int64_t taps1 = 1, taps2 = 1;           // kernel taps of each conv
  std::vector<float> w1, w2;              // their weights, as matched
  std::optional<std::vector<float>> b1;   // conv1's bias, when it has one
  std::vector<int64_t> keep;    // hidden channels that are not identities
  std::vector<float> shortcut;  // P' [cout, cin]; empty when the residual is x itself
};

class RestoreResidual final : public Pattern {
 public:
  std::string_view name() const override { return "restore_residual"; }
  OpKind root() const override { return OpKind::kConv; }

  MatchResult match(const Graph&, const Node& n) const override {
    Restore r;
    r.conv2 = const_cast<Node*>(&n);
    Value* hidden = n.input(0);
    Node* p = producer_of(hidden);
    if (is_op(p, OpKind::kRelu)) {
      r.relu = p;
      p = producer_of(p->input(0));
    }
    NOT_APPLICABLE_IF(!is_op(p, OpKind::kConv), "input is not a Conv (or Relu of one)");
    r.conv1 = p;
    NOT_APPLICABLE_IF(!is_float32_constant(n.input(1)) || !is_float32_constant(r.conv1->input(1)),
                      "weights are not float32 constants");
    std::string why;
    auto g2 = conv_geometry(n, &why);
    NOT_APPLICABLE_IF(!g2, why);
    auto g1 = conv_geometry(*r.conv1, &why);
    NOT_APPLICABLE_IF(!g1, why);
    r.g1 = *g1;
    r.g2 = *g2;
    NOT_APPLICABLE_IF(r.g1.group != 1 || r.g2.group != 1, "grouped conv");
    const int64_t t1 = identity_tap(r.g1), t2 = identity_tap(r.g2);
    NOT_APPLICABLE_IF(t1 < 0 || t2 < 0, "a conv's pads put no tap on the identity");
    for (int64_t s : r.g2.strides) NOT_APPLICABLE_IF(s != 1, "conv2 is strided");
    const int64_t hid = r.g1.out_channels, cin = r.g1.in_channels_per_group, cout = r.g2.out_channels;
    NOT_APPLICABLE_IF(r.g2.in_channels_per_group != hid, "channel counts do not chain");

    // Identity rows of conv1 whose conv2 columns read only the identity tap.
    r.w1 = *float_values(r.conv1->input(1));
    r.w2 = *float_values(n.input(1));
    if (r.conv1->num_inputs() > 2 && r.conv1->input(2)) {
      r.b1 = float_values(r.conv1->input(2));
      NOT_APPLICABLE_IF(!r.b1, "conv1's bias is not constant");
    }
    for (int64_t k : r.g1.kernel) r.taps1 *= k;
    for (int64_t k : r.g2.kernel) r.taps2 *= k;
    const std::vector<float>&w1 = r.w1, &w2 = r.w2;
    const std::optional<std::vector<float>>& b1 = r.b1;
    const int64_t taps1 = r.taps1, taps2 = r.taps2;
    std::vector<float> shortcut(static_cast<size_t>(cout * cin), 0.f);
    int identities = 0;
    for (int64_t j = 0; j < hid; ++j) {
      const int64_t i = dirac_row(w1, j, cin, taps1, t1);
      const float bias = !b1 ? 0.f : b1->size() == 1 ? (*b1)[0] : (*b1)[j];
      if (i < 0 || std::fabs(bias) > kTol || !only_at_tap(w2, j, hid, cout, taps2, t2)) {
        r.keep.push_back(j);
        continue;
      }
      for (int64_t o = 0; o < cout; ++o) shortcut[o * cin + i] += w2[(o * hid + j) * taps2 + t2];
      ++identities;
    }
    NOT_APPLICABLE_IF(identities == 0, "no identity channels");
    NO_MATCH_IF(r.keep.empty(), "every hidden channel is an identity");
    // The residual is x itself when the shortcut is the identity matrix at stride 1.
    bool plain = cin == cout;
    for (int64_t s : r.g1.strides) plain = plain && s == 1;
    for (int64_t o = 0; plain && o < cout; ++o)
      for (int64_t i = 0; plain && i < cin; ++i) {
        const float v = shortcut[o * cin + i];
        plain = i == o ? std::fabs(v - 1.f) <= kTol : v == 0.f;
      }
    if (!plain) r.shortcut = std::move(shortcut);

    Value* x = r.conv1->input(0);
    NO_MATCH_IF(!single_use(r.conv1->output(0)), "conv1's output '", r.conv1->output(0)->name(),
                "' has other users or is a graph output");
    NO_MATCH_IF(r.relu && !single_use(hidden), "hidden tensor '", hidden->name(), "' has other users or is a graph output");
    NO_MATCH_IF(r.relu && !non_negative(x), "input '", x->name(), "' is not known to be >= 0 (the Relu would change it)");
    NO_MATCH_IF(r.shortcut.empty() && !same_shape(x, n.output(0)), "input '", x->name(),
                "' and output shapes are not known to be equal");
    NO_MATCH_IF(x->dtype() != DType::kFloat32, "input is not float32");
    Match m;
    m.nodes = {r.conv2, r.conv1};
    if (r.relu) m.nodes.push_back(r.relu);
    m.data = std::move(r);
    return m;
  }

  void rewrite(Rewriter& rw, const Match& mt) const override {
    const auto& r = std::any_cast<const Restore&>(mt.data);
    const int64_t hid = r.g1.out_channels, cin = r.g1.in_channels_per_group, cout = r.g2.out_channels;
    const int64_t kept = static_cast<int64_t>(r.keep.size()), taps1 = r.taps1, taps2 = r.taps2;
    const std::vector<float>&w1 = r.w1, &w2 = r.w2;
    const std::optional<std::vector<float>>& b1 = r.b1;
    std::vector<float> nw1, nw2(static_cast<size_t>(cout * kept * taps2)), nb1;
    for (int64_t j : r.keep) {
      nw1.insert(nw1.end(), w1.begin() + j * cin * taps1, w1.begin() + (j + 1) * cin * taps1);
      if (b1) nb1.push_back(b1->size() == 1 ? (*b1)[0] : (*b1)[j]);
    }
    for (int64_t o = 0; o < cout; ++o)
      for (int64_t jj = 0; jj < kept; ++jj)
        std::copy_n(w2.begin() + (o * hid + r.keep[jj]) * taps2, taps2, nw2.begin() + (o * kept + jj) * taps2);

    // conv1 and the Relu stay, narrowed to the kept channels; conv2 is
    // replaced by the narrower conv and the Add (both from its origin).
    Value* x = r.conv1->input(0);
    Value* y = r.conv2->output(0);
    Shape s1 = {kept, cin}, s2 = {cout, kept};
    s1.insert(s1.end(), r.g1.kernel.begin(), r.g1.kernel.end());
    s2.insert(s2.end(), r.g2.kernel.begin(), r.g2.kernel.end());
    rw.set_input(r.conv1, 1, rw.add_constant(r.conv1->name() + "_weight", float_tensor(s1, nw1)));
    if (b1) rw.set_input(r.conv1, 2, rw.add_constant(r.conv1->name() + "_bias", float_tensor({kept}, nb1)));
    rw.changed(r.conv1);
    for (Value* h : {r.conv1->output(0), r.conv2->input(0)}) {
      if (!h->has_shape()) continue;
      Shape hs = h->shape();
      hs[1] = kept;
      rw.narrow(h, hs);
    }
    std::vector<Value*> in2 = {r.conv2->input(0),
                               rw.add_constant(r.conv2->name() + "_weight", float_tensor(s2, nw2))};
    if (r.conv2->num_inputs() > 2 && r.conv2->input(2)) in2.push_back(r.conv2->input(2));
    Value* branch = rw.add_value(r.conv2->name() + "_branch", DType::kFloat32, y->has_shape() ? &y->shape() : nullptr);
    const std::string name = r.conv2->name();
    rw.remove(r.conv2);
    rw.add_node(OpKind::kConv, name, in2, {branch}, conv_attrs(r.g2));
    Value* residual = x;
    if (!r.shortcut.empty()) {
      // The projection: a 1x1 conv of x at conv1's stride.
      ConvGeometry g = r.g1;
      g.kernel.assign(g.kernel.size(), 1);
      g.dilations.assign(g.dilations.size(), 1);
      g.pads.assign(g.pads.size(), 0);
      g.out_channels = cout;
      Shape ws = {cout, cin};
      ws.resize(2 + g.kernel.size(), 1);
      residual = rw.add_value(name + "_shortcut", DType::kFloat32, y->has_shape() ? &y->shape() : nullptr);
      rw.add_node(OpKind::kConv, name + "_shortcut",
                  {x, rw.add_constant(name + "_shortcut_weight", float_tensor(ws, r.shortcut))}, {residual},
                  conv_attrs(g));
    }
    rw.add_node(OpKind::kAdd, name + "_residual", {branch, residual}, {y});
  }
};

}  // namespace

std::unique_ptr<Pass> make_restore_residuals() {
  std::vector<std::unique_ptr<Pattern>> p;
  p.push_back(std::make_unique<RestoreResidual>());
  return std::make_unique<PatternPass>(
      "restore_residuals",
      "identity (Dirac) channels through a Conv -> Relu -> Conv pair (RMNet) back to a residual Add: half the FLOPs",
      std::move(p));
}

}  // namespace engine
