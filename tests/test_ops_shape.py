"""The shape_ops family (data movement and shape tensors) against onnxruntime.

Every case builds a small ONNX model with onnx.helper, runs it in onnxruntime
and in pyengine, and compares. Tolerances: data movement (everything except
Resize linear) must be bit-exact, including dtype and shape; Resize linear
uses rtol 1e-5, atol 1e-6. Shape-like inputs (Reshape's shape, Slice's starts,
...) are initializers, as exporters write them: the executor evaluates them at
plan time. Inputs are fresh random data (never zeros) of awkward sizes.
"""

import contextlib

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import pyengine
from pyengine import _core

OPSET = 18
INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min
DTYPES = [np.float32, np.int64, np.int32, np.uint8, np.bool_]


def rand(rng, shape, dtype=np.float32):
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return np.asarray(rng.random(shape) > 0.5)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.asarray(rng.integers(max(info.min, -1000), min(info.max, 1000), size=shape, endpoint=True), dtype)
    return np.asarray(rng.standard_normal(shape) + 0.5, dtype)


def onnx_type(dtype):
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def make_model(nodes, feeds, outputs, inits=None, opset=OPSET, input_shapes=None):
    """outputs: list of (name, numpy dtype); input_shapes overrides declared input dims."""
    input_shapes = input_shapes or {}
    inputs = [helper.make_tensor_value_info(n, onnx_type(a.dtype), input_shapes.get(n, list(a.shape)))
              for n, a in feeds.items()]
    outs = [helper.make_tensor_value_info(n, onnx_type(t), None) for n, t in outputs]
    initializers = [numpy_helper.from_array(np.asarray(v), n) for n, v in (inits or {}).items()]
    graph = helper.make_graph(nodes, "g", inputs, outs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def run_ort(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def assert_same(got, want, exact=True, rtol=1e-5, atol=1e-6):
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    if exact:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def check(nodes, feeds, outputs=None, inits=None, opset=OPSET, exact=True, input_shapes=None, engine=None):
    """Runs the model in both runtimes and compares every output. `outputs`
    defaults to the node's first output with the first feed's dtype."""
    if outputs is None:
        outputs = [(nodes[-1].output[0], next(iter(feeds.values())).dtype)]
    outputs = [(n, t) if isinstance(n, str) else n for n, t in outputs]
    model = make_model(nodes, feeds, outputs, inits, opset, input_shapes)
    want = run_ort(model, feeds)
    engine = engine or pyengine.build(model)
    got = engine.run(feeds)
    for (name, _), w in zip(outputs, want):
        assert_same(got[name], w, exact)
    return engine, got


@contextlib.contextmanager
def force_ref():
    _core.set_force_ref(True)
    try:
        yield
    finally:
        _core.set_force_ref(False)


@pytest.fixture
def rng():
    return np.random.default_rng()


def i64(*v):
    return np.array(v, dtype=np.int64)


# --- Flatten, Reshape, Squeeze, Unsqueeze, Identity, Dropout ----------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [0, 1, 2, -1, 4])
def test_flatten(rng, dtype, axis):
    x = rand(rng, (2, 3, 7, 5), dtype)
    check([helper.make_node("Flatten", ["x"], ["y"], axis=axis)], {"x": x})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("in_shape,shape", [
    ((2, 3, 4), (4, 6)),
    ((2, 3, 4), (0, -1)),
    ((2, 3, 4), (-1,)),
    ((2, 3, 4), (0, 0, 2, 2)),
    ((2, 3, 4), (2, -1, 3)),
    ((1, 13, 1, 17), (13, 17)),
    ((7,), (1, 7, 1)),
])
def test_reshape(rng, dtype, in_shape, shape):
    x = rand(rng, in_shape, dtype)
    check([helper.make_node("Reshape", ["x", "s"], ["y"])], {"x": x}, inits={"s": i64(*shape)})


def test_reshape_allowzero(rng):
    x = rand(rng, (0, 3), np.float32)
    check([helper.make_node("Reshape", ["x", "s"], ["y"], allowzero=1)], {"x": x}, inits={"s": i64(3, 0)})
    x = rand(rng, (2, 3), np.float32)
    # allowzero=0: a 0 copies the input dim.
    check([helper.make_node("Reshape", ["x", "s"], ["y"], allowzero=0)], {"x": x}, inits={"s": i64(0, 3)})


def test_reshape_bad_shape_is_a_shape_error(rng):
    x = rand(rng, (2, 3), np.float32)
    model = make_model([helper.make_node("Reshape", ["x", "s"], ["y"])], {"x": x}, [("y", np.float32)],
                       inits={"s": i64(4, -1)})
    with pytest.raises(pyengine.ShapeError, match="cannot reshape"):
        pyengine.build(model)
    model = make_model([helper.make_node("Reshape", ["x", "s"], ["y"])], {"x": x}, [("y", np.float32)],
                       inits={"s": i64(-1, -1)})
    with pytest.raises(pyengine.ShapeError, match="more than one -1"):
        pyengine.build(model)


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_])
@pytest.mark.parametrize("axes", [None, [0], [-1], [0, 2], [2, 0]])
@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze(rng, dtype, axes, opset):
    x = rand(rng, (1, 7, 1, 1) if axes != [-1] else (3, 7, 1), dtype)
    inits = {}
    if axes is None:
        node = helper.make_node("Squeeze", ["x"], ["y"])
    elif opset == 11:
        node = helper.make_node("Squeeze", ["x"], ["y"], axes=axes)
    else:
        node = helper.make_node("Squeeze", ["x", "a"], ["y"])
        inits = {"a": i64(*axes)}
    check([node], {"x": x}, inits=inits, opset=opset)


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint8])
@pytest.mark.parametrize("shape,axes", [((3, 4), [0]), ((3, 4), [-1]), ((3, 4), [0, 3]), ((3, 4), [1, -1]),
                                        ((), [0]), ((5,), [0, 1, 2])])
