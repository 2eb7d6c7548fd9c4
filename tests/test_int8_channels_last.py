"""Channels-last (NHWC) int8 convolutions: QConv with channels_last=1 and the
int8_channels_last pass that makes them.

Oracles and tolerances:
  - A channels-last QConv on each tier (ref: qconv_nhwc_ref; vnni: the NHWC
    VNNI kernel, or the NCHW one between transposes where C % 4 != 0; avx2
    and the emulated AMX kernel: always between transposes) vs numpy on the
    NCHW-transposed data, transposed back: bit-exact (int64 sums, the
    documented float32 epilogue; test_int8_kernels.py's helpers).
  - The pass: a graph's outputs with the pass vs without it, bit-identical
    (the channels-last convs compute the same integer sums and epilogue; the
    Transposes move bytes), on every tier the CPU has, and through a plan
    save / load.
The layout setting (PYENGINE_INT8_LAYOUT, _core.set_int8_layout) is process
wide: every test here restores it.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import pyengine
from pyengine import _core, onnx_io
from pyengine.optimizer import optimize_graph

from test_int8_kernels import (KERNEL_TIERS, QCONV_KERNEL, _available_tiers, _engine, _int8_data, _np_conv_acc,
                               _np_epilogue, _op_types, _require_tier, _tensor, _tier, _vi)


@pytest.fixture(autouse=True)
def _restore_layout():
    saved = _core.int8_layout()
    try:
        yield
    finally:
        _core.set_int8_layout(saved)


def _nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def _nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def _requant_epilogue(rng, acc, mul, m, bias=None, z=False, act=None, y_zp=0, z_zp=0):
    """Epilogue inputs ({"bias_i32"|"bias_f32", "z", ...} as _np_epilogue
    takes them; z NCHW) and QConv attributes for a requantized output (a
    channels-last conv always requantizes), scaled so that some outputs
    saturate."""
    ep, attrs = {}, {}
    spread = np.float32(max(np.abs(acc.astype(np.float32) * mul.reshape(1, -1, 1, 1)).max(), 1e-3))
    if bias == "i32":
        ep["bias_i32"] = rng.integers(-5000, 5000, size=m).astype(np.int32)
    elif bias == "f32":
        ep["bias_f32"] = (rng.standard_normal(m) * spread / 4).astype(np.float32)
    if z:
        ep["z"] = rng.integers(-128, 128, size=acc.shape).astype(np.int8)
        ep["z_scale"] = np.float32(spread / 300)
        attrs["z_scale"] = float(ep["z_scale"])
        if z_zp:
            ep["z_zp"] = z_zp
            attrs["z_zero_point"] = z_zp
    if act == "Relu":
        ep["act"] = attrs["activation"] = "Relu"
    elif act == "Clip":
        ep["act"] = attrs["activation"] = "Clip"
        clip = (np.float32(-spread / 5), np.float32(spread / 3))
        attrs["activation_params"] = list(clip)
        ep["clip"] = tuple(float(c) for c in clip)
    vmax = np.abs(_np_epilogue(acc, 1, mul, ep)).max()
    ep["y_scale"] = np.float32(vmax / 160 if vmax > 0 else 1)
    attrs["y_scale"] = float(ep["y_scale"])
    if y_zp:
        ep["y_zp"] = y_zp
        attrs["y_zero_point"] = y_zp
    return ep, attrs


def _nhwc_model(x_nhwc, w, ep, attrs, weights_as_input=False, name="qconv"):
    """One QConv {channels_last=1}: x, z and y NHWC; ep["z"] is NCHW."""
    inputs, inits, feeds = [_vi("x", np.int8, x_nhwc.shape)], [], {"x": x_nhwc}
    if weights_as_input:
        inputs.append(_vi("w", np.int8, w.shape))
        feeds["w"] = w
    else:
        inits.append(_tensor("w", w))
    names = ["x", "w"]
    bias = ep.get("bias_i32", ep.get("bias_f32"))
    names.append("b" if bias is not None else "")
    if bias is not None:
        inits.append(_tensor("b", bias))
    if ep.get("z") is not None:
        z = _nhwc(ep["z"])
        names.append("z")
        inputs.append(_vi("z", np.int8, z.shape))
        feeds["z"] = z
    while names[-1] == "":
        names.pop()
    node = helper.make_node("QConv", names, ["y"], domain="pyengine", name=name, channels_last=1, **attrs)
    g = helper.make_graph([node], "nhwc", inputs, [helper.make_tensor_value_info("y", TensorProto.INT8, None)],
                          initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("pyengine", 1)])
    return model, feeds


def _nhwc_case(rng, x, w, strides, pads, dil, bias, z, act, group=1):
    """One channels-last QConv of x (NCHW int8 data, fed NHWC) and w with
    random scales and a random requantize epilogue (_requant_epilogue's
    bias, z, act): (model, feeds, numpy's NHWC output)."""
    m, _, kh, kw = w.shape
    x_scale = np.float32(rng.uniform(0.01, 0.05))
    w_scale = rng.uniform(0.001, 0.01, size=m).astype(np.float32)
    mul = x_scale * w_scale
    acc = _np_conv_acc(x, w, strides, pads, dil, group)
    ep, attrs = _requant_epilogue(rng, acc, mul, m, bias, z, act)
    attrs.update(x_scale=float(x_scale), w_scale=[float(s) for s in w_scale], strides=list(strides),
                 dilations=list(dil), pads=list(pads), kernel_shape=[kh, kw])
    if group > 1:
        attrs["group"] = group
    model, feeds = _nhwc_model(_nhwc(x), w, ep, attrs)
    return model, feeds, _nhwc(_np_epilogue(acc, 1, mul, ep))


def _nhwc_kernel(tier, c):
    """The profile's kernel name of a channels-last QConv with c input
    channels on `tier` (a prefix, and the part that must follow it)."""
    if tier == "ref":
        return "qconv_s8_ref", " nhwc"
    if tier == "vnni" and c % 4 == 0:
        return "qconv_s8_avx512vnni", " nhwc(vpdpbusd"
    return QCONV_KERNEL[tier], " nhwc(via nchw transposes)"


# (N, C, H, W, M, KH, KW, strides, pads [t, l, b, r], dilations)
NHWC_SHAPES = [
    (1, 64, 7, 7, 64, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1)),
    (1, 64, 9, 11, 256, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1)),
    (2, 64, 7, 7, 40, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1)),      # M not a multiple of 64
    (1, 32, 9, 11, 24, 1, 1, (2, 2), (0, 0, 0, 0), (1, 1)),     # strided 1x1 (ResNet's shortcut)
    (1, 16, 9, 11, 24, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (3, 8, 9, 11, 72, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1)),      # batch 3, a second block of 8 channels
    (2, 32, 8, 8, 32, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),      # 32 outputs: the two-column tile
    (1, 16, 6, 7, 160, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1)),     # 160 = 64 + 64 + 32: a two-column last block
    (1, 4, 23, 21, 16, 7, 7, (2, 2), (3, 3, 3, 3), (1, 1)),     # a stem's 7x7/2 on 4 channels
    (1, 16, 1, 1, 8, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),       # 1x1 image: every tap but one padded
    (3, 6, 7, 7, 10, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),       # C % 4 != 0: VNNI falls back to NCHW
    (1, 8, 10, 9, 12, 3, 3, (2, 1), (1, 0, 2, 1), (2, 1)),      # asymmetric pads, dilation
]
# (bias, int8 residual, activation)
NHWC_EPILOGUES = {
    "i32_relu": ("i32", False, "Relu"),
    "f32_z": ("f32", True, None),
    "i32_z_clip": ("i32", True, "Clip"),
    "clip": (None, False, "Clip"),
    "f32_none": ("f32", False, None),
}


