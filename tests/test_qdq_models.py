"""Pre-quantized Q/DQ models from tools pyengine does not control, built on
pyengine's int8 kernels and checked against onnxruntime running the same
Q/DQ model (qdq_models.py makes them: onnxruntime quantize_static symmetric
and asymmetric, a PyTorch fake-quant export, NVIDIA ModelOpt fp16 and fp32).

Oracle: onnxruntime on the same file with graph rewrites off (the Q/DQ
model's own arithmetic; its QDQ fusions round differently).
Tolerances:
  - per layer: every quantized activation, computed by pyengine from
    onnxruntime's own int8 inputs of that layer, is within one int8 step of
    onnxruntime's (both compute the same integer products; the float
    rounding before requantization differs), on at most 1% of elements;
  - whole model: top-1 agreement with onnxruntime >= 99.5% on all 1797
    digits images (real data); for float32 Q/DQ models every quantized
    activation of the whole chain within two steps (differences pass on);
  - the model ran on int8 kernels: the engine lists one QConv per Conv.
ModelOpt runs in its own venv (PYENGINE_MODELOPT_PYTHON); skipped without.
Needs torch, scikit-learn, onnxruntime. ~40 s of CPU (+40 s with ModelOpt).
"""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyengine
from pyengine import _core
from pyengine.errors import CalibrationError, InvalidArgumentError

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn.datasets")
ort = pytest.importorskip("onnxruntime")

import qdq_models as qm  # noqa: E402  (after the skips: it imports torch lazily, sklearn in digits())

pytestmark = pytest.mark.torch

MIN_AGREEMENT = 0.995
MAX_LAYER_STEPS = 1
MAX_LAYER_DIFF_SHARE = 0.01
MAX_CHAINED_STEPS_FP32 = 2
NUM_CONVS = 6


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("qdq")
    x, y, train, test = qm.digits()
    net = qm.train(x, y, train)
    path = d / "float.onnx"
    onnx.save(qm.export(net, x), str(path))
    return {"dir": d, "x": x, "y": y, "test": test, "net": net, "float": path, "calib": x[train[:256]]}


_MODELS = {}


def _model(trained, source):
    if source in _MODELS:
        return _MODELS[source]
    d, calib = trained["dir"], trained["calib"]
    if source == "ort_s8":
        m = qm.ort_quantize(trained["float"], calib, d / "ort_s8.onnx", symmetric=True)
    elif source == "ort_u8":
        m = qm.ort_quantize(trained["float"], calib, d / "ort_u8.onnx", symmetric=False)
    elif source == "torch_fq":
        m = qm.fake_quant_export(trained["net"], calib)
    elif source in ("modelopt_fp16", "modelopt_fp32"):
        py, why = qm.modelopt_python()
        if py is None:
            pytest.skip(why)
        m = qm.modelopt_quantize(py, trained["float"], calib, d / f"{source}.onnx",
                                 None if source == "modelopt_fp16" else "fp32")
    else:
        raise AssertionError(source)
    _MODELS[source] = m
    return m


def _agreement(model, engine, x):
    ref = qm.ort_session(model).run(None, {"input": x})[0]
    got = engine(x)
    return float(np.mean(ref.argmax(1) == got.argmax(1))), got


SYMMETRIC = ["ort_s8", "torch_fq", "modelopt_fp32", "modelopt_fp16"]


