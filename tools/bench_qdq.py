#!/usr/bin/env python3
"""Pre-quantized Q/DQ models: pyengine's int8 build vs the same model run as
float fake-quant, on a zoo ResNet quantized by onnxruntime's quantize_static
(QDQ, per-channel symmetric int8 weights, symmetric int8 activations) and,
when PYENGINE_MODELOPT_PYTHON names a ModelOpt venv, by ModelOpt (fp16
default and fp32).

    python tools/bench_qdq.py                         # resnet18 at 224, batch 1 and 8
    python tools/bench_qdq.py --size 64 --runs 20 --threads 2

Columns (median or --stat min ms, same inputs and threads):
  pyengine int8       pyengine.build(qdq_model)        (the default: int8 kernels)
  pyengine fake-quant pyengine.build(qdq_model, precision="fp32")
  pyengine fp32       the float model, pyengine.build(float_model)
  ort q/dq            onnxruntime, ORT_ENABLE_ALL, on the Q/DQ model
Calibration data are random images: the rows measure speed, not accuracy
(tests/test_qdq_models.py checks agreement on real data).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
import onnx

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import pyengine  # noqa: E402
from pyengine import zoo  # noqa: E402

from bench import _ort_session  # noqa: E402


def _time(fn, runs, warmup, stat):
    import time

    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return float(np.min(samples) if stat == "min" else np.median(samples))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--stat", choices=("median", "min"), default="median",
                   help="min is the steadier number on a shared, noisy machine")
    args = p.parse_args(argv)
    import onnxruntime as ort
    import qdq_models as qm

    model = zoo.build_model(args.model, image_size=args.size)
    name = model.graph.input[0].name
    tmp = tempfile.mkdtemp(prefix="bench_qdq_")
    fpath = os.path.join(tmp, "float.onnx")
    onnx.save(model, fpath)
    calib = np.concatenate([zoo.make_input(model, 1, seed=100 + i)[name] for i in range(8)])
    sources = {"ort quantize_static": qm.ort_quantize(fpath, calib, os.path.join(tmp, "ort.onnx"), True, name)}
    py, why = qm.modelopt_python()
    if py:
        sources["modelopt fp16"] = qm.modelopt_quantize(py, fpath, calib, os.path.join(tmp, "mo16.onnx"), None, name)
        sources["modelopt fp32"] = qm.modelopt_quantize(py, fpath, calib, os.path.join(tmp, "mo32.onnx"), "fp32", name)
    else:
        print(f"(ModelOpt rows skipped: {why})")
    fp32 = pyengine.build(model, num_threads=args.threads)
    print(f"{args.model} {args.size}x{args.size}, {args.threads} threads; {args.stat} ms")
    print(f"{'source':<22} {'batch':>5} {'int8':>9} {'fake-quant':>11} {'fp32':>9} {'ort q/dq':>9} "
          f"{'fq/int8':>8} {'QConv':>6}")
    for src, qmodel in sources.items():
        int8 = pyengine.build(qmodel, num_threads=args.threads)
        fq = pyengine.build(qmodel, precision="fp32", num_threads=args.threads)
        sess = _ort_session(qmodel, args.threads, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        nconv = int8.metadata["int8"]["int8_layers"].get("QConv", 0)
        for batch in [int(b) for b in args.batches.split(",")]:
            x = zoo.make_input(model, batch, seed=7)[name]
            t_int8 = _time(lambda: int8(x), args.runs, args.warmup, args.stat)
            t_fq = _time(lambda: fq(x), args.runs, args.warmup, args.stat)
            t_fp32 = _time(lambda: fp32(x), args.runs, args.warmup, args.stat)
            t_ort = _time(lambda: sess.run(None, {name: x}), args.runs, args.warmup, args.stat)
            print(f"{src:<22} {batch:>5} {t_int8:>9.2f} {t_fq:>11.2f} {t_fp32:>9.2f} {t_ort:>9.2f} "
                  f"{t_fq / t_int8:>7.2f}x {nconv:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
