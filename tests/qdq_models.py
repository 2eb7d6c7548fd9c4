"""Pre-quantized Q/DQ models made by tools pyengine does not control, for
test_qdq_models.py (and tools/): a small residual CNN trained on
scikit-learn's digits (real data, bundled offline) with PyTorch, exported as
real exports are (BatchNorm kept unfused), then quantized by

  - onnxruntime's quantize_static (QDQ format, per-channel int8 weights,
    symmetric int8 or asymmetric uint8 activations), after quant_pre_process;
  - PyTorch fake-quant ops in the model (torch.fake_quantize_per_tensor_affine
    on activations, per-channel on weights), exported to Q/DQ;
  - NVIDIA ModelOpt's ONNX PTQ (run as a subprocess in its own venv, named by
    the environment variable PYENGINE_MODELOPT_PYTHON).

And the two measurements the tests assert on: per-layer int8 steps between
pyengine and onnxruntime (each Q/DQ segment fed the same int8 inputs), and
top-1 agreement on the whole data set.
"""

from __future__ import annotations

import io
import os
import subprocess
import warnings

import numpy as np
import onnx

IMAGE_SIZE = 16
MODELOPT_ENV = "PYENGINE_MODELOPT_PYTHON"


def digits():
    """(x [N,1,16,16] float32 normalized, labels, train indices, test indices)."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    x = F.interpolate(x, size=IMAGE_SIZE, mode="bilinear", align_corners=False)
    x = ((x - x.mean()) / x.std()).numpy()
    perm = np.random.default_rng(0).permutation(len(x))
    n_train = int(0.6 * len(x))
    return x, d.target.astype(np.int64), perm[:n_train], perm[n_train:]


def make_net():
    """A ResNet-ish CNN: stem, a residual block, MaxPool, a stride-2 block with
    a 1x1 projection, global average pool, Linear. With ``net.fq`` set to a
    {point: scale} dict it fake-quantizes (int8, symmetric) the network input,
    every conv input, the residual skips and the pool output, and every conv
    weight per output channel; ``net.observe`` (a dict) records |max| per
    point instead."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def conv(cin, cout, k, stride=1):
        return nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.bn0 = conv(1, 16, 3), nn.BatchNorm2d(16)
            self.c1, self.b1, self.c2, self.b2 = conv(16, 16, 3), nn.BatchNorm2d(16), conv(16, 16, 3), nn.BatchNorm2d(16)
            self.c3, self.b3 = conv(16, 32, 3, 2), nn.BatchNorm2d(32)
            self.c4, self.b4 = conv(32, 32, 3), nn.BatchNorm2d(32)
            self.cd, self.bd = conv(16, 32, 1, 2), nn.BatchNorm2d(32)
            self.fc = nn.Linear(32, 10)
            self.fq = None
            self.observe = None

        def q(self, x, point):
            if self.observe is not None:
                self.observe[point] = max(self.observe.get(point, 0.0), float(x.detach().abs().max()))
            if self.fq is None:
                return x
            return torch.fake_quantize_per_tensor_affine(x, float(self.fq[point]), 0, -128, 127)

        def cv(self, m, x):
            w = m.weight
            if self.fq is not None:
                s = (w.detach().abs().amax((1, 2, 3)) / 127).clamp(min=1e-8).float()
                w = torch.fake_quantize_per_channel_affine(w, s, torch.zeros(w.shape[0], dtype=torch.int32),
                                                           0, -128, 127)
            return F.conv2d(x, w, None, m.stride, m.padding)

        def forward(self, x):
            x = self.q(x, "input")
            x = F.relu(self.bn0(self.cv(self.stem, x)))
            x = self.q(x, "stem")
            h = self.q(F.relu(self.b1(self.cv(self.c1, x))), "h1")
            x = F.relu(self.b2(self.cv(self.c2, h)) + x)
            x = self.q(x, "block1")
            x = self.q(F.max_pool2d(x, 2), "pool")
            h = self.q(F.relu(self.b3(self.cv(self.c3, x))), "h2")
            x = F.relu(self.b4(self.cv(self.c4, h)) + self.bd(self.cv(self.cd, x)))
            x = F.adaptive_avg_pool2d(x, 1).flatten(1)
            return self.fc(x)

    return Net()


