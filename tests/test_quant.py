"""INT8 calibration and quantization: observers, weight quantization, Q/DQ
placement, calibration data, caches and reports (engine/quant, pyengine/quantize.py).

Tolerances: weight quantization and histograms are compared with numpy exactly;
thresholds within one histogram bin; Q/DQ models against FP32 by cosine
similarity of the logits (> 0.99 for a small random-weight ResNet).
"""

import math
import platform
import struct
import warnings
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyengine
from pyengine import _core
from pyengine.calibration import ImageFolder, InputSpec, iter_batches
from pyengine.optimizer import expand_custom_ops
from pyengine.quantize import (
    CalibrationTable,
    accuracy_report,
    calibrate,
    load_calibration,
    parse_tensorrt_cache,
    prepare_float_model,
    save_calibration,
    tensorrt_cache_text,
)
from pyengine.zoo import GraphBuilder

ort = pytest.importorskip("onnxruntime")


def run_ort(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def tiny_resnet(seed=0, size=16):
    """Stem conv-BN-ReLU, an identity block, a projection block, GAP, Gemm."""
    b = GraphBuilder("tiny_resnet", seed=seed)
    x = b.input((3, size, size))
    x = b.relu(b.bn(b.conv(x, 8, 3)))
    out = b.relu(b.bn(b.conv(x, 8, 3)))
    out = b.bn(b.conv(out, 8, 3, gain=0.25))
    x = b.relu(b.add(out, x))
    out = b.relu(b.bn(b.conv(x, 16, 3, stride=2)))
    out = b.bn(b.conv(out, 16, 3, gain=0.25))
    shortcut = b.bn(b.conv(x, 16, 1, stride=2, pad=0))
    x = b.relu(b.add(out, shortcut))
    return b.build({"logits": b.gemm(b.flatten(b.gap(x)), 10)})


@pytest.fixture(scope="module")
def model():
    return tiny_resnet()


@pytest.fixture(scope="module")
def calib_data():
    return np.random.default_rng(1).standard_normal((48, 3, 16, 16), dtype=np.float32)


@pytest.fixture(scope="module")
def qdq(model, calib_data):
    return pyengine.quantize(model, calibration_data=calib_data, batch_size=16, progress=False)


def cosine(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


# ---------------------------------------------------------------- weights

def numpy_quantize(w, axis):
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.abs(w).max(axis=reduce)
    scale = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale, shape


@pytest.mark.parametrize("shape,axis", [((7, 3, 3, 3), 0), ((13, 17), 0), ((17, 13), 1), ((1, 5), 0),
                                        ((127, 1, 1, 1), 0), ((3, 4, 5), 2)])
def test_quantize_weights_matches_numpy_and_round_trip_bound(shape, axis):
    rng = np.random.default_rng(sum(shape))
    w = (rng.standard_normal(shape) * rng.uniform(0.01, 3, shape[axis]).reshape(
        [-1 if i == axis else 1 for i in range(len(shape))])).astype(np.float32)
    q, scale = _core.quantize_weights(w, axis)
    q_ref, scale_ref, bshape = numpy_quantize(w, axis)
    assert q.dtype == np.int8 and q.shape == w.shape
    np.testing.assert_array_equal(scale, scale_ref)
    np.testing.assert_array_equal(q, q_ref)
    assert q.min() >= -127
    err = np.abs(w - q.astype(np.float32) * scale.reshape(bshape))
    bound = (scale / 2).reshape(bshape) * (1 + 1e-6)
    assert np.all(err <= bound)
    # Each channel's largest magnitude maps onto +-127.
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    assert np.all(np.abs(q).max(axis=reduce) == 127)


def test_quantize_weights_rounds_half_to_even_and_handles_zero_channels():
    w = np.array([[127.0, 2.5, 3.5, -2.5, -3.5, 0.5, 1.5], [0, 0, 0, 0, 0, 0, 0]], dtype=np.float32)
    q, scale = _core.quantize_weights(w, 0)
    assert scale[0] == 1.0 and scale[1] == 1.0  # an all-zero channel gets scale 1, not 0
    assert q[0].tolist() == [127, 2, 4, -2, -4, 0, 2]
    assert q[1].tolist() == [0] * 7
    halves = np.concatenate([[127.0], np.arange(-127, 127) + 0.5, [-1e30, 1e30, np.inf, -np.inf]]).astype(np.float32)
    q, scale = _core.quantize_weights(halves.reshape(1, -1), 0)  # (amax inf: scale 1)
    assert scale[0] == 1.0
    np.testing.assert_array_equal(q[0], np.clip(np.rint(halves), -127, 127).astype(np.int8))
    with pytest.raises(pyengine.InvalidArgumentError):
        _core.quantize_weights(w, 2)
    with pytest.raises(pyengine.DTypeError):
        _core.quantize_weights(w.astype(np.float64), 0)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="fesetround's mode constants are x86's here")
def test_quantize_weights_ignores_the_fpu_rounding_mode():
    """A host application may change the FPU rounding mode (fesetround) on
    the thread that builds: the int8 weights stay round-half-to-even."""
    import ctypes
    import ctypes.util

    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    w = np.concatenate([[127.0], np.arange(-127, 127) + 0.5, np.arange(-127, 127) + 0.4999999,
                        np.arange(-127, 127) + 0.5000001]).astype(np.float32).reshape(1, -1)
    expect = np.clip(np.rint(w), -127, 127).astype(np.int8)
    for mode in (0x800, 0x400, 0xC00):  # FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO
        assert libm.fesetround(mode) == 0
        try:
            q, scale = _core.quantize_weights(w, 0)
        finally:
            libm.fesetround(0)  # FE_TONEAREST
        assert scale[0] == 1.0
        np.testing.assert_array_equal(q, expect, err_msg=f"rounding mode {mode:#x}")


# ---------------------------------------------------------------- observers

def test_observer_sqnr_matches_numpy():
    """With an evaluation scale, the observer's SQNR is numpy's over the
    finite values: x against clamp(round_half_even(x / s), -127, 127) * s
    (values past the range clamp; exact halves of s round to even)."""
    rng = np.random.default_rng(5)
    s = np.float32(0.02)
    x = np.concatenate([rng.standard_normal(50_000).astype(np.float32) * 1.5,
                        (np.arange(-127, 127) + 0.5).astype(np.float32) * s, [np.nan, np.inf]]).astype(np.float32)
    obs = _core.TensorObserver(2048)
    obs.set_eval_scale(float(s))
    obs.update(x)
    f = x[np.isfinite(x)].astype(np.float64)
    fq = np.clip(np.rint(x[np.isfinite(x)] / s), -127, 127).astype(np.float64) * np.float64(s)
    expect = 10 * np.log10(np.sum(f * f) / np.sum((f - fq.astype(np.float32)) ** 2))
    assert obs.nonfinite == 2
    assert abs(obs.sqnr_db - expect) < 1e-9, (obs.sqnr_db, expect)


def test_observer_eval_only_skips_the_statistics():
    """set_eval_scale(s, statistics=False) (the accuracy report's float
    pass): the same SQNR and counts, no histogram or extremes."""
    rng = np.random.default_rng()
    x = np.concatenate([rng.standard_normal(30_001).astype(np.float32), [np.nan, -np.inf]]).astype(np.float32)
    full, only = _core.TensorObserver(2048), _core.TensorObserver(2048)
    full.set_eval_scale(0.03)
    only.set_eval_scale(0.03, statistics=False)
    for obs in (full, only):
        obs.update(x[:1000])
        obs.update(x[1000:])
    assert only.sqnr_db == full.sqnr_db and np.isfinite(full.sqnr_db)
    assert (only.count, only.nonfinite) == (full.count, full.nonfinite) == (30_001, 2)
    assert only.absmax == 0 and only.histogram().sum() == 0 and full.histogram().sum() == 30_001


def test_observer_statistics_match_numpy():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((7, 13, 17)) * 2 + 0.3).astype(np.float32)
    obs = _core.TensorObserver(2048)
    obs.update(x)
    ax = np.abs(x)
    assert obs.count == x.size and obs.nonfinite == 0
    assert obs.absmax == ax.max() and obs.min == x.min() and obs.max == x.max()
    assert obs.range == float(ax.max())
    ref, _ = np.histogram(ax.astype(np.float64), bins=2048, range=(0.0, obs.range))
    np.testing.assert_array_equal(obs.histogram(), ref)
    # A percentile lies between the order statistics around it (up to one bin).
    width = obs.range / 2048
    srt = np.sort(ax.ravel())
    for p in (50.0, 99.0, 99.99):
        k = p / 100 * srt.size
        lo, hi = srt[max(math.floor(k) - 1, 0)], srt[min(math.ceil(k), srt.size - 1)]
        assert lo - width <= obs.amax("percentile", p) <= hi + width
    # With dense data it matches numpy's percentile to within a bin.
    big = np.random.default_rng(20).standard_normal(400000).astype(np.float32)
    dense = _core.TensorObserver(2048)
    dense.update(big)
    for p in (50.0, 99.0, 99.9):
        assert abs(dense.amax("percentile", p) - np.percentile(np.abs(big), p)) <= dense.range / 2048
    assert obs.amax("minmax") == ax.max()
    assert obs.amax("percentile", 100.0) == ax.max()


