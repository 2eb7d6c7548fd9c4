"""GPTQ weight rounding (pyengine/gptq.py, ``weight_rounding="gptq"``, the
default): the solver against its definition, the input statistics against a
plain im2col, and the quantized models it produces.

- ``gptq_round`` with uncorrelated inputs (a diagonal H) is nearest rounding
  exactly: no column's error has anywhere to go.
- With correlated inputs its output error tr(dW H dW^T) is well below
  nearest rounding's (fresh random layers every run), its levels stay in
  [-127, 127], and inputs that never fire keep nearest rounding.
- ``_upper_inverse_factor`` is the upper triangular U with U^T U = H^-1, with
  scipy's LAPACK and with numpy alone.
- The column sweep of a block (``_core.gptq_block``, C++) gives bit for bit
  the levels, errors and updated columns of the same steps in numpy.
- ``GramCollector`` accumulates sum x x^T over exactly the im2col columns of
  a plain loop (strides, pads, dilations, groups; 2-D and 3-D convs; Gemm).
- ``pyengine.quantize``: GPTQ keeps nearest rounding's scales and Q/DQ
  structure, changes only int8 weight values, says so in the metadata, and
  lowers the output error against FP32 on held-out inputs for a network
  whose input channels are correlated.

Real-data accuracy (trained networks): test_int8_realdata.py.
"""

import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyengine
from pyengine import gptq


def _rng():
    return np.random.default_rng(np.random.SeedSequence().entropy)


def _nearest(w, s):
    return np.clip(np.rint(w / s[:, None]), -127, 127).astype(np.int8)


def _output_error(w, q, s, h):
    d = w.astype(np.float64) - q.astype(np.float64) * s[:, None]
    return float(np.sum((d @ h) * d))


def test_diagonal_inputs_give_nearest_rounding():
    rng = _rng()
    w = rng.standard_normal((24, 300)).astype(np.float32)
    s = (np.abs(w).max(1) / 127).astype(np.float32)
    h = np.diag(rng.uniform(0.1, 5.0, 300)).astype(np.float32)
    np.testing.assert_array_equal(gptq.gptq_round(w, s, h), _nearest(w, s))


