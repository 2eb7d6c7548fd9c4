"""What the TensorRT backend hands to TensorRT, checked on the CPU.

Every zoo model is exported to FP32, FP16 and INT8 ONNX; each export must
pass onnx.checker and check_tensorrt, run in onnxruntime's CPU provider, and
match pyengine's FP32 CPU engine on fresh random inputs:
  FP32 relative L2 <= 1e-5, FP16 relative L2 <= 1e-3, INT8 (random weights and
  calibration data, so only a sanity bound; observed 0.991-0.9999) cosine >= 0.98.
The INT8 accuracy bound on real data (top-1 agreement >= 99%) is checked on a
small residual CNN trained on scikit-learn's digits with PyTorch (skipped
without torch / scikit-learn).

No TensorRT runs here: these tests check the ONNX that TensorRT would parse.
"""

import io
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyengine
from pyengine import zoo
from pyengine.errors import InvalidArgumentError, InvalidModelError

ort = pytest.importorskip("onnxruntime")

ZOO = sorted(zoo.ZOO)
_seed = np.random.SeedSequence().entropy % (2**31)  # fresh inputs each run; printed on failure


def _rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _ort_run(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))


def _standard_only(model):
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node), "custom-domain nodes in the export"
    assert all(o.domain in ("", "ai.onnx") for o in model.opset_import)


@pytest.fixture(scope="module")
def cpu_reference():
    cache = {}

    def get(name):
        if name not in cache:
            model = zoo.build_model(name)
            feeds = zoo.make_input(model, 2, seed=_seed)
            cache[name] = (model, feeds, pyengine.build(model, backend="cpu").run(feeds))
        return cache[name]

    return get


@pytest.mark.parametrize("name", ZOO)
def test_zoo_fp32_fp16_exports(name, cpu_reference):
    model, feeds, ref = cpu_reference(name)
    for precision, bound in (("fp32", 1e-5), ("fp16", 1e-3)):
        exported = pyengine.export(model, precision)
        onnx.checker.check_model(exported, full_check=True)
        assert pyengine.check_tensorrt(exported) == []
        _standard_only(exported)
        if precision == "fp16":
            inits = {t.name: t.data_type for t in exported.graph.initializer}
            resize_scales = {n.input[2] for n in exported.graph.node if n.op_type == "Resize" and len(n.input) > 2}
            floats = [k for k, t in inits.items() if t == TensorProto.FLOAT and k not in resize_scales]
            assert floats == [], f"float32 initializers left in the FP16 model: {floats[:5]}"
            assert any(t == TensorProto.FLOAT16 for t in inits.values())
            assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in exported.graph.input)
            assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in exported.graph.output)
            assert sum(n.op_type == "Cast" for n in exported.graph.node) >= 2
        got = _ort_run(exported, feeds)
        for k in ref:
            err = _rel_l2(got[k], ref[k])
            assert err <= bound, f"{name} {precision} output '{k}': relative L2 {err:.2e} > {bound} (seed {_seed})"


@pytest.mark.parametrize("name", ZOO)
def test_zoo_int8_exports(name, cpu_reference):
    model, feeds, ref = cpu_reference(name)
    rng = np.random.default_rng(_seed + 1)
    calib = [{k: rng.standard_normal(v.shape, dtype=np.float32) for k, v in zoo.make_input(model, 4).items()}
             for _ in range(2)]
    exported = pyengine.export(model, "int8", calibration_data=calib, progress=False)
    onnx.checker.check_model(exported, full_check=True)
    assert pyengine.check_tensorrt(exported) == []
    _standard_only(exported)
    ops = [n.op_type for n in exported.graph.node]
    assert ops.count("QuantizeLinear") >= 1 and ops.count("DequantizeLinear") >= 2
    props = {p.key: p.value for p in exported.metadata_props}
    assert props["pyengine.precision"] == "int8"
    got = _ort_run(exported, feeds)
    for k in ref:
        a, b = got[k].ravel().astype(np.float64), ref[k].ravel().astype(np.float64)
        cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
        assert cos >= 0.98, f"{name} int8 output '{k}': cosine {cos:.4f} vs FP32 (seed {_seed})"


def test_fp16_io_dtype_and_keep_fp32():
    model = zoo.build_model("repvgg_block")
    feeds = zoo.make_input(model, 2, seed=_seed)
    ref = pyengine.build(model, backend="cpu").run(feeds)
    half_io = pyengine.export(model, "fp16", io_dtype="fp16")
    onnx.checker.check_model(half_io, full_check=True)
    assert half_io.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert half_io.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    got = _ort_run(half_io, {k: v.astype(np.float16) for k, v in feeds.items()})
    assert got["output"].dtype == np.float16
    assert _rel_l2(got["output"], ref["output"]) <= 2e-3

    fp32_model = pyengine.export(model, "fp32")
    first_conv = next(n for n in fp32_model.graph.node if n.op_type == "Conv")
    kept = pyengine.export(model, "fp16", keep_fp32=[first_conv.name])
    onnx.checker.check_model(kept, full_check=True)
    assert pyengine.check_tensorrt(kept) == []
    node = next(n for n in kept.graph.node if n.name == first_conv.name)
    inits = {t.name: t.data_type for t in kept.graph.initializer}
    assert inits[node.input[1]] == TensorProto.FLOAT  # its weights stay float32
    producers = {o: n for n in kept.graph.node for o in n.output}
    assert producers[node.input[0]].op_type == "Cast"  # fp16 activation cast up
    consumers = [n for n in kept.graph.node if node.output[0] in n.input]
    assert [c.op_type for c in consumers] == ["Cast"]  # and back down
    assert _rel_l2(_ort_run(kept, feeds)["output"], ref["output"]) <= 1e-3
    with pytest.raises(InvalidArgumentError, match="keep_fp32 names unknown nodes"):
        pyengine.export(model, "fp16", keep_fp32=["no_such_node"])