def test_observer_grows_range_by_exact_rebinning():
    rng = np.random.default_rng(3)
    batches = [rng.standard_normal(5000).astype(np.float32) * s for s in (1.0, 0.5, 3.0, 9.0)]
    obs = _core.TensorObserver(2048)
    for b in batches:
        obs.update(b)
    first = float(np.abs(batches[0]).max())
    allx = np.abs(np.concatenate(batches)).astype(np.float64)
    assert obs.absmax == np.float32(allx.max())
    # The range doubles from the first batch's absmax until it covers the data.
    k = math.log2(obs.range / first)
    assert k == int(k) and obs.range >= allx.max() and obs.range / 2 < allx.max()
    ref, _ = np.histogram(allx, bins=2048, range=(0.0, obs.range))
    hist = obs.histogram()
    assert hist.sum() == allx.size
    # Merged bins equal numpy's on the final range, except that the first
    # batch's maximum sat on its closed last edge (one value, one bin off).
    assert np.abs(hist - ref).sum() <= 2
    # Batch order does not matter once the first batch is fixed.
    obs2 = _core.TensorObserver(2048)
    for b in [batches[0], batches[3], batches[1], batches[2]]:
        obs2.update(b)
    np.testing.assert_array_equal(obs2.histogram(), hist)


def test_observer_counts_nonfinite_apart():
    obs = _core.TensorObserver()
    obs.update(np.array([1.0, np.nan, -2.0, np.inf, -np.inf], dtype=np.float32))
    assert obs.count == 2 and obs.nonfinite == 3 and obs.absmax == 2.0
    assert obs.histogram().sum() == 2
    with pytest.raises(pyengine.InvalidArgumentError):
        _core.TensorObserver(64)


