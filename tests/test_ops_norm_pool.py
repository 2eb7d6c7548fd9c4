"""The norm_pool family against onnxruntime, and every AVX2 kernel against its reference.

Ops: BatchNormalization, InstanceNormalization, LayerNormalization, GroupNormalization,
MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, ReduceMean/Sum/Max/Min,
Softmax, LogSoftmax. Each case is a single-node model built with onnx.helper and fed
fresh random data (np.random.default_rng() without a seed, never zeros).

Every check runs the model three ways: onnxruntime, pyengine with the AVX2 kernels
(when the CPU has them) and pyengine with the reference kernels
(``_core.set_force_ref(True)``), and compares
  - pyengine (both ISAs) against onnxruntime with rtol = 1e-5, atol = 1e-5;
  - AVX2 against ref with the same tolerances (bit-exact for max pooling, which
    reorders nothing), and asserts which ISA each engine actually used.
Integer reductions are compared exactly.
"""

import contextlib

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyengine
from pyengine import _core

RTOL = 1e-5
ATOL = 1e-5
HAS_AVX2 = bool(_core.cpu_info()["avx2"] and _core.cpu_info()["fma"])

_NP_TO_ONNX = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64,
               np.dtype(np.int32): TensorProto.INT32}


def rng():
    return np.random.default_rng()


def randn(*shape, scale=1.0, offset=0.0):
    return (rng().standard_normal(shape) * scale + offset).astype(np.float32)


@contextlib.contextmanager
def force_ref():
    _core.set_force_ref(True)
    try:
        yield
    finally:
        _core.set_force_ref(False)


def make_model(op, inputs, attrs=None, n_outputs=1, opset=17, output_names=None, initializers=()):
    """A single-node model. `inputs` is a list of (name, array-or-None); names in
    `initializers` become graph initializers, the others graph inputs; None is an
    omitted optional input ("")."""
    graph_inputs, inits, names = [], [], []
    while inputs and inputs[-1][1] is None:  # trailing omitted inputs are simply left out
        inputs = inputs[:-1]
    for name, arr in inputs:
        if arr is None:
            names.append("")
            continue
        names.append(name)
        if name in initializers:
            inits.append(numpy_helper.from_array(arr, name))
        else:
            graph_inputs.append(helper.make_tensor_value_info(name, _NP_TO_ONNX[arr.dtype], list(arr.shape)))
    outs = output_names or [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op, names, outs, name=f"{op.lower()}_node", **(attrs or {}))
    # Output shapes are left to inference on both sides (ONNX's own inference
    # differs from onnxruntime on ceil_mode windows starting in the padding).
    elem = _NP_TO_ONNX[inputs[0][1].dtype]
    graph = helper.make_graph([node], "g", graph_inputs,
                              [helper.make_tensor_value_info(o, TensorProto.INT64 if o == "indices" else elem, None)
                               for o in outs if o],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 9)
    return model


def feeds_of(inputs, initializers=()):
    return {n: a for n, a in inputs if a is not None and n not in initializers}


def run_ort(model, feeds):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def run_pyengine(model, feeds, ref):
    ctx = force_ref() if ref else contextlib.nullcontext()
    with ctx:
        engine = pyengine.build(model)
    outs = engine.run(feeds)
    kernels = [p["kernel"] for p in engine._impl.last_profile()]
    return list(outs.values()), kernels


