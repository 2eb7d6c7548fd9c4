"""TensorRT on a real GPU: the only tests that verify TensorRT itself.

Skipped (with the reason) unless the `tensorrt` package, cuda-python and an
NVIDIA GPU are present. Run them with `python3 -m pytest -q tests/gpu`, and
`python3 tools/trt_smoke.py` for a table to paste into a bug report.

Bounds vs pyengine's FP32 CPU engine (fresh random inputs): FP32 relative L2
<= 5e-3 (TensorRT may use TF32 for FP32 convolutions), FP16 <= 1e-2, INT8
(random weights and calibration data) cosine >= 0.98.
"""

import threading

import numpy as np
import pytest

import pyengine
from pyengine import zoo
from pyengine.backends import tensorrt

REASON = tensorrt.availability()
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(REASON is not None, reason=f"needs TensorRT and an NVIDIA GPU: {REASON}")]

ZOO = sorted(zoo.ZOO)
PRECISIONS = ("fp32", "fp16", "int8")
BATCH_RANGE = (1, 2, 4)
_seed = np.random.SeedSequence().entropy % (2**31)


def _rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _cosine(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _check(precision, got, ref, what):
    if precision == "fp32":
        assert _rel_l2(got, ref) <= 5e-3, f"{what}: relative L2 {_rel_l2(got, ref):.2e} (seed {_seed})"
    elif precision == "fp16":
        assert _rel_l2(got, ref) <= 1e-2, f"{what}: relative L2 {_rel_l2(got, ref):.2e} (seed {_seed})"
    else:
        assert _cosine(got, ref) >= 0.98, f"{what}: cosine {_cosine(got, ref):.4f} (seed {_seed})"


def _build(name, precision, **kw):
    model = zoo.build_model(name)
    opts = dict(batch_range=BATCH_RANGE, progress=False, **kw)
    if precision == "int8":
        opts["calibration_data"] = [zoo.make_input(model, 4, seed=_seed + s) for s in range(2)]
    return model, pyengine.build(model, precision=precision, backend="tensorrt", **opts)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", ZOO)
def test_zoo_builds_runs_and_matches_cpu(name, precision, tmp_path):
    model, engine = _build(name, precision)
    cpu = pyengine.build(model, backend="cpu")
    assert engine.backend == "tensorrt" and engine.precision == precision
    for batch in (1, 3, 4):  # dynamic batch inside the profile
        feeds = zoo.make_input(model, batch, seed=_seed + batch)
        got, ref = engine.run(feeds), cpu.run(feeds)
        for k in ref:
            assert got[k].shape == ref[k].shape
            _check(precision, got[k], ref[k], f"{name} {precision} batch {batch} '{k}'")
    # save / load round trip gives the same outputs
    feeds = zoo.make_input(model, 2, seed=_seed)
    engine.save(tmp_path / "m.plan")
    loaded = pyengine.load(tmp_path / "m.plan")
    for k, v in engine.run(feeds).items():
        np.testing.assert_array_equal(loaded.run(feeds)[k], v)
    meta = loaded.metadata["tensorrt"]
    assert meta["version"] == __import__("tensorrt").__version__ and meta["compute_capability"]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_cuda_graph_path(precision):
    model, engine = _build("resnet18", precision)
    feeds = {b: zoo.make_input(model, b, seed=_seed + b) for b in (1, 4)}
    eager = {b: engine.run(f)["output"] for b, f in feeds.items()}
    engine.cuda_graph = True
    for _ in range(3):
        for b, f in feeds.items():
            np.testing.assert_allclose(engine.run(f)["output"], eager[b], rtol=1e-5, atol=1e-5)


def test_four_threads_one_engine():
    model, engine = _build("resnet18", "fp16")
    cpu = pyengine.build(model, backend="cpu")
    inputs = [zoo.make_input(model, 1 + i % 4, seed=_seed + i) for i in range(4)]
    refs = [cpu.run(f)["output"] for f in inputs]
    failures = []

    def worker(i):
        for _ in range(20):
            got = engine.run(inputs[i])["output"]
            if got.shape != refs[i].shape or _rel_l2(got, refs[i]) > 1e-2:
                failures.append(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_per_layer_profile_names_are_onnx_nodes():
    model, engine = _build("resnet18", "fp16")
    feeds = zoo.make_input(model, 1, seed=_seed)
    layers = engine.profile(feeds, runs=5)
    onnx_nodes = set(engine.metadata["tensorrt"]["onnx_nodes"])
    assert layers and sum(l["ms"] for l in layers) > 0
    named = [l for l in layers if l["onnx_nodes"]]
    assert all(set(l["onnx_nodes"]) <= onnx_nodes for l in named)
    conv_nodes = {n for n in onnx_nodes if n.startswith("conv")}
    covered = {n for l in named for n in l["onnx_nodes"]}
    assert len(covered & conv_nodes) >= 0.8 * len(conv_nodes), "most Conv nodes should map to a timed layer"


def test_device_arrays_zero_copy():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    model, engine = _build("resnet18", "fp16")
    feeds = zoo.make_input(model, 2, seed=_seed)
    ref = engine.run(feeds)["output"]
    x = torch.from_numpy(feeds["input"]).cuda()
    np.testing.assert_allclose(engine.run({"input": x})["output"], ref, rtol=1e-5, atol=1e-5)
    out = engine.run({"input": x}, device_outputs=True)["output"]
    y = torch.as_tensor(out, device="cuda")
    np.testing.assert_allclose(y.cpu().numpy(), ref, rtol=1e-5, atol=1e-5)

    class OnlyDLPack:  # a producer without __cuda_array_interface__ (JAX-like)
        def __init__(self, t):
            self.t = t

        def __dlpack__(self, stream=None):
            return self.t.__dlpack__(stream=stream)

        def __dlpack_device__(self):
            return self.t.__dlpack_device__()

    np.testing.assert_allclose(engine.run({"input": OnlyDLPack(x)})["output"], ref, rtol=1e-5, atol=1e-5)


def test_raw_engine_and_foreign_plan_refused(tmp_path):
    model, engine = _build("repvgg_block", "fp32")
    engine.save(tmp_path / "m.engine", raw=True)
    assert (tmp_path / "m.engine").read_bytes() == engine.serialize()
    meta = engine.metadata
    meta["tensorrt"] = dict(meta["tensorrt"], compute_capability="1.0")
    tensorrt.write_plan(tmp_path / "foreign.plan", meta, engine.serialize())
    with pytest.raises(pyengine.PlanFormatError, match="compute capability 1.0"):
        pyengine.load(tmp_path / "foreign.plan")


def test_auto_picks_tensorrt_on_a_gpu():
    """The headline: the default build uses TensorRT where it can."""
    model = zoo.build_model("repvgg_block")
    engine = pyengine.build(model, progress=False)
    assert engine.backend == "tensorrt" and "fallback" not in engine.metadata
    feeds = zoo.make_input(model, 2, seed=_seed)
    _check("fp32", engine.run(feeds)["output"], pyengine.build(model, backend="cpu").run(feeds)["output"], "auto")