@pytest.mark.parametrize("opset", [11, 13])
def test_unsqueeze(rng, dtype, shape, axes, opset):
    x = rand(rng, shape, dtype)
    if opset == 11:
        check([helper.make_node("Unsqueeze", ["x"], ["y"], axes=axes)], {"x": x}, opset=opset)
    else:
        check([helper.make_node("Unsqueeze", ["x", "a"], ["y"])], {"x": x}, inits={"a": i64(*axes)}, opset=opset)


@pytest.mark.parametrize("dtype", DTYPES)
def test_identity(rng, dtype):
    x = rand(rng, (3, 1, 7), dtype)
    _, got = check([helper.make_node("Identity", ["x"], ["y"])], {"x": x})
    assert not np.shares_memory(got["y"], x)


def test_dropout_inference_and_mask(rng):
    x = rand(rng, (2, 13), np.float32)
    check([helper.make_node("Dropout", ["x"], ["y"])], {"x": x})
    check([helper.make_node("Dropout", ["x", "r"], ["y", "m"])], {"x": x},
          outputs=[("y", np.float32), ("m", np.bool_)], inits={"r": np.array(0.3, np.float32)})
    check([helper.make_node("Dropout", ["x", "r", "t"], ["y", "m"])], {"x": x},
          outputs=[("y", np.float32), ("m", np.bool_)],
          inits={"r": np.array(0.5, np.float32), "t": np.array(False)})


def test_dropout_training_mode_is_unsupported(rng):
    x = rand(rng, (2, 3), np.float32)
    model = make_model([helper.make_node("Dropout", ["x", "r", "t"], ["y"], name="drop")], {"x": x},
                       [("y", np.float32)], inits={"r": np.array(0.5, np.float32), "t": np.array(True)})
    with pytest.raises(pyengine.UnsupportedOperatorError, match="'drop'.*training_mode"):
        pyengine.build(model)


# --- Transpose ----------------------------------------------------------------

TRANSPOSE_CASES = [
    ((3, 7), None),
    ((13, 17), (1, 0)),
    ((2, 3, 5), (0, 2, 1)),
    ((2, 3, 5), (2, 0, 1)),
    ((2, 3, 5), (1, 0, 2)),
    ((1, 13, 7, 9), (0, 2, 3, 1)),
    ((2, 17, 5, 3), (0, 3, 1, 2)),
    ((3, 1, 4, 1), (3, 2, 1, 0)),
    ((2, 3, 4, 5, 3), (4, 1, 3, 0, 2)),
    ((1, 96, 28, 28), (0, 2, 3, 1)),  # ConvNeXt NCHW -> NHWC, large enough for the pool
    ((1, 28, 28, 96), (0, 3, 1, 2)),  # and back
    ((2, 127, 9), (2, 1, 0)),
    ((5, 1), (1, 0)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.int32, np.uint8, np.bool_, np.float16])
@pytest.mark.parametrize("shape,perm", TRANSPOSE_CASES)
def test_transpose(rng, dtype, shape, perm):
    x = rand(rng, shape, dtype)
    kw = {} if perm is None else {"perm": list(perm)}
    node = helper.make_node("Transpose", ["x"], ["y"], **kw)
    engine, got = check([node], {"x": x})
    if dtype in (np.float32, np.int32):  # the AVX2 path, against the reference kernel
        with force_ref():
            ref_engine = pyengine.build(make_model([node], {"x": x}, [("y", dtype)]))
        np.testing.assert_array_equal(ref_engine.run({"x": x})["y"], got["y"])


# --- int8 / uint8 Transpose on each ISA tier ---------------------------------------
# The NCHW <-> NHWC transposes at the edges of a channels-last int8 network
# run transpose_s8_avx512 (any 1-byte dtype: 64-row x 16-column register
# blocks, byte-masked at ragged edges) on the tiers with AVX-512 and the
# scalar tiles below them. Every tier must match numpy bit for bit; the
# shapes make rows (C, or H*W going back) and columns miss the block sizes,
# and the batch-1 ones are large enough for the pool to split a transpose's
# columns between threads.

BYTE_TIERS = ["ref", "avx2", "avx512", "vnni"]
BYTE_TRANSPOSE_SHAPES = [(2, 64, 56, 56), (1, 64, 56, 56), (1, 67, 9, 11), (3, 5, 1, 13), (1, 1, 1, 1),
                         (2, 130, 7, 7), (1, 130, 33, 35), (2, 80, 4, 4)]


