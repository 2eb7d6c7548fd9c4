#!/usr/bin/env python3
"""pyengine vs onnxruntime latency on zoo models, one table per run.

    python tools/bench.py                       # ResNet-18 and ResNet-50, batch 1 and 8
    python tools/bench.py --models resnet50 --batches 1 --runs 20

Both runtimes get the same inputs and the same thread count; ratios are what
to read (the machines are noisy). Rows:
  pyengine        the default build (optimizer on)
  pyengine -O0    build(optimize=False)
  ort             onnxruntime, ORT_ENABLE_ALL
  ort -O0         onnxruntime, ORT_DISABLE_ALL
  pyengine int8   build(precision="int8"), calibrated (default method) on random images
  ort int8 q/dq   onnxruntime running the same Q/DQ model (pyengine.quantize)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import pyengine  # noqa: E402
from pyengine import zoo  # noqa: E402


def _time(fn, runs: int, warmup: int):
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(samples)), float(np.percentile(samples, 90))


def _ort_session(model, threads, level):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = level
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet18,resnet50")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--size", type=int, default=224, help="input height/width")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--no-O0", action="store_true", help="skip the unoptimized rows")
    p.add_argument("--no-int8", action="store_true", help="skip the INT8 rows")
    p.add_argument("--calib-batches", type=int, default=4)
    args = p.parse_args(argv)
    import onnxruntime as ort

    rows = []
    for name in args.models.split(","):
        model = zoo.build_model(name, image_size=args.size)
        variants = [("pyengine", pyengine.build(model, num_threads=args.threads))]
        if not args.no_O0:
            variants.append(("pyengine -O0", pyengine.build(model, optimize=False, num_threads=args.threads)))
        sessions = [("ort", _ort_session(model, args.threads, ort.GraphOptimizationLevel.ORT_ENABLE_ALL))]
        if not args.no_O0:
            sessions.append(("ort -O0", _ort_session(model, args.threads, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)))
        in_name = model.graph.input[0].name
        if not args.no_int8:
            # Random calibration data: these rows measure speed, not accuracy
            # (tests/test_int8_accuracy.py measures accuracy on real data).
            calib = [zoo.make_input(model, 1, seed=100 + i)[in_name] for i in range(args.calib_batches)]
            variants.append(("pyengine int8", pyengine.build(model, precision="int8", calibration_data=calib,
                                                             num_threads=args.threads, report=False,
                                                             progress=False)))
            qdq = pyengine.quantize(model, calibration_data=calib, progress=False)
            sessions.append(("ort int8 q/dq", _ort_session(qdq, args.threads,
                                                           ort.GraphOptimizationLevel.ORT_ENABLE_ALL)))
        for batch in (int(b) for b in args.batches.split(",")):
            x = zoo.make_input(model, batch)[in_name]
            ort_med = None
            results = []
            for label, sess in sessions:
                med, p90 = _time(lambda s=sess: s.run(None, {in_name: x}), args.runs, args.warmup)
                results.append((label, med, p90))
                if label == "ort":
                    ort_med = med
            for label, eng in variants:
                med, p90 = _time(lambda e=eng: e.run({in_name: x}), args.runs, args.warmup)
                results.append((label, med, p90))
            for label, med, p90 in results:
                rows.append((name, batch, label, med, p90, med / ort_med))
    print(f"{'model':<10} {'batch':>5} {'runtime':<14} {'median ms':>10} {'p90 ms':>9} {'vs ort':>7}")
    for name, batch, label, med, p90, ratio in rows:
        print(f"{name:<10} {batch:>5} {label:<14} {med:>10.2f} {p90:>9.2f} {ratio:>6.2f}x")
    print(f"threads={args.threads} size={args.size} runs={args.runs} isa={pyengine._core.cpu_info()['isa']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
