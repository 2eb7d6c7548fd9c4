"""Elementwise operators against onnxruntime, and AVX2 kernels against their references.

Every test builds single-node ONNX models with onnx.helper and feeds fresh random
inputs (the `rng` fixture prints its seed, so a failure can be replayed).

Tolerances (pyengine vs onnxruntime):
  EXACT  (bit-for-bit, NaN == NaN): relu, leaky_relu, clip, neg, abs, floor, ceil,
         sign, sqrt, reciprocal, add, sub, mul, div, max, min, sum, compare ops,
         where, not, cast, prelu, every integer and bool path.
  ULP1   rtol 1e-6, atol 5e-7: hard_sigmoid, hard_swish, softsign, pow, mean
         (one rounding of an intermediate of magnitude <= ~8 away from
         onnxruntime: a fused multiply-add, or a division for a multiplication).
  TRANS  rtol 1e-5, atol 1e-6: exp, log, erf, tanh, sigmoid, gelu, softplus, elu,
         selu, mish (onnxruntime uses its own approximations for several).
AVX2 vs reference (pyengine._core.set_force_ref):
  exact for relu, leaky_relu, clip, add, sub, mul, div, max, min;
  at most 3 ulp for exp, tanh, erf, sigmoid (the reference is <cmath>);
  rtol 1e-6, atol 1e-6 for gelu (1 + erf cancels for negative x, so the
  absolute error is what is bounded), ULP1 for hard_sigmoid and hard_swish
  (fma vs multiply-then-add).
ChannelAffine (no onnxruntime op) against float64 numpy: |error| <= 2^-23 *
(|x * scale| + |y|), i.e. one rounding of the product plus one of the sum.
"""

import contextlib

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import pyengine
from pyengine import _core

ort = pytest.importorskip("onnxruntime")

EXACT = dict(rtol=0, atol=0)
ULP1 = dict(rtol=1e-6, atol=5e-7)
TRANS = dict(rtol=1e-5, atol=1e-6)

SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e30, -1e30, 88.7, -88.7, 100.0, -100.0,
                     1e-30, -1e-30, 3.9192057, 3.919206, 0.5, -0.5, 0.625, -0.625], np.float32)
HAS_AVX2 = _core.cpu_info()["use_avx2"]  # false on old CPUs and in ENGINE_FORCE_REF builds


@pytest.fixture
def rng():
    seed = np.random.SeedSequence().entropy
    print(f"rng seed: {seed}")
    return np.random.default_rng(seed)


# ---- model building and running ------------------------------------------------

def onnx_type(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def make_model(op, inputs, out_type=None, attrs=None, opset=17, initializers=None, domain="", shapes=None):
    """A one-node model. inputs: list of (name, dtype) or None for an omitted
    optional input; initializers: name -> array stored as constants; shapes:
    name -> list of dims (str for dynamic), default: the shape of the fed array
    is unknown, so each input gets a symbolic dim per axis from `shapes`."""
    initializers = initializers or {}
    shapes = shapes or {}
    names, vis = [], []
    for spec in inputs:
        if spec is None:
            names.append("")
            continue
        name, dtype = spec
        names.append(name)
        if name not in initializers:
            vis.append(helper.make_tensor_value_info(name, onnx_type(dtype), shapes.get(name)))
    first = next(s for s in inputs if s is not None)
    out_type = onnx_type(first[1]) if out_type is None else out_type
    out = helper.make_tensor_value_info("y", out_type, None)
    node = helper.make_node(op, names, ["y"], name="node", domain=domain, **(attrs or {}))
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()]
    graph = helper.make_graph([node], "g", vis, [out], initializer=inits)
    opsets = [helper.make_opsetid("", opset)]
    if domain:
        opsets.append(helper.make_opsetid(domain, 1))
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = min(model.ir_version, 9)
    return model


@contextlib.contextmanager
def force_ref(on):
    _core.set_force_ref(on)
    try:
        yield
    finally:
        _core.set_force_ref(False)


def build(model, ref=False, num_threads=0):
    with force_ref(ref):
        return pyengine.build(model, num_threads=num_threads)


def ort_session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def run(engine_or_session, feeds):
    if isinstance(engine_or_session, pyengine.Engine):
        return engine_or_session.run(feeds)["y"]
    return engine_or_session.run(None, feeds)[0]


def assert_same(got, want, tol, msg=""):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype, f"{msg}: dtype {got.dtype} != {want.dtype}"
    assert got.shape == want.shape, f"{msg}: shape {got.shape} != {want.shape}"
    if tol is EXACT or got.dtype.kind in "biu":
        np.testing.assert_array_equal(got, want, err_msg=msg)
    else:
        np.testing.assert_allclose(got, want, equal_nan=True, err_msg=msg, **tol)


def ulp_distance(a, b):
    """Distance in float32 ulps (NaN vs NaN and inf vs inf count as 0, -0 == +0)."""
    def key(x):
        i = x.astype(np.float32).view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)
    d = np.abs(key(a) - key(b))
    both_nan = np.isnan(a) & np.isnan(b)
    return np.where(both_nan, 0, d)