def _byte_tier_missing(tier):
    info = _core.cpu_info()
    order = ["ref", "avx2", "avx512", "vnni", "amx"]
    if order.index(tier) > order.index(info["max_isa"]):
        return f"this CPU ({info['brand']}) or build lacks ISA tier '{tier}' (highest: {info['max_isa']})"
    if tier == "avx512" and not info["avx512bw"]:
        return f"this CPU ({info['brand']}) has VNNI without AVX-512"
    return None


@contextlib.contextmanager
def _isa_cap(tier):
    saved = _core.isa_cap()
    _core.set_isa_cap(tier)
    try:
        yield
    finally:
        _core.set_isa_cap(saved)


@pytest.mark.parametrize("tier", BYTE_TIERS)
@pytest.mark.parametrize("perm", [(0, 2, 3, 1), (0, 3, 1, 2)], ids=["nchw_to_nhwc", "nhwc_to_nchw"])
@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("shape", BYTE_TRANSPOSE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_byte_transpose_tiers_vs_numpy(rng, shape, dtype, perm, tier):
    why = _byte_tier_missing(tier)
    if why:
        pytest.skip(why)
    # shape is NCHW; going back, the input is its NHWC form.
    in_shape = shape if perm == (0, 2, 3, 1) else (shape[0], shape[2], shape[3], shape[1])
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max, size=in_shape, endpoint=True, dtype=dtype)
    node = helper.make_node("Transpose", ["x"], ["y"], perm=list(perm))
    model = make_model([node], {"x": x}, [("y", dtype)])
    want = np.ascontiguousarray(x.transpose(perm))
    wide = tier in ("avx512", "vnni") and _core.cpu_info()["avx512bw"]
    for threads in (1, 2):
        with _isa_cap(tier):
            engine = pyengine.build(model, num_threads=threads)
        got = engine.run({"x": x})["y"]
        assert_same(got, want)
        kernel = engine.profile({"x": x}, runs=1)[0]["kernel"]
        assert kernel == ("transpose_s8_avx512" if wide else "transpose_ref"), (tier, kernel)


# --- Concat, Split ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes,axis", [
    ([(2, 3), (2, 5)], 1),
    ([(2, 3), (4, 3), (1, 3)], 0),
    ([(2, 3, 4), (2, 3, 1), (2, 3, 7)], -1),
    ([(1, 13, 5, 5), (1, 3, 5, 5), (1, 0, 5, 5), (1, 7, 5, 5)], 1),
    ([(3,), (1,)], 0),
])
def test_concat(rng, dtype, shapes, axis):
    feeds = {f"x{i}": rand(rng, s, dtype) for i, s in enumerate(shapes)}
    check([helper.make_node("Concat", list(feeds), ["y"], axis=axis)], feeds)


def test_concat_densenet_channels_large(rng):
    # Batch 1, channel concat of big feature maps: one "row", split across threads.
    feeds = {f"x{i}": rand(rng, (1, c, 32, 33), np.float32) for i, c in enumerate([64, 32, 32, 17])}
    check([helper.make_node("Concat", list(feeds), ["y"], axis=1)], feeds)
    feeds = {f"x{i}": rand(rng, (3, c, 17, 19), np.float32) for i, c in enumerate([48, 32, 1])}
    check([helper.make_node("Concat", list(feeds), ["y"], axis=1)], feeds)


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint8, np.bool_])
def test_split_variants(rng, dtype):
    x = rand(rng, (6, 7, 3), dtype)
    outs2 = [("a", dtype), ("b", dtype)]
    outs3 = [("a", dtype), ("b", dtype), ("c", dtype)]
    # Equal split.
    check([helper.make_node("Split", ["x"], ["a", "b", "c"], axis=0)], {"x": x}, outputs=outs3, opset=13)
    # 'split' attribute (opset 11) and input (13+), negative axis.
    check([helper.make_node("Split", ["x"], ["a", "b"], axis=1, split=[2, 5])], {"x": x}, outputs=outs2, opset=11)
    check([helper.make_node("Split", ["x", "s"], ["a", "b", "c"], axis=-2)], {"x": x}, outputs=outs3,
          inits={"s": i64(3, 0, 4)}, opset=13)
    # num_outputs (opset 18), uneven: chunks of ceil(7/3) = 3, 3, 1.
    check([helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1, num_outputs=3)], {"x": x}, outputs=outs3)


def test_split_large(rng):
    x = rand(rng, (1, 160, 32, 32), np.float32)
    outs = [("a", np.float32), ("b", np.float32)]
    check([helper.make_node("Split", ["x", "s"], ["a", "b"], axis=1)], {"x": x}, outputs=outs,
          inits={"s": i64(37, 123)})


# --- Slice -------------------------------------------------------------------------

