"""INT8 accuracy on real data: a small residual CNN trained on scikit-learn's
digits (8x8 images upsampled to 16x16) with PyTorch inside the test, exported
as real exports are (TorchScript exporter, opset 17, BatchNorm kept unfused,
no constant folding, so BN parameters shared by the exporter arrive through
Identity nodes), then quantized with several calibration methods.

Budget: INT8 top-1 accuracy within 0.5 points of FP32 on the held-out 40%
(719 images), measured with onnxruntime on the Q/DQ model, and with pyengine's
own INT8 engine where this build can run it.

Needs: torch, scikit-learn, onnxruntime (skipped without them). ~15 s of CPU.
"""

import io
import warnings

import numpy as np
import onnx
import pytest

import pyengine

torch = pytest.importorskip("torch")
datasets = pytest.importorskip("sklearn.datasets")
ort = pytest.importorskip("onnxruntime")

from qdq_models import IMAGE_SIZE, digits as _digits  # noqa: E402  (the shared digits split)

pytestmark = pytest.mark.torch

MAX_DROP = 0.005  # half a point of top-1 accuracy


def _net():
    import torch.nn as nn
    import torch.nn.functional as F

    from realdata_models import BasicBlock as Block  # the same residual block as the real-data models

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
            self.layer1 = Block(8, 8, 1)
            self.layer2 = Block(8, 16, 2)
            self.layer3 = Block(16, 16, 1)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            x = self.layer3(self.layer2(self.layer1(self.stem(x))))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    return Net()


@pytest.fixture(scope="module")
def digits():
    return _digits()


@pytest.fixture(scope="module")
def exported(digits):
    """The trained network exported to ONNX, and its PyTorch test accuracy."""
    import torch.nn.functional as F

    x, y, train, test = digits
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic, and no spinning threads on a shared CI box
    try:
        torch.manual_seed(0)
        net = _net()
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        for epoch in range(8):
            net.train()
            order = torch.from_numpy(np.random.default_rng(epoch).permutation(train))
            for i in range(0, len(order), 64):
                batch = order[i:i + 64]
                loss = F.cross_entropy(net(xt[batch]), yt[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval()
        with torch.no_grad():
            torch_acc = float((net(xt[test]).argmax(1) == yt[test]).float().mean())
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, xt[:1], buf, dynamo=False, opset_version=17,
                              training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    finally:
        torch.set_num_threads(threads)
    return onnx.load_from_string(buf.getvalue()), torch_acc


def _accuracy_ort(model, x, y):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return float(np.mean(sess.run(None, {"input": x})[0].argmax(1) == y))


def test_export_keeps_real_world_pitfalls(exported, digits):
    model, torch_acc = exported
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("BatchNormalization") == 8 and ops.count("Conv") == 8  # BN not folded by the exporter
    # The two BN biases summed by the projection block receive equal gradients,
    # stay equal, and the exporter shares them through an Identity node.
    bn_inputs = {i for n in model.graph.node if n.op_type == "BatchNormalization" for i in n.input}
    assert any(n.op_type == "Identity" and n.output[0] in bn_inputs for n in model.graph.node)
    x, y, _, test = digits
    assert torch_acc >= 0.95
    assert abs(_accuracy_ort(model, x[test], y[test]) - torch_acc) <= 1.5 / len(test)  # at most one image


@pytest.mark.parametrize("method", ["entropy", "percentile", "mse"])
def test_int8_accuracy_within_half_a_point(exported, digits, method):
    model, _ = exported
    x, y, train, test = digits
    calib = x[train[:256]]
    fp32 = _accuracy_ort(model, x[test], y[test])
    qdq = pyengine.quantize(model, calibration_data=calib, calibration_method=method, batch_size=64,
                            progress=False)
    onnx.checker.check_model(qdq, full_check=True)
    ops = [n.op_type for n in qdq.graph.node]
    assert ops.count("BatchNormalization") == 0 and ops.count("Identity") == 0
    assert ops.count("QuantizeLinear") >= 9  # every conv input, the skips and the classifier
    int8 = _accuracy_ort(qdq, x[test], y[test])
    print(f"\n[int8 accuracy] {method}: FP32 {100 * fp32:.2f}%  INT8 (onnxruntime, Q/DQ) {100 * int8:.2f}%  "
          f"on {len(test)} held-out digits")
    assert fp32 >= 0.95
    assert int8 >= fp32 - MAX_DROP

    # pyengine's own INT8 engine, where this build has the kernels for it.
    try:
        engine = pyengine.build(model, precision="int8", backend="cpu", calibration_data=calib,
                                calibration_method=method, batch_size=64, validation_data=x[test],
                                progress=False)
    except pyengine.UnsupportedOperatorError:
        return
    pe_int8 = float(np.mean(engine(x[test]).argmax(1) == y[test]))
    print(f"[int8 accuracy] {method}: INT8 (pyengine) {100 * pe_int8:.2f}%")
    assert pe_int8 >= fp32 - MAX_DROP
    assert engine.accuracy_report["outputs"]["logits"]["top1_agreement"] >= 0.98
