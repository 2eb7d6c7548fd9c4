"""Conv, FusedConv, Gemm, FusedGemm and MatMul against onnxruntime, and the
SIMD kernels (AVX2 and AVX-512 tiers) against the reference kernels.

Every case builds a single-node ONNX model with onnx.helper, runs it in
onnxruntime (the oracle), in pyengine with the ISA tier capped at each SIMD
tier the CPU has (avx2, avx512: set_isa_cap; tiers the CPU lacks are not
run), and in pyengine with the reference kernels (cap "ref"). Weights are
fed both as initializers (pre-packed in create()) and as graph inputs (packed
at run time). Tolerance: rtol 1e-4, atol 1e-4 everywhere (the accumulation
order differs between ORT, the packed SGEMM and the reference loops).
"""

import itertools
import zlib

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyengine
from pyengine import _core, onnx_io
from pyengine.optimizer import optimize_graph
from conftest import isa_tiers

ort = pytest.importorskip("onnxruntime")

RTOL = 1e-4
ATOL = 1e-4
OPSET = 17
HAVE_AVX2 = _core.cpu_info()["use_avx2"]


def _pick(*keys):
    """A deterministic pseudo-random int from the test's parameters, to vary
    secondary options (bias or not, alpha/beta) across cases."""
    return zlib.crc32(repr(keys).encode())


def _rng():
    return np.random.default_rng()


def _randn(*shape):
    return _rng().standard_normal(shape).astype(np.float32)


def _model(nodes, inputs, outputs, initializers=(), opsets=None):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    opsets = opsets or [helper.make_opsetid("", OPSET)]
    m = helper.make_model(g, opset_imports=opsets)
    m.ir_version = 8
    return m


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape) if shape is not None else None)


def _split_constants(arrays, as_inputs):
    """Returns (graph inputs, initializers, feeds) for the named arrays: the
    names in `as_inputs` become graph inputs, the rest initializers."""
    inputs, inits, feeds = [], [], {}
    for name, arr in arrays.items():
        if name in as_inputs:
            inputs.append(_vi(name, arr.shape))
            feeds[name] = arr
        else:
            inits.append(numpy_helper.from_array(arr, name))
    return inputs, inits, feeds


