"""Issue 12's family patterns in the optimizer: GELU subgraphs (fuse_gelu),
constant scalars next to convs (fold_bn_into_conv), squeeze-excitation as one
op (fuse_squeeze_excitation) and IBN's Split -> InstanceNorm | BatchNorm ->
Concat (fuse_channel_split_norm).

Each pattern: a tiny onnx.helper graph whose fused node count is asserted and
whose pyengine output (the real CPU kernels) matches onnxruntime on the
unfused graph (FP32 relative L2 <= 1e-5); refusals name their reason; and a
tiny PyTorch module exported with both exporters shows the pattern is found
in a real export.
"""

import io
import math
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyengine
from test_passes import f32, has_reason, make_model, node, ops, reasons, run_ort, run_passes, weight

ort = pytest.importorskip("onnxruntime")

REL_L2 = 1e-5


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def feeds_for(model, batch=2, seed=None):
    r = np.random.default_rng(seed)
    out = {}
    for v in model.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else batch for d in v.type.tensor_type.shape.dim]
        out[v.name] = r.standard_normal(dims).astype(np.float32)
    return out


def check_engine(model, feeds=None, **build):
    """Builds `model` with pyengine (CPU), compares every output with
    onnxruntime on the unfused model; returns (engine, optimizer report)."""
    feeds = feeds or feeds_for(model)
    engine = pyengine.build(model, backend="cpu", **build)
    ref = run_ort(model, feeds)
    out = engine.run(feeds)
    for k in ref:
        assert rel_l2(out[k], ref[k]) <= REL_L2, (k, rel_l2(out[k], ref[k]))
    return engine, engine.metadata.get("optimizer")


# --- torch export helpers -----------------------------------------------------


def torch_export(module, x, dynamo, opset=18):
    torch = pytest.importorskip("torch")
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            pytest.importorskip("onnxscript")
            prog = torch.onnx.export(module, (x,), dynamo=True, opset_version=opset, verbose=False)
            return prog.model_proto
        f = io.BytesIO()
        torch.onnx.export(module, (x,), f, dynamo=False, opset_version=min(opset, 17), input_names=["x"])
        return onnx.load_from_string(f.getvalue())


def check_export(model, x):
    """pyengine on the export vs the module's onnxruntime output."""
    feeds = {model.graph.input[0].name: x}
    return check_engine(model, feeds)


# --- GELU ---------------------------------------------------------------------

SQRT2 = np.float32(math.sqrt(2.0))


def gelu_erf_model(form):
    c = lambda name, v: (name, f32(v))  # noqa: E731
    if form == "torchscript":      # Mul(Mul(x, 1 + erf(x / sqrt2)), 0.5)
        nodes = [node("Div", ["x", "s2"], "d"), node("Erf", ["d"], "e"), node("Add", ["e", "one"], "a"),
                 node("Mul", ["x", "a"], "m"), node("Mul", ["m", "half"], "y")]
    elif form == "dynamo":         # Mul(x, Mul(0.5, 1 + erf))
        nodes = [node("Div", ["x", "s2"], "d"), node("Erf", ["d"], "e"), node("Add", ["e", "one"], "a"),
                 node("Mul", ["half", "a"], "m"), node("Mul", ["x", "m"], "y")]
    else:                          # hand-written: Mul(Mul(x, 0.5), 1 + erf(x * 0.7071))
        nodes = [node("Mul", ["x", "half"], "m"), node("Mul", ["x", "inv"], "d"), node("Erf", ["d"], "e"),
                 node("Add", ["one", "e"], "a"), node("Mul", ["m", "a"], "y")]
    inits = dict([c("s2", SQRT2), c("one", 1.0), c("half", 0.5), c("inv", 1 / math.sqrt(2.0))])
    return make_model(nodes, {"x": [2, 5, 7]}, {"y": None}, inits)


def gelu_tanh_model(form):
    if form == "pow":
        cube = [node("Pow", ["x", "three"], "c3")]
    else:   # TorchScript: x * (x * x)
        cube = [node("Mul", ["x", "x"], "sq"), node("Mul", ["x", "sq"], "c3")]
    nodes = cube + [node("Mul", ["k2", "c3"], "cc"), node("Add", ["x", "cc"], "s"), node("Mul", ["k1", "s"], "u"),
                    node("Tanh", ["u"], "t"), node("Add", ["one", "t"], "a"), node("Mul", ["x", "a"], "m"),
                    node("Mul", ["half", "m"], "y")]
    inits = {"three": f32(3.0), "k2": f32(0.044715), "k1": f32(math.sqrt(2 / math.pi)), "one": f32(1.0),
             "half": f32(0.5)}
    return make_model(nodes, {"x": [2, 5, 7]}, {"y": None}, inits)


@pytest.mark.parametrize("form", ["torchscript", "dynamo", "hand"])
def test_gelu_erf_forms(form):
    m = gelu_erf_model(form)
    g, rep, exported = run_passes(m, ["fuse_gelu"])
    assert ops(g) == {"Gelu": 1}
    gelu = [n for n in g.nodes() if n["op_type"] == "Gelu"][0]
    assert "approximate" not in gelu["attrs"] or gelu["attrs"]["approximate"][1] in ("none", b"none")
    _, rep = check_engine(m)
    assert rep["ops_after"] == {"Gelu": 1}


