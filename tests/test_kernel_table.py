"""The kernel table (engine/cpu/kernels.def, `_core.kernel_table()`): every
FP32 line runs against its op's reference on a small model with awkward
sizes, with the ISA cap set to the line's tier, and the per-layer profile
must name that tier (so dispatch really used the line). INT8 lines are
checked bit-exactly by test_int8_kernels.py and the u8 preprocess lines by
test_preprocess.py; here only their format.

Adding a line to kernels.def without a model for its op here fails
test_every_op_has_a_model, so every kernel gets tested.
"""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyengine
from pyengine import _core
from conftest import isa_tiers

TABLE = _core.kernel_table()
TIERS = isa_tiers()


def _model(nodes, x_shape, inits=(), opset=18, out_shape=None):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def _w(name, *shape, scale=0.3, seed=0):
    return numpy_helper.from_array((np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32),
                                   name)


def _conv(cin, cout, k, hw, **attrs):
    group = attrs.get("group", 1)
    return _model([helper.make_node("Conv", ["x", "W", "B"], ["y"], **attrs)], (2, cin, hw, hw),
                  [_w("W", cout, cin // group, k, k), _w("B", cout)])


def _gemm():
    return _model([helper.make_node("Gemm", ["x", "W", "B"], ["y"], transB=1)], (13, 37),
                  [_w("W", 29, 37), _w("B", 29)])


def _matmul():
    return _model([helper.make_node("MatMul", ["x", "W"], ["y"])], (3, 13, 37), [_w("W", 37, 29)])


def _single(op, shape, opset=18, inits=(), inputs=("x",), **attrs):
    return _model([helper.make_node(op, list(inputs), ["y"], **attrs)], shape, inits, opset=opset)


def _bn():
    c = 19
    return _model([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])], (2, c, 7, 9),
                  [_w("s", c), _w("b", c), _w("m", c),
                   numpy_helper.from_array(np.random.default_rng(1).uniform(0.5, 2, c).astype(np.float32), "v")])


def _squeeze_excite():
    # fuse_squeeze_excitation turns this into one SqueezeExcite (optimize=True).
    c, cr = 37, 5
    return _model([helper.make_node("GlobalAveragePool", ["x"], ["p"]),
                   helper.make_node("Conv", ["p", "W1", "B1"], ["h1"]), helper.make_node("Relu", ["h1"], ["h"]),
                   helper.make_node("Conv", ["h", "W2", "B2"], ["g1"]), helper.make_node("Sigmoid", ["g1"], ["g"]),
                   helper.make_node("Mul", ["x", "g"], ["y"])], (3, c, 5, 11),
                  [_w("W1", cr, c, 1, 1), _w("B1", cr), _w("W2", c, cr, 1, 1), _w("B2", c)], out_shape=[3, c, 5, 11])


# op -> (model, optimize): a model whose plan runs the op's kernels.
OP_MODELS = {
    "conv": lambda: (_conv(13, 19, 3, 11, pads=[1, 1, 1, 1], strides=[2, 2]), False),
    "conv_depthwise": lambda: (_conv(24, 24, 3, 13, pads=[1, 1, 1, 1], group=24), False),
    "conv_grouped": lambda: (_conv(24, 36, 3, 13, pads=[1, 1, 1, 1], strides=[2, 1], group=6), False),
    "conv_grouped_oc": lambda: (_conv(32, 64, 3, 13, pads=[1, 1, 1, 1], strides=[2, 1], group=2), False),
    "conv_winograd": lambda: (_conv(17, 19, 3, 13, pads=[1, 1, 1, 1]), False),
    "sgemm": lambda: (_conv(13, 29, 1, 11), False),
    "gemm": lambda: (_gemm(), False),
    "matmul": lambda: (_matmul(), False),
    "unary": lambda: (_single("Sigmoid", (3, 37, 5)), False),
    "binary": lambda: (_model([helper.make_node("Add", ["x", "c"], ["y"])], (3, 37, 5), [_w("c", 37, 5)]), False),
    "channel_affine": lambda: (_model([helper.make_node("Mul", ["x", "s"], ["t"]),
                                       helper.make_node("Add", ["t", "b"], ["y"])], (2, 19, 7, 9),
                                      [_w("s", 19, 1, 1), _w("b", 19, 1, 1)]), True),
    "pool": lambda: (_single("MaxPool", (2, 5, 13, 21), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
                     False),
    "squeeze_excite": lambda: (_squeeze_excite(), True),
    # fuse_channel_bias_relu: Concat -> per-channel Add -> Relu as one FusedChannelBias.
    "fused_channel_bias": lambda: (_model([helper.make_node("Concat", ["x", "x"], ["c"], axis=1),
                                           helper.make_node("Add", ["c", "b"], ["a"]),
                                           helper.make_node("Relu", ["a"], ["y"])], (2, 19, 7, 9),
                                          [_w("b", 38, 1, 1)], out_shape=[2, 38, 7, 9]), True),
    "row_sum": lambda: (_single("GlobalAveragePool", (2, 5, 13, 21)), False),
    "row_max": lambda: (_single("GlobalMaxPool", (2, 5, 13, 21)), False),
    "row_min": lambda: (_single("ReduceMin", (2, 5, 37), inits=[numpy_helper.from_array(np.array([2], np.int64),
                                                                                         "axes")],
                                inputs=("x", "axes")), False),
    "softmax_row": lambda: (_single("Softmax", (2, 5, 37), axis=-1), False),
    "softmax_cols": lambda: (_single("Softmax", (2, 37, 19), axis=1), False),
    "layer_norm_row": lambda: (_model([helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1)],
                                      (2, 5, 37), [_w("g", 37), _w("b", 37)]), False),
    "moments": lambda: (_model([helper.make_node("InstanceNormalization", ["x", "g", "b"], ["y"])], (2, 5, 7, 9),
                               [_w("g", 5), _w("b", 5)]), False),
    "affine_row": lambda: (_model([helper.make_node("InstanceNormalization", ["x", "g", "b"], ["y"])], (2, 5, 7, 9),
                                  [_w("g", 5), _w("b", 5)]), False),
    "affine_vec": lambda: (_bn(), False),
    "transpose": lambda: (_single("Transpose", (3, 37, 19), perm=[0, 2, 1]), False),
    "resize_linear": lambda: (_model([helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="linear")],
                                     (1, 3, 7, 9), [numpy_helper.from_array(
                                         np.array([1, 1, 2, 2], np.float32), "sc")]), False),
}


