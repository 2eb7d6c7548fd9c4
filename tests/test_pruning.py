"""Channel pruning (prune_dead_channels): constant channels left by zero BN
scales, removed from their producers and folded into their readers.

Tiny graphs (onnx.helper), one per rule and per refusal. Each runs the pass
alone (verify() after every sweep), writes the graph back as standard ONNX and
compares onnxruntime on it with onnxruntime on the unpruned model (relative
L2 <= 1e-5, fresh random inputs), and checks that the parameter count dropped
by exactly what the rule removes (or not at all, with the refusal's reason).
The graphs are "after BN folding": a pruned channel is a conv row of zeros
with its bias (beta) left, of either sign.

Then the polarization-pruned ResNet-50 of tests/torch_models.py, exported
with PyTorch's exporters: small form in the fast suite, full size marked slow.
"""

import collections
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyengine
from pyengine import onnx_io
from pyengine.optimizer import _keep_output_types, expand_custom_ops, optimize_graph

ort = pytest.importorskip("onnxruntime")

MAX_REL_L2 = 1e-5
OPSET = 17


# --- helpers ----------------------------------------------------------------


def rng():
    return np.random.default_rng()


def weight(*shape):
    return (rng().standard_normal(shape) * 0.5).astype(np.float32)


def node(op, ins, outs, name=None, **attrs):
    outs = [outs] if isinstance(outs, str) else outs
    return helper.make_node(op, ins, outs, name=name or outs[0], **attrs)


def make_model(nodes, inputs, outputs, inits):
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs]
    init = [numpy_helper.from_array(np.asarray(v), n) for n, v in inits.items()]
    m = helper.make_model(helper.make_graph(nodes, "g", ins, outs, initializer=init),
                          opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = 8
    inferred = {v.name: v.type for v in onnx.shape_inference.infer_shapes(m).graph.output}
    for o in m.graph.output:
        o.type.CopyFrom(inferred[o.name])
    return m


def run_ort(model, feeds):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def rel_l2(actual, expected):
    expected = expected.astype(np.float64)
    return float(np.linalg.norm(actual.astype(np.float64) - expected) / np.linalg.norm(expected))


def param_count(graph):
    """Elements of the constants the nodes read (weights and biases)."""
    shapes = {n: s for n, _, s, c in graph.values() if c}
    used = {i for n in graph.nodes() for i in n["inputs"] if i in shapes}
    return sum(int(np.prod(shapes[i])) for i in used)


def prune(model, passes=("prune_dead_channels",), batch=2):
    """Runs `passes`, checks the export against onnxruntime on `model`;
    returns (graph, report, parameters removed)."""
    graph, proto = onnx_io.graph_from_onnx(model)
    out, report = optimize_graph(graph, list(passes), verify=True)
    out.verify()
    exported = onnx_io.graph_to_onnx(out, opset=onnx_io.default_opset(proto))
    _keep_output_types(exported, proto)
    exported = expand_custom_ops(exported)
    onnx.checker.check_model(exported)
    feeds = {}
    for v in model.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else batch for d in v.type.tensor_type.shape.dim]
        feeds[v.name] = rng().standard_normal(dims).astype(np.float32)
    ref, got = run_ort(model, feeds), run_ort(exported, feeds)
    for k in ref:
        assert rel_l2(got[k], ref[k]) <= MAX_REL_L2, k
    # pyengine itself, default pipeline (the kernels on narrowed shapes, not only the export).
    engine = pyengine.build(model, backend="cpu", num_threads=1)
    mine = engine.run(feeds)
    for k in ref:
        assert rel_l2(mine[k], ref[k]) <= MAX_REL_L2, f"pyengine {k}"
    before = param_count(onnx_io.graph_from_onnx(model)[0])
    return out, report, before - param_count(out)


def reasons(report):
    return [r["reason"] for r in report["refused"] if r["pass"] == "prune_dead_channels"]


def has_reason(report, text):
    return any(text in r for r in reasons(report))