@pytest.mark.parametrize("form", ["pow", "mul"])
def test_gelu_tanh_forms(form):
    m = gelu_tanh_model(form)
    g, rep, exported = run_passes(m, ["fuse_gelu"])
    assert ops(g) == {"Gelu": 1}
    gelu = [n for n in g.nodes() if n["op_type"] == "Gelu"][0]
    assert gelu["attrs"]["approximate"][1] in ("tanh", b"tanh")
    _, rep = check_engine(m)
    assert rep["ops_after"] == {"Gelu": 1}


def test_gelu_after_conv_runs_in_its_epilogue():
    nodes = [node("Conv", ["x", "W", "B"], "c"), node("Div", ["c", "s2"], "d"), node("Erf", ["d"], "e"),
             node("Add", ["e", "one"], "a"), node("Mul", ["c", "a"], "m"), node("Mul", ["m", "half"], "y")]
    m = make_model(nodes, {"x": [1, 4, 6, 6]}, {"y": None},
                   {"W": weight(8, 4, 1, 1), "B": weight(8), "s2": SQRT2, "one": f32(1), "half": f32(0.5)})
    _, rep = check_engine(m)
    assert rep["ops_after"] == {"FusedConv": 1}


def test_gelu_refusals():
    # A wrong constant: 0.4 * x * (1 + erf(x / sqrt 2)) is not GELU.
    m = gelu_erf_model("torchscript")
    m.graph.initializer[2].CopyFrom(numpy_helper.from_array(f32(0.4), "half"))
    g, rep, _ = run_passes(m, ["fuse_gelu"])
    assert "Gelu" not in ops(g)
    assert has_reason(rep, "the outer factor is 0.4", "fuse_gelu"), reasons(rep)
    # 1 + erf(.) read by a second node.
    m = gelu_erf_model("torchscript")
    m.graph.node.append(node("Relu", ["a"], "r"))
    m.graph.output.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [2, 5, 7]))
    g, rep, _ = run_passes(m, ["fuse_gelu"])
    assert "Gelu" not in ops(g)
    assert has_reason(rep, "has other users", "fuse_gelu"), reasons(rep)
    # erf(x / 2): not GELU.
    m = gelu_erf_model("torchscript")
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(f32(2.0), "s2"))
    g, rep, _ = run_passes(m, ["fuse_gelu"])
    assert has_reason(rep, "not x / sqrt(2)", "fuse_gelu"), reasons(rep)
    # tanh form with the wrong cubic coefficient.
    m = gelu_tanh_model("pow")
    m.graph.initializer[1].CopyFrom(numpy_helper.from_array(f32(0.05), "k2"))
    g, rep, _ = run_passes(m, ["fuse_gelu"])
    assert has_reason(rep, "cubic coefficient", "fuse_gelu"), reasons(rep)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_torch_export(dynamo, approximate):
    torch = pytest.importorskip("torch")

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(4, 8, 1)
            self.act = torch.nn.GELU(approximate=approximate)
            self.conv2 = torch.nn.Conv2d(8, 4, 3, padding=1)

        def forward(self, x):
            return self.conv2(self.act(self.conv(x)))

    torch.manual_seed(0)
    x = torch.randn(1, 4, 6, 6)
    m = torch_export(Block(), x, dynamo, opset=18)
    before = ops_of(m)
    assert before.get("Erf", 0) + before.get("Tanh", 0) == 1, before
    _, rep = check_export(m, x.numpy())
    assert rep["passes"] and rep["ops_after"].get("FusedConv", 0) + rep["ops_after"].get("Conv", 0) == 2
    assert "Erf" not in rep["ops_after"] and "Tanh" not in rep["ops_after"], rep["ops_after"]
    if approximate == "none":   # erf GELU runs in the conv's epilogue
        assert rep["ops_after"] == {"FusedConv": 1, "Conv": 1} or rep["ops_after"] == {"FusedConv": 2}
    else:
        assert rep["ops_after"].get("Gelu", 0) + rep["ops_after"].get("FusedConv", 0) >= 2


def ops_of(model):
    import collections

    return collections.Counter(n.op_type for n in model.graph.node if n.op_type != "Constant")


# --- constant scalars next to convs (fold_bn_into_conv) -----------------------


def conv_model(pre=(), post=(), pads=1, cin=4, cout=6, extra_inits=None, res=False):
    """x -> pre nodes -> Conv -> post nodes -> y; pre ends in 'p', post starts at 'c'."""
    first = "p" if pre else "x"
    nodes = list(pre) + [node("Conv", [first, "W", "B"], "c" if post else "y", pads=[pads] * 4)] + list(post)
    inits = {"W": weight(cout, cin, 3, 3), "B": weight(cout)}
    inits.update(extra_inits or {})
    return make_model(nodes, {"x": [2, cin, 7, 7]}, {"y": None}, inits)