def check(model, feeds, rtol=RTOL, atol=ATOL, exact_isa_match=False, avx2_kernel=True):
    """Runs onnxruntime, pyengine-ref and pyengine-AVX2; compares them all.
    avx2_kernel=False: the op has no AVX2 path for this variant (the default
    build must then report the reference kernel)."""
    expected = run_ort(model, feeds)
    got_ref, k_ref = run_pyengine(model, feeds, ref=True)
    assert all("avx2" not in k for k in k_ref), k_ref
    runs = [("ref", got_ref)]
    if HAS_AVX2:
        got_avx2, k_avx2 = run_pyengine(model, feeds, ref=False)
        # Data movement around the op under test (Flatten/Reshape of the
        # legacy Softmax rewrite) aliases memory and has no ISA.
        own = [k for k in k_avx2 if "alias" not in k]
        assert own and all(("avx2" in k) == avx2_kernel for k in own), k_avx2
        runs.append(("avx2", got_avx2))
    for isa, got in runs:
        assert len(got) == len(expected)
        for i, (g, e) in enumerate(zip(got, expected)):
            assert g.shape == e.shape, f"{isa} output {i}: shape {g.shape} != onnxruntime {e.shape}"
            assert g.dtype == e.dtype, f"{isa} output {i}: dtype {g.dtype} != onnxruntime {e.dtype}"
            if np.issubdtype(e.dtype, np.integer):
                np.testing.assert_array_equal(g, e, err_msg=f"{isa} output {i} vs onnxruntime")
            else:
                np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=f"{isa} output {i} vs onnxruntime")
    if HAS_AVX2:
        for i, (a, r) in enumerate(zip(runs[1][1], runs[0][1])):
            if exact_isa_match or np.issubdtype(r.dtype, np.integer):
                np.testing.assert_array_equal(a, r, err_msg=f"avx2 vs ref output {i}")
            else:
                np.testing.assert_allclose(a, r, rtol=rtol, atol=atol, err_msg=f"avx2 vs ref output {i}")
    return expected


def build_and_check(op, inputs, attrs=None, n_outputs=1, opset=17, initializers=(), output_names=None, **kw):
    model = make_model(op, inputs, attrs, n_outputs, opset, output_names, initializers)
    return check(model, feeds_of(inputs, initializers), **kw)


# ---------------------------------------------------------------- BatchNormalization

BN_SHAPES = [(1, 1), (3, 13), (3, 3, 17), (1, 13, 5, 7), (3, 3, 7, 5), (1, 1, 1, 1), (3, 13, 1, 1),
             (1, 3, 3, 5, 7), (3, 1, 5, 1, 17)]


def bn_params(c):
    return [("scale", randn(c)), ("B", randn(c)), ("mean", randn(c, scale=2.0)),
            ("var", rng().uniform(0.2, 3.0, c).astype(np.float32))]


@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("as_init", [True, False])
def test_batch_norm(shape, as_init):
    params = bn_params(shape[1])
    inputs = [("x", randn(*shape, scale=2.0, offset=0.5))] + params
    inits = [n for n, _ in params] if as_init else ()
    build_and_check("BatchNormalization", inputs, {"epsilon": 1e-3}, initializers=inits)


@pytest.mark.parametrize("opset", [11, 15])
def test_batch_norm_opsets_default_epsilon(opset):
    params = bn_params(13)
    attrs = {"training_mode": 0} if opset >= 14 else {}
    build_and_check("BatchNormalization", [("x", randn(3, 13, 7, 7))] + params, attrs, opset=opset,
                    initializers=["scale", "B"])


def test_batch_norm_resnet_sized():
    params = bn_params(64)
    build_and_check("BatchNormalization", [("x", randn(1, 64, 56, 56))] + params,
                    initializers=[n for n, _ in params])


@pytest.mark.parametrize("shape", [(1, 3, 5, 5), (4, 13, 3, 7), (3, 5), (2, 1, 4, 3, 5)])
def test_batch_norm_training_mode(shape):
    """training_mode=1: x's own per-channel statistics over N and the spatial
    axes (population variance), and running_mean / running_var blended with
    the inputs by momentum (ONNX requires all three outputs in this mode);
    against onnxruntime."""
    params = bn_params(shape[1])
    build_and_check("BatchNormalization", [("x", randn(*shape, scale=2.0, offset=0.5))] + params,
                    {"training_mode": 1, "momentum": 0.7, "epsilon": 1e-3}, opset=15,
                    output_names=["y", "running_mean", "running_var"], initializers=[n for n, _ in params])