SLICE_CASES = [
    # starts, ends, axes, steps
    ((1,), (3,), (0,), None),
    ((0, 1), (INT64_MAX, -1), None, None),
    ((-1,), (INT64_MIN,), (1,), (-1,)),            # reverse an axis
    ((5,), (0,), (1,), (-2,)),
    ((-100,), (100,), (-1,), (3,)),                 # clamping
    ((2, 1), (1, 5), (0, 1), (1, 2)),               # empty along axis 0
    ((0,), (INT64_MAX,), (2,), (INT64_MAX,)),       # huge step
    ((1, -3, 0), (4, -1, 9), (0, 1, 2), (2, 1, 4)),
    ((3,), (-1,), (-3,), None),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("starts,ends,axes,steps", SLICE_CASES)
def test_slice(rng, dtype, starts, ends, axes, steps):
    x = rand(rng, (5, 7, 9), dtype)
    names = ["x", "st", "en"]
    inits = {"st": i64(*starts), "en": i64(*ends)}
    if axes is not None or steps is not None:
        names.append("ax" if axes is not None else "")
        if axes is not None:
            inits["ax"] = i64(*axes)
    if steps is not None:
        names.append("sp")
        inits["sp"] = i64(*steps)
    check([helper.make_node("Slice", names, ["y"])], {"x": x}, inits=inits)


def test_slice_int32_params_and_large(rng):
    x = rand(rng, (2, 64, 40, 41), np.float32)
    inits = {"st": np.array([1, 3], np.int32), "en": np.array([60, 40], np.int32),
             "ax": np.array([1, 3], np.int32), "sp": np.array([2, 1], np.int32)}
    check([helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"])], {"x": x}, inits=inits)


# --- Pad -----------------------------------------------------------------------------

PAD_CASES = [
    ((13,), (2, 3)),
    ((3, 7), (1, 2, 2, 1)),
    ((2, 3, 5), (0, 1, 2, 0, 2, 1)),
    ((1, 3, 5, 7), (0, 0, 1, 2, 0, 0, 3, 1)),
    ((1, 2, 3, 4, 5), (0, 1, 1, 2, 1, 0, 0, 2, 1, 3)),
    ((2, 4, 6), (0, -1, 1, 0, 2, -2)),  # negative pads crop
]


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
@pytest.mark.parametrize("shape,pads", PAD_CASES)
def test_pad_modes(rng, mode, shape, pads):
    x = rand(rng, shape, np.float32)
    check([helper.make_node("Pad", ["x", "p"], ["y"], mode=mode)], {"x": x}, inits={"p": i64(*pads)})


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.int32, np.uint8, np.bool_])
def test_pad_constant_value_and_dtypes(rng, dtype):
    x = rand(rng, (3, 4, 5), dtype)
    cv = rand(rng, (), dtype)
    check([helper.make_node("Pad", ["x", "p", "c"], ["y"])], {"x": x},
          inits={"p": i64(1, 0, 2, 2, 1, 0), "c": np.asarray(cv, dtype)})
    if dtype != np.bool_:
        check([helper.make_node("Pad", ["x", "p"], ["y"], mode="edge")], {"x": x}, inits={"p": i64(1, 0, 2, 2, 1, 0)})


def test_pad_axes_input_opset18(rng):
    x = rand(rng, (2, 3, 5, 7), np.float32)
    check([helper.make_node("Pad", ["x", "p", "c", "a"], ["y"], mode="reflect")], {"x": x},
          inits={"p": i64(1, 2, 3, 1), "c": np.array(0, np.float32), "a": i64(-1, 2)})
    check([helper.make_node("Pad", ["x", "p", "", "a"], ["y"])], {"x": x}, inits={"p": i64(2, 1), "a": i64(1)})


def test_pad_large_reflect(rng):
    x = rand(rng, (1, 64, 56, 56), np.float32)
    check([helper.make_node("Pad", ["x", "p"], ["y"], mode="reflect")], {"x": x},
          inits={"p": i64(0, 0, 3, 3, 0, 0, 3, 3)})


# --- Gather, Expand, Tile ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("idx_dtype", [np.int64, np.int32])
@pytest.mark.parametrize("axis,idx", [
    (0, [2, 0, -1]),
    (1, [[0, -7], [3, 6]]),
    (-1, [4]),
    (2, 3),          # scalar index removes the axis
    (1, []),         # empty indices
])
def test_gather(rng, dtype, idx_dtype, axis, idx):
    x = rand(rng, (3, 7, 5), dtype)
    check([helper.make_node("Gather", ["x", "i"], ["y"], axis=axis)], {"x": x},
          inits={"i": np.array(idx, dtype=idx_dtype).reshape(np.shape(idx))})


def test_gather_indices_at_run_time_and_out_of_range(rng):
    x = rand(rng, (4, 6), np.float32)
    idx = np.array([[3, -4], [0, 1]], np.int64)
    check([helper.make_node("Gather", ["x", "i"], ["y"], axis=0)], {"x": x, "i": idx})
    model = make_model([helper.make_node("Gather", ["x", "i"], ["y"], axis=1, name="g")], {"x": x, "i": idx},
                       [("y", np.float32)])
    engine = pyengine.build(model)
    with pytest.raises(pyengine.PyengineError, match="'g'.*index 6 is out of range"):
        engine.run({"x": x, "i": np.array([[0, 1], [6, 2]], np.int64)})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("in_shape,shape", [
    ((3, 1), (3, 4)),
    ((1,), (2, 3, 5)),
    ((3, 1, 5), (2, 1, 7, 1)),   # 1 in the shape keeps the data dim (bidirectional)
    ((13,), (1,)),
    ((1, 1), (4, 17)),
])
def test_expand(rng, dtype, in_shape, shape):
    x = rand(rng, in_shape, dtype)
    check([helper.make_node("Expand", ["x", "s"], ["y"])], {"x": x}, inits={"s": i64(*shape)})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("in_shape,reps", [
    ((3,), (4,)),
    ((2, 3), (3, 1)),
    ((2, 1, 3), (1, 5, 2)),
    ((1, 2, 3, 1), (2, 1, 3, 7)),
    ((2, 3), (0, 2)),
])
def test_tile(rng, dtype, in_shape, reps):
    x = rand(rng, in_shape, dtype)
    check([helper.make_node("Tile", ["x", "r"], ["y"])], {"x": x}, inits={"r": i64(*reps)})


# --- Constant, Shape, ConstantOfShape, Range ------------------------------------------

@pytest.mark.parametrize("attr,value,dtype", [
    ("value", np.arange(6, dtype=np.float32).reshape(2, 3), np.float32),
    ("value", np.array([5, -2, 7], np.int64), np.int64),
    ("value", np.array([True, False]), np.bool_),
    ("value_float", 2.5, np.float32),
    ("value_floats", [1.5, -2.0, 3.25], np.float32),
    ("value_int", 7, np.int64),
    ("value_ints", [3, 1, -4], np.int64),
])
def test_constant(rng, attr, value, dtype):
    v = numpy_helper.from_array(value) if attr == "value" else value
    x = rand(rng, (2,), np.float32)
    nodes = [helper.make_node("Constant", [], ["c"], **{attr: v}), helper.make_node("Identity", ["x"], ["y"])]
    check(nodes, {"x": x}, outputs=[("c", dtype), ("y", np.float32)])


def test_constant_feeds_shape_arithmetic(rng):
    x = rand(rng, (2, 3, 4), np.float32)
    nodes = [helper.make_node("Constant", [], ["s"], value_ints=[4, -1]), helper.make_node("Reshape", ["x", "s"], ["y"])]
    check(nodes, {"x": x})


@pytest.mark.parametrize("kw", [{}, {"start": 1}, {"end": -1}, {"start": -3, "end": 3}, {"start": 2, "end": 1},
                                {"start": -10, "end": 10}])
def test_shape(rng, kw):
    x = rand(rng, (2, 3, 5, 7), np.float32)
    check([helper.make_node("Shape", ["x"], ["y"], **kw)], {"x": x}, outputs=[("y", np.int64)])


@pytest.mark.parametrize("value", [None, np.array([1.5], np.float32), np.array([7], np.int64),
                                   np.array([3], np.int32), np.array([True])])
def test_constant_of_shape(rng, value):
    x = rand(rng, (2, 3, 5), np.float32)
    kw = {} if value is None else {"value": numpy_helper.from_array(value)}
    dtype = np.float32 if value is None else value.dtype
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("ConstantOfShape", ["s"], ["y"], **kw)]
    check(nodes, {"x": x}, outputs=[("y", dtype)])
    check([helper.make_node("ConstantOfShape", ["s"], ["y"], **kw)], {"x": x}, outputs=[("y", dtype)],
          inits={"s": i64(0)})