def entropy_reference(hist, value_range):
    """Entropy calibration as specified in engine/quant/observers.h (KL with
    point masses flattened), in plain numpy."""
    h = hist.astype(np.float64).copy()
    n = len(h)
    h[0] = h[1]
    total = h.sum()
    spikes = {}
    for k in range(1, n):
        if h[k] < 1e-3 * total:
            continue
        med = np.median(np.concatenate([h[max(0, k - 16):k], h[k + 1:k + 17]]))
        if h[k] > 2 * max(med, 1.0):
            spikes[k] = med
    for k, med in spikes.items():
        h[k] = med
    h[0] = h[1]
    first = max([128] + [k + 1 for k in spikes])
    if h.sum() == 0:
        return value_range * first / n if first > 128 else 0.0
    best, best_i = np.inf, n
    for i in range(first, n + 1):
        p = h[:i].copy()
        p[i - 1] += h[i:].sum()
        nz = h[:i] != 0
        level = (np.arange(i) * 128) // i
        mass = np.bincount(level, weights=np.where(nz, h[:i], 0), minlength=128)
        count = np.bincount(level, weights=nz.astype(np.float64), minlength=128)
        q = np.where(nz, mass[level] / np.maximum(count[level], 1), 0.0)
        pn, qn = p / p.sum(), q / q.sum()
        m = pn > 0
        kl = np.inf if np.any(qn[m] == 0) else float(np.sum(pn[m] * np.log(pn[m] / qn[m])))
        if kl <= best:
            best, best_i = kl, i
    return value_range * best_i / n


def mse_reference(hist, value_range):
    n = len(hist)
    c = (np.arange(n) + 0.5) * value_range / n
    errs = []
    for i in range(128, n):
        s = c[i] / 127
        errs.append(np.sum(hist * (c - np.minimum(np.round(c / s), 127) * s) ** 2))
    return c[128 + int(np.argmin(errs))]


def _background(rng, n=200000, levels=(-0.42,), share=0.8):
    """A normalized image tensor: `share` of the values sit on a few constant
    background levels (point masses away from zero), the rest is foreground."""
    fg = rng.uniform(-0.42, 2.8, int(n * (1 - share)))
    bg = rng.choice(np.asarray(levels), n - len(fg))
    return np.concatenate([fg, bg])


@pytest.mark.parametrize("dist", ["gauss", "laplace_outliers", "relu", "background", "channel_spikes", "constant"])
def test_entropy_and_mse_match_numpy_reference(dist):
    rng = np.random.default_rng(4)
    x = {"gauss": lambda: rng.standard_normal(200000),
         "laplace_outliers": lambda: np.concatenate([rng.laplace(size=200000), [40.0, -35.0, 30.0]]),
         "relu": lambda: np.maximum(rng.standard_normal(200000), 0),
         "background": lambda: _background(rng),
         "channel_spikes": lambda: np.maximum(_background(rng, levels=(0.3, 0.9, 1.4, -0.2, 0.0), share=0.6), 0),
         "constant": lambda: np.full(1000, -1.5)}[dist]().astype(np.float32)
    obs = _core.TensorObserver(512)
    obs.update(x)
    hist, r = obs.histogram(), obs.range
    ent = _core.amax_from_histogram(hist, r, "entropy")
    assert ent == pytest.approx(entropy_reference(hist, r), rel=1e-12)
    mse = _core.amax_from_histogram(hist, r, "mse")
    assert mse == pytest.approx(mse_reference(hist, r), rel=1e-12)


def test_methods_behave_sensibly_on_outliers():
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.standard_normal(400000), [60.0, -55.0, 50.0]]).astype(np.float32)
    obs = _core.TensorObserver()
    for chunk in np.array_split(x, 4):
        obs.update(chunk)
    amax = {m: obs.amax(m) for m in ("minmax", "percentile", "entropy", "mse")}
    assert amax["minmax"] == 60.0                     # min/max keeps the outliers
    assert 3.0 < amax["percentile"] < 5.0             # 99.99th percentile of |N(0,1)| ~ 3.9
    assert 2.0 < amax["entropy"] < 15.0               # KL clips the outliers
    # The squared-error optimum trades 400k rounding errors against 3 clipped
    # outliers: it clips them, less than KL does.
    assert amax["entropy"] < amax["mse"] < 0.75 * amax["minmax"]
    assert obs.amax("percentile", 99.0) < amax["percentile"]


@pytest.mark.parametrize("levels", [(-0.42,), (0.05,), (0.9,), (0.3, 0.9, 1.4, -0.2, 0.0)])
def test_entropy_keeps_the_foreground_beside_a_point_mass(levels):
    """A uniform background maps to a tall spike at a nonzero magnitude (the
    normalized input, the stem conv after it). KL used to put the threshold
    just above the spike and clip the foreground (8 points of top-1 on a
    held-out ResNet-20); the spike must neither decide the threshold nor be
    clipped by it."""
    rng = np.random.default_rng(14)
    x = _background(rng, levels=levels).astype(np.float32)
    obs = _core.TensorObserver()
    obs.update(x)
    amax = obs.amax("entropy")
    assert amax >= max(abs(v) for v in levels)
    clipped = np.mean(np.abs(x) > amax)
    assert clipped < 1e-3, (amax, clipped)
    # Bin 0 alone is still set to bin 1 (TensorRT's rule): a ReLU's zeros do
    # not move the threshold.
    relu = np.maximum(rng.standard_normal(200000), 0).astype(np.float32)
    obs0, obs1 = _core.TensorObserver(), _core.TensorObserver()
    obs0.update(relu)
    obs1.update(relu[relu > 0])
    assert obs0.amax("entropy") == pytest.approx(obs1.amax("entropy"), rel=0.02)


