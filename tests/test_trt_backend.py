"""The TensorRT backend's logic, on the CPU.

Two kinds of tests:
* with this machine as it is (no TensorRT, no GPU): backend="auto" falls back
  and records why, backend="tensorrt" raises, the plan container and the
  preflight checks work without TensorRT;
* with the STAND-IN modules of trt_standin.py in place of `tensorrt` and
  `cuda.bindings.runtime`. They are NOT TensorRT: they only let these tests
  check pyengine's own code around TensorRT (the builder call sequence, the
  fallback, buffers, CUDA-graph bookkeeping, threads). None of this counts as
  TensorRT verification; tests/gpu/ does that on a real GPU.
"""

import json
import logging
import threading
import warnings

import numpy as np
import onnx
import pytest

import pyengine
import trt_standin
from pyengine import zoo
from pyengine.backends import tensorrt, trt_build, trt_runtime
from pyengine.errors import BackendUnavailableError, InvalidArgumentError, PlanFormatError, ShapeError

_seed = np.random.SeedSequence().entropy % (2**31)


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    monkeypatch.setattr(tensorrt, "_warned", set())
    monkeypatch.setattr(trt_standin, "SUPPORTED_OPS", None)


@pytest.fixture(scope="module")
def small():
    model = zoo.build_model("repvgg_block")
    return model, zoo.make_input(model, 2, seed=_seed)


def _cpu(model, feeds):
    return pyengine.build(model, backend="cpu").run(feeds)


def _real_tensorrt_missing():
    try:
        import tensorrt as _  # noqa: F401
    except ImportError:
        return True
    return False


# --------------------------------------------------------------------------
# This machine as it is
# --------------------------------------------------------------------------