@pytest.mark.parametrize("dtype,start,limit,delta", [
    (np.int64, 0, 10, 3),
    (np.int64, 10, -4, -2),
    (np.int32, 3, 3, 1),
    (np.int32, -5, 17, 4),
    (np.float32, 0.5, 4.0, 0.25),
    (np.float32, 1.0, -2.0, -0.5),
    (np.int64, 5, 0, 1),
])
def test_range(rng, dtype, start, limit, delta):
    x = rand(rng, (2,), np.float32)
    inits = {"a": np.array(start, dtype), "b": np.array(limit, dtype), "c": np.array(delta, dtype)}
    nodes = [helper.make_node("Range", ["a", "b", "c"], ["y"]), helper.make_node("Identity", ["x"], ["z"])]
    check(nodes, {"x": x}, outputs=[("y", dtype), ("z", np.float32)], inits=inits)


def test_range_from_shape(rng):
    # Range over a dim of the input: evaluated at plan time for every batch.
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Range", ["start", "n", "one"], ["y"])]
    inits = {"zero": np.array(0, np.int64), "start": np.array(0, np.int64), "one": np.array(1, np.int64)}
    engine = None
    for batch in (3, 1, 6):
        x = rand(rng, (batch, 4), np.float32)
        engine, _ = check(nodes, {"x": x}, outputs=[("y", np.int64)], inits=inits,
                          input_shapes={"x": ["batch", 4]}, engine=engine)


# --- Resize ----------------------------------------------------------------------------

COORD_MODES = ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"]
NEAREST_MODES = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]


@pytest.mark.parametrize("coord", COORD_MODES)
@pytest.mark.parametrize("nearest", NEAREST_MODES)
@pytest.mark.parametrize("scales", [(1, 1, 2, 2), (1, 1, 0.5, 0.6), (1, 1, 1.7, 3.0), (1, 1, 1, 0.34)])
def test_resize_nearest_scales(rng, coord, nearest, scales):
    x = rand(rng, (2, 3, 7, 13), np.float32)
    node = helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="nearest", coordinate_transformation_mode=coord,
                            nearest_mode=nearest)
    check([node], {"x": x}, inits={"sc": np.array(scales, np.float32)})


