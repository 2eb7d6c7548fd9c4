"""A ResNet-50 exported by PyTorch, built by pyengine, against onnxruntime.

Both exporters are covered, because they emit different graphs for the same
model:

- ``dynamo``: the new exporter (``torch.onnx.export(..., dynamo=True)``, needs
  the ``onnxscript`` package), opset 18, weights in an external
  ``<name>.onnx.data`` file, dynamic batch through ``dynamic_shapes``. Its
  default optimizer folds BatchNorm into the convolutions.
- ``dynamo_unoptimized``: the same with ``optimize=False``: BatchNormalization
  nodes stay, and each bias-less conv gets a zero bias built at run time from
  Shape/Expand/CastLike, so this is also a test of the shape ops.
- ``torchscript``: the TorchScript exporter (``dynamo=False``), opset 17,
  constant folding off so the BatchNormalization nodes stay in the graph,
  dynamic batch through ``dynamic_axes``, weights inline.

The model has random weights and random BatchNorm running statistics (eval
mode). Each exported file is loaded by path (so pyengine and onnxruntime both
read external data from disk), built once and run at several batch sizes.
Tolerances: pyengine vs onnxruntime rtol = atol = 1e-4 and relative L2 error
< 1e-5; onnxruntime or pyengine vs PyTorch itself atol = 1e-3 (a sanity check
of the export, not of pyengine).
"""

import collections
import os
import shutil

import numpy as np
import onnx
import pytest

import pyengine

pytestmark = [pytest.mark.torch, pytest.mark.slow]

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from torch_models import resnet50, randomize_  # noqa: E402  (imports torch)

RTOL = 1e-4
ATOL = 1e-4
MAX_REL_L2 = 1e-5
TORCH_ATOL = 1e-3
TORCH_RTOL = 1e-4
# Small images keep each run short; the network is still the full ResNet-50.
IMAGE = (3, 64, 64)
# Run at 1, then 2, then 1 again: the engine must grow and shrink its buffers.
BATCHES = (1, 2, 1)
# ResNet-50 has 53 convolutions (49 in the blocks, 4 downsample, plus the stem:
# 1 + 3*16 + 4) and a BatchNorm after each.
NUM_CONVS = 53
NUM_CLASSES = 1000
# Opset each exporter is asked for.
OPSETS = {"dynamo": 18, "dynamo_unoptimized": 18, "torchscript": 17}
EXPORTERS = tuple(OPSETS)


@pytest.fixture(scope="module")
def resnet():
    return randomize_(resnet50(NUM_CLASSES), seed=0)


def export_dynamo(model, path, optimize=True, shape=IMAGE):
    """New exporter: opset 18, external data, dynamic batch. ``shape``: one
    sample's shape (no batch dim)."""
    pytest.importorskip("onnxscript")
    example = torch.randn(2, *shape)
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(model, (example,), path, dynamo=True, opset_version=OPSETS["dynamo"],
                      external_data=True, optimize=optimize, verbose=False,
                      input_names=["input"], output_names=["logits"],
                      dynamic_shapes=({0: batch},))