def _attr(node, name):
    """A node attribute's value from Graph.nodes() ((type, value) pairs), or None."""
    a = node["attrs"].get(name)
    return None if a is None else a[1]


def _shape_id(s):
    return "x".join(map(str, s[:7])) + f"_s{s[7][0]}{s[7][1]}"


@pytest.mark.parametrize("tier", KERNEL_TIERS)
@pytest.mark.parametrize("epilogue", list(NHWC_EPILOGUES))
@pytest.mark.parametrize("shape", NHWC_SHAPES, ids=_shape_id)
def test_qconv_channels_last_vs_numpy_bit_exact(shape, epilogue, tier):
    """A channels-last QConv whose input is a graph input (sign unknown: the
    VNNI kernel's +128 path) equals numpy's NCHW result transposed, on every
    tier; with edges=True every input and weight is -128 or 127."""
    _require_tier(tier)
    seed = int(np.random.default_rng().integers(2**32))
    rng = np.random.default_rng(seed)
    n, c, h, w_, m, kh, kw, strides, pads, dil = shape
    bias, z, act = NHWC_EPILOGUES[epilogue]
    for edges in (False, True):
        x = _int8_data(rng, (n, c, h, w_), edges)
        w = _int8_data(rng, (m, c, kh, kw), edges)
        model, feeds, want = _nhwc_case(rng, x, w, strides, pads, dil, bias, z, act)
        engine = _engine(model, tier=tier)
        got = engine.run(feeds)["y"]
        msg = f"{tier}, edges={edges}, seed={seed}"
        assert got.dtype == np.int8 and got.shape == want.shape, msg
        np.testing.assert_array_equal(got, want, err_msg=msg)
        if np.any(want != 0):
            assert np.any(np.abs(want.astype(np.int32)) >= 127), msg  # saturation exercised
        kernel = engine.profile(feeds, runs=1)[0]["kernel"]
        prefix, mode = _nhwc_kernel(tier, c)
        assert kernel.startswith(prefix) and mode in kernel, kernel
        if tier == "vnni" and c % 4 == 0:
            assert "+128 input" in kernel, kernel