# K from a 3-channel 3x3 conv (27) up. Bound 0.6: over 1000 fresh draws the
# ratio to nearest rounding peaked at 0.39 (K = 27), 0.25 (64), 0.18 (300).
# (K = 7, tried first, is no test: from 0.1 to 1.02 of nearest over 300
# draws, its 99th percentile 0.86; 7 inputs leave GPTQ little to move.)
@pytest.mark.parametrize("k", [27, 64, 300])
def test_correlated_inputs_lower_the_output_error(k):
    rng = _rng()
    m, n = 32, 4 * k + 64
    w = rng.standard_normal((m, k)).astype(np.float32)
    w[:, 0] *= 20  # an outlier column: a wide range for every row
    s = (np.abs(w).max(1) / 127).astype(np.float32)
    # Inputs mixed from fewer sources than channels: strongly correlated.
    x = rng.standard_normal((n, max(2, k // 4))) @ rng.standard_normal((max(2, k // 4), k))
    x += 0.05 * rng.standard_normal((n, k))
    h = (x.T @ x / n).astype(np.float32)
    q = gptq.gptq_round(w, s, h)
    assert q.dtype == np.int8 and q.shape == w.shape
    assert q.min() >= -127 and q.max() <= 127
    near = _nearest(w, s)
    assert not np.array_equal(q, near)
    ratio = _output_error(w, q, s, h) / _output_error(w, near, s, h)
    assert ratio < 0.6, ratio


def _sweep_reference(wb, ub, safe):
    """The block sweep in numpy (quant/gptq_block.h): float32 steps, in order."""
    wb = wb.copy()
    q, err = np.empty_like(wb), np.empty_like(wb)
    for i in range(wb.shape[2]):
        qi = np.clip(np.rint(wb[:, :, i] / safe), -127, 127)
        q[:, :, i] = qi
        e = (wb[:, :, i] - qi * safe) / ub[:, i, i, None]
        wb[:, :, i + 1:] -= e[:, :, None] * ub[:, None, i, i + 1:]
        err[:, :, i] = e
    return q, err, wb


@pytest.mark.parametrize("groups, rows, b", [(1, 37, 32), (3, 8, 17), (1, 5, 1)])
def test_block_sweep_matches_numpy(groups, rows, b):
    rng = _rng()
    safe = rng.uniform(0.005, 0.05, (groups, rows)).astype(np.float32)
    wb = (rng.standard_normal((groups, rows, b)) * 0.8).astype(np.float32)
    wb[:, 0, :2] = np.array([2.5, -3.5], np.float32)[:b] * safe[:, 0, None]  # exact halves: to even
    wb[:, -1, -1] = 500 * safe[:, -1]  # past the range: clamps
    ub = np.triu(rng.uniform(-0.3, 0.3, (groups, b, b))).astype(np.float32)
    ub[:, np.arange(b), np.arange(b)] = rng.uniform(0.5, 2.0, (groups, b)).astype(np.float32)
    q_ref, err_ref, w_ref = _sweep_reference(wb, ub, safe)
    w = wb.copy()
    q, err = pyengine._core.gptq_block(w, ub, safe)
    np.testing.assert_array_equal(q, q_ref)
    np.testing.assert_array_equal(err, err_ref)
    np.testing.assert_array_equal(w, w_ref)
    assert np.abs(q).max() <= 127
    for copied in (wb.astype(np.float64), np.concatenate([wb, wb], 2)[:, :, ::2]):
        with pytest.raises(TypeError):  # w is updated in place: no silent copy of another dtype or layout
            pyengine._core.gptq_block(copied, ub, safe)


def test_dead_inputs_keep_nearest_rounding():
    rng = _rng()
    k = 40
    w = rng.standard_normal((8, k)).astype(np.float32)
    s = (np.abs(w).max(1) / 127).astype(np.float32)
    x = rng.standard_normal((200, k))
    dead = np.array([3, 17, 39])
    x[:, dead] = 0
    x[:, 1:] += x[:, :-1]  # correlated neighbours
    x[:, dead] = 0
    q = gptq.gptq_round(w, s, (x.T @ x / 200).astype(np.float32))
    np.testing.assert_array_equal(q[:, dead], _nearest(w, s)[:, dead])


@pytest.mark.parametrize("scipy_linalg", [True, False], ids=["lapack", "numpy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_upper_inverse_factor(monkeypatch, scipy_linalg, dtype):
    if not scipy_linalg:
        monkeypatch.setitem(sys.modules, "scipy.linalg", None)  # import fails: numpy's path
    else:
        pytest.importorskip("scipy.linalg")
    rng = _rng()
    a = rng.standard_normal((70, 90))
    h = (a @ a.T / 90 + 0.1 * np.eye(70)).astype(dtype)
    u = gptq._upper_inverse_factor(h)
    assert u.dtype == dtype
    np.testing.assert_array_equal(u, np.triu(u))
    inv = np.linalg.inv(h.astype(np.float64))
    tol = 1e-4 if dtype == np.float32 else 1e-10
    assert np.abs(u.T.astype(np.float64) @ u - inv).max() <= tol * np.abs(inv).max()


def _im2col_columns(x, w_shape, strides, pads, dilations, group):
    """[positions, group, K] by plain loops (N-D spatial)."""
    n, c = x.shape[:2]
    sp = x.ndim - 2
    kernel = w_shape[2:]
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + sp]) for i in range(sp)])
    out = [(xp.shape[2 + i] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1 for i in range(sp)]
    cols = []
    for img in range(n):
        for pos in np.ndindex(*out):
            taps = [xp[(img, slice(None)) + tuple(pos[i] * strides[i] + t[i] * dilations[i] for i in range(sp))]
                    for t in np.ndindex(*kernel)]
            patch = np.stack(taps, axis=-1)  # [c, taps]
            cols.append(patch.reshape(group, (c // group) * int(np.prod(kernel))))
    return np.stack(cols)


def _conv_node(w_shape, strides, pads, dilations, group):
    return {"name": "conv", "op_type": "Conv", "inputs": ["x", "w"], "outputs": ["y"],
            "attrs": {"strides": (7, list(strides)), "pads": (7, list(pads)), "dilations": (7, list(dilations)),
                      "group": (2, group), "kernel_shape": (7, list(w_shape[2:]))}}


@pytest.mark.parametrize("case", [
    dict(x=(2, 4, 5, 6), w=(6, 4, 3, 3), strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), group=1),
    dict(x=(1, 6, 11, 10), w=(4, 3, 3, 2), strides=(2, 3), pads=(0, 2, 1, 0), dilations=(2, 1), group=2),
    dict(x=(2, 4, 5, 6), w=(4, 1, 3, 3), strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), group=4),
    dict(x=(1, 2, 3, 5, 5), w=(3, 2, 3, 1, 3), strides=(1, 2, 1), pads=(1, 0, 1, 1, 0, 1), dilations=(1, 1, 2),
         group=1),
], ids=["3x3", "strided-dilated-grouped", "depthwise", "conv3d"])
def test_gram_collector_matches_im2col(case):
    rng = _rng()
    x = rng.standard_normal(case["x"]).astype(np.float32)
    node = _conv_node(case["w"], case["strides"], case["pads"], case["dilations"], case["group"])
    layer = gptq._Layer(node, case["w"], seed=0)
    ref = _im2col_columns(x, case["w"], case["strides"], case["pads"], case["dilations"], case["group"])
    assert len(ref) <= gptq.MIN_COLUMNS // gptq.ASSUMED_IMAGES * x.shape[0]  # small planes: every position
    layer.update(x)
    layer.update(2 * x)
    assert layer.count == 2 * len(ref)
    for g in range(case["group"]):
        expect = 5 * ref[:, g, :].T.astype(np.float64) @ ref[:, g, :]
        np.testing.assert_allclose(layer.gram[g], expect, rtol=1e-4, atol=1e-4)


def test_gram_collector_samples_large_planes():
    """A plane with more positions than the per-image sample: that many
    columns per image, each one of the plane's im2col columns."""
    rng = _rng()
    x = rng.standard_normal((2, 3, 20, 20)).astype(np.float32)
    node = _conv_node((2, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1)
    layer = gptq._Layer(node, (2, 3, 3, 3), seed=1)
    cols = layer.columns(x)
    per_image = gptq.MIN_COLUMNS // gptq.ASSUMED_IMAGES
    assert cols.shape == (2 * per_image, 1, 27)
    ref = _im2col_columns(x, (2, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1)[:, 0, :]
    found = (np.abs(cols[:, 0, None, :] - ref[None]).max(-1) == 0).any(1)
    assert found.all()
    assert len({c.tobytes() for c in cols[:per_image, 0]}) == per_image  # no position twice


def test_gram_collector_gemm_and_matmul():
    rng = _rng()
    x = rng.standard_normal((5, 12)).astype(np.float32)
    gemm = gptq._Layer({"name": "fc", "op_type": "Gemm", "inputs": ["x", "w"], "outputs": ["y"],
                        "attrs": {"transB": (2, 1)}}, (7, 12), seed=0)
    gemm.update(x)
    np.testing.assert_allclose(gemm.gram[0], x.T.astype(np.float64) @ x, rtol=1e-5, atol=1e-5)
    mm = gptq._Layer({"name": "mm", "op_type": "MatMul", "inputs": ["x", "w"], "outputs": ["y"], "attrs": {}},
                     (12, 7), seed=0)
    x3 = rng.standard_normal((2, 3, 12)).astype(np.float32)
    mm.update(x3)
    flat = x3.reshape(-1, 12).astype(np.float64)
    np.testing.assert_allclose(mm.gram[0], flat.T @ flat, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("buffer_floats", [1, 200, 1 << 22])
def test_gram_collector_buffers_and_flushes(monkeypatch, buffer_floats):
    """Columns wait in a per-layer buffer (BUFFER_FLOATS) before one product
    adds them to H, through BLAS syrk's one triangle when scipy is there:
    a flush every update, every few, or only when H is read, H read between
    updates, give the same symmetric H as the plain sum; and the buffered
    columns are copies (the run's memory, reused after the tap, is not read
    later: a Gemm's input rows are all its columns, a view of it)."""
    monkeypatch.setattr(gptq, "BUFFER_FLOATS", buffer_floats)
    rng = _rng()
    gemm = gptq._Layer({"name": "fc", "op_type": "Gemm", "inputs": ["x", "w"], "outputs": ["y"],
                        "attrs": {"transB": (2, 1)}}, (7, 40), seed=0)
    expect = np.zeros((40, 40))
    for step in range(6):
        x = rng.standard_normal((5, 40)).astype(np.float32)
        gemm.update(x)
        expect += x.T.astype(np.float64) @ x
        x[...] = np.nan  # the executor reuses its buffers
        if step == 2:
            np.testing.assert_allclose(gemm.gram[0], expect, rtol=1e-5, atol=1e-4)
    h = gemm.gram[0]
    np.testing.assert_allclose(h, expect, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(h, h.T)
    assert gemm.count == 30


def _correlated_convnet(rng):
    """Conv(3x3, 16 -> 24) -> Relu -> Conv(1x1, 24 -> 16) -> Relu -> Gemm:
    an input of 16 channels mixed from 3 sources, so the first conv's inputs
    are strongly correlated, and wide weights on its input channel 0, which
    is always 0 (a dead channel, as pruning and BatchNorm folding leave
    them): every output channel's weight steps are coarse, while the outputs
    (so the activations' steps) are not wider. Where GPTQ has most to gain."""
    w1 = rng.standard_normal((24, 16, 3, 3)).astype(np.float32) * 0.2
    w1[:, 0] *= 40  # wide weights on an input channel that stays 0: coarse steps, no wider outputs
    w2 = rng.standard_normal((16, 24, 1, 1)).astype(np.float32) * 0.3
    wf = rng.standard_normal((10, 16 * 8 * 8)).astype(np.float32) * 0.05
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Flatten", ["r2"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1, name="fc")]
    inits = [numpy_helper.from_array(a, n) for a, n in [
        (w1, "w1"), (rng.standard_normal(24).astype(np.float32) * 0.1, "b1"),
        (w2, "w2"), (rng.standard_normal(16).astype(np.float32) * 0.1, "b2"),
        (wf, "wf"), (np.zeros(10, np.float32), "bf")]]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    mix = rng.standard_normal((3, 16)).astype(np.float32)

    def data(n):
        src = rng.standard_normal((n, 8, 8, 3)).astype(np.float32)
        x = (src @ mix).transpose(0, 3, 1, 2) + 0.05 * rng.standard_normal((n, 16, 8, 8)).astype(np.float32)
        x[:, 0] = 0
        return np.ascontiguousarray(x)
    return model, data


def test_quantize_gptq_keeps_scales_and_lowers_the_error():
    rng = _rng()
    model, data = _correlated_convnet(rng)
    calib, held_out = data(64), data(64)
    near = pyengine.quantize(model, calibration_data=calib, progress=False, weight_rounding="nearest")
    gq = pyengine.quantize(model, calibration_data=calib, progress=False)
    props = {p.key: p.value for p in gq.metadata_props}
    assert props["pyengine.weight_rounding"] == "gptq"
    a = {t.name: numpy_helper.to_array(t) for t in near.graph.initializer}
    b = {t.name: numpy_helper.to_array(t) for t in gq.graph.initializer}
    assert a.keys() == b.keys()
    assert [n.op_type for n in near.graph.node] == [n.op_type for n in gq.graph.node]
    changed = [k for k in a if not np.array_equal(a[k], b[k])]
    assert changed and all(k.endswith("_quantized") and b[k].dtype == np.int8 for k in changed)
    assert all(np.abs(b[k].astype(np.int32)).max() <= 127 for k in changed)

    import onnxruntime as ort

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"x": held_out})[0]
    ref = run(model)
    err = {name: float(np.linalg.norm(run(m) - ref) / np.linalg.norm(ref)) for name, m in (("near", near),
                                                                                            ("gptq", gq))}
    assert err["gptq"] < 0.8 * err["near"], err


def test_build_reports_the_rounding():
    rng = _rng()
    model, data = _correlated_convnet(rng)
    engine = pyengine.build(model, precision="int8", calibration_data=data(32), report=False, progress=False)
    rounding = engine.metadata["int8"]["weight_rounding"]
    assert rounding["method"] == "gptq" and rounding["layers"] == 3 and rounding["nearest_rounding"] == []
    assert 0 < rounding["output_error_vs_nearest"]["median"] < 1
    engine = pyengine.build(model, precision="int8", calibration_data=data(32), report=False, progress=False,
                            weight_rounding="nearest")
    assert engine.metadata["int8"]["weight_rounding"] == {"method": "nearest"}
    with pytest.raises(pyengine.InvalidArgumentError, match="weight_rounding must be one of"):
        pyengine.quantize(model, calibration_data=data(8), progress=False, weight_rounding="adaround")


def test_groups_round_as_separate_layers(monkeypatch):
    """A grouped conv's groups go through the column loop together
    (stacked); each gets what it would get alone (numpy's factorization for
    both, so the same arithmetic)."""
    monkeypatch.setitem(sys.modules, "scipy.linalg", None)
    rng = _rng()
    g, m, k = 5, 6, 27
    w = rng.standard_normal((g, m, k)).astype(np.float32)
    s = (np.abs(w).max(2) / 127).astype(np.float32)
    x = rng.standard_normal((g, 400, 6)) @ rng.standard_normal((g, 6, k))
    h = (np.transpose(x, (0, 2, 1)) @ x / 400).astype(np.float32)
    stacked = gptq.gptq_round(w, s, h)
    assert stacked.shape == w.shape
    for i in range(g):
        np.testing.assert_array_equal(stacked[i], gptq.gptq_round(w[i], s[i], h[i]))


def test_statistics_when_onnxruntime_runs_the_float_model():
    """Calibration falls back to onnxruntime for an op pyengine lacks
    (Hardmax); GPTQ's statistics come through that path too."""
    from pyengine.quantize import _Session

    rng = _rng()
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Hardmax", ["r"], ["y"], axis=1, name="hardmax")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(rng.standard_normal((8, 4, 3, 3)).astype(np.float32), "w")])
    session = _Session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    table = session.table(rng.standard_normal((16, 4, 8, 8)).astype(np.float32), "mse", 99.99, progress=False)
    assert table.runtime == "onnxruntime"
    _, summary = session.qdq_graph(table)
    assert summary["weight_rounding"]["method"] == "gptq" and summary["weight_rounding"]["layers"] == 1
    assert session.grams.layers["conv"].count == 16 * 32  # 64 positions an image, 32 sampled
