#!/usr/bin/env python3
"""pyengine's int8 build of pre-quantized Q/DQ models vs onnxruntime running
the same files, on real data (scikit-learn digits; the same models as
tests/test_qdq_models.py): top-1 agreement, accuracy, and int8 steps of
difference per quantized activation, per layer (each layer fed onnxruntime's
own int8 inputs) and through the whole chain.

    python tools/qdq_agreement.py        # ModelOpt rows need PYENGINE_MODELOPT_PYTHON
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import onnx

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import pyengine  # noqa: E402


def main() -> int:
    import qdq_models as qm

    d = tempfile.mkdtemp(prefix="qdq_agreement_")
    x, y, train, test = qm.digits()
    net = qm.train(x, y, train)
    fpath = os.path.join(d, "float.onnx")
    onnx.save(qm.export(net, x), fpath)
    calib = x[train[:256]]
    fp32_acc = float(np.mean(qm.ort_session(onnx.load(fpath)).run(None, {"input": x[test]})[0].argmax(1) == y[test]))
    models = {
        "onnxruntime s8 (symmetric)": qm.ort_quantize(fpath, calib, os.path.join(d, "s8.onnx"), True),
        "onnxruntime u8 (asymmetric)": qm.ort_quantize(fpath, calib, os.path.join(d, "u8.onnx"), False),
        "pytorch fake-quant": qm.fake_quant_export(net, calib),
    }
    py, why = qm.modelopt_python()
    if py:
        models["modelopt fp16 (default)"] = qm.modelopt_quantize(py, fpath, calib, os.path.join(d, "mo16.onnx"))
        models["modelopt fp32"] = qm.modelopt_quantize(py, fpath, calib, os.path.join(d, "mo32.onnx"), "fp32")
    else:
        print(f"(ModelOpt rows skipped: {why})")
    print(f"digits, {len(x)} images ({len(test)} held out); float model top-1 {100 * fp32_acc:.2f}% (onnxruntime)")
    print(f"| Q/DQ source | int8 layers | top-1 agreement vs ORT | top-1 (ORT / pyengine) | "
          f"per-layer max steps (share) | chained max steps (share) |")
    print("|---|---|---|---|---|---|")
    for name, m in models.items():
        e = pyengine.build(m)
        ref = qm.ort_session(m).run(None, {"input": x})[0]
        got = e(x)
        agree = float(np.mean(ref.argmax(1) == got.argmax(1)))
        acc_ort = float(np.mean(ref[test].argmax(1) == y[test]))
        acc_pe = float(np.mean(got[test].argmax(1) == y[test]))
        feeds = {"input": x[:256]}
        layers = qm.per_layer_steps(m, feeds, pyengine.build)
        ls = max(v[0] for v in layers.values())
        lsh = max(v[1] for v in layers.values())
        ch = qm.chained_steps(m, feeds, pyengine.build)
        cs = max(v[0] for v in ch.values())
        csh = max(v[1] for v in ch.values())
        int8 = e.metadata["int8"]["int8_layers"]
        kernels = ", ".join(f"{v} {k}" for k, v in int8.items()) or f"none ({len(e.metadata['int8']['float_layers'])} float)"
        print(f"| {name} | {kernels} | {100 * agree:.2f}% | {100 * acc_ort:.2f}% / {100 * acc_pe:.2f}% | "
              f"{ls} ({100 * lsh:.2f}%) | {cs} ({100 * csh:.2f}%) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