def assert_ulp(got, want, max_ulp, tiny=1e-37, msg=""):
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{msg}: NaN positions differ"
    d = ulp_distance(got, want)
    d = np.where(np.maximum(np.abs(got), np.abs(want)) < tiny, 0, d)  # subnormal results: absolute
    worst = int(d.max()) if d.size else 0
    assert worst <= max_ulp, f"{msg}: {worst} ulp at x index {int(d.argmax())}: {got.flat[d.argmax()]} vs {want.flat[d.argmax()]}"


TAIL_LENGTHS = list(range(1, 36)) + [127, 1000, 1037]
PARALLEL_LENGTH = 40_000  # over 2 x 16K: split across threads


# ---- unary float ops -------------------------------------------------------------

# op, attrs, opset, input range, tolerance vs onnxruntime
UNARY = [
    ("Relu", {}, 17, (-5, 5), EXACT),
    ("LeakyRelu", {}, 17, (-5, 5), EXACT),
    ("LeakyRelu", {"alpha": 0.37}, 17, (-5, 5), EXACT),
    ("Sigmoid", {}, 17, (-20, 20), TRANS),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, 17, (-5, 5), ULP1),
    ("HardSigmoid", {}, 17, (-5, 5), ULP1),
    ("HardSwish", {}, 14, (-6, 6), ULP1),
    ("Tanh", {}, 17, (-10, 10), TRANS),
    ("Gelu", {}, 20, (-6, 6), TRANS),
    ("Gelu", {"approximate": "tanh"}, 20, (-6, 6), TRANS),
    ("Softplus", {}, 17, (-30, 30), TRANS),
    ("Softsign", {}, 17, (-10, 10), ULP1),
    ("Elu", {}, 17, (-5, 5), TRANS),
    ("Elu", {"alpha": 0.7}, 17, (-5, 5), TRANS),
    ("Selu", {}, 17, (-5, 5), TRANS),
    ("Selu", {"alpha": 1.5, "gamma": 0.9}, 17, (-5, 5), TRANS),
    ("Mish", {}, 18, (-10, 10), TRANS),
    ("Erf", {}, 17, (-5, 5), TRANS),
    ("Exp", {}, 17, (-20, 20), TRANS),
    ("Log", {}, 17, (1e-3, 100), TRANS),
    ("Sqrt", {}, 17, (0, 100), EXACT),
    ("Reciprocal", {}, 17, (-10, 10), EXACT),
    ("Neg", {}, 17, (-10, 10), EXACT),
    ("Abs", {}, 17, (-10, 10), EXACT),
    ("Floor", {}, 17, (-10, 10), EXACT),
    ("Ceil", {}, 17, (-10, 10), EXACT),
    ("Sign", {}, 17, (-10, 10), EXACT),
]


def _unary_id(p):
    return p[0] + "".join(f"_{k}={v}" for k, v in p[1].items())


@pytest.mark.parametrize("op,attrs,opset,rng_range,tol", UNARY, ids=[_unary_id(p) for p in UNARY])
def test_unary_f32_vs_onnxruntime(rng, op, attrs, opset, rng_range, tol):
    model = make_model(op, [("x", np.float32)], attrs=attrs, opset=opset, shapes={"x": ["n"]})
    engine, sess = build(model), ort_session(model)
    lo, hi = rng_range
    for n in TAIL_LENGTHS + [PARALLEL_LENGTH]:
        x = rng.uniform(lo, hi, n).astype(np.float32)
        assert_same(run(engine, {"x": x}), run(sess, {"x": x}), tol, f"{op} n={n}")
    x = np.concatenate([SPECIALS, rng.uniform(lo, hi, 5).astype(np.float32)])
    assert_same(run(engine, {"x": x}), run(sess, {"x": x}), tol, f"{op} special values")
    # Ranks 0 to 5, with size-1 dims.
    for shape in [(), (3, 17), (2, 1, 3), (1, 3, 1, 5), (2, 1, 3, 1, 5)]:
        m = make_model(op, [("x", np.float32)], attrs=attrs, opset=opset, shapes={"x": list(shape)})
        x = rng.uniform(lo, hi, shape).astype(np.float32)
        assert_same(run(build(m), {"x": x}), run(ort_session(m), {"x": x}), tol, f"{op} shape {shape}")


# ---- AVX2 against the reference ------------------------------------------------

AVX2_UNARY = [
    ("Relu", {}, 17, "exact"), ("LeakyRelu", {"alpha": 0.2}, 17, "exact"), ("Sigmoid", {}, 17, "ulp"),
    ("HardSigmoid", {"alpha": 0.25, "beta": 0.45}, 17, ULP1), ("HardSwish", {}, 14, ULP1),
    ("Tanh", {}, 17, "ulp"), ("Gelu", {}, 20, dict(rtol=1e-6, atol=1e-6)),
    ("Gelu", {"approximate": "tanh"}, 20, dict(rtol=1e-6, atol=1e-6)), ("Exp", {}, 17, "ulp"),
    ("Erf", {}, 17, "ulp"),
]