def test_weight_standardization_folds_into_the_conv():
    """timm's StdConv2d as TorchScript exports it: the conv weight reshaped to
    (1, M, K), BatchNormalization(training_mode=1) standardizes each output
    channel, reshaped back. Its input is a constant, so the optimizer folds it:
    the built graph has the Conv on a standardized constant weight and no
    BatchNormalization; the output matches onnxruntime's."""
    r = rng()
    w = r.standard_normal((6, 4, 3, 3)).astype(np.float32) * 0.3 + 0.1
    ones, zeros = np.ones(6, np.float32), np.zeros(6, np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in
             [(w, "w"), (np.array([1, 6, -1], np.int64), "flat"), (np.array(w.shape, np.int64), "back"),
              (ones, "g"), (zeros, "b"), (zeros, "mu"), (ones, "var")]]
    nodes = [helper.make_node("Reshape", ["w", "flat"], ["w3"]),
             helper.make_node("BatchNormalization", ["w3", "g", "b", "mu", "var"], ["ws", "rm", "rv"], name="std",
                              training_mode=1, momentum=0.0, epsilon=1e-6),
             helper.make_node("Reshape", ["ws", "back"], ["w4"]),
             helper.make_node("Conv", ["x", "w4"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "std_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 7, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    x = randn(2, 4, 7, 7)
    engine = pyengine.build(model)
    assert "BatchNormalization" not in engine.graph_text() and "Conv(" in engine.graph_text()
    (expected,) = run_ort(model, {"x": x})
    np.testing.assert_allclose(engine.run({"x": x})["y"], expected, rtol=1e-5, atol=1e-5)


def test_batch_norm_training_outputs_are_unsupported():
    """Before opset 14, training mode is requested outputs (mean, var, saved
    statistics) with no training_mode attribute: refused with its reason."""
    params = bn_params(3)
    model = make_model("BatchNormalization", [("x", randn(1, 3, 5, 5))] + params, opset=11,
                       output_names=["y", "running_mean", "running_var"], initializers=[n for n, _ in params])
    with pytest.raises(pyengine.UnsupportedOperatorError, match="statistics outputs.*before opset 14"):
        pyengine.build(model)


# ---------------------------------------------------------------- Instance / Group normalization

@pytest.mark.parametrize("shape", [(1, 1, 17), (3, 3, 5, 7), (1, 13, 7, 7), (3, 13, 1, 1, 5), (1, 3, 5, 7, 3),
                                   (3, 1, 17, 17)])
@pytest.mark.parametrize("as_init", [True, False])
def test_instance_norm(shape, as_init):
    c = shape[1]
    inputs = [("x", randn(*shape, scale=3.0, offset=4.0)), ("scale", randn(c)), ("B", randn(c))]
    build_and_check("InstanceNormalization", inputs, {"epsilon": 1e-4},
                    initializers=["scale", "B"] if as_init else ())


def test_instance_norm_large_mean_small_spread():
    # Data far from zero with a small spread: a one-pass E[x^2] - E[x]^2, or
    # folding the mean into the bias, loses most digits. onnxruntime does the
    # latter (its result is off by ~1e-3 here), so the oracle is float64 numpy;
    # onnxruntime only bounds the result loosely: its error is a few float32
    # ulps of 100 (7.6e-6 each) over a spread of 0.01, times |scale|, and
    # went past 5e-3 on some draws (5.004e-3 in a CI run), hence 2e-2.
    x = randn(3, 3, 17, 17, scale=0.01, offset=100.0)
    scale, b = randn(3), randn(3)
    inputs = [("x", x), ("scale", scale), ("B", b)]
    model = make_model("InstanceNormalization", inputs, initializers=["scale", "B"])
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(2, 3), keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=(2, 3), keepdims=True)
    want = (x64 - mean) / np.sqrt(var + 1e-5) * scale[None, :, None, None] + b[None, :, None, None]
    ort_y = run_ort(model, feeds_of(inputs, ["scale", "B"]))[0]
    for ref in (True, False):
        got, _ = run_pyengine(model, feeds_of(inputs, ["scale", "B"]), ref=ref)
        np.testing.assert_allclose(got[0], want, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(got[0], ort_y, rtol=0, atol=2e-2)


def test_layer_norm_large_mean_small_spread():
    # As above, for LayerNorm's row moments (float64 numpy is the oracle).
    x = randn(3, 7, 127, scale=0.01, offset=-300.0)
    gamma, beta = randn(127), randn(127)
    inputs = [("x", x), ("scale", gamma), ("B", beta)]
    model = make_model("LayerNormalization", inputs, {"axis": -1}, initializers=["scale", "B"])
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=-1, keepdims=True)
    want = (x64 - mean) / np.sqrt(((x64 - mean) ** 2).mean(axis=-1, keepdims=True) + 1e-5) * gamma + beta
    for ref in (True, False):
        got, _ = run_pyengine(model, feeds_of(inputs, ["scale", "B"]), ref=ref)
        np.testing.assert_allclose(got[0], want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("opset", [18, 21])
@pytest.mark.parametrize("shape,groups", [((1, 6, 5, 7), 2), ((3, 6, 17), 3), ((3, 6, 1, 1), 6), ((1, 13, 5, 5), 1),
                                          ((3, 12, 3, 5, 7), 4), ((1, 3, 7, 7), 3)])
@pytest.mark.parametrize("as_init", [True, False])
def test_group_norm(opset, shape, groups, as_init):
    n = groups if opset == 18 else shape[1]  # opset 18: per group; 21: per channel
    inputs = [("x", randn(*shape, scale=2.0, offset=1.0)), ("scale", randn(n)), ("bias", randn(n))]
    build_and_check("GroupNormalization", inputs, {"num_groups": groups, "epsilon": 1e-4}, opset=opset,
                    initializers=["scale", "bias"] if as_init else ())


# ---------------------------------------------------------------- LayerNormalization

@pytest.mark.parametrize("shape,axis", [((3, 13), -1), ((3, 5, 17), -1), ((3, 5, 17), 1), ((1, 7, 7, 13), -1),
                                        ((1, 7, 7, 13), 2), ((3, 1), -1), ((1, 5, 127), -1), ((3, 3, 5, 7), 0)])
@pytest.mark.parametrize("stats", [False, True])
@pytest.mark.parametrize("as_init", [True, False])
def test_layer_norm(shape, axis, stats, as_init):
    norm_shape = shape[axis:] if axis >= 0 else shape[len(shape) + axis:]
    inputs = [("x", randn(*shape, scale=2.0, offset=-1.0)), ("scale", randn(*norm_shape)), ("B", randn(*norm_shape))]
    outs = ["y", "mean", "inv_std"] if stats else ["y"]
    build_and_check("LayerNormalization", inputs, {"axis": axis, "epsilon": 1e-5, "stash_type": 1},
                    output_names=outs, initializers=["scale", "B"] if as_init else ())


def test_layer_norm_without_bias():
    inputs = [("x", randn(3, 5, 13)), ("scale", randn(13)), ("B", None)]
    build_and_check("LayerNormalization", inputs, {"axis": -1}, output_names=["y", "mean", "inv_std"],
                    initializers=["scale"])


def test_layer_norm_only_inv_std_requested():
    # onnxruntime crashes on a skipped Mean output, so the oracle is the same
    # node with all three outputs.
    inputs = [("x", randn(3, 5, 13)), ("scale", randn(13)), ("B", randn(13))]
    full = run_ort(make_model("LayerNormalization", inputs, {"axis": 1}, output_names=["y", "mean", "inv_std"]),
                   feeds_of(inputs))
    model = make_model("LayerNormalization", inputs, {"axis": 1}, output_names=["y", "", "inv_std"])
    for ref in (True, False):
        got, _ = run_pyengine(model, feeds_of(inputs), ref=ref)
        assert len(got) == 2
        np.testing.assert_allclose(got[0], full[0], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(got[1], full[2], rtol=RTOL, atol=ATOL)


def test_layer_norm_convnext_sized():
    # ConvNeXt: channels-last LayerNorm over 96 channels after a Transpose.
    inputs = [("x", randn(1, 56, 56, 96)), ("scale", randn(96)), ("B", randn(96))]
    build_and_check("LayerNormalization", inputs, {"axis": -1, "epsilon": 1e-6}, initializers=["scale", "B"])


# ---------------------------------------------------------------- MaxPool / AveragePool

POOL_CASES = [
    # (input spatial shape, attributes) -- windows hitting the padded borders,
    # ceil_mode partial windows, asymmetric pads, dilations, auto_pad, odd strides.
    ((17, 17), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ((7, 7), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ((5, 7), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)),
    ((1, 1), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ((5, 7), dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)),
    ((17, 5), dict(kernel_shape=[3, 2], strides=[1, 1], pads=[0, 1, 2, 0])),
    ((7, 17), dict(kernel_shape=[2, 3], strides=[2, 2], pads=[1, 0, 0, 2], ceil_mode=1)),
    ((17, 17), dict(kernel_shape=[3, 3], strides=[1, 1], pads=[2, 2, 2, 2], dilations=[2, 2])),
    ((17, 13), dict(kernel_shape=[2, 3], strides=[2, 2], pads=[1, 1, 1, 1], dilations=[2, 3], ceil_mode=1)),
    ((17, 17), dict(kernel_shape=[3, 3], strides=[3, 3], pads=[1, 1, 1, 1])),
    ((17, 7), dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
    ((17, 6), dict(kernel_shape=[2, 4], strides=[2, 3], auto_pad="SAME_LOWER")),
    ((17, 7), dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="VALID")),
    ((7, 7), dict(kernel_shape=[7, 7])),
    ((17,), dict(kernel_shape=[3], strides=[2], pads=[1, 1])),
    ((17,), dict(kernel_shape=[2], strides=[2], pads=[1, 0], ceil_mode=1)),
    ((5,), dict(kernel_shape=[3], strides=[1], pads=[2, 1], dilations=[2])),
    ((17,), dict(kernel_shape=[4], strides=[3], auto_pad="SAME_UPPER")),
    ((5, 7, 6), dict(kernel_shape=[3, 3, 3], strides=[2, 2, 2], pads=[1, 1, 1, 1, 1, 1])),
    ((5, 7, 17), dict(kernel_shape=[2, 2, 3], strides=[2, 1, 2], pads=[0, 1, 1, 1, 0, 2], ceil_mode=1)),
    ((1, 5, 7), dict(kernel_shape=[1, 3, 3], strides=[1, 2, 2], pads=[0, 1, 1, 0, 1, 1], dilations=[1, 2, 1])),
]


def _pool_id(case):
    spatial, attrs = case
    return "x".join(map(str, spatial)) + "-" + "-".join(f"{k}{v}" for k, v in attrs.items()).replace(" ", "")


@pytest.mark.parametrize("case", POOL_CASES, ids=_pool_id)
@pytest.mark.parametrize("nc", [(1, 1), (3, 13)])
def test_max_pool(case, nc):
    spatial, attrs = case
    opset = 12 if "dilations" in attrs else 11
    x = randn(*nc, *spatial)
    build_and_check("MaxPool", [("x", x)], attrs, opset=opset, exact_isa_match=True)


@pytest.mark.parametrize("case", POOL_CASES, ids=_pool_id)
@pytest.mark.parametrize("include_pad", [0, 1])
@pytest.mark.parametrize("nc", [(1, 3), (3, 13)])
def test_average_pool(case, include_pad, nc):
    spatial, attrs = case
    opset = 19 if "dilations" in attrs else 11
    x = randn(*nc, *spatial, offset=0.5)
    build_and_check("AveragePool", [("x", x)], dict(attrs, count_include_pad=include_pad), opset=opset)


@pytest.mark.parametrize("case", [c for c in POOL_CASES if not c[1].get("auto_pad")], ids=_pool_id)
@pytest.mark.parametrize("storage_order", [0, 1])
def test_max_pool_indices(case, storage_order):
    spatial, attrs = case
    x = randn(3, 3, *spatial)
    build_and_check("MaxPool", [("x", x)], dict(attrs, storage_order=storage_order), opset=12,
                    output_names=["y", "indices"], avx2_kernel=False)


def test_max_pool_resnet_stem():
    # ResNet's 3x3/2 max pool after the stem, big enough to run on every thread.
    build_and_check("MaxPool", [("x", randn(1, 64, 112, 112))],
                    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), exact_isa_match=True)


def test_average_pool_3x3_s1_sized():
    build_and_check("AveragePool", [("x", randn(3, 32, 28, 28))],
                    dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=0))


def test_max_pool_repeated_runs_with_other_shapes():
    # The kernel caches its geometry per input shape: changing the batch and
    # spatial size between runs must not reuse a stale one.
    model = make_model("MaxPool", [("x", randn(1, 3, 9, 9))],
                       dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "n"
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "h"
    model.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "w"
    engine = pyengine.build(model)
    for shape in [(1, 3, 9, 9), (3, 3, 17, 5), (1, 3, 9, 9), (2, 3, 1, 7)]:
        x = randn(*shape)
        np.testing.assert_array_equal(engine(x), run_ort(model, {"x": x})[0])


# ---------------------------------------------------------------- Global pooling

@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 13, 5, 7), (1, 3, 17), (3, 1, 7, 7), (1, 13, 3, 5, 7),
                                   (3, 3, 1, 127), (1, 2048, 7, 7)])
def test_global_pool(op, shape):
    build_and_check(op, [("x", randn(*shape, offset=0.3))], exact_isa_match=op == "GlobalMaxPool")


# ---------------------------------------------------------------- Reduce*

REDUCE_AXES = [[2, 3], [1], [0, 2], [-1], [1, 3], [0, 1, 2, 3], [3, 1], None]


def _reduce_data(dtype, shape):
    if dtype == np.float32:
        return randn(*shape, offset=0.2)
    return rng().integers(-1000, 1000, size=shape).astype(dtype)


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin"])
@pytest.mark.parametrize("axes", REDUCE_AXES, ids=str)
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("axes_as_input", [False, True])
def test_reduce_float(op, axes, keepdims, axes_as_input):
    x = _reduce_data(np.float32, (3, 13, 5, 7))
    attrs = {"keepdims": keepdims}
    inputs = [("x", x)]
    if axes_as_input:
        opset = 13 if op == "ReduceSum" else 18
        if axes is not None:
            inputs.append(("axes", np.array(axes, np.int64)))
    else:
        opset = 11 if op != "ReduceSum" else 11
        if axes is not None:
            attrs["axes"] = axes
    build_and_check(op, inputs, attrs, opset=opset, initializers=["axes"])


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMax", "ReduceMin"])
@pytest.mark.parametrize("dtype", [np.int64, np.int32])
@pytest.mark.parametrize("axes", [[1], [2, 3], [0, 3], None], ids=str)
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_int(op, dtype, axes, keepdims):
    x = _reduce_data(dtype, (3, 13, 1, 7))
    attrs = {"keepdims": keepdims}
    if axes is not None:
        attrs["axes"] = axes
    build_and_check(op, [("x", x)], attrs, opset=11)


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin"])
@pytest.mark.parametrize("noop", [0, 1])
@pytest.mark.parametrize("empty_axes_input", [False, True])
def test_reduce_noop_with_empty_axes(op, noop, empty_axes_input):
    x = randn(3, 5, 7)
    inputs = [("x", x)]
    if empty_axes_input:
        inputs.append(("axes", np.zeros((0,), np.int64)))
    build_and_check(op, inputs, {"keepdims": 1, "noop_with_empty_axes": noop}, opset=18, initializers=["axes"])


@pytest.mark.parametrize("shape,axes", [((1, 2048, 7, 7), [2, 3]), ((3, 127, 17), [1]), ((1, 5, 3000), [-1]),
                                        ((13, 1, 1), [0]), ((1,), [0])], ids=str)
def test_reduce_mean_shapes(shape, axes):
    # GAP written as ReduceMean (PyTorch's x.mean((2, 3))), and odd layouts.
    build_and_check("ReduceMean", [("x", randn(*shape))], {"axes": axes, "keepdims": 0}, opset=13)


# ---------------------------------------------------------------- Softmax / LogSoftmax

@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("shape,axis", [((3, 13), -1), ((3, 13, 17), -1), ((3, 13, 17), 1), ((3, 13, 17), 0),
                                        ((1, 5, 7, 9), 2), ((1, 1000), -1), ((2, 2000), 1), ((3, 1), -1),
                                        ((1, 3, 300), 1), ((7,), 0), ((1, 5, 17, 3), -3)])
def test_softmax(op, shape, axis):
    build_and_check(op, [("x", randn(*shape, scale=4.0))], {"axis": axis}, opset=13)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_extreme_values(op):
    # Max subtraction: huge logits must neither overflow nor lose the small ones.
    x = randn(3, 37, scale=30.0, offset=50.0)
    x[0, 3] = 88.0
    x[1, :] = -100.0
    build_and_check(op, [("x", x)], {"axis": -1}, opset=13)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [1, -1, 2])