# Depthwise (group = C = M): (N, C, H, W, KH, KW, strides, pads, dilations).
# Blocks of 64 channels (32: part of one; 144 = 64 + 64 + 16), taps in
# groups of 4 (3x3: 9 -> 12, ConvNeXt's 7x7: 49 -> 52, 2x2: exactly 4).
DW_SHAPES = [
    (1, 32, 9, 11, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (2, 64, 7, 7, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1)),
    (1, 144, 8, 9, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (1, 96, 10, 10, 7, 7, (1, 1), (3, 3, 3, 3), (1, 1)),
    (1, 40, 9, 13, 5, 5, (2, 2), (2, 2, 2, 2), (1, 1)),
    (1, 24, 8, 9, 3, 3, (2, 1), (1, 0, 2, 1), (2, 1)),  # asymmetric pads, dilation
    (3, 13, 5, 6, 2, 2, (1, 1), (0, 0, 0, 0), (1, 1)),   # 13 channels, batch 3
    (1, 16, 1, 1, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),   # every tap but one padded
]


@pytest.mark.parametrize("tier", KERNEL_TIERS)
@pytest.mark.parametrize("epilogue", list(NHWC_EPILOGUES))
@pytest.mark.parametrize("shape", DW_SHAPES, ids=lambda s: "x".join(map(str, s[:6])) + f"_s{s[6][0]}{s[6][1]}")
def test_qconv_channels_last_depthwise_vs_numpy_bit_exact(shape, epilogue, tier):
    """A channels-last depthwise QConv (the VNNI tier's NHWC depthwise
    kernel, 64 channels of a position at a time; the others through their
    NCHW kernels) equals numpy's grouped NCHW result transposed, with signed
    inputs (the +128 path) and at the int8 extremes."""
    _require_tier(tier)
    seed = int(np.random.default_rng().integers(2**32))
    rng = np.random.default_rng(seed)
    n, c, h, w_, kh, kw, strides, pads, dil = shape
    bias, z, act = NHWC_EPILOGUES[epilogue]
    for edges in (False, True):
        x = _int8_data(rng, (n, c, h, w_), edges)
        w = _int8_data(rng, (c, 1, kh, kw), edges)
        model, feeds, want = _nhwc_case(rng, x, w, strides, pads, dil, bias, z, act, group=c)
        engine = _engine(model, tier=tier)
        got = engine.run(feeds)["y"]
        msg = f"{tier}, edges={edges}, seed={seed}"
        assert got.dtype == np.int8 and got.shape == want.shape, msg
        np.testing.assert_array_equal(got, want, err_msg=msg)
        kernel = engine.profile(feeds, runs=1)[0]["kernel"]
        if tier == "vnni":
            assert "nhwc depthwise(vpdpbusd, +128 input)" in kernel, kernel
        elif tier == "ref":
            assert kernel.startswith("qconv_s8_ref") and " nhwc" in kernel, kernel
        else:
            assert "nhwc(via nchw transposes)" in kernel, kernel


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_qconv_channels_last_random_geometries_bit_exact(threads):
    """40 random geometries (whole channel quads: the VNNI kernel's; kernel
    1-5 wide, strides 1-3, dilations 1-2, pads up to the kernel, 1-3 images,
    1-200 output channels) on the best tier, with 1-3 threads (the kernel's
    task cut depends on the thread count), against numpy."""
    seed = int(np.random.default_rng().integers(2**32))
    rng = np.random.default_rng(seed)
    for case in range(40):
        n, c, m = int(rng.integers(1, 4)), 4 * int(rng.integers(1, 13)), int(rng.integers(1, 201))
        kh, kw = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        strides = [int(rng.integers(1, 4)), int(rng.integers(1, 4))]
        dil = [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
        pads = [int(rng.integers(0, kh)), int(rng.integers(0, kw)), int(rng.integers(0, kh)), int(rng.integers(0, kw))]
        h = int(rng.integers((kh - 1) * dil[0] + 1, 15)) + max(0, -pads[0] - pads[2])
        w_ = int(rng.integers((kw - 1) * dil[1] + 1, 15)) + max(0, -pads[1] - pads[3])
        x = _int8_data(rng, (n, c, h, w_), False)
        w = _int8_data(rng, (m, c, kh, kw), False)
        model, feeds, want = _nhwc_case(rng, x, w, strides, pads, dil, ("i32", "f32", None)[case % 3],
                                        case % 2 == 0, ("Relu", None, "Clip")[case % 3])
        graph, _ = onnx_io.graph_from_onnx(model)
        got = pyengine.Engine(graph, {"precision": "int8", "backend": "cpu"}, num_threads=threads).run(feeds)["y"]
        geometry = (n, c, h, w_, m, kh, kw, strides, dil, pads)
        np.testing.assert_array_equal(got, want, err_msg=f"seed {seed}, case {case}: {geometry}")


def _nonneg_chain(rng, x, w1, w2, pad, first_nhwc, ep2_kind, zp=0):
    """QConv(x, w1) {Relu, requant, y_zero_point zp} -> QConv(., w2)
    {channels_last=1, x_zero_point zp}: the second conv's input is >= zp >= 0.
    first_nhwc: the first conv is channels-last too (it hands its NHWC
    output over directly); else NCHW followed by an int8 Transpose, which the
    kernel must see through. Returns (model, feeds, want, kernel names)."""
    n, c, h, w_ = x.shape
    m1, m2 = w1.shape[0], w2.shape[0]
    xs1, ws1 = np.float32(0.02), rng.uniform(0.001, 0.01, size=m1).astype(np.float32)
    acc1 = _np_conv_acc(x, w1, (1, 1), (pad,) * 4, (1, 1), 1)
    ep1 = {"act": "Relu"}
    v1 = _np_epilogue(acc1, 1, xs1 * ws1, ep1)
    ep1["y_scale"] = np.float32(max(v1.max(), 1e-3) / 200)  # many saturate at 127
    if zp:
        ep1["y_zp"] = zp
    h1 = _np_epilogue(acc1, 1, xs1 * ws1, ep1)
    assert h1.min() >= zp and (h1 == 127).any()
    attrs1 = dict(x_scale=float(xs1), w_scale=[float(v) for v in ws1], activation="Relu",
                  y_scale=float(ep1["y_scale"]), pads=[pad] * 4)
    if zp:
        attrs1["y_zero_point"] = zp
    xs2, ws2 = np.float32(ep1["y_scale"]), rng.uniform(0.001, 0.01, size=m2).astype(np.float32)
    acc2 = _np_conv_acc(h1.astype(np.int64) - zp, w2, (1, 1), (pad,) * 4, (1, 1), 1)
    bias, z, act = NHWC_EPILOGUES[ep2_kind]
    ep2, attrs2 = _requant_epilogue(rng, acc2, xs2 * ws2, m2, bias, z, act, y_zp=-zp, z_zp=zp)
    attrs2.update(x_scale=float(xs2), w_scale=[float(v) for v in ws2], pads=[pad] * 4)
    if zp:
        attrs2["x_zero_point"] = zp
    want = _nhwc(_np_epilogue(acc2, 1, xs2 * ws2, ep2))

    inits = [_tensor("w1", w1), _tensor("w2", w2)]
    feeds = {"x": _nhwc(x) if first_nhwc else x}
    inputs = [_vi("x", np.int8, feeds["x"].shape)]
    nodes = [helper.make_node("QConv", ["x", "w1"], ["h"], domain="pyengine", name="first",
                              **(dict(attrs1, channels_last=1) if first_nhwc else attrs1))]
    h_in = "h"
    if not first_nhwc:
        nodes.append(helper.make_node("Transpose", ["h"], ["h_nhwc"], name="to_nhwc", perm=[0, 2, 3, 1]))
        h_in = "h_nhwc"
    names = [h_in, "w2"]
    b = ep2.get("bias_i32", ep2.get("bias_f32"))
    names.append("b" if b is not None else "")
    if b is not None:
        inits.append(_tensor("b", b))
    if ep2.get("z") is not None:
        names.append("z")
        feeds["z"] = _nhwc(ep2["z"])
        inputs.append(_vi("z", np.int8, feeds["z"].shape))
    while names[-1] == "":
        names.pop()
    nodes.append(helper.make_node("QConv", names, ["y"], domain="pyengine", name="second", channels_last=1,
                                  **attrs2))
    g = helper.make_graph(nodes, "chain", inputs, [helper.make_tensor_value_info("y", TensorProto.INT8, None)],
                          initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("pyengine", 1)])
    return model, feeds, want


@pytest.mark.parametrize("tier", KERNEL_TIERS)
@pytest.mark.parametrize("first_nhwc", [True, False], ids=["nhwc_producer", "via_transpose"])
@pytest.mark.parametrize("zp", [0, 9], ids=["zp0", "zp9"])
@pytest.mark.parametrize("shape", [(1, 13, 11, 9, 24, 72, 3, 1), (2, 16, 7, 7, 64, 40, 1, 0),
                                   (1, 4, 9, 10, 8, 20, 3, 1), (3, 5, 6, 5, 6, 12, 3, 1)],
                         ids=lambda s: "x".join(map(str, s)))
def test_qconv_channels_last_nonneg_input_bit_exact(shape, zp, first_nhwc, tier):
    """The u8 path: a channels-last QConv reading a requantized Relu output
    (values zp..127), handed over by a channels-last producer or through an
    int8 Transpose, uses the bytes unshifted on the VNNI tier (the profile
    says "u8 input"); with an input zero point it pads with x_zp. Bits equal
    numpy's on every tier."""
    _require_tier(tier)
    seed = int(np.random.default_rng().integers(2**32))
    rng = np.random.default_rng(seed)
    n, c, h, w_, m1, m2, k, pad = shape
    for edges, ep2 in ((False, "i32_z_clip"), (True, "f32_none"), (False, "i32_relu")):
        x = _int8_data(rng, (n, c, h, w_), edges)
        w1 = _int8_data(rng, (m1, c, k, k), edges)
        w2 = _int8_data(rng, (m2, m1, k, k), edges)
        model, feeds, want = _nonneg_chain(rng, x, w1, w2, pad, first_nhwc, ep2, zp)
        engine = _engine(model, tier=tier)
        msg = f"{tier}, edges={edges}, {ep2}, seed={seed}"
        np.testing.assert_array_equal(engine.run(feeds)["y"], want, err_msg=msg)
        kernels = {p["name"]: p["kernel"] for p in engine.profile(feeds, runs=1)}
        prefix, mode = _nhwc_kernel(tier, m1)
        assert kernels["second"].startswith(prefix) and mode in kernels["second"], kernels
        if tier == "vnni" and m1 % 4 == 0:
            assert "u8 input" in kernels["second"], kernels
        if zp:
            assert "zero-point input" in kernels["second"], kernels


@pytest.mark.parametrize("tier", KERNEL_TIERS)
def test_qconv_channels_last_weights_fed_at_run_time(tier):
    """Weights arriving as a graph input are packed per call (the NHWC VNNI
    blocks, or the fallback tier's panels): the same bits as constants."""
    _require_tier(tier)
    rng = np.random.default_rng()
    for c in (16, 6):
        x = _int8_data(rng, (2, c, 9, 7), False)
        w = _int8_data(rng, (40, c, 3, 3), False)
        x_scale, w_scale = np.float32(0.02), rng.uniform(0.001, 0.01, size=40).astype(np.float32)
        mul = x_scale * w_scale
        # An input zero point too: the SIMD tiers fold it with the weights' sums, per call here.
        acc = _np_conv_acc(x.astype(np.int64) - 3, w, (1, 2), (1, 1, 1, 1), (1, 1), 1)
        ep, attrs = _requant_epilogue(rng, acc, mul, 40, "f32", True, "Relu")
        attrs.update(x_scale=float(x_scale), w_scale=[float(s) for s in w_scale], pads=[1, 1, 1, 1],
                     strides=[1, 2], x_zero_point=3)
        want = _nhwc(_np_epilogue(acc, 1, mul, ep))
        const_model, feeds = _nhwc_model(_nhwc(x), w, ep, attrs)
        input_model, feeds_w = _nhwc_model(_nhwc(x), w, ep, attrs, weights_as_input=True)
        np.testing.assert_array_equal(_engine(const_model, tier=tier).run(feeds)["y"], want, err_msg=f"{tier}, C={c}")
        np.testing.assert_array_equal(_engine(input_model, tier=tier).run(feeds_w)["y"], want,
                                      err_msg=f"{tier}, C={c}, weights at run time")


def _bad_model(rng, x_shape, w_shape, **attrs):
    x = rng.integers(-128, 128, size=x_shape).astype(np.int8)
    w = rng.integers(-128, 128, size=w_shape).astype(np.int8)
    base = dict(x_scale=0.1, w_scale=[0.1], y_scale=0.5)
    base.update(attrs)
    base = {k: v for k, v in base.items() if v is not None}
    node = helper.make_node("QConv", ["x", "w"], ["y"], domain="pyengine", name="bad_qconv", channels_last=1, **base)
    g = helper.make_graph([node], "bad", [_vi("x", np.int8, x.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.INT8, None)], initializer=[_tensor("w", w)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("pyengine", 1)])
    return model, {"x": x}


@pytest.mark.parametrize("tier", ["ref", "vnni"])
@pytest.mark.parametrize("case", ["group2", "5d", "no_y_scale"])
def test_qconv_channels_last_invalid_is_an_error_naming_the_node(case, tier):
    """channels_last with group 2 (not depthwise), a 5-D (3-D conv) input or
    a float output (no y_scale) is refused with the node named (ops.def:
    2-D, one group or depthwise, requantized)."""
    _require_tier(tier)
    rng = np.random.default_rng()
    model, feeds = {
        "group2": lambda: _bad_model(rng, (1, 7, 7, 8), (8, 4, 3, 3), group=2, pads=[1, 1, 1, 1]),
        "5d": lambda: _bad_model(rng, (1, 2, 7, 7, 8), (8, 8, 1, 3, 3)),
        "no_y_scale": lambda: _bad_model(rng, (1, 7, 7, 8), (8, 8, 3, 3), y_scale=None),
    }[case]()
    with pytest.raises(pyengine.PyengineError, match="bad_qconv") as info:
        _engine(model, tier=tier).run(feeds)
    assert "channels_last" in str(info.value)


def test_qconv_channels_last_float_residual_is_an_error():
    """A channels-last residual must be int8 (ops.def)."""
    rng = np.random.default_rng()
    x = rng.integers(-128, 128, size=(1, 8, 5, 5)).astype(np.int8)
    w = rng.integers(-128, 128, size=(8, 8, 1, 1)).astype(np.int8)
    node = helper.make_node("QConv", ["x", "w", "", "z"], ["y"], domain="pyengine", name="float_z", channels_last=1,
                            x_scale=0.1, w_scale=[0.1], y_scale=0.5)
    g = helper.make_graph([node], "fz", [_vi("x", np.int8, (1, 5, 5, 8)), _vi("z", np.float32, (1, 5, 5, 8))],
                          [helper.make_tensor_value_info("y", TensorProto.INT8, None)], initializer=[_tensor("w", w)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("pyengine", 1)])
    with pytest.raises(pyengine.PyengineError, match="float_z.*int8"):
        _engine(model).run({"x": _nhwc(x), "z": np.zeros((1, 5, 5, 8), np.float32)})


# ---------------------------------------------------------------------------
# The int8_channels_last pass

def test_int8_layout_setting():
    """set_int8_layout / int8_layout round trip, a bad name is an
    InvalidArgumentError, cpu_info reports it; a bad PYENGINE_INT8_LAYOUT
    fails an int8 build with a message naming the variable (a fresh process:
    the variable is read once)."""
    for name in ("nchw", "nhwc", "auto"):
        _core.set_int8_layout(name)
        assert _core.int8_layout() == name and _core.cpu_info()["int8_layout"] == name
    with pytest.raises(pyengine.InvalidArgumentError, match="int8 layout 'NHWC'"):
        _core.set_int8_layout("NHWC")
    info = _core.cpu_info()
    # auto: the VNNI QConv tier, not AMX (on, or emulated for the tests).
    assert info["int8_channels_last"] == (info["use_avx512_vnni"] and info["amx_use"] == "off"
                                          or info["use_avx512_vnni"] and info["amx_use"] == "on"
                                          and not info["use_amx"])
    code = textwrap.dedent("""
        import pyengine
        from onnx import TensorProto, helper
        from pyengine import _core, onnx_io
        from pyengine.optimizer import optimize_graph
        print(_core.cpu_info()["int8_layout"])
        vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [1])
        m = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [vi("x")], [vi("y")]))
        g, _ = onnx_io.graph_from_onnx(m)
        try:
            optimize_graph(g, pipeline="int8")
        except pyengine.InvalidArgumentError as e:
            print("raised", e)
        """)
    env = dict(os.environ, PYENGINE_INT8_LAYOUT="sideways", PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "invalid: PYENGINE_INT8_LAYOUT='sideways'" in out.stdout, out.stdout
    assert "raised PYENGINE_INT8_LAYOUT='sideways': expected auto, nchw or nhwc" in out.stdout, out.stdout


def _relu_conv(rng, name, x, c, m, k=3, z=None, y_scale=0.05, **extra):
    """A QConv node {Relu, y_scale} and its weights (in_channels c)."""
    w = rng.integers(-128, 128, size=(m, c, k, k)).astype(np.int8)
    ins = [x, f"{name}_w"] + (["", z] if z else [])
    attrs = dict(x_scale=0.05, w_scale=[float(v) for v in rng.uniform(0.0005, 0.002, m)], activation="Relu",
                 y_scale=y_scale, pads=[k // 2] * 4)
    if z:
        attrs["z_scale"] = 0.05
    attrs.update(extra)
    return helper.make_node("QConv", ins, [f"{name}_y"], domain="pyengine", name=name, **attrs), _tensor(f"{name}_w", w)


def _block_chain(rng, c=8, h=9, w=10, convs=4, extra_reader=True):
    """stem (graph input x with 6 channels: not whole channel quads, so not
    convertible) -> `convs - 1`
    convertible QConvs, the last with a residual from the first of them; the
    stem's output also feeds an int8 MaxPool graph output (a reader that
    stays NCHW), and the last conv's output is the graph output "y"."""
    nodes, inits = [], []
    n, t = _relu_conv(rng, "stem", "x", 6, c)
    nodes.append(n)
    inits.append(t)
    prev, first = "stem_y", None
    for i in range(1, convs):
        z = first if i == convs - 1 and convs > 2 else None
        n, t = _relu_conv(rng, f"c{i}", prev, c, c, z=z)
        nodes.append(n)
        inits.append(t)
        prev = f"c{i}_y"
        first = first or prev
    nodes.append(helper.make_node("Identity", [prev], ["y"], name="out"))
    outputs = [helper.make_tensor_value_info("y", TensorProto.INT8, None)]
    if extra_reader:
        nodes.append(helper.make_node("MaxPool", ["c1_y"], ["pooled"], name="pool", kernel_shape=[2, 2]))
        outputs.append(helper.make_tensor_value_info("pooled", TensorProto.INT8, None))
    g = helper.make_graph(nodes, "chain", [_vi("x", np.int8, ("N", 6, h, w))], outputs, initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("pyengine", 1)])
    return model


def _run_graph(graph, feeds, tier="ref"):
    with _tier(tier):
        return pyengine.Engine(graph, {"precision": "int8", "backend": "cpu"}).run(feeds)


def test_pass_converts_a_run_of_three_and_keeps_outputs():
    """stem -> c1 -> c2 -> c3 (z = c1), c1 also read by a MaxPool: c1..c3
    go channels-last (one component of 3), the stem (6 input channels) stays
    NCHW. Transposes: one in (the stem's output), back for c1 (the MaxPool
    reads it) and c3 (the graph output, which keeps its name); the pass is
    idempotent, and the outputs are bit-identical to the graph without it on
    every tier, at batch 1 and 3."""
    rng = np.random.default_rng()
    model = _block_chain(rng)
    graph, _ = onnx_io.graph_from_onnx(model)
    _core.set_int8_layout("nhwc")
    out, report = optimize_graph(graph, passes=["eliminate_identity", "int8_channels_last", "eliminate_dead_code"],
                                 verify=True, explain=True)
    nodes = {n["name"]: n for n in out.nodes()}
    for name in ("c1", "c2", "c3"):
        assert _attr(nodes[name], "channels_last") == 1, nodes[name]
    assert _attr(nodes["stem"], "channels_last") is None
    transposes = {n["name"]: n for n in out.nodes() if n["op_type"] == "Transpose"}
    # (eliminate_identity gave c3's output the graph output's name, y.)
    assert sorted(transposes) == ["c1_y_to_nchw", "stem_y_to_nhwc", "y_to_nchw"], sorted(transposes)
    assert [o[0] for o in out.outputs()] == ["y", "pooled"]
    assert list(out.outputs()[0][2]) == [-1, 8, 9, 10]  # NCHW, as before
    stats = {p["name"]: p for p in report["passes"]}
    assert stats["int8_channels_last"]["count"] == 3
    refused = [r for r in report["refused"] if r["pass"] == "int8_channels_last"]
    assert any(r["node"] == "stem" and "6 input channels are not a multiple of 4" in r["reason"] for r in refused), refused
    again, rep2 = optimize_graph(out, passes=["int8_channels_last"], verify=True)
    assert {p["name"]: p for p in rep2["passes"]}["int8_channels_last"]["count"] == 0
    assert again.to_text() == out.to_text()
    for n in (1, 3):
        x = rng.integers(-128, 128, size=(n, 6, 9, 10)).astype(np.int8)
        want = _run_graph(graph, {"x": x})
        assert len(np.unique(want["y"])) > 20 and len(np.unique(want["pooled"])) > 20
        for tier in _available_tiers(KERNEL_TIERS):
            got = _run_graph(out, {"x": x}, tier)
            for key in want:
                np.testing.assert_array_equal(got[key], want[key], err_msg=f"{tier}, batch {n}, {key}")


def test_pass_leaves_a_run_of_two_and_says_why():
    """Two convertible convs are not worth two Transposes: nothing changes,
    and each is refused with the reason."""
    rng = np.random.default_rng()
    graph, _ = onnx_io.graph_from_onnx(_block_chain(rng, convs=3, extra_reader=False))
    _core.set_int8_layout("nhwc")
    out, report = optimize_graph(graph, passes=["int8_channels_last"], verify=True)
    assert "Transpose" not in _op_types(out) and "channels_last" not in out.to_text()
    refused = {r["node"]: r["reason"] for r in report["refused"] if r["pass"] == "int8_channels_last"}
    for name in ("c1", "c2"):
        assert "has 2 convs (at least 3 pay for the Transposes" in refused[name], refused


def test_pass_follows_the_layout_setting():
    """nchw: never; nhwc: always; auto: where cpu_info says the int8
    pipeline converts (the VNNI tier without AMX)."""
    rng = np.random.default_rng()
    graph, _ = onnx_io.graph_from_onnx(_block_chain(rng))
    for layout in ("nchw", "nhwc", "auto"):
        _core.set_int8_layout(layout)
        out, _ = optimize_graph(graph, passes=["int8_channels_last"], verify=True)
        converted = "Transpose" in _op_types(out)
        expect = {"nchw": False, "nhwc": True, "auto": _core.cpu_info()["int8_channels_last"]}[layout]
        assert converted == expect, layout
    # auto follows the tier in force when the pipeline runs.
    _core.set_int8_layout("auto")
    with _tier("avx2"):
        out, _ = optimize_graph(graph, passes=["int8_channels_last"])
    assert "Transpose" not in _op_types(out)


def test_pass_skips_mini_resnet_block_of_one_convertible_conv():
    """The Q/DQ mini ResNet (test_int8_kernels) through the int8 pipeline:
    its block's second conv has a float output (GlobalAveragePool reads it)
    and its stem 3 input channels, so one conv could go channels-last: it is
    refused, and the graph is what the nchw layout gives."""
    from test_int8_kernels import _mini_resnet_qdq

    rng = np.random.default_rng()
    model = _mini_resnet_qdq(rng)
    graph, _ = onnx_io.graph_from_onnx(model)
    _core.set_int8_layout("nhwc")
    out, report = optimize_graph(graph, pipeline="int8", verify=True)
    refused = [r for r in report["refused"] if r["pass"] == "int8_channels_last"]
    assert any("has 1 conv (" in r["reason"] for r in refused), refused
    _core.set_int8_layout("nchw")
    ref, _ = optimize_graph(graph, pipeline="int8")
    assert out.to_text() == ref.to_text()


@pytest.fixture(scope="module")
def resnet18_int8():
    """The zoo ResNet-18 (64x64) built for int8 with each layout, from one
    calibration: {layout: engine}, the input name and a batch of 2."""
    from pyengine import zoo

    saved = _core.int8_layout()
    model = zoo.build_model("resnet18", image_size=64)
    name = model.graph.input[0].name
    calib = [zoo.make_input(model, 1, seed=100 + i)[name] for i in range(2)]
    engines = {}
    try:
        for layout in ("nchw", "nhwc"):
            _core.set_int8_layout(layout)
            engines[layout] = pyengine.build(model, precision="int8", calibration_data=calib, report=False,
                                             progress=False)
    finally:
        _core.set_int8_layout(saved)
    x = np.random.default_rng().standard_normal((2, 3, 64, 64)).astype(np.float32)
    return engines, name, x


def test_zoo_resnet18_channels_last_graph(resnet18_int8):
    """The pass on ResNet-18: 18 of the 20 QConvs channels-last, all but the
    stem (its input is the signed quantized image) and the last conv (see
    below). Three int8 Transposes:
    one after the stem's MaxPool, and two before the last conv, which stays
    NCHW because its output is float (GlobalAveragePool reads it in float,
    no requantize): back for its input and for its residual."""
    engines, _, _ = resnet18_int8
    g = engines["nhwc"]._graph
    nodes = g.nodes()
    qconvs = [n for n in nodes if n["op_type"] == "QConv"]
    nhwc = [n for n in qconvs if _attr(n, "channels_last")]
    assert len(qconvs) == 20 and len(nhwc) == 18
    nchw = [n for n in qconvs if not _attr(n, "channels_last")]
    producers = {o: n for n in nodes for o in n["outputs"]}
    dtypes = {v[0]: v[1] for v in g.values()}
    transposes = [n for n in nodes if n["op_type"] == "Transpose"]
    assert len(transposes) == 3, [t["name"] for t in transposes]
    assert all(dtypes[t["outputs"][0]] == TensorProto.INT8 for t in transposes)
    into = [t for t in transposes if list(_attr(t, "perm")) == [0, 2, 3, 1]]
    back = [t for t in transposes if list(_attr(t, "perm")) == [0, 3, 1, 2]]
    assert len(into) == 1 and producers[into[0]["inputs"][0]]["op_type"] == "MaxPool"
    stem, last = sorted(nchw, key=lambda n: nodes.index(n))
    assert sorted(t["outputs"][0] for t in back) == sorted(i for i in last["inputs"] if i in producers and
                                                           producers[i]["op_type"] == "Transpose")
    assert dtypes[last["outputs"][0]] == TensorProto.FLOAT
    assert _op_types(engines["nchw"]._graph).count("Transpose") == 0


def test_zoo_resnet18_layouts_identical_across_tiers(resnet18_int8, tmp_path):
    """The nhwc graph and the nchw graph give the same bits, each compiled
    with every tier the CPU has (nhwc's convs on the ref loops, the NHWC
    VNNI kernel, or an NCHW tier between transposes); the profile names the
    channels-last kernels; a saved and reloaded plan gives the same bits."""
    engines, name, x = resnet18_int8
    want = engines["nchw"].run({name: x})
    for tier in _available_tiers(KERNEL_TIERS):
        with _tier(tier):
            eng = pyengine.Engine(engines["nhwc"]._graph, engines["nhwc"].metadata, num_threads=2)
        got = eng.run({name: x})
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{tier}, output {key}")
        kernels = [p["kernel"] for p in eng.profile({name: x}, runs=1) if p["op"] == "QConv"]
        prefix, mode = _nhwc_kernel(tier, 64)
        assert sum(k.startswith(prefix) and mode in k for k in kernels) == 18, kernels
        if tier == "vnni":
            assert sum("nhwc(vpdpbusd, u8 input)" in k for k in kernels) == 18, kernels
    path = tmp_path / "resnet18_nhwc.plan"
    engines["nhwc"].save(path)
    _core.set_int8_layout("nhwc")
    loaded = pyengine.load(path)
    assert "channels_last" in loaded.graph_text()
    got = loaded.run({name: x})
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=f"loaded plan, output {key}")


@pytest.mark.parametrize("built", ["nchw", "nhwc"])
def test_zoo_resnet18_plan_takes_the_loading_machines_layout(resnet18_int8, tmp_path, built):
    """A plan's int8 layout is the loading machine's (plan loading runs
    fit_int8_layout): a plan built in either layout and loaded with either
    setting has exactly the graph a build with that setting makes (names
    included), and the same bits. (A plan built channels-last on a VNNI
    machine would otherwise run each conv between two transposes on an
    AVX2 one.)"""
    engines, name, x = resnet18_int8
    want = engines["nchw"].run({name: x})
    path = tmp_path / f"resnet18_{built}.plan"
    engines[built].save(path)
    for at in ("nchw", "nhwc"):
        _core.set_int8_layout(at)
        loaded = pyengine.load(path)
        assert loaded.graph_text() == engines[at].graph_text(), f"built {built}, loaded {at}"
        got = loaded.run({name: x})
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"built {built}, loaded {at}: {key}")
        graph, _ = _core.plan_from_bytes(path.read_bytes(), "in memory")  # the embedding API's path
        assert graph.to_text() == engines[at].graph_text(), f"built {built}, from bytes at {at}"


def test_channels_first_undoes_the_pass():
    """int8_channels_first on the pass's output gives back the graph before
    it, line for line (names, shapes, attributes; the nodes in another
    topological order), and is idempotent; it
    does nothing while the setting says channels-last."""
    rng = np.random.default_rng()
    graph, _ = onnx_io.graph_from_onnx(_block_chain(rng))
    _core.set_int8_layout("nchw")
    before, _ = optimize_graph(graph, passes=["eliminate_identity"], verify=True)
    _core.set_int8_layout("nhwc")
    nhwc, _ = optimize_graph(before, passes=["int8_channels_last"], verify=True)
    kept, rep = optimize_graph(nhwc, passes=["int8_channels_first"], verify=True)
    assert {p["name"]: p for p in rep["passes"]}["int8_channels_first"]["count"] == 0
    assert kept.to_text() == nhwc.to_text()
    _core.set_int8_layout("nchw")
    back, rep = optimize_graph(nhwc, passes=["int8_channels_first"], verify=True)
    assert {p["name"]: p for p in rep["passes"]}["int8_channels_first"]["count"] == 3
    assert sorted(back.to_text().splitlines()) == sorted(before.to_text().splitlines())  # (node order may differ)
    again, rep = optimize_graph(back, passes=["int8_channels_first"], verify=True)
    assert {p["name"]: p for p in rep["passes"]}["int8_channels_first"]["count"] == 0
    x = rng.integers(-128, 128, size=(2, 6, 9, 10)).astype(np.int8)
    want = _run_graph(before, {"x": x})
    got = _run_graph(back, {"x": x}, _available_tiers(KERNEL_TIERS)[-1])
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_channels_first_keeps_nhwc_graph_inputs_and_outputs():
    """What the forward pass never makes: a graph whose input and output are
    NHWC tensors read and written by channels-last QConvs (one with a
    residual that is also an NHWC graph input). Going NCHW, the input gets
    a Transpose to NCHW, the output a Transpose back (its name and NHWC
    shape kept), and the bits stay."""
    rng = np.random.default_rng()
    c, h, w = 8, 7, 9
    nodes, inits = [], []
    prev = "x"
    for i in range(3):
        wt = rng.integers(-128, 128, size=(c, c, 3, 3)).astype(np.int8)
        inits.append(_tensor(f"w{i}", wt))
        ins = [prev, f"w{i}"] + (["", "z"] if i == 2 else [])
        attrs = dict(x_scale=0.05, w_scale=[float(v) for v in rng.uniform(0.0005, 0.002, c)], y_scale=0.05,
                     pads=[1, 1, 1, 1], channels_last=1)
        if i == 2:
            attrs["z_scale"] = 0.05
        else:
            attrs["activation"] = "Relu"
        nodes.append(helper.make_node("QConv", ins, [f"y{i}"], domain="pyengine", name=f"c{i}", **attrs))
        prev = f"y{i}"
    g = helper.make_graph(nodes, "nhwc_io", [_vi("x", np.int8, ("N", h, w, c)), _vi("z", np.int8, ("N", h, w, c))],
                          [helper.make_tensor_value_info("y2", TensorProto.INT8, None),
                           helper.make_tensor_value_info("y0", TensorProto.INT8, None)], initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("pyengine", 1)])
    graph, _ = onnx_io.graph_from_onnx(model)
    _core.set_int8_layout("nchw")
    out, rep = optimize_graph(graph, passes=["int8_channels_first"], verify=True)
    assert {p["name"]: p for p in rep["passes"]}["int8_channels_first"]["count"] == 3
    assert "channels_last" not in out.to_text()
    assert _op_types(out).count("Transpose") == 4  # x and z in, y0 and y2 out
    assert [o[0] for o in out.outputs()] == ["y2", "y0"]
    assert [list(o[2]) for o in out.outputs()] == [[-1, h, w, c]] * 2
    feeds = {k: rng.integers(-128, 128, size=(2, h, w, c)).astype(np.int8) for k in ("x", "z")}
    want = _run_graph(graph, feeds)
    assert len(np.unique(want["y2"])) > 20
    for tier in _available_tiers(KERNEL_TIERS):
        got = _run_graph(out, feeds, tier)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{tier}: {key}")


