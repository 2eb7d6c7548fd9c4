"""NaN and Inf through fused activations, pooling, reductions and softmax, on
every ISA tier the CPU has (ref, avx2, avx512), against onnxruntime.

- Fused activations (Conv + Relu/Clip/LeakyRelu/Sigmoid/HardSigmoid/
  HardSwish/Gelu/SiLU, fused by the optimizer into one FusedConv): with a
  NaN, +Inf or -Inf input pixel the non-finite pattern of the output (which
  elements are NaN, +Inf, -Inf) must equal onnxruntime's exactly, and the
  finite elements agree within 1e-4.
- Fused and standalone activations give bit-identical results on each tier:
  they run the same vector function (cpu/simd/vec_*.h).
- ResNet-18 (the optimized plan) with one NaN/Inf pixel: as many non-finite
  logits as onnxruntime (it has 1000/1000).
- Pooling / reductions / softmax follow numpy's semantics (NaN propagates
  through max and min whatever its position, as the ONNX reference does);
  onnxruntime's MaxPool/ReduceMax/GlobalMaxPool keep or drop a NaN by its
  position, so against onnxruntime we check that every NaN it reports is
  NaN here too, and everything else against numpy.
"""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyengine
from pyengine import _core
from conftest import tier_params

ort = pytest.importorskip("onnxruntime")

TIER_PARAMS = tier_params()


@pytest.fixture
def tier(request):
    prev = _core.isa_cap()
    _core.set_isa_cap(request.param)
    yield request.param
    _core.set_isa_cap(prev)


def _ort(model):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _masks(y):
    return np.isnan(y), np.isposinf(y), np.isneginf(y)


def _assert_same_nonfinite(got, want, rtol=1e-4, atol=1e-5):
    for g, w, what in zip(_masks(got), _masks(want), ("NaN", "+Inf", "-Inf")):
        assert np.array_equal(g, w), f"{what} pattern differs: {int(g.sum())} here vs {int(w.sum())} in onnxruntime"
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=rtol, atol=atol)


def _bitwise_equal(a, b):
    return np.array_equal(a.view(np.uint32), b.view(np.uint32))


ACTS = ["Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Gelu", "SiLU"]


def _conv_act_model(act, cin=3, cout=19, hw=9, k=3, group=1):
    rng = np.random.default_rng(7)
    w = (rng.standard_normal((cout, cin // group, k, k)) * 0.3).astype(np.float32)
    b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")]
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[k // 2] * 4, group=group)]
    if act == "Clip":
        inits += [numpy_helper.from_array(np.array(-0.5, np.float32), "lo"),
                  numpy_helper.from_array(np.array(0.75, np.float32), "hi")]
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
    elif act == "SiLU":
        nodes += [helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])]
    elif act == "LeakyRelu":
        nodes.append(helper.make_node("LeakyRelu", ["c"], ["y"], alpha=0.07))
    elif act == "HardSigmoid":
        nodes.append(helper.make_node("HardSigmoid", ["c"], ["y"], alpha=0.3, beta=0.4))
    else:
        nodes.append(helper.make_node(act, ["c"], ["y"]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", cin, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", cout, hw, hw])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)], ir_version=9)


def _special_input(value, seed, shape=(1, 3, 9, 9)):
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    h, w = shape[2], shape[3]
    x[0, 1, h // 2, w // 2] = value
    x[0, 0, 0, w - 1] = value  # a corner too: the column/row tails of the kernels
    return x


# Conv paths: (cin, cout, hw, k, group). 9x9 outputs leave a 1-column tail
# (81 = 5 * 16 + 1: the narrow-column kernel), 11x11 a 9-column one.
CONV_PATHS = {
    "im2col_tail1": (3, 21, 9, 3, 1),
    "im2col_tail9": (3, 21, 11, 3, 1),
    "winograd": (16, 21, 11, 3, 1),
    "pointwise": (17, 21, 9, 1, 1),
    "depthwise": (16, 16, 11, 3, 16),
    "depthwise_rows": (24, 24, 7, 3, 24),  # AVX-512: two rows of 7 per tile, a channel tail of 8
    "grouped": (16, 24, 11, 3, 4),
    "grouped_oc": (32, 32, 11, 3, 2),  # 16 channels per group: conv_grouped_oc_f32_avx512
}


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "+inf", "-inf"])
@pytest.mark.parametrize("path", list(CONV_PATHS))
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("tier", TIER_PARAMS, indirect=True)
def test_fused_activation_nonfinite_matches_onnxruntime(tier, act, path, value):
    cin, cout, hw, k, group = CONV_PATHS[path]
    model = _conv_act_model(act, cin=cin, cout=cout, hw=hw, k=k, group=group)
    eng = pyengine.build(model)
    assert "FusedConv" in eng.graph_text(), f"Conv + {act} was not fused:\n{eng.graph_text()}"
    x = _special_input(value, seed=1, shape=(1, cin, hw, hw))
    got = eng(x)
    want = _ort(model).run(None, {"x": x})[0]
    if value != value:
        assert np.isnan(want).any()  # the case is not trivial
    _assert_same_nonfinite(got, want)