def zero_rows(w, b, rows, bias_values):
    """Prunes `rows` as a zero BN gamma does: W rows 0, bias = beta."""
    w[rows] = 0.0
    b[rows] = bias_values
    return w, b


def conv_shape(graph):
    return [graph.constant(n["inputs"][1]).shape for n in graph.nodes() if n["op_type"] in ("Conv", "FusedConv")]


# --- dead and constant channels between two convs ---------------------------


@pytest.mark.parametrize("fused", [False, True], ids=["relu_node", "fused_relu"])
def test_dead_channels_behind_relu(fused):
    """b <= 0 behind a Relu: dead, removed from the producer and from the padded 3x3 reader."""
    c, cout = 8, 5
    w, b = zero_rows(weight(c, 3, 3, 3), weight(c), [1, 4, 6], [-0.3, 0.0, -1.2])
    inits = {"w": w, "b": b, "v": weight(cout, c, 3, 3), "vb": weight(cout)}
    nodes = [node("Conv", ["x", "w", "b"], "c", pads=[1, 1, 1, 1]), node("Relu", ["c"], "r"),
             node("Conv", ["r", "v", "vb"], "y", pads=[1, 1, 1, 1])]
    m = make_model(nodes, {"x": ["N", 3, 7, 7]}, ["y"], inits)
    passes = ["fuse_conv_add_relu", "prune_dead_channels"] if fused else ["prune_dead_channels"]
    g, rep, removed = prune(m, passes)
    # 3 producer rows (27 weights + 1 bias each) and 3 reader columns (5 x 9).
    assert removed == 3 * (27 + 1) + 3 * cout * 9
    assert [n["op_type"] for n in g.nodes()][0] == ("FusedConv" if fused else "Conv")
    assert [s[:2] for s in conv_shape(g)] == [(5, 3), (cout, 5)]


def test_constant_channels_fold_into_1x1_bias():
    """b > 0 behind a Relu: the constant relu(b) moves into the 1x1 reader's bias;
    b <= 0 channels are dead. All five go."""
    c, cout = 8, 6
    w, b = zero_rows(weight(c, 3, 3, 3), weight(c), [0, 2, 3, 5, 7], [0.7, -0.4, 1.5, 0.2, -2.0])
    inits = {"w": w, "b": b, "v": weight(cout, c, 1, 1)}  # reader without a bias: one is created
    nodes = [node("Conv", ["x", "w", "b"], "c", pads=[1, 1, 1, 1]), node("Relu", ["c"], "r"),
             node("Conv", ["r", "v"], "y")]
    m = make_model(nodes, {"x": ["N", 3, 6, 6]}, ["y"], inits)
    g, rep, removed = prune(m)
    assert removed == 5 * (27 + 1) + 5 * cout - cout  # the reader gains a bias of cout
    assert [s[:2] for s in conv_shape(g)] == [(3, 3), (cout, 3)]


def test_constant_channels_without_relu_fold_into_unpadded_3x3():
    """No activation: b[o] of either sign is a constant; an unpadded 3x3 reader absorbs it."""
    c, cout = 6, 4
    w, b = zero_rows(weight(c, 3, 3, 3), weight(c), [1, 4], [0.9, -0.6])
    inits = {"w": w, "b": b, "v": weight(cout, c, 3, 3), "vb": weight(cout)}
    nodes = [node("Conv", ["x", "w", "b"], "c", pads=[1, 1, 1, 1]),
             node("Conv", ["c", "v", "vb"], "y", strides=[2, 2])]
    m = make_model(nodes, {"x": ["N", 3, 9, 9]}, ["y"], inits)
    _, _, removed = prune(m)
    assert removed == 2 * (27 + 1) + 2 * cout * 9


def test_sigmoid_constant_into_1x1():
    """Any elementwise activation maps a constant channel to a constant (sigmoid(b))."""
    c = 5
    w, b = zero_rows(weight(c, 3, 1, 1), weight(c), [2], [-0.5])
    inits = {"w": w, "b": b, "v": weight(4, c, 1, 1), "vb": weight(4)}
    nodes = [node("Conv", ["x", "w", "b"], "c"), node("Sigmoid", ["c"], "s"), node("Conv", ["s", "v", "vb"], "y")]
    _, _, removed = prune(make_model(nodes, {"x": ["N", 3, 5, 5]}, ["y"], inits))
    assert removed == (3 + 1) + 4