@pytest.mark.parametrize("coord", COORD_MODES)
@pytest.mark.parametrize("scales", [(1, 1, 2, 2), (1, 1, 0.5, 0.6), (1, 1, 1.7, 3.0), (1, 1, 1, 0.34)])
def test_resize_linear_scales(rng, coord, scales):
    x = rand(rng, (2, 3, 7, 13), np.float32)
    node = helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="linear", coordinate_transformation_mode=coord)
    inits = {"sc": np.array(scales, np.float32)}
    _, got = check([node], {"x": x}, inits=inits, exact=False)
    with force_ref():
        ref = pyengine.build(make_model([node], {"x": x}, [("y", np.float32)], inits))
    np.testing.assert_allclose(ref.run({"x": x})["y"], got["y"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("sizes", [(2, 3, 14, 26), (2, 3, 3, 5), (2, 3, 1, 1), (2, 3, 17, 13)])
def test_resize_sizes(rng, mode, sizes):
    x = rand(rng, (2, 3, 7, 13), np.float32)
    node = helper.make_node("Resize", ["x", "", "", "sz"], ["y"], mode=mode)
    check([node], {"x": x}, inits={"sz": i64(*sizes)}, exact=mode == "nearest")


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
def test_resize_sizes_with_axes_and_policy(rng, policy):
    x = rand(rng, (1, 2, 9, 6), np.float32)
    node = helper.make_node("Resize", ["x", "", "", "sz"], ["y"], mode="linear", axes=[2, 3],
                            keep_aspect_ratio_policy=policy)
    check([node], {"x": x}, inits={"sz": i64(20, 7)}, exact=False)


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int8])
def test_resize_nearest_integer_dtypes(rng, dtype):
    x = rand(rng, (1, 3, 5, 6), dtype)
    node = helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="nearest")
    check([node], {"x": x}, inits={"sc": np.array([1, 1, 2.5, 1.5], np.float32)})


def test_resize_large_upsample(rng):
    x = rand(rng, (1, 32, 40, 40), np.float32)
    sc = {"sc": np.array([1, 1, 2, 2], np.float32)}
    check([helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="nearest")], {"x": x}, inits=sc)
    check([helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="linear")], {"x": x}, inits=sc, exact=False)


@pytest.mark.parametrize("kw,match", [
    ({"mode": "cubic"}, "cubic"),
    ({"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"}, "tf_crop_and_resize"),
])
def test_resize_unsupported_variants(rng, kw, match):
    x = rand(rng, (1, 1, 4, 4), np.float32)
    model = make_model([helper.make_node("Resize", ["x", "", "sc"], ["y"], name="rs", **kw)], {"x": x},
                       [("y", np.float32)], inits={"sc": np.array([1, 1, 2, 2], np.float32)})
    with pytest.raises(pyengine.UnsupportedOperatorError, match=f"'rs'.*{match}"):
        pyengine.build(model)


def test_resize_linear_on_channels_is_unsupported(rng):
    x = rand(rng, (1, 2, 4, 4), np.float32)
    model = make_model([helper.make_node("Resize", ["x", "", "sc"], ["y"], name="rs", mode="linear")], {"x": x},
                       [("y", np.float32)], inits={"sc": np.array([1, 2, 2, 2], np.float32)})
    with pytest.raises(pyengine.UnsupportedOperatorError, match="last two axes"):
        pyengine.build(model)


# --- shape arithmetic, plan-time evaluation, aliasing ---------------------------------