def test_softmax_legacy_opset(op, axis):
    # Opset < 13 flattens at `axis`; pyengine/onnx_io.py rewrites it onto this
    # kernel (axis = -1 needs no rewrite) with Flatten/Shape/Reshape around it.
    inputs = [("x", randn(3, 5, 7, scale=3.0))]
    model = make_model(op, inputs, {"axis": axis}, opset=11)
    try:
        pyengine.build(model)
    except pyengine.UnsupportedOperatorError as err:
        if "Softmax" in str(err) or axis == -1:
            raise
        pytest.skip(f"the rewrite needs the shape_ops kernels: {err}")
    check(model, feeds_of(inputs))


# ---------------------------------------------------------------- errors

def test_max_pool_uint8_is_unsupported():
    # int8 MaxPool is the quant family's (tests/test_int8_kernels.py); uint8 is not supported.
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.UINT8, None)
    g = helper.make_graph([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], name="mp")], "g", [x], [y])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 12)])
    with pytest.raises(pyengine.UnsupportedOperatorError, match="mp"):
        pyengine.build(model)


def test_reduce_axes_fed_at_run_time():
    # Graph inputs that feed shape operands (here the axes) are plan-time
    # values: each set of values gets its own cached plan.
    x = randn(3, 5, 7)
    engine = pyengine.build(make_model("ReduceSum", [("x", x), ("axes", np.array([1], np.int64))],
                                       {"keepdims": 0}, opset=13))
    for axes in ([1], [0], [-1]):
        out = engine.run({"x": x, "axes": np.array(axes, np.int64)})
        np.testing.assert_allclose(list(out.values())[0], x.sum(axis=tuple(axes)), rtol=1e-5, atol=1e-5)


def test_group_norm_bad_groups_is_a_shape_error():
    model = make_model("GroupNormalization", [("x", randn(1, 6, 3, 3)), ("scale", randn(6)), ("bias", randn(6))],
                       {"num_groups": 4}, opset=21, initializers=["scale", "bias"])
    with pytest.raises(pyengine.ShapeError, match="groups"):
        pyengine.build(model)(randn(1, 6, 3, 3))