def test_refused_constant_into_padded_conv():
    """b > 0 behind a Relu into a padded 3x3: the border would differ; dead ones still go."""
    c = 6
    w, b = zero_rows(weight(c, 3, 3, 3), weight(c), [1, 3], [0.5, -0.5])
    inits = {"w": w, "b": b, "v": weight(4, c, 3, 3)}
    nodes = [node("Conv", ["x", "w", "b"], "c", pads=[1, 1, 1, 1]), node("Relu", ["c"], "r"),
             node("Conv", ["r", "v"], "y", pads=[1, 1, 1, 1])]
    g, rep, removed = prune(make_model(nodes, {"x": ["N", 3, 6, 6]}, ["y"], inits))
    assert removed == (27 + 1) + 4 * 9  # channel 3 (dead) only
    assert has_reason(rep, "channel 1 is the constant 0.5 (not 0) where padded node 'y' (Conv) reads it"), reasons(rep)
    assert [s[:2] for s in conv_shape(g)] == [(5, 3), (4, 5)]


@pytest.mark.parametrize("case, reason", [
    ("grouped", "grouped node 'y' (Conv) (group 2)"),
    ("graph_output", "'r' is a graph output"),
    ("concat", "read by node 'cat' (Concat), which this pass cannot narrow"),
    ("shared_weight", "is shared with another node"),
    ("all", "every channel of 'c' is constant"),
])
def test_refusals(case, reason):
    c = 6
    w, b = zero_rows(weight(c, 3, 3, 3), weight(c), [1, 4], [-0.1, -0.2])
    if case == "all":
        w[:] = 0.0
        b[0] = 0.5  # some channel nonzero after the Relu, so the output is not all zero
    inits = {"w": w, "b": b, "v": weight(4, c // (2 if case == "grouped" else 1), 1, 1)}
    nodes = [node("Conv", ["x", "w", "b"], "c", pads=[1, 1, 1, 1]), node("Relu", ["c"], "r")]
    outputs = ["y"]
    if case == "grouped":
        nodes.append(node("Conv", ["r", "v"], "y", group=2))
    elif case == "concat":
        nodes += [node("Conv", ["r", "v"], "y"), node("Concat", ["r", "x"], "cat", axis=1)]
        outputs.append("cat")
    elif case == "shared_weight":
        nodes += [node("Conv", ["r", "v"], "y"), node("Conv", ["r", "v"], "y2")]
        outputs.append("y2")
    else:
        nodes.append(node("Conv", ["r", "v"], "y"))
    if case == "graph_output":
        outputs.append("r")
    g, rep, removed = prune(make_model(nodes, {"x": ["N", 3, 5, 5]}, outputs, inits))
    assert removed == 0
    assert has_reason(rep, reason), reasons(rep)


@pytest.mark.parametrize("pool, attrs, folds", [
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, True),  # pads are -inf
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, True),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}, False),
])
def test_constant_through_pool(pool, attrs, folds):
    """A stem's constant channel passes a max pool (or an average pool that
    does not count its padding) unchanged and folds into the 1x1 reader; an
    average pool that counts zero padding changes it at the border (refused)."""
    c = 6
    w, b = zero_rows(weight(c, 3, 3, 3), weight(c), [0, 4], [0.6, 1.1])
    inits = {"w": w, "b": b, "v": weight(4, c, 1, 1), "vb": weight(4)}
    nodes = [node("Conv", ["x", "w", "b"], "c", pads=[1, 1, 1, 1]), node("Relu", ["c"], "r"),
             node(pool, ["r"], "p", **attrs), node("Conv", ["p", "v", "vb"], "y")]
    g, rep, removed = prune(make_model(nodes, {"x": ["N", 3, 9, 9]}, ["y"], inits))
    if folds:
        assert removed == 2 * (27 + 1) + 2 * 4
    else:
        assert removed == 0
        assert has_reason(rep, "channel 0 of 'p' is not a constant"), reasons(rep)