def _flatten_chain_nodes():
    """What PyTorch exports for x.view(x.size(0), -1) with a dynamic batch."""
    return [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
        helper.make_node("Unsqueeze", ["b", "ax0"], ["bu"]),
        helper.make_node("Concat", ["bu", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]


CHAIN_INITS = {"zero": np.array(0, np.int64), "ax0": i64(0), "minus1": i64(-1)}


def test_dynamic_batch_shape_chain(rng):
    engine = None
    for batch in (1, 2, 5, 2, 1):  # repeats hit the cached plans
        x = rand(rng, (batch, 3, 5, 7), np.float32)
        engine, got = check(_flatten_chain_nodes(), {"x": x}, inits=CHAIN_INITS,
                            input_shapes={"x": ["batch", 3, 5, 7]}, engine=engine)
        assert got["y"].shape == (batch, 105)
    # Static inference: the batch is unknown, the rank is known.
    assert engine.outputs[0].shape == (None, None)


def test_dynamic_batch_chain_feeding_more_ops(rng):
    # Shape arithmetic (Shape -> Slice -> Concat) builds (N, -1, W, 1); the
    # reshaped tensor then goes through Transpose and Squeeze.
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Slice", ["s", "z1", "o1"], ["n"]),
        helper.make_node("Slice", ["s", "o3", "e4"], ["w"]),
        helper.make_node("Concat", ["n", "m1", "w", "one"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3]),
        helper.make_node("Squeeze", ["t", "ax3"], ["y"]),
    ]
    inits = {"z1": i64(0), "o1": i64(1), "o3": i64(3), "e4": i64(4), "m1": i64(-1),
             "one": i64(1), "ax3": i64(3)}
    engine = None
    for batch in (2, 1, 5):
        x = rand(rng, (batch, 3, 4, 5), np.float32)
        engine, got = check(nodes, {"x": x}, inits=inits, input_shapes={"x": ["batch", 3, 4, 5]}, engine=engine)
        assert got["y"].shape == (batch, 5, 12)


def test_static_inference_of_output_shapes(rng):
    x = rand(rng, (2, 3, 4), np.float32)
    model = make_model([helper.make_node("Transpose", ["x"], ["t"], perm=[2, 0, 1]),
                        helper.make_node("Flatten", ["t"], ["y"], axis=2)], {"x": x}, [("y", np.float32)],
                       input_shapes={"x": ["batch", 3, 4]})
    engine = pyengine.build(model)
    assert engine.outputs[0].shape == (None, 3)  # [4, ?, 3] flattened at 2: [4*?, 3]
    model = make_model([helper.make_node("Concat", ["x", "x"], ["y"], axis=1)], {"x": x}, [("y", np.float32)],
                       input_shapes={"x": ["batch", 3, 4]})
    assert pyengine.build(model).outputs[0].shape == (None, 6, 4)


def test_reshape_output_is_graph_output_does_not_alias(rng):
    x = rand(rng, (2, 3, 4), np.float32)
    nodes = [helper.make_node("Reshape", ["x", "s"], ["y"]), helper.make_node("Flatten", ["x"], ["z"])]
    _, got = check(nodes, {"x": x}, outputs=[("y", np.float32), ("z", np.float32)], inits={"s": i64(4, 6)})
    assert not np.shares_memory(got["y"], x) and not np.shares_memory(got["z"], x)
    assert not np.shares_memory(got["y"], got["z"])


def test_alias_chain_feeding_other_nodes(rng):
    # Relu -> Reshape -> Unsqueeze -> Squeeze -> Identity -> Transpose, while the
    # Relu output (the aliased storage) is still read later by a Concat: the
    # memory plan must keep it alive through the alias chain.
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Reshape", ["a", "s"], ["b"]),
        helper.make_node("Unsqueeze", ["b", "ax"], ["c"]),
        helper.make_node("Squeeze", ["c", "ax"], ["d"]),
        helper.make_node("Identity", ["d"], ["e"]),
        helper.make_node("Transpose", ["e"], ["f"], perm=[1, 0]),
        helper.make_node("Flatten", ["f"], ["g"], axis=0),
        helper.make_node("Relu", ["x"], ["h"]),
        helper.make_node("Flatten", ["a"], ["a2"], axis=0),
        helper.make_node("Concat", ["g", "a2", "h2"], ["y"], axis=1),
        helper.make_node("Flatten", ["h"], ["h2"], axis=0),
    ]
    nodes = nodes[:-2] + [nodes[-1], nodes[-2]]  # topological order
    inits = {"s": i64(6, 20), "ax": i64(0)}
    for batch in (1, 3):
        x = rand(rng, (batch * 2, 3, 20), np.float32) - 0.5
        inits["s"] = i64(batch * 6, 20)
        check(nodes, {"x": x}, inits=inits)


def test_identity_and_dropout_of_graph_input_as_output(rng):
    x = rand(rng, (3, 5), np.float32)
    nodes = [helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Dropout", ["x"], ["z"])]
    _, got = check(nodes, {"x": x}, outputs=[("y", np.float32), ("z", np.float32)])
    assert not np.shares_memory(got["y"], x) and not np.shares_memory(got["z"], x)


# --- later-opset variants and plan-time evaluation of more shape ops --------------------

@pytest.mark.parametrize("shape,pads", PAD_CASES[:5])
def test_pad_wrap_opset19(rng, shape, pads):
    x = rand(rng, shape, np.float32)
    check([helper.make_node("Pad", ["x", "p"], ["y"], mode="wrap")], {"x": x}, inits={"p": i64(*pads)}, opset=19)


@pytest.mark.parametrize("mode,coord,opset", [("nearest", "tf_half_pixel_for_nn", 12),
                                               ("nearest", "half_pixel_symmetric", 19),
                                               ("linear", "half_pixel_symmetric", 19)])
def test_resize_other_coordinate_modes(rng, mode, coord, opset):
    x = rand(rng, (1, 3, 7, 9), np.float32)
    node = helper.make_node("Resize", ["x", "roi", "sc"], ["y"], mode=mode, coordinate_transformation_mode=coord)
    check([node], {"x": x}, inits={"roi": np.zeros(0, np.float32), "sc": np.array([1, 1, 1.6, 0.7], np.float32)},
          opset=opset, exact=mode == "nearest")


def test_resize_opset11_empty_scales_with_sizes(rng):
    x = rand(rng, (2, 2, 5, 6), np.float32)
    node = helper.make_node("Resize", ["x", "roi", "sc", "sz"], ["y"], mode="nearest",
                            coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    check([node], {"x": x}, opset=11,
          inits={"roi": np.zeros(0, np.float32), "sc": np.zeros(0, np.float32), "sz": i64(2, 2, 11, 3)})


def test_resize_sizes_from_shape_arithmetic(rng):
    # sizes = Shape(x)[2:] * 2, concatenated with (N, C): evaluated at plan time.
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Slice", ["s", "z", "two"], ["nc"]),
        helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
        helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="nearest"),
    ]
    inits = {"z": i64(0), "two": i64(2), "hw": i64(9, 4)}
    engine = None
    for batch in (1, 3):
        x = rand(rng, (batch, 2, 5, 6), np.float32)
        engine, got = check(nodes, {"x": x}, inits=inits, input_shapes={"x": ["batch", 2, 5, 6]}, engine=engine)
        assert got["y"].shape == (batch, 2, 9, 4)


