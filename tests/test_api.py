"""The Python API end to end on tiny graphs: build, run, save/load, errors."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import pyengine


def _relu_model(shape=("batch", 4)):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g", [x], [y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_build_run_dynamic_batch():
    engine = pyengine.build(_relu_model())
    assert engine.inputs[0].name == "x" and engine.inputs[0].shape == (None, 4)
    assert engine.outputs[0].dtype == np.float32
    rng = np.random.default_rng()
    for batch in (1, 3, 7):
        x = rng.standard_normal((batch, 4)).astype(np.float32)
        np.testing.assert_array_equal(engine(x), np.maximum(x, 0))
        np.testing.assert_array_equal(engine.run({"x": x})["y"], np.maximum(x, 0))


def test_save_load_round_trip(tmp_path):
    engine = pyengine.build(_relu_model())
    path = tmp_path / "m.plan"
    engine.save(path)
    loaded = pyengine.load(path)
    x = np.random.default_rng().standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x), engine(x))
    assert loaded.metadata["source_model_sha256"] == engine.metadata["source_model_sha256"]
    assert loaded.metadata["precision"] == "fp32"


def test_wrong_dtype_and_shape():
    engine = pyengine.build(_relu_model())
    with pytest.raises(pyengine.DTypeError, match="input 'x' must be float32"):
        engine(np.zeros((1, 4), np.float64))
    with pytest.raises(pyengine.ShapeError, match=r"input 'x' must have shape \[\?,4\]"):
        engine(np.ones((1, 5), np.float32))
    with pytest.raises(pyengine.InvalidArgumentError, match="missing"):
        engine.run({"nope": np.ones((1, 4), np.float32)})


def test_unsupported_ops_are_listed_together():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="ok"),
             helper.make_node("Frobnicate", ["a"], ["b"], name="f1", domain="com.example"),
             helper.make_node("NonMaxSuppression", ["b"], ["y"], name="nms")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    with pytest.raises(pyengine.UnsupportedOperatorError) as err:
        pyengine.build(model)
    msg = str(err.value)
    assert "'f1'" in msg and "Frobnicate" in msg and "'nms'" in msg and "NonMaxSuppression" in msg


def test_missing_and_malformed_model_files(tmp_path):
    with pytest.raises(pyengine.InvalidModelError, match="does not exist"):
        pyengine.build(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not protobuf" * 10)
    with pytest.raises(pyengine.InvalidModelError, match="bad.onnx"):
        pyengine.build(bad)


def test_corrupt_truncated_and_foreign_plans(tmp_path):
    engine = pyengine.build(_relu_model())
    path = tmp_path / "m.plan"
    engine.save(path)
    data = path.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "flipped": data[:130] + bytes([data[130] ^ 0xFF]) + data[131:],  # inside the metadata
        "magic": b"NOTAPLAN" + data[8:],
        "version": data[:8] + (99).to_bytes(4, "little") + data[12:],
        "empty": b"",
    }
    for name, blob in cases.items():
        p = tmp_path / f"{name}.plan"
        p.write_bytes(blob)
        with pytest.raises(pyengine.PlanFormatError, match=str(p).replace(".", r"\.")):
            pyengine.load(p)
    with pytest.raises(pyengine.PlanFormatError, match="version 99"):
        pyengine.load(tmp_path / "version.plan")
    with pytest.raises(pyengine.PlanFormatError, match="does not exist"):
        pyengine.load(tmp_path / "nothing.plan")


def test_tensorrt_backend_unavailable_says_why():
    with pytest.raises(pyengine.BackendUnavailableError, match="TensorRT"):
        pyengine.build(_relu_model(), backend="tensorrt")


def test_bad_options():
    with pytest.raises(pyengine.InvalidArgumentError, match="precision"):
        pyengine.build(_relu_model(), precision="fp8")
    with pytest.raises(pyengine.InvalidArgumentError, match="backend"):
        pyengine.build(_relu_model(), backend="gpu")


def test_graph_text_and_onnx_round_trip():
    engine = pyengine.build(_relu_model())
    assert "Relu(%x)" in engine.graph_text()
    from pyengine import onnx_io

    graph, _ = onnx_io.graph_from_onnx(_relu_model())
    model = onnx_io.graph_to_onnx(graph)
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["Relu"]
