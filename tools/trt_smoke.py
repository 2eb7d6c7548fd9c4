#!/usr/bin/env python3
"""TensorRT smoke test: one command for a machine with an NVIDIA GPU.

    python3 tools/trt_smoke.py                      # a few zoo models, fp32/fp16/int8
    python3 tools/trt_smoke.py --models all --json smoke.json

Builds each zoo model with TensorRT at each precision, times the build and
batch-1 latency (p50/p99 over --duration seconds), and compares the outputs
with pyengine's FP32 CPU engine. Prints a table to paste into a bug report,
with the GPU, TensorRT, CUDA and pyengine versions. Exits 2 (saying why)
where TensorRT or a GPU is missing, 1 if any build or run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

DEFAULT_MODELS = ("resnet18", "resnet50", "se_resnet", "repvgg_block", "convnext_block", "r2plus1d")


def main(argv=None) -> int:
    import pyengine
    from pyengine import profile, zoo
    from pyengine.backends import tensorrt

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help=f"comma-separated zoo models, or 'all' "
                                                                       f"({', '.join(sorted(zoo.ZOO))})")
    p.add_argument("--precisions", default="fp32,fp16,int8")
    p.add_argument("--batch", type=int, default=1, help="batch size timed and compared")
    p.add_argument("--duration", type=float, default=2.0, help="seconds of timed runs per engine")
    p.add_argument("--cuda-graph", action="store_true", help="time through CUDA graphs")
    p.add_argument("--json", help="also write the rows and the machine description here")
    args = p.parse_args(argv)

    reason = tensorrt.availability()
    if reason:
        print(f"trt_smoke: TensorRT cannot run here: {reason}", file=sys.stderr)
        return 2
    here = tensorrt.machine()
    print(f"GPU {here['gpu_name']} (compute capability {here['compute_capability']}), TensorRT "
          f"{here['tensorrt_version']}, CUDA runtime {here['cuda_runtime_version']} / driver "
          f"{here['cuda_driver_version']}, pyengine {pyengine.__version__}")
    models = sorted(zoo.ZOO) if args.models == "all" else [m for m in args.models.split(",") if m]
    precisions = [x for x in args.precisions.split(",") if x]
    rows, failed = [], 0
    head = (f"{'model':<16} {'prec':<5} {'build s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max abs err':>12} "
            f"{'rel L2':>9} {'top1':>6}  status")
    print(head)
    print("-" * len(head))
    for name in models:
        model = zoo.build_model(name)
        feeds = zoo.make_input(model, args.batch, seed=0)
        ref = pyengine.build(model, backend="cpu").run(feeds)
        for precision in precisions:
            row = {"model": name, "precision": precision, "batch": args.batch}
            try:
                opts = {"batch_range": (1, args.batch, max(args.batch, 8)), "progress": False,
                        "cuda_graph": args.cuda_graph}
                if precision == "int8":
                    opts["calibration_data"] = [zoo.make_input(model, 8, seed=s) for s in range(1, 5)]
                t0 = time.perf_counter()
                engine = pyengine.build(model, precision=precision, backend="tensorrt", **opts)
                row["build_s"] = time.perf_counter() - t0
                got = engine.run(feeds)
                stats = profile.summarize(profile.measure(lambda: engine.run(feeds), 200, args.duration), args.batch)
                row["p50_ms"], row["p99_ms"] = stats["median_ms"], stats["p99_ms"]
                k = next(iter(ref))
                a, b = got[k].astype(np.float64), ref[k].astype(np.float64)
                row["max_abs_err"] = float(np.max(np.abs(a - b)))
                row["rel_l2"] = float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))
                if a.ndim == 2 and a.shape[1] > 1:
                    row["top1"] = float(np.mean(a.argmax(1) == b.argmax(1)))
                row["status"] = "ok"
                engine.close()
            except Exception as exc:  # report every failure and go on
                failed += 1
                row["status"] = f"FAILED: {exc.__class__.__name__}: {str(exc).splitlines()[0][:120]}"
                row["traceback"] = traceback.format_exc()
            rows.append(row)
            fmt = lambda key, spec: format(row[key], spec) if key in row else "-"  # noqa: E731
            print(f"{name[:16]:<16} {precision:<5} {fmt('build_s', '8.1f'):>8} {fmt('p50_ms', '8.3f'):>8} "
                  f"{fmt('p99_ms', '8.3f'):>8} {fmt('max_abs_err', '12.3e'):>12} {fmt('rel_l2', '9.2e'):>9} "
                  f"{fmt('top1', '6.3f'):>6}  {row['status']}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": here, "pyengine_version": pyengine.__version__, "rows": rows}, f, indent=1)
        print(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
