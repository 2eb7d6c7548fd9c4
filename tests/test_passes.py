"""The graph optimizer: one section per pass, then the PassManager, the public
optimize() API and the model zoo.

Each pass test builds a tiny graph with onnx.helper, imports it with
pyengine.onnx_io.graph_from_onnx, runs the pass (verify() after every sweep),
checks op counts and the graph invariants, writes the result back as standard
ONNX and compares onnxruntime outputs before and after: rtol 1e-4, with an
absolute floor of 1e-5 x the output's largest magnitude for elements near 0.
Cases that must not be rewritten are checked with the refusal reason the
report gives.
"""

import collections
import functools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyengine
from pyengine import onnx_io
from pyengine.errors import InvalidArgumentError
from pyengine.optimizer import _keep_output_types, expand_custom_ops, format_report, optimize_graph

ort = pytest.importorskip("onnxruntime")

RTOL = 1e-4
ATOL_FRACTION = 1e-5
OPSET = 17


# --- helpers ----------------------------------------------------------------


def rng():
    return np.random.default_rng()


def f32(a):
    return np.asarray(a, dtype=np.float32)


def make_model(nodes, inputs, outputs, inits=(), opset=OPSET):
    """inputs/outputs: {name: shape} (shape None for outputs: left to ONNX); inits: {name: array}."""
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()]
    init = [numpy_helper.from_array(np.asarray(v), n) for n, v in dict(inits).items()]
    g = helper.make_graph(nodes, "g", ins, outs, initializer=init)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    # Declare output shapes from ONNX inference (the checker wants them).
    inferred = {v.name: v.type for v in onnx.shape_inference.infer_shapes(m).graph.output}
    for o in m.graph.output:
        if not o.type.tensor_type.HasField("shape") and inferred[o.name].tensor_type.HasField("shape"):
            o.type.CopyFrom(inferred[o.name])
    return m


def node(op, ins, outs, name=None, **attrs):
    outs = [outs] if isinstance(outs, str) else outs
    return helper.make_node(op, ins, outs, name=name or outs[0], **attrs)


def run_ort(model, feeds):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def assert_same_outputs(before, after, feeds):
    ref, out = run_ort(before, feeds), run_ort(after, feeds)
    assert sorted(ref) == sorted(out)
    for k in ref:
        atol = ATOL_FRACTION * max(1.0, float(np.max(np.abs(ref[k]))) if ref[k].size else 1.0)
        np.testing.assert_allclose(out[k], ref[k], rtol=RTOL, atol=atol, err_msg=k)


def random_feeds(model, batch=2):
    feeds = {}
    for v in model.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else batch for d in v.type.tensor_type.shape.dim]
        feeds[v.name] = rng().standard_normal(dims).astype(np.float32)
    return feeds


def ops(graph):
    return collections.Counter(n["op_type"] for n in graph.nodes())


def run_passes(model, passes, feeds=None, **kwargs):
    """Imports `model`, runs `passes`, verifies, checks numerics through the
    standard-ONNX export; returns (graph, report, exported model)."""
    graph, proto = onnx_io.graph_from_onnx(model)
    out_graph, report = optimize_graph(graph, passes, verify=True, **kwargs)
    out_graph.verify()
    exported = onnx_io.graph_to_onnx(out_graph, opset=onnx_io.default_opset(proto))
    _keep_output_types(exported, proto)
    exported = expand_custom_ops(exported)
    onnx.checker.check_model(exported)
    assert_same_outputs(model, exported, feeds or random_feeds(model))
    return out_graph, report, exported


def reasons(report, pass_name=None):
    return [r["reason"] for r in report["refused"] if pass_name is None or r["pass"] == pass_name]


def has_reason(report, text, pass_name=None):
    return any(text in r for r in reasons(report, pass_name))


def bn_params(prefix, c, gamma=None):
    r = rng()
    return {f"{prefix}_g": f32(r.uniform(0.5, 1.5, c) if gamma is None else gamma),
            f"{prefix}_b": f32(r.normal(0, 0.3, c)),
            f"{prefix}_m": f32(r.normal(0, 0.3, c)),
            f"{prefix}_v": f32(r.uniform(0.5, 1.5, c))}


def bn(prefix, x, y):
    return node("BatchNormalization", [x, f"{prefix}_g", f"{prefix}_b", f"{prefix}_m", f"{prefix}_v"], y,
                name=prefix, epsilon=1e-3)


def weight(*shape, scale=0.3):
    return f32(rng().standard_normal(shape) * scale)


# --- eliminate_identity -----------------------------------------------------


def test_eliminate_identity_removes_noops():
    c = 6
    nodes = [
        node("Identity", ["x"], "i1"),
        node("Dropout", ["i1"], "d1"),
        node("Reshape", ["d1", "shape0"], "r1"),             # [0, 6, -1, 7] keeps [N, 6, 5, 7]
        node("Cast", ["r1"], "c1", to=TensorProto.FLOAT),
        node("Transpose", ["c1"], "t0", perm=[0, 1, 2, 3]),
        node("Transpose", ["t0"], "t1", perm=[0, 2, 3, 1]),
        node("Transpose", ["t1"], "t2", perm=[0, 3, 1, 2]),  # inverse of t1
        node("Relu", ["t2"], "y"),
    ]
    m = make_model(nodes, {"x": ["N", c, 5, 7]}, {"y": None}, {"shape0": np.array([0, c, -1, 7], np.int64)})
    g, rep, _ = run_passes(m, ["eliminate_identity", "eliminate_dead_code"])
    assert ops(g) == {"Relu": 1}
    # Identity, Dropout, Reshape, Cast, identity Transpose, inverse pair (its
    # first Transpose is then dead code).
    assert rep["passes"][0]["count"] == 6