def _run_ort(model, feeds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


# The SIMD tiers this CPU and build have: each one runs every case.
SIMD_TIERS = [t for t in isa_tiers() if t != "ref"]


def _build_on_tier(model, tier, **options):
    """pyengine.build(model, **options) with the ISA tier capped at `tier`
    (kernels pick their tier at build time); the cap is restored after."""
    prev = _core.isa_cap()
    _core.set_isa_cap(tier)
    try:
        return pyengine.build(model, **options)
    finally:
        _core.set_isa_cap(prev)


def _run_pyengine(model, feeds, tier):
    engine = _build_on_tier(model, tier, optimize=False, num_threads=2)
    out = engine.run(feeds)
    kernel = engine.profile(feeds, runs=1)[0]["kernel"]
    return next(iter(out.values())), kernel


def _check(pe_model, feeds, expected, kernel_substr=None):
    """Runs pe_model with the ref kernels and with each SIMD tier the CPU has
    (avx2, avx512); all must match `expected` (ORT) and ref. kernel_substr
    names the AVX2 variant; on the AVX-512 tier "_avx2" reads "_avx512"
    (paths such as "im2col" or "winograd" must appear on every tier).
    Returns the highest tier's kernel description."""
    # The absolute tolerance grows with the output's scale: a float32 sum of
    # K terms of size s is off by about s * sqrt(K) * 6e-8 in any order, so
    # with K = 2700 and outputs near 100 (wino_k_blocks) differences of
    # 1e-4 are rounding, not bugs. Outputs up to 10 keep atol = 1e-4.
    atol = ATOL * max(1.0, float(np.abs(expected).max(initial=0.0)) / 10.0)
    ref, ref_kernel = _run_pyengine(pe_model, feeds, "ref")
    assert "ref" in ref_kernel, ref_kernel
    np.testing.assert_allclose(ref, expected, rtol=RTOL, atol=atol, err_msg="ref vs onnxruntime")
    fast_kernel = ref_kernel
    for tier in SIMD_TIERS:
        fast, fast_kernel = _run_pyengine(pe_model, feeds, tier)
        np.testing.assert_allclose(fast, expected, rtol=RTOL, atol=atol, err_msg=f"{fast_kernel} vs onnxruntime")
        np.testing.assert_allclose(fast, ref, rtol=RTOL, atol=atol, err_msg=f"{fast_kernel} vs ref")
        assert fast.shape == expected.shape and fast.dtype == np.float32
        if kernel_substr:
            want = kernel_substr.replace("_avx2", "_" + tier)
            assert want in fast_kernel or (tier == "avx512" and "depthwise" in fast_kernel
                                           and kernel_substr in fast_kernel), (want, fast_kernel)
    return fast_kernel


# ---------------------------------------------------------------------------
# Conv

# (id, X shape, W shape, attributes, expected AVX2 path)
CONV_CASES = [
    ("2d_3x3_pad1", (1, 3, 17, 17), (13, 3, 3, 3), dict(pads=[1, 1, 1, 1]), "im2col"),
    ("2d_1x1", (1, 127, 5, 5), (13, 127, 1, 1), {}, "pointwise"),
    ("2d_1x1_batch3", (3, 13, 17, 17), (127, 13, 1, 1), {}, "pointwise"),
    ("2d_1x1_stride2", (1, 13, 17, 17), (3, 13, 1, 1), dict(strides=[2, 2]), "im2col"),
    ("2d_7x7_s2_stem", (1, 3, 17, 17), (13, 3, 7, 7), dict(strides=[2, 2], pads=[3, 3, 3, 3]), "im2col"),
    ("2d_dilation2", (1, 3, 17, 17), (5, 3, 3, 3), dict(dilations=[2, 2], pads=[2, 2, 2, 2]), "im2col"),
    ("2d_dilation_stride", (3, 5, 17, 13), (4, 5, 3, 2), dict(dilations=[2, 3], strides=[2, 3], pads=[1, 0, 2, 3]),
     "im2col"),
    ("2d_asym_pads", (1, 3, 17, 17), (13, 3, 3, 3), dict(pads=[0, 1, 2, 1]), "im2col"),
    ("2d_strides_2_1", (3, 3, 17, 5), (13, 3, 3, 3), dict(strides=[2, 1], pads=[1, 1, 1, 1]), "im2col"),
    ("2d_group2", (1, 6, 17, 17), (4, 3, 3, 3), dict(group=2, pads=[1, 1, 1, 1]), "grouped/im2col"),
    ("2d_group2_1x1", (3, 6, 5, 5), (10, 3, 1, 1), dict(group=2), "pointwise"),
    ("2d_resnext_g32", (1, 64, 17, 17), (64, 2, 3, 3), dict(group=32, pads=[1, 1, 1, 1]), "grouped/im2col"),
    ("2d_resnext_g32_s2", (3, 128, 5, 5), (128, 4, 3, 3), dict(group=32, pads=[1, 1, 1, 1], strides=[2, 2]),
     "grouped/im2col"),
    ("2d_depthwise_3x3", (1, 13, 17, 17), (13, 1, 3, 3), dict(group=13, pads=[1, 1, 1, 1]), "depthwise"),
    # Many small planes, claimed by the threads in runs (the last one partial).
    ("2d_depthwise_many_7x7", (2, 203, 7, 7), (203, 1, 3, 3), dict(group=203, pads=[1, 1, 1, 1]), "depthwise"),
    ("2d_depthwise_7x7_convnext", (3, 13, 17, 17), (13, 1, 7, 7), dict(group=13, pads=[3, 3, 3, 3]), "depthwise"),
    ("2d_depthwise_wide", (1, 3, 5, 61), (3, 1, 3, 5), dict(group=3, pads=[1, 2, 1, 2]), "depthwise"),
    ("2d_depthwise_s2", (1, 13, 17, 40), (13, 1, 3, 3), dict(group=13, pads=[1, 1, 1, 1], strides=[2, 2]),
     "depthwise"),
    ("2d_depthwise_dil_asym", (1, 5, 17, 47), (5, 1, 3, 3), dict(group=5, pads=[2, 0, 1, 3], dilations=[2, 2]),
     "depthwise"),
    ("2d_depthwise_s3", (1, 5, 17, 29), (5, 1, 3, 3), dict(group=5, strides=[3, 3], pads=[1, 1, 1, 1]), "depthwise"),
    ("2d_depthwise_wide100", (1, 3, 4, 100), (3, 1, 5, 5), dict(group=3, pads=[2, 2, 2, 2]), "depthwise"),
    ("2d_depthwise_dil_w", (3, 4, 9, 30), (4, 1, 3, 3), dict(group=4, dilations=[1, 2], pads=[1, 2, 1, 2]),
     "depthwise"),
    ("2d_depthwise_valid_even", (1, 6, 12, 12), (6, 1, 2, 2), dict(group=6, auto_pad="VALID"), "depthwise"),
    ("2d_depthwise_mult2", (1, 4, 17, 17), (8, 1, 3, 3), dict(group=4, pads=[1, 1, 1, 1]), "grouped/im2col"),
    ("2d_in_1x1", (3, 5, 1, 1), (7, 5, 1, 1), {}, "pointwise"),
    ("2d_in_1x1_k3_pad1", (3, 5, 1, 1), (7, 5, 3, 3), dict(pads=[1, 1, 1, 1]), "im2col"),
    ("2d_c1", (1, 1, 17, 17), (1, 1, 3, 3), {}, "im2col"),
    ("2d_kernel_shape_attr", (1, 3, 5, 5), (13, 3, 3, 3), dict(kernel_shape=[3, 3]), "im2col"),
    ("2d_same_upper", (1, 3, 17, 17), (5, 3, 4, 4), dict(auto_pad="SAME_UPPER", strides=[2, 2]), "im2col"),
    ("2d_same_lower", (1, 3, 17, 17), (5, 3, 4, 4), dict(auto_pad="SAME_LOWER", strides=[2, 2]), "im2col"),
    ("2d_same_upper_s1", (3, 3, 5, 5), (5, 3, 2, 3), dict(auto_pad="SAME_UPPER"), "im2col"),
    ("2d_valid", (1, 3, 17, 13), (5, 3, 3, 3), dict(auto_pad="VALID", strides=[2, 2]), "im2col"),
    ("2d_depthwise_same_lower", (1, 13, 17, 17), (13, 1, 4, 4), dict(group=13, auto_pad="SAME_LOWER"), "depthwise"),
    # The AVX-512 depthwise kernel (16 channels per vector): whole rows per
    # tile on planes <= 8 wide (2 rows of 7, 4 of 4, 5 of 3 with a leftover
    # row per band), channel tails (40 = 16 + 16 + 8, 21, 33), 5x5 stride 2
    # (taps at run time), row stride 2 with column stride 1, batch 2.
    ("2d_depthwise_rows7_tail", (2, 40, 7, 7), (40, 1, 3, 3), dict(group=40, pads=[1, 1, 1, 1]), "depthwise"),
    ("2d_depthwise_s2_to7", (1, 21, 14, 14), (21, 1, 3, 3), dict(group=21, pads=[1, 1, 1, 1], strides=[2, 2]),
     "depthwise"),
    ("2d_depthwise_rows4", (1, 16, 4, 4), (16, 1, 3, 3), dict(group=16, pads=[1, 1, 1, 1]), "depthwise"),
    ("2d_depthwise_tall3", (1, 17, 40, 3), (17, 1, 3, 3), dict(group=17, pads=[1, 1, 1, 1]), "depthwise"),
    ("2d_depthwise_5x5_s2", (1, 33, 15, 15), (33, 1, 5, 5), dict(group=33, pads=[2, 2, 2, 2], strides=[2, 2]),
     "depthwise"),
    ("2d_depthwise_s21", (2, 18, 11, 23), (18, 1, 3, 3), dict(group=18, pads=[0, 1, 2, 1], strides=[2, 1]),
     "depthwise"),
    # Large enough to cut K into blocks, N into column blocks and M into row chunks.
    ("2d_big_k_blocks", (1, 64, 20, 20), (70, 64, 3, 3), dict(pads=[1, 1, 1, 1]), "winograd"),
    ("2d_big_pointwise", (2, 300, 9, 31), (130, 300, 1, 1), {}, "pointwise"),
    ("2d_big_m_chunks", (1, 256, 7, 7), (520, 256, 1, 1), {}, "pointwise"),
    ("2d_m_chunks_k_blocks", (1, 300, 7, 7), (520, 300, 1, 1), {}, "pointwise"),
    ("2d_m_chunks_im2col", (1, 64, 7, 7), (200, 64, 3, 3), dict(pads=[1, 1, 1, 1]), "winograd"),
    ("2d_m_chunks_im2col_s2", (1, 64, 7, 7), (200, 64, 3, 3), dict(pads=[1, 1, 1, 1], strides=[2, 2]), "im2col"),
    # Winograd F(2x2, 3x3): 3x3, unit stride and dilation, one group, >= 16 channels.
    ("wino_odd_out", (1, 16, 9, 13), (17, 16, 3, 3), dict(pads=[1, 1, 1, 1]), "winograd"),
    ("wino_valid", (3, 20, 10, 11), (16, 20, 3, 3), {}, "winograd"),
    ("wino_asym_pads", (1, 24, 17, 17), (16, 24, 3, 3), dict(pads=[0, 2, 1, 0]), "winograd"),
    ("wino_big_pads", (1, 16, 5, 4), (16, 16, 3, 3), dict(pads=[2, 2, 2, 2]), "winograd"),
    ("wino_k_blocks", (1, 300, 6, 7), (40, 300, 3, 3), dict(pads=[1, 1, 1, 1]), "winograd"),
    ("wino_wide", (2, 16, 5, 40), (24, 16, 3, 3), dict(pads=[1, 1, 1, 1]), "winograd"),
    # Images share the GEMMs in groups (150 tiles per image: groups of 2, 2, 1;
    # 75 tiles and K blocks: one group of 3, image boundaries inside panels).
    ("wino_image_groups", (5, 16, 20, 30), (24, 16, 3, 3), dict(pads=[1, 1, 1, 1]), "winograd"),
    # 20x18 = 360 tiles, 8.8M multiply-adds: on 2+ threads a run of tile rows per thread (split
    # mid-image).
    ("wino_row_units", (2, 32, 40, 36), (48, 32, 3, 3), dict(pads=[1, 1, 1, 1]), "winograd"),
    # Small planes split by tile rows too (>= 32 tiles a unit on 2 threads): 16x16 -> 8x8 tiles,
    # 4 tile rows each; 15x17 -> 8x9 tiles, an odd last tile column; 8x8 at batch 2 (32 tiles)
    # stays split by output channels.
    ("wino_small_row_units", (1, 32, 16, 16), (32, 32, 3, 3), dict(pads=[1, 1, 1, 1]), "winograd"),
    ("wino_odd_row_units", (1, 16, 15, 17), (24, 16, 3, 3), dict(pads=[1, 1, 1, 1]), "winograd"),
    ("wino_channel_units", (2, 64, 8, 8), (40, 64, 3, 3), dict(pads=[1, 1, 1, 1]), "winograd"),
    ("wino_image_groups_k_blocks", (3, 300, 10, 30), (20, 300, 3, 3), dict(pads=[1, 1, 1, 1]), "winograd"),
    ("wino_in_1x1", (1, 16, 1, 1), (16, 16, 3, 3), dict(pads=[1, 1, 1, 1]), "winograd"),
    ("wino_same_upper", (3, 16, 8, 9), (16, 16, 3, 3), dict(auto_pad="SAME_UPPER"), "winograd"),
    ("wino_not_dilated", (1, 16, 9, 9), (16, 16, 3, 3), dict(dilations=[2, 2], pads=[2, 2, 2, 2]), "im2col"),
    ("wino_not_grouped", (1, 32, 9, 9), (32, 16, 3, 3), dict(group=2, pads=[1, 1, 1, 1]), "grouped/im2col"),
    ("1d_basic", (3, 3, 17), (5, 3, 3), dict(pads=[1, 2]), "im2col"),
    ("1d_stride_dil", (1, 13, 17), (7, 13, 3), dict(strides=[2], dilations=[2]), "im2col"),
    ("1d_pointwise", (1, 13, 17), (7, 13, 1), {}, "pointwise"),
    ("1d_depthwise", (3, 13, 17), (13, 1, 5), dict(group=13, pads=[2, 2]), "depthwise"),
    ("1d_same_lower", (1, 3, 17), (5, 3, 4), dict(auto_pad="SAME_LOWER", strides=[3]), "im2col"),
    ("3d_basic", (1, 3, 5, 6, 7), (5, 3, 3, 3, 3), dict(pads=[1, 1, 1, 1, 1, 1]), "im2col"),
    ("3d_strided_asym", (3, 4, 5, 9, 8), (6, 4, 3, 3, 2), dict(strides=[1, 2, 2], pads=[1, 0, 1, 0, 1, 1]),
     "im2col"),
    ("3d_pointwise", (1, 13, 3, 5, 5), (7, 13, 1, 1, 1), {}, "pointwise"),
    ("3d_depthwise_csn", (1, 8, 5, 9, 9), (8, 1, 3, 3, 3), dict(group=8, pads=[1, 1, 1, 1, 1, 1]), "depthwise"),
    ("3d_depthwise_s2", (1, 8, 5, 9, 9), (8, 1, 3, 3, 3), dict(group=8, pads=[1, 1, 1, 1, 1, 1], strides=[1, 2, 2]),
     "depthwise"),
    ("3d_depthwise_dil_s2", (2, 19, 7, 8, 9), (19, 1, 3, 3, 3),
     dict(group=19, pads=[2, 1, 0, 2, 1, 1], dilations=[2, 1, 2], strides=[2, 1, 2]), "depthwise"),
    ("3d_group2_same", (1, 4, 4, 6, 6), (6, 2, 2, 3, 3), dict(group=2, auto_pad="SAME_UPPER"), "im2col"),
]


def _conv_model(x_shape, w_shape, attrs, bias, weights_as_input, op="Conv", domain="", extra_inputs=()):
    w = _randn(*w_shape)
    arrays = {"w": w}
    names = ["x", "w"]
    if bias:
        arrays["b"] = _randn(w_shape[0])
        names.append("b")
    elif extra_inputs:
        names.append("")
    as_inputs = {"w", "b"} if weights_as_input else set()
    inputs, inits, feeds = _split_constants(arrays, as_inputs)
    x = _randn(*x_shape)
    feeds["x"] = x
    for name, arr in extra_inputs:
        names.append(name)
        inputs.append(_vi(name, arr.shape))
        feeds[name] = arr
    node = helper.make_node(op, names, ["y"], name="conv", domain=domain, **attrs)
    return node, [_vi("x", x_shape)] + inputs, inits, feeds


@pytest.mark.parametrize("weights", ["init", "input"])
@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv(case, weights):
    _, x_shape, w_shape, attrs, path = case
    if path == "winograd" and weights == "input":
        path = "im2col"  # Winograd needs weights transformed once in create()
    if "/" in path:  # the direct grouped kernel with constant weights, the GEMM with run-time ones
        path = path.split("/")[0 if weights == "init" else 1]
    bias = _pick(case[0], weights) % 2 == 0
    node, inputs, inits, feeds = _conv_model(x_shape, w_shape, attrs, bias, weights == "input")
    model = _model([node], inputs, [_vi("y", None)], inits)
    expected = _run_ort(model, feeds)
    _check(model, feeds, expected, path)


# Grouped convolution with few channels per group (ResNeXt): the direct
# kernel (conv_grouped_f32_avx2; _avx512 for rows of more than 8 outputs on
# the AVX-512 tier) for 3x3, unit dilation, <= 32
# channels per group in and out, constant weights; the im2col / pointwise
# GEMM otherwise. (id, X shape, W shape, attributes, AVX2 path with constant
# weights). Odd sizes, strides, asymmetric pads, batch 1 and 3, and row
# blocks split across threads (few groups).
GROUPED_CASES = [
    ("g2_cpg3_mg5", (1, 6, 17, 19), (10, 3, 3, 3), dict(group=2, pads=[1, 1, 1, 1]), "grouped"),
    ("g32_cpg4_resnext_b3", (3, 128, 9, 9), (128, 4, 3, 3), dict(group=32, pads=[1, 1, 1, 1]), "grouped"),
    ("g32_cpg4_s2", (1, 128, 11, 13), (128, 4, 3, 3), dict(group=32, pads=[1, 1, 1, 1], strides=[2, 2]),
     "grouped"),
    ("g64_cpg2", (1, 128, 7, 7), (128, 2, 3, 3), dict(group=64, pads=[1, 1, 1, 1]), "grouped"),
    ("g4_cpg32", (1, 128, 7, 7), (128, 32, 3, 3), dict(group=4, pads=[1, 1, 1, 1]), "grouped"),
    ("g3_cpg33_gemm", (1, 99, 9, 10), (99, 33, 3, 3), dict(group=3, pads=[1, 1, 1, 1]), "im2col"),
    ("g8_cpg1_mg3_asym", (3, 8, 13, 11), (24, 1, 3, 3), dict(group=8, pads=[0, 1, 2, 1]), "grouped"),
    ("g5_cpg7_mg9_s21", (3, 35, 15, 17), (45, 7, 3, 3), dict(group=5, strides=[2, 1], pads=[1, 0, 0, 1]),
     "grouped"),
    ("g16_1x1_gemm", (1, 64, 9, 9), (48, 4, 1, 1), dict(group=16), "pointwise"),
    ("g16_1x1_s2_b3_gemm", (3, 64, 9, 9), (32, 4, 1, 1), dict(group=16, strides=[2, 2]), "im2col"),
    ("g4_same_upper_s2", (1, 16, 10, 10), (20, 4, 3, 3), dict(group=4, auto_pad="SAME_UPPER", strides=[2, 2]),
     "grouped"),
    ("g2_wide", (1, 4, 3, 70), (6, 2, 3, 3), dict(group=2, pads=[1, 1, 1, 1]), "grouped"),
    ("g3_s3_gather", (1, 9, 13, 29), (9, 3, 3, 3), dict(group=3, strides=[3, 3], pads=[1, 1, 1, 1]), "grouped"),
    ("g4_out_1x1", (1, 8, 3, 3), (8, 2, 3, 3), dict(group=4), "grouped"),
    ("g3_mg7_narrow_b3", (3, 9, 6, 8), (21, 3, 3, 3), dict(group=3, pads=[1, 1, 1, 1]), "grouped"),
    ("g2_mg13_narrow", (1, 4, 5, 5), (26, 2, 3, 3), dict(group=2, pads=[1, 1, 1, 1]), "grouped"),
    ("g2_mg13_wide_b3", (3, 4, 5, 37), (26, 2, 3, 3), dict(group=2, pads=[1, 1, 1, 1]), "grouped"),
    ("g4_s2_wide", (1, 16, 9, 40), (8, 4, 3, 3), dict(group=4, strides=[2, 2], pads=[1, 1, 1, 1]), "grouped"),
    ("g2_in_1x1_pad", (3, 4, 1, 1), (6, 2, 3, 3), dict(group=2, pads=[1, 1, 1, 1]), "grouped"),
    ("g2_dilated_gemm", (1, 8, 11, 11), (8, 4, 3, 3), dict(group=2, dilations=[2, 2], pads=[2, 2, 2, 2]),
     "im2col"),
    ("g2_5x5_gemm", (1, 8, 11, 11), (8, 4, 5, 5), dict(group=2, pads=[2, 2, 2, 2]), "im2col"),
    ("g2_1d_gemm", (1, 8, 17), (8, 4, 3), dict(group=2, pads=[1, 1]), "im2col"),
    # >= 16 output channels per group (a multiple of 16, <= 64 in and out,
    # column stride 1 or 2): conv_grouped_oc_f32_avx512 on the AVX-512 tier,
    # 16 channels x up to 16 pixels per tile. Rows of 17 (two tiles of 9, the
    # last one column short), 7 (tiles of two whole rows, the last row
    # alone), 5 (three rows), 1 and 2 columns, several blocks of 16
    # channels, stride 2 in either direction. (None: the AVX2 tier takes the
    # GEMM for more than 32 channels per group.)
    ("oc_g2_cpg16_w17", (1, 32, 6, 17), (32, 16, 3, 3), dict(group=2, pads=[1, 1, 1, 1]), "grouped"),
    ("oc_g3_cpg5_mg32_7x7_b3", (3, 15, 7, 7), (96, 5, 3, 3), dict(group=3, pads=[1, 1, 1, 1]), "grouped"),
    ("oc_g2_mg48_s2", (1, 64, 11, 13), (96, 32, 3, 3), dict(group=2, pads=[1, 1, 1, 1], strides=[2, 2]),
     None),
    ("oc_g4_5x5_asym", (2, 64, 5, 5), (64, 16, 3, 3), dict(group=4, pads=[0, 1, 2, 1]), "grouped"),
    ("oc_g2_cpg64_mg64", (1, 128, 9, 8), (128, 64, 3, 3), dict(group=2, pads=[1, 1, 1, 1]), None),
    ("oc_g2_s12_w1", (2, 32, 9, 1), (32, 16, 3, 3), dict(group=2, pads=[1, 1, 1, 1], strides=[2, 1]), "grouped"),
    ("oc_g2_s21_w2", (1, 32, 7, 4), (32, 16, 3, 3), dict(group=2, pads=[1, 1, 1, 1], strides=[1, 2]), "grouped"),
    ("oc_g2_wide_s2", (1, 32, 3, 70), (32, 16, 3, 3), dict(group=2, pads=[1, 1, 1, 1], strides=[2, 2]), "grouped"),
    # Column stride 3: the column-vectorized kernel; 80 channels per group: the GEMM.
    ("oc_g2_s3_columns", (1, 32, 9, 13), (32, 16, 3, 3), dict(group=2, pads=[1, 1, 1, 1], strides=[3, 3]),
     "grouped"),
    ("oc_g2_mg80_gemm", (1, 32, 7, 7), (160, 16, 3, 3), dict(group=2, pads=[1, 1, 1, 1]), "im2col"),
    # Stems: one group of <= 4 input channels, 2x2..7x7, output channels a
    # multiple of 16: the output-channel kernel on AVX-512 (run-time taps
    # except 3x3), the im2col GEMM on AVX2 (None). ResNet's 7x7/2 on odd
    # sizes, 3x3/2 (RegNet, EfficientNet), asymmetric pads, 5x5 on RGBA,
    # 2x2 on gray, strides (2, 1).
    ("oc_stem_7x7s2_b2", (2, 3, 37, 30), (64, 3, 7, 7), dict(pads=[3, 3, 3, 3], strides=[2, 2]), None),
    ("oc_stem_3x3s2", (1, 3, 33, 35), (32, 3, 3, 3), dict(pads=[1, 1, 1, 1], strides=[2, 2]), None),
    ("oc_stem_5x5_rgba_asym", (1, 4, 12, 21), (48, 4, 5, 5), dict(pads=[2, 1, 0, 2]), None),
    ("oc_stem_2x2_gray", (3, 1, 9, 17), (16, 1, 2, 2), dict(strides=[2, 1]), None),
    # Dense 3x3 stride-2 convs with outputs >= 14 wide (ResNet-50's 3x3/2):
    # the output-channel kernel on AVX-512; 13 wide: the GEMM.
    ("oc_dense_3x3s2_w14", (1, 40, 28, 29), (48, 40, 3, 3), dict(pads=[1, 1, 1, 1], strides=[2, 2]), None),
    ("oc_dense_3x3s2_w13_gemm", (1, 40, 26, 26), (48, 40, 3, 3), dict(pads=[1, 1, 1, 1], strides=[2, 2]), "im2col"),
    # Not stems: 5 input channels, 24 outputs, a 1x1 kernel.
    ("oc_stem_cin5_gemm", (1, 5, 12, 12), (32, 5, 3, 3), dict(pads=[1, 1, 1, 1]), "im2col"),
    ("oc_stem_mg24_gemm", (1, 3, 12, 12), (24, 3, 3, 3), dict(pads=[1, 1, 1, 1]), "im2col"),
    ("oc_stem_1x1_gemm", (1, 3, 12, 12), (32, 3, 1, 1), dict(strides=[2, 2]), "im2col"),
]

HAVE_AVX512 = "avx512" in SIMD_TIERS


@pytest.mark.skipif(not HAVE_AVX512, reason="this CPU has no AVX-512 tier")
@pytest.mark.parametrize("case", [c for c in GROUPED_CASES if c[0].startswith("oc_")], ids=lambda c: c[0])
def test_conv_grouped_oc_kernel_runs(case):
    """The output-channel-vectorized grouped kernel takes the shapes it is
    for (and not column stride 3 or more than 64 channels per group), on the
    AVX-512 tier with constant weights."""
    name, x_shape, w_shape, attrs, _ = case
    node, inputs, inits, feeds = _conv_model(x_shape, w_shape, attrs, True, False)
    _, kernel = _run_pyengine(_model([node], inputs, [_vi("y", None)], inits), feeds, "avx512")
    wanted = not name.endswith(("_columns", "_gemm"))
    if name.startswith(("oc_stem", "oc_dense")) and wanted:
        assert "grouped_oc" not in _run_pyengine(_model([node], inputs, [_vi("y", None)], inits), feeds, "avx2")[1]
    assert ("conv_grouped_oc_f32_avx512" in kernel) == wanted, (name, kernel)


@pytest.mark.skipif(not HAVE_AVX512, reason="this CPU has no AVX-512 tier")
@pytest.mark.parametrize("case", [c for c in CONV_CASES if c[4] == "depthwise"], ids=lambda c: c[0])
def test_conv_depthwise_avx512_kernel_runs(case):
    """The AVX-512 depthwise kernel takes depthwise convs with column stride
    1 or 2 and constant weights, on the AVX-512 tier; stride 3, run-time
    weights and the AVX2 tier keep depthwise_avx2."""
    name, x_shape, w_shape, attrs, _ = case
    model_for = {}
    for weights in ("init", "input"):
        node, inputs, inits, feeds = _conv_model(x_shape, w_shape, attrs, True, weights == "input")
        model_for[weights] = (_model([node], inputs, [_vi("y", None)], inits), feeds)
    column_stride = attrs.get("strides", [1])[-1]
    kernel = _run_pyengine(*model_for["init"], "avx512")[1]
    assert ("conv_depthwise_f32_avx512" in kernel) == (column_stride in (1, 2)), (name, kernel)
    assert "conv_depthwise_f32_avx2" in _run_pyengine(*model_for["input"], "avx512")[1]
    assert "conv_depthwise_f32_avx2" in _run_pyengine(*model_for["init"], "avx2")[1]


@pytest.mark.parametrize("weights", ["init", "input"])
@pytest.mark.parametrize("case", GROUPED_CASES, ids=[c[0] for c in GROUPED_CASES])
def test_conv_grouped(case, weights):
    name, x_shape, w_shape, attrs, path = case
    if weights == "input":
        # Run-time weights take the GEMM (the direct kernel's weights are packed once in create()).
        path = "pointwise" if w_shape[2:] == (1, 1) and "strides" not in attrs and "pads" not in attrs else "im2col"
    bias = _pick(name, weights) % 2 == 0
    node, inputs, inits, feeds = _conv_model(x_shape, w_shape, attrs, bias, weights == "input")
    model = _model([node], inputs, [_vi("y", None)], inits)
    _check(model, feeds, _run_ort(model, feeds), path)


@pytest.mark.skipif(not HAVE_AVX2, reason="this CPU has no AVX2 tier")
@pytest.mark.parametrize("threads", [1, 3])
def test_conv_grouped_threads_and_shapes_one_engine(threads):
    """One engine over several input sizes (the geometry and the row blocks
    are re-derived per shape) and thread counts: the direct grouped kernel
    against the reference tier."""
    w = _randn(64, 4, 3, 3)
    b = _randn(64)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], group=16)
    model = _model([node], [_vi("x", ("n", 64, "h", "w"))], [_vi("y", None)],
                   [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    fast = pyengine.build(model, optimize=False, num_threads=threads)
    ref = _build_on_tier(model, "ref", optimize=False, num_threads=1)
    for shape in ((1, 64, 7, 9), (3, 64, 17, 5), (2, 64, 1, 30)):
        x = _randn(*shape)
        np.testing.assert_allclose(fast(x), ref(x), rtol=RTOL, atol=ATOL)
        assert "conv_grouped_f32_" in fast.profile({"x": x}, runs=1)[0]["kernel"]


@pytest.mark.parametrize("batch", [1, 3])
def test_zoo_resnext_grouped_kernel_vs_onnxruntime(batch):
    """The zoo's ResNeXt 32x4d (grouped 3x3 convs, 32 groups of 2..8
    channels, stride 1 and 2, with BN, bias, residual and Relu fused by the
    optimizer) on each tier: the grouped layers run the direct kernel and the
    output matches onnxruntime."""
    from pyengine import zoo

    model = zoo.resnext()
    feeds = zoo.make_input(model, batch, seed=batch)
    expected = _run_ort(model, feeds)
    for tier in ["ref"] + SIMD_TIERS:
        eng = _build_on_tier(model, tier, num_threads=2)
        got = next(iter(eng.run(feeds).values()))
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL, err_msg=tier)
        kernels = [layer["kernel"] for layer in eng.profile(feeds, runs=1)]
        n_grouped = sum("conv_grouped_f32_" in k for k in kernels)
        assert n_grouped == (0 if tier == "ref" else 6), (tier, kernels)


def test_conv_bias_both_ways():
    for bias in (False, True):
        node, inputs, inits, feeds = _conv_model((1, 3, 17, 17), (13, 3, 3, 3), dict(pads=[1, 1, 1, 1]), bias, False)
        model = _model([node], inputs, [_vi("y", None)], inits)
        _check(model, feeds, _run_ort(model, feeds), "im2col")


def test_conv_dynamic_batch_reuses_engine():
    """One engine, several batch sizes (the geometry is re-resolved per shape)."""
    w = _randn(13, 3, 3, 3)
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    model = _model([node], [_vi("x", ("n", 3, 17, 17))], [_vi("y", None)], [numpy_helper.from_array(w, "w")])
    engine = pyengine.build(model, optimize=False)
    for n in (1, 3, 2):
        x = _randn(n, 3, 17, 17)
        np.testing.assert_allclose(engine(x), _run_ort(model, {"x": x}), rtol=RTOL, atol=ATOL)


def test_conv_shape_inference_dynamic_dims():
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2])
    model = _model([node], [_vi("x", ("n", 3, "h", 17))], [_vi("y", None)],
                   [numpy_helper.from_array(_randn(13, 3, 3, 3), "w")])
    engine = pyengine.build(model, optimize=False)
    assert engine.outputs[0].shape == (None, 13, None, 9)