@pytest.mark.parametrize("source", SYMMETRIC)
def test_qdq_model_runs_on_int8_kernels_and_agrees(trained, source):
    model = _model(trained, source)
    x, y, test = trained["x"], trained["y"], trained["test"]
    # Precision comes from the graph: no precision, no calibration data.
    engine = pyengine.build(model)
    assert engine.precision == "int8"
    info = engine.metadata["int8"]
    assert info["int8_layers"].get("QConv") == NUM_CONVS, info
    assert info["float_layers"] == [], info
    assert engine.graph_text().count("QConv") >= NUM_CONVS
    # And the executor ran them on the int8 kernels.
    ran = [layer for layer in engine.profile({"input": x[:2]}, runs=1) if layer["op"] == "QConv"]
    assert len(ran) == NUM_CONVS and all(layer["executed"] and layer["kernel"].startswith("qconv_s8")
                                         for layer in ran), ran
    ops = engine.metadata["optimizer"]["ops_after"]
    assert "Conv" not in ops and "FusedConv" not in ops and "BatchNormalization" not in ops, ops
    if source.startswith("modelopt"):
        # ModelOpt leaves BatchNorm between the DQ'd Conv and the next Q.
        assert any(n.op_type == "BatchNormalization" for n in model.graph.node)

    agreement, logits = _agreement(model, engine, x)
    assert agreement >= MIN_AGREEMENT, f"{source}: top-1 agreement with onnxruntime {agreement:.4f}"
    assert np.mean(logits[test].argmax(1) == y[test]) >= 0.9  # the model is a real classifier

    layers = qm.per_layer_steps(model, {"input": x[:128]}, pyengine.build)
    assert len(layers) >= 5
    for t, (steps, share, seg_engine) in layers.items():
        assert steps <= MAX_LAYER_STEPS and share <= MAX_LAYER_DIFF_SHARE, (source, t, steps, share)
        assert seg_engine.precision == "int8"
    if source != "modelopt_fp16":
        # float16 layers (ModelOpt's default) round at every layer in
        # onnxruntime; those roundings pass on through the chain, so only the
        # per-layer bound above applies to them.
        for t, (steps, share) in qm.chained_steps(model, {"input": x[:128]}, pyengine.build).items():
            assert steps <= MAX_CHAINED_STEPS_FP32, (source, t, steps, share)


def test_explicit_int8_matches_default(trained):
    model = _model(trained, "ort_s8")
    x = trained["x"][:64]
    a = pyengine.build(model)(x)
    b = pyengine.build(model, precision="int8")(x)
    np.testing.assert_array_equal(a, b)


def test_asymmetric_uint8_runs_on_the_int8_kernels(trained):
    """onnxruntime's default Q/DQ (uint8 activations with zero points): the
    u8 Q/DQ pairs become int8 ones (zero point - 128) and every Conv and the
    Gemm run on the int8 kernels with zero points, as accurate as the
    symmetric form."""
    model = _model(trained, "ort_u8")
    x = trained["x"]
    assert any(t.data_type == TensorProto.UINT8 for t in model.graph.initializer)
    engine = pyengine.build(model)
    info = engine.metadata["int8"]
    assert info["float_layers"] == [], info["float_layers"]
    assert sum(info["int8_layers"].values()) == NUM_CONVS + 1, info["int8_layers"]  # and the Gemm
    ops = engine.metadata["optimizer"]["ops_after"]
    assert "Conv" not in ops and "Gemm" not in ops, ops
    assert any("zero-point input" in p["kernel"] for p in engine.profile({"input": x[:4]}, runs=1))
    agreement, _ = _agreement(model, engine, x)
    assert agreement >= MIN_AGREEMENT
    for t, (steps, share, _) in qm.per_layer_steps(model, {"input": x[:128]}, pyengine.build).items():
        assert steps <= MAX_LAYER_STEPS and share <= MAX_LAYER_DIFF_SHARE, (t, steps, share)


def test_fp32_precision_runs_fake_quant(trained):
    model = _model(trained, "ort_s8")
    engine = pyengine.build(model, precision="fp32")
    assert engine.precision == "fp32"
    ops = engine.metadata["optimizer"]["ops_after"]
    assert "QConv" not in ops and ops.get("QuantizeLinear", 0) > 0
    ref = qm.ort_session(model).run(None, {"input": trained["x"][:256]})[0]
    got = engine(trained["x"][:256])
    assert np.mean(ref.argmax(1) == got.argmax(1)) >= MIN_AGREEMENT


def test_int8_float_model_without_calibration_says_what_to_pass(trained):
    with pytest.raises(CalibrationError, match=r"calibration_data=.*calibration_cache="):
        pyengine.build(str(trained["float"]), precision="int8")


def test_qdq_model_rejects_calibration_options(trained):
    model = _model(trained, "ort_s8")
    with pytest.raises(InvalidArgumentError, match="scales come from the graph"):
        pyengine.build(model, precision="int8", calibration_data=trained["calib"])


# ---------------------------------------------------------------------------
# Hand-made graphs: BatchNorm with negative gamma between a DQ'd Conv and its
# Q, refusal reasons, float16 layers.