def test_squeeze_without_axes_on_dynamic_batch(rng):
    # The batch is squeezed away only when it is 1: the rank is unknown until plan time.
    engine = None
    for batch in (2, 1, 3):
        x = rand(rng, (batch, 1, 3), np.float32)
        engine, got = check([helper.make_node("Squeeze", ["x"], ["y"])], {"x": x}, opset=13,
                            input_shapes={"x": ["batch", 1, 3]}, engine=engine)
        assert got["y"].shape == ((3,) if batch == 1 else (batch, 3))


def test_expand_and_tile_to_dynamic_shapes(rng):
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Expand", ["row", "s"], ["e"]),
        helper.make_node("ConstantOfShape", ["s"], ["ones"], value=numpy_helper.from_array(np.array([2], np.int64))),
        helper.make_node("Tile", ["x", "reps"], ["y"]),
        helper.make_node("Identity", ["ones"], ["ones_out"]),
    ]
    inits = {"row": rand(rng, (1, 5), np.float32), "reps": i64(2, 1)}
    engine = None
    for batch in (1, 4):
        x = rand(rng, (batch, 5), np.float32)
        engine, _ = check(nodes, {"x": x}, outputs=[("e", np.float32), ("y", np.float32), ("ones_out", np.int64)],
                          inits=inits, input_shapes={"x": ["batch", 5]}, engine=engine)


@pytest.mark.parametrize("node,shape,inits", [
    (helper.make_node("Transpose", ["x"], ["y"], perm=[2, 0, 1]), (0, 3, 4), {}),
    (helper.make_node("Concat", ["x", "x"], ["y"], axis=1), (2, 0, 3), {}),
    (helper.make_node("Pad", ["x", "p"], ["y"]), (0, 3), {"p": i64(1, 0, 1, 2)}),
    (helper.make_node("Expand", ["x", "s"], ["y"]), (3, 1), {"s": i64(0, 3, 4)}),
    (helper.make_node("Gather", ["x", "i"], ["y"], axis=1), (0, 5), {"i": i64(1, 4)}),
    (helper.make_node("Flatten", ["x"], ["y"], axis=1), (4, 0, 2), {}),
    (helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="nearest"), (1, 2, 3, 4),
     {"sc": np.array([1, 1, 0.3, 1], np.float32)}),
])
def test_empty_tensors(rng, node, shape, inits):
    x = rand(rng, shape, np.float32)
    check([node], {"x": x}, inits=inits)


def test_legacy_attribute_forms_against_numpy(rng):
    # Forms older than MIN_OPSET that onnxruntime no longer accepts in a new
    # opset, so numpy is the reference here: Slice with starts/ends/axes
    # attributes (opset < 10), Pad with pads/value attributes (opset < 11).
    x = rand(rng, (4, 7, 5), np.float32)
    nodes = [
        helper.make_node("Slice", ["x"], ["a"], starts=[1, -4], ends=[INT64_MAX, 6], axes=[0, 2]),
        helper.make_node("Pad", ["x"], ["b"], pads=[0, 1, 2, 1, 0, 0], value=1.5),
    ]
    model = make_model(nodes, {"x": x}, [("a", np.float32), ("b", np.float32)])
    got = pyengine.build(model).run({"x": x})
    assert_same(got["a"], x[1:, :, 1:6])
    assert_same(got["b"], np.pad(x, [(0, 1), (1, 0), (2, 0)], constant_values=np.float32(1.5)))


@pytest.mark.parametrize("scales", [(1, 1, 1.6, 2.0), (1, 1, 0.6, 0.5), (1, 1, 3.0, 0.75)])
def test_resize_opset10_two_input_form(rng, scales):
    # Resize-10 (X, scales): asymmetric coordinates and its own rounding. The
    # reference is onnxruntime on an opset-10 model; pyengine gets the same node
    # in a newer-opset model, since build() upgrades opset-10 models first.
    x = rand(rng, (1, 2, 5, 8), np.float32)
    node = helper.make_node("Resize", ["x", "sc"], ["y"], mode="nearest")
    inits = {"sc": np.array(scales, np.float32)}
    want = run_ort(make_model([node], {"x": x}, [("y", np.float32)], inits, opset=10), {"x": x})[0]
    got = pyengine.build(make_model([node], {"x": x}, [("y", np.float32)], inits)).run({"x": x})["y"]
    assert_same(got, want)