# --- residual stages ---------------------------------------------------------


def bottleneck_stage(zero_ds=True, zero_second=True, reader_pads=0, c=8, mid=4):
    """x -> [1x1 -> relu -> 1x1 conv3] + 1x1/2 shortcut -> relu -> y1;
    y1 -> [1x1 -> relu -> 1x1 conv3'] + y1 -> relu -> y2 -> 1x1 head (and a
    GlobalAveragePool -> Flatten -> Gemm classifier on y2).
    Channels {1, 5, 6} of conv3 (and of the shortcut / conv3' as asked) are
    zero rows with biases of both signs, as pruned bn3 and downsample BNs leave them."""
    rows = [1, 5, 6]
    w3, b3 = zero_rows(weight(c, mid, 1, 1), weight(c), rows, [0.4, -0.3, 0.2])
    wd, bd = weight(c, 3, 1, 1), weight(c)
    if zero_ds:
        zero_rows(wd, bd, rows, [0.1, 0.2, -0.6])
    w3b, b3b = weight(c, mid, 1, 1), weight(c)
    if zero_second:
        zero_rows(w3b, b3b, rows, [-0.2, 0.5, 0.3])
    k = 1 + 2 * reader_pads
    inits = {"w1": weight(mid, 3, 3, 3), "w3": w3, "b3": b3, "wd": wd, "bd": bd,
             "w1b": weight(mid, c, k, k), "b1b": weight(mid), "w3b": w3b, "b3b": b3b,
             "wh": weight(5, c, 1, 1), "gw": weight(7, c), "gb": weight(7)}
    p = [reader_pads] * 4
    nodes = [node("Conv", ["x", "w1"], "a1", pads=[1, 1, 1, 1], strides=[2, 2]), node("Relu", ["a1"], "r1"),
             node("Conv", ["r1", "w3", "b3"], "c3"),
             node("Conv", ["x", "wd", "bd"], "ds", strides=[2, 2]),
             node("Add", ["c3", "ds"], "s1"), node("Relu", ["s1"], "y1"),
             node("Conv", ["y1", "w1b", "b1b"], "a2", pads=p), node("Relu", ["a2"], "r2"),
             node("Conv", ["r2", "w3b", "b3b"], "c3b"),
             node("Add", ["c3b", "y1"], "s2"), node("Relu", ["s2"], "y2"),
             node("Conv", ["y2", "wh"], "head"),
             node("GlobalAveragePool", ["y2"], "gap"), node("Flatten", ["gap"], "flat"),
             node("Gemm", ["flat", "gw", "gb"], "logits", transB=1)]
    return make_model(nodes, {"x": ["N", 3, 8, 8]}, ["head", "logits"], inits), c, mid


def test_residual_stage_pruned_when_every_producer_agrees():
    """conv3, the shortcut and conv3' all zero in channels {1, 5, 6}: the whole
    residual stream loses them; the constants fold into conv1' (1x1), the head
    conv (1x1) and the classifier Gemm."""
    m, c, mid = bottleneck_stage()
    g, rep, removed = prune(m)
    rows = 3
    expected = (rows * (mid + 1)      # conv3 rows
                + rows * (3 + 1)      # shortcut rows
                + rows * (mid + 1)    # conv3' rows
                + rows * mid          # conv1' columns (1x1)
                + rows * 5            # head columns (gains a bias of 5)
                - 5
                + rows * 7)           # Gemm columns
    assert removed == expected, (removed, expected)
    gemm = [n for n in g.nodes() if n["op_type"] == "Gemm"][0]
    assert g.constant(gemm["inputs"][1]).shape == (7, c - rows)


