#!/usr/bin/env python3
"""pyengine's INT8 quantization side by side with NVIDIA ModelOpt's ONNX PTQ.

    python tools/compare_modelopt.py --modelopt-python /work/venv-modelopt/bin/python
    python tools/compare_modelopt.py --modelopt-python ... --model vgg_bn_textures \\
        --modelopt-args --calibration_method max --high_precision_dtype fp32

One float model (trained here, tests/realdata_models.py) is quantized on the
same 512 calibration images by

- pyengine: ``pyengine.quantize`` (Q/DQ ONNX) and ``pyengine.build(...,
  precision="int8")`` (pyengine's INT8 engine), default settings;
- ModelOpt, run as its command line in its own Python (ModelOpt pins its own
  onnx/onnxruntime, so it lives in a separate virtual environment; see
  TOOLS.md): ``python -m modelopt.onnx.quantization --onnx_path m.onnx
  --quantize_mode int8 --calibration_data calib.npz --calibration_eps cpu``.

Both Q/DQ models run in this environment's onnxruntime on the held-out
images. Printed: top-1 accuracy, top-1 agreement with FP32, the number of
Q/DQ pairs (QuantizeLinear nodes, and DequantizeLinear nodes of weights), and
which tensors each tool quantized (activations by the name of the layer
output they quantize: pyengine folds BatchNorm into the conv first, ModelOpt
does not, so a conv's quantized input may carry a BN or ReLU output name).

ModelOpt is optional: without --modelopt-python only pyengine's columns are
printed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections import Counter

import numpy as np
import onnx

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import pyengine  # noqa: E402


def ort_predict(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 256]})[0] for i in range(0, len(x), 256)]).argmax(1)


def qdq_summary(model: onnx.ModelProto) -> dict:
    """Q/DQ structure of a model: activation tensors quantized (QuantizeLinear
    inputs that are not initializers), weights (DequantizeLinear inputs that
    are initializers, or QuantizeLinear of initializers), op counts."""
    g = model.graph
    inits = {t.name for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}

    def source(name):
        # Look through Casts (ModelOpt's float16 output) to the tensor quantized.
        n = producer.get(name)
        while n is not None and n.op_type == "Cast":
            name = n.input[0]
            n = producer.get(name)
        return name

    acts, weights = [], []
    for n in g.node:
        if n.op_type == "QuantizeLinear":
            src = source(n.input[0])
            (weights if src in inits else acts).append(src)
        elif n.op_type == "DequantizeLinear" and source(n.input[0]) in inits:
            weights.append(source(n.input[0]))
    ops = Counter(n.op_type for n in g.node)
    float16 = sum(1 for t in g.initializer if t.data_type == onnx.TensorProto.FLOAT16)
    return {"activations": list(dict.fromkeys(acts)), "weights": list(dict.fromkeys(weights)),
            "q": ops["QuantizeLinear"], "dq": ops["DequantizeLinear"], "ops": ops, "fp16_inits": float16}


def run_modelopt(python: str, model_path: str, calib_path: str, out_path: str, extra: list) -> None:
    cmd = [python, "-m", "modelopt.onnx.quantization", "--onnx_path", model_path, "--quantize_mode", "int8",
           "--calibration_data", calib_path, "--calibration_eps", "cpu", "--output_path", out_path, *extra]
    print("# " + " ".join(cmd), file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not os.path.exists(out_path):
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"ModelOpt failed (exit {proc.returncode})")


def main(argv=None) -> int:
    import realdata_models

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resnet20_background_digits", choices=sorted(realdata_models.MODELS))
    ap.add_argument("--modelopt-python", help="the Python of a virtual environment with nvidia-modelopt[onnx]")
    ap.add_argument("--modelopt-args", nargs=argparse.REMAINDER, default=[],
                    help="more arguments for ModelOpt's command line (last on the line)")
    ap.add_argument("--seed", type=int, default=0, help="training seed")
    ap.add_argument("--keep", help="folder to keep m.onnx, calib.npz and the quantized models in")
    args = ap.parse_args(argv)

    data = realdata_models.MODELS[args.model][0]()
    net = realdata_models.make_and_train(args.model, data, args.seed)
    model = realdata_models.export(net, data["test"][0])
    x, y = data["test"]
    calib = data["calib"]

    tmp = tempfile.TemporaryDirectory()
    folder = args.keep or tmp.name
    os.makedirs(folder, exist_ok=True)
    model_path, calib_path = os.path.join(folder, "m.onnx"), os.path.join(folder, "calib.npz")
    onnx.save(model, model_path)
    np.savez(calib_path, input=calib)

    fp32 = ort_predict(model, x)
    columns = {}

    qdq = pyengine.quantize(model, calibration_data=calib, progress=False, num_threads=1)
    onnx.save(qdq, os.path.join(folder, "m.pyengine.quant.onnx"))
    engine = pyengine.build(model, precision="int8", calibration_data=calib, report=False, progress=False,
                            num_threads=1)
    method = engine.metadata["calibration"]["method"]
    columns[f"pyengine ({method}), onnxruntime"] = (ort_predict(qdq, x), qdq_summary(qdq))
    columns[f"pyengine ({method}), pyengine int8"] = (engine(x).argmax(1), qdq_summary(qdq))

    if args.modelopt_python:
        out_path = os.path.join(folder, "m.modelopt.quant.onnx")
        run_modelopt(args.modelopt_python, model_path, calib_path, out_path, args.modelopt_args)
        mo = onnx.load(out_path)
        label = "ModelOpt" + (f" ({' '.join(args.modelopt_args)})" if args.modelopt_args else " (defaults)")
        columns[f"{label}, onnxruntime"] = (ort_predict(mo, x), qdq_summary(mo))

    print(f"model: {args.model} (seed {args.seed}), {len(calib)} calibration images, {len(y)} test images; "
          f"FP32 top-1 {100 * np.mean(fp32 == y):.2f}% (onnxruntime)\n")
    print("| quantized by, run by | INT8 top-1 | drop (pt) | agreement | Q/DQ pairs (activations) | weights | "
          "float16 initializers |")
    print("|---|---|---|---|---|---|---|")
    for label, (pred, s) in columns.items():
        print(f"| {label} | {100 * np.mean(pred == y):.2f}% | {100 * (np.mean(fp32 == y) - np.mean(pred == y)):+.2f} "
              f"| {100 * np.mean(pred == fp32):.2f}% | {len(s['activations'])} | {len(s['weights'])} | "
              f"{s['fp16_inits']} |")

    summaries = {label.split(",")[0]: s for label, (_, s) in columns.items()}
    names = list(summaries)
    print("\nactivation tensors quantized:")
    every = list(dict.fromkeys(t for s in summaries.values() for t in s["activations"]))
    print("| tensor | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for t in every:
        print(f"| {t} | " + " | ".join("x" if t in summaries[n]["activations"] else "" for n in names) + " |")
    for n, s in summaries.items():
        others = {k: v for k, v in s["ops"].items() if k not in ("QuantizeLinear", "DequantizeLinear")}
        print(f"\n{n}: {s['q']} QuantizeLinear, {s['dq']} DequantizeLinear; other ops {dict(sorted(others.items()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
