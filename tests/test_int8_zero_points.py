"""int8 kernels and lowering with activation zero points (asymmetric
activations: onnxruntime's u8 Q/DQ, stored as int8 with zero point - 128).

Oracles and tolerances:
  - QConv/QGemm with x/z/y_zero_point on every tier vs an independent numpy
    implementation (test_int8_kernels' _np_conv_acc and _np_epilogue):
    bit-exact. numpy subtracts the input zero point from
    every input value and pads with real zeros; the SIMD tiers pad with the
    zero point and fold -x_zp * sum(w) into the int32 bias, so both sides
    of the comparison are computed differently.
  - The uint8 -> int8 rewrite of Q/DQ pairs vs onnxruntime on the same u8
    model: bit-exact (it changes the storage, not a value).
  - onnxruntime's own quantize_static model (u8 activations) built by
    pyengine vs onnxruntime running it with its graph rewrites off (the Q/DQ
    reference semantics), layer by layer from onnxruntime's own int8 inputs:
    at most one int8 step on at most 1% of each tensor (test_qdq_models'
    bounds). QAdd: bit-exact with that reference.
"""

import numpy as np
import onnx
import pytest
from onnx import helper

import pyengine
from pyengine import _core, zoo
from test_int8_kernels import (CONV_SHAPES, KERNEL_TIERS, _custom_model, _engine, _int8_data, _np_conv_acc,
                               _np_epilogue, _ort_run, _require_tier, _resolved_pads, _tensor, _vi)


def _inputs(ep):
    """The bias and residual of an epilogue spec, as _custom_model takes them."""
    return {k: ep[k] for k in ("bias_i32", "bias_f32", "z") if ep.get(k) is not None}


def _epilogue(rng, kind, acc, mul, m):
    """(numpy epilogue spec, node attributes): "float" (float bias, float
    output) or "requant" (int32 bias, int8 residual with a zero point, Relu,
    int8 output with a zero point)."""
    ep, attrs = {}, {}
    v0 = acc.astype(np.float32) * mul.reshape(1, -1, *([1] * (acc.ndim - 2)))
    spread = np.float32(max(np.abs(v0).max(), 1e-3))
    if kind == "float":
        ep["bias_f32"] = (rng.standard_normal(m) * spread / 4).astype(np.float32)
        return ep, attrs
    ep["bias_i32"] = rng.integers(-5000, 5000, size=m).astype(np.int32)
    if m > 1:
        # Channel 0 far below zero and channel 1 far above (the residual adds
        # at most 0.85 * spread either way), so both the Relu floor and the
        # saturation at 127 are reached on every draw, not only on most.
        far = 2 * int(np.abs(acc).max()) + 5000
        ep["bias_i32"][0], ep["bias_i32"][1] = -far, far
    ep["z"] = rng.integers(-128, 128, size=acc.shape).astype(np.int8)
    ep["z_scale"] = np.float32(spread / 300)
    ep["z_zp"] = int(rng.integers(-128, 128))
    ep["act"] = "Relu"
    ep["y_zp"] = int(rng.choice([-128, int(rng.integers(-100, 100))]))
    ep["y_scale"] = None
    vmax = np.abs(_np_epilogue(acc, 1, mul, ep)).max()
    # The largest values saturate at 127 whatever the zero point.
    ep["y_scale"] = np.float32(vmax / (1.25 * (127 - ep["y_zp"])) if vmax > 0 else 1)
    attrs.update(z_scale=float(ep["z_scale"]), z_zero_point=ep["z_zp"], activation="Relu",
                 y_scale=float(ep["y_scale"]), y_zero_point=ep["y_zp"])
    return ep, attrs