def test_conv_mismatched_channels_is_a_shape_error():
    node = helper.make_node("Conv", ["x", "w"], ["y"])
    model = _model([node], [_vi("x", (1, 4, 5, 5))], [_vi("y", None)],
                   [numpy_helper.from_array(_randn(13, 3, 3, 3), "w")])
    with pytest.raises(pyengine.ShapeError, match="channels"):
        pyengine.build(model, optimize=False)


# ---------------------------------------------------------------------------
# FusedConv vs Conv + Add + activation in ORT

ACTIVATIONS = [
    ("", []),
    ("Relu", []),
    ("Clip", [-0.5, 0.75]),
    ("LeakyRelu", [0.13]),
    ("Sigmoid", []),
    ("HardSwish", []),
    ("SiLU", []),
    ("Gelu", []),
    ("HardSigmoid", [0.3, 0.4]),
]


def _ort_activation(name, params, x, y):
    """Nodes and initializers computing y = act(x) with standard ONNX ops."""
    if name == "":
        return [helper.make_node("Identity", [x], [y])], []
    if name in ("Relu", "Sigmoid", "HardSwish"):
        return [helper.make_node(name, [x], [y])], []
    if name == "LeakyRelu":
        return [helper.make_node(name, [x], [y], alpha=params[0])], []
    if name == "HardSigmoid":
        return [helper.make_node(name, [x], [y], alpha=params[0], beta=params[1])], []
    if name == "Clip":
        inits = [numpy_helper.from_array(np.array(params[0], np.float32), "clip_min"),
                 numpy_helper.from_array(np.array(params[1], np.float32), "clip_max")]
        return [helper.make_node("Clip", [x, "clip_min", "clip_max"], [y])], inits
    if name == "SiLU":
        return [helper.make_node("Sigmoid", [x], ["sig"]), helper.make_node("Mul", [x, "sig"], [y])], []
    if name == "Gelu":
        inits = [numpy_helper.from_array(np.array(np.sqrt(2.0), np.float32), "sqrt2"),
                 numpy_helper.from_array(np.array(1.0, np.float32), "one"),
                 numpy_helper.from_array(np.array(0.5, np.float32), "half")]
        return [helper.make_node("Div", [x, "sqrt2"], ["g0"]), helper.make_node("Erf", ["g0"], ["g1"]),
                helper.make_node("Add", ["g1", "one"], ["g2"]), helper.make_node("Mul", [x, "g2"], ["g3"]),
                helper.make_node("Mul", ["g3", "half"], [y])], inits
    raise AssertionError(name)