def test_onnxruntime_u8_file_runs_channels_last_through_its_adds(tmp_path):
    """onnxruntime's u8s8 Q/DQ file of the zoo ResNet-18 (after its
    quant_pre_process, as its documentation asks): its residual adds stay
    separate QAdds, which join the channels-last run (elementwise, so either
    layout), and its inputs are signed int8 (u8 with zero point -128: the
    kernel's +128 form). The whole body goes channels-last with two
    Transposes (after the stem's MaxPool, and after the last QAdd, whose
    int8 output the classifier dequantizes), and the engine gives the NCHW
    engine's bits."""
    pytest.importorskip("onnxruntime.quantization")
    import qdq_models as qm
    from pyengine import zoo

    model = zoo.build_model("resnet18", image_size=32)
    src = tmp_path / "f.onnx"
    onnx.save(model, str(src))
    rng = np.random.default_rng()
    calib = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
    qm.ort_quantize(src, calib, tmp_path / "q.onnx", symmetric=False, name=model.graph.input[0].name)
    built = {}
    for layout in ("nchw", "nhwc"):
        _core.set_int8_layout(layout)
        built[layout] = pyengine.build(str(tmp_path / "q.onnx"), num_threads=2)
    ops = {k: e.metadata["optimizer"]["ops_after"] for k, e in built.items()}
    assert ops["nhwc"]["QAdd"] == ops["nchw"]["QAdd"] == 8, ops
    assert ops["nhwc"].get("Transpose") == 2 and "Transpose" not in ops["nchw"], ops
    x = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(built["nhwc"](x), built["nchw"](x))
    # Its channels-last plan loaded where channels-last does not pay: the
    # QAdds go back to NCHW with the convs, and the graph is the nchw build's.
    built["nhwc"].save(tmp_path / "q.plan")
    _core.set_int8_layout("nchw")
    loaded = pyengine.load(tmp_path / "q.plan")
    assert loaded.graph_text() == built["nchw"].graph_text()
    np.testing.assert_array_equal(loaded(x), built["nchw"](x))