@pytest.mark.skipif(not HAS_AVX2, reason="AVX2 kernels not in use (no AVX2/FMA, or a reference-only build)")
@pytest.mark.parametrize("op,attrs,opset,tol", AVX2_UNARY, ids=[_unary_id(p) for p in AVX2_UNARY])
def test_unary_avx2_vs_ref(rng, op, attrs, opset, tol):
    model = make_model(op, [("x", np.float32)], attrs=attrs, opset=opset, shapes={"x": ["n"]})
    fast, ref = build(model), build(model, ref=True)
    # A dense sweep of the interesting range, wide magnitudes, every tail
    # length, and the special values.
    xs = [np.linspace(-12, 12, 200_003, dtype=np.float32),
          (rng.standard_normal(50_001) * np.exp(rng.uniform(-20, 5, 50_001))).astype(np.float32),
          rng.uniform(-110, 110, 10_007).astype(np.float32), SPECIALS]
    xs += [rng.uniform(-6, 6, n).astype(np.float32) for n in TAIL_LENGTHS]
    for x in xs:
        got, want = run(fast, {"x": x}), run(ref, {"x": x})
        msg = f"{op} avx2 vs ref, n={x.size}"
        if tol == "exact":
            assert_same(got, want, EXACT, msg)
        elif tol == "ulp":
            assert_ulp(got, want, 3, msg=msg)
        else:
            assert_same(got, want, tol, msg)


@pytest.mark.skipif(not HAS_AVX2, reason="AVX2 kernels not in use (no AVX2/FMA, or a reference-only build)")
def test_kernel_names_show_the_isa():
    model = make_model("Add", [("a", np.float32), ("b", np.float32)], shapes={"a": [3], "b": [3]})
    x = np.ones(3, np.float32)
    names = [layer["kernel"] for layer in build(model).profile({"a": x, "b": x}, runs=1)]
    assert names == ["add_f32_avx2"]
    names = [layer["kernel"] for layer in build(model, ref=True).profile({"a": x, "b": x}, runs=1)]
    assert names == ["add_f32_ref"]


# ---- integer and bool unary ops --------------------------------------------------

@pytest.mark.parametrize("op", ["Neg", "Abs", "Sign", "Relu"])
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int8])
def test_unary_int(rng, op, dtype):
    model = make_model(op, [("x", dtype)], shapes={"x": ["n"]})
    engine = build(model)
    info = np.iinfo(dtype)
    x = np.concatenate([rng.integers(-100, 100, 37), [0, info.max, info.min + 1]]).astype(dtype)
    got = run(engine, {"x": x})
    if op == "Relu" and dtype == np.int64:  # onnxruntime has no int64 Relu kernel
        want = np.maximum(x, 0)
    else:
        want = run(ort_session(model), {"x": x})
    assert_same(got, want, EXACT, f"{op} {dtype.__name__}")
    if op in ("Neg", "Abs"):  # the minimum wraps, as in two's complement
        np.testing.assert_array_equal(run(engine, {"x": np.array([info.min], dtype)}), [info.min])


def test_not(rng):
    model = make_model("Not", [("x", np.bool_)], shapes={"x": ["n"]})
    engine, sess = build(model), ort_session(model)
    for n in (1, 7, 33, 1000):
        x = rng.integers(0, 2, n).astype(np.bool_)
        assert_same(run(engine, {"x": x}), run(sess, {"x": x}), EXACT)


# ---- Clip -------------------------------------------------------------------------

@pytest.mark.parametrize("bounds", ["both", "min", "max", "none", "inverted"])
@pytest.mark.parametrize("as_initializer", [False, True])
def test_clip_f32(rng, bounds, as_initializer):
    lo, hi = {"both": (-0.5, 1.25), "min": (0.3, None), "max": (None, -0.2), "none": (None, None),
              "inverted": (1.0, -1.0)}[bounds]
    inputs = [("x", np.float32), ("lo", np.float32) if lo is not None else None,
              ("hi", np.float32) if hi is not None else None]
    while inputs[-1] is None:
        inputs.pop()
    values = {"lo": np.array(lo, np.float32), "hi": np.array(hi, np.float32)}
    inits = {k: values[k] for k in ("lo", "hi") if as_initializer and any(s and s[0] == k for s in inputs)}
    model = make_model("Clip", inputs, initializers=inits, shapes={"x": ["n"], "lo": [], "hi": []})
    engine, sess = build(model), ort_session(model)
    for n in [1, 7, 8, 9, 31, 1000, PARALLEL_LENGTH]:
        feeds = {"x": rng.uniform(-3, 3, n).astype(np.float32)}
        feeds.update({s[0]: values[s[0]] for s in inputs[1:] if s and s[0] not in inits})
        assert_same(run(engine, feeds), run(sess, feeds), EXACT, f"clip {bounds} n={n}")
    feeds = {"x": SPECIALS}
    feeds.update({s[0]: values[s[0]] for s in inputs[1:] if s and s[0] not in inits})
    assert_same(run(engine, feeds), run(sess, feeds), EXACT, f"clip {bounds} specials")


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int8, np.uint8])
def test_clip_int(rng, dtype):
    for lo, hi in [(2, 50), (None, 9), (7, None), (None, None)]:
        inputs = [("x", dtype), ("lo", dtype) if lo is not None else None, ("hi", dtype) if hi is not None else None]
        while inputs[-1] is None:
            inputs.pop()
        model = make_model("Clip", inputs, shapes={"x": [41], "lo": [], "hi": []})
        feeds = {"x": rng.integers(0 if dtype == np.uint8 else -100, 100, 41).astype(dtype)}
        if lo is not None:
            feeds["lo"] = np.array(lo, dtype)
        if hi is not None:
            feeds["hi"] = np.array(hi, dtype)
        assert_same(run(build(model), feeds), run(ort_session(model), feeds), EXACT, f"clip {lo},{hi}")