FUSED_CASES = [
    ("im2col", (1, 13, 17, 17), (13, 13, 3, 3), dict(pads=[1, 1, 1, 1])),
    ("pointwise", (3, 127, 5, 5), (13, 127, 1, 1), {}),
    # Column tails of the GEMM tiles (N = output pixels per image): 49 =
    # 32 + 16 + 1 on AVX-512 (a 16-wide tile, then the column kernel), 20 =
    # 16 + 4, 11 = 8 + 3 on AVX2 (an 8-wide vector, then the column kernel).
    ("pointwise:n49", (2, 40, 7, 7), (30, 40, 1, 1), {}),
    ("pointwise:n20", (1, 24, 2, 10), (14, 24, 1, 1), {}),
    ("pointwise:n11", (2, 24, 1, 11), (19, 24, 1, 1), {}),
    ("depthwise", (1, 13, 17, 17), (13, 1, 7, 7), dict(group=13, pads=[3, 3, 3, 3])),
    ("kblocks", (1, 64, 9, 9), (70, 64, 3, 3), dict(pads=[1, 1, 1, 1], strides=[1, 2])),
    ("winograd", (1, 32, 9, 11), (32, 32, 3, 3), dict(pads=[1, 1, 1, 1])),
    ("3d_depthwise", (1, 8, 5, 6, 7), (8, 1, 3, 3, 3), dict(group=8, pads=[1, 1, 1, 1, 1, 1])),
    ("grouped", (3, 24, 11, 13), (36, 4, 3, 3), dict(group=6, pads=[1, 1, 1, 1])),
    # 16 channels per group: conv_grouped_oc_f32_avx512 on AVX-512 (two
    # whole rows of 7 a tile, then the last row).
    ("grouped_oc", (2, 48, 7, 7), (48, 16, 3, 3), dict(group=3, pads=[1, 1, 1, 1])),
    # A stem: the output-channel kernel on AVX-512 (run-time 7x7 taps), im2col on AVX2.
    ("stem_oc", (1, 3, 19, 21), (32, 3, 7, 7), dict(pads=[3, 3, 3, 3], strides=[2, 2])),
    # A dense 3x3/2 conv with a 14-wide output: the output-channel kernel on AVX-512 too.
    ("dense_oc", (2, 24, 27, 28), (32, 24, 3, 3), dict(pads=[1, 1, 1, 1], strides=[2, 2])),
]