def test_residual_refused_when_one_branch_computes_the_channel():
    m, _, _ = bottleneck_stage(zero_ds=False)
    g, rep, removed = prune(m)
    assert removed == 0
    assert has_reason(rep, "node 'ds' (Conv) computes it into 'ds'"), reasons(rep)
    assert has_reason(rep, "every producer agrees"), reasons(rep)


def test_residual_refused_when_a_later_block_computes_the_channel():
    m, _, _ = bottleneck_stage(zero_second=False)
    g, rep, removed = prune(m)
    assert removed == 0
    assert has_reason(rep, "node 'c3b' (Conv) computes it"), reasons(rep)


def test_residual_refused_into_padded_reader():
    """The stream's channels reach a padded 3x3 conv1': channel 1 is the
    constant relu(0.4 + 0.1) there and stays (with the reason); channels 5
    and 6 are relu(<= 0) = 0 there, dead, and go (they are constants again
    after conv3', which the unpadded head and Gemm absorb)."""
    m, c, mid = bottleneck_stage(reader_pads=1)
    g, rep, removed = prune(m)
    assert removed == 2 * (mid + 1) + 2 * (3 + 1) + 2 * (mid + 1) + 2 * mid * 9 + 2 * 5 - 5 + 2 * 7
    assert has_reason(rep, "where padded node 'a2' (Conv) reads it"), reasons(rep)


# --- depthwise convs ---------------------------------------------------------


@pytest.mark.parametrize("dw_pads", [0, 1])
def test_dead_channel_removes_depthwise_group(dw_pads):
    """A dead input channel of a depthwise conv: that group goes, its output is
    the constant bdw[o] (padding or not: zero input, zero padding), which
    folds into the 1x1 reader behind the Relu."""
    c = 8
    w, b = zero_rows(weight(c, 3, 1, 1), weight(c), [0, 3, 7], [-0.2, -1.0, 0.0])
    inits = {"w": w, "b": b, "dw": weight(c, 1, 3, 3), "dwb": weight(c), "v": weight(6, c, 1, 1), "vb": weight(6)}
    p = [dw_pads] * 4
    nodes = [node("Conv", ["x", "w", "b"], "c"), node("Relu", ["c"], "r"),
             node("Conv", ["r", "dw", "dwb"], "d", group=c, pads=p), node("Relu", ["d"], "rd"),
             node("Conv", ["rd", "v", "vb"], "y")]
    g, rep, removed = prune(make_model(nodes, {"x": ["N", 3, 7, 7]}, ["y"], inits))
    assert removed == 3 * (3 + 1) + 3 * (9 + 1) + 3 * 6
    dw = [n for n in g.nodes() if n["attrs"].get("group", (0, 1))[1] != 1]
    assert len(dw) == 1 and dw[0]["attrs"]["group"][1] == c - 3
    assert g.constant(dw[0]["inputs"][1]).shape == (c - 3, 1, 3, 3)


def test_depthwise_constant_input_with_padding_refused():
    """A nonzero constant into a padded depthwise conv is not constant at the border."""
    c = 6
    w, b = zero_rows(weight(c, 3, 1, 1), weight(c), [2], [0.8])
    inits = {"w": w, "b": b, "dw": weight(c, 1, 3, 3), "v": weight(4, c, 1, 1)}
    nodes = [node("Conv", ["x", "w", "b"], "c"), node("Relu", ["c"], "r"),
             node("Conv", ["r", "dw"], "d", group=c, pads=[1, 1, 1, 1]), node("Conv", ["d", "v"], "y")]
    g, rep, removed = prune(make_model(nodes, {"x": ["N", 3, 6, 6]}, ["y"], inits))
    assert removed == 0
    assert has_reason(rep, "channel 2 of 'd' is not a constant"), reasons(rep)