def _inverted_residual_model(rng):
    """A float MobileNetV2-style body at 16x16: stem conv, two inverted
    residual blocks (1x1 expand + ReLU6, depthwise 3x3 + ReLU6, 1x1
    project; the first with the residual add, the second strided) and a 1x1
    head whose float output is the graph's (a pooling after it would run
    float kernels, whose tiers sum in other orders). Weights scaled to keep
    activations O(1)."""
    from onnx import numpy_helper

    inits, nodes = [], []

    def conv(name, x, cin, cout, k=1, stride=1, group=1, relu6=True):
        w = (rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / (cin // group * k * k))).astype(np.float32)
        b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")])
        nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [f"{name}_c"], name=name, group=group,
                                      kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4))
        if not relu6:
            return f"{name}_c"
        nodes.append(helper.make_node("Clip", [f"{name}_c", "zero", "six"], [f"{name}_y"], name=f"{name}_relu6"))
        return f"{name}_y"

    inits += [numpy_helper.from_array(np.float32(0), "zero"), numpy_helper.from_array(np.float32(6), "six")]
    h = conv("stem", "x", 3, 16, k=3)
    e = conv("b1_expand", h, 16, 64)
    d = conv("b1_dw", e, 64, 64, k=3, group=64)
    p = conv("b1_project", d, 64, 16, relu6=False)
    nodes.append(helper.make_node("Add", [p, h], ["b1_out"], name="b1_add"))
    e = conv("b2_expand", "b1_out", 16, 96)
    d = conv("b2_dw", e, 96, 96, k=3, stride=2, group=96)
    p = conv("b2_project", d, 96, 24, relu6=False)
    nodes.append(helper.make_node("Identity", [conv("head", p, 24, 80)], ["y"], name="out"))
    g = helper.make_graph(nodes, "inverted_residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                     [None, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_inverted_residual_depthwise_channels_last_end_to_end(tmp_path):
    """A MobileNetV2-style int8 network: with the channels-last layout its
    depthwise convs run channels-last (the VNNI tier's NHWC depthwise
    kernel, u8 inputs after ReLU6) inside one run with the 1x1 convs, and
    the network gives the NCHW layout's bits, on every tier the CPU has and
    through a plan saved in one layout and loaded in the other."""
    rng = np.random.default_rng(int(np.random.default_rng().integers(2**32)))
    model = _inverted_residual_model(rng)
    calib = [rng.standard_normal((2, 3, 16, 16)).astype(np.float32) for _ in range(2)]
    x = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)
    engines = {}
    for layout in ("nchw", "nhwc"):
        _core.set_int8_layout(layout)
        engines[layout] = pyengine.build(model, precision="int8", calibration_data=calib, report=False,
                                         progress=False, calibration_method="minmax")
    nodes = engines["nhwc"]._graph.nodes()
    dw = [n for n in nodes if n["op_type"] == "QConv" and (_attr(n, "group") or 1) > 1]
    assert len(dw) == 2 and all(_attr(n, "channels_last") for n in dw), [n["name"] for n in dw]
    assert not any(_attr(n, "channels_last") for n in engines["nchw"]._graph.nodes() if n["op_type"] == "QConv")
    want = engines["nchw"].run({"x": x})["y"]
    assert np.abs(want).max() > 0
    for tier in _available_tiers(KERNEL_TIERS):
        with _tier(tier):
            eng = pyengine.Engine(engines["nhwc"]._graph, engines["nhwc"].metadata, num_threads=2)
        np.testing.assert_array_equal(eng.run({"x": x})["y"], want, err_msg=tier)
        if tier == "vnni":
            kernels = [p["kernel"] for p in eng.profile({"x": x}, runs=1) if p["op"] == "QConv"]
            assert sum("nhwc depthwise(vpdpbusd, u8 input)" in k for k in kernels) == 2, kernels
    path = tmp_path / "inverted_residual_nhwc.plan"
    engines["nhwc"].save(path)
    _core.set_int8_layout("nchw")
    np.testing.assert_array_equal(pyengine.load(path).run({"x": x})["y"], want, err_msg="loaded as nchw")