def test_methods_keep_the_range_of_uniform_data():
    x = np.random.default_rng(6).uniform(-1, 1, 200000).astype(np.float32)
    obs = _core.TensorObserver()
    obs.update(x)
    assert obs.amax("minmax") == pytest.approx(1.0, abs=1e-4)
    assert obs.amax("percentile") > 0.99
    assert obs.amax("entropy") > 0.9
    assert obs.amax("mse") > 0.9


def test_calibration_is_reproducible():
    rng = np.random.default_rng(7)
    batches = [rng.standard_normal(3000).astype(np.float32) * (i + 1) for i in range(5)]
    results = []
    for _ in range(2):
        cal = _core.Calibrator(None, ["t"], 2048)
        for b in batches:
            cal.update("t", b)
        results.append({m: cal.amax(m, 99.9) for m in ("minmax", "percentile", "entropy", "mse")})
    assert results[0] == results[1]


def test_calibrator_observes_through_the_executor_hook():
    g = helper.make_graph([], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    graph, _ = pyengine.onnx_io.graph_from_onnx(m)
    cal = _core.Calibrator(_core.Executor(graph, 1), ["x"])
    x = np.random.default_rng(8).standard_normal((3, 4)).astype(np.float32)
    out = cal.observe([x])
    np.testing.assert_array_equal(out[0], x)
    s = cal.stats("x")
    assert s["count"] == 12 and s["absmax"] == np.abs(x).max()
    assert cal.amax("minmax") == {"x": float(np.abs(x).max())}
    cal.detach()
    assert not cal.attached
    with pytest.raises(pyengine.InvalidArgumentError):
        cal.observe([x])


def test_executor_and_onnxruntime_calibration_agree(model, calib_data):
    graph, _ = pyengine.onnx_io.graph_from_onnx(model)
    try:
        _core.Executor(graph, 1)
    except pyengine.UnsupportedOperatorError:
        pytest.skip("pyengine's CPU kernels for this model are not in this build yet")
    from pyengine.quantize import _Session

    session = _Session(model)
    table = session.calibrate(calib_data, "minmax", 99.99, progress=False)
    assert table.runtime == "pyengine"
    sess = ort.InferenceSession(session.float_onnx().SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    out = sess.run(names, {"input": calib_data})[0]
    assert table.amax[names[0]] == pytest.approx(float(np.abs(out).max()), rel=1e-4)


# ---------------------------------------------------------------- data

def test_nan_or_inf_in_calibration_data_names_the_batch(model):
    rng = np.random.default_rng(9)
    batches = [rng.standard_normal((4, 3, 16, 16)).astype(np.float32) for _ in range(4)]
    batches[2][1, 0, 3, 3] = np.nan
    with pytest.raises(pyengine.CalibrationError, match="batch 2"):
        pyengine.quantize(model, calibration_data=batches, progress=False)
    batches[2][1, 0, 3, 3] = 0
    batches[3][0, 0, 0, 0] = np.inf
    with pytest.raises(pyengine.CalibrationError, match="batch 3.*NaN or Inf"):
        pyengine.quantize(model, calibration_data=batches, progress=False)


def test_calibration_data_sources(tmp_path):
    specs = [InputSpec("input", np.dtype(np.float32), (None, 3, 4, 4))]
    rng = np.random.default_rng(10)
    x = rng.standard_normal((10, 3, 4, 4)).astype(np.float32)
    # An array splits into batches.
    got = list(iter_batches(x, specs, batch_size=4))
    assert [b["input"].shape[0] for _, b in got] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b["input"] for _, b in got]), x)
    # num_batches stops early; dicts and (x, label) tuples pass through; float64 is cast.
    assert len(list(iter_batches(x, specs, batch_size=2, num_batches=3))) == 3
    got = list(iter_batches([{"input": x[:2]}, (x[2:5].astype(np.float64), [0, 1, 2])], specs))
    assert got[1][1]["input"].dtype == np.float32 and got[1][1]["input"].shape[0] == 3
    # A folder of per-sample .npy files groups samples into batches, in name order.
    for i in range(5):
        np.save(tmp_path / f"s{i:02d}.npy", x[i])
    got = list(iter_batches(str(tmp_path), specs, batch_size=2))
    assert [b["input"].shape[0] for _, b in got] == [2, 2, 1]
    np.testing.assert_array_equal(got[0][1]["input"], x[:2])
    # Problems name the batch.
    with pytest.raises(pyengine.CalibrationError, match="batch 1.*shape"):
        list(iter_batches([x[:2], x[:2, :, :3]], specs))
    with pytest.raises(pyengine.CalibrationError, match="empty"):
        list(iter_batches([], specs))
    with pytest.raises(pyengine.CalibrationError, match="missing"):
        list(iter_batches([{"other": x}], specs))