@pytest.mark.parametrize("shape", [(), (1,), (6, 1, 1)], ids=["scalar", "one", "per_channel"])
def test_scalar_mul_and_add_after_conv_fold(shape):
    r = np.random.default_rng()
    k = f32(r.uniform(0.5, 1.5, shape))
    bias = f32(r.normal(0, 1, shape))
    m = conv_model(post=[node("Mul", ["c", "k"], "s"), node("Add", ["s", "t"], "y")],
                   extra_inits={"k": k, "t": bias})
    g, rep, _ = run_passes(m, ["fold_bn_into_conv"])
    assert ops(g) == {"Conv": 1}
    check_engine(m)


@pytest.mark.parametrize("shape", [(), (4, 1, 1)], ids=["scalar", "per_channel"])
def test_scalar_mul_before_padded_conv_folds(shape):
    # A pure scale passes through zero padding (s * 0 = 0).
    k = f32(np.random.default_rng().uniform(0.5, 1.5, shape))
    m = conv_model(pre=[node("Mul", ["x", "k"], "p")], extra_inits={"k": k})
    g, rep, _ = run_passes(m, ["fold_bn_into_conv"])
    assert ops(g) == {"Conv": 1}
    check_engine(m)


def test_scalar_add_before_unpadded_conv_folds_and_padded_refuses():
    t = f32(0.7)
    m = conv_model(pre=[node("Add", ["x", "t"], "p")], pads=0, extra_inits={"t": t})
    g, rep, _ = run_passes(m, ["fold_bn_into_conv"])
    assert ops(g) == {"Conv": 1}
    check_engine(m)
    m = conv_model(pre=[node("Add", ["x", "t"], "p")], pads=1, extra_inits={"t": t})
    g, rep, _ = run_passes(m, ["fold_bn_into_conv"])
    assert ops(g) == {"Conv": 1, "Add": 1}
    assert has_reason(rep, "pads its input (padding zeros are not shifted", "fold_bn_into_conv"), reasons(rep)


def test_fixup_and_skipinit_block():
    # Fixup: x + bias1 -> conv1 (padded) -> relu -> + bias2 -> conv2 -> * scale -> + bias3 -> + x;
    # SkipInit on top: the branch * alpha before the residual add.
    c = 4
    nodes = [node("Add", ["x", "b1"], "x1"), node("Conv", ["x1", "W1"], "c1", pads=[0, 0, 0, 0]),
             node("Relu", ["c1"], "r1"), node("Add", ["r1", "b2"], "x2"),
             node("Conv", ["x2", "W2"], "c2", pads=[1, 1, 1, 1]), node("Mul", ["c2", "scale"], "s2"),
             node("Add", ["s2", "b3"], "s3"), node("Mul", ["s3", "alpha"], "s4"), node("Add", ["x", "s4"], "y")]
    inits = {"b1": f32(0.1), "W1": weight(c, c, 1, 1), "b2": f32(-0.2), "W2": weight(c, c, 3, 3),
             "scale": f32(0.8), "b3": f32(0.05), "alpha": f32(0.3)}
    m = make_model(nodes, {"x": [2, c, 6, 6]}, {"y": None}, inits)
    g, rep, _ = run_passes(m, ["fold_bn_into_conv"])
    # b1 folds forward into the unpadded conv1, scale/b3/alpha backward into
    # conv2; b2 stays (conv2 pads), with its reason.
    assert ops(g) == {"Conv": 2, "Relu": 1, "Add": 2}, ops(g)
    assert has_reason(rep, "padding zeros are not shifted", "fold_bn_into_conv")
    _, rep = check_engine(m)
    assert rep["ops_after"] == {"FusedConv": 2, "Add": 1}, rep["ops_after"]


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_scalar_torch_export(dynamo):
    torch = pytest.importorskip("torch")

    class Block(torch.nn.Module):
        """Fixup-style biases and scale, SkipInit alpha, stochastic depth's
        survival probability in its inference form."""

        def __init__(self):
            super().__init__()
            self.bias1a = torch.nn.Parameter(torch.tensor(0.1))
            self.conv1 = torch.nn.Conv2d(4, 4, 1, bias=False)
            self.bias2a = torch.nn.Parameter(torch.tensor(0.2))
            self.conv2 = torch.nn.Conv2d(4, 4, 3, padding=1, bias=False)
            self.scale = torch.nn.Parameter(torch.tensor(0.7))
            self.bias2b = torch.nn.Parameter(torch.tensor(-0.1))
            self.alpha = torch.nn.Parameter(torch.tensor(0.4))
            self.survival = 0.8

        def forward(self, x):
            out = torch.relu(self.conv1(x + self.bias1a))
            out = self.conv2(out * 1.0) * self.scale + self.bias2b   # bias2a left off: padded conv2
            return torch.relu(x + out * self.alpha * self.survival)

    torch.manual_seed(0)
    x = torch.randn(1, 4, 6, 6)
    m = torch_export(Block(), x, dynamo)
    _, rep = check_export(m, x.numpy())
    assert rep["ops_after"] == {"FusedConv": 2}, rep["ops_after"]