def test_clip_attributes(rng):
    # Bounds as attributes (opset < 11 form) on a node pyengine imports as is.
    model = make_model("Clip", [("x", np.float32)], attrs={"min": -0.25, "max": 0.75}, opset=13,
                       shapes={"x": [3, 17]})
    x = rng.uniform(-2, 2, (3, 17)).astype(np.float32)
    assert_same(run(build(model), {"x": x}), np.clip(x, -0.25, 0.75), EXACT)
    model = make_model("Clip", [("x", np.float32)], attrs={"max": 0.5}, opset=13, shapes={"x": [3, 17]})
    assert_same(run(build(model), {"x": x}), np.minimum(x, 0.5), EXACT)


def test_clip_opset6_model(rng):
    # pyengine upgrades opset 6 (bounds become Constant inputs); onnxruntime
    # runs opset 6 itself.
    model = make_model("Clip", [("x", np.float32)], attrs={"min": -0.25, "max": 0.75}, opset=6,
                       shapes={"x": [3, 17]})
    try:
        engine = build(model)
    except pyengine.UnsupportedOperatorError as exc:
        if "operator Constant is not supported" in str(exc):
            pytest.skip("the Constant kernel (shape_ops family) is not merged yet")
        raise
    x = rng.uniform(-2, 2, (3, 17)).astype(np.float32)
    assert_same(run(engine, {"x": x}), run(ort_session(model), {"x": x}), EXACT)


# ---- binary ops with broadcasting ------------------------------------------------

BROADCAST_SHAPES = [
    ((2, 3, 4, 5), (2, 3, 4, 5)),        # same shape
    ((3, 17), ()),                       # scalar operand
    ((), (3, 17)),
    ((2, 13, 7, 7), (1, 13, 1, 1)),      # per-channel
    ((1, 13, 1, 1), (2, 13, 7, 7)),
    ((2, 13, 7, 7), (13, 1, 1)),
    ((2, 13, 7, 7), (2, 13, 1, 1)),      # SE gate
    ((3, 1, 5), (1, 4, 1)),              # both directions
    ((4, 1), (3,)),
    ((2, 1, 3, 1, 5), (1, 4, 1, 6, 1)),  # rank 5
    ((5, 127), (127,)),
    ((1037,), (1,)),
    ((1,), ()),
    ((), ()),
    ((2, 0, 3), (1, 3)),                 # empty
    ((2, 64, 17, 19), (1, 64, 1, 1)),    # large enough to be split across threads
    ((2, 64, 17, 19), (2, 64, 17, 19)),
    ((9, 1, 33), (1, 35, 1)),
    ((5, 8191), (5, 1)),                 # thread ranges that start and end mid-row
    ((41, 1, 1001), (1, 3, 1)),
]
FLOAT_BINARY = [("Add", EXACT), ("Sub", EXACT), ("Mul", EXACT), ("Div", EXACT), ("Max", EXACT), ("Min", EXACT),
                ("Pow", ULP1), ("Equal", EXACT), ("Less", EXACT), ("Greater", EXACT),
                ("GreaterOrEqual", EXACT), ("LessOrEqual", EXACT)]
COMPARE = ("Equal", "Less", "Greater", "GreaterOrEqual", "LessOrEqual")


def _binary_inputs(rng, op, sa, sb, dtype=np.float32):
    if np.dtype(dtype).kind == "f":
        if op == "Pow":
            return rng.uniform(0.1, 3, sa).astype(dtype), rng.uniform(-3, 3, sb).astype(dtype)
        a, b = rng.standard_normal(sa).astype(dtype), rng.standard_normal(sb).astype(dtype)
        if op in COMPARE:  # make equality happen
            b = np.where(rng.random(sb) < 0.3, np.round(b), b).astype(dtype)
            a = np.where(rng.random(sa) < 0.3, np.round(a), a).astype(dtype)
        return a, b
    if op == "Pow":
        return rng.integers(-6, 7, sa).astype(dtype), rng.integers(0, 6, sb).astype(dtype)
    a = rng.integers(-100, 101, sa).astype(dtype)
    b = rng.integers(-20, 21, sb).astype(dtype)
    if op == "Div":
        b = np.where(b == 0, 7, b).astype(dtype)
    return a, b


