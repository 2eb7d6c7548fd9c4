"""The graph optimizer's Python side.

The passes themselves are C++ (``engine/passes``); this module runs the
pipeline on a copy of a graph (:func:`optimize_graph`, used by
:func:`pyengine.build`), writes the result back as ONNX (:func:`optimize`),
and formats the report.

pyengine's own ops (domain ``pyengine``) and their standard-ONNX meaning:

* ``FusedConv(X, W, B?, Z?)`` {Conv attributes, ``activation``,
  ``activation_params``} = ``act(Conv(X, W, B) + Z)``
* ``FusedGemm(A, B, C?)`` {Gemm attributes, ``activation``, ``activation_params``}
  = ``act(Gemm(A, B, C))``
* ``ChannelAffine(X, scale, shift)`` = ``X * scale[c] + shift[c]`` along axis 1
* ``SqueezeExcite(X, W1, B1, W2, B2, Z?)`` {``gate``, ``gate_params``,
  ``activation``} = ``act(X * gate(W2 Relu(W1 mean(X) + B1) + B2) + Z)`` per
  (image, channel)
* ``ChannelLayerNorm(X, scale, bias?)`` {``epsilon``} = LayerNormalization over
  axis 1 only (per image and position): Transpose to channels-last,
  LayerNormalization(axis=-1), Transpose back
* ``ChannelSplitNorm(X, in_scale, in_bias, scale, shift)`` {``epsilon``,
  ``instance_channels`` k, ``instance_first``} = InstanceNormalization on k
  channels and ``X * scale + shift`` on the rest, concatenated along axis 1

``activation`` is one of "", Relu, Clip [min, max], LeakyRelu [alpha],
Sigmoid, HardSigmoid [alpha, beta], HardSwish, SiLU (x * Sigmoid(x)), Gelu
(exact), GeluTanh (Gelu with approximate="tanh"); the bracket lists ``activation_params``.
"""

from __future__ import annotations

import math
import os
from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper

from . import _core, onnx_io
from .errors import InvalidModelError

CUSTOM_DOMAIN = "pyengine"


def default_passes() -> list[tuple[str, str]]:
    """The default pipeline in order, as (name, one-line summary) pairs."""
    return [tuple(p) for p in _core.default_passes()]


def optimize_graph(graph, passes=None, disable=(), *, verify=None, stop_after=None, explain=False,
                   max_iterations=100, max_rounds=4, pipeline: str = "default"):
    """Runs the pass pipeline on a copy of ``graph``.

    Args:
        graph: a ``pyengine._core.Graph`` (left unchanged).
        passes: pass names to run instead of the pipeline, in order.
        disable: pass names to skip.
        pipeline: the named pipeline to run when ``passes`` is None:
            "default" (float models), "quantize" (before calibration and
            Q/DQ placement) or "int8" (a graph with Q/DQ, lowered to the int8
            kernels); ``_core.pipeline_passes(name)`` lists one.
        verify: check the graph's invariants after every pass (tests do);
            default: on when the environment sets ``PYENGINE_VERIFY_PASSES=1``.
        stop_after: run only the first N passes of the pipeline (bisecting a
            bad rewrite); None runs all.
        explain: also record why patterns did not apply at all (not only
            refusals), and log every rewrite.
        max_iterations: sweeps per pass before giving up on its fixed point.
        max_rounds: repeats of the whole pipeline while anything changes.

    Returns:
        (optimized graph, report dict). The report has ``passes`` (name, count
        of rewrites, sweeps, ms, per-pattern counts), ``nodes_before``,
        ``nodes_after``, ``ops_before``, ``ops_after`` (counts by op type),
        ``refused`` (pass, pattern, node, op, reason) and ``rewrites``
        (with ``explain``).
    """
    if isinstance(disable, str):
        disable = (disable,)
    if verify is None:
        verify = os.environ.get("PYENGINE_VERIFY_PASSES", "") == "1"
    graph = graph.clone()
    report = _core.run_passes(graph, None if passes is None else list(passes), list(disable),
                              -1 if stop_after is None else int(stop_after), bool(verify), bool(explain),
                              int(max_iterations), int(max_rounds), str(pipeline))
    return graph, report