@pytest.mark.parametrize("residual", [False, True], ids=["noz", "z"])
@pytest.mark.parametrize("act", ACTIVATIONS, ids=[a[0] or "none" for a in ACTIVATIONS])
@pytest.mark.parametrize("case", FUSED_CASES, ids=[c[0] for c in FUSED_CASES])
def test_fused_conv(case, act, residual):
    path, x_shape, w_shape, attrs = case
    act_name, params = act
    weights_as_input = _pick(path, act_name, residual) % 2 == 0
    bias = path != "pointwise"  # the tail cases have a bias
    # The ORT model: Conv [+ Add(z)] + activation.
    conv, inputs, inits, feeds = _conv_model(x_shape, w_shape, attrs, bias, weights_as_input)
    ort_nodes = [helper.make_node("Conv", conv.input, ["c"], **attrs)]
    pre_act = "c"
    if residual:
        y_shape = _run_ort(_model([conv], inputs, [_vi("y", None)], inits), feeds).shape
        z = _randn(*y_shape)
        feeds["z"] = z
        inputs = inputs + [_vi("z", z.shape)]
        ort_nodes.append(helper.make_node("Add", ["c", "z"], ["s"]))
        pre_act = "s"
    act_nodes, act_inits = _ort_activation(act_name, params, pre_act, "y")
    ort_model = _model(ort_nodes + act_nodes, inputs, [_vi("y", None)], inits + act_inits)
    expected = _run_ort(ort_model, feeds)
    # The pyengine model: one FusedConv node.
    names = list(conv.input)
    if residual:
        names = names + [""] * (3 - len(names)) + ["z"]
    fattrs = dict(attrs, activation=act_name)
    if params:
        fattrs["activation_params"] = params
    fused = helper.make_node("FusedConv", names, ["y"], name="fused", domain="pyengine", **fattrs)
    pe_model = _model([fused], inputs, [_vi("y", None)], inits,
                      opsets=[helper.make_opsetid("", OPSET), helper.make_opsetid("pyengine", 1)])
    expected_path = path.split(":")[0].replace("3d_", "").replace("kblocks", "im2col")
    if expected_path == "winograd" and weights_as_input:
        expected_path = "im2col"
    if expected_path.startswith("grouped"):
        expected_path = "im2col" if weights_as_input else "grouped"
    if expected_path in ("stem_oc", "dense_oc"):  # grouped_oc on AVX-512, im2col on AVX2: test_conv_grouped_oc_kernel_runs
        expected_path = "im2col" if weights_as_input else ""
    kernel = _check(pe_model, feeds, expected, expected_path)
    if HAVE_AVX2 and act_name:
        assert act_name in kernel