def test_image_folder_preprocessing(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(11)
    for i in range(3):
        arr = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
        pil.fromarray(arr).save(tmp_path / f"img{i}.png")
    folder = ImageFolder(tmp_path, resize=10, crop=8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), batch_size=2)
    batches = list(folder)
    assert [b.shape for b in batches] == [(2, 3, 8, 8), (1, 3, 8, 8)]
    # Check one image by hand: resize 20x30 -> 10x15 (bilinear), center crop 8x8.
    img = pil.open(tmp_path / "img0.png").convert("RGB").resize((15, 10), pil.BILINEAR)
    ref = (np.asarray(img, dtype=np.float32)[1:9, 3:11] / 255.0 - 0.5) / 0.25
    np.testing.assert_allclose(batches[0][0], ref.transpose(2, 0, 1), atol=1e-6)
    specs = [InputSpec("input", np.dtype(np.float32), (None, 3, 8, 8))]
    assert len(list(iter_batches(folder, specs))) == 2
    with pytest.raises(pyengine.CalibrationError, match="ImageFolder"):
        list(iter_batches(str(tmp_path), specs))


# ---------------------------------------------------------------- Q/DQ placement

def producers(model):
    return {o: n for n in model.graph.node for o in n.output}


def test_qdq_model_passes_checker_and_runs_in_onnxruntime(model, qdq):
    onnx.checker.check_model(qdq, full_check=True)
    x = np.random.default_rng(12).standard_normal((16, 3, 16, 16)).astype(np.float32)
    ref = run_ort(model, {"input": x})[0]
    out = run_ort(qdq, {"input": x})[0]
    assert out.shape == ref.shape
    assert cosine(ref, out) > 0.99
    assert np.mean(ref.argmax(1) == out.argmax(1)) >= 0.75


def test_qdq_placement_follows_tensorrt_rules(qdq):
    prod = producers(qdq)
    inits = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    counts = Counter(n.op_type for n in qdq.graph.node)
    assert counts["Conv"] == 6 and counts["BatchNormalization"] == 0  # BN folded before quantizing
    for n in qdq.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = inits[n.input[2]]
            assert zp.dtype == np.int8 and not zp.any()  # symmetric int8
        if n.op_type == "Conv" or n.op_type == "Gemm":
            x_dq, w_dq = prod[n.input[0]], prod[n.input[1]]
            assert x_dq.op_type == "DequantizeLinear" and prod[x_dq.input[0]].op_type == "QuantizeLinear"
            assert inits[x_dq.input[1]].shape == ()  # activations per tensor
            assert w_dq.op_type == "DequantizeLinear" and w_dq.input[0] in inits
            w_q, w_scale = inits[w_dq.input[0]], inits[w_dq.input[1]]
            axis = next(a.i for a in w_dq.attribute if a.name == "axis")
            assert axis == 0 and w_q.dtype == np.int8 and w_scale.shape == (w_q.shape[0],)
            if len(n.input) > 2:
                assert n.input[2] in inits and inits[n.input[2]].dtype == np.float32  # bias stays float
        if n.op_type == "Add":
            main, skip = prod[n.input[0]], prod[n.input[1]]
            assert main.op_type == "Conv"             # fuses Conv+Add(+ReLU)
            assert skip.op_type == "DequantizeLinear"  # the skip input is quantized
        if n.op_type == "Relu":
            assert prod[n.input[0]].op_type in ("Conv", "Add")  # nothing between Conv/Add and ReLU
    q_inputs = [n.input[0] for n in qdq.graph.node if n.op_type == "QuantizeLinear"]
    assert len(q_inputs) == len(set(q_inputs))  # one pair per tensor
    # Conv outputs are only quantized as skip inputs (the projection shortcut).
    for n in qdq.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] in prod and prod[n.input[0]].op_type == "Conv":
            dq = next(m for m in qdq.graph.node if m.op_type == "DequantizeLinear" and m.input[0] == n.output[0])
            readers = [m.op_type for m in qdq.graph.node if dq.output[0] in m.input]
            assert readers == ["Add"]
    # 6 conv inputs + gemm input share 5 tensors with the 2 skip inputs: input,
    # relu_0 (conv + skip), relu_1, relu_2 (2 convs), bn shortcut, relu_3, flatten.
    assert counts["QuantizeLinear"] == 7 and counts["DequantizeLinear"] == 7 + 7


def test_qdq_weights_round_trip_within_half_a_step(model, calib_data):
    """weight_rounding="nearest": every int8 weight is its float weight's
    nearest level (GPTQ, the default, moves some by more: test_gptq.py)."""
    from pyengine.quantize import _Session

    qdq = pyengine.quantize(model, calibration_data=calib_data, batch_size=16, progress=False,
                            weight_rounding="nearest")
    prepared = _Session(model).graph  # BN folded by the C++ pass, as quantized
    inits = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    checked = 0
    for n in qdq.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].ndim >= 2:
            w = np.asarray(prepared.constant(n.input[0][: -len("_quantized")]))
            q, s = inits[n.input[0]], inits[n.input[1]]
            shape = [-1] + [1] * (w.ndim - 1)
            assert np.all(np.abs(w - q * s.reshape(shape)) <= s.reshape(shape) / 2 * (1 + 1e-6))
            checked += 1
    assert checked == 7