def optimize(model, passes=None, disable=(), report=False, custom_ops=False, *, verify=False,
             stop_after=None, explain=False):
    """Optimizes an ONNX model and returns the optimized ONNX model.

    BatchNorm and per-channel scales are folded into convolutions, parallel
    conv branches re-parameterized into one conv, residual adds and
    activations fused into convolutions, constants and shape chains folded,
    identities and dead code removed (``default_passes()`` lists the
    pipeline).

    Args:
        model: path to an .onnx file or an ``onnx.ModelProto``.
        passes: pass names to run instead of the default pipeline.
        disable: pass names to skip.
        report: also return the optimizer's report.
        custom_ops: write pyengine's fused ops as nodes of the ``pyengine``
            domain (``FusedConv``, ``FusedGemm``, ``ChannelAffine``; see this
            module's docstring), which only pyengine runs. By default they are
            written as standard ONNX so that onnxruntime, Netron or TensorRT
            read the result: FusedConv as Conv + Add + activation, FusedGemm
            as Gemm + activation, ChannelAffine as Mul + Add with [C, 1, ...]
            constants.
        verify: check the graph after every pass.
        stop_after: run only the first N passes (bisecting).
        explain: record every no-match reason and rewrite in the report.

    Returns:
        The optimized ``onnx.ModelProto``, or ``(model, report)`` with
        ``report=True``.

    Raises:
        InvalidModelError: the model cannot be read.
        InvalidArgumentError: an unknown pass name.
    """
    proto = onnx_io.load_model(model)
    graph, proto = onnx_io.graph_from_onnx(_with_inferred_shapes(proto))
    graph, rep = optimize_graph(graph, passes, disable, verify=verify, stop_after=stop_after, explain=explain)
    opset = onnx_io.default_opset(proto)
    out = onnx_io.graph_to_onnx(graph, opset=opset, name=proto.graph.name or "pyengine")
    _keep_output_types(out, proto)
    if not custom_ops:
        out = expand_custom_ops(out)
    rep["exported_ops"] = dict(Counter(n.op_type for n in out.graph.node))
    rep["exported_nodes"] = len(out.graph.node)
    return (out, rep) if report else out


def _keep_output_types(out: onnx.ModelProto, source: onnx.ModelProto) -> None:
    """Graph outputs keep their names through the passes: where the optimized
    graph lost an output's shape (an op without static inference), the
    source model's declaration is the better one."""
    declared = {o.name: o for o in source.graph.output}
    for o in out.graph.output:
        src = declared.get(o.name)
        if src is not None and not o.type.tensor_type.HasField("shape") and src.type.tensor_type.HasField("shape"):
            o.type.CopyFrom(src.type)