def _run(model, optimize, tier, x):
    prev = _core.isa_cap()
    _core.set_isa_cap(tier)
    try:
        eng = pyengine.build(model, optimize=optimize, num_threads=2)
    finally:
        _core.set_isa_cap(prev)
    y = eng(x)
    kernels = [layer["kernel"] for layer in eng.profile({"x": x}, runs=1)]
    return y, kernels


def test_table_format():
    assert TABLE, "kernels.def is empty"
    seen = set()
    for e in TABLE:
        assert e["dtype"] in ("f32", "s8", "u8"), e
        assert e["tier"] in ("ref", "avx2", "avx512", "vnni", "amx"), e
        # The ISA part names the tier, or the instruction set within it that
        # the kernel needs (STYLE.md: conv2d_s8_avx512vnni for the vnni tier).
        isa_names = {"vnni": ("vnni", "avx512vnni", "avxvnni")}.get(e["tier"], (e["tier"],))
        assert any(e["symbol"].startswith(f"{e['op']}_{e['dtype']}_{n}") for n in isa_names), e
        assert e["width"] >= 1
        assert e["symbol"] not in seen, f"duplicate symbol {e['symbol']}"
        seen.add(e["symbol"])
        assert (e["op"], e["dtype"], e["tier"]) not in seen
        seen.add((e["op"], e["dtype"], e["tier"]))


def test_every_op_has_a_model():
    missing = sorted({e["op"] for e in TABLE if e["dtype"] == "f32"} - set(OP_MODELS))
    assert not missing, f"kernels.def ops without a test model here: {missing}"


F32 = [e for e in TABLE if e["dtype"] == "f32" and e["tier"] != "ref"]