def test_export_arguments():
    model = zoo.build_model("repvgg_block")
    with pytest.raises(InvalidArgumentError, match="precision"):
        pyengine.export(model, "bf16")
    with pytest.raises(InvalidArgumentError, match="io_dtype"):
        pyengine.export(model, "fp16", io_dtype="int8")
    with pytest.raises(InvalidArgumentError, match="precision='int8'"):
        pyengine.export(model, "fp32", calibration_data=[zoo.make_input(model, 1)])
    with pytest.raises(InvalidArgumentError, match="unexpected export options"):
        pyengine.export(model, "fp32", batch_size_typo=3)
    with pytest.raises(pyengine.CalibrationError, match="calibration data"):
        pyengine.export(model, "int8")


def _prequantized(zero_point=0, zp_type=TensorProto.INT8):
    """A small model already carrying Q/DQ (as ModelOpt or QAT export it)."""
    rng = np.random.default_rng(_seed)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.2
    sw = (np.abs(w).reshape(4, -1).max(1) / 127).astype(np.float32)
    wq = np.clip(np.round(w / sw[:, None, None, None]), -127, 127).astype(np.int8)
    zp_dtype = helper.tensor_dtype_to_np_dtype(zp_type)
    inits = [numpy_helper.from_array(wq, "w_q"), numpy_helper.from_array(sw, "w_scale"),
             numpy_helper.from_array(np.zeros(4, np.int8), "w_zp"),
             numpy_helper.from_array(np.float32(0.05), "x_scale"),
             numpy_helper.from_array(np.array(zero_point, zp_dtype), "x_zp")]
    nodes = [helper.make_node("QuantizeLinear", ["input", "x_scale", "x_zp"], ["xq"], name="q_input"),
             helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xdq"], name="dq_input"),
             helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="dq_w", axis=0),
             helper.make_node("Conv", ["xdq", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["output"], name="relu")]
    g = helper.make_graph(nodes, "preq", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 4, 8, 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_int8_export_takes_prequantized_models():
    model = _prequantized()
    out = pyengine.export(model, "int8")
    assert [n.op_type for n in out.graph.node] == [n.op_type for n in model.graph.node]
    with pytest.raises(InvalidArgumentError, match="already quantized"):
        pyengine.export(model, "int8", calibration_data=[np.zeros((1, 3, 8, 8), np.float32)])
    with pytest.raises(InvalidModelError, match=r"zero_point.*q_input|q_input.*not 0"):
        pyengine.export(_prequantized(zero_point=3), "int8")
    with pytest.raises(InvalidArgumentError, match="quantized"):
        pyengine.export(model, "fp16")


# --------------------------------------------------------------------------
# INT8 on real data: top-1 agreement with FP32 >= 99%
# --------------------------------------------------------------------------

@pytest.mark.torch
def test_int8_export_top1_agreement_on_digits():
    torch = pytest.importorskip("torch")
    pytest.importorskip("sklearn.datasets")
    import torch.nn.functional as F

    from test_int8_accuracy import _digits, _net

    x, y, train, test = _digits()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        net = _net()
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        for epoch in range(5):
            net.train()
            order = torch.from_numpy(np.random.default_rng(epoch).permutation(train))
            for i in range(0, len(order), 64):
                b = order[i:i + 64]
                loss = F.cross_entropy(net(xt[b]), yt[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval()
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, xt[:1], buf, dynamo=False, opset_version=17, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    finally:
        torch.set_num_threads(threads)
    model = onnx.load_from_string(buf.getvalue())
    calib = x[train[:128]]
    exported = pyengine.export(model, "int8", calibration_data=calib, calibration_method="entropy", progress=False)
    assert pyengine.check_tensorrt(exported) == []
    held_out = x[test]
    fp32 = pyengine.build(model, backend="cpu").run({"input": held_out})["logits"]
    int8 = _ort_run(exported, {"input": held_out})["logits"]
    agreement = float(np.mean(fp32.argmax(1) == int8.argmax(1)))
    accuracy = float(np.mean(fp32.argmax(1) == y[test]))
    assert accuracy > 0.9, f"the FP32 network did not train (accuracy {accuracy:.3f})"
    print(f"digits: FP32 accuracy {accuracy:.4f}, INT8 top-1 agreement {agreement:.4f}")
    assert agreement >= 0.99, f"INT8 top-1 agreement with FP32 {agreement:.4f} < 0.99 on {len(test)} digits"
    # FP16 on a trained network (larger activations than the zoo's random
    # ones): onnxruntime's FP16 CPU arithmetic lands near 2e-3 relative L2.
    fp16 = _ort_run(pyengine.export(model, "fp16"), {"input": held_out})["logits"]
    assert _rel_l2(fp16, fp32) <= 5e-3
    assert float(np.mean(fp16.argmax(1) == fp32.argmax(1))) >= 0.995