@pytest.mark.parametrize("path", list(CONV_PATHS))
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("tier", TIER_PARAMS, indirect=True)
def test_fused_and_standalone_activation_bit_identical(tier, act, path):
    cin, cout, hw, k, group = CONV_PATHS[path]
    model = _conv_act_model(act, cin=cin, cout=cout, hw=hw, k=k, group=group)
    fused = pyengine.build(model)
    plain = pyengine.build(model, optimize=False)
    assert "FusedConv" in fused.graph_text() and "FusedConv" not in plain.graph_text()
    x = np.random.default_rng(3).standard_normal((2, cin, hw, hw)).astype(np.float32) * 3
    x[0, 2, 5, 5] = np.nan
    x[1, 0, 3, 3] = np.inf
    a, b = fused(x), plain(x)
    assert _bitwise_equal(a, b), f"max |diff| {np.nanmax(np.abs(a - b))}"


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "+inf", "-inf"])
@pytest.mark.parametrize("tier", TIER_PARAMS, indirect=True)
def test_resnet18_one_nonfinite_pixel(tier, value):
    from pyengine import zoo

    model = zoo.build_model("resnet18", image_size=64)
    eng = pyengine.build(model)
    x = zoo.make_input(model, 1, seed=5)["input"].copy()
    x[0, 0, 31, 31] = value
    got = eng(x)
    want = _ort(model).run(None, {"input": x})[0]
    n_want = int((~np.isfinite(want)).sum())
    assert int((~np.isfinite(got)).sum()) == n_want, (int((~np.isfinite(got)).sum()), n_want)
    if value != value:
        assert n_want == want.size  # onnxruntime: every logit NaN
        assert np.isnan(got).all()


# -- pooling, reductions, softmax ---------------------------------------------------------------------


