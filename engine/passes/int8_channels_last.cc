// int8_channels_last: runs of int8 convs between channels-last (NHWC)
// activations.
//
//   a -> QConv_1 -> b -> QConv_2 (z = a) -> c -> QConv_3 -> d -> readers
//     ==>  a -> Transpose(perm 0,2,3,1) -> a'
//          a' -> QConv_1' -> b' -> QConv_2' (z = a') -> c' -> QConv_3' -> d'
//          d' -> Transpose(perm 0,3,1,2) -> d -> readers
// where QConv_i' is QConv_i with channels_last = 1 (ops.def) and a', b', ...
// the NHWC forms of a, b, ... A converted conv reads the NHWC output of a
// converted producer directly, anything else through one Transpose per
// tensor (shared by its converted readers); its output gets one Transpose
// back, which keeps the original name and NCHW shape, only where a node
// that was not converted reads it or it is a graph output.
//
// Exact: a channels-last QConv computes the same int32 sums and the same
// epilogue as the NCHW one on the transposed tensors (qconv_nhwc_ref is the
// oracle), and an int8 Transpose moves bytes.
//
// A QConv is eligible when: it is not channels-last already; X is int8 of
// rank 4 (the batch may be symbolic, as in the zoo's models); the weights
// are a constant [M, C, kH, kW] with C % 4 == 0 and group is 1, or the conv
// is depthwise (group = C = M, weights [C, 1, kH, kW]: MobileNet's, which
// the VNNI tier runs 64 channels of a position at a time,
// qconv_dw_nhwc_avx512vnni; ConvNeXt's feed a float LayerNorm and fail
// the next rule); y_scale is
// set (int8 output); Z is absent or int8. The input's sign does not
// matter: an input not known to be >= 0 (onnxruntime's u8 activations,
// stored as int8 with zero point -128) runs the kernel's +128 form, whose
// XOR is the broadcast's own instruction (vpxord with an embedded
// broadcast), so it costs nothing over the u8 form.
// Eligible convs that share an int8 tensor (one's Y is another's X or Z, or
// they read the same X or Z) form a component; a component of fewer than
// kMinConvs convs is left alone (the refusal says so): its two Transposes
// would cost about what the convs gain. A QAdd (int8 residual add: where a
// Q/DQ file, onnxruntime's or ModelOpt's, keeps its adds apart from the
// convs) is elementwise, so it runs in either layout: it joins the
// component of the tensors it reads and writes, which then stays
// channels-last through it (else every block of such a file would be its
// own run of one or two convs, between Transposes).
//
// Why: the AVX512-VNNI GEMM then broadcasts each 4-channel group of an
// output position straight from the input (qconv_nhwc_avx512vnni.cc),
// where the NCHW kernel first transposes its input into panels or quad
// planes on every call. In a ResNet every conv after the stem qualifies, so
// the whole body is one component with a Transpose after the stem's MaxPool
// and two before the last conv, whose float output feeds the classifier
// (the stem, 3 input channels, stays NCHW).
// When: int8_channels_last() (dispatch.h, Int8Layout): by default where the
// QConv tier is VNNI without AMX; PYENGINE_INT8_LAYOUT=nhwc forces it (the
// other tiers then run channels-last convs through NCHW transposes, for the
// tests), =nchw turns it off.
// Idempotent: converted convs are not eligible again. Runs in the int8
// pipeline after the lowerings (it needs QConvs and the int8 MaxPool).
#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "cpu/dispatch.h"
#include "passes/pass.h"
#include "passes/util.h"