def test_eliminate_identity_refusals():
    # A graph output that is an Identity of a graph input cannot be bypassed;
    # Dropout in training mode is not an identity.
    nodes = [node("Identity", ["x"], "y"),
             node("Dropout", ["x", "ratio", "train"], "z")]
    m = make_model(nodes, {"x": [2, 3]}, {"y": None, "z": None},
                   {"ratio": f32(0.0), "train": np.array(True)})
    graph, _ = onnx_io.graph_from_onnx(m)
    g, rep = optimize_graph(graph, ["eliminate_identity"], verify=True)
    assert ops(g) == {"Identity": 1, "Dropout": 1}
    assert has_reason(rep, "is a graph output and its input 'x' is a graph input")
    assert has_reason(rep, "training_mode is true")


def test_identity_deduplicated_bn_params_fold():
    # PyTorch routes shared initializers through Identity: once removed, the
    # BN parameters are constants and the BN folds into the conv.
    c = 4
    p = bn_params("bn", c)
    nodes = [node("Identity", ["bn_v"], "var_dedup"),
             node("Conv", ["x", "w"], "conv", pads=[1, 1, 1, 1]),
             node("BatchNormalization", ["conv", "bn_g", "bn_b", "bn_m", "var_dedup"], "y", name="bn")]
    m = make_model(nodes, {"x": ["N", 3, 8, 8]}, {"y": None}, {"w": weight(c, 3, 3, 3), **p})
    g, _, _ = run_passes(m, None)
    assert ops(g) == {"Conv": 1}


# --- fold_constants ---------------------------------------------------------


def test_fold_constants_evaluates_constant_subgraphs():
    wt = weight(5, 4)  # stored transposed, as some exporters do
    nodes = [
        node("Constant", [], "shape_c", value=numpy_helper.from_array(np.array([4, 5], np.int64))),
        node("Transpose", ["wt"], "w_t", perm=[1, 0]),
        node("Reshape", ["w_t", "shape_c"], "w"),
        node("Concat", ["w", "w"], "w2", axis=1),           # [4, 10]
        node("MatMul", ["x", "w2"], "y"),
    ]
    m = make_model(nodes, {"x": ["N", 4]}, {"y": None}, {"wt": wt})
    g, rep, _ = run_passes(m, ["fold_constants", "eliminate_dead_code"])
    assert ops(g) == {"MatMul": 1}
    assert rep["passes"][0]["count"] == 4


def test_fold_constants_static_shape_chain():
    # x.view(x.size(0), -1) on a static shape folds to a constant target.
    nodes = [
        node("Shape", ["x"], "s"),
        node("Gather", ["s", "zero"], "n", axis=0),
        node("Unsqueeze", ["n", "axes0"], "n1"),
        node("Concat", ["n1", "minus1"], "target", axis=0),
        node("Reshape", ["x", "target"], "y"),
    ]
    inits = {"zero": np.array(0, np.int64), "axes0": np.array([0], np.int64),
             "minus1": np.array([-1], np.int64)}
    m = make_model(nodes, {"x": [3, 4, 5]}, {"y": None}, inits)
    g, _, _ = run_passes(m, ["fold_constants", "eliminate_dead_code"])
    assert ops(g) == {"Reshape": 1}
    target = [n for n in g.nodes()][0]["inputs"][1]
    np.testing.assert_array_equal(g.constant(target), [3, -1])


def test_fold_constants_dynamic_batch_reshape():
    # With a dynamic batch the chain cannot fold, but its only unknown is x's
    # own dim 0: the Reshape target becomes [0, -1] and the chain dies.
    nodes = [
        node("Shape", ["x"], "s"),
        node("Gather", ["s", "zero"], "n", axis=0),
        node("Unsqueeze", ["n", "axes0"], "n1"),
        node("Concat", ["n1", "minus1"], "target", axis=0),
        node("Reshape", ["x", "target"], "y"),
    ]
    inits = {"zero": np.array(0, np.int64), "axes0": np.array([0], np.int64),
             "minus1": np.array([-1], np.int64)}
    m = make_model(nodes, {"x": ["N", 4, 5]}, {"y": None}, inits)
    g, _, _ = run_passes(m, ["fold_constants", "eliminate_dead_code"], feeds={"x": rng().standard_normal((3, 4, 5)).astype(np.float32)})
    assert ops(g) == {"Reshape": 1}
    target = g.nodes()[0]["inputs"][1]
    np.testing.assert_array_equal(g.constant(target), [0, -1])


def test_fold_constants_refusals():
    # A folded output above the size budget (4 MiB from a 16-byte shape) is
    # refused; a node computing a graph output is kept; Q/DQ stays.
    nodes = [
        node("ConstantOfShape", ["big_shape"], "big", value=numpy_helper.from_array(f32([1.0]))),
        node("ReduceSum", ["big", "axes"], "s", keepdims=0),
        node("Add", ["x", "s"], "y"),
        node("Transpose", ["c"], "z", perm=[1, 0]),
    ]
    m = make_model(nodes, {"x": [1]}, {"y": None, "z": None},
                   {"big_shape": np.array([1024, 1024], np.int64), "axes": np.array([0, 1], np.int64),
                    "c": weight(2, 3)})
    graph, _ = onnx_io.graph_from_onnx(m)
    g, rep = optimize_graph(graph, ["fold_constants"], verify=True)
    assert ops(g)["ConstantOfShape"] == 1 and ops(g)["Transpose"] == 1
    assert has_reason(rep, "folded outputs would take 4194304 bytes")
    assert has_reason(rep, "output 'z' is a graph output")


def test_fold_constants_keeps_dequantize():
    nodes = [node("DequantizeLinear", ["wq", "scale"], "w"), node("MatMul", ["x", "w"], "y")]
    m = make_model(nodes, {"x": [2, 3]}, {"y": None},
                   {"wq": np.array([[1, -2], [3, 4], [-5, 6]], np.int8), "scale": f32(0.1)})
    graph, _ = onnx_io.graph_from_onnx(m)
    g, rep = optimize_graph(graph, ["fold_constants"], verify=True, explain=True)
    assert ops(g) == {"DequantizeLinear": 1, "MatMul": 1}
    assert has_reason(rep, "Q/DQ nodes mark quantization points")


# --- eliminate_dead_code ----------------------------------------------------