def test_keep_fp32_leaves_layers_unquantized(model, calib_data):
    q = pyengine.quantize(model, calibration_data=calib_data, keep_fp32=["conv_1", "add_0"], progress=False)
    prod = producers(q)
    conv1 = next(n for n in q.graph.node if n.name == "conv_1")
    assert prod[conv1.input[0]].op_type != "DequantizeLinear" and conv1.input[1] not in prod
    add0 = next(n for n in q.graph.node if n.name == "add_0")
    assert all(prod[i].op_type != "DequantizeLinear" for i in add0.input)
    # Other layers stay quantized.
    conv2 = next(n for n in q.graph.node if n.name == "conv_2")
    assert prod[conv2.input[0]].op_type == "DequantizeLinear"
    with pytest.raises(pyengine.InvalidArgumentError, match="unknown nodes"):
        pyengine.quantize(model, calibration_data=calib_data, keep_fp32=["no_such_node"], progress=False)


def test_already_quantized_model_is_rejected(qdq, calib_data):
    with pytest.raises(pyengine.InvalidArgumentError, match="already quantized"):
        pyengine.quantize(qdq, calibration_data=calib_data, progress=False)


def test_bn_params_through_identity_and_constant_nodes_are_folded():
    rng = np.random.default_rng(13)
    c = 5
    w = rng.standard_normal((c, 3, 3, 3)).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, c).astype(np.float32)
    beta, mean = rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    var = rng.uniform(0.5, 1.5, c).astype(np.float32)
    nodes = [
        helper.make_node("Identity", ["gamma"], ["gamma_id"], name="id_gamma"),
        helper.make_node("Identity", ["gamma_id"], ["gamma_id2"], name="id_gamma2"),
        helper.make_node("Constant", [], ["mean_c"], name="mean_const", value=numpy_helper.from_array(mean)),
        helper.make_node("Identity", ["w"], ["w_id"], name="id_w"),
        helper.make_node("Conv", ["x", "w_id"], ["y"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["y", "gamma_id2", "beta", "mean_c", "var"], ["z"], name="bn"),
        helper.make_node("Relu", ["z"], ["out"], name="relu"),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (gamma, "gamma"), (beta, "beta"), (var, "var"))]
    g = helper.make_graph(nodes, "bn_identity", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 9, 9])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", c, 9, 9])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    p = prepare_float_model(m)  # constants only; BN is the C++ pass's job
    assert [n.op_type for n in p.graph.node] == ["Conv", "BatchNormalization", "Relu"]
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    np.testing.assert_allclose(run_ort(p, {"x": x})[0], run_ort(m, {"x": x})[0], rtol=1e-5, atol=1e-5)
    for optimize in (True, False):  # fold_bn_into_conv runs either way: weights quantized as they run
        q = pyengine.quantize(m, calibration_data=x, optimize=optimize, progress=False)
        counts = Counter(n.op_type for n in q.graph.node)
        assert counts == {"QuantizeLinear": 1, "DequantizeLinear": 2, "Conv": 1, "Relu": 1}, (optimize, counts)
        assert cosine(run_ort(q, {"x": x})[0], run_ort(m, {"x": x})[0]) > 0.999


def test_fused_conv_inputs_and_residual_are_quantized():
    """A FusedConv(X, W, B, Z) from the optimizer: X, W and the residual Z get
    Q/DQ; the graph written back as standard ONNX runs in onnxruntime."""
    rng = np.random.default_rng(14)
    w1 = rng.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3
    w2 = rng.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3
    b2 = rng.standard_normal(4).astype(np.float32)
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    nodes = [
        helper.make_node("FusedConv", ["x", "w1"], ["h"], name="fc1", domain="pyengine", activation="Relu", **conv),
        helper.make_node("FusedConv", ["h", "w2", "b2", "x"], ["y"], name="fc2", domain="pyengine",
                         activation="Relu", **conv),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (b2, "b2"))]
    vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", 4, 6, 6])  # noqa: E731
    g = helper.make_graph(nodes, "fused", [vi("x")], [vi("y")], initializer=inits, value_info=[vi("h")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("pyengine", 1)])
    graph, _ = pyengine.onnx_io.graph_from_onnx(m)
    summary = _core.insert_qdq(graph, {"x": 4.5, "h": 8.0, "y": 12.0}, [])
    assert summary["num_activation_pairs"] == 2 and summary["num_weights"] == 2
    assert sorted(summary["activation_consumers"]["x"]) == ["fc1", "fc2"]  # X of fc1 and Z of fc2 share a pair
    by_name = {n["name"]: n for n in graph.nodes()}
    assert by_name["fc2"]["inputs"][0] == "h_dequantized"
    assert by_name["fc2"]["inputs"][1] == "w2_dequantized"
    assert by_name["fc2"]["inputs"][3] == "x_dequantized"
    assert by_name["fc2"]["inputs"][2] == "b2"
    out = expand_custom_ops(pyengine.onnx_io.graph_to_onnx(graph))
    onnx.checker.check_model(out)
    assert not any(n.domain == "pyengine" for n in out.graph.node)
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    ref = expand_custom_ops(m)
    assert cosine(run_ort(out, {"x": x})[0], run_ort(ref, {"x": x})[0]) > 0.99


# ---------------------------------------------------------------- caches