def test_fused_conv_unknown_activation():
    node = helper.make_node("FusedConv", ["x", "w"], ["y"], domain="pyengine", activation="Frobnicate")
    model = _model([node], [_vi("x", (1, 3, 5, 5))], [_vi("y", None)],
                   [numpy_helper.from_array(_randn(4, 3, 1, 1), "w")],
                   opsets=[helper.make_opsetid("", OPSET), helper.make_opsetid("pyengine", 1)])
    with pytest.raises(pyengine.UnsupportedOperatorError, match="Frobnicate"):
        pyengine.build(model, optimize=False)


# ---------------------------------------------------------------------------
# Gemm / FusedGemm

C_SHAPES = ["none", "n", "1n", "m1", "mn", "11", "scalar"]


def _c_array(kind, m, n):
    return {"none": None, "n": (n,), "1n": (1, n), "m1": (m, 1), "mn": (m, n), "11": (1, 1), "scalar": ()}[kind]


GEMM_SIZES = [(7, 13, 17), (1, 300, 40), (50, 600, 300)]


ALPHA_BETA = [(1.0, 1.0), (0.5, 1.0), (1.0, 2.5), (-1.5, 0.0), (0.25, -0.5)]


@pytest.mark.parametrize("weights", ["init", "input"])
@pytest.mark.parametrize("alpha,beta", ALPHA_BETA)
@pytest.mark.parametrize("c_kind", C_SHAPES)
@pytest.mark.parametrize("trans_a,trans_b", list(itertools.product([0, 1], [0, 1])))
def test_gemm(trans_a, trans_b, c_kind, alpha, beta, weights):
    m, k, n = GEMM_SIZES[_pick(trans_a, trans_b, c_kind, alpha, beta, weights) % len(GEMM_SIZES)]
    a = _randn(*((k, m) if trans_a else (m, k)))
    b = _randn(*((n, k) if trans_b else (k, n)))
    arrays = {"b": b}
    names = ["a", "b"]
    c_shape = _c_array(c_kind, m, n)
    if c_shape is not None:
        arrays["c"] = _randn(*c_shape)
        names.append("c")
    inputs, inits, feeds = _split_constants(arrays, {"b", "c"} if weights == "input" else set())
    feeds["a"] = a
    node = helper.make_node("Gemm", names, ["y"], transA=trans_a, transB=trans_b, alpha=alpha, beta=beta)
    model = _model([node], [_vi("a", a.shape)] + inputs, [_vi("y", None)], inits)
    _check(model, feeds, _run_ort(model, feeds), "gemm_f32_avx2")