@pytest.mark.parametrize("op,tol", FLOAT_BINARY, ids=[p[0] for p in FLOAT_BINARY])
def test_binary_f32_vs_onnxruntime(rng, op, tol):
    out_type = TP.BOOL if op in COMPARE else None
    for sa, sb in BROADCAST_SHAPES:
        model = make_model(op, [("a", np.float32), ("b", np.float32)], out_type=out_type,
                           shapes={"a": list(sa), "b": list(sb)})
        a, b = _binary_inputs(rng, op, sa, sb)
        got = run(build(model), {"a": a, "b": b})
        assert_same(got, run(ort_session(model), {"a": a, "b": b}), tol, f"{op} {sa} {sb}")
        if op not in ("Pow",) + COMPARE and HAS_AVX2:
            assert_same(got, run(build(model, ref=True), {"a": a, "b": b}), EXACT, f"{op} {sa} {sb} avx2 vs ref")


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min", "Equal", "Less", "Greater",
                                "GreaterOrEqual", "LessOrEqual"])
def test_binary_f32_special_values(op):
    # Every pairing of the special values, in both operand orders, through the
    # same-shape, scalar-operand and general broadcast paths.
    out_type = TP.BOOL if op in COMPARE else None
    a = np.repeat(SPECIALS, SPECIALS.size)
    b = np.tile(SPECIALS, SPECIALS.size)
    cases = [(a, b), (SPECIALS[:, None], SPECIALS[None, :]), (SPECIALS, np.float32(np.nan)),
             (np.float32(-0.0), SPECIALS)]
    for x, y in cases:
        x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
        model = make_model(op, [("a", np.float32), ("b", np.float32)], out_type=out_type,
                           shapes={"a": list(x.shape), "b": list(y.shape)})
        want = run(ort_session(model), {"a": x, "b": y})
        for ref in (False, True):
            assert_same(run(build(model, ref=ref), {"a": x, "b": y}), want, EXACT, f"{op} ref={ref}")


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "Equal", "Less", "Greater",
                                "GreaterOrEqual", "LessOrEqual"])
def test_binary_int_vs_onnxruntime(rng, op, dtype):
    out_type = TP.BOOL if op in COMPARE else None
    for sa, sb in [((3, 17), (3, 17)), ((3, 17), ()), ((), (4,)), ((2, 5, 3, 3), (1, 5, 1, 1)), ((4, 1), (1, 6)),
                   ((40_000,), (1,))]:
        model = make_model(op, [("a", dtype), ("b", dtype)], out_type=out_type, shapes={"a": list(sa), "b": list(sb)})
        a, b = _binary_inputs(rng, op, sa, sb, dtype)
        assert_same(run(build(model), {"a": a, "b": b}), run(ort_session(model), {"a": a, "b": b}), EXACT,
                    f"{op} {dtype.__name__} {sa} {sb}")


NARROW_TYPES = [np.int16, np.int8, np.uint64, np.uint32, np.uint16, np.uint8, np.float64]


@pytest.mark.parametrize("dtype", NARROW_TYPES, ids=lambda t: np.dtype(t).name)
def test_binary_other_types(rng, dtype):
    # Less common element types: every arithmetic and comparison op, against
    # numpy where onnxruntime has no kernel for the type.
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    lo = 0 if info is not None and info.min == 0 else -100
    for op in ["Add", "Sub", "Mul", "Div", "Max", "Min", "Equal", "Less", "Greater", "GreaterOrEqual", "LessOrEqual"]:
        out_type = TP.BOOL if op in COMPARE else None
        model = make_model(op, [("a", dtype), ("b", dtype)], out_type=out_type, shapes={"a": [3, 1, 7], "b": [5, 1]})
        a = np.asarray(rng.integers(lo, 100, (3, 1, 7))).astype(dtype)
        b = np.asarray(rng.integers(1, 100, (5, 1))).astype(dtype)
        got = run(build(model), {"a": a, "b": b})
        try:
            want = run(ort_session(model), {"a": a, "b": b})
        except Exception:  # noqa: BLE001 - onnxruntime lacks this type for this op
            with np.errstate(all="ignore"):
                want = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Max": np.maximum, "Min": np.minimum,
                        "Equal": np.equal, "Less": np.less, "Greater": np.greater, "GreaterOrEqual": np.greater_equal,
                        "LessOrEqual": np.less_equal}[op](a, b) if op != "Div" else (
                    (a / b).astype(dtype) if info is None else np.trunc(a.astype(np.float64) / b).astype(dtype))
        assert_same(got, want, EXACT, f"{op} {np.dtype(dtype).name}")
    if info is not None:  # wrap-around in the narrow types, where C would promote to int
        model = make_model("Mul", [("a", dtype), ("b", dtype)], shapes={"a": [2], "b": [2]})
        a = np.array([info.max, info.max], dtype)
        with np.errstate(all="ignore"):
            assert_same(run(build(model), {"a": a, "b": a}), a * a, EXACT, "wrap")