def test_calibration_cache_round_trip(model, calib_data, tmp_path):
    cache = tmp_path / "calib.json"
    q1 = pyengine.quantize(model, calibration_data=calib_data, calibration_cache=cache, progress=False)
    assert cache.exists()
    props = lambda q: {p.key: p.value for p in q.metadata_props}  # noqa: E731
    assert props(q1)["pyengine.weight_rounding"] == "gptq"
    # A cache hit with the data gives the same model (GPTQ's statistics from
    # a pass of their own over the same batches).
    q2 = pyengine.quantize(model, calibration_data=calib_data, calibration_cache=cache, progress=False)
    assert q1.SerializeToString() == q2.SerializeToString()
    # The cache alone is enough for nearest rounding, and gives the same
    # model; GPTQ without data falls back to it and says so.
    near = [pyengine.quantize(model, calibration_data=d, calibration_cache=cache, progress=False,
                              weight_rounding="nearest") for d in (calib_data, None)]
    assert near[0].SerializeToString() == near[1].SerializeToString()
    with pytest.warns(UserWarning, match="needs the calibration data"):
        q3 = pyengine.quantize(model, calibration_data=None, calibration_cache=cache, progress=False)
    assert props(q3)["pyengine.weight_rounding"] == "nearest"
    assert q3.SerializeToString() == near[0].SerializeToString()
    # Other settings are another entry: without data they cannot be served.
    with pytest.raises(pyengine.CalibrationError, match="no entry"):
        pyengine.quantize(model, calibration_method="percentile", calibration_cache=cache, progress=False)
    pyengine.quantize(model, calibration_data=calib_data, calibration_method="percentile", percentile=99.9,
                      calibration_cache=cache, progress=False)
    tables = load_calibration(cache)
    assert sorted((t.method, t.percentile) for t in tables) == [("mse", 99.99), ("percentile", 99.9)]  # default: mse
    # A different model (other weights) does not hit the cache.
    with pytest.raises(pyengine.CalibrationError, match="no entry"):
        pyengine.quantize(tiny_resnet(seed=5), calibration_cache=cache, progress=False)


def test_tensorrt_cache_format(model, calib_data, tmp_path):
    table = calibrate(model, calib_data, "entropy", progress=False)
    text = tensorrt_cache_text(table, trt_version="8601")
    lines = text.splitlines()
    assert lines[0] == "TRT-8601-EntropyCalibration2"
    assert len(lines) == 1 + len(table.amax)
    name, hexval = lines[1].split(": ")
    assert name == "input"
    assert struct.unpack(">f", bytes.fromhex(hexval))[0] == np.float32(table.amax["input"]) / np.float32(127)
    assert len(hexval) == 8 and hexval == hexval.lower()
    # A known value: amax 127 is scale 1.0 = 0x3f800000.
    t = CalibrationTable("", "minmax", 99.99, {"a": 127.0, "b:0": 12.7})
    assert tensorrt_cache_text(t).splitlines() == ["TRT-8601-MinMaxCalibration", "a: 3f800000", "b:0: 3dcccccd"]
    version, algo, scales = parse_tensorrt_cache(text)
    assert version == "8601" and algo == "EntropyCalibration2"
    assert scales == {n: float(np.float32(a) / np.float32(127)) for n, a in table.amax.items()}
    # A TensorRT cache serves as calibration_cache, giving the same Q/DQ scales.
    path = tmp_path / "model.calib"
    save_calibration(table, path, format="tensorrt")
    assert path.read_text() == text
    q_trt = pyengine.quantize(model, calibration_cache=path, progress=False, weight_rounding="nearest")  # (no data)
    q_ref = pyengine.quantize(model, calibration_data=calib_data, calibration_method="entropy", progress=False)
    s_trt = {t.name: numpy_helper.to_array(t) for t in q_trt.graph.initializer if t.name.endswith("_scale")}
    s_ref = {t.name: numpy_helper.to_array(t) for t in q_ref.graph.initializer if t.name.endswith("_scale")}
    assert s_trt.keys() == s_ref.keys()
    for k in s_ref:
        np.testing.assert_allclose(s_trt[k], s_ref[k], rtol=1e-6)


# ---------------------------------------------------------------- reports and builds

def test_accuracy_report_names_sensitive_layers(model, calib_data):
    held_out = np.random.default_rng(15).standard_normal((32, 3, 16, 16)).astype(np.float32)
    report = accuracy_report(model, held_out, calibration_data=calib_data)
    out = report["outputs"]["logits"]
    assert 0.99 < out["cosine"] <= 1.0 and out["max_abs_error"] >= out["mean_abs_error"] > 0
    assert 0.5 <= out["top1_agreement"] <= 1.0
    assert report["data"] == {"batches": 1, "samples": 32, "held_out": True}
    tensors = report["tensors"]
    assert len([t for t in tensors if t["kind"] == "activation"]) == 7
    assert len([t for t in tensors if t["kind"] == "weight"]) == 7
    sq = [t["sqnr_db"] for t in tensors]
    assert sq == sorted(sq) and all(10 < s < 80 for s in sq)
    names = {n.name for n in model.graph.node}
    assert all(set(t["nodes"]) <= names for t in tensors)
    text = str(report)
    assert "logits" in text and tensors[0]["tensor"] in text and "SQNR" in text
    assert report.worst_layers(2)[0] in tensors[0]["nodes"]