def test_gemm_constant_a_and_runtime_b():
    a = _randn(19, 23)
    b = _randn(23, 29)
    node = helper.make_node("Gemm", ["a", "b"], ["y"], alpha=0.75)
    model = _model([node], [_vi("b", b.shape)], [_vi("y", None)], [numpy_helper.from_array(a, "a")])
    feeds = {"b": b}
    _check(model, feeds, _run_ort(model, feeds), "gemm_f32_avx2")


@pytest.mark.parametrize("act", ACTIVATIONS, ids=[a[0] or "none" for a in ACTIVATIONS])
def test_fused_gemm(act):
    act_name, params = act
    m, k, n = 5, 37, 21
    a, b, c = _randn(m, k), _randn(n, k), _randn(n)
    inits = [numpy_helper.from_array(b, "b"), numpy_helper.from_array(c, "c")]
    gemm = helper.make_node("Gemm", ["a", "b", "c"], ["g"], transB=1, alpha=0.5)
    act_nodes, act_inits = _ort_activation(act_name, params, "g", "y")
    ort_model = _model([gemm] + act_nodes, [_vi("a", a.shape)], [_vi("y", None)], inits + act_inits)
    feeds = {"a": a}
    expected = _run_ort(ort_model, feeds)
    fattrs = dict(transB=1, alpha=0.5, activation=act_name)
    if params:
        fattrs["activation_params"] = params
    fused = helper.make_node("FusedGemm", ["a", "b", "c"], ["y"], domain="pyengine", **fattrs)
    pe_model = _model([fused], [_vi("a", a.shape)], [_vi("y", None)], inits,
                      opsets=[helper.make_opsetid("", OPSET), helper.make_opsetid("pyengine", 1)])
    _check(pe_model, feeds, expected, "gemm_f32_avx2")


# ---------------------------------------------------------------------------
# MatMul

MATMUL_CASES = [
    ("vec_vec", (13,), (13,)),
    ("vec_mat", (13,), (13, 17)),
    ("mat_vec", (7, 13), (13,)),
    ("mat_mat", (7, 13), (13, 17)),
    ("big", (50, 300), (300, 130)),
    ("batched_shared_b", (3, 7, 13), (13, 17)),
    ("batched_both", (3, 7, 13), (3, 13, 17)),
    ("broadcast_batch", (2, 1, 7, 13), (3, 13, 17)),
    ("broadcast_a", (7, 13), (2, 3, 13, 17)),
    ("batched_vec", (3, 7, 13), (13,)),
    ("vec_batched", (13,), (3, 13, 5)),
    ("broadcast_ones", (1, 3, 1, 7, 13), (2, 1, 3, 13, 1)),
]


@pytest.mark.parametrize("weights", ["init", "input"])
@pytest.mark.parametrize("case", MATMUL_CASES, ids=[c[0] for c in MATMUL_CASES])
def test_matmul(case, weights):
    _, a_shape, b_shape = case
    a, b = _randn(*a_shape), _randn(*b_shape)
    inputs, inits, feeds = _split_constants({"b": b}, {"b"} if weights == "input" else set())
    feeds["a"] = a
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    model = _model([node], [_vi("a", a.shape)] + inputs, [_vi("y", None)], inits)
    expected = _run_ort(model, feeds)
    np.testing.assert_allclose(expected, np.matmul(a, b), rtol=RTOL, atol=ATOL)
    _check(model, feeds, expected, "matmul_f32_avx2")


def test_matmul_non_float_is_unsupported():
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    model = helper.make_model(helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("a", TensorProto.INT32, [2, 3]),
                      helper.make_tensor_value_info("b", TensorProto.INT32, [3, 2])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, None)]),
        opset_imports=[helper.make_opsetid("", OPSET)])
    with pytest.raises(pyengine.UnsupportedOperatorError, match="float32"):
        pyengine.build(model, optimize=False)


BATCH_INVARIANT_CASES = [
    # Winograd on small planes, where images share the GEMMs in groups (14x14:
    # 49 tiles a image, 7x7: 16), and pointwise convs with column tails (7x7 =
    # 49 columns: a 32-wide tile, a 16-wide one, then the column kernel).
    ("winograd_14", (5, 24, 14, 14), (20, 24, 3, 3), dict(pads=[1, 1, 1, 1])),
    ("winograd_7", (9, 32, 7, 7), (16, 32, 3, 3), dict(pads=[1, 1, 1, 1])),
    ("pointwise_7", (3, 40, 7, 7), (30, 40, 1, 1), {}),
]