def _qdq_conv_bn(rng, gamma_sign=-1.0, act_u8=False, weight_zp=0):
    c_in, c_out = 5, 7
    w = rng.standard_normal((c_out, c_in, 3, 3)).astype(np.float32)
    ws = (np.abs(w).max(axis=(1, 2, 3)) / 127).astype(np.float32)
    wq = np.clip(np.round(w / ws[:, None, None, None]), -127, 127).astype(np.int8)
    gamma = (rng.uniform(0.5, 1.5, c_out) * np.where(np.arange(c_out) % 2, gamma_sign, 1.0)).astype(np.float32)
    zt = np.uint8 if act_u8 else np.int8
    inits = [
        numpy_helper.from_array(np.float32(0.03), "xs"), numpy_helper.from_array(zt(3 if act_u8 else 0), "xz"),
        numpy_helper.from_array(wq, "wq"), numpy_helper.from_array(ws, "ws"),
        numpy_helper.from_array(np.full(c_out, weight_zp, np.int8), "wz"),
        numpy_helper.from_array(rng.standard_normal(c_out).astype(np.float32), "b"),
        numpy_helper.from_array(gamma, "g"), numpy_helper.from_array(rng.standard_normal(c_out).astype(np.float32), "be"),
        numpy_helper.from_array(rng.standard_normal(c_out).astype(np.float32), "mu"),
        numpy_helper.from_array(rng.uniform(0.5, 2, c_out).astype(np.float32), "var"),
        numpy_helper.from_array(np.float32(0.05), "ys"), numpy_helper.from_array(np.int8(0), "yz"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("BatchNormalization", ["c", "g", "be", "mu", "var"], ["bn"], epsilon=1e-3),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "ys", "yz"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"]),
    ]
    g = helper.make_graph(nodes, "qdq_conv_bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c_in, 9, 9])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "C", "H", "W"])], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_batchnorm_between_dq_conv_and_q_is_absorbed(rng=np.random.default_rng(3)):
    model = _qdq_conv_bn(rng)
    engine = pyengine.build(model)
    ops = engine.metadata["optimizer"]["ops_after"]
    assert ops.get("QConv") == 1 and "ChannelAffine" not in ops and "BatchNormalization" not in ops, ops
    x = (rng.standard_normal((4, 5, 9, 9)) * 2).astype(np.float32)
    ref = qm.ort_session(model).run(None, {"x": x})[0]
    steps = np.abs(engine(x) - ref) / 0.05
    assert steps.max() <= 1 + 1e-4 and np.mean(steps > 0.5) <= MAX_LAYER_DIFF_SHARE


def test_uint8_input_activation_is_lowered_with_its_zero_point(rng=np.random.default_rng(6)):
    """A u8 input Q/DQ (zero point 3) in front of a symmetric int8 layer: the
    conv is lowered with x_zero_point 3 - 128, within one output step of
    onnxruntime on the same Q/DQ model."""
    model = _qdq_conv_bn(rng, act_u8=True)
    engine = pyengine.build(model)
    assert engine.metadata["int8"]["float_layers"] == []
    assert engine.metadata["optimizer"]["ops_after"].get("QConv") == 1
    assert "x_zero_point=-125" in engine.graph_text()
    x = (rng.standard_normal((4, 5, 9, 9)) * 2).astype(np.float32)
    steps = np.abs(engine(x) - qm.ort_session(model).run(None, {"x": x})[0]) / 0.05
    assert steps.max() <= 1 + 1e-4 and np.mean(steps > 0.5) <= MAX_LAYER_DIFF_SHARE


def test_lowering_refusals_have_reasons():
    # Asymmetric weights (zero point 2): the int8 kernels take symmetric weights only.
    model = _qdq_conv_bn(np.random.default_rng(4), weight_zp=2)
    engine = pyengine.build(model)
    refused = engine.metadata["int8"]["float_layers"]
    assert [r["node"] for r in refused] == ["conv"]
    assert "weight has a non-zero zero point" in refused[0]["reason"]
    x = np.random.default_rng(5).standard_normal((2, 5, 9, 9)).astype(np.float32)
    np.testing.assert_allclose(engine(x), qm.ort_session(model).run(None, {"x": x})[0], rtol=1e-5, atol=1e-5)
    # The pass under the PassManager's verifier, explaining: the same reason,
    # and nothing rewritten.
    from pyengine import onnx_io
    from pyengine.optimizer import optimize_graph

    graph, _ = onnx_io.graph_from_onnx(model)
    _, report = optimize_graph(graph, pipeline="int8", verify=True, explain=True)
    mine = [r for r in report["refused"] if r["pass"] == "lower_qdq_to_int8"]
    assert [(r["node"], r["pattern"], r["quiet"]) for r in mine] == [("conv", "qconv", False)]
    assert "weight has a non-zero zero point" in mine[0]["reason"]
    assert not any(r["pass"] == "lower_qdq_to_int8" for r in report["rewrites"])


def test_pipelines_are_declared_in_the_registry():
    int8 = [n for n, _ in _core.pipeline_passes("int8")]
    assert int8[0] == "widen_float16"
    assert int8.index("fold_bn_into_conv") < int8.index("lower_qdq_to_int8") < int8.index("fuse_conv_add_relu")
    assert int8[-1] == "eliminate_dead_code"
    quantize = [n for n, _ in _core.pipeline_passes("quantize")]
    assert "fuse_conv_add_relu" not in quantize and "fold_bn_into_conv" in quantize
    with pytest.raises(InvalidArgumentError, match="unknown pipeline"):
        _core.pipeline_passes("nope")


def _float16_model(rng):
    """float32 input -> Cast -> float16 layers (Conv, BN, Relu, Q/DQ with
    float16 scales, Add, MaxPool, AveragePool, GlobalAveragePool, ReduceMean,
    Gemm, Sigmoid) -> Cast -> float32 output, as ModelOpt writes them."""
    h = np.float16
    c = 6
    inits = [
        numpy_helper.from_array(rng.standard_normal((c, 3, 3, 3)).astype(h) * h(0.3), "w"),
        numpy_helper.from_array(rng.standard_normal(c).astype(h), "b"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(h), "g"),
        numpy_helper.from_array(rng.standard_normal(c).astype(h), "be"),
        numpy_helper.from_array(rng.standard_normal(c).astype(h) * h(0.1), "mu"),
        numpy_helper.from_array(rng.uniform(0.5, 2, c).astype(h), "var"),
        numpy_helper.from_array(h(0.02), "s"), numpy_helper.from_array(np.int8(0), "z"),
        numpy_helper.from_array(rng.standard_normal((4, c)).astype(h), "fw"),
        numpy_helper.from_array(rng.standard_normal(4).astype(h), "fb"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
    ]
    nodes = [
        helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16),
        helper.make_node("Conv", ["x16", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "be", "mu", "var"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "s", "z"], ["rq"]),
        helper.make_node("DequantizeLinear", ["rq", "s", "z"], ["rd"]),
        helper.make_node("Add", ["rd", "bn"], ["a"]),
        helper.make_node("MaxPool", ["a"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("AveragePool", ["mp"], ["ap"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("GlobalAveragePool", ["ap"], ["gp"]),
        helper.make_node("ReduceMean", ["ap", "axes"], ["rm"], keepdims=0),
        helper.make_node("Flatten", ["gp"], ["fl"]),
        helper.make_node("Add", ["fl", "rm"], ["f2"]),
        helper.make_node("Gemm", ["f2", "fw", "fb"], ["gm"], transB=1),
        helper.make_node("Sigmoid", ["gm"], ["sg"]),
        helper.make_node("Cast", ["sg"], ["y"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["mp"], ["y2"], to=TensorProto.FLOAT),
    ]
    g = helper.make_graph(nodes, "fp16", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 10, 10])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
                           helper.make_tensor_value_info("y2", TensorProto.FLOAT, ["N", c, 5, 5])], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_float16_layers_run_as_onnxruntime_runs_them(precision):
    rng = np.random.default_rng(11)
    model = _float16_model(rng)
    onnx.checker.check_model(model, full_check=True)
    engine = pyengine.build(model, precision=precision)
    x = rng.standard_normal((3, 3, 10, 10)).astype(np.float32)
    ref = qm.ort_session(model).run(None, {"x": x})
    got = [engine.run({"x": x})[n] for n in ("y", "y2")]
    # pyengine rounds every float16 layer's result to float16; onnxruntime
    # keeps float32 between consecutive float16 ops it has no kernel for
    # (its Cast pairs are removed), so the two differ by float16 roundings:
    # a few ulps (2^-11 relative), plus one Q/DQ step (0.02) where a rounding
    # lands on the other side of a tie.
    np.testing.assert_allclose(got[0], ref[0], rtol=4e-3, atol=4e-3)
    np.testing.assert_allclose(got[1], ref[1], rtol=4e-3, atol=0.021)
    # Q/DQ steps flipped by those roundings (half an ulp of ~4 is ~5% of a
    # step): a few percent of elements at most.
    assert np.mean(np.abs(got[1] - ref[1]) > 4e-3 * np.abs(ref[1]) + 1e-3) <= 0.05


def test_cli_builds_a_qdq_model_to_an_int8_plan(tmp_path):
    from pyengine.cli import main

    rng = np.random.default_rng(6)
    path = tmp_path / "qdq.onnx"
    onnx.save(_qdq_conv_bn(rng), str(path))
    plan = tmp_path / "qdq.plan"
    assert main(["build", str(path), "-o", str(plan)]) == 0
    loaded = pyengine.load(plan)
    assert loaded.precision == "int8" and "QConv" in loaded.graph_text()
    x = rng.standard_normal((2, 5, 9, 9)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x), pyengine.build(str(path))(x))


@pytest.mark.parametrize("variant,reason", [
    ("float_weight", "the weight is a float constant"),
    ("weight_axis1", "not per output channel"),
    ("act_two_scales", "more than one scale"),
])
def test_refused_groups_say_why_and_run_exactly(variant, reason):
    """Q/DQ shapes the int8 kernels cannot take stay float fake-quant (the
    model's arithmetic, as onnxruntime runs it) and the engine says why."""
    rng = np.random.default_rng(8)
    model = _qdq_conv_bn(rng)
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    conv = next(n for n in g.node if n.op_type == "Conv")
    if variant == "float_weight":
        w = numpy_helper.to_array(inits["wq"]).astype(np.float32) * numpy_helper.to_array(inits["ws"])[:, None, None, None]
        g.initializer.append(numpy_helper.from_array(w, "wf"))
        conv.input[1] = "wf"
    elif variant == "weight_axis1":
        # Square 5x5 1x1 kernel so that axis 1 has as many channels as axis 0.
        w = rng.integers(-127, 128, (5, 5, 1, 1)).astype(np.int8)
        g.initializer.remove(inits["wq"])
        g.initializer.append(numpy_helper.from_array(w, "wq"))
        for name, arr in (("ws", np.full(5, 0.01, np.float32)), ("wz", np.zeros(5, np.int8))):
            g.initializer.remove(inits[name])
            g.initializer.append(numpy_helper.from_array(arr, name))
        dq = next(n for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] == "wq")
        dq.attribute[0].i = 1
        del conv.attribute[:]
        for name in ("g", "be", "mu", "var", "b"):
            g.initializer.remove(next(t for t in g.initializer if t.name == name))
            g.initializer.append(numpy_helper.from_array(rng.uniform(0.5, 1.5, 5).astype(np.float32), name))
    elif variant == "act_two_scales":
        # Per-channel activation scales (axis 1) on the Conv input.
        g.initializer.remove(inits["xs"])
        g.initializer.remove(inits["xz"])
        g.initializer.append(numpy_helper.from_array(rng.uniform(0.02, 0.04, 5).astype(np.float32), "xs"))
        g.initializer.append(numpy_helper.from_array(np.zeros(5, np.int8), "xz"))
        for n in g.node[:2]:
            n.attribute.append(helper.make_attribute("axis", 1))
    onnx.checker.check_model(model)
    engine = pyengine.build(model)
    refused = engine.metadata["int8"]["float_layers"]
    assert [r["node"] for r in refused] == ["conv"] and reason in refused[0]["reason"], refused
    assert "QConv" not in engine.metadata["optimizer"]["ops_after"]
    x = (rng.standard_normal((2, 5, 9, 9)) * 2).astype(np.float32)
    ref = qm.ort_session(model).run(None, {"x": x})[0]
    # Float fake-quant against onnxruntime's: the conv sums in another order,
    # so the output may move one step (0.05) where it lands on a tie.
    steps = np.abs(engine(x) - ref) / 0.05
    assert steps.max() <= 1 + 1e-4 and np.mean(steps > 0.5) <= MAX_LAYER_DIFF_SHARE
