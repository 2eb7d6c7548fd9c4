// Shape inference for the conv_gemm family (see ir/infer.h for the contract).
//
// Conv / FusedConv: X [N, C, d1..dk], W [M, C/group, k1..kk] -> Y [N, M, o1..ok]
//   NOTSET:      o = floor((d + pad_begin + pad_end - ((k-1)*dil + 1)) / s) + 1
//   VALID:       o = floor((d - ((k-1)*dil + 1)) / s) + 1
//   SAME_*:      o = ceil(d / s)   (pads split by the kernel at run time)
// Gemm / FusedGemm: op(A) [M, K] x op(B) [K, N] (+ C broadcast to [M, N]).
// MatMul: numpy matmul (1-D operands promoted and squeezed back, batch dims
//   broadcast).
// Unknown dims (-1) propagate: a spatial output is unknown when its input
// dim is, the batch stays unknown, M comes from W when W's shape is known.
#include <algorithm>

#include "ir/infer.h"

namespace engine {
namespace {

void infer_conv(InferContext& ctx) {
  const Node& node = ctx.node();
  const ValueInfo& x = ctx.input(0);
  if (!ctx.has_input(1)) ctx.fail("the weight input W is missing");
  const ValueInfo& w = ctx.input(1);
  ValueInfo& y = ctx.output(0);
  y.dtype = x.dtype;
  y.value = nullptr;
  // Limits (checked even when X's shape is unknown, so a plan or model with
  // absurd attributes fails at build / load time): group, kernel_shape,
  // strides and dilations in [1, kMaxDim], pads in [0, kMaxDim]; the output
  // dims are computed with overflow-checked arithmetic.
  const int64_t group = node.attr_int("group", 1);
  if (group < 1 || group > kMaxDim) ctx.fail("group must be in [1, ", kMaxDim, "], got ", group);
  ctx.check_range("kernel_shape", node.attr_ints("kernel_shape"), 1);
  ctx.check_range("strides", node.attr_ints("strides"), 1);
  ctx.check_range("dilations", node.attr_ints("dilations"), 1);
  ctx.check_range("pads", node.attr_ints("pads"), 0);
  if (!x.has_shape) {
    y.has_shape = false;
    return;
  }
  const int rank = x.rank();
  if (rank < 3) ctx.fail("input X must have rank >= 3 (N, C, spatial...), got ", shape_str(x.shape));
  const int nsp = rank - 2;
  if (w.has_shape && w.rank() != rank)
    ctx.fail("W must have the rank of X (", rank, "), got ", shape_str(w.shape));

  std::vector<int64_t> kernel = node.attr_ints("kernel_shape");
  if (!kernel.empty() && static_cast<int>(kernel.size()) != nsp)
    ctx.fail("kernel_shape has ", kernel.size(), " entries, expected ", nsp);
  if (kernel.empty()) {
    kernel.assign(nsp, -1);
    if (w.has_shape)
      for (int i = 0; i < nsp; ++i) kernel[i] = w.shape[2 + i];
  } else if (w.has_shape) {
    for (int i = 0; i < nsp; ++i)
      if (w.shape[2 + i] >= 0 && w.shape[2 + i] != kernel[i])
        ctx.fail("kernel_shape ", shape_str(kernel), " does not match W ", shape_str(w.shape));
  }
  std::vector<int64_t> strides = node.attr_ints("strides", std::vector<int64_t>(nsp, 1));
  std::vector<int64_t> dil = node.attr_ints("dilations", std::vector<int64_t>(nsp, 1));
  std::vector<int64_t> pads = node.attr_ints("pads", std::vector<int64_t>(2 * nsp, 0));
  if (static_cast<int>(strides.size()) != nsp) ctx.fail("strides must have ", nsp, " entries");
  if (static_cast<int>(dil.size()) != nsp) ctx.fail("dilations must have ", nsp, " entries");
  if (static_cast<int>(pads.size()) != 2 * nsp) ctx.fail("pads must have ", 2 * nsp, " entries");
  for (int i = 0; i < nsp; ++i) {
    if (strides[i] < 1) ctx.fail("strides must be >= 1");
    if (dil[i] < 1) ctx.fail("dilations must be >= 1");
    if (pads[i] < 0 || pads[i + nsp] < 0) ctx.fail("pads must be >= 0");
  }
  const std::string auto_pad = node.attr_string("auto_pad", "NOTSET");
  if (auto_pad != "NOTSET" && auto_pad != "VALID" && auto_pad != "SAME_UPPER" && auto_pad != "SAME_LOWER")
    ctx.fail("unknown auto_pad '", auto_pad, "'");

  const int64_t cin = x.shape[1];
  if (w.has_shape) {
    const int64_t m = w.shape[0], wc = w.shape[1];
    if (m >= 0 && m % group != 0) ctx.fail("W has ", m, " output channels, not divisible by group ", group);
    if (cin >= 0 && wc >= 0 && cin != ctx.mul(wc, group))
      ctx.fail("X has ", cin, " channels but W ", shape_str(w.shape), " with group ", group, " expects ",
               wc * group);
  } else if (cin >= 0 && cin % group != 0) {
    ctx.fail("X has ", cin, " channels, not divisible by group ", group);
  }

  Shape out(rank);
  out[0] = x.shape[0];
  out[1] = w.has_shape ? w.shape[0] : -1;
  for (int i = 0; i < nsp; ++i) {
    const int64_t d = x.shape[2 + i], k = kernel[i];
    if (d < 0 || k < 0) {
      out[2 + i] = -1;
      continue;
    }
    if (k < 1) ctx.fail("the kernel size along spatial axis ", i, " is ", k, "; it must be >= 1");
    const int64_t ek = ctx.add(ctx.mul(k - 1, dil[i]), 1);
    int64_t o;
    if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      o = ctx.add(d, strides[i] - 1) / strides[i];
    } else {
      const int64_t span = auto_pad == "VALID" ? d : ctx.add(ctx.add(d, pads[i]), pads[i + nsp]);
      if (span < ek)
        ctx.fail("the kernel (extent ", ek, ") is larger than the padded input (", span, ") along spatial axis ", i);
      o = (span - ek) / strides[i] + 1;
    }
    out[2 + i] = o;
  }
  y.has_shape = true;
  y.shape = out;