def test_mean_and_prelu_float64(rng):
    model = make_model("Mean", [("a", np.float64), ("b", np.float64), ("c", np.float64)],
                       shapes={"a": [4, 5], "b": [5], "c": [4, 1]})
    feeds = {k: rng.standard_normal(s) for k, s in (("a", (4, 5)), ("b", (5,)), ("c", (4, 1)))}
    want = (feeds["a"] + feeds["b"] + feeds["c"]) / 3  # onnxruntime has no float64 Mean
    assert_same(run(build(model), feeds), want, dict(rtol=1e-15, atol=0))
    model = make_model("PRelu", [("x", np.float64), ("s", np.float64)], shapes={"x": [2, 3, 4], "s": [3, 1]})
    feeds = {"x": rng.standard_normal((2, 3, 4)), "s": rng.standard_normal((3, 1))}
    assert_same(run(build(model), feeds), run(ort_session(model), feeds), EXACT)


def test_int_div_truncates_and_rejects_zero():
    model = make_model("Div", [("a", np.int64), ("b", np.int64)], shapes={"a": [6], "b": [6]})
    engine = build(model)
    a = np.array([-7, 7, -7, 7, np.iinfo(np.int64).min, 5], np.int64)
    b = np.array([2, 2, -2, -2, -1, 5], np.int64)
    np.testing.assert_array_equal(run(engine, {"a": a, "b": b}), [-3, 3, 3, -3, np.iinfo(np.int64).min, 1])
    with pytest.raises(pyengine.InvalidArgumentError, match="integer division by zero"):
        run(engine, {"a": a, "b": np.array([1, 2, 3, 0, 1, 1], np.int64)})


def test_int_add_mul_wrap():
    model = make_model("Add", [("a", np.int32), ("b", np.int32)], shapes={"a": [2], "b": [2]})
    a = np.array([np.iinfo(np.int32).max, np.iinfo(np.int32).min], np.int32)
    b = np.array([1, -1], np.int32)
    np.testing.assert_array_equal(run(build(model), {"a": a, "b": b}), a + b)


@pytest.mark.parametrize("base,exp", [(np.float32, np.int64), (np.float32, np.int32), (np.int64, np.int32)])
def test_pow_mixed_types(rng, base, exp):
    model = make_model("Pow", [("a", base), ("b", exp)], shapes={"a": [4, 9], "b": [9]})
    a = (rng.uniform(-3, 3, (4, 9)) if base == np.float32 else rng.integers(-5, 6, (4, 9))).astype(base)
    b = rng.integers(0, 5, 9).astype(exp)
    assert_same(run(build(model), {"a": a, "b": b}), run(ort_session(model), {"a": a, "b": b}), ULP1)


def test_pow_square_shortcut(rng):
    model = make_model("Pow", [("a", np.float32), ("b", np.float32)], initializers={"b": np.array(2.0, np.float32)},
                       shapes={"a": [1000]})
    a = np.concatenate([rng.standard_normal(990), [np.inf, -np.inf, np.nan, 0, -0.0, 1e20, -1e20, 3e-23, 1, -1]])
    a = a.astype(np.float32)
    assert_same(run(build(model), {"a": a}), run(ort_session(model), {"a": a}), EXACT)


def test_equal_bool(rng):
    model = make_model("Equal", [("a", np.bool_), ("b", np.bool_)], out_type=TP.BOOL, shapes={"a": [3, 7], "b": [7]})
    a, b = rng.integers(0, 2, (3, 7)).astype(np.bool_), rng.integers(0, 2, 7).astype(np.bool_)
    assert_same(run(build(model), {"a": a, "b": b}), run(ort_session(model), {"a": a, "b": b}), EXACT)


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_logical_bool(rng, op):
    # The bool logical ops (what the ONNX reference expands GreaterOrEqual
    # into), every broadcast pattern; a non-bool input is refused by name.
    for sa, sb in [((3, 7), (7,)), ((3, 7), (3, 7)), ((), (5,)), ((2, 1, 4), (1, 3, 1)), ((9000,), (1,))]:
        model = make_model(op, [("a", np.bool_), ("b", np.bool_)], out_type=TP.BOOL,
                           shapes={"a": list(sa), "b": list(sb)})
        feeds = {"a": rng.integers(0, 2, sa).astype(np.bool_), "b": rng.integers(0, 2, sb).astype(np.bool_)}
        assert_same(run(build(model), feeds), run(ort_session(model), feeds), EXACT, f"{op} {sa} {sb}")
    model = make_model(op, [("a", np.float32), ("b", np.float32)], out_type=TP.BOOL, shapes={"a": [2], "b": [2]})
    with pytest.raises(pyengine.PyengineError, match="node"):
        run(build(model), {"a": np.ones(2, np.float32), "b": np.ones(2, np.float32)})


# ---- PRelu --------------------------------------------------------------------------