def test_depthwise_multiplier_refused():
    """group == Cin with two outputs per group: a channel cannot leave alone."""
    c = 4
    w, b = zero_rows(weight(c, 3, 1, 1), weight(c), [1], [-0.5])
    inits = {"w": w, "b": b, "dw": weight(2 * c, 1, 3, 3), "v": weight(3, 2 * c, 1, 1)}
    nodes = [node("Conv", ["x", "w", "b"], "c"), node("Relu", ["c"], "r"),
             node("Conv", ["r", "dw"], "d", group=c, pads=[1, 1, 1, 1]), node("Conv", ["d", "v"], "y")]
    g, rep, removed = prune(make_model(nodes, {"x": ["N", 3, 6, 6]}, ["y"], inits))
    assert removed == 0
    assert has_reason(rep, "grouped node 'd' (Conv) (group 4)"), reasons(rep)


def test_depthwise_constant_input_unpadded_folds():
    c = 6
    w, b = zero_rows(weight(c, 3, 1, 1), weight(c), [2, 5], [0.8, 0.3])
    inits = {"w": w, "b": b, "dw": weight(c, 1, 3, 3), "v": weight(4, c, 1, 1)}
    nodes = [node("Conv", ["x", "w", "b"], "c"), node("Relu", ["c"], "r"),
             node("Conv", ["r", "dw"], "d", group=c), node("Conv", ["d", "v"], "y")]
    g, rep, removed = prune(make_model(nodes, {"x": ["N", 3, 6, 6]}, ["y"], inits))
    # producer rows, depthwise groups (no bias), reader columns; the reader gains a bias of 4.
    assert removed == 2 * (3 + 1) + 2 * 9 + 2 * 4 - 4


# --- the polarization-pruned ResNet-50, as PyTorch exports it ---------------


def _torch():
    return pytest.importorskip("torch")


def export(model, path, exporter, image):
    """Exports once per path (the module's tests share the small exports)."""
    torch = _torch()
    if os.path.exists(path):
        return path
    example = torch.randn(1, *image)
    if exporter == "torchscript":
        torch.onnx.export(model, (example,), path, dynamo=False, opset_version=17, do_constant_folding=False,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    else:
        pytest.importorskip("onnxscript")
        torch.onnx.export(model, (example,), path, dynamo=True, opset_version=18, external_data=False,
                          input_names=["input"], output_names=["logits"], verbose=False,
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))
    return path


def conv_gemm_params(proto):
    """Elements of the Conv/Gemm weights and biases of an ONNX model."""
    inits = {t.name: int(np.prod(t.dims)) for t in proto.graph.initializer}
    return sum(inits.get(i, 0) for n in proto.graph.node if n.op_type in ("Conv", "Gemm") for i in n.input[1:3])


def expected_pruned_params(model):
    """What prune_dead_channels must leave of a polarize_()d ResNet, from the
    rules: a zero bn1 scale goes when its beta is <= 0 (dead behind the Relu;
    a positive constant cannot enter the padded 3x3 conv2); every zero bn2
    scale goes (conv3 is 1x1: its constant moves into conv3's bias); a
    residual-stream channel goes when every block's bn3 and the downsample BN
    of the stage zero it (the constants fold into the 1x1 conv1s and
    downsample convs that read the stream). Every conv has a bias after BN
    folding."""
    def conv(cout, cin, k):
        return cout * cin * k * k + cout

    def stream_keep(stage):
        dead = np.ones(stage[0].bn3.num_features, dtype=bool)
        for block in stage:
            dead &= block.bn3.weight.detach().numpy() == 0
            if block.downsample is not None:
                dead &= block.downsample[1].weight.detach().numpy() == 0
        return int((~dead).sum())

    total = conv(64, 3, 7)
    cin = 64
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        cout = stream_keep(stage)
        for block in stage:
            g1, b1 = block.bn1.weight.detach().numpy(), block.bn1.bias.detach().numpy()
            p1 = int(np.sum(~((g1 == 0) & (b1 <= 0))))
            p2 = int(np.sum(block.bn2.weight.detach().numpy() != 0))
            total += conv(p1, cin, 1) + conv(p2, p1, 3) + conv(cout, p2, 1)
            if block.downsample is not None:
                total += conv(cout, cin, 1)
            cin = cout
    return total + model.fc.weight.numel() + model.fc.bias.numel()