def _with_inferred_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX shape inference (with data propagation) fills value_info, so the
    passes see intermediate shapes; models it cannot handle go in as they are."""
    if proto.ByteSize() > 1_500_000_000:
        return proto
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception:  # inference is an aid, not a requirement
        return proto
    # Inferred shapes pyengine could not hold (absurd sizes a malformed model
    # implies) are left out: the op that would produce them then fails with
    # its own, node-specific message at import.
    limit = 2**31 - 1

    def sane(v):
        return all(not d.HasField("dim_value") or 0 <= d.dim_value <= limit for d in v.type.tensor_type.shape.dim)

    given = {v.name for v in proto.graph.value_info}
    keep = [v for v in inferred.graph.value_info if v.name in given or sane(v)]
    if len(keep) != len(inferred.graph.value_info):
        del inferred.graph.value_info[:]
        inferred.graph.value_info.extend(keep)
    for out, src in zip(inferred.graph.output, proto.graph.output):
        if not sane(out):
            out.CopyFrom(src)
    return inferred


# --- standard-ONNX export of pyengine's ops --------------------------------


class _Expander:
    """Rewrites pyengine-domain nodes of a ModelProto into standard ONNX."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.opset = onnx_io.default_opset(model)
        g = model.graph
        self.names = {i.name for i in g.initializer} | {v.name for v in g.input} | {v.name for v in g.output}
        for n in g.node:
            self.names.update(n.output)
            self.names.update(n.input)
        self.node_names = {n.name for n in g.node}
        self.ranks = {}
        for v in list(g.input) + list(g.value_info) + list(g.output):
            if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
                self.ranks[v.name] = len(v.type.tensor_type.shape.dim)
        for t in g.initializer:
            self.ranks[t.name] = len(t.dims)
        self.initializers = []
        self.constants = {i.name: i for i in g.initializer}

    def fresh(self, base: str) -> str:
        name, i = base, 0
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name

    def fresh_node(self, base: str) -> str:
        name, i = base, 0
        while name in self.node_names:
            i += 1
            name = f"{base}_{i}"
        self.node_names.add(name)
        return name

    def const(self, base: str, array) -> str:
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def activation(self, nodes, x: str, y: str, act: str, params, base: str):
        """Appends nodes computing y = act(x)."""
        p = list(params)
        nm = self.fresh_node
        if act == "Relu":
            nodes.append(helper.make_node("Relu", [x], [y], name=nm(f"{base}_relu")))
        elif act == "Sigmoid":
            nodes.append(helper.make_node("Sigmoid", [x], [y], name=nm(f"{base}_sigmoid")))
        elif act == "LeakyRelu":
            nodes.append(helper.make_node("LeakyRelu", [x], [y], name=nm(f"{base}_leakyrelu"), alpha=p[0]))
        elif act == "HardSigmoid":
            nodes.append(helper.make_node("HardSigmoid", [x], [y], name=nm(f"{base}_hardsigmoid"),
                                          alpha=p[0], beta=p[1]))
        elif act == "Clip":
            lo = "" if math.isinf(p[0]) else self.const(f"{base}_min", np.float32(p[0]))
            hi = "" if math.isinf(p[1]) else self.const(f"{base}_max", np.float32(p[1]))
            nodes.append(helper.make_node("Clip", [x, lo, hi], [y], name=nm(f"{base}_clip")))
        elif act == "HardSwish":
            if self.opset >= 14:
                nodes.append(helper.make_node("HardSwish", [x], [y], name=nm(f"{base}_hardswish")))
            else:
                hs = self.fresh(f"{base}_hardsigmoid")
                nodes.append(helper.make_node("HardSigmoid", [x], [hs], name=nm(f"{base}_hardsigmoid"),
                                              alpha=1.0 / 6.0, beta=0.5))
                nodes.append(helper.make_node("Mul", [x, hs], [y], name=nm(f"{base}_hardswish")))
        elif act == "SiLU":
            s = self.fresh(f"{base}_sigmoid")
            nodes.append(helper.make_node("Sigmoid", [x], [s], name=nm(f"{base}_sigmoid")))
            nodes.append(helper.make_node("Mul", [x, s], [y], name=nm(f"{base}_silu")))
        elif act in ("Gelu", "GeluTanh"):
            self.gelu(nodes, x, y, act == "GeluTanh", base)
        else:
            raise InvalidModelError(f"node '{base}': unknown fused activation {act!r}")

    def gelu(self, nodes, x: str, y: str, tanh: bool, base: str):
        """Appends nodes computing y = Gelu(x) (the tanh approximation with
        ``tanh``): the Gelu op from opset 20, else the exporters' subgraph."""
        nm = self.fresh_node
        if self.opset >= 20:
            nodes.append(helper.make_node("Gelu", [x], [y], name=nm(f"{base}_gelu"),
                                          approximate="tanh" if tanh else "none"))
            return
        if not tanh:
            d, e, a, m = (self.fresh(f"{base}_gelu_{s}") for s in ("div", "erf", "add", "mul"))
            nodes.append(helper.make_node("Div", [x, self.const(f"{base}_sqrt2", np.float32(math.sqrt(2.0)))],
                                          [d], name=nm(f"{base}_gelu_div")))
            nodes.append(helper.make_node("Erf", [d], [e], name=nm(f"{base}_gelu_erf")))
        else:
            c, cc, s_, k, e = (self.fresh(f"{base}_gelu_{s}") for s in ("cube", "cubic", "sum", "arg", "tanh"))
            a, m = (self.fresh(f"{base}_gelu_{s}") for s in ("add", "mul"))
            nodes.append(helper.make_node("Pow", [x, self.const(f"{base}_three", np.float32(3.0))], [c],
                                          name=nm(f"{base}_gelu_pow")))
            nodes.append(helper.make_node("Mul", [c, self.const(f"{base}_c", np.float32(0.044715))], [cc],
                                          name=nm(f"{base}_gelu_cubic")))
            nodes.append(helper.make_node("Add", [x, cc], [s_], name=nm(f"{base}_gelu_sum")))
            nodes.append(helper.make_node("Mul", [s_, self.const(f"{base}_k", np.float32(math.sqrt(2.0 / math.pi)))],
                                          [k], name=nm(f"{base}_gelu_arg")))
            nodes.append(helper.make_node("Tanh", [k], [e], name=nm(f"{base}_gelu_tanh")))
        nodes.append(helper.make_node("Add", [e, self.const(f"{base}_one", np.float32(1.0))], [a],
                                      name=nm(f"{base}_gelu_add")))
        nodes.append(helper.make_node("Mul", [x, a], [m], name=nm(f"{base}_gelu_mul")))
        nodes.append(helper.make_node("Mul", [m, self.const(f"{base}_half", np.float32(0.5))], [y],
                                      name=nm(f"{base}_gelu")))

    def expand(self, node) -> list:
        if node.op_type == "Gelu" and node.domain in ("", "ai.onnx"):
            # A Gelu fuse_gelu made in a model of opset < 20.
            approx = {a.name: helper.get_attribute_value(a) for a in node.attribute}.get("approximate", b"none")
            approx = approx.decode() if isinstance(approx, bytes) else approx
            nodes = []
            self.gelu(nodes, node.input[0], node.output[0], approx == "tanh", node.name or node.output[0])
            return nodes
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        act = attrs.pop("activation", b"")
        act = act.decode() if isinstance(act, bytes) else act
        params = attrs.pop("activation_params", [])
        out = node.output[0]
        base = node.name or out
        nodes = []
        if node.op_type == "FusedConv":
            x, w = node.input[0], node.input[1]
            b = node.input[2] if len(node.input) > 2 else ""
            z = node.input[3] if len(node.input) > 3 else ""
            conv_out = out if not z and not act else self.fresh(f"{out}_conv")
            nodes.append(helper.make_node("Conv", [x, w] + ([b] if b else []), [conv_out], name=base, **attrs))
            cur = conv_out
            if z:
                add_out = out if not act else self.fresh(f"{out}_add")
                nodes.append(helper.make_node("Add", [cur, z], [add_out], name=self.fresh_node(f"{base}_add")))
                cur = add_out
            if act:
                self.activation(nodes, cur, out, act, params, base)
        elif node.op_type == "FusedGemm":
            gemm_out = out if not act else self.fresh(f"{out}_gemm")
            nodes.append(helper.make_node("Gemm", list(node.input), [gemm_out], name=base, **attrs))
            if act:
                self.activation(nodes, gemm_out, out, act, params, base)
        elif node.op_type == "ChannelAffine":
            x, scale, shift = node.input[0], node.input[1], node.input[2] if len(node.input) > 2 else ""
            rank = self.ranks.get(x) or self.ranks.get(out)
            s = numpy_helper.to_array(self.constants[scale]) if scale in self.constants else None
            t = numpy_helper.to_array(self.constants[shift]) if shift in self.constants else None
            if rank is None or s is None or (shift and t is None):
                # Unknown rank: BatchNormalization with mean 0, var 1 and
                # epsilon 0 computes exactly x * scale + shift on any rank.
                c = None if s is None else s.shape[0]
                if c is None or (shift and t is None):
                    raise InvalidModelError(
                        f"node '{base}': ChannelAffine parameters must be constants to export")
                zeros = self.const(f"{base}_zero", np.zeros(c, np.float32))
                ones = self.const(f"{base}_one", np.ones(c, np.float32))
                sh = shift or self.const(f"{base}_shift", np.zeros(c, np.float32))
                nodes.append(helper.make_node("BatchNormalization", [x, scale, sh, zeros, ones], [out],
                                              name=base, epsilon=0.0))
            else:
                bshape = (s.shape[0],) + (1,) * max(rank - 2, 0)
                mul_out = self.fresh(f"{out}_scaled") if shift else out
                nodes.append(helper.make_node("Mul", [x, self.const(f"{base}_scale", s.reshape(bshape))], [mul_out],
                                              name=base))
                if shift:
                    nodes.append(helper.make_node("Add", [mul_out, self.const(f"{base}_shift", t.reshape(bshape))],
                                                  [out], name=self.fresh_node(f"{base}_shift")))
        elif node.op_type == "SqueezeExcite":
            nodes = self.squeeze_excite(node, attrs, base)
        elif node.op_type == "ChannelSplitNorm":
            nodes = self.channel_split_norm(node, attrs, base)
        elif node.op_type == "ChannelLayerNorm":
            nodes = self.channel_layer_norm(node, attrs, base)
        elif node.op_type in ("FusedQuantize", "FusedChannelBias"):
            nodes = self.fused_quantize(node, attrs, act, base)
        else:
            raise InvalidModelError(f"node '{base}': no standard ONNX form for {CUSTOM_DOMAIN}::{node.op_type}")
        return nodes

    def rank_of(self, node, base):
        rank = self.ranks.get(node.input[0]) or self.ranks.get(node.output[0])
        if rank is None:
            raise InvalidModelError(f"node '{base}': the input's rank is unknown; {node.op_type} cannot be exported")
        return rank

    def fused_quantize(self, node, attrs, act, base) -> list:
        """FusedQuantize (fuse_float_quantize) as [Concat] -> [Add] -> [Relu]
        -> QuantizeLinear to int8; FusedChannelBias the same without the
        QuantizeLinear."""
        out, nodes, cur = node.output[0], [], node.input[0]
        if len(node.input) > 1:
            cur = self.fresh(f"{out}_concat")
            nodes.append(helper.make_node("Concat", list(node.input), [cur], name=self.fresh_node(f"{base}_concat"),
                                          axis=1))
        bias = attrs.get("bias")
        if bias:
            rank = self.rank_of(node, base)
            shape = (len(bias),) + (1,) * (rank - 2)
            add_out = self.fresh(f"{out}_add")
            nodes.append(helper.make_node("Add", [cur, self.const(f"{base}_bias", np.asarray(bias, np.float32)
                                                                      .reshape(shape))], [add_out],
                                          name=self.fresh_node(f"{base}_add")))
            cur = add_out
        quantize = node.op_type == "FusedQuantize"
        if act:
            act_out = self.fresh(f"{out}_act") if quantize else out
            self.activation(nodes, cur, act_out, act, [], base)
            cur = act_out
        if not quantize:
            if cur != out:
                nodes.append(helper.make_node("Identity", [cur], [out], name=base))
            return nodes
        scale = self.const(f"{base}_scale", np.float32(attrs["scale"]))
        zp = self.const(f"{base}_zero_point", np.int8(attrs.get("zero_point", 0)))
        nodes.append(helper.make_node("QuantizeLinear", [cur, scale, zp], [out], name=base))
        return nodes

    def squeeze_excite(self, node, attrs, base) -> list:
        """GlobalAveragePool -> Flatten -> Gemm -> Relu -> Gemm -> gate -> Reshape -> Mul."""
        x, w1, b1, w2, b2 = node.input[:5]
        y = node.output[0]
        rank = self.rank_of(node, base)
        gate = attrs.get("gate", b"Sigmoid")
        gate = gate.decode() if isinstance(gate, bytes) else gate
        gp = list(attrs.get("gate_params", []))
        nm = self.fresh_node
        pooled, flat, h1, h, g1, g, g4 = (self.fresh(f"{base}_se_{s}") for s in
                                          ("pool", "flat", "fc1", "relu", "fc2", "gate", "gate4"))
        nodes = [helper.make_node("GlobalAveragePool", [x], [pooled], name=nm(f"{base}_se_pool")),
                 helper.make_node("Flatten", [pooled], [flat], name=nm(f"{base}_se_flatten"), axis=1),
                 helper.make_node("Gemm", [flat, w1, b1], [h1], name=nm(f"{base}_se_fc1"), transB=1),
                 helper.make_node("Relu", [h1], [h], name=nm(f"{base}_se_relu")),
                 helper.make_node("Gemm", [h, w2, b2], [g1], name=nm(f"{base}_se_fc2"), transB=1)]
        if gate == "HardSigmoid":
            nodes.append(helper.make_node("HardSigmoid", [g1], [g], name=nm(f"{base}_se_gate"),
                                          alpha=gp[0] if gp else 0.2, beta=gp[1] if len(gp) > 1 else 0.5))
        else:
            nodes.append(helper.make_node("Sigmoid", [g1], [g], name=nm(f"{base}_se_gate")))
        shape = self.const(f"{base}_se_shape", np.array([0, -1] + [1] * (rank - 2), np.int64))
        nodes.append(helper.make_node("Reshape", [g, shape], [g4], name=nm(f"{base}_se_reshape")))
        z = node.input[5] if len(node.input) > 5 else ""
        # (expand() has popped "activation" from attrs.)
        act = {a.name: helper.get_attribute_value(a) for a in node.attribute}.get("activation", b"")
        act = act.decode() if isinstance(act, bytes) else act
        scaled = y if not z and not act else self.fresh(f"{base}_se_scaled")
        nodes.append(helper.make_node("Mul", [x, g4], [scaled], name=base))
        if z:
            added = y if not act else self.fresh(f"{base}_se_residual")
            nodes.append(helper.make_node("Add", [scaled, z], [added], name=nm(f"{base}_se_add")))
            scaled = added
        if act:
            self.activation(nodes, scaled, y, act, [], base)
        return nodes

    def channel_layer_norm(self, node, attrs, base) -> list:
        """Transpose to channels-last -> LayerNormalization(axis=-1) -> Transpose back."""
        rank = self.rank_of(node, base)
        if self.opset < 17:
            raise InvalidModelError(f"node '{base}': ChannelLayerNorm needs opset >= 17 (LayerNormalization) "
                                    f"to export; the model has opset {self.opset}")
        last = [0] + list(range(2, rank)) + [1]
        back = [0, rank - 1] + list(range(1, rank - 1))
        nm = self.fresh_node
        t, n = self.fresh(f"{base}_channels_last"), self.fresh(f"{base}_normalized")
        return [helper.make_node("Transpose", [node.input[0]], [t], name=nm(f"{base}_to_channels_last"), perm=last),
                helper.make_node("LayerNormalization", [t] + list(node.input[1:3]), [n], name=base, axis=-1,
                                 epsilon=float(attrs.get("epsilon", 1e-5))),
                helper.make_node("Transpose", [n], [node.output[0]], name=nm(f"{base}_to_channels_first"),
                                 perm=back)]

    def channel_split_norm(self, node, attrs, base) -> list:
        """Split -> InstanceNormalization | Mul + Add -> Concat."""
        x, in_scale, in_bias, scale, shift = node.input[:5]
        y = node.output[0]
        rank = self.rank_of(node, base)
        k = int(attrs["instance_channels"])
        first = int(attrs.get("instance_first", 1))
        s = numpy_helper.to_array(self.constants[scale]) if scale in self.constants else None
        t = numpy_helper.to_array(self.constants[shift]) if shift in self.constants else None
        if s is None or t is None:
            raise InvalidModelError(f"node '{base}': ChannelSplitNorm's scale and shift must be constants to export")
        ca = s.shape[0]
        sizes = [k, ca] if first else [ca, k]
        nm = self.fresh_node
        parts = [self.fresh(f"{base}_part{i}") for i in range(2)]
        normed = [self.fresh(f"{base}_norm{i}") for i in range(2)]
        bshape = (ca,) + (1,) * (rank - 2)
        if self.opset >= 13:
            split = self.const(f"{base}_split", np.array(sizes, np.int64))
            nodes = [helper.make_node("Split", [x, split], parts, name=nm(f"{base}_split"), axis=1)]
        else:
            nodes = [helper.make_node("Split", [x], parts, name=nm(f"{base}_split"), axis=1, split=sizes)]
        i_in, i_af = (0, 1) if first else (1, 0)
        nodes.append(helper.make_node("InstanceNormalization", [parts[i_in], in_scale, in_bias], [normed[i_in]],
                                      name=nm(f"{base}_instance_norm"), epsilon=float(attrs.get("epsilon", 1e-5))))
        scaled = self.fresh(f"{base}_scaled")
        nodes.append(helper.make_node("Mul", [parts[i_af], self.const(f"{base}_scale", s.reshape(bshape))], [scaled],
                                      name=nm(f"{base}_scale")))
        nodes.append(helper.make_node("Add", [scaled, self.const(f"{base}_shift", t.reshape(bshape))],
                                      [normed[i_af]], name=nm(f"{base}_shift")))
        nodes.append(helper.make_node("Concat", normed, [y], name=base, axis=1))
        return nodes

    def run(self) -> onnx.ModelProto:
        g = self.model.graph
        nodes = []
        for n in g.node:
            nodes.extend(self.expand(n) if _needs_expansion(n, self.opset) else [n])
        # Parameters the custom ops read directly (ChannelAffine's [C]
        # vectors) are dropped when nothing reads them any more.
        used = {i for n in nodes for i in n.input}
        used |= {o.name for o in g.output}
        inits = [t for t in g.initializer if t.name in used] + self.initializers
        graph = helper.make_graph(nodes, g.name, list(g.input), list(g.output), initializer=inits,
                                  value_info=list(g.value_info))
        opsets = [o for o in self.model.opset_import if o.domain != CUSTOM_DOMAIN]
        out = helper.make_model(graph, opset_imports=opsets, producer_name=self.model.producer_name)
        out.ir_version = self.model.ir_version
        return out