@pytest.mark.skipif(not _real_tensorrt_missing(), reason="TensorRT is installed here")
def test_auto_falls_back_without_tensorrt_quietly(small, tmp_path):
    # No TensorRT installed: the CPU is the default, recorded but not warned about.
    model, feeds = small
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine = pyengine.build(model)
    assert not [w for w in caught if "TensorRT" in str(w.message)], "a plain CPU-only build warned"
    assert engine.backend == "cpu"
    fb = engine.metadata["fallback"]
    assert fb["requested_backend"] == "auto" and "tensorrt" in fb["reason"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = pyengine.build(model)
    assert not [w for w in caught if "TensorRT" in str(w.message)], "the fallback warned twice"
    assert again.metadata["fallback"]["reason"] == fb["reason"]
    np.testing.assert_allclose(engine.run(feeds)["output"], _cpu(model, feeds)["output"], rtol=1e-5, atol=1e-5)
    # The fallback reason survives save/load.
    engine.save(tmp_path / "fb.plan")
    assert pyengine.load(tmp_path / "fb.plan").metadata["fallback"] == fb


@pytest.mark.skipif(not _real_tensorrt_missing(), reason="TensorRT is installed here")
def test_auto_fp16_and_tensorrt_options_fall_back(small):
    model, feeds = small
    with pytest.warns(RuntimeWarning):
        engine = pyengine.build(model, precision="fp16", batch_range=(1, 4, 8), workspace=1 << 28)
    assert engine.precision == "fp32"
    assert engine.metadata["fallback"]["requested_precision"] == "fp16"
    with pytest.raises(BackendUnavailableError, match="tensorrt"):
        pyengine.build(model, backend="tensorrt", precision="fp16")
    with pytest.raises(InvalidArgumentError, match="needs TensorRT"):
        pyengine.build(model, backend="cpu", precision="fp16")
    with pytest.raises(InvalidArgumentError, match="TensorRT backend only"):
        pyengine.build(model, backend="cpu", batch_range=(1, 2, 4))
    # Options shared with the CPU INT8 build (calibration's) are not TensorRT-only.
    assert pyengine.build(model, backend="cpu", progress=False).backend == "cpu"
    assert pyengine.build(model, precision="fp16", keep_fp32=["conv_0"], progress=False).backend == "cpu"
    calib = [zoo.make_input(model, 2, seed=_seed)]
    engine = pyengine.build(model, precision="int8", backend="cpu", progress=False, calibration_data=calib,
                            report=False)
    assert engine.precision == "int8"


# --------------------------------------------------------------------------
# Pure functions: profiles, options, cache paths, layer names, DLPack
# --------------------------------------------------------------------------

def test_profile_shapes():
    inputs = [("x", (-1, 3, 32, 32)), ("s", (1, 4))]
    assert trt_build.profile_shapes(inputs) == {"x": ((1, 3, 32, 32), (1, 3, 32, 32), (32, 3, 32, 32))}
    assert trt_build.profile_shapes(inputs, (2, 8, 16))["x"] == ((2, 3, 32, 32), (8, 3, 32, 32), (16, 3, 32, 32))
    custom = {"x": ((1, 3, 32, 32), (4, 3, 32, 32), (4, 3, 32, 32))}
    assert trt_build.profile_shapes(inputs, None, custom)["x"] == custom["x"]
    with pytest.raises(ShapeError, match="dynamic axes besides the batch"):
        trt_build.profile_shapes([("v", (-1, 3, -1, 32))])
    with pytest.raises(ShapeError, match="does not fit"):
        trt_build.profile_shapes(inputs, None, {"x": ((1, 3, 16, 16), (1, 3, 16, 16), (1, 3, 16, 16))})
    with pytest.raises(ShapeError, match="min <= opt <= max"):
        trt_build.profile_shapes(inputs, None, {"x": ((4, 3, 32, 32), (1, 3, 32, 32), (8, 3, 32, 32))})
    with pytest.raises(InvalidArgumentError, match="unknown inputs"):
        trt_build.profile_shapes(inputs, None, {"nope": ((1,), (1,), (1,))})


@pytest.mark.parametrize("bad", [{"batch_range": (4, 2, 8)}, {"batch_range": (0, 1, 2)}, {"workspace": -1},
                                 {"builder_optimization_level": 9}, {"hardware_compatibility_level": "turing"},
                                 {"no_such_option": 1}])
def test_build_options_are_validated(bad):
    with pytest.raises(InvalidArgumentError):
        trt_build.BuildOptions.from_kwargs(bad)


def test_timing_cache_is_keyed_by_gpu_and_version(tmp_path):
    a = trt_build.timing_cache_path(str(tmp_path), "NVIDIA H100 80GB HBM3", "9.0", "10.13.0")
    b = trt_build.timing_cache_path(str(tmp_path), "NVIDIA A100-SXM4-40GB", "8.0", "10.13.0")
    c = trt_build.timing_cache_path(str(tmp_path), "NVIDIA H100 80GB HBM3", "9.0", "11.4.0")
    assert len({a, b, c}) == 3
    assert a.endswith("timing-nvidia-h100-80gb-hbm3-sm90-trt10.13.0.cache")


def test_layer_names_map_back_to_onnx_nodes():
    nodes = ["conv1", "relu1", "conv2", "add1", "relu2", "gemm"]
    f = trt_runtime.layer_onnx_nodes
    assert f({"Name": "x", "Metadata": "[ONNX Layer: conv1]\x1e[ONNX Layer: relu1]"}, nodes) == ["conv1", "relu1"]
    assert f({"Name": "conv2 + add1 + relu2"}, nodes) == ["conv2", "add1", "relu2"]
    assert f({"Name": "PWN(add1, relu2)"}, nodes) == ["add1", "relu2"]
    assert f({"Name": "Reformatting CopyNode for Input Tensor 0 to conv1"}, nodes) == ["conv1"]
    assert f({"Name": "__myl_Fc_0"}, nodes) == []
    info = json.dumps({"Layers": ["conv1 + relu1", {"Name": "gemm", "LayerType": "Gemm"}], "I/O Tensors": []})
    assert [l["Name"] for l in trt_runtime.inspector_layers(info)] == ["conv1 + relu1", "gemm"]
    assert trt_runtime.inspector_io(json.dumps({"Bindings": ["a"]})) == ["a"]  # 10.x name


def test_dlpack_capsules_are_read_without_copying():
    x = np.random.default_rng(_seed).standard_normal((2, 3, 4)).astype(np.float32)
    v = trt_runtime.dlpack_view(x.__dlpack__())
    assert v["ptr"] == x.ctypes.data and v["shape"] == (2, 3, 4) and v["dtype"] == np.float32
    assert v["contiguous"] and v["device_type"] == trt_runtime.KDL_CPU
    assert not trt_runtime.dlpack_view(x[:, :, ::2].__dlpack__())["contiguous"]
    assert trt_runtime.dlpack_view(np.zeros(3, np.int64).__dlpack__())["dtype"] == np.int64
    # A CPU array is not a device input (it goes through pinned staging).
    assert trt_runtime.device_input(x) is None


# --------------------------------------------------------------------------
# Plan container and preflight (no TensorRT needed)
# --------------------------------------------------------------------------

def _meta(**t):
    base = {"version": "10.13.0", "gpu_name": "NVIDIA A10", "compute_capability": "8.6",
            "cuda_runtime_version": "12.8", "version_compatible": False, "hardware_compatibility_level": "none"}
    base.update(t)
    return {"backend": "tensorrt", "precision": "fp16", "source_model_name": "resnet18.onnx", "tensorrt": base,
            "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 3, 64, 64]}], "outputs": []}


def _here(**h):
    base = {"tensorrt_version": "10.13.0", "gpu_name": "NVIDIA A10", "compute_capability": "8.6",
            "cuda_runtime_version": "12.8", "reason": None}
    base.update(h)
    return base


def test_plan_container_round_trip_with_a_standin_blob(tmp_path):
    blob = np.random.default_rng(_seed).integers(0, 256, 100_003, dtype=np.uint8).tobytes()
    path = tmp_path / "m.plan"
    tensorrt.write_plan(path, _meta(), blob)
    meta, got = tensorrt.read_plan(path)
    assert got == blob
    assert meta["backend"] == "tensorrt" and meta["tensorrt"]["engine_bytes"] == len(blob)
    assert meta["format_version"] == pyengine._core.PLAN_FORMAT_VERSION
    raw = path.read_bytes()
    assert raw[:8] == b"PYENGPLN" and int.from_bytes(raw[16:20], "little") == 4  # four sections
    kinds = [int.from_bytes(raw[24 + 32 * i:28 + 32 * i], "little") for i in range(4)]
    assert kinds == [1, 2, 3, tensorrt.ENGINE_SECTION]
    offset = int.from_bytes(raw[24 + 32 * 3 + 8:24 + 32 * 3 + 16], "little")
    assert offset % 64 == 0 and raw[offset:offset + len(blob)] == blob
    # A flipped byte in the engine section is caught by the container checksum.
    bad = bytearray(raw)
    bad[offset + 10] ^= 0xFF
    (tmp_path / "bad.plan").write_bytes(bytes(bad))
    with pytest.raises(PlanFormatError, match="checksum mismatch in section 4"):
        tensorrt.read_plan(tmp_path / "bad.plan")
    (tmp_path / "short.plan").write_bytes(raw[:offset + 100])
    with pytest.raises(PlanFormatError, match="truncated"):
        pyengine.load(tmp_path / "short.plan")


@pytest.mark.skipif(not _real_tensorrt_missing(), reason="TensorRT is installed here")
def test_loading_a_tensorrt_plan_here_says_what_it_needs(tmp_path):
    path = tmp_path / "m.plan"
    tensorrt.write_plan(path, _meta(), b"\0" * 64)
    with pytest.raises(BackendUnavailableError, match=r"built for TensorRT 10\.13\.0 on NVIDIA A10 .*no TensorRT"):
        pyengine.load(path)


def test_preflight_messages_for_each_mismatch():
    pf = tensorrt.preflight
    assert pf(_meta(), _here()) == []
    with pytest.raises(PlanFormatError) as e:
        pf(_meta(), _here(tensorrt_version="10.14.1"), "r18.plan")
    msg = str(e.value)
    assert "built for TensorRT 10.13.0 on NVIDIA A10 (compute capability 8.6" in msg
    assert "this machine has TensorRT 10.14.1" in msg
    assert "pyengine build resnet18.onnx --backend tensorrt --precision fp16 -o r18.plan" in msg
    with pytest.raises(PlanFormatError, match=r"compute capability 8\.6.*this machine has .*compute capability 9\.0"
                                              r".*architecture"):
        pf(_meta(), _here(compute_capability="9.0", gpu_name="NVIDIA H100"))
    # Version-compatible plans run on the same major, same or later version.
    assert pf(_meta(version_compatible=True), _here(tensorrt_version="10.14.1")) == []
    with pytest.raises(PlanFormatError, match="Version-compatible plans run on TensorRT 10.x from 10.13.0"):
        pf(_meta(version_compatible=True), _here(tensorrt_version="10.12.0"))
    with pytest.raises(PlanFormatError, match="Version-compatible"):
        pf(_meta(version_compatible=True), _here(tensorrt_version="11.0.0"))
    # Hardware compatibility: ampere_plus runs on 8.0+, not on 7.5.
    assert pf(_meta(hardware_compatibility_level="ampere_plus"), _here(compute_capability="9.0")) == []
    with pytest.raises(PlanFormatError, match="ampere_plus"):
        pf(_meta(hardware_compatibility_level="ampere_plus"), _here(compute_capability="7.5"))
    # Same architecture, another GPU model: loads, with a warning.
    warns = pf(_meta(), _here(gpu_name="NVIDIA RTX A6000"))
    assert len(warns) == 1 and "NVIDIA A10" in warns[0] and "NVIDIA RTX A6000" in warns[0]
    with pytest.raises(BackendUnavailableError, match="no TensorRT"):
        pf(_meta(), _here(tensorrt_version=None, compute_capability=None))
    with pytest.raises(BackendUnavailableError, match="no usable GPU"):
        pf(_meta(), _here(compute_capability=None, reason="no usable CUDA GPU"))
    with pytest.raises(PlanFormatError, match="without the TensorRT version"):
        pf({"backend": "tensorrt", "tensorrt": {}}, _here())


# --------------------------------------------------------------------------
# With the stand-in tensorrt / cuda-python modules (NOT TensorRT)
# --------------------------------------------------------------------------

def test_standin_no_gpu_means_no_tensorrt_object(monkeypatch, small):
    model, _ = small
    trt, _ = trt_standin.install(monkeypatch, devices=0)
    with pytest.raises(BackendUnavailableError, match="cudaGetDeviceCount"):
        pyengine.build(model, backend="tensorrt")
    with pytest.warns(RuntimeWarning, match="cudaGetDeviceCount"):
        engine = pyengine.build(model)
    assert engine.backend == "cpu" and "cudaErrorInsufficientDriver" in engine.metadata["fallback"]["reason"]
    assert trt.calls == [], "a TensorRT object was created without a GPU"


def test_standin_parse_failure(monkeypatch, small):
    model, feeds = small
    trt_standin.install(monkeypatch)
    monkeypatch.setattr(trt_standin, "SUPPORTED_OPS", {"Conv", "Relu", "GlobalAveragePool", "Flatten", "Cast"})
    with pytest.raises(pyengine.UnsupportedOperatorError,
                       match=r"(?s)ONNX parser rejected.*node 'gemm_0' \(Gemm\): No importer registered for op: Gemm"):
        pyengine.build(model, backend="tensorrt", progress=False)
    with pytest.warns(RuntimeWarning, match="ONNX parser rejected"):
        engine = pyengine.build(model, progress=False, batch_range=(1, 2, 4))
    assert engine.backend == "cpu"
    assert "No importer registered for op: Gemm" in engine.metadata["fallback"]["reason"]
    np.testing.assert_allclose(engine.run(feeds)["output"], _cpu(model, feeds)["output"], rtol=1e-5, atol=1e-5)


def test_standin_build_failure(monkeypatch, small):
    model, _ = small
    trt_standin.install(monkeypatch, build_fails=True)
    with pytest.raises(trt_build.TensorRTBuildError, match="no implementation for layer 'conv1'"):
        pyengine.build(model, backend="tensorrt", progress=False)
    with pytest.warns(RuntimeWarning, match="could not build"):
        assert pyengine.build(model, progress=False).backend == "cpu"


def test_standin_build_call_sequence(monkeypatch, small, tmp_path, caplog):
    model, _ = small
    trt, _ = trt_standin.install(monkeypatch)
    caplog.set_level(logging.INFO, logger="pyengine.tensorrt")
    engine = pyengine.build(model, backend="tensorrt", precision="fp16", batch_range=(1, 4, 16), workspace=1 << 26,
                            cache_dir=str(tmp_path), builder_optimization_level=4, version_compatible=True,
                            hardware_compatibility_level="ampere_plus")
    names = [c[0] for c in trt.calls]
    assert names[:4] == ["Builder", "create_network", "OnnxParser", "parse"]
    assert names.index("build_serialized_network") > names.index("config.profiling_verbosity")
    assert ("create_network", 1 << 2) in trt.calls  # STRONGLY_TYPED by name, the stand-in's value 2
    assert ("set_memory_pool_limit", trt.MemoryPoolType.WORKSPACE, 1 << 26) in trt.calls
    assert ("set_shape", "input", (1, 3, 32, 32), (4, 3, 32, 32), (16, 3, 32, 32)) in trt.calls
    assert ("config.builder_optimization_level", 4) in trt.calls
    assert ("set_flag", trt.BuilderFlag.VERSION_COMPATIBLE) in trt.calls
    assert ("config.hardware_compatibility_level", trt.HardwareCompatibilityLevel.AMPERE_PLUS) in trt.calls
    assert ("config.profiling_verbosity", trt.ProfilingVerbosity.DETAILED) in trt.calls
    assert any(c[0] == "config.progress_monitor" for c in trt.calls)
    assert not any("FP16" in str(c) or "INT8" in str(c) for c in trt.calls), "precision must not be a builder flag"
    # The exact ONNX TensorRT parsed is pyengine.export's.
    parsed = next(c[1] for c in trt.calls if c[0] == "parse")
    assert parsed == len(pyengine.export(model, "fp16").SerializeToString())
    # TensorRT's log goes to Python logging.
    assert any("TensorRT: stand-in build starting" in r.getMessage() for r in caplog.records)
    # The timing cache file is keyed by GPU and version, written, and reused.
    t = engine.metadata["tensorrt"]
    assert t["timing_cache"]["path"].startswith(str(tmp_path)) and not t["timing_cache"]["reused"]
    assert "stand-in-gpu-sm86-trt10.13.0" in t["timing_cache"]["path"]
    trt.calls.clear()
    again = pyengine.build(model, backend="tensorrt", precision="fp16", cache_dir=str(tmp_path), progress=False)
    assert again.metadata["tensorrt"]["timing_cache"]["reused"]
    assert next(c for c in trt.calls if c[0] == "create_timing_cache")[1].endswith(b"+standin-timing")
    for key in ("version", "gpu_name", "compute_capability", "cuda_runtime_version", "profiles", "version_compatible",
                "hardware_compatibility_level", "builder_optimization_level", "workspace_bytes", "build_seconds"):
        assert key in t, key
    assert engine.metadata["source_model_sha256"] == pyengine.onnx_io.model_sha256(model)
    assert engine.metadata["precision"] == "fp16" and engine.metadata["inputs"][0]["shape"][0] == -1


def test_standin_flag_and_monitor_absent(monkeypatch, small):
    model, _ = small
    trt, _ = trt_standin.install(monkeypatch, strongly_typed=False, progress_monitor=False)
    pyengine.build(model, backend="tensorrt", timing_cache=False)
    assert ("create_network", 0) in trt.calls
    assert not any(c[0] in ("config.progress_monitor", "create_timing_cache") for c in trt.calls)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_standin_runtime_end_to_end(monkeypatch, small, tmp_path, precision):
    """The runtime's buffers, copies and save/load, on the stand-in (which
    executes the exported ONNX with onnxruntime)."""
    model, feeds = small
    _, fake = trt_standin.install(monkeypatch)
    opts = {"calibration_data": [zoo.make_input(model, 4, seed=_seed + 1)], "progress": False} \
        if precision == "int8" else {"progress": False}
    engine = pyengine.build(model, backend="tensorrt", precision=precision, batch_range=(1, 2, 8), **opts)
    ref = _cpu(model, feeds)["output"]
    got = engine.run(feeds)["output"]
    bound = {"fp32": 1e-5, "fp16": 1e-3, "int8": 0.1}[precision]
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) <= bound
    assert isinstance(engine(feeds["input"]), np.ndarray)
    path = tmp_path / "m.plan"
    engine.save(path)
    loaded = pyengine.load(path)
    assert isinstance(loaded, tensorrt.TensorRTEngine) and loaded.precision == precision
    np.testing.assert_array_equal(loaded.run(feeds)["output"], got)
    engine.save(tmp_path / "m.engine", raw=True)
    assert (tmp_path / "m.engine").read_bytes() == engine.serialize()


def test_standin_load_preflight_refuses_before_deserializing(monkeypatch, small, tmp_path):
    model, _ = small
    trt, _ = trt_standin.install(monkeypatch)
    pyengine.build(model, backend="tensorrt", progress=False).save(tmp_path / "m.plan")
    trt_other, _ = trt_standin.install(monkeypatch, cc=(9, 0), name=b"NVIDIA H100")
    with pytest.raises(PlanFormatError, match=r"compute capability 8\.6.*compute capability 9\.0"):
        pyengine.load(tmp_path / "m.plan")
    assert not any(c[0] in ("Runtime", "deserialize_cuda_engine") for c in trt_other.calls)
    trt_new, _ = trt_standin.install(monkeypatch, version="10.14.0")
    with pytest.raises(PlanFormatError, match="10.13.0.*10.14.0"):
        pyengine.load(tmp_path / "m.plan")
    assert trt_new.calls == []


def test_standin_dynamic_batch_reuses_buffers(monkeypatch, small):
    model, _ = small
    _, fake = trt_standin.install(monkeypatch)
    engine = pyengine.build(model, backend="tensorrt", batch_range=(1, 2, 8), progress=False)
    rng = np.random.default_rng(_seed)
    for batch in (4, 1, 3, 4, 2):
        x = rng.standard_normal((batch, 3, 32, 32), dtype=np.float32)
        got = engine(x)
        np.testing.assert_allclose(got, _cpu(model, {"input": x})["output"], rtol=1e-4, atol=1e-5)
        assert got.shape[0] == batch
    # Largest batch first: one device buffer per tensor, never reallocated.
    assert fake.counts["malloc"] == 2 and fake.counts["free"] == 0
    with pytest.raises(ShapeError, match=r"outside what the TensorRT engine was built for.*max \[8, 3, 32, 32\]"):
        engine(rng.standard_normal((9, 3, 32, 32), dtype=np.float32))
    x = rng.standard_normal((2, 3, 32, 32), dtype=np.float32)  # and it recovers
    np.testing.assert_allclose(engine(x), _cpu(model, {"input": x})["output"], rtol=1e-4, atol=1e-5)


def test_standin_cuda_graph_path(monkeypatch, small):
    model, _ = small
    _, fake = trt_standin.install(monkeypatch)
    engine = pyengine.build(model, backend="tensorrt", batch_range=(1, 2, 8), cuda_graph=True, progress=False)
    rng = np.random.default_rng(_seed)
    xs = {b: rng.standard_normal((b, 3, 32, 32), dtype=np.float32) for b in (2, 4)}
    refs = {b: _cpu(model, {"input": x})["output"] for b, x in xs.items()}
    for _ in range(3):
        for b in (2, 4):
            np.testing.assert_allclose(engine(xs[b]), refs[b], rtol=1e-4, atol=1e-5)
    # Batch 4 grows the buffers, dropping batch 2's graph: 3 captures in all,
    # then every later call replays a graph.
    assert fake.counts["graph_instantiate"] == 3
    assert fake.counts["graph_launch"] == 6 - 3


def test_standin_four_threads_share_one_engine(monkeypatch, small):
    model, _ = small
    trt_standin.install(monkeypatch)
    engine = pyengine.build(model, backend="tensorrt", batch_range=(1, 2, 8), progress=False)
    rng = np.random.default_rng(_seed)
    xs = [rng.standard_normal((1 + i % 3, 3, 32, 32), dtype=np.float32) for i in range(4)]
    refs = [_cpu(model, {"input": x})["output"] for x in xs]
    errors = []

    def worker(i):
        for _ in range(5):
            got = engine(xs[i])
            if got.shape != refs[i].shape or not np.allclose(got, refs[i], rtol=1e-4, atol=1e-5):
                errors.append(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_standin_device_inputs_and_outputs(monkeypatch, small):
    model, feeds = small
    _, fake = trt_standin.install(monkeypatch)
    engine = pyengine.build(model, backend="tensorrt", progress=False)
    ref = _cpu(model, feeds)["output"]
    out = engine.run(feeds, device_outputs=True)["output"]
    assert isinstance(out, trt_runtime.DeviceArray)
    cai = out.__cuda_array_interface__
    assert cai["shape"] == ref.shape and cai["typestr"] == "<f4" and cai["data"][0] == out.ptr
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-5)

    class FakeDeviceArray:  # what CuPy / torch.cuda expose
        def __init__(self, mem, shape):
            self.mem = mem
            self.__cuda_array_interface__ = {"shape": shape, "typestr": "<f4", "data": (mem.ptr, False),
                                             "version": 3, "strides": None, "stream": None}

    x = feeds["input"]
    mem = trt_runtime.DeviceMemory(x.nbytes)
    rt = trt_runtime.cudart()
    rt.cudaMemcpy(mem.ptr, x.ctypes.data, x.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice)
    h2d = fake.counts["h2d"]
    got = engine.run({"input": FakeDeviceArray(mem, x.shape)})["output"]
    assert fake.counts["h2d"] == h2d, "a device input was copied"
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    # A version-2 interface (no "stream" key) says nothing about ordering: the device is synchronized.
    v2 = FakeDeviceArray(mem, x.shape)
    del v2.__cuda_array_interface__["stream"]
    np.testing.assert_allclose(engine.run({"input": v2})["output"], ref, rtol=1e-4, atol=1e-5)
    assert fake.counts.get("device_sync") == 1
    with pytest.raises(InvalidArgumentError, match="float64"):
        bad = FakeDeviceArray(mem, x.shape)
        bad.__cuda_array_interface__["typestr"] = "<f8"
        engine.run({"input": bad})


def test_standin_profile_names_and_inspect(monkeypatch, small, tmp_path, capsys):
    model, feeds = small
    trt_standin.install(monkeypatch)
    engine = pyengine.build(model, backend="tensorrt", progress=False)
    layers = engine.profile(feeds, runs=2)
    onnx_names = {n.name for n in pyengine.export(model, "fp32").graph.node}
    assert layers and all(l["onnx_nodes"] and set(l["onnx_nodes"]) <= onnx_names for l in layers)
    assert any(len(l["onnx_nodes"]) == 2 for l in layers)  # a fused Conv + Relu
    engine.save(tmp_path / "m.plan")
    from pyengine import cli

    assert cli.main(["inspect", str(tmp_path / "m.plan")]) == 0
    out = capsys.readouterr().out
    assert "built for TensorRT 10.13.0 on Stand-in GPU" in out and "TensorRT layers" in out
    assert cli.main(["profile", str(tmp_path / "m.plan"), "--batch", "1,2", "--iterations", "3", "--warmup-ms", "0",
                     "--per-layer"]) == 0
    out = capsys.readouterr().out
    assert "pyengine-tensorrt" in out and "conv" in out.split("per layer")[1]
    onnx.save(model, tmp_path / "m.onnx")
    assert cli.main(["compare", str(tmp_path / "m.plan"), f"onnxruntime:{tmp_path / 'm.onnx'}", "--batch", "2"]) == 0
    assert "tensorrt/fp32" in capsys.readouterr().out


def test_standin_cli_build(monkeypatch, tmp_path, capsys):
    trt, _ = trt_standin.install(monkeypatch)
    model = zoo.build_model("flatten_chain")
    onnx.save(model, tmp_path / "m.onnx")
    from pyengine import cli

    rc = cli.main(["build", str(tmp_path / "m.onnx"), "--backend", "tensorrt", "--precision", "fp16",
                   "--batch-range", "1:8:32", "-o", str(tmp_path / "m.plan"), "--raw-engine", str(tmp_path / "m.engine")])
    assert rc == 0, capsys.readouterr().err
    meta, blob = tensorrt.read_plan(tmp_path / "m.plan")
    assert meta["tensorrt"]["profiles"] == [{"input": [[1, 1, 28, 28], [8, 1, 28, 28], [32, 1, 28, 28]]}]
    assert (tmp_path / "m.engine").read_bytes() == blob
    assert cli.main(["build", str(tmp_path / "m.onnx"), "--backend", "tensorrt", "--batch-range", "8:1:32",
                     "-o", str(tmp_path / "x.plan")]) == 1
    assert "MIN:OPT:MAX" in capsys.readouterr().err


def test_real_cuda_python_without_a_gpu_is_a_clear_reason():
    """With the real cuda-python installed but no GPU (CUDA's error 35), the
    GPU check says so, and CUDA errors become pyengine errors, not crashes."""
    pytest.importorskip("cuda.bindings.runtime")
    count, reason = trt_runtime.gpu_count()
    if count:
        pytest.skip("a GPU is present")
    assert "cudaGetDeviceCount" in reason
    with pytest.raises(pyengine.PyengineError, match="CUDA call cudaMalloc failed"):
        trt_runtime.DeviceMemory(1024)


def test_compare_onnxruntime_gpu_needs_its_providers(tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    if {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(ort.get_available_providers()):
        pytest.skip("onnxruntime-gpu is installed")
    onnx.save(zoo.build_model("repvgg_block"), tmp_path / "m.onnx")
    from pyengine import cli

    assert cli.main(["profile", str(tmp_path / "m.onnx"), "--backend", "cpu", "--compare", "onnxruntime-gpu",
                     "--iterations", "1"]) == 1
    assert "pip install onnxruntime-gpu" in capsys.readouterr().err


def test_standin_any_tensorrt_side_failure_falls_back_under_auto(monkeypatch, small):
    model, feeds = small
    trt, _ = trt_standin.install(monkeypatch)
    monkeypatch.setattr(trt.Runtime, "deserialize_cuda_engine", lambda self, data: None)
    with pytest.raises(PlanFormatError, match="could not deserialize"):
        pyengine.build(model, backend="tensorrt", progress=False)
    with pytest.warns(RuntimeWarning, match="could not deserialize"):
        engine = pyengine.build(model, progress=False)
    assert engine.backend == "cpu" and "PlanFormatError" in engine.metadata["fallback"]["reason"]
    # ...but a bad option is the caller's error under auto too, not a reason to fall back.
    with pytest.raises(InvalidArgumentError, match="builder_optimization_level"):
        pyengine.build(model, builder_optimization_level=7)