def export_torchscript(model, path, shape=IMAGE):
    """TorchScript exporter: opset 17, BatchNormalization kept, dynamic batch.
    ``shape``: one sample's shape (no batch dim)."""
    example = torch.randn(1, *shape)
    torch.onnx.export(model, (example,), path, dynamo=False, opset_version=OPSETS["torchscript"],
                      do_constant_folding=False, training=torch.onnx.TrainingMode.EVAL,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def export(model, path, exporter, shape=IMAGE):
    """Exports with "torchscript" or "dynamo" (as above), exporter warnings
    silenced; returns ``path``."""
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            export_torchscript(model, path, shape=shape)
        else:
            export_dynamo(model, path, shape=shape)
    return path


@pytest.fixture(scope="module", params=EXPORTERS)
def exported(request, resnet, tmp_path_factory):
    """(exporter name, path of the exported .onnx file); one export per module."""
    name = request.param
    path = str(tmp_path_factory.mktemp(name) / "resnet50.onnx")
    with torch.no_grad():
        if name == "torchscript":
            export_torchscript(resnet, path)
        else:
            export_dynamo(resnet, path, optimize=(name == "dynamo"))
    return name, path


def op_histogram(path):
    proto = onnx.load(path, load_external_data=False)
    return collections.Counter(n.op_type for n in proto.graph.node)


def draw_inputs(batches=BATCHES):
    """Fresh random images, one array per batch size, and the seed that drew them."""
    seed = int(np.random.SeedSequence().entropy % 2**32)
    rng = np.random.default_rng(seed)
    return seed, [rng.standard_normal((b, *IMAGE), dtype=np.float32) for b in batches]


def run_torch(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def ort_session(path):
    """An onnxruntime session that reads the file (and its external data) itself."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def rel_l2(actual, expected):
    expected = expected.astype(np.float64)
    return float(np.linalg.norm(actual.astype(np.float64) - expected) / np.linalg.norm(expected))


def test_export_structure(exported):
    """The exported file is what the test claims to test: opset, dynamic batch,
    full ResNet-50, BatchNorm kept where asked for, external data where asked for."""
    name, path = exported
    proto = onnx.load(path, load_external_data=False)
    opset = next(i.version for i in proto.opset_import if i.domain in ("", "ai.onnx"))
    assert opset == OPSETS[name]
    ops = op_histogram(path)
    assert ops["Conv"] == NUM_CONVS, ops
    assert ops["Relu"] == 49 and ops["Add"] >= 16 and ops["MaxPool"] == 1, ops
    if name in ("torchscript", "dynamo_unoptimized"):
        assert ops["BatchNormalization"] == NUM_CONVS, ops
    assert [i.name for i in proto.graph.input] == ["input"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value"), "batch axis is not dynamic"
    assert [d.dim_value for d in dims[1:]] == list(IMAGE)
    out_dims = proto.graph.output[0].type.tensor_type.shape.dim
    assert out_dims[0].dim_param and out_dims[1].dim_value == NUM_CLASSES

    external = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if name.startswith("dynamo"):
        data_file = path + ".data"
        assert os.path.isfile(data_file), f"no external data file next to {path}"
        # ResNet-50 has about 25.6 million parameters, all float32.
        assert os.path.getsize(data_file) > 90e6
        assert os.path.getsize(path) < 5e6, "weights were written inline too"
        locations = {e.value for t in external for e in t.external_data if e.key == "location"}
        assert locations == {os.path.basename(data_file)}
        assert any(t.name == "conv1.weight" for t in external)
    else:
        assert not external


def test_onnxruntime_matches_torch(exported, resnet):
    """The export itself is right: onnxruntime on the file reproduces PyTorch."""
    name, path = exported
    session = ort_session(path)
    seed, inputs = draw_inputs()
    for x in inputs:
        (out,) = session.run(None, {"input": x})
        ref = run_torch(resnet, x)
        assert out.shape == (x.shape[0], NUM_CLASSES)
        np.testing.assert_allclose(out, ref, rtol=TORCH_RTOL, atol=TORCH_ATOL,
                                   err_msg=f"{name}, batch {x.shape[0]}, seed {seed}")


@pytest.mark.parametrize("exported", [
    "dynamo",
    "dynamo_unoptimized",  # CastLike, Expand-built biases, BatchNormalization kept
    "torchscript",
], indirect=True)
def test_pyengine_matches_onnxruntime(exported, resnet):
    """One engine built from the path runs every batch size and matches
    onnxruntime (tight) and PyTorch (loose)."""
    name, path = exported
    engine = pyengine.build(path, backend="cpu")
    assert [s.name for s in engine.inputs] == ["input"]
    assert [s.name for s in engine.outputs] == ["logits"]
    session = ort_session(path)
    seed, inputs = draw_inputs()
    for x in inputs:
        where = f"{name}, batch {x.shape[0]}, seed {seed}"
        out = engine.run({"input": x})["logits"]
        (ref,) = session.run(None, {"input": x})
        assert isinstance(out, np.ndarray) and out.dtype == np.float32, where
        assert out.shape == ref.shape == (x.shape[0], NUM_CLASSES), (where, out.shape)
        np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL, err_msg=where)
        err = rel_l2(out, ref)
        assert err < MAX_REL_L2, f"{where}: relative L2 error {err:.3g} vs onnxruntime"
        np.testing.assert_allclose(out, run_torch(resnet, x), rtol=TORCH_RTOL, atol=TORCH_ATOL,
                                   err_msg=f"{where} (vs PyTorch)")


@pytest.mark.parametrize("exported", ["dynamo"], indirect=True)
def test_missing_external_data_is_a_clear_error(exported, tmp_path):
    """An .onnx whose .data file was not copied along fails with InvalidModelError
    naming the file, not with a crash or a protobuf error."""
    _, path = exported
    lonely = tmp_path / "resnet50.onnx"
    shutil.copy(path, lonely)
    with pytest.raises(pyengine.InvalidModelError, match="resnet50.onnx"):
        pyengine.build(str(lonely), backend="cpu")
