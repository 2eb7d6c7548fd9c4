#!/usr/bin/env python3
"""INT8 vs FP32 latency on the zoo ResNets: pyengine (per ISA tier) against
onnxruntime FP32 and onnxruntime's fastest INT8 form (u8s8 QDQ from
quantize_static: QUInt8 activations, QInt8 per-channel weights).

    python tools/bench_int8.py                          # resnet18,resnet50 x batch 1,8, 2 threads
    python tools/bench_int8.py --models resnet18 --batches 1 --threads 1 --tiers avx2,vnni
    python tools/bench_int8.py --models resnet50 --tiers vnni --layouts nchw,nhwc   # the int8 layouts

Every variant runs in the same process, interleaved round by round (so a
noisy neighbour hits all of them alike); the table gives the median and the
minimum per variant, and ratios of medians. INT8 is calibrated on random
images: these are timings, not accuracy. pyengine's tiers are capped with
_core.set_isa_cap (tiers the CPU lacks are left out); --layouts times each
tier's engine with its int8 convs NCHW and channels-last (one calibration;
the NHWC graph is the NCHW one through the int8_channels_last pass).

--cpu-time (with --threads 1) times the calling thread's CPU time instead of
the wall clock: both runtimes then run on that thread, so on a machine
shared with other jobs the time slices lost to them are not counted and the
ratios compare the kernels themselves.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import pyengine  # noqa: E402
from pyengine import _core, zoo  # noqa: E402
from pyengine.optimizer import optimize_graph  # noqa: E402

TIERS = ["ref", "avx2", "avx512", "vnni", "amx"]


def _ort_session(model_bytes, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def _ort_u8s8(model, calib, in_name):
    """onnxruntime's static QDQ quantization, u8 activations, s8 per-channel
    weights, after its quant_pre_process (bench.ort_u8s8_model)."""
    import onnx

    from bench import ort_u8s8_model

    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "f.onnx"), os.path.join(d, "q.onnx")
        onnx.save(model, src)
        ort_u8s8_model(src, dst, in_name, calib)
        with open(dst, "rb") as f:
            return f.read()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet18,resnet50")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--tiers", default="avx2,vnni", help="pyengine INT8 tiers to time (those the CPU has)")
    p.add_argument("--layouts", default="auto",
                   help="int8 activation layouts to time per tier: auto (what a build picks there), nchw, nhwc "
                        "(channels-last int8 convs; on tiers without their kernel, through NCHW transposes)")
    p.add_argument("--calib-batches", type=int, default=2)
    p.add_argument("--cpu-time", action="store_true", help="thread CPU time instead of wall time (--threads 1)")
    args = p.parse_args(argv)
    if args.cpu_time and args.threads != 1:
        p.error("--cpu-time needs --threads 1 (other threads' time is not counted)")
    clock = time.thread_time if args.cpu_time else time.perf_counter

    info = _core.cpu_info()
    top = TIERS.index(info["max_isa"])
    tiers = [t for t in args.tiers.split(",") if TIERS.index(t) <= top]
    layouts = args.layouts.split(",")
    for layout in layouts:
        if layout not in ("auto", "nchw", "nhwc"):
            p.error(f"unknown layout {layout!r} (auto, nchw, nhwc)")
    saved = _core.isa_cap()
    rows = []
    for name in args.models.split(","):
        model = zoo.build_model(name, image_size=args.size)
        in_name = model.graph.input[0].name
        calib = [zoo.make_input(model, 1, seed=100 + i)[in_name] for i in range(args.calib_batches)]
        runners = []
        _core.set_isa_cap(saved)
        fp32 = pyengine.build(model, num_threads=args.threads)
        runners.append(("pyengine fp32", lambda feeds, e=fp32: e.run(feeds)))
        # One calibration; each (tier, layout) then lowers nothing again: the
        # NCHW int8 graph, or a copy given channels-last runs by the
        # int8_channels_last pass (what a build on that tier does for "auto").
        saved_layout = _core.int8_layout()
        _core.set_int8_layout("nchw")
        try:
            int8 = pyengine.build(model, precision="int8", calibration_data=calib, num_threads=args.threads,
                                  report=False, progress=False)
        finally:
            _core.set_int8_layout(saved_layout)
        for tier in tiers:
            _core.set_isa_cap(tier)
            for layout in layouts:
                _core.set_int8_layout(layout)
                try:
                    graph, _ = optimize_graph(int8._graph, passes=["int8_channels_last"])
                    eng = pyengine.Engine(graph, int8.metadata, num_threads=args.threads)
                finally:
                    _core.set_int8_layout(saved_layout)
                label = f"pyengine int8 {tier}" + (f" {layout}" if len(layouts) > 1 else "")
                runners.append((label, lambda feeds, e=eng: e.run(feeds)))
        _core.set_isa_cap(saved)
        ort_fp32 = _ort_session(model.SerializeToString(), args.threads)
        runners.append(("ort fp32", lambda feeds, s=ort_fp32: s.run(None, feeds)))
        ort_int8 = _ort_session(_ort_u8s8(model, calib, in_name), args.threads)
        runners.append(("ort int8 u8s8", lambda feeds, s=ort_int8: s.run(None, feeds)))
        for batch in (int(b) for b in args.batches.split(",")):
            feeds = {in_name: zoo.make_input(model, batch)[in_name]}
            for _, fn in runners:  # warm-up
                fn(feeds)
            times = {label: [] for label, _ in runners}
            for _ in range(args.runs):
                for label, fn in runners:
                    t0 = clock()
                    fn(feeds)
                    times[label].append((clock() - t0) * 1e3)
            med = {k: float(np.median(v)) for k, v in times.items()}
            for label, _ in runners:
                rows.append((name, batch, label, med[label], min(times[label]), med["pyengine fp32"] / med[label],
                             med["ort int8 u8s8"] / med[label]))
    print(f"{'model':<9} {'batch':>5} {'runtime':<26} {'median ms':>10} {'min ms':>8} "
          f"{'pe fp32/x':>10} {'ort u8s8/x':>11}")
    for name, batch, label, med, mn, r_fp32, r_ort in rows:
        print(f"{name:<9} {batch:>5} {label:<26} {med:>10.2f} {mn:>8.2f} {r_fp32:>9.2f}x {r_ort:>10.2f}x")
    print(f"cpu={info['brand']} max_isa={info['max_isa']} threads={args.threads} size={args.size} "
          f"runs={args.runs} clock={'thread cpu' if args.cpu_time else 'wall'} load={os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
