"""``int8_activations="asymmetric"``: pyengine's own calibration with zero
points on the tensors that are non-negative by construction (a CPU option;
TensorRT takes symmetric int8 only).

Oracles: the Q/DQ ONNX that ``pyengine.quantize`` writes with the option,
run by onnxruntime without graph rewrites (the reference semantics): every
quantized tensor within one int8 step of it, layer by layer
(qdq_models.per_layer_steps, as for every Q/DQ source). Structure: the
non-negative tensors (and only those) get scale amax / 255 and zero point
-128; the int8 engine lowers them with x_zero_point -128. The accuracy gain
on trained networks is measured in test_torch_families.py.
"""

import warnings

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import pyengine
from pyengine import zoo
from pyengine.errors import InvalidArgumentError

import qdq_models as qm


@pytest.fixture(scope="module")
def model_and_data():
    model = zoo.build_model("resnet18", image_size=64)
    name = model.graph.input[0].name
    calib = [zoo.make_input(model, 8, seed=i)[name] for i in range(3)]
    return model, name, calib


def _quantize(model, calib, mode):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pyengine.quantize(model, calibration_data=calib, progress=False, int8_activations=mode)


def test_only_nonnegative_tensors_get_zero_points(model_and_data):
    model, _, calib = model_and_data
    q = _quantize(model, calib, "asymmetric")
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    producer = {o: n for n in q.graph.node for o in n.output}
    asym = sym = 0
    for n in q.graph.node:
        if n.op_type != "QuantizeLinear" or n.input[0] not in producer:
            continue
        zp = int(inits[n.input[2]])
        src = producer[n.input[0]].op_type
        if zp == -128:
            asym += 1
            assert src in ("Relu", "MaxPool", "GlobalAveragePool", "Clip", "Sigmoid", "AveragePool"), (n.name, src)
        else:
            sym += 1
            assert zp == 0 and src not in ("Relu",), (n.name, src, zp)
    assert asym >= 10 and sym >= 1
    assert _quantize(model, calib, "symmetric") is not None


def test_asymmetric_engine_matches_its_qdq_model(model_and_data, tmp_path):
    """The int8 engine runs the asymmetric Q/DQ model's tensors within one
    step of onnxruntime's reference, layer by layer, and lowers every conv
    with the zero point; it survives a plan round trip."""
    model, name, calib = model_and_data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = pyengine.build(model, precision="int8", calibration_data=calib, report=False, progress=False,
                                int8_activations="asymmetric")
    info = engine.metadata["int8"]
    assert info["activations"] == "asymmetric" and info["asymmetric_tensors"] >= 10
    assert info["float_layers"] == []
    assert engine.graph_text().count("x_zero_point=-128") >= 10
    x = zoo.make_input(model, 4, seed=7)[name]
    q = _quantize(model, calib, "asymmetric")
    for t, (most, share, _) in qm.per_layer_steps(q, {name: x}, pyengine.build).items():
        assert most <= 1 and share <= 0.01, (t, most, share)
    y = engine(x)
    path = tmp_path / "asym.plan"
    engine.save(path)
    np.testing.assert_array_equal(pyengine.load(path)(x), y)


def test_asymmetric_is_refused_for_tensorrt_and_checked(model_and_data):
    model, _, calib = model_and_data
    with pytest.raises(InvalidArgumentError, match="TensorRT takes symmetric"):
        pyengine.build(model, backend="tensorrt", precision="int8", calibration_data=calib,
                       int8_activations="asymmetric")
    with pytest.raises(InvalidArgumentError, match="int8_activations must be one of"):
        pyengine.build(model, backend="cpu", precision="int8", calibration_data=calib, int8_activations="u8")
    problems = pyengine.check_tensorrt(_quantize(model, calib, "asymmetric"))
    assert problems and any("zero point" in str(p) for p in problems), problems
    engine = pyengine.build(model, backend="auto", precision="int8", calibration_data=calib, report=False,
                            progress=False, int8_activations="asymmetric")
    assert engine.backend == "cpu" and "asymmetric" in engine.metadata["fallback"]["reason"]