@pytest.mark.parametrize("entry", F32, ids=[e["symbol"] for e in F32])
def test_entry_matches_ref(entry):
    if entry["tier"] not in TIERS:
        pytest.skip(f"this CPU/build has no {entry['tier']} tier (it has {', '.join(TIERS)})")
    model, optimize = OP_MODELS[entry["op"]]()
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng().standard_normal(shape).astype(np.float32)
    want, ref_kernels = _run(model, optimize, "ref", x)
    got, kernels = _run(model, optimize, entry["tier"], x)
    assert not any("avx" in k for k in ref_kernels), ref_kernels
    tag = "_" + entry["tier"]
    assert any(tag in k for k in kernels), f"{entry['symbol']}: no layer ran a {entry['tier']} kernel: {kernels}"
    if entry["op"] in ("conv", "conv_depthwise", "conv_grouped", "conv_grouped_oc", "conv_winograd", "gemm", "matmul",
                       "sgemm"):
        assert any(entry["symbol"] in k for k in kernels), (entry["symbol"], kernels)
    # FP32 tolerance: reassociated sums (SIMD lanes, blocked K, Winograd's
    # transforms) and 1-3 ulp transcendental functions.
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4, err_msg=f"{entry['symbol']} vs ref")


def test_amx_stays_off_until_switched_on():
    """The AMX kernel has not run on an AMX CPU yet (dispatch.h, AmxUse): its
    line is unusable by default whatever the CPU, PYENGINE_AMX / set_amx_use
    switch it (usable then only where the CPU has AMX and tile permission),
    and an unknown value is an error naming the choices."""
    amx = next(e for e in TABLE if e["symbol"] == "qconv_s8_amx")
    assert amx["tier"] == "amx"
    saved = _core.amx_use()
    try:
        _core.set_amx_use("off")
        assert not next(e for e in _core.kernel_table() if e["symbol"] == "qconv_s8_amx")["usable"]
        with pytest.raises(pyengine.InvalidArgumentError, match="off, on or emulated"):
            _core.set_amx_use("yes")
        _core.set_amx_use("on")
        usable = next(e for e in _core.kernel_table() if e["symbol"] == "qconv_s8_amx")["usable"]
        assert usable == _core.cpu_info()["use_amx"]
        assert _core.cpu_info()["amx_use"] == "on"
    finally:
        _core.set_amx_use(saved)


def test_avx_vnni_stays_off_until_switched_on():
    """The AVX2 kernel's AVX-VNNI microkernel has not run on an AVX-VNNI CPU
    yet (dispatch.h, AvxVnniUse): off by default, PYENGINE_AVXVNNI /
    set_avx_vnni_use switch it (then used where the CPU has AVX-VNNI), evex
    runs its EVEX twin where the CPU has AVX512-VNNI, and an unknown value
    is an error naming the choices."""
    line = next(e for e in TABLE if e["symbol"] == "qconv_u8dot_s8_avxvnni")
    assert line["tier"] == "vnni"
    saved, cap = _core.avx_vnni_use(), _core.isa_cap()
    info = _core.cpu_info()
    try:
        _core.set_isa_cap("avx2" if "avx2" in TIERS else "ref")
        _core.set_avx_vnni_use("off")
        assert _core.cpu_info()["avx2_u8_dot"] == "vpmaddubsw"
        with pytest.raises(pyengine.InvalidArgumentError, match="off, on or evex"):
            _core.set_avx_vnni_use("yes")
        _core.set_avx_vnni_use("on")
        assert _core.cpu_info()["avx2_u8_dot"] == ("on" if info["avx_vnni"] and "avx2" in TIERS else "vpmaddubsw")
        _core.set_avx_vnni_use("evex")
        assert _core.cpu_info()["avx2_u8_dot"] == ("evex" if info["avx512vnni"] and "avx2" in TIERS else "vpmaddubsw")
        _core.set_isa_cap(cap)
        _core.set_avx_vnni_use("on")
        usable = next(e for e in _core.kernel_table() if e["symbol"] == "qconv_u8dot_s8_avxvnni")["usable"]
        assert usable == _core.cpu_info()["use_avx_vnni"]
        _core.set_avx_vnni_use("off")
        assert not next(e for e in _core.kernel_table() if e["symbol"] == "qconv_u8dot_s8_avxvnni")["usable"]
    finally:
        _core.set_avx_vnni_use(saved)
        _core.set_isa_cap(cap)