def _single_op(op, shape, attrs, extra_inits=()):
    inputs = ["x"] + [name for name, _ in extra_inits]
    inits = [numpy_helper.from_array(v, n) for n, v in extra_inits]
    g = helper.make_graph([helper.make_node(op, inputs, ["y"], **attrs)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def _windows(x, k, s, pad, fill):
    """[N, C, OH, OW, k*k] sliding windows of a padded NCHW array."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=fill)
    n, c, h, w = xp.shape
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    out = np.empty((n, c, oh, ow, k * k), np.float32)
    for i in range(k):
        for j in range(k):
            out[..., i * k + j] = xp[:, :, i:i + s * oh:s, j:j + s * ow:s]
    return out


SPECIALS = [np.nan, np.inf, -np.inf]
SPECIAL_IDS = ["nan", "+inf", "-inf"]


def _pool_input(value, shape=(2, 3, 13, 21), seed=2):
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    # Every position of a 3x3/2 window and every lane of a row (tails too).
    x[0, 0, 0, 0] = value
    x[0, 1, 5, 9] = value
    x[0, 2, 12, 20] = value
    x[1, 0, 6, 16] = value
    x[1, 2, 7, 3] = value
    return x


@pytest.mark.parametrize("value", SPECIALS, ids=SPECIAL_IDS)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("tier", TIER_PARAMS, indirect=True)
def test_maxpool_nonfinite(tier, stride, value):
    model = _single_op("MaxPool", [2, 3, 13, 21], dict(kernel_shape=[3, 3], strides=[stride, stride], pads=[1, 1, 1, 1]))
    x = _pool_input(value)
    got = pyengine.build(model)(x)
    win = _windows(x, 3, stride, 1, -np.inf)
    want = np.max(win, axis=-1)  # numpy: NaN propagates
    assert np.array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got[~np.isnan(want)], want[~np.isnan(want)])
    ort_y = _ort(model).run(None, {"x": x})[0]
    assert not (np.isnan(ort_y) & ~np.isnan(got)).any(), "a NaN onnxruntime reports is missing"


@pytest.mark.parametrize("value", SPECIALS, ids=SPECIAL_IDS)
@pytest.mark.parametrize("tier", TIER_PARAMS, indirect=True)
def test_average_pool_nonfinite(tier, value):
    model = _single_op("AveragePool", [2, 3, 13, 21], dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x = _pool_input(value)
    _assert_same_nonfinite(pyengine.build(model)(x), _ort(model).run(None, {"x": x})[0])


@pytest.mark.parametrize("value", SPECIALS, ids=SPECIAL_IDS)
@pytest.mark.parametrize("op", ["GlobalMaxPool", "GlobalAveragePool"])
@pytest.mark.parametrize("tier", TIER_PARAMS, indirect=True)
def test_global_pool_nonfinite(tier, op, value):
    model = _single_op(op, [2, 3, 13, 21], {})
    x = _pool_input(value)
    got = pyengine.build(model)(x)
    red = np.max if op == "GlobalMaxPool" else np.mean
    want = red(x, axis=(2, 3), keepdims=True)
    _assert_same_nonfinite(got, want)
    ort_y = _ort(model).run(None, {"x": x})[0]
    assert not (np.isnan(ort_y) & ~np.isnan(got)).any()


@pytest.mark.parametrize("value", SPECIALS, ids=SPECIAL_IDS)
@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin", "ReduceSum", "ReduceMean"])
@pytest.mark.parametrize("axis", [1, 2])
@pytest.mark.parametrize("tier", TIER_PARAMS, indirect=True)
def test_reduce_nonfinite(tier, op, axis, value):
    model = _single_op(op, [2, 13, 37], dict(keepdims=1), [("axes", np.array([axis], np.int64))])
    x = np.random.default_rng(4).standard_normal((2, 13, 37)).astype(np.float32)
    x[0, 3, 0] = value
    x[1, 12, 36] = value
    x[1, 5, 17] = value
    got = pyengine.build(model)(x)
    red = {"ReduceMax": np.max, "ReduceMin": np.min, "ReduceSum": np.sum, "ReduceMean": np.mean}[op]
    want = red(x.astype(np.float64), axis=axis, keepdims=True).astype(np.float32)
    _assert_same_nonfinite(got, want)
    ort_y = _ort(model).run(None, {"x": x})[0]
    assert not (np.isnan(ort_y) & ~np.isnan(got)).any()


@pytest.mark.parametrize("value", SPECIALS, ids=SPECIAL_IDS)
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [-1, 1])
@pytest.mark.parametrize("tier", TIER_PARAMS, indirect=True)
def test_softmax_nonfinite(tier, op, axis, value):
    model = _single_op(op, [2, 19, 37], dict(axis=axis))
    x = np.random.default_rng(6).standard_normal((2, 19, 37)).astype(np.float32)
    x[0, 3, 0] = value
    x[1, 18, 36] = value
    x[1, 5, 17] = value
    got = pyengine.build(model)(x)
    want = _ort(model).run(None, {"x": x})[0]
    _assert_same_nonfinite(got, want, atol=1e-5)


@pytest.mark.parametrize("hw", [10, 6], ids=["row_units", "channel_units"])
@pytest.mark.parametrize("value", SPECIALS, ids=SPECIAL_IDS)
@pytest.mark.parametrize("tier", TIER_PARAMS, indirect=True)
def test_winograd_residual_one_nonfinite_image(tier, value, hw):
    """A Winograd conv + residual Add + Relu (one FusedConv), batch 3, with a
    non-finite value in image 1 only: image 1 takes the direct fallback (the
    transforms would make NaN of +-inf), images 0 and 2 stay on Winograd.
    10x10: 75 tiles, split by tile rows on 2 threads; 6x6: 27 tiles, split by
    output channels, the input transform by input channels."""
    c = 16
    rng = np.random.default_rng(11)
    inits = [numpy_helper.from_array((rng.standard_normal((c, c, 3, 3)) * 0.2).astype(np.float32), "W"),
             numpy_helper.from_array((rng.standard_normal(c) * 0.1).astype(np.float32), "B")]
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "x"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", c, hw, hw])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    eng = pyengine.build(model, num_threads=2)
    x = rng.standard_normal((3, c, hw, hw)).astype(np.float32)
    x[1, 3, 4, 5] = value
    got = eng(x)
    kernels = [layer["kernel"] for layer in eng.profile({"x": x}, runs=1)]
    if tier != "ref":
        assert any("winograd" in k for k in kernels), kernels
    _assert_same_nonfinite(got, _ort(model).run(None, {"x": x})[0])


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("tier", TIER_PARAMS, indirect=True)
def test_winograd_row_units_nonfinite(tier, threads):
    """A 40x40 plane (400 tiles, 32 -> 48 channels: 9.8M multiply-adds) is
    cut into one run of tile rows per thread, each transformed, multiplied
    and inverse-transformed by one thread. A NaN in image 1's last rows is
    seen by the last run only and an +inf in image 2's first row by the
    first only; each image still goes whole to the direct fallback, and
    image 0 stays on Winograd."""
    cin, cout, hw = 32, 48, 40
    rng = np.random.default_rng(12)
    inits = [numpy_helper.from_array((rng.standard_normal((cout, cin, 3, 3)) * 0.2).astype(np.float32), "W"),
             numpy_helper.from_array((rng.standard_normal(cout) * 0.1).astype(np.float32), "B")]
    g = helper.make_graph([helper.make_node("Conv", ["x", "W", "B"], ["y"], pads=[1, 1, 1, 1])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", cin, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    eng = pyengine.build(model, num_threads=threads)
    x = rng.standard_normal((3, cin, hw, hw)).astype(np.float32)
    x[1, 5, hw - 2, 7] = np.nan
    x[2, 9, 0, 30] = np.inf
    got = eng(x)
    if tier != "ref":
        assert any("winograd" in layer["kernel"] for layer in eng.profile({"x": x}, runs=1))
    want = _ort(model).run(None, {"x": x})[0]
    assert np.isnan(want[1]).any() and np.isinf(want[2]).any()  # the case is not trivial
    _assert_same_nonfinite(got, want)


@pytest.mark.parametrize("cpg", [4, 16])
@pytest.mark.parametrize("value", SPECIALS, ids=SPECIAL_IDS)
@pytest.mark.parametrize("tier", TIER_PARAMS, indirect=True)
def test_grouped_residual_nonfinite(tier, value, cpg):
    """A ResNeXt-style grouped conv (groups of 4 channels, or of 16 for the
    output-channel-vectorized kernel) + residual Add
    (a second input, so it is not folded into the weights) + Relu, fused into
    one FusedConv on the direct grouped kernel, batch 3, with non-finite
    values in image 1 (two neighbours of one group, so +inf and -inf terms
    meet): NaN and +-inf reach the same outputs as in onnxruntime, images 0
    and 2 stay finite."""
    c, hw = 128, 9
    rng = np.random.default_rng(12)
    inits = [numpy_helper.from_array((rng.standard_normal((c, cpg, 3, 3)) * 0.2).astype(np.float32), "W"),
             numpy_helper.from_array((rng.standard_normal(c) * 0.1).astype(np.float32), "B")]
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], group=c // cpg),
             helper.make_node("Add", ["c", "r"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", c, hw, hw]) for n in ("x", "r")]
    g = helper.make_graph(nodes, "g", vi, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", c, hw, hw])],
                          inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    eng = pyengine.build(model)
    assert "FusedConv" in eng.graph_text() and "Add" not in eng.graph_text(), eng.graph_text()
    x = rng.standard_normal((3, c, hw, hw)).astype(np.float32)
    r = rng.standard_normal((3, c, hw, hw)).astype(np.float32)
    x[1, 5, 4, 0] = value
    x[1, 6, 4, 1] = value
    x[1, 70, 8, 8] = value
    feeds = {"x": x, "r": r}
    got = next(iter(eng.run(feeds).values()))
    kernels = [layer["kernel"] for layer in eng.profile(feeds, runs=1)]
    if tier != "ref":
        assert any("conv_grouped" in k for k in kernels), kernels
    want = _ort(model).run(None, feeds)[0]
    assert np.isfinite(want[[0, 2]]).all() and not np.isfinite(want[1]).all()  # the case is not trivial
    _assert_same_nonfinite(got, want)