namespace engine {
namespace {

constexpr int kMinConvs = 3;
constexpr const char* kName = "int8_channels_last";

// [N, C, H, W] -> [N, H, W, C] (either may hold unknown dims).
Shape to_nhwc(const Shape& s) { return {s[0], s[2], s[3], s[1]}; }

const std::vector<int64_t> kToNhwc = {0, 2, 3, 1};
const std::vector<int64_t> kToNchw = {0, 3, 1, 2};

// out = Transpose(in) with `perm` (kToNhwc or kToNchw), node `name`.
void add_transpose(Rewriter& rw, const std::string& name, Value* in, Value* out, const std::vector<int64_t>& perm) {
  Attributes a;
  a["perm"] = Attribute::of_ints(perm);
  rw.add_node(OpKind::kTranspose, name, {in}, {out}, std::move(a));
}

// Why `conv` cannot run channels-last ("" when it can). quiet: it is not a
// candidate at all (already converted, 3-D, grouped, run-time weights), so
// the reason is kept only when the PassManager explains; the others are
// preconditions a 2-D conv may miss, always reported.
std::string ineligible(const Node& conv, bool* quiet) {
  const Value* x = conv.input(0);
  const Value* w = conv.input(1);
  const Value* z = conv.input(3);
  const Value* y = conv.output(0);
  *quiet = true;
  if (conv.attr_int("channels_last", 0) != 0) return "already channels-last";
  if (!x || x->dtype() != DType::kInt8 || !x->has_shape() || x->shape().size() != 4)
    return "the input is not an int8 tensor of known rank 4";
  if (!w || !w->is_constant() || w->constant()->dtype() != DType::kInt8 || w->constant()->rank() != 4)
    return "the weights are not a constant int8 [M, C, kH, kW]";
  const int64_t group = conv.attr_int("group", 1);
  const bool depthwise = group > 1 && w->constant()->dim(0) == group && w->constant()->dim(1) == 1;
  if (group != 1 && !depthwise) return "grouped, not depthwise (channels_last needs group 1 or depthwise)";
  *quiet = false;
  const int64_t c = w->constant()->dim(1) * group;
  if (!depthwise && c % 4 != 0) return str_cat(c, " input channels are not a multiple of 4");
  if (x->shape()[1] >= 0 && x->shape()[1] != c) return "the input's channels do not match the weights";
  if (!conv.has_attr("y_scale") || !y || y->dtype() != DType::kInt8 || !y->has_shape() || y->shape().size() != 4)
    return "the output is not requantized to int8 (no y_scale)";
  if (z && z->dtype() != DType::kInt8) return "the residual is not int8";
  return "";
}

// A QAdd that may run channels-last: two int8 inputs and an int8 output of
// rank 4 (elementwise, one shape: any layout will do).
bool add_joins(const Node& add) {
  if (add.num_inputs() != 2 || add.num_outputs() != 1) return false;
  for (const Value* v : {add.input(0), add.input(1), add.output(0)})
    if (!v || v->dtype() != DType::kInt8 || !v->has_shape() || v->shape().size() != 4) return false;
  return true;
}

// The int8 tensors a member shares with its neighbours.
std::vector<const Value*> tensors(const Node& n) {
  if (n.kind() == OpKind::kQAdd) return {n.input(0), n.input(1), n.output(0)};
  return {n.input(0), n.input(3), n.output(0)};
}

// Union-find over the members.
int root(std::vector<int>& parent, int i) {
  while (parent[i] != i) i = parent[i] = parent[parent[i]];
  return i;
}

class Int8ChannelsLast final : public Pass {
 public:
  std::string_view name() const override { return kName; }
  std::string_view summary() const override {
    return "run connected int8 QConvs (3 or more) channels-last, with Transposes at the edges";
  }

  int run_once(Graph& g, PassContext& ctx) const override {
    if (!int8_channels_last()) return 0;
    std::vector<Node*> members;  // eligible QConvs, then the QAdds that may join them
    for (Node* n : g.nodes()) {
      if (n->kind() != OpKind::kQConv) continue;
      bool quiet = false;
      const std::string why = ineligible(*n, &quiet);
      if (why.empty()) members.push_back(n);
      else if (!quiet || ctx.explain()) ctx.refuse({kName, kName, n->name(), n->op_type(), why, quiet});
    }
    for (Node* n : g.nodes())
      if (n->kind() == OpKind::kQAdd && add_joins(*n)) members.push_back(n);
    // Components: members meeting at a tensor (a conv's X, Z or Y, an add's
    // inputs and output).
    std::vector<int> parent(members.size());
    std::unordered_map<const Value*, int> seen;
    for (size_t i = 0; i < members.size(); ++i) {
      parent[i] = static_cast<int>(i);
      for (const Value* v : tensors(*members[i])) {
        if (!v) continue;
        auto [it, fresh] = seen.emplace(v, static_cast<int>(i));
        if (!fresh) parent[root(parent, static_cast<int>(i))] = root(parent, it->second);
      }
    }
    std::vector<std::vector<Node*>> comps(members.size());
    for (size_t i = 0; i < members.size(); ++i) comps[root(parent, static_cast<int>(i))].push_back(members[i]);
    int changed = 0;
    for (const std::vector<Node*>& comp : comps) {
      size_t convs = 0;
      for (const Node* n : comp) convs += n->kind() == OpKind::kQConv;
      if (convs == 0) continue;  // adds alone stay as they are
      if (static_cast<int>(convs) < kMinConvs) {
        for (const Node* n : comp)
          if (n->kind() == OpKind::kQConv)
            ctx.refuse({kName, kName, n->name(), n->op_type(),
                        str_cat("its run of convertible QConvs has ", convs, " conv", convs > 1 ? "s" : "",
                                " (at least ", kMinConvs, " pay for the Transposes in and out)"),
                        false});
        continue;
      }
      convert(g, ctx, comp);
      changed += static_cast<int>(comp.size());
    }
    if (changed) {
      g.topo_sort();
      g.remove_unused_values();
      ctx.count(kName, changed);
    }
    return changed;
  }