def test_eliminate_dead_code():
    nodes = [node("Relu", ["x"], "a"), node("Sigmoid", ["a"], "dead1"), node("Neg", ["dead1"], "dead2"),
             node("Abs", ["x"], "y")]
    m = make_model(nodes, {"x": [2, 3], "unused": [1]}, {"y": None})
    g, rep, exported = run_passes(m, ["eliminate_dead_code"])
    assert ops(g) == {"Abs": 1}
    assert rep["passes"][0]["count"] == 3
    assert [i.name for i in exported.graph.input] == ["x", "unused"]  # the interface stays


# --- merge_reshapes ---------------------------------------------------------


def test_merge_reshape_chain_and_transposes():
    nodes = [
        node("Reshape", ["x", "s1"], "r1"),       # [N, 6, 20]
        node("Flatten", ["r1"], "f1", axis=1),   # [N, 120]
        node("Unsqueeze", ["f1", "ax"], "u1"),    # [N, 1, 120]
        node("Transpose", ["u1"], "t1", perm=[1, 0, 2]),
        node("Transpose", ["t1"], "t2", perm=[2, 0, 1]),
        node("Relu", ["t2"], "y"),
    ]
    m = make_model(nodes, {"x": ["N", 6, 4, 5]}, {"y": None},
                   {"s1": np.array([0, 6, 20], np.int64), "ax": np.array([1], np.int64)})
    g, _, _ = run_passes(m, ["merge_reshapes", "eliminate_identity"])
    assert ops(g) == {"Reshape": 1, "Transpose": 1, "Relu": 1}


def test_merge_reshapes_refuses_shared_intermediate():
    nodes = [node("Reshape", ["x", "s1"], "r1"), node("Flatten", ["r1"], "y", axis=1), node("Relu", ["r1"], "z")]
    m = make_model(nodes, {"x": [2, 6, 4]}, {"y": None, "z": None}, {"s1": np.array([2, 3, 8], np.int64)})
    g, rep, _ = run_passes(m, ["merge_reshapes"])
    assert ops(g) == {"Reshape": 1, "Flatten": 1, "Relu": 1}
    assert has_reason(rep, "the inner Reshape's output has other users")


# --- fold_pad_into_conv -----------------------------------------------------


def test_fold_pad_into_conv_and_pools():
    nodes = [
        node("Pad", ["x", "p1"], "xp"),                                   # zero pad
        node("Conv", ["xp", "w"], "c", pads=[0, 1, 0, 1], name="conv"),
        node("Relu", ["c"], "r"),
        node("Pad", ["r", "p2", "zero"], "rp"),                           # 0 before max on relu output
        node("MaxPool", ["rp"], "mp", kernel_shape=[3, 3], strides=[2, 2]),
        node("Pad", ["mp", "p3", "ninf"], "mpp"),                         # -inf before max
        node("MaxPool", ["mpp"], "mp2", kernel_shape=[2, 2]),
        node("Pad", ["mp2", "p3"], "ap"),
        node("AveragePool", ["ap"], "y", kernel_shape=[2, 2]),
    ]
    inits = {"p1": np.array([0, 0, 1, 2, 0, 0, 1, 0], np.int64), "w": weight(4, 3, 3, 3),
             "p2": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "zero": f32(0.0),
             "p3": np.array([0, 0, 1, 0, 0, 0, 0, 1], np.int64), "ninf": f32(-np.inf)}
    m = make_model(nodes, {"x": ["N", 3, 9, 11]}, {"y": None}, inits)
    g, rep, _ = run_passes(m, ["fold_pad_into_conv"])
    assert "Pad" not in ops(g)
    assert rep["passes"][0]["count"] == 4
    conv = next(n for n in g.nodes() if n["op_type"] == "Conv")
    assert conv["attrs"]["pads"][1] == [1, 3, 1, 1]


@pytest.mark.parametrize("case, reason", [
    ("reflect", "Pad mode is reflect"),
    ("value", "Pad value is 0.5 but the convolution pads with 0"),
    ("maxpool_zero", "could be the maximum of a window"),
    ("ceil", "ceil_mode=1"),
])
def test_fold_pad_refusals(case, reason):
    pads = np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)
    inits = {"p": pads, "w": weight(2, 3, 3, 3), "v": f32(0.5 if case == "value" else 0.0)}
    attrs = {"mode": "reflect"} if case == "reflect" else {}
    consumer = (node("Conv", ["xp", "w"], "y") if case in ("reflect", "value")
                else node("MaxPool", ["xp"], "y", kernel_shape=[3, 3], ceil_mode=int(case == "ceil")))
    m = make_model([node("Pad", ["x", "p", "v"], "xp", **attrs), consumer], {"x": [1, 3, 6, 6]}, {"y": None},
                   inits)
    g, rep, _ = run_passes(m, ["fold_pad_into_conv"])
    assert ops(g)["Pad"] == 1
    assert has_reason(rep, reason)


# --- fold_bn_into_conv ------------------------------------------------------