def _needs_expansion(node, opset: int) -> bool:
    # pyengine's own ops, and the Gelu nodes fuse_gelu made in models whose
    # opset (< 20) has no Gelu.
    return node.domain == CUSTOM_DOMAIN or (node.op_type == "Gelu" and node.domain in ("", "ai.onnx") and opset < 20)


def expand_custom_ops(model: onnx.ModelProto) -> onnx.ModelProto:
    """Returns ``model`` with every pyengine-domain node written as standard
    ONNX ops (and, below opset 20, every Gelu as the erf/tanh subgraph)."""
    opset = onnx_io.default_opset(model)
    if not any(_needs_expansion(n, opset) for n in model.graph.node):
        return model
    return _Expander(model).run()


# --- the report ------------------------------------------------------------


def format_report(report: dict, verbose: bool = False) -> str:
    """The optimizer report as text: passes that fired, op counts before and
    after, and why matches were refused (grouped by reason; every node with
    ``verbose``)."""
    lines = [f"optimizer: {report['nodes_before']} -> {report['nodes_after']} nodes"]
    if report.get("stopped"):
        lines[0] += f" (stopped after {report.get('pass_runs')} passes)"
    if report.get("hit_cap"):
        lines[0] += " (iteration cap reached)"
    for p in report.get("passes", []):
        if p.get("count"):
            pats = p.get("patterns") or {}
            detail = ", ".join(f"{k} {v}" for k, v in sorted(pats.items()) if k != p["name"])
            lines.append(f"  {p['name']}: fired {p['count']} time(s)" + (f" ({detail})" if detail else ""))
    for key, label in (("ops_before", "before"), ("ops_after", "after")):
        ops = report.get(key)
        if ops:
            lines.append(f"  ops {label}: " + ", ".join(f"{k} {v}" for k, v in
                                                      sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))))
    refused = [r for r in report.get("refused", []) if verbose or not r.get("quiet")]
    if refused:
        lines.append(f"  refused matches ({len(refused)}):")
        if verbose:
            for r in refused:
                lines.append(f"    {r['pass']}/{r['pattern']} at node '{r['node']}' ({r['op']}): {r['reason']}")
        else:
            groups = Counter((r["pass"], r["reason"]) for r in refused)
            for (pname, reason), n in sorted(groups.items(), key=lambda kv: (-kv[1], kv[0])):
                lines.append(f"    {pname}: {reason}" + (f"  (x{n})" if n > 1 else ""))
    return "\n".join(lines)
