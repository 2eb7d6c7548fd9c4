"""`pyengine export-triton` / pyengine.integrations.triton: Triton model repositories.

Triton itself is not run here. What is checked:
* every generated config.pbtxt parses with the ModelConfig schema Triton
  publishes (tritonclient's model_config_pb2; tests skip without tritonclient),
  and each field agrees with the engine's inputs and outputs;
* the generated model.py runs under a STAND-IN of `triton_python_backend_utils`
  (StandinPbUtils below: NOT Triton's module, only the few calls model.py
  makes) on a batch of requests, compared with engine.run;
* the onnxruntime model's model.onnx runs in onnxruntime and matches pyengine;
* the TensorRT entry is made from a simulated, metadata-only TensorRT plan (a
  pyengine container with a random engine blob, as test_trt_backend.py does):
  the bare blob becomes model.plan; nothing about TensorRT itself is verified.
"""

import importlib.util
import sys
import types

import numpy as np
import onnx
import pytest

import pyengine
from pyengine import zoo
from pyengine.backends import tensorrt
from pyengine.errors import InvalidArgumentError, PlanFormatError
from pyengine.integrations import triton

_seed = np.random.SeedSequence().entropy % (2**31)


def _schema():
    pytest.importorskip("google.protobuf", reason="protobuf is needed to parse config.pbtxt")
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        pytest.skip("tritonclient is not installed (pip install 'tritonclient[grpc]'): "
                    "it ships Triton's ModelConfig schema")
    return model_config_pb2


def parse_config(text: str):
    from google.protobuf import text_format

    pb = _schema()
    return text_format.Parse(text, pb.ModelConfig()), pb


def check_config(cfg, pb, name, inputs, outputs, batching: bool):
    """Every input/output field of a parsed ModelConfig against (name, dtype, shape) specs."""
    assert cfg.name == name
    for got, specs in ((cfg.input, inputs), (cfg.output, outputs)):
        assert [t.name for t in got] == [s[0] for s in specs]
        for t, (n, dtype, shape) in zip(got, specs):
            assert pb.DataType.Name(t.data_type) == triton.TRITON_DTYPES[np.dtype(dtype).name], n
            dims = [-1 if d is None else int(d) for d in shape]
            if batching:
                assert dims[0] == -1, f"{n}: batching needs a dynamic batch axis"
                dims = dims[1:]
            assert list(t.dims) == dims, n


def _engine_specs(specs):
    return [(s.name, s.dtype, s.shape) for s in specs]


# --------------------------------------------------------------------------
# A stand-in for Triton's Python backend module (not Triton)
# --------------------------------------------------------------------------

class StandinPbUtils(types.ModuleType):
    """Stand-in for `triton_python_backend_utils`: Tensor, InferenceRequest,
    InferenceResponse, TritonError and get_input_tensor_by_name, as model.py
    uses them. It checks nothing about Triton itself."""

    def __init__(self):
        super().__init__("triton_python_backend_utils")

        class Tensor:
            def __init__(self, name, array):
                assert isinstance(array, np.ndarray), "pb_utils.Tensor takes a numpy array"
                self._name, self._array = name, array

            def name(self):
                return self._name

            def as_numpy(self):
                return self._array

        class InferenceRequest:
            def __init__(self, inputs):
                self._inputs = inputs

            def inputs(self):
                return self._inputs

        class TritonError:
            def __init__(self, message):
                self._message = message

            def message(self):
                return self._message

        class InferenceResponse:
            def __init__(self, output_tensors=None, error=None):
                self._outputs, self._error = output_tensors or [], error

            def output_tensors(self):
                return self._outputs

            def has_error(self):
                return self._error is not None

            def error(self):
                return self._error

        def get_input_tensor_by_name(request, name):
            for t in request.inputs():
                if t.name() == name:
                    return t
            return None

        self.Tensor, self.InferenceRequest, self.InferenceResponse = Tensor, InferenceRequest, InferenceResponse
        self.TritonError, self.get_input_tensor_by_name = TritonError, get_input_tensor_by_name