def train(x, y, train_idx, epochs=6, seed=0):
    """Trains make_net() on the given images (single-threaded: deterministic)."""
    import torch
    import torch.nn.functional as F

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        net = make_net()
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        for epoch in range(epochs):
            net.train()
            order = torch.from_numpy(np.random.default_rng(epoch).permutation(train_idx))
            for i in range(0, len(order), 64):
                batch = order[i:i + 64]
                loss = F.cross_entropy(net(xt[batch]), yt[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval()
    finally:
        torch.set_num_threads(threads)
    return net


def export(net, x, name="input") -> onnx.ModelProto:
    """TorchScript export, opset 17, BatchNorm unfused (as ModelOpt expects)."""
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.from_numpy(x[:1]), buf, dynamo=False, opset_version=17,
                          training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
                          input_names=[name], output_names=["logits"],
                          dynamic_axes={name: {0: "batch"}, "logits": {0: "batch"}})
    return onnx.load_from_string(buf.getvalue())


def fake_quant_export(net, calib) -> onnx.ModelProto:
    """The float net with fake-quant ops at the points make_net() names,
    scales = max|x| / 127 over ``calib``, exported to ONNX Q/DQ."""
    import torch

    net.observe = {}
    with torch.no_grad():
        net(torch.from_numpy(calib))
    net.fq = {k: v / 127.0 for k, v in net.observe.items()}
    net.observe = None
    try:
        return export(net, calib)
    finally:
        net.fq = None


def ort_quantize(float_path, calib, out_path, symmetric=True, name="input"):
    """onnxruntime quantize_static, QDQ format, per-channel symmetric int8
    weights; activations int8 symmetric or uint8 asymmetric."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = str(out_path) + ".pre.onnx"
    quant_pre_process(str(float_path), pre)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: calib[i:i + 32]} for i in range(0, len(calib), 32)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(pre, str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    extra_options={"WeightSymmetric": True, "ActivationSymmetric": symmetric})
    os.remove(pre)
    return onnx.load(str(out_path))


def modelopt_python():
    """The ModelOpt venv's python (PYENGINE_MODELOPT_PYTHON), or None with the reason."""
    py = os.environ.get(MODELOPT_ENV)
    if not py:
        return None, f"{MODELOPT_ENV} is not set (point it at a python with nvidia-modelopt installed)"
    if not os.path.isfile(py):
        return None, f"{MODELOPT_ENV}={py} does not exist"
    return py, ""


def modelopt_quantize(python, float_path, calib, out_path, high_precision_dtype=None, name="input"):
    """ModelOpt ONNX INT8 PTQ (entropy calibration, its default) on the CPU."""
    npz = str(out_path) + ".calib.npz"
    np.savez(npz, **{name: calib})
    cmd = [python, "-m", "modelopt.onnx.quantization", "--onnx_path", str(float_path), "--quantize_mode", "int8",
           "--calibration_data", npz, "--calibration_eps", "cpu", "--output_path", str(out_path)]
    if high_precision_dtype:
        cmd += ["--high_precision_dtype", high_precision_dtype]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="2")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    if r.returncode != 0 or not os.path.isfile(out_path):
        raise RuntimeError(f"ModelOpt failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return onnx.load(str(out_path))


# ---------------------------------------------------------------------------
# Measurements

def ort_session(model: onnx.ModelProto):
    import onnxruntime as ort

    # The reference is the Q/DQ model's own arithmetic: onnxruntime without
    # graph rewrites (its QDQ fusions round differently, and on float16 Q/DQ
    # models its optimized graph disagrees with its own unoptimized one).
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def activation_q_outputs(model: onnx.ModelProto) -> list:
    """Outputs of the QuantizeLinear nodes that quantize computed tensors
    (not weights)."""
    inits = {t.name for t in model.graph.initializer}
    consts = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.output[0] for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in inits and n.input[0] not in consts]


def with_outputs(model: onnx.ModelProto, names) -> onnx.ModelProto:
    """``model`` with the named tensors as extra graph outputs (typed by ONNX
    shape inference)."""
    m = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v for v in m.graph.value_info}
    known = {o.name for o in m.graph.output}
    for n in names:
        if n not in known:
            m.graph.output.append(types[n])
    return m


def per_layer_steps(model: onnx.ModelProto, feeds: dict, build) -> dict:
    """For every quantized activation T: the Q/DQ segment that computes it
    from the previous quantized tensors is cut out (onnx.utils.Extractor),
    fed onnxruntime's own int8 inputs, run by ``build(segment)`` and
    compared with onnxruntime's T. Returns {T: (max |steps|, share of
    elements that differ, engine)}: each layer's own error, not what earlier
    layers passed on."""
    from onnx.utils import Extractor

    qs = activation_q_outputs(model)
    full = with_outputs(model, qs)
    ref = dict(zip([o.name for o in full.graph.output], ort_session(full).run(None, feeds)))
    inputs = [i.name for i in model.graph.input]
    extractor = Extractor(onnx.shape_inference.infer_shapes(model))
    result = {}
    for t in qs:
        seg = extractor.extract_model([n for n in inputs + qs if n != t], [t])
        used = {i for n in seg.graph.node for i in n.input}
        keep = [onnx.ValueInfoProto.FromString(i.SerializeToString()) for i in seg.graph.input if i.name in used]
        del seg.graph.input[:]
        seg.graph.input.extend(keep)
        seg_inputs = [i.name for i in keep]
        engine = build(seg)
        got = engine.run({n: ref[n] if n in ref else feeds[n] for n in seg_inputs})[t]
        d = np.abs(got.astype(np.int32) - ref[t].astype(np.int32))
        result[t] = (int(d.max()), float(np.mean(d > 0)), engine)
    return result


def chained_steps(model: onnx.ModelProto, feeds: dict, engine_model_build) -> dict:
    """The whole model with every quantized activation as an extra output:
    {T: (max |steps|, share differing)} between pyengine and onnxruntime
    (differences here include what earlier layers passed on)."""
    qs = activation_q_outputs(model)
    full = with_outputs(model, qs)
    ref = ort_session(full).run(qs, feeds)
    got = engine_model_build(full).run(feeds)
    out = {}
    for t, r in zip(qs, ref):
        d = np.abs(got[t].astype(np.int32) - r.astype(np.int32))
        out[t] = (int(d.max()), float(np.mean(d > 0)))
    return out
