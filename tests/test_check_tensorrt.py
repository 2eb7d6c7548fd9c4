"""pyengine.check_tensorrt: each of TensorRT's documented rules, broken once
in a seeded bad model, is reported with the rule and the node at fault; the
good model passes (TENSORRT.md: symmetric int8, weights per output channel,
activations per tensor, opset >= 13, parser-supported ops, no Q/DQ inside
Conv-BN-ReLU)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyengine
from pyengine.export import RULES

rng = np.random.default_rng()


def _model(*, x_zp=0, x_zp_type=TensorProto.INT8, x_scale=0.05, w_axis=0, w_scale=None, act_scale_per_channel=False,
           opset=17, extra_nodes=(), q_after_conv=False, drop_x_zp=False):
    """input -> Q/DQ -> Conv(DQ(W int8 per channel)) -> Relu -> output, with one rule broken on request."""
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    per_channel = (np.abs(w).reshape(4, -1).max(1) / 127).astype(np.float32)
    ws = per_channel if w_scale is None else np.asarray(w_scale, np.float32)
    wq = np.clip(np.round(w / per_channel[:, None, None, None]), -127, 127).astype(np.int8)
    xs = np.full(3, x_scale, np.float32) if act_scale_per_channel else np.float32(x_scale)
    zp_np = helper.tensor_dtype_to_np_dtype(x_zp_type)
    xzp = np.full(3, x_zp, zp_np) if act_scale_per_channel else np.array(x_zp, zp_np)
    inits = [numpy_helper.from_array(wq, "w_q"), numpy_helper.from_array(ws, "w_scale"),
             numpy_helper.from_array(np.zeros(ws.shape, np.int8), "w_zp"),
             numpy_helper.from_array(xs, "x_scale"), numpy_helper.from_array(xzp, "x_zp"),
             numpy_helper.from_array(np.float32(0.1), "c_scale"), numpy_helper.from_array(np.int8(0), "c_zp")]
    q_inputs = ["input", "x_scale"] + ([] if drop_x_zp else ["x_zp"])
    axis = {"axis": 1} if act_scale_per_channel else {}
    nodes = [helper.make_node("QuantizeLinear", q_inputs, ["xq"], name="q_input", **axis),
             helper.make_node("DequantizeLinear", ["xq"] + q_inputs[1:], ["xdq"], name="dq_input", **axis),
             helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="dq_weight", axis=w_axis),
             helper.make_node("Conv", ["xdq", "w"], ["c"], name="conv1", pads=[1, 1, 1, 1])]
    relu_in = "c"
    if q_after_conv:
        nodes += [helper.make_node("QuantizeLinear", ["c", "c_scale", "c_zp"], ["cq"], name="q_conv_out"),
                  helper.make_node("DequantizeLinear", ["cq", "c_scale", "c_zp"], ["cdq"], name="dq_conv_out")]
        relu_in = "cdq"
    nodes.append(helper.make_node("Relu", [relu_in], ["r"], name="relu1"))
    last = "r"
    for i, (op, domain) in enumerate(extra_nodes):
        nodes.append(helper.make_node(op, [last], [f"e{i}"], name=f"extra_{op.lower()}", domain=domain))
        last = f"e{i}"
    nodes.append(helper.make_node("Identity", [last], ["output"], name="out"))
    g = helper.make_graph(nodes, "seeded", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for _, d in extra_nodes if d]
    return helper.make_model(g, opset_imports=imports)


def _found(model):
    return [(v["rule"], v["node"]) for v in pyengine.check_tensorrt(model)]


def test_good_model_passes_and_runs():
    model = _model()
    onnx.checker.check_model(model)
    assert pyengine.check_tensorrt(model) == []
    ort = pytest.importorskip("onnxruntime")
    ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input": rng.standard_normal((1, 3, 8, 8), dtype=np.float32)})


@pytest.mark.parametrize("case, expected", [
    ({"x_zp": 5}, [("zero_point", "q_input"), ("zero_point", "dq_input")]),
    ({"x_zp_type": TensorProto.UINT8, "x_zp": 128},
     [("qdq_dtype", "q_input"), ("zero_point", "q_input"), ("qdq_dtype", "dq_input"), ("zero_point", "dq_input")]),
    ({"drop_x_zp": True}, [("qdq_dtype", "q_input")]),
    ({"x_scale": -0.5}, [("scale", "q_input"), ("scale", "dq_input")]),
    ({"x_scale": float("inf")}, [("scale", "q_input"), ("scale", "dq_input")]),
    ({"w_axis": 1, "w_scale": [0.01, 0.02, 0.03]}, [("weight_axis", "dq_weight")]),
    ({"act_scale_per_channel": True}, [("activation_per_tensor", "q_input"), ("activation_per_tensor", "dq_input")]),
    ({"opset": 12}, [("opset", "<model>")]),
    ({"extra_nodes": [("Unique", "")]}, [("unsupported_op", "extra_unique")]),
    ({"extra_nodes": [("FusedConv", "pyengine")]}, [("unsupported_op", "extra_fusedconv")]),
    ({"q_after_conv": True}, [("fusion", "q_conv_out")]),
])
def test_each_rule_is_caught(case, expected):
    found = _found(_model(**case))
    assert sorted(found) == sorted(expected)
    # Every violation message names its node, and the INT8 export refuses the model.
    for v in pyengine.check_tensorrt(_model(**case)):
        assert v["node"] in str(v) and v["rule"] in RULES
    if expected[0][0] == "opset":  # the export upgrades the opset itself
        assert pyengine.check_tensorrt(pyengine.export(_model(**case), "int8")) == []
        return
    with pytest.raises(pyengine.InvalidModelError, match=expected[0][0]):
        pyengine.export(_model(**case), "int8", check=True)


def test_several_violations_are_all_listed():
    model = _model(x_zp=1, q_after_conv=True, extra_nodes=[("Unique", "")])
    rules = {r for r, _ in _found(model)}
    assert {"zero_point", "fusion", "unsupported_op"} <= rules


def test_pyengine_quantize_output_passes():
    from pyengine import zoo

    model = zoo.build_model("se_resnet")
    calib = [zoo.make_input(model, 2, seed=int(rng.integers(1 << 30)))]
    assert pyengine.check_tensorrt(pyengine.quantize(model, calibration_data=calib, progress=False)) == []
    # ...while its custom-op form (optimize(custom_ops=True)) is refused.
    custom = pyengine.optimize(model, custom_ops=True)
    assert any(r == "unsupported_op" for r, _ in _found(custom))