@pytest.mark.parametrize("tier", KERNEL_TIERS)
@pytest.mark.parametrize("kind", ["float", "requant"])
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=lambda s: "x".join(map(str, s[:7])) + f"_g{s[10]}_{s[11]}")
def test_qconv_zero_points_vs_numpy_bit_exact(shape, kind, tier):
    """Every conv geometry of the symmetric suite (padded planes, im2col,
    1x1, strided, depthwise, 3-row tails) with an input zero point, once at
    -128 (onnxruntime's u8 zero point 0) and once random; bits equal numpy's."""
    _require_tier(tier)
    rng = np.random.default_rng()
    n, c, h, w_, m, kh, kw, strides, pads, dil, group, auto_pad = shape
    for x_zp in (-128, int(rng.choice([-1, 1]) * rng.integers(1, 128))):
        x = _int8_data(rng, (n, c, h, w_), False)
        w = _int8_data(rng, (m, c // group, kh, kw), False)
        x_scale = np.float32(rng.uniform(0.01, 0.05))
        w_scale = rng.uniform(0.001, 0.01, size=m).astype(np.float32)
        mul = x_scale * w_scale
        # numpy: real values x - x_zp, padded with real zeros.
        acc = _np_conv_acc(x.astype(np.int64) - x_zp, w, strides, _resolved_pads(shape, auto_pad), dil, group)
        ep, attrs = _epilogue(rng, kind, acc, mul, m)
        attrs.update(x_scale=float(x_scale), w_scale=[float(s) for s in w_scale], strides=list(strides),
                     dilations=list(dil), group=group, kernel_shape=[kh, kw], x_zero_point=x_zp)
        if auto_pad:
            attrs["auto_pad"] = auto_pad
        else:
            attrs["pads"] = list(pads)
        want = _np_epilogue(acc, 1, mul, ep)
        model, feeds = _custom_model("QConv", x, w, _inputs(ep), attrs)
        engine = _engine(model, tier=tier)
        got = engine.run(feeds)["y"]
        np.testing.assert_array_equal(got, want, err_msg=f"{tier} vs numpy, x_zp={x_zp}")
        if kind == "requant" and want.size >= 64 and m > 1:
            assert np.any(want == 127) and np.any(want == max(ep["y_zp"], -128))  # both ends reached
        assert "zero-point input" in engine.profile(feeds, runs=1)[0]["kernel"]


@pytest.mark.parametrize("tier", KERNEL_TIERS)
@pytest.mark.parametrize("weights_as_input", [False, True])
def test_qgemm_and_runtime_weights_with_zero_points(tier, weights_as_input):
    """QGemm with an input zero point, and QConv/QGemm whose weights arrive
    at run time (their sums are taken per call): numpy's bits."""
    _require_tier(tier)
    rng = np.random.default_rng()
    n, k, m = 7, 300, 37
    a = _int8_data(rng, (n, k), False)
    w = _int8_data(rng, (m, k), False)
    x_zp = int(rng.integers(-128, 128))
    mul = np.float32(0.02) * rng.uniform(0.001, 0.01, size=m).astype(np.float32)
    acc = (a.astype(np.int64) - x_zp) @ w.astype(np.int64).T
    ep, attrs = _epilogue(rng, "requant", acc, mul, m)
    attrs.update(x_scale=0.02, w_scale=[float(s / np.float32(0.02)) for s in mul], x_zero_point=x_zp)
    mul = np.float32(0.02) * np.array(attrs["w_scale"], np.float32)  # what the kernel forms
    ep["y_scale"] = None
    vmax = np.abs(_np_epilogue(acc, 1, mul, ep)).max()
    ep["y_scale"] = np.float32(vmax / 200)
    attrs["y_scale"] = float(ep["y_scale"])
    want = _np_epilogue(acc, 1, mul, ep)
    model, feeds = _custom_model("QGemm", a, w, _inputs(ep), attrs,
                                 weights_as_input=weights_as_input)
    np.testing.assert_array_equal(_engine(model, tier=tier).run(feeds)["y"], want)

    x = _int8_data(rng, (2, 9, 11, 13), False)
    wc = _int8_data(rng, (16, 9, 3, 3), False)
    accc = _np_conv_acc(x.astype(np.int64) - x_zp, wc, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    mulc = np.float32(0.02) * np.float32(0.004) * np.ones(16, np.float32)
    epc, attrsc = _epilogue(rng, "requant", accc, mulc, 16)
    attrsc.update(x_scale=0.02, w_scale=[0.004] * 16, x_zero_point=x_zp, pads=[1, 1, 1, 1])
    model, feeds = _custom_model("QConv", x, wc, _inputs(epc), attrsc,
                                 weights_as_input=weights_as_input)
    np.testing.assert_array_equal(_engine(model, tier=tier).run(feeds)["y"], _np_epilogue(accc, 1, mulc, epc))


@pytest.mark.parametrize("tier", KERNEL_TIERS)
@pytest.mark.parametrize("y_zp", [-128, 0, 9])
def test_zero_point_chain_bit_exact(tier, y_zp):
    """QConv {Relu, y_zero_point} -> QConv {x_zero_point = the same}: with
    y_zp = -128 (a u8 Relu output) the second conv shifts its input (the
    +128 of the VNNI tier cancels the zero point); with y_zp >= 0 the values
    are >= 0, so it takes the u8 paths (VNNI u8 input, AVX2 vpmaddubsw),
    padding with the zero point. Bits equal numpy's."""
    _require_tier(tier)
    rng = np.random.default_rng()
    x = _int8_data(rng, (2, 12, 15, 14), False)
    w1 = _int8_data(rng, (20, 12, 3, 3), False)
    w2 = _int8_data(rng, (17, 20, 3, 3), False)
    mul1 = np.float32(0.02) * np.full(20, 0.004, np.float32)
    acc1 = _np_conv_acc(x, w1, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    ep1 = {"act": "Relu", "y_zp": y_zp, "y_scale": None}
    ep1["y_scale"] = np.float32(np.abs(_np_epilogue(acc1, 1, mul1, ep1)).max() / (1.25 * (127 - y_zp)))
    h = _np_epilogue(acc1, 1, mul1, ep1)
    assert h.min() == y_zp and h.max() == 127
    mul2 = np.float32(ep1["y_scale"]) * np.full(17, 0.003, np.float32)
    acc2 = _np_conv_acc(h.astype(np.int64) - y_zp, w2, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    ep2 = {"act": "Relu", "y_zp": -128, "y_scale": None}
    ep2["y_scale"] = np.float32(np.abs(_np_epilogue(acc2, 1, mul2, ep2)).max() / 200)
    want = _np_epilogue(acc2, 1, mul2, ep2)
    a1 = dict(x_scale=0.02, w_scale=[0.004] * 20, activation="Relu", y_scale=float(ep1["y_scale"]),
              y_zero_point=y_zp, pads=[1, 1, 1, 1])
    a2 = dict(x_scale=float(ep1["y_scale"]), w_scale=[0.003] * 17, activation="Relu", y_scale=float(ep2["y_scale"]),
              y_zero_point=-128, x_zero_point=y_zp, pads=[1, 1, 1, 1])
    nodes = [helper.make_node("QConv", ["x", "w1"], ["h"], domain="pyengine", name="first", **a1),
             helper.make_node("QConv", ["h", "w2"], ["y"], domain="pyengine", name="second", **a2)]
    g = helper.make_graph(nodes, "chain", [_vi("x", np.int8, x.shape)], [_vi("y", np.int8, None)],
                          initializer=[_tensor("w1", w1), _tensor("w2", w2)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("pyengine", 1)])
    engine = _engine(model, tier=tier)
    np.testing.assert_array_equal(engine.run({"x": x})["y"], want, err_msg=tier)
    kernel = {p["name"]: p["kernel"] for p in engine.profile({"x": x}, runs=1)}["second"]
    if tier != "ref":
        assert ("u8 input" in kernel or "maddubsw" in kernel) == (y_zp >= 0), kernel


def test_qconv_zero_point_out_of_range_is_an_error():
    x = np.zeros((1, 2, 3, 3), np.int8)
    model, feeds = _custom_model("QConv", x, np.ones((2, 2, 1, 1), np.int8), {},
                                 dict(x_scale=0.1, w_scale=[0.1], x_zero_point=200))
    with pytest.raises(pyengine.PyengineError, match="x_zero_point 200 is not an int8 value"):
        _engine(model).run(feeds)


def test_uint8_qdq_rewrite_is_exact():
    """Q(u8, zero point z) -> DQ, on both sides of a Relu and a MaxPool, as
    onnxruntime's quantizer writes it: pyengine's int8 form (zero point
    z - 128) gives onnxruntime's floats bit for bit, saturation included."""
    rng = np.random.default_rng()
    inits = [_tensor("s1", np.float32(0.037)), _tensor("z1", np.array(131, np.uint8)),
             _tensor("s2", np.array([0.021], np.float32)), _tensor("z2", np.array(0, np.uint8))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s1", "z1"], ["q1"]),
             helper.make_node("DequantizeLinear", ["q1", "s1", "z1"], ["d1"]),
             helper.make_node("Relu", ["d1"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "s2", "z2"], ["q2"]),
             helper.make_node("DequantizeLinear", ["q2", "s2", "z2"], ["d2"]),
             helper.make_node("MaxPool", ["d2"], ["y"], kernel_shape=[2, 2])]
    g = helper.make_graph(nodes, "u8", [_vi("x", np.float32, (2, 3, 8, 8))], [_vi("y", np.float32, None)],
                          initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = (rng.standard_normal((2, 3, 8, 8)) * 4).astype(np.float32)
    engine = pyengine.build(model)
    text = engine.graph_text()
    assert "uint8" not in text and "int8" in text, text
    np.testing.assert_array_equal(engine(x), _ort_run(model, {"x": x}, optimize=False)[0])


def test_onnxruntime_u8_model_runs_on_the_int8_kernels(tmp_path):
    """onnxruntime's quantize_static output (QUInt8 activations, QInt8
    per-channel weights, BatchNorm left in) of a zoo ResNet: every Conv and
    the Gemm lowered; the logits as close to onnxruntime's reference
    semantics (without graph rewrites) as the symmetric forms are."""
    ortq = pytest.importorskip("onnxruntime.quantization")
    import qdq_models as qm

    model = zoo.resnet18()
    src = tmp_path / "f.onnx"
    onnx.save(model, str(src))
    name = model.graph.input[0].name
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:]
    rng = np.random.default_rng()
    calib = iter([{name: rng.standard_normal((4, *shape)).astype(np.float32)} for _ in range(4)])

    class Reader(ortq.CalibrationDataReader):
        def get_next(self):
            return next(calib, None)

    dst = tmp_path / "q.onnx"
    ortq.quantize_static(str(src), str(dst), Reader(), quant_format=ortq.QuantFormat.QDQ,
                         activation_type=ortq.QuantType.QUInt8, weight_type=ortq.QuantType.QInt8, per_channel=True)
    engine = pyengine.build(str(dst), num_threads=2)
    assert engine.metadata["int8"]["float_layers"] == [], engine.metadata["int8"]["float_layers"]
    ops = engine.metadata["optimizer"]["ops_after"]
    convs = sum(n.op_type == "Conv" for n in model.graph.node)
    assert ops.get("QConv") == convs and ops.get("QGemm") == 1 and "Conv" not in ops, ops
    # Each quantized tensor, computed from onnxruntime's own int8 inputs of
    # its layer (qdq_models.per_layer_steps; reference: onnxruntime without
    # graph rewrites): at most one step apart on at most 1% of its elements,
    # as test_qdq_models asserts for the symmetric forms.
    x = rng.standard_normal((4, *shape)).astype(np.float32)
    steps = qm.per_layer_steps(onnx.load(str(dst)), {name: x}, lambda m: pyengine.build(m, num_threads=2))
    assert len(steps) >= convs
    for t, (most, share, _) in steps.items():
        assert most <= 1 and share <= 0.01, (t, most, share)
    assert np.all(np.isfinite(engine(x)))
    # Its convs channels-last (their inputs, u8 stored with zero point -128,
    # take the NHWC kernel's +128 form; on a tier without that kernel, the
    # transposing fallback): the NCHW engine's bits.
    saved = _core.int8_layout()
    try:
        built = {}
        for layout in ("nchw", "nhwc"):
            _core.set_int8_layout(layout)
            built[layout] = pyengine.build(str(dst), num_threads=2)
    finally:
        _core.set_int8_layout(saved)
    transposes = {k: e.metadata["optimizer"]["ops_after"].get("Transpose", 0) for k, e in built.items()}
    assert transposes["nhwc"] >= 1 and transposes["nchw"] == 0, transposes
    np.testing.assert_array_equal(built["nhwc"](x), built["nchw"](x))