@pytest.mark.parametrize("rank, groups, bias", [(1, 1, False), (2, 1, True), (2, 4, False), (3, 2, True)])
def test_fold_bn_into_conv(rank, groups, bias):
    cin, cout, k = 4, 8, 3
    spatial = [9, 8, 7][:rank]
    inits = {"w": weight(cout, cin // groups, *([k] * rank)), **bn_params("bn", cout)}
    conv_in = ["x", "w"] + (["b"] if bias else [])
    if bias:
        inits["b"] = weight(cout)
    nodes = [node("Conv", conv_in, "c", name="conv", group=groups, pads=[1] * (2 * rank)),
             bn("bn", "c", "y")]
    m = make_model(nodes, {"x": ["N", cin, *spatial]}, {"y": None}, inits)
    g, rep, _ = run_passes(m, ["fold_bn_into_conv"])
    assert ops(g) == {"Conv": 1}
    assert rep["passes"][0]["patterns"] == {"fold_into_producer": 1}


def test_fold_bn_into_gemm_and_matmul():
    inits = {"w1": weight(6, 5), "c1": weight(6), "w2": weight(6, 7), **bn_params("bn1", 6), **bn_params("bn2", 7)}
    nodes = [node("Gemm", ["x", "w1", "c1"], "g1", transB=1, alpha=0.7, beta=1.3), bn("bn1", "g1", "b1"),
             node("MatMul", ["b1", "w2"], "m2"), bn("bn2", "m2", "y")]
    m = make_model(nodes, {"x": ["N", 5]}, {"y": None}, inits)
    g, _, _ = run_passes(m, ["fold_bn_into_conv"])
    assert ops(g) == {"Gemm": 2}


def test_fold_layer_scale_into_linear():
    # ConvNeXt: Linear on NHWC (MatMul + bias Add), then a per-channel layer
    # scale Mul over the last axis; and Conv + per-channel Mul/Add (SkipInit).
    c = 6
    inits = {"w": weight(c, 2 * c), "b": weight(2 * c), "gamma": f32(rng().uniform(0.1, 1, 2 * c)),
             "cw": weight(c, c, 1, 1), "s": f32(rng().uniform(0.5, 2, (c, 1, 1))), "t": weight(c, 1, 1),
             "alpha": f32(0.25)}
    nodes = [node("Conv", ["x", "cw"], "c0"), node("Mul", ["c0", "s"], "c1"), node("Add", ["t", "c1"], "c2"),
             node("Mul", ["c2", "alpha"], "c3"),
             node("Transpose", ["c3"], "t0", perm=[0, 2, 3, 1]),
             node("MatMul", ["t0", "w"], "mm"), node("Add", ["mm", "b"], "lin"),
             node("Mul", ["lin", "gamma"], "y")]
    m = make_model(nodes, {"x": ["N", c, 4, 5]}, {"y": None}, inits)
    g, _, _ = run_passes(m, ["fold_bn_into_conv"])
    assert ops(g) == {"Conv": 1, "Transpose": 1, "MatMul": 1, "Add": 1}


def test_fold_bn_forward_into_unpadded_conv():
    # BN before a conv without padding folds forward exactly; before a padded
    # conv it does not (zero padding of the shifted input differs) and stays
    # as one ChannelAffine, exported as Mul + Add with [C, 1, 1] constants.
    c = 4
    inits = {"w1": weight(6, c, 1, 1), "w2": weight(6, c, 3, 3), **bn_params("bn1", c), **bn_params("bn2", c)}
    nodes = [bn("bn1", "x", "b1"), node("Conv", ["b1", "w1"], "y1", strides=[2, 2]),
             bn("bn2", "x", "b2"), node("Conv", ["b2", "w2"], "y2", pads=[1, 1, 1, 1])]
    m = make_model(nodes, {"x": ["N", c, 7, 7]}, {"y1": None, "y2": None}, inits)
    g, rep, exported = run_passes(m, ["fold_bn_into_conv"])
    assert ops(g) == {"Conv": 2, "ChannelAffine": 1}
    assert has_reason(rep, "pads its input (padding zeros are not shifted: not exact)")
    assert collections.Counter(n.op_type for n in exported.graph.node) == {"Conv": 2, "Mul": 1, "Add": 1}
    mul = next(n for n in exported.graph.node if n.op_type == "Mul")
    scale = next(t for t in exported.graph.initializer if t.name == mul.input[1])
    assert list(scale.dims) == [c, 1, 1]


def test_bn_scale_moves_through_relu_into_padded_conv():
    # relu(s*x + t) = s * relu(x + t/s) for s > 0: the scale goes into the
    # padded conv exactly, the shift stays as one Add. Negative scales refuse.
    c = 4
    gamma = f32(rng().uniform(0.5, 1.5, c))
    gamma_neg = gamma.copy()
    gamma_neg[1] = -0.7
    inits = {"w": weight(5, c, 3, 3), "w2": weight(5, c, 3, 3), **bn_params("bn", c, gamma),
             **bn_params("bn2", c, gamma_neg)}
    nodes = [bn("bn", "x", "b"), node("Relu", ["b"], "r"), node("Conv", ["r", "w"], "y", pads=[1, 1, 1, 1]),
             bn("bn2", "x", "b2"), node("Relu", ["b2"], "r2"), node("Conv", ["r2", "w2"], "z", pads=[1, 1, 1, 1])]
    m = make_model(nodes, {"x": ["N", c, 6, 6]}, {"y": None, "z": None}, inits)
    g, rep, _ = run_passes(m, ["fold_bn_into_conv"])
    assert ops(g) == {"Add": 1, "ChannelAffine": 1, "Relu": 2, "Conv": 2}
    assert has_reason(rep, "a channel scale is not positive")


def test_fold_bn_refusals():
    c = 4
    w = weight(c, 3, 3, 3)
    inits = {"w": w, "w2": weight(c, 3, 1, 1), **bn_params("bn1", c), **bn_params("bn2", c),
             **bn_params("bn3", c), **bn_params("bn4", c)}
    nodes = [
        # a weight shared by two convs
        node("Conv", ["x", "w"], "s1", pads=[1, 1, 1, 1]), bn("bn1", "s1", "y1"),
        node("Conv", ["x", "w"], "s2", pads=[1, 1, 1, 1]), bn("bn2", "s2", "y2"),
        # a conv output with two consumers
        node("Conv", ["x", "w2"], "m1"), bn("bn3", "m1", "y3"), node("Relu", ["m1"], "y4"),
        # a conv output that is also a graph output
        node("Conv", ["x", "w2"], "y5", name="conv_out"), bn("bn4", "y5", "y6"),
    ]
    m = make_model(nodes, {"x": ["N", 3, 6, 6]}, {k: None for k in ("y1", "y2", "y3", "y4", "y5", "y6")}, inits)
    g, rep, _ = run_passes(m, ["fold_bn_into_conv"])
    assert ops(g) == {"Conv": 4, "ChannelAffine": 4, "Relu": 1}
    assert has_reason(rep, "the weight is shared with another node")
    assert has_reason(rep, "the Conv output 'm1' has other users or is a graph output")
    assert has_reason(rep, "the Conv output 'y5' has other users or is a graph output")


# --- reparam_branches -------------------------------------------------------


def repvgg_unit(prefix, x, cin, cout, stride, identity, groups=1):
    inits = {f"{prefix}_w3": weight(cout, cin // groups, 3, 3), f"{prefix}_w1": weight(cout, cin // groups, 1, 1),
             **bn_params(f"{prefix}_bn3", cout), **bn_params(f"{prefix}_bn1", cout)}
    nodes = [node("Conv", [x, f"{prefix}_w3"], f"{prefix}_c3", pads=[1, 1, 1, 1], strides=[stride] * 2, group=groups),
             bn(f"{prefix}_bn3", f"{prefix}_c3", f"{prefix}_b3"),
             node("Conv", [x, f"{prefix}_w1"], f"{prefix}_c1", strides=[stride] * 2, group=groups),
             bn(f"{prefix}_bn1", f"{prefix}_c1", f"{prefix}_b1"),
             node("Add", [f"{prefix}_b3", f"{prefix}_b1"], f"{prefix}_s")]
    out = f"{prefix}_s"
    if identity:
        inits.update(bn_params(f"{prefix}_bnid", cin))
        nodes += [bn(f"{prefix}_bnid", x, f"{prefix}_bid"), node("Add", [out, f"{prefix}_bid"], f"{prefix}_s2")]
        out = f"{prefix}_s2"
    nodes.append(node("Relu", [out], f"{prefix}_y"))
    return nodes, inits, f"{prefix}_y"


@pytest.mark.parametrize("groups", [1, 2])
def test_reparam_repvgg(groups):
    n1, i1, y1 = repvgg_unit("a", "x", 4, 8, 2, False, groups)
    n2, i2, y2 = repvgg_unit("b", y1, 8, 8, 1, True, groups)
    nodes = n1 + n2 + [node("Identity", [y2], "y")]
    m = make_model(nodes, {"x": ["N", 4, 9, 9]}, {"y": None}, {**i1, **i2})
    g, rep, exported = run_passes(m, None)
    assert ops(g) == {"FusedConv": 2}
    assert collections.Counter(n.op_type for n in exported.graph.node) == {"Conv": 2, "Relu": 2}
    # The unit with an identity merges its two convs first (the inner Add is
    # visited first), then the identity: 1 + 2 rewrites.
    assert next(p for p in rep["passes"] if p["name"] == "reparam_branches")["count"] == 3


def test_reparam_acnet_asymmetric_kernels():
    # ACNet: 3x3 + 1x3 + 3x1 branches with centred padding.
    inits = {"w33": weight(6, 4, 3, 3), "w13": weight(6, 4, 1, 3), "w31": weight(6, 4, 3, 1), "b": weight(6)}
    nodes = [node("Conv", ["x", "w33", "b"], "a", pads=[1, 1, 1, 1]),
             node("Conv", ["x", "w13"], "h", pads=[0, 1, 0, 1]),
             node("Conv", ["x", "w31"], "v", pads=[1, 0, 1, 0]),
             node("Add", ["a", "h"], "s"), node("Add", ["v", "s"], "y")]
    m = make_model(nodes, {"x": ["N", 4, 7, 6]}, {"y": None}, inits)
    g, _, _ = run_passes(m, ["reparam_branches"])
    assert ops(g) == {"Conv": 1}


@pytest.mark.parametrize("case, reason", [
    ("stride", "branches differ in stride"),
    ("pads", "branch paddings do not align the kernel centres"),
    ("shared", "has other users or is a graph output"),
])
def test_reparam_refusals(case, reason):
    inits = {"w3": weight(4, 4, 3, 3), "w1": weight(4, 4, 1, 1), "w5": weight(4, 4, 5, 5)}
    outputs = {"y": None}
    if case == "stride":
        # Same output size from different strides: 3x3/2 pad 1 and 5x5/1 on 8x8.
        nodes = [node("Conv", ["x", "w3"], "a", pads=[1, 1, 1, 1], strides=[2, 2]),
                 node("Conv", ["x", "w5"], "b")]
        x_shape = [1, 4, 8, 8]
    else:
        p3 = [0, 0, 2, 2] if case == "pads" else [1, 1, 1, 1]
        nodes = [node("Conv", ["x", "w3"], "a", pads=p3), node("Conv", ["x", "w1"], "b")]
        x_shape = [1, 4, 6, 6]
    nodes.append(node("Add", ["a", "b"], "y"))
    if case == "shared":
        nodes.append(node("Relu", ["b"], "z"))
        outputs["z"] = None
    m = make_model(nodes, {"x": x_shape}, outputs, inits)
    g, rep, _ = run_passes(m, ["reparam_branches"])
    assert ops(g)["Conv"] == 2
    assert has_reason(rep, reason), reasons(rep)


# --- restore_residuals ------------------------------------------------------


def rm_block(c=4, rank=2, dilation=1, middle_relu=True, case=None):
    """An RMNet block on x = Relu(x0): conv1 [W1; D] (bias [b1; 0]) -> Relu ->
    conv2 [W2 | D] -> Relu, D the Dirac (identity) kernel, the 2c hidden
    channels in a random order. `case` changes the shortcut (permuted,
    partial, downsample: RMNet's strided block, conv1 at stride 2 and a
    random 1x1 projection in conv2's identity columns) or breaks a
    precondition (signed, shared)."""
    r = rng()
    k = [3] * rank
    pad = [dilation] * (2 * rank)
    dirac = np.zeros([c, c] + k, np.float32)
    for i in range(c):
        dirac[(i, i) + (1,) * rank] = 1.0
    cout = 2 * c if case == "downsample" else c
    w1 = np.concatenate([weight(c, c, *k), dirac], 0)
    b1 = np.concatenate([weight(c), np.zeros(c, np.float32)])
    shortcut = dirac
    if case == "permuted":  # hidden identity channel i read into output i + 1
        shortcut = np.roll(dirac, 1, axis=0)
    elif case == "partial":  # output 0 gets no identity channel
        shortcut = dirac.copy()
        shortcut[0] = 0.0
    elif case == "downsample":  # the projection shortcut, a 1x1 conv padded to 3x3
        shortcut = np.zeros([cout, c] + k, np.float32)
        shortcut[(slice(None), slice(None)) + (1,) * rank] = weight(cout, c)
    w2 = np.concatenate([weight(cout, c, *k), shortcut], 1)
    order = r.permutation(2 * c)
    inits = {"w1": f32(w1[order]), "b1": f32(b1[order]), "w2": f32(w2[:, order]), "b2": weight(cout)}
    stride = [2 if case == "downsample" else 1] * rank
    nodes = [node("Relu", ["x0"], "x"),
             node("Conv", ["x", "w1", "b1"], "h", pads=pad, dilations=[dilation] * rank, strides=stride),
             node("Relu", ["h"], "hr"),
             node("Conv", ["hr" if middle_relu else "h", "w2", "b2"], "s", pads=pad, dilations=[dilation] * rank),
             node("Relu", ["s"], "y")]
    if not middle_relu:
        del nodes[2]
    if case == "signed":  # x itself can be negative
        nodes[0] = node("Identity", ["x0"], "x")
    outputs = {"y": None}
    if case == "shared":
        outputs["hr"] = None
    spatial = [9, 8, 7][:rank]
    return make_model(nodes, {"x0": ["N", c] + spatial}, outputs, inits)


@pytest.mark.parametrize("rank, dilation, middle_relu", [(2, 1, True), (2, 2, True), (3, 1, True), (2, 1, False)])
def test_restore_residuals(rank, dilation, middle_relu):
    c = 4
    m = rm_block(c, rank, dilation, middle_relu)
    g, rep, exported = run_passes(m, ["restore_residuals"])
    assert next(p for p in rep["passes"] if p["name"] == "restore_residuals")["count"] == 1
    assert ops(g)["Add"] == 1 and ops(g)["Conv"] == 2
    shapes = {n.name: [int(d) for d in n.dims] for n in exported.graph.initializer}
    convs = [n for n in exported.graph.node if n.op_type == "Conv"]
    # Both convs lose the c identity channels: c -> c -> c, half the work.
    assert shapes[convs[0].input[1]][:2] == [c, c] and shapes[convs[1].input[1]][:2] == [c, c]
    add = next(n for n in exported.graph.node if n.op_type == "Add")
    assert "x" in add.input
    # The whole pipeline fuses the restored Add (and the Relu) into conv2.
    g, _, _ = run_passes(m, None)
    assert ops(g) == ({"Relu": 1, "FusedConv": 2} if middle_relu else {"Relu": 1, "Conv": 1, "FusedConv": 1})


@pytest.mark.parametrize("case, cout, stride", [("permuted", 4, 1), ("partial", 4, 1), ("downsample", 8, 2)])
def test_restore_residuals_projection(case, cout, stride):
    # Identity channels read back through anything but the identity matrix
    # (RMNet's downsampling blocks: a strided conv1 and a 1x1 projection in
    # conv2's identity columns) become a 1x1 shortcut conv of x.
    g, rep, exported = run_passes(rm_block(case=case), ["restore_residuals"])
    assert ops(g)["Conv"] == 3 and ops(g)["Add"] == 1
    shapes = {n.name: [int(d) for d in n.dims] for n in exported.graph.initializer}
    convs = {n.name: n for n in exported.graph.node if n.op_type == "Conv"}
    shortcut = next(n for name, n in convs.items() if name.endswith("_shortcut"))
    assert shortcut.input[0] == "x" and shapes[shortcut.input[1]] == [cout, 4, 1, 1]
    assert next(a.ints for a in shortcut.attribute if a.name == "strides") == [stride, stride]
    assert sorted(shapes[n.input[1]][:2] for n in convs.values() if n is not shortcut) == [[4, 4], [cout, 4]]


@pytest.mark.parametrize("case, reason", [
    ("signed", "is not known to be >= 0"),
    ("shared", "has other users or is a graph output"),
])
def test_restore_residuals_refusals(case, reason):
    g, rep, _ = run_passes(rm_block(case=case), ["restore_residuals"])
    assert ops(g)["Conv"] == 2 and ops(g)["Add"] == 0
    assert has_reason(rep, reason, "restore_residuals"), reasons(rep)


# --- prune_dead_channels ----------------------------------------------------


def dead_channel_model(between="relu", consumer_group=1):
    c = 6
    w = weight(c, 3, 3, 3)
    b = weight(c)
    w[[1, 4]] = 0.0
    b[[1, 4]] = 0.0
    inits = {"w": w, "b": b, "v": weight(5, c // consumer_group, 3, 3)}
    nodes = [node("Conv", ["x", "w", "b"], "c", pads=[1, 1, 1, 1])]
    if between == "relu":
        nodes.append(node("Relu", ["c"], "r"))
    elif between == "sigmoid":
        nodes.append(node("Sigmoid", ["c"], "r"))
    elif between == "add":
        nodes.append(node("Add", ["c", "c"], "r"))
    nodes.append(node("Conv", ["r", "v"], "y", pads=[1, 1, 1, 1], group=consumer_group))
    return make_model(nodes, {"x": ["N", 3, 7, 7]}, {"y": None}, inits)


def test_prune_dead_channels():
    g, rep, exported = run_passes(dead_channel_model(), ["prune_dead_channels"])
    assert ops(g) == {"Conv": 2, "Relu": 1}
    shapes = {t.name: list(t.dims) for t in exported.graph.initializer}
    convs = [n for n in exported.graph.node if n.op_type == "Conv"]
    assert shapes[convs[0].input[1]][0] == 4 and shapes[convs[1].input[1]][1] == 4


# More rules and refusals (constants folded into biases, residual stages,
# depthwise groups) are in test_pruning.py.
@pytest.mark.parametrize("between, reason", [
    ("sigmoid", "is the constant 0.5 (not 0) where padded node 'y' (Conv) reads it"),
])
def test_prune_dead_channels_refusals(between, reason):
    g, rep, _ = run_passes(dead_channel_model(between), ["prune_dead_channels"])
    assert has_reason(rep, reason), reasons(rep)
    convs = [n for n in g.nodes() if n["op_type"] == "Conv"]
    assert g.constant(convs[0]["inputs"][1]).shape[0] == 6


# --- fuse_conv_add_relu -----------------------------------------------------


def test_fuse_conv_add_relu_residual():
    c = 4
    inits = {"w1": weight(c, c, 3, 3), "b1": weight(c), "w2": weight(c, c, 3, 3)}
    nodes = [node("Conv", ["x", "w1", "b1"], "c1", pads=[1, 1, 1, 1]), node("Relu", ["c1"], "r1"),
             node("Conv", ["r1", "w2"], "c2", pads=[1, 1, 1, 1]), node("Add", ["c2", "x"], "s"),
             node("Relu", ["s"], "y")]
    m = make_model(nodes, {"x": ["N", c, 6, 6]}, {"y": None}, inits)
    g, rep, exported = run_passes(m, ["fuse_conv_add_relu"])
    assert ops(g) == {"FusedConv": 2}
    fused = [n for n in g.nodes()]
    assert [n["attrs"]["activation"][1] for n in fused] == [b"Relu", b"Relu"]
    assert len(fused[1]["inputs"]) == 4 and fused[1]["inputs"][3] == "x"
    assert collections.Counter(n.op_type for n in exported.graph.node) == {"Conv": 2, "Add": 1, "Relu": 2}


@pytest.mark.parametrize("act, attrs, extra", [
    ("Clip", {}, ["lo", "hi"]),
    ("LeakyRelu", {"alpha": 0.2}, []),
    ("Sigmoid", {}, []),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, []),
    ("HardSwish", {}, []),
    ("Gelu", {}, []),
    ("SiLU", {}, []),
])
def test_fuse_conv_activations(act, attrs, extra):
    inits = {"w": weight(5, 3, 3, 3), "b": weight(5), "lo": f32(-0.5), "hi": f32(0.7), "gw": weight(4, 5), "gb": weight(4)}
    opset = 20 if act == "Gelu" else OPSET
    if act == "SiLU":
        tail = [node("Sigmoid", ["c"], "sg"), node("Mul", ["c", "sg"], "a")]
        gtail = [node("Sigmoid", ["gm"], "gs"), node("Mul", ["gs", "gm"], "y")]
    else:
        tail = [node(act, ["c"] + extra, "a", **attrs)]
        gtail = [node(act, ["gm"] + extra, "y", **attrs)]
    nodes = ([node("Conv", ["x", "w", "b"], "c", pads=[1, 1, 1, 1])] + tail +
             [node("GlobalAveragePool", ["a"], "p"), node("Flatten", ["p"], "f"),
              node("Gemm", ["f", "gw", "gb"], "gm", transB=1)] + gtail)
    m = make_model(nodes, {"x": ["N", 3, 5, 5]}, {"y": None}, inits, opset=opset)
    g, _, _ = run_passes(m, ["fuse_conv_add_relu"])
    assert ops(g) == {"FusedConv": 1, "GlobalAveragePool": 1, "Flatten": 1, "FusedGemm": 1}
    names = {n["op_type"]: n["attrs"]["activation"][1] for n in g.nodes() if n["op_type"].startswith("Fused")}
    assert names == {"FusedConv": act.encode(), "FusedGemm": act.encode()}


def test_fuse_refusals():
    c = 4
    inits = {"w": weight(c, c, 3, 3), "w2": weight(c, c, 3, 3), "bias": weight(c, 1, 1)}
    nodes = [node("Conv", ["x", "w"], "c1", pads=[1, 1, 1, 1]), node("Relu", ["c1"], "r1"),
             node("Sigmoid", ["c1"], "s1"),                                   # c1 has two consumers
             node("Conv", ["x", "w2"], "c2", pads=[1, 1, 1, 1]),
             node("Add", ["c2", "g"], "y")]                                   # broadcast residual
    m = make_model(nodes, {"x": ["N", c, 5, 5], "g": ["N", c, 1, 1]}, {"r1": None, "s1": None, "y": None}, inits)
    g, rep, _ = run_passes(m, ["fuse_conv_add_relu"])
    assert ops(g) == {"Conv": 2, "Relu": 1, "Sigmoid": 1, "Add": 1}
    assert has_reason(rep, "the Conv output 'c1' has other users or is a graph output")
    assert has_reason(rep, "is not known to equal the conv output's")


# --- PassManager ------------------------------------------------------------


def conv_bn_relu_model():
    c = 4
    nodes = [node("Conv", ["x", "w"], "c", pads=[1, 1, 1, 1]), bn("bn", "c", "b"), node("Relu", ["b"], "y")]
    return make_model(nodes, {"x": ["N", 3, 6, 6]}, {"y": None}, {"w": weight(c, 3, 3, 3), **bn_params("bn", c)})


def test_default_pipeline_listed():
    names = [n for n, _ in pyengine._core.default_passes()]
    # float16 layers are widened first; then identities go before anything reads constants.
    assert names[:2] == ["widen_float16", "eliminate_identity"]
    for p in ("fold_constants", "eliminate_dead_code", "fold_bn_into_conv", "fuse_conv_add_relu",
              "reparam_branches", "fold_pad_into_conv", "prune_dead_channels", "merge_reshapes"):
        assert p in names
    assert names.index("fold_bn_into_conv") < names.index("reparam_branches") < names.index("fuse_conv_add_relu")
    assert names.index("fold_bn_into_conv") < names.index("restore_residuals") < names.index("prune_dead_channels")


def test_disable_and_stop_after():
    m = conv_bn_relu_model()
    graph, _ = onnx_io.graph_from_onnx(m)
    g, rep = optimize_graph(graph, disable=("fold_bn_into_conv",), verify=True)
    assert ops(g)["BatchNormalization"] == 1 and ops(g)["FusedConv"] == 0
    g0, rep0 = optimize_graph(graph, stop_after=0)
    assert ops(g0) == ops(graph) and rep0["stopped"]
    # Bisecting: the first passes up to fold_bn_into_conv fold the BN, the
    # fusion has not run yet.
    names = [n for n, _ in pyengine._core.default_passes()]
    g1, rep1 = optimize_graph(graph, stop_after=names.index("fold_bn_into_conv") + 1)
    assert ops(g1) == {"Conv": 1, "Relu": 1}
    assert ops(graph) == {"Conv": 1, "BatchNormalization": 1, "Relu": 1}  # the input graph is untouched


def test_unknown_pass_name():
    graph, _ = onnx_io.graph_from_onnx(conv_bn_relu_model())
    with pytest.raises(InvalidArgumentError, match="unknown pass 'fold_everything'"):
        optimize_graph(graph, ["fold_everything"])
    with pytest.raises(InvalidArgumentError, match="unknown pass"):
        optimize_graph(graph, disable=["nope"])


def test_report_contents_and_format():
    m = conv_bn_relu_model()
    out, rep = pyengine.optimize(m, report=True)
    assert rep["ops_before"] == {"Conv": 1, "BatchNormalization": 1, "Relu": 1}
    assert rep["ops_after"] == {"FusedConv": 1}
    assert rep["nodes_before"] == 3 and rep["nodes_after"] == 1
    fired = {p["name"]: p["count"] for p in rep["passes"] if p["count"]}
    assert fired == {"fold_bn_into_conv": 1, "fuse_conv_add_relu": 1}
    text = format_report(rep)
    assert "optimizer: 3 -> 1 nodes" in text and "fold_bn_into_conv: fired 1 time(s)" in text
    assert "ops before: BatchNormalization 1, Conv 1, Relu 1" in text


def test_refusals_reported_and_explained():
    # The Relu output is also a graph output: the fusion is refused, and the
    # report says why; explain=True adds the quiet no-match reasons.
    c = 4
    nodes = [node("Conv", ["x", "w"], "c"), node("Relu", ["c"], "y"), node("Sigmoid", ["y"], "z")]
    m = make_model(nodes, {"x": ["N", 3, 4, 4]}, {"c": None, "z": None}, {"w": weight(c, 3, 1, 1)})
    out, rep = pyengine.optimize(m, report=True, verify=True)
    assert any(r["pass"] == "fuse_conv_add_relu" and r["node"] == "y" and "'c' has other users" in r["reason"]
               for r in rep["refused"])
    assert "fuse_conv_add_relu: the Conv output 'c' has other users or is a graph output" in format_report(rep)
    _, rep2 = pyengine.optimize(m, report=True, explain=True)
    assert any(r["quiet"] for r in rep2["refused"]) and rep2["rewrites"] == []
    assert_same_outputs(m, out, random_feeds(m))


def test_iteration_cap_is_not_an_error():
    m = conv_bn_relu_model()
    graph, _ = onnx_io.graph_from_onnx(m)
    g, rep = optimize_graph(graph, max_iterations=1, max_rounds=1)
    assert rep["hit_cap"]
    g.verify()


# --- the public API ---------------------------------------------------------


def test_optimize_path_and_custom_ops(tmp_path):
    m = conv_bn_relu_model()
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    std = pyengine.optimize(str(path))
    assert isinstance(std, onnx.ModelProto)
    assert [n.op_type for n in std.graph.node] == ["Conv", "Relu"]
    assert all(o.domain != "pyengine" for o in std.opset_import)
    custom = pyengine.optimize(m, custom_ops=True)
    assert [(n.op_type, n.domain) for n in custom.graph.node] == [("FusedConv", "pyengine")]
    assert any(o.domain == "pyengine" for o in custom.opset_import)


def test_build_stores_report():
    m = conv_bn_relu_model()
    engine = pyengine.build(m, backend="cpu")
    rep = engine.metadata["optimizer"]
    assert rep["nodes_before"] == 3 and rep["nodes_after"] == 1
    assert "fold_bn_into_conv: fired 1" in engine.report()
    assert "optimizer" not in pyengine.build(m, backend="cpu", optimize=False).metadata


# --- the model zoo ----------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _zoo(name):
    import models

    m = models.ZOO[name]()
    out, rep = pyengine.optimize(m, report=True, verify=True)
    return m, out, rep


def _zoo_names():
    import models

    return list(models.ZOO)


@pytest.mark.parametrize("name", _zoo_names())
def test_zoo_model(name):
    import models

    m, out, rep = _zoo(name)
    onnx.checker.check_model(out, full_check=True)
    before = collections.Counter(n.op_type for n in m.graph.node)
    after = collections.Counter(n.op_type for n in out.graph.node)
    assert after["BatchNormalization"] == 0, rep["refused"]
    if name != "rm_block":  # (its RM blocks get their residual Adds back in the written model)
        assert len(out.graph.node) < len(m.graph.node), (before, after)
    assert rep["nodes_after"] < rep["nodes_before"]
    feeds = models.make_input(m, 3, seed=1)
    assert_same_outputs(m, out, feeds)


def test_zoo_rm_block_becomes_residual_blocks():
    m, out, rep = _zoo("rm_block")
    # 4 RM blocks -> 4 residual blocks: the hidden tensors and conv2's inputs
    # back to C channels, the residual fused into conv2 (half the conv work);
    # the strided block's projection becomes a 1x1 shortcut conv.
    assert rep["ops_after"]["FusedConv"] == 1 + 8 and rep["ops_after"]["Conv"] == 1 and "Add" not in rep["ops_after"]
    counts = {p["name"]: p["count"] for p in rep["passes"]}
    assert counts["restore_residuals"] == 4
    convs = {i.name: list(i.dims) for i in out.graph.initializer}
    widths = sorted(convs[n.input[1]] for n in out.graph.node if n.op_type == "Conv")
    assert widths == sorted([[16, 3, 3, 3]] + [[16, 16, 3, 3]] * 4 + [[32, 16, 3, 3], [32, 16, 1, 1]]
                            + [[32, 32, 3, 3]] * 3), widths


def test_zoo_repvgg_block_becomes_conv_relu():
    m, out, rep = _zoo("repvgg_block")
    ops_after = collections.Counter(n.op_type for n in out.graph.node)
    # 6 RepVGG units -> 6 Conv + Relu; the classifier head stays.
    assert ops_after["Conv"] == 6 and ops_after["Relu"] == 6 and ops_after["Add"] == 0
    assert rep["ops_after"]["FusedConv"] == 6