 private:
  // Rewrites one component (in graph order). The Transposes are recorded
  // as one rewrite, each conv as its own, so per-layer reports keep each
  // conv's origin and give the Transposes none of them.
  static void convert(Graph& g, PassContext& ctx, const std::vector<Node*>& comp) {
    Rewriter edges(g, kName, "transposes", nullptr);
    std::unordered_map<const Value*, Value*> nhwc;  // NCHW value -> its NHWC form
    std::vector<std::pair<Value*, Value*>> outputs;  // (Y, Y')
    for (Node* node : comp) {
      Value* y = node->output(0);
      const Shape s = to_nhwc(y->shape());
      Value* yt = edges.add_value(y->name() + "_nhwc", DType::kInt8, &s);
      nhwc[y] = yt;
      outputs.push_back({y, yt});
    }
    // The NHWC form of an input: a converted conv's output, else one
    // Transpose per tensor. `like`: the NCHW shape to assume where v's is
    // not known (a residual has Y's shape).
    auto input = [&](Value* v, const Value* like) -> Value* {
      if (!v) return nullptr;
      auto it = nhwc.find(v);
      if (it != nhwc.end()) return it->second;
      const Shape s = to_nhwc(v->has_shape() && v->shape().size() == 4 ? v->shape() : like->shape());
      Value* t = edges.add_value(v->name() + "_nhwc", DType::kInt8, &s);
      add_transpose(edges, v->name() + "_to_nhwc", v, t, kToNhwc);
      nhwc[v] = t;
      return t;
    };
    for (Node* node : comp) {
      const bool conv = node->kind() == OpKind::kQConv;
      std::vector<Value*> ins = node->inputs();
      if (conv) {
        ins[0] = input(ins[0], ins[0]);
        if (ins.size() > 3) ins[3] = input(ins[3], node->output(0));
      } else {
        for (Value*& v : ins) v = input(v, node->output(0));
      }
      Value* yt = nhwc.at(node->output(0));
      Attributes attrs = node->attrs();
      if (conv) attrs["channels_last"] = Attribute::of_int(1);
      const std::string name = node->name();
      const OpKind kind = node->kind();
      Rewriter rw(g, kName, kName, nullptr);
      rw.remove(node);
      rw.add_node(kind, name, ins, {yt}, std::move(attrs));
      ctx.log(rw.record());
    }
    // Back to NCHW under the original name, where something still reads it.
    for (auto [y, yt] : outputs) {
      if (y->uses().empty() && !y->is_graph_output()) continue;
      add_transpose(edges, y->name() + "_to_nchw", yt, y, kToNchw);
    }
    ctx.log(edges.record());
  }
};

// int8_channels_first: the inverse, for a graph made channels-last where
// that paid and run where it does not (a plan built on a VNNI machine and
// loaded on an AVX2 or AMX one, whose QConv tiers would otherwise run each
// channels-last conv between two transposes). Every QConv with
// channels_last = 1 goes back to NCHW with the QAdds that joined it; a
// Transpose into NHWC before the run gives way to its input, a Transpose
// back to NCHW after it to the conv itself, whose output takes the
// Transpose's name and shape (so a graph output keeps its name). Exact for
// the same reason as the forward pass. What the forward pass never makes
// (an NHWC tensor from elsewhere, or read by some other node) gets a
// Transpose, so the result is right for any graph.
// When: int8_channels_last() is false (the forward pass's condition, the
// other way round). Not in a pipeline: plan loading runs both
// (fit_int8_layout), so a plan's int8 layout is the loading machine's.
constexpr const char* kFirstName = "int8_channels_first";

bool is_transpose(const Node* n, const std::vector<int64_t>& perm) {
  return n && n->kind() == OpKind::kTranspose && n->num_inputs() == 1 && n->num_outputs() == 1 &&
         n->attr_ints("perm") == perm;
}

// [N, H, W, C] -> [N, C, H, W] in *out; nullptr where v's shape is not
// known to be of rank 4 (a plan's graph need not say).
const Shape* to_nchw(const Value* v, Shape* out) {
  if (!v->has_shape() || v->shape().size() != 4) return nullptr;
  const Shape& s = v->shape();
  *out = {s[0], s[3], s[1], s[2]};
  return out;
}

class Int8ChannelsFirst final : public Pass {
 public:
  std::string_view name() const override { return kFirstName; }
  std::string_view summary() const override {
    return "channels-last int8 QConvs back to NCHW where channels-last does not pay (a plan from another machine)";
  }