@pytest.mark.parametrize("slope_shape", [(3, 1, 1), (1,), (5,), (2, 3, 4, 5), (4, 1), ()])
def test_prelu(rng, slope_shape):
    for as_initializer in (False, True):
        slope = rng.uniform(-0.5, 0.5, slope_shape).astype(np.float32)
        inits = {"s": slope} if as_initializer else {}
        model = make_model("PRelu", [("x", np.float32), ("s", np.float32)], initializers=inits,
                           shapes={"x": [2, 3, 4, 5], "s": list(slope_shape)})
        x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
        feeds = {"x": x} if as_initializer else {"x": x, "s": slope}
        assert_same(run(build(model), feeds), run(ort_session(model), feeds), EXACT, f"slope {slope_shape}")


def test_prelu_per_channel_slope_of_opset6(rng):
    # Opset 6 PRelu gives one slope per channel as [C]; pyengine reads a 1-D
    # slope of X's channel count that way when numpy broadcasting cannot apply.
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    slope = rng.uniform(0.1, 0.5, 3).astype(np.float32)
    model = make_model("PRelu", [("x", np.float32), ("s", np.float32)], opset=6, shapes={"x": [2, 3, 4, 5], "s": [3]})
    want = np.where(x < 0, x * slope.reshape(3, 1, 1), x)
    assert_same(run(build(model), {"x": x, "s": slope}), want, EXACT)


def test_prelu_slope_must_broadcast_to_x():
    model = make_model("PRelu", [("x", np.float32), ("s", np.float32)], shapes={"x": [2, 3], "s": [4, 3]})
    with pytest.raises(pyengine.ShapeError, match="cannot be broadcast|does not broadcast"):
        build(model)


# ---- variadic ----------------------------------------------------------------------

VARIADIC_SHAPES = [[(3, 4)], [(3, 4), (3, 4)], [(3, 1), (1,), (1, 4)], [(2, 3, 4), (4,), (3, 1), ()],
                   [(5, 1, 7), (1, 6, 1), (5, 6, 7), (7,)], [(40_000,), (1,)]]


@pytest.mark.parametrize("op,tol", [("Max", EXACT), ("Min", EXACT), ("Sum", EXACT), ("Mean", ULP1)])
def test_variadic_f32(rng, op, tol):
    for shapes in VARIADIC_SHAPES:
        names = [f"x{i}" for i in range(len(shapes))]
        model = make_model(op, [(n, np.float32) for n in names], shapes=dict(zip(names, map(list, shapes))))
        feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in zip(names, shapes)}
        got = run(build(model), feeds)
        assert_same(got, run(ort_session(model), feeds), tol, f"{op} {shapes}")
        if HAS_AVX2:
            assert_same(got, run(build(model, ref=True), feeds), EXACT, f"{op} {shapes} avx2 vs ref")


@pytest.mark.parametrize("op", ["Max", "Min"])
@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_variadic_int(rng, op, dtype):
    shapes = [(3, 1), (1, 5), (5,)]
    names = ["a", "b", "c"]
    model = make_model(op, [(n, dtype) for n in names], shapes=dict(zip(names, map(list, shapes))))
    feeds = {n: rng.integers(-50, 50, s).astype(dtype) for n, s in zip(names, shapes)}
    assert_same(run(build(model), feeds), run(ort_session(model), feeds), EXACT)


# ---- Where --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.int32, np.bool_, np.uint8, np.float16])
def test_where(rng, dtype):
    for sc, sx, sy in [((3, 4), (3, 4), (3, 4)), ((1, 4, 1), (3, 1, 5), (5,)), ((), (2, 3), ()),
                       ((6, 1), (1,), (6, 7)), ((2, 1, 3, 1, 2), (1, 2, 1, 4, 1), (2,)), ((40_000,), (1,), (40_000,))]:
        model = make_model("Where", [("c", np.bool_), ("a", dtype), ("b", dtype)], out_type=onnx_type(dtype),
                           shapes={"c": list(sc), "a": list(sx), "b": list(sy)})
        feeds = {"c": rng.integers(0, 2, sc).astype(np.bool_),
                 "a": np.asarray(rng.standard_normal(sx) * 50).astype(dtype),
                 "b": np.asarray(rng.standard_normal(sy) * 50).astype(dtype)}
        got = run(build(model), feeds)
        assert_same(got, np.where(feeds["c"], feeds["a"], feeds["b"]), EXACT, f"{sc} {sx} {sy}")
        if dtype not in (np.float16, np.bool_):  # onnxruntime's CPU Where has neither
            assert_same(got, run(ort_session(model), feeds), EXACT, f"{sc} {sx} {sy} vs onnxruntime")


# ---- Cast -----------------------------------------------------------------------------

CAST_TYPES = [np.float32, np.float64, np.float16, np.int64, np.int32, np.int8, np.uint8, np.bool_]
FLOAT_VALUES = [0.0, -0.0, 0.5, -0.5, 1.5, -1.5, 2.5, 3.7, -3.7, 100.25, 127.9, 200.5, 255.5, 300.0, -129.0,
                65504.0, 65520.0, 1e5, 1e-7, 6e-8, 0.1, 1 / 3, np.inf, -np.inf, np.nan]