  // FusedConv's residual must have Y's shape exactly (no broadcasting).
  if (node.kind() == OpKind::kFusedConv && ctx.has_input(3) && ctx.input(3).has_shape) {
    const Shape& z = ctx.input(3).shape;
    bool ok = z.size() == out.size();
    for (size_t i = 0; ok && i < z.size(); ++i) ok = z[i] < 0 || out[i] < 0 || z[i] == out[i];
    if (!ok) ctx.fail("the residual input Z ", shape_str(z), " must have the output's shape ", shape_str(out));
  }
  if (ctx.has_input(2) && ctx.input(2).has_shape) {
    const Shape& b = ctx.input(2).shape;
    if (b.size() != 1 || (b[0] >= 0 && out[1] >= 0 && b[0] != out[1]))
      ctx.fail("the bias B ", shape_str(b), " must be 1-D with ", out[1], " entries");
  }
}

void infer_gemm(InferContext& ctx) {
  const Node& node = ctx.node();
  const ValueInfo& a = ctx.input(0);
  if (!ctx.has_input(1)) ctx.fail("input B is missing");
  const ValueInfo& b = ctx.input(1);
  ValueInfo& y = ctx.output(0);
  y.dtype = a.dtype;
  y.value = nullptr;
  if (!a.has_shape || !b.has_shape) {
    y.has_shape = false;
    return;
  }
  if (a.rank() != 2 || b.rank() != 2)
    ctx.fail("A and B must be 2-D, got ", shape_str(a.shape), " and ", shape_str(b.shape));
  const bool ta = node.attr_int("transA", 0) != 0, tb = node.attr_int("transB", 0) != 0;
  const int64_t m = ta ? a.shape[1] : a.shape[0], ka = ta ? a.shape[0] : a.shape[1];
  const int64_t kb = tb ? b.shape[1] : b.shape[0], n = tb ? b.shape[0] : b.shape[1];
  if (ka >= 0 && kb >= 0 && ka != kb)
    ctx.fail("inner dimensions differ: A ", shape_str(a.shape), (ta ? " (transposed)" : ""), " and B ",
             shape_str(b.shape), (tb ? " (transposed)" : ""));
  if (ctx.has_input(2) && ctx.input(2).has_shape) {
    const Shape& c = ctx.input(2).shape;
    if (c.size() > 2) ctx.fail("C must have rank <= 2, got ", shape_str(c));
    const Shape mn{m, n};
    for (size_t i = 0; i < c.size(); ++i) {
      const int64_t cd = c[i], od = mn[2 - c.size() + i];
      if (cd != 1 && cd >= 0 && od >= 0 && cd != od)
        ctx.fail("C ", shape_str(c), " cannot be broadcast to the output ", shape_str(mn));
    }
  }
  y.has_shape = true;
  y.shape = {m, n};
}

void infer_matmul(InferContext& ctx) {
  const ValueInfo& a = ctx.input(0);
  if (!ctx.has_input(1)) ctx.fail("input B is missing");
  const ValueInfo& b = ctx.input(1);
  ValueInfo& y = ctx.output(0);
  y.dtype = a.dtype;
  y.value = nullptr;
  if (!a.has_shape || !b.has_shape) {
    y.has_shape = false;
    return;
  }
  if (a.rank() < 1 || b.rank() < 1) ctx.fail("MatMul operands must have rank >= 1");
  Shape sa = a.shape, sb = b.shape;
  const bool a1 = sa.size() == 1, b1 = sb.size() == 1;
  if (a1) sa.insert(sa.begin(), 1);
  if (b1) sb.push_back(1);
  const int64_t ka = sa.back(), kb = sb[sb.size() - 2];
  if (ka >= 0 && kb >= 0 && ka != kb)
    ctx.fail("inner dimensions differ: ", shape_str(a.shape), " x ", shape_str(b.shape));
  Shape batch_a(sa.begin(), sa.end() - 2), batch_b(sb.begin(), sb.end() - 2);
  Shape out = broadcast_shapes(ctx, batch_a, batch_b);
  if (!a1) out.push_back(sa[sa.size() - 2]);
  if (!b1) out.push_back(sb.back());
  y.has_shape = true;
  y.shape = out;
}

}  // namespace

void register_conv_gemm_infer(InferRegistry& r) {
  r.add(OpKind::kConv, infer_conv);
  r.add(OpKind::kFusedConv, infer_conv);
  r.add(OpKind::kGemm, infer_gemm);
  r.add(OpKind::kFusedGemm, infer_gemm);
  r.add(OpKind::kMatMul, infer_matmul);
}

}  // namespace engine