  int run_once(Graph& g, PassContext& ctx) const override {
    if (int8_channels_last()) return 0;
    std::vector<Node*> members;
    std::unordered_set<const Value*> nhwc;
    for (Node* n : g.nodes())
      if (n->kind() == OpKind::kQConv && n->attr_int("channels_last", 0) != 0 && n->output(0)) {
        members.push_back(n);
        for (const Value* v : tensors(*n))
          if (v) nhwc.insert(v);
      }
    if (members.empty()) return 0;
    // The QAdds that joined: any of their tensors NHWC (then all are).
    std::unordered_set<const Node*> joined;
    for (bool grew = true; grew;) {
      grew = false;
      for (Node* n : g.nodes()) {
        if (n->kind() != OpKind::kQAdd || joined.count(n) || !n->output(0)) continue;
        const std::vector<const Value*> ts = tensors(*n);
        if (std::none_of(ts.begin(), ts.end(), [&](const Value* v) { return v && nhwc.count(v); })) continue;
        joined.insert(n);
        members.push_back(n);
        for (const Value* v : ts)
          if (v) nhwc.insert(v);
        grew = true;
      }
    }
    convert(g, ctx, members);
    g.topo_sort();
    g.remove_unused_values();
    ctx.count(kFirstName, static_cast<int>(members.size()));
    return static_cast<int>(members.size());
  }

 private:
  static void convert(Graph& g, PassContext& ctx, const std::vector<Node*>& members) {
    Rewriter edges(g, kFirstName, "transposes", nullptr);
    std::unordered_map<const Value*, Value*> nchw;  // NHWC value -> its NCHW form
    std::vector<std::pair<Value*, Value*>> outputs;  // (Y', Y)
    for (Node* node : members) {
      Value* yt = node->output(0);
      std::vector<Node*> back;
      for (const Use& u : yt->uses())
        if (is_transpose(u.node, kToNchw) && std::find(back.begin(), back.end(), u.node) == back.end())
          back.push_back(u.node);
      Value* y = nullptr;
      for (Node* t : back) {
        Value* out = t->output(0);
        edges.remove(t);
        if (!y) y = out;
        else edges.replace(out, y);
      }
      if (!y) {
        Shape s;
        std::string name = yt->name();
        const std::string suffix = "_nhwc";
        if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
          name.resize(name.size() - suffix.size());
        y = edges.add_value(name, DType::kInt8, to_nchw(yt, &s));
      }
      nchw[yt] = y;
      outputs.push_back({yt, y});
    }
    std::vector<Node*> into;  // Transposes into NHWC that fed the run
    auto input = [&](Value* v) -> Value* {
      if (!v) return nullptr;
      auto it = nchw.find(v);
      if (it != nchw.end()) return it->second;
      Node* p = v->producer();
      Value* u = nullptr;
      if (is_transpose(p, kToNhwc)) {
        u = p->input(0);
        into.push_back(p);
      } else {
        Shape s;
        u = edges.add_value(v->name() + "_nchw", DType::kInt8, to_nchw(v, &s));
        add_transpose(edges, v->name() + "_to_nchw", v, u, kToNchw);
      }
      nchw[v] = u;
      return u;
    };
    for (Node* node : members) {
      std::vector<Value*> ins = node->inputs();
      const bool conv = node->kind() == OpKind::kQConv;
      for (size_t i = 0; i < ins.size(); ++i)
        if (!conv || i == 0 || i == 3) ins[i] = input(ins[i]);
      Value* y = nchw.at(node->output(0));
      Attributes attrs = node->attrs();
      attrs.erase("channels_last");
      const std::string name = node->name();
      const OpKind kind = node->kind();
      Rewriter rw(g, kFirstName, kFirstName, nullptr);
      rw.remove(node);
      rw.add_node(kind, name, ins, {y}, std::move(attrs));
      ctx.log(rw.record());
    }
    for (Node* t : into)
      if (t->output(0)->uses().empty() && !t->output(0)->is_graph_output()) edges.remove(t);
    // An NHWC output that some other node still reads.
    for (auto [yt, y] : outputs) {
      if (yt->uses().empty() && !yt->is_graph_output()) continue;
      add_transpose(edges, y->name() + "_to_nhwc", y, yt, kToNhwc);
    }
    ctx.log(edges.record());
  }
};

}  // namespace

std::unique_ptr<Pass> make_int8_channels_last() { return std::make_unique<Int8ChannelsLast>(); }
std::unique_ptr<Pass> make_int8_channels_first() { return std::make_unique<Int8ChannelsFirst>(); }

}  // namespace engine