def test_accuracy_target_keeps_the_fewest_sensitive_layers(model, calib_data):
    from pyengine.quantize import _check_target, _Evaluator, _search_keep_fp32, _Session

    held_out = np.random.default_rng(16).standard_normal((32, 3, 16, 16)).astype(np.float32)
    session = _Session(model)
    table = session.table(calib_data, "minmax", 99.99, progress=False)
    ev = _Evaluator(session, table, held_out, 32, None, True)
    full, summary, _ = ev.run_int8()
    c0 = full["logits"]["cosine"]
    target = {"cosine": 1 - (1 - c0) / 3}
    keep, log = _search_keep_fp32(ev, _check_target(target), [])
    assert log["met"] and 1 <= len(keep) < len(summary["quantized_nodes"])
    assert ev.run_int8(keep)[0]["logits"]["cosine"] >= target["cosine"]
    # One layer fewer (dropping the least sensitive kept one) misses the target.
    assert ev.run_int8(keep[:-1])[0]["logits"]["cosine"] < target["cosine"]
    # Through the public API: the kept layers read float tensors.
    q = pyengine.quantize(model, calibration_data=calib_data, calibration_method="minmax",
                          accuracy_target=target, validation_data=held_out, progress=False)
    prod = producers(q)
    for name in keep:
        node = next(n for n in q.graph.node if n.name == name)
        assert all(prod.get(i) is None or prod[i].op_type != "DequantizeLinear" for i in node.input)
    with pytest.raises(pyengine.InvalidArgumentError, match="validation_data"):
        pyengine.quantize(model, calibration_data=calib_data, accuracy_target=target, progress=False)
    with pytest.raises(pyengine.InvalidArgumentError, match="accuracy_target"):
        pyengine.quantize(model, calibration_data=calib_data, accuracy_target={"top5": 1}, validation_data=held_out)


def test_build_int8_engine_or_clear_error(model, calib_data, tmp_path):
    held_out = np.random.default_rng(17).standard_normal((16, 3, 16, 16)).astype(np.float32)
    try:
        engine = pyengine.build(model, precision="int8", backend="cpu", calibration_data=calib_data,
                                validation_data=held_out, progress=False)
    except pyengine.UnsupportedOperatorError as exc:
        # Until the CPU kernels are merged: the error says where the Q/DQ model is.
        assert "pyengine.quantize" in str(exc)
        return
    assert engine.precision == "int8"
    ref = run_ort(model, {"input": held_out})[0]
    assert cosine(engine(held_out), ref) > 0.99
    assert engine.accuracy_report["outputs"]["logits"]["cosine"] > 0.99
    engine.save_calibration(tmp_path / "c.calib", format="tensorrt")
    assert (tmp_path / "c.calib").read_text().startswith("TRT-8601-EntropyCalibration2\ninput: ")


def test_bad_settings_are_rejected(model, calib_data):
    with pytest.raises(pyengine.InvalidArgumentError, match="calibration_method"):
        pyengine.quantize(model, calibration_data=calib_data, calibration_method="kl")
    with pytest.raises(pyengine.InvalidArgumentError, match="percentile"):
        pyengine.quantize(model, calibration_data=calib_data, percentile=0)
    with pytest.raises(pyengine.CalibrationError, match="no calibration data"):
        pyengine.quantize(model)


def test_opset_11_model_is_upgraded_for_per_channel_dq(calib_data):
    b = GraphBuilder("old", opset=13, seed=3)
    x = b.input((3, 16, 16))
    m = b.build({"y": b.relu(b.conv(x, 4, 3, bias=True))})
    m.opset_import[0].version = 11
    onnx.checker.check_model(m)
    q = pyengine.quantize(m, calibration_data=calib_data, progress=False)
    assert pyengine.onnx_io.default_opset(q) >= 13
    onnx.checker.check_model(q, full_check=True)
    assert cosine(run_ort(q, {"input": calib_data[:4]})[0], run_ort(m, {"input": calib_data[:4]})[0]) > 0.999


def test_int8_metadata_names_the_layers_left_in_float():
    """A calibrated INT8 build says which quantized layers run on the int8
    kernels and which stay float fake-quant (DQ -> op), with the reason: here
    a 1-D conv (the int8 conv kernels are 2-D and 3-D) after a 3-D and a 2-D
    one, which both run as QConv."""
    rng = np.random.default_rng(8)
    b = GraphBuilder("mixed", opset=17, seed=8)
    x = b.input((3, 4, 8, 8))
    y3 = b.relu(b.conv(x, 6, (3, 1, 1), pad=(1, 0, 0, 1, 0, 0), bias=True))
    y2 = b.relu(b.conv(b.reshape(b.transpose(y3, [0, 2, 1, 3, 4]), [-1, 6, 8, 8]), 5, (3, 3), bias=True))
    y1 = b.conv(b.reshape(y2, [-1, 5, 64]), 4, (3,), bias=True)
    m = b.build({"y": b.relu(y1)})
    calib = rng.standard_normal((16, 3, 4, 8, 8)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = pyengine.build(m, backend="cpu", precision="int8", calibration_data=calib, report=False,
                                progress=False)
    meta = engine.metadata["int8"]
    assert meta["int8_layers"] == {"QConv": 2}
    assert len(meta["float_layers"]) == 1
    (layer,) = meta["float_layers"]
    assert layer["op"] in ("Conv", "FusedConv") and "rank 3" in layer["reason"], layer
    # The float layer still runs quantized (fake-quant): close to FP32, not equal.
    fp32 = pyengine.build(m, backend="cpu")
    out, ref = engine(calib[:4]), fp32(calib[:4])
    assert cosine(out, ref) > 0.99 and not np.array_equal(out, ref)