@pytest.mark.parametrize("case", BATCH_INVARIANT_CASES, ids=[c[0] for c in BATCH_INVARIANT_CASES])
def test_conv_batch_invariant(case):
    """An image's output does not depend on the batch around it, bit for bit,
    on every tier (video pipelines batch frames as they come)."""
    from pyengine import _core

    _, x_shape, w_shape, attrs = case
    conv, inputs, inits, feeds = _conv_model(x_shape, w_shape, attrs, True, False)
    inputs[0] = _vi("x", ("N",) + tuple(x_shape[1:]))  # any batch
    model = _model([helper.make_node("Conv", conv.input, ["y"], **attrs)], inputs, [_vi("y", None)], inits)
    x = feeds["x"]
    old = _core.isa_cap()
    try:
        for tier in isa_tiers():
            _core.set_isa_cap(tier)
            engine = pyengine.build(model, backend="cpu")
            whole = engine.run({"x": x})["y"]
            for i in range(len(x)):
                np.testing.assert_array_equal(engine.run({"x": x[i:i + 1]})["y"][0], whole[i], err_msg=tier)
            np.testing.assert_array_equal(engine.run({"x": x[1:4]})["y"], whole[1:4], err_msg=tier)
    finally:
        _core.set_isa_cap(old)


# FusedConv writing Y over its residual Z (the executor's in-place outputs,
# KernelInfo::inplace_input): x -> t = Relu(Conv_a(x)); r = Relu(Conv(x) + t);
# y = Conv_b(r). t dies at the fused conv, so r takes t's storage.
INPLACE_CASES = [
    # (id, cin, cout, hw, attrs of the conv under test)
    ("pointwise", 24, 40, 9, dict(kernel_shape=[1, 1])),
    # K = 300 > 256: the SGEMM's first K block leaves partial sums in Y
    # before the last one runs, so it must start from C = Z (c_init).
    ("pointwise_split_k", 300, 40, 7, dict(kernel_shape=[1, 1])),
    ("im2col_strided", 48, 64, 11, dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("winograd", 32, 32, 10, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
    ("depthwise", 32, 32, 10, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=32)),
    ("grouped", 32, 32, 10, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=8)),
    ("grouped_oc", 32, 32, 10, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=2)),
    ("dense_oc_s2", 32, 32, 28, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])),
]


def _residual_model(cin, cout, hw, attrs, z_read_later=False):
    k = attrs["kernel_shape"][0]
    stride = attrs.get("strides", [1, 1])[0]
    group = attrs.get("group", 1)
    rng = _rng()
    inits = {
        "wa": (rng.standard_normal((cout, cin, 1, 1)) / np.sqrt(cin)).astype(np.float32),
        "w": (rng.standard_normal((cout, cin // group, k, k)) / np.sqrt(cin // group * k * k)).astype(np.float32),
        "b": _randn(cout),
        "wb": (rng.standard_normal((8, cout, 1, 1)) / np.sqrt(cout)).astype(np.float32),
    }
    # z_read_later: t is read again after the fused conv (q = r + t), so r
    # must not overwrite it.
    nodes = [helper.make_node("Conv", ["x", "wa"], ["ta"], kernel_shape=[1, 1], strides=[stride, stride]),
             helper.make_node("Relu", ["ta"], ["t"]),
             helper.make_node("Conv", ["x", "w", "b"], ["c"], **attrs),
             helper.make_node("Add", ["c", "t"], ["s"]),
             helper.make_node("Relu", ["s"], ["r"]),
             helper.make_node("Add", ["r", "t"], ["q"]) if z_read_later else helper.make_node("Identity", ["r"], ["q"]),
             helper.make_node("Conv", ["q", "wb"], ["y"], kernel_shape=[1, 1])]
    model = _model(nodes, [_vi("x", ("N", cin, hw, hw))], [_vi("y", None)],
                   [numpy_helper.from_array(v, n) for n, v in inits.items()])
    out_hw = (hw - 1) // stride + 1
    return model, 4 * cout * out_hw * out_hw  # bytes of t per image


@pytest.mark.parametrize("case", INPLACE_CASES, ids=[c[0] for c in INPLACE_CASES])
def test_fused_conv_writes_over_its_dead_residual(case):
    """Each conv path (pointwise, pointwise with K split into blocks, strided
    im2col, Winograd, depthwise, grouped) on each tier, batch 3, with the
    fused conv's output sharing its residual's storage: the output matches
    onnxruntime, and the activation arena holds one t-sized buffer per image
    where two were live before (t and r). Winograd also runs with an
    infinity in image 1, which sends that image to the im2col fallback."""
    _, cin, cout, hw, attrs = case
    model, t_bytes = _residual_model(cin, cout, hw, attrs)
    x = _randn(3, cin, hw, hw)
    feeds = [x]
    if case[0] == "winograd":
        xi = x.copy()
        xi[1, 5, 3, 4] = np.inf
        feeds.append(xi)
    for tier in isa_tiers():
        eng = _build_on_tier(model, tier, num_threads=2)
        assert "FusedConv" in eng.graph_text()
        for f in feeds:
            np.testing.assert_allclose(eng(f), _run_ort(model, {"x": f}), rtol=RTOL, atol=ATOL, err_msg=tier)
        assert eng.memory_info()["arena"] < 2 * 3 * t_bytes, (tier, eng.memory_info(), t_bytes)


@pytest.mark.parametrize("tier", isa_tiers())
def test_fused_conv_keeps_a_residual_read_later(tier):
    """The residual t is read again after the fused conv (r + t), or is also the fused conv's own input X: its storage
    stays t's. Both match onnxruntime (an output written over t would
    change r + t, or the columns other row tiles still read)."""
    model, t_bytes = _residual_model(40, 40, 9, dict(kernel_shape=[1, 1]), z_read_later=True)
    x = _randn(2, 40, 9, 9)
    later = _build_on_tier(model, tier, num_threads=2)
    # X == Z: r = Relu(Conv(t) + t), 40 -> 40 channels (4 row tiles of 12,
    # or 7 of 6), fused without reparam_branches (which would fold the
    # identity into the weights).
    rng = _rng()
    w = (rng.standard_normal((40, 40, 1, 1)) / 7).astype(np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["t"]),
             helper.make_node("Conv", ["t", "w"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("Add", ["c", "t"], ["s"]), helper.make_node("Relu", ["s"], ["r"]),
             helper.make_node("Conv", ["r", "w"], ["y"], kernel_shape=[1, 1])]
    same = _model(nodes, [_vi("x", ("N", 40, 8, 8))], [_vi("y", None)], [numpy_helper.from_array(w, "w")])
    fused, _ = optimize_graph(onnx_io.graph_from_onnx(same)[0], disable=("reparam_branches",))
    shared = _build_on_tier(onnx_io.graph_to_onnx(fused), tier, optimize=False, num_threads=2)
    np.testing.assert_allclose(later(x), _run_ort(model, {"x": x}), rtol=RTOL, atol=ATOL)
    assert later.memory_info()["arena"] >= 2 * 2 * t_bytes
    x8 = _randn(2, 40, 8, 8)  # 64 columns: the AVX-512 SGEMM reads X in place
    np.testing.assert_allclose(shared(x8), _run_ort(same, {"x": x8}), rtol=RTOL, atol=ATOL)
    assert "FusedConv(%t, %w, _, %t)" in shared.graph_text(), shared.graph_text()
    assert shared.memory_info()["arena"] >= 2 * x8[0].nbytes * 2