SMALL = (3, 64, 64)


@pytest.fixture(scope="module")
def small_pruned(tmp_path_factory):
    _torch()
    from torch_models import FAMILIES

    model = FAMILIES["resnet50_pruned"].build(False)
    return model, tmp_path_factory.mktemp("pruned")


def _check_pruned_resnet(model, path, image, batches=(1, 2)):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    optimized = pyengine.optimize(path)
    before = conv_gemm_params(pyengine.optimize(path, disable=("prune_dead_channels",)))
    after = conv_gemm_params(optimized)
    assert after == expected_pruned_params(model), (before, after)
    assert after < 0.6 * before, (before, after)
    engine = pyengine.build(path, backend="cpu", num_threads=2)
    for b in batches:
        x = rng().standard_normal((b, *image)).astype(np.float32)
        out = engine.run({"input": x})["logits"]
        (ref,) = session.run(None, {"input": x})
        assert rel_l2(out, ref) <= MAX_REL_L2, f"batch {b}"
    return engine


@pytest.mark.torch
@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_pruned_resnet50_small(small_pruned, exporter):
    """Both exporters: the pruned channels go (exact parameter count), the
    outputs match onnxruntime on the exported (unpruned) file."""
    model, tmp = small_pruned
    path = export(model, str(tmp / f"{exporter}.onnx"), exporter, SMALL)
    _check_pruned_resnet(model, path, SMALL)


@pytest.mark.torch
def test_pruned_resnet50_int8_and_plan(small_pruned, tmp_path):
    """INT8 on the pruned graph: the quantize pipeline prunes before Q/DQ
    placement, so every QConv's per-channel scales follow its narrowed
    weight; INT8 stays close to FP32, and both plans survive save/load."""
    model, tmp = small_pruned
    path = export(model, str(tmp / "torchscript.onnx"), "torchscript", SMALL)
    fp32 = pyengine.build(path, backend="cpu", num_threads=2)
    calib = rng().standard_normal((16, *SMALL)).astype(np.float32)
    int8 = pyengine.build(path, backend="cpu", precision="int8", calibration_data=calib, num_threads=2,
                          progress=False)
    ops = collections.Counter(n["op_type"] for n in int8._graph.nodes())
    assert ops["QConv"] >= 50, ops
    widths = sorted(int8._graph.constant(n["inputs"][1]).shape[0] for n in int8._graph.nodes()
                    if n["op_type"] == "QConv")
    fp_widths = sorted(fp32._graph.constant(n["inputs"][1]).shape[0] for n in fp32._graph.nodes()
                       if n["op_type"] in ("Conv", "FusedConv"))
    assert widths == fp_widths  # the int8 graph is the pruned one
    x = rng().standard_normal((4, *SMALL)).astype(np.float32)
    ref = fp32.run({"input": x})["logits"]
    got = int8.run({"input": x})["logits"]
    assert rel_l2(got, ref) < 0.1, rel_l2(got, ref)
    for name, eng in (("fp32", fp32), ("int8", int8)):
        plan = str(tmp_path / f"{name}.plan")
        eng.save(plan)
        again = pyengine.load(plan, num_threads=2)
        np.testing.assert_array_equal(again.run({"input": x})["logits"], eng.run({"input": x})["logits"])


@pytest.mark.torch
@pytest.mark.slow
def test_pruned_resnet50_full(tmp_path):
    """The full-size form (224x224, 1000 classes), TorchScript export."""
    _torch()
    from torch_models import FAMILIES

    model = FAMILIES["resnet50_pruned"].build(True)
    path = export(model, str(tmp_path / "full.onnx"), "torchscript", (3, 224, 224))
    engine = _check_pruned_resnet(model, path, (3, 224, 224), batches=(1,))
    plan = str(tmp_path / "full.plan")
    engine.save(plan)
    x = rng().standard_normal((1, 3, 224, 224)).astype(np.float32)
    np.testing.assert_array_equal(pyengine.load(plan).run({"input": x})["logits"], engine.run({"input": x})["logits"])