CAST_VALUES = {
    np.int64: [0, 1, -1, 127, 128, -129, 255, 256, 300, 65504, 2**31, -2**31 - 1, 2**40 + 3, -(2**53) - 1],
    np.int32: [0, 1, -1, 127, 128, -129, 255, 256, 300, 2**31 - 1, -2**31, 70000],
    np.int8: [0, 1, -1, 127, -128, 5, -77],
    np.uint8: [0, 1, 127, 128, 255, 200],
    np.bool_: [True, False, True, True],
}


@pytest.mark.parametrize("src", CAST_TYPES, ids=lambda t: np.dtype(t).name)
def test_cast_all_pairs(rng, src):
    if np.dtype(src).kind == "f":
        with np.errstate(over="ignore"):  # 1e5 and 65520 overflow float16 to inf on purpose
            values = np.concatenate([np.array(FLOAT_VALUES), rng.uniform(-300, 300, 40)]).astype(src)
    else:
        values = np.array(CAST_VALUES[src] * 3, dtype=src)
    for dst in CAST_TYPES:
        x = values
        if np.dtype(dst).kind in "iu" and np.dtype(src).kind == "f" and np.dtype(dst).itemsize < 4:
            # Narrow targets go through int32 on both sides; keep values where
            # that is well defined (finite and within int32).
            x = values[np.isfinite(values) & (np.abs(values.astype(np.float64)) < 2**31)]
        model = make_model("Cast", [("x", src)], out_type=onnx_type(dst), attrs={"to": onnx_type(dst)},
                           shapes={"x": ["n"]})
        want = run(ort_session(model), {"x": x})
        assert_same(run(build(model), {"x": x}), want, EXACT, f"cast {np.dtype(src).name} -> {np.dtype(dst).name}")


def test_cast_large_and_saturate_attribute(rng):
    x = rng.standard_normal(PARALLEL_LENGTH).astype(np.float32) * 1000
    model = make_model("Cast", [("x", np.float32)], out_type=TP.FLOAT16, attrs={"to": TP.FLOAT16, "saturate": 1},
                       opset=19, shapes={"x": ["n"]})
    assert_same(run(build(model), {"x": x}), x.astype(np.float16), EXACT)


def test_cast_unsupported_target():
    model = make_model("Cast", [("x", np.float32)], out_type=TP.STRING, attrs={"to": TP.STRING}, shapes={"x": [2]})
    with pytest.raises(pyengine.UnsupportedOperatorError, match="cast to type code"):
        build(model)


# ---- ChannelAffine (domain pyengine) -----------------------------------------------

@pytest.mark.parametrize("shape", [(2, 13, 7, 7), (1, 3, 1, 1), (3, 17), (2, 5, 9), (1, 4, 2, 3, 5), (2, 64, 17, 19),
                                   (4, 1000)])
@pytest.mark.parametrize("as_initializer", [False, True])
def test_channel_affine(rng, shape, as_initializer):
    c = shape[1]
    scale = rng.standard_normal(c).astype(np.float32)
    shift = rng.standard_normal(c).astype(np.float32)
    x = rng.standard_normal(shape).astype(np.float32)
    inits = {"scale": scale, "shift": shift} if as_initializer else {}
    model = make_model("ChannelAffine", [("x", np.float32), ("scale", np.float32), ("shift", np.float32)],
                       domain="pyengine", initializers=inits, shapes={"x": list(shape), "scale": [c], "shift": [c]})
    feeds = {"x": x} if as_initializer else {"x": x, "scale": scale, "shift": shift}
    bshape = (1, c) + (1,) * (len(shape) - 2)
    product = x.astype(np.float64) * scale.reshape(bshape)
    want = product + shift.reshape(bshape)
    bound = 2.0**-23 * (np.abs(product) + np.abs(want))
    for ref in (False, True):
        got = run(build(model, ref=ref), feeds)
        assert got.dtype == np.float32 and got.shape == shape
        err = np.abs(got - want)
        assert np.all(err <= bound), f"{shape} ref={ref}: error {err.max()} over the rounding bound"


def test_channel_affine_checks_parameter_shapes():
    model = make_model("ChannelAffine", [("x", np.float32), ("scale", np.float32), ("shift", np.float32)],
                       domain="pyengine", initializers={"scale": np.ones(4, np.float32), "shift": np.ones(3, np.float32)},
                       shapes={"x": [1, 3, 2, 2]})
    with pytest.raises(pyengine.ShapeError, match="scale must have shape"):
        build(model)


# ---- attribute errors ---------------------------------------------------------------

def test_unsupported_variants_are_reported():
    model = make_model("Gelu", [("x", np.float32)], attrs={"approximate": "erf-ish"}, opset=20, shapes={"x": [2]})
    with pytest.raises(pyengine.UnsupportedOperatorError, match="approximate='erf-ish'"):
        build(model)
    model = make_model("Sigmoid", [("x", np.int64)], shapes={"x": [2]})
    with pytest.raises(pyengine.UnsupportedOperatorError, match="dtype int64 is not supported"):
        build(model)