def load_model_py(monkeypatch, model_dir, config_text):
    """Imports model_dir/1/model.py with the stand-in and calls initialize() as Triton would."""
    from google.protobuf import json_format

    pb_utils = StandinPbUtils()
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb_utils)
    spec = importlib.util.spec_from_file_location("generated_triton_model", model_dir / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg, _ = parse_config(config_text)
    model = module.TritonPythonModel()
    # Triton passes the config as JSON (protobuf's JSON mapping) and the model folder.
    model.initialize({"model_config": json_format.MessageToJson(cfg, preserving_proto_field_name=True),
                      "model_repository": str(model_dir), "model_version": "1", "model_name": cfg.name})
    return model, pb_utils


def run_requests(model, pb_utils, engine, batches, rtol, atol):
    """One execute() with a request per batch size; each response against engine.run on its own input."""
    rng = np.random.default_rng(_seed)
    feeds = []
    for b in batches:
        feeds.append({s.name: rng.standard_normal((b,) + tuple(s.shape[1:])).astype(s.dtype) for s in engine.inputs})
    requests = [pb_utils.InferenceRequest([pb_utils.Tensor(n, a) for n, a in f.items()]) for f in feeds]
    responses = model.execute(requests)
    assert len(responses) == len(requests)
    for f, resp in zip(feeds, responses):
        assert not resp.has_error(), resp.error().message()
        got = {t.name(): t.as_numpy() for t in resp.output_tensors()}
        want = engine.run(f)
        assert list(got) == list(want)
        for n in want:
            assert got[n].shape == want[n].shape
            np.testing.assert_allclose(got[n], want[n], rtol=rtol, atol=atol, err_msg=f"{n} (seed {_seed})")
    return responses


@pytest.fixture(scope="module")
def rv(tmp_path_factory):
    d = tmp_path_factory.mktemp("triton")
    path = d / "repvgg.onnx"
    onnx.save(zoo.build_model("repvgg_block"), path)
    return path


@pytest.fixture(scope="module")
def qdq_path(rv, tmp_path_factory):
    model = onnx.load(rv)
    calib = [zoo.make_input(model, 2, seed=_seed + i) for i in range(4)]
    exported = pyengine.export(model, "int8", calibration_data=calib, progress=False)
    path = tmp_path_factory.mktemp("triton_qdq") / "repvgg_int8.onnx"
    onnx.save(exported, path)
    return path


# --------------------------------------------------------------------------
# CPU plan -> Python backend
# --------------------------------------------------------------------------

def test_cpu_plan_python_backend(rv, tmp_path, monkeypatch):
    _schema()
    engine = pyengine.build(rv, backend="cpu")
    plan = tmp_path / "rv.plan"
    engine.save(plan)
    result = triton.export_repository(plan, tmp_path / "repo", name="rv_cpu", max_batch=16, instances=2,
                                      num_threads=1)
    mdir = tmp_path / "repo" / "rv_cpu"
    assert result["kind"] == "python" and result["files"] == ["1/model.py", "1/pyengine.plan", "config.pbtxt"]
    text = (mdir / "config.pbtxt").read_text()
    assert text == result["config"]
    cfg, pb = parse_config(text)
    assert cfg.backend == "python" and not cfg.platform and cfg.max_batch_size == 16
    check_config(cfg, pb, "rv_cpu", _engine_specs(engine.inputs), _engine_specs(engine.outputs), batching=True)
    assert [(pb.ModelInstanceGroup.Kind.Name(g.kind), g.count) for g in cfg.instance_group] == [("KIND_CPU", 2)]
    assert cfg.HasField("dynamic_batching")
    assert cfg.parameters["num_threads"].string_value == "1"
    assert (mdir / "1" / "pyengine.plan").read_bytes() == plan.read_bytes()
    model, pb_utils = load_model_py(monkeypatch, mdir, text)
    assert model.engine.num_threads == 1
    # Three requests of batches 1, 3, 2 in one execute(): stacked, run once, split back.
    run_requests(model, pb_utils, engine, [1, 3, 2], rtol=1e-5, atol=1e-5)
    # A request without its input gets an error response, not an exception.
    bad = model.execute([pb_utils.InferenceRequest([])])
    assert bad[0].has_error() and "bad request" in bad[0].error().message()
    model.finalize()


def test_onnx_to_python_backend_and_cli(rv, tmp_path, monkeypatch, capsys):
    from pyengine import cli

    _schema()
    code = cli.main(["export-triton", str(rv), "--repo", str(tmp_path / "repo"), "--max-batch", "8"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "tritonserver --model-repository" in out and "(python)" in out
    mdir = tmp_path / "repo" / "repvgg"
    text = (mdir / "config.pbtxt").read_text()
    cfg, pb = parse_config(text)
    engine = pyengine.load(mdir / "1" / "pyengine.plan")
    check_config(cfg, pb, "repvgg", _engine_specs(engine.inputs), _engine_specs(engine.outputs), batching=True)
    assert cfg.max_batch_size == 8
    model, pb_utils = load_model_py(monkeypatch, mdir, text)
    run_requests(model, pb_utils, pyengine.build(rv, backend="cpu"), [2, 1], rtol=1e-5, atol=1e-5)
    # The folder exists now: refused without --force, replaced with it.
    assert cli.main(["export-triton", str(rv), "--repo", str(tmp_path / "repo"), "--max-batch", "8"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["export-triton", str(rv), "--repo", str(tmp_path / "repo"), "--max-batch", "0",
                     "--force"]) == 0
    cfg, _ = parse_config((mdir / "config.pbtxt").read_text())
    assert cfg.max_batch_size == 0 and list(cfg.input[0].dims) == [-1, 3, 32, 32]
    assert not cfg.HasField("dynamic_batching")


def test_onnx_to_onnxruntime_backend(rv, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    _schema()
    result = triton.export_repository(rv, tmp_path, name="rv_ort", onnxruntime=True)
    mdir = tmp_path / "rv_ort"
    assert result["kind"] == "onnxruntime" and result["files"] == ["1/model.onnx", "config.pbtxt"]
    cfg, pb = parse_config((mdir / "config.pbtxt").read_text())
    assert cfg.backend == "onnxruntime" and cfg.max_batch_size == 32
    engine = pyengine.build(rv, backend="cpu")
    check_config(cfg, pb, "rv_ort", _engine_specs(engine.inputs), _engine_specs(engine.outputs), batching=True)
    served = onnx.load(mdir / "1" / "model.onnx")
    onnx.checker.check_model(served)
    assert all(n.domain in ("", "ai.onnx") for n in served.graph.node), "non-standard ops in model.onnx"
    assert len(served.graph.node) < len(onnx.load(rv).graph.node), "model.onnx is not the optimized graph"
    x = np.random.default_rng(_seed).standard_normal((3, 3, 32, 32)).astype(np.float32)
    sess = ort.InferenceSession(str(mdir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"input": x})[0], engine.run({"input": x})["output"],
                               rtol=1e-4, atol=1e-4, err_msg=f"seed {_seed}")


# --------------------------------------------------------------------------
# Q/DQ (INT8) ONNX
# --------------------------------------------------------------------------

def test_qdq_onnx_onnxruntime_and_python_backends(qdq_path, tmp_path, monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    _schema()
    source = onnx.load(qdq_path)
    engine = pyengine.build(qdq_path, backend="cpu")
    assert engine.precision == "int8"
    # onnxruntime backend: the Q/DQ ONNX itself.
    result = triton.export_repository(qdq_path, tmp_path, name="rv_int8_ort", onnxruntime=True)
    mdir = tmp_path / "rv_int8_ort"
    served = onnx.load(mdir / "1" / "model.onnx")
    assert served.graph == source.graph, "the Q/DQ model was changed"
    assert "Q/DQ" in result["notes"][0]
    cfg, pb = parse_config((mdir / "config.pbtxt").read_text())
    assert cfg.backend == "onnxruntime"
    check_config(cfg, pb, "rv_int8_ort", _engine_specs(engine.inputs), _engine_specs(engine.outputs), batching=True)
    x = np.random.default_rng(_seed).standard_normal((2, 3, 32, 32)).astype(np.float32)
    sess = ort.InferenceSession(str(mdir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    ref, got = sess.run(None, {"input": x})[0], engine.run({"input": x})["output"]
    cos = float(np.sum(ref * got) / (np.linalg.norm(ref) * np.linalg.norm(got)))
    assert cos > 0.99, f"onnxruntime vs pyengine on the Q/DQ model: cosine {cos:.4f} (seed {_seed})"
    # Python backend: an INT8 pyengine plan.
    result = triton.export_repository(qdq_path, tmp_path, name="rv_int8", instances=1, num_threads=1)
    mdir = tmp_path / "rv_int8"
    text = (mdir / "config.pbtxt").read_text()
    cfg, pb = parse_config(text)
    check_config(cfg, pb, "rv_int8", _engine_specs(engine.inputs), _engine_specs(engine.outputs), batching=True)
    assert pyengine.load(mdir / "1" / "pyengine.plan").precision == "int8"
    model, pb_utils = load_model_py(monkeypatch, mdir, text)
    run_requests(model, pb_utils, engine, [2, 1, 1], rtol=0, atol=1e-5)


# --------------------------------------------------------------------------
# Simulated (metadata-only) TensorRT plan
# --------------------------------------------------------------------------

def _trt_meta(profile=((1, 3, 64, 64), (8, 3, 64, 64), (16, 3, 64, 64)), io="float16"):
    return {"backend": "tensorrt", "precision": "fp16", "source_model_name": "resnet18.onnx",
            "inputs": [{"name": "input", "dtype": io, "shape": [-1, 3, 64, 64]}],
            "outputs": [{"name": "logits", "dtype": io, "shape": [-1, 1000]},
                        {"name": "feat", "dtype": "float32", "shape": [-1, 512, 2, 2]}],
            "tensorrt": {"version": "10.13.0", "gpu_name": "NVIDIA A10", "compute_capability": "8.6",
                         "cuda_runtime_version": "12.8", "version_compatible": False,
                         "hardware_compatibility_level": "none",
                         "profiles": [{"input": [list(s) for s in profile]}] if profile else []}}


def test_simulated_tensorrt_plan(tmp_path):
    _schema()
    blob = np.random.default_rng(_seed).integers(0, 256, 50_001, dtype=np.uint8).tobytes()
    plan = tmp_path / "r18_trt.plan"
    meta = _trt_meta()
    tensorrt.write_plan(plan, meta, blob)
    result = triton.export_repository(plan, tmp_path / "repo", max_batch=32, instances=2)
    mdir = tmp_path / "repo" / "r18_trt"
    assert result["files"] == ["1/model.plan", "config.pbtxt"]
    assert (mdir / "1" / "model.plan").read_bytes() == blob, "model.plan is not the bare engine"
    cfg, pb = parse_config((mdir / "config.pbtxt").read_text())
    assert cfg.platform == "tensorrt_plan" and not cfg.backend
    # The profile allows batches 1..16 (opt 8): max_batch_size capped at 16, preferred [8, 16].
    assert cfg.max_batch_size == 16 and any("up to 16" in n for n in result["notes"])
    assert list(cfg.dynamic_batching.preferred_batch_size) == [8, 16]
    specs = [(s["name"], s["dtype"], s["shape"]) for s in meta["inputs"]], \
            [(s["name"], s["dtype"], s["shape"]) for s in meta["outputs"]]
    check_config(cfg, pb, "r18_trt", *specs, batching=True)
    assert pb.DataType.Name(cfg.input[0].data_type) == "TYPE_FP16"
    assert [(pb.ModelInstanceGroup.Kind.Name(g.kind), g.count) for g in cfg.instance_group] == [("KIND_GPU", 2)]
    # --max-batch below the profile's optimum: only that size is preferred.
    result = triton.export_repository(plan, tmp_path / "repo", max_batch=4, overwrite=True)
    cfg, _ = parse_config(result["config"])
    assert cfg.max_batch_size == 4 and list(cfg.dynamic_batching.preferred_batch_size) == [4]
    # --onnxruntime needs the ONNX model.
    with pytest.raises(InvalidArgumentError, match="needs the ONNX model"):
        triton.export_repository(plan, tmp_path / "repo2", onnxruntime=True)


def test_tensorrt_plan_fixed_shapes_and_bad_metadata(tmp_path):
    _schema()
    blob = b"\x01" * 1000
    meta = _trt_meta(profile=None, io="float32")
    for spec in meta["inputs"] + meta["outputs"]:
        spec["shape"][0] = 4
    tensorrt.write_plan(tmp_path / "fixed.plan", meta, blob)
    result = triton.export_repository(tmp_path / "fixed.plan", tmp_path / "repo")
    cfg, pb = parse_config(result["config"])
    assert cfg.max_batch_size == 0 and list(cfg.input[0].dims) == [4, 3, 64, 64]
    assert not cfg.HasField("dynamic_batching")
    # A dynamic batch axis with no profile, or no outputs listed: a clear PlanFormatError.
    meta = _trt_meta(profile=None)
    tensorrt.write_plan(tmp_path / "noprof.plan", meta, blob)
    with pytest.raises(PlanFormatError, match="no optimization profile"):
        triton.export_repository(tmp_path / "noprof.plan", tmp_path / "repo")
    meta = _trt_meta()
    meta["outputs"] = []
    tensorrt.write_plan(tmp_path / "noout.plan", meta, blob)
    with pytest.raises(PlanFormatError, match="lists no outputs"):
        triton.export_repository(tmp_path / "noout.plan", tmp_path / "repo")


def test_bad_arguments(rv, tmp_path):
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        triton.export_repository(tmp_path / "nope.onnx", tmp_path)
    with pytest.raises(InvalidArgumentError, match="instances"):
        triton.export_repository(rv, tmp_path, instances=0)
    with pytest.raises(InvalidArgumentError, match="max_batch"):
        triton.export_repository(rv, tmp_path, max_batch=-1)
    with pytest.raises(InvalidArgumentError, match="model name"):
        triton.export_repository(rv, tmp_path, name="../evil")
    with pytest.raises(InvalidArgumentError, match="no Triton equivalent"):
        triton.triton_dtype("complex64")


def test_config_quotes_names():
    text = triton.config_text('we"ird\\name', [("in put", "float32", [-1, 3])], [("o", "int64", [-1])],
                              backend="python", max_batch_size=2)
    cfg, _ = parse_config(text)
    assert cfg.name == 'we"ird\\name' and cfg.input[0].name == "in put"
    # A per-sample scalar output: dims [1] reshaped to [].
    assert list(cfg.output[0].dims) == [1] and cfg.output[0].HasField("reshape")
    assert cfg.output[0].data_type == _schema().TYPE_INT64


def test_cli_bad_files_are_one_line_errors(tmp_path, capsys):
    from pyengine import cli

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(np.random.default_rng(_seed).integers(0, 256, 300, dtype=np.uint8).tobytes())
    bad_plan = tmp_path / "bad.plan"
    bad_plan.write_bytes(b"PYENGPLN" + b"\x07" * 200)
    for path in (junk, bad_plan, tmp_path / "missing.plan"):
        assert cli.main(["export-triton", str(path), "--repo", str(tmp_path / "repo")]) == 1
        err = capsys.readouterr().err
        assert err.startswith("pyengine export-triton: error:") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir()), "a failed export left files"
