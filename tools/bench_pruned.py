#!/usr/bin/env python3
"""The polarization-pruned ResNet-50 before and after pyengine's optimizer.

    PYTHONPATH=. python3 tools/bench_pruned.py                  # 224x224, batch 1 and 8, 2 threads
    PYTHONPATH=. python3 tools/bench_pruned.py --batches 1 --runs 5 --layers
    PYTHONPATH=. python3 tools/bench_pruned.py --cpu-time     # 1 thread, process CPU time (busy machines)

The model is tests/torch_models.py's ``resnet50_pruned`` (half the bn1/bn2
scales of every bottleneck zero, betas of both signs; in layer2 and layer3
half the residual-stream channels zero in every bn3 and the downsample BN),
exported with PyTorch's TorchScript exporter. The unpruned baseline is the
same network with the same weights, the scales not zeroed.

Prints, as markdown:
  - parameters (the ONNX file's initializers, and the Conv/Gemm weights and
    biases after pyengine's optimizer) and multiply-adds per image, counted
    from the optimized graph (Conv: N*Cout*Hout*Wout*Cin/group*kH*kW; Gemm: M*N*K);
  - latency, interleaved in one run (median and p90 ms): pyengine on the
    unpruned model, pyengine on the pruned model (same optimizer, pruning
    included), onnxruntime (ORT_ENABLE_ALL) on the pruned ONNX file and on
    the unpruned one; ratios against pyengine unpruned;
  - the FLOP reduction and the speed-up beside it;
  - with --layers, per-conv GFLOP/s of both pyengine engines (the profile's
    own FLOP counts), to see which narrowed shapes run slower per FLOP.
Then the issue-12 example: the zoo's ResNet-18 with half the scales of six
BNs zeroed, parameters before and after the optimizer.

``rows()`` returns the latency rows (for ``tools/bench.py --families``).
Needs torch and onnxruntime. Read the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import onnx

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)

import pyengine  # noqa: E402


def onnx_params(proto: onnx.ModelProto) -> int:
    """Elements of every initializer."""
    return sum(int(np.prod(t.dims)) for t in proto.graph.initializer)


def conv_gemm_params(proto: onnx.ModelProto) -> int:
    """Elements of the weights and biases Conv and Gemm nodes read."""
    inits = {t.name: int(np.prod(t.dims)) for t in proto.graph.initializer}
    return sum(inits.get(i, 0) for n in proto.graph.node if n.op_type in ("Conv", "Gemm") for i in n.input[1:3])


def macs_per_image(proto: onnx.ModelProto) -> int:
    """Multiply-adds of the Conv and Gemm nodes for one image, from ONNX shape
    inference on the (standard ONNX) graph."""
    inferred = onnx.shape_inference.infer_shapes(proto)
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
    inits = {t.name: list(t.dims) for t in proto.graph.initializer}
    total = 0
    for n in proto.graph.node:
        if n.op_type == "Conv":
            w = inits[n.input[1]]
            out = shapes[n.output[0]]
            total += int(np.prod(out[1:])) * int(np.prod(w[1:]))
        elif n.op_type == "Gemm":
            w = inits[n.input[1]]
            total += int(np.prod(w))
    return total


def export_pair(tmp: str, size: int, seed: int = 0) -> dict:
    """{"unpruned": path, "pruned": path}: TorchScript exports of the two networks."""
    import torch
    from torch_models import resnet50_pruned

    paths = {}
    for label, pruned in (("unpruned", False), ("pruned", True)):
        model = resnet50_pruned(full=True, pruned=pruned, seed=seed)
        path = os.path.join(tmp, f"resnet50_{label}.onnx")
        with torch.no_grad():
            torch.onnx.export(model, (torch.randn(1, 3, size, size),), path, dynamo=False, opset_version=17,
                              do_constant_folding=False, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        paths[label] = path
    return paths


def model_rows(paths: dict) -> list:
    """Parameters and multiply-adds before/after the optimizer."""
    out = []
    for label, path in paths.items():
        src = onnx.load(path)
        for variant, disable in (("optimizer without pruning", ("prune_dead_channels",)), ("optimizer", ())):
            if label == "unpruned" and disable:
                continue
            opt = pyengine.optimize(path, disable=disable)
            out.append({"model": f"resnet50_{label}", "graph": variant, "onnx_params": onnx_params(src),
                        "params": conv_gemm_params(opt), "macs": macs_per_image(opt)})
    return out


def rows(batches=(1, 8), threads: int = 2, runs: int = 10, warmup: int = 2, size: int = 224, settle: float = 0.1,
         seed: int = 0, layers: bool = False, tmp: str | None = None, cpu_time: bool = False) -> dict:
    """Measures everything; returns {"model": [...], "latency": [...], "layers": [...]}.

    latency rows: {"batch", "runtime", "median_ms", "p90_ms", "vs_pyengine_unpruned", "clock"}.
    cpu_time: time process CPU time on one thread (``threads`` is ignored)
    instead of the wall clock on ``threads`` threads.
    """
    if cpu_time:
        threads = 1
    import onnxruntime as ort
    from bench import interleaved

    own_tmp = tempfile.TemporaryDirectory() if tmp is None else None
    tmp = tmp or own_tmp.name
    try:
        paths = export_pair(tmp, size, seed)
        result = {"model": model_rows(paths), "latency": [], "layers": []}
        engines = {f"pyengine {k}": pyengine.build(p, backend="cpu", num_threads=threads) for k, p in paths.items()}
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        sessions = {f"ort {k}": ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])
                    for k, p in (("pruned", paths["pruned"]), ("unpruned", paths["unpruned"]))}
        rng = np.random.default_rng(seed)
        for batch in batches:
            x = rng.standard_normal((batch, 3, size, size), dtype=np.float32)
            calls = {k: (lambda e=e: e.run({"input": x})) for k, e in engines.items()}
            calls.update({k: (lambda s=s: s.run(None, {"input": x})) for k, s in sessions.items()})
            if cpu_time:
                # CPU time of a single-threaded run: on a machine shared with
                # other jobs the wall clock measures the other jobs too.
                samples = interleaved(calls, runs, warmup, settle_s=0.0, seed=seed, clock=time.process_time)
            else:
                samples = interleaved(calls, runs, warmup, settle_s=settle, seed=seed)
            med = {k: float(np.median(v)) for k, v in samples.items()}
            for k, v in samples.items():
                result["latency"].append({"batch": batch, "runtime": k, "median_ms": med[k],
                                          "p90_ms": float(np.percentile(v, 90)),
                                          "vs_pyengine_unpruned": med[k] / med["pyengine unpruned"],
                                          "clock": "cpu, 1 thread" if cpu_time else f"wall, {threads} threads"})
        if layers:
            result["layers"] = layer_rows(engines, rng.standard_normal((batches[0], 3, size, size), dtype=np.float32),
                                          runs)
        return result
    finally:
        if own_tmp is not None:
            own_tmp.cleanup()


def layer_rows(engines: dict, x: np.ndarray, runs: int) -> list:
    """Per layer of the pruned engine: the best-of-``runs`` profile time of
    both engines, their FLOPs (the profile's counts, 2 per multiply-add) and
    what the pruned layer would take at the unpruned layer's GFLOP/s
    (``ideal_ms``). Their sums split the gap between speed-up and FLOP
    reduction into kernel efficiency lost on the narrowed shapes
    (ms - ideal_ms) and the mix of layers (pruning removes FLOPs unevenly
    from layers that run at different GFLOP/s)."""
    best = {}
    for k, e in engines.items():
        b = {}
        for _ in range(max(3, runs)):
            for layer in e.profile({"input": x}, runs=1):
                prev = b.get(layer["name"])
                if prev is None or layer["ms"] < prev["ms"]:
                    b[layer["name"]] = layer
        best[k] = b
    out = []
    for name, p in best["pyengine pruned"].items():
        u = best["pyengine unpruned"].get(name)
        if u is None:
            continue
        ideal = p["ms"] if not u.get("flops") else (p.get("flops") or 0) / (u["flops"] / u["ms"])
        out.append({"name": name, "op": p.get("op", ""), "kernel": p.get("kernel", ""), "unpruned_ms": u["ms"],
                    "ms": p["ms"], "unpruned_flops": u.get("flops") or 0, "flops": p.get("flops") or 0,
                    "ideal_ms": ideal})
    return out


def issue_example(size: int = 224) -> dict:
    """Issue 12's report: the zoo ResNet-18 with half the scales of six BNs
    (the first BN of the first six basic blocks) zeroed; parameters of the
    ONNX file and after the optimizer (every constant the graph reads, as
    `pyengine inspect` counts them)."""
    from onnx import numpy_helper
    from pyengine import onnx_io
    from pyengine.optimizer import optimize_graph
    from pyengine import zoo

    model = zoo.build_model("resnet18", image_size=size)
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    # BNs feeding a Relu that feeds a Conv, the stem excluded: bn1 of each basic block.
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"
           and any(c.op_type == "Relu" for c in consumers.get(n.output[0], []))][1:7]
    inits = {t.name: t for t in model.graph.initializer}
    rng = np.random.default_rng(12)
    zeroed = 0
    for bn in bns:
        g = numpy_helper.to_array(inits[bn.input[1]]).copy()
        idx = rng.permutation(g.size)[: g.size // 2]
        g[idx] = 0.0
        zeroed += idx.size
        inits[bn.input[1]].CopyFrom(numpy_helper.from_array(g, bn.input[1]))

    def count(graph):
        shapes = {n: s for n, _, s, c in graph.values() if c}
        used = {i for node in graph.nodes() for i in node["inputs"] if i in shapes}
        return sum(int(np.prod(shapes[i])) for i in used)

    graph, _ = onnx_io.graph_from_onnx(model)
    without, _ = optimize_graph(graph, disable=("prune_dead_channels",))
    pruned, _ = optimize_graph(graph)
    return {"zeroed_scales": zeroed, "layers": [b.name for b in bns], "onnx": onnx_params(model),
            "optimizer_without_pruning": count(without), "optimizer": count(pruned)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--settle", type=float, default=0.1)
    p.add_argument("--layers", action="store_true", help="per-conv GFLOP/s of both pyengine engines")
    p.add_argument("--cpu-time", action="store_true",
                   help="process CPU time on 1 thread instead of the wall clock (for a machine shared with other jobs)")
    args = p.parse_args(argv)
    res = rows(tuple(int(b) for b in args.batches.split(",")), args.threads, args.runs, args.warmup, args.size,
               args.settle, layers=args.layers, cpu_time=args.cpu_time)
    clock = "CPU time, 1 thread" if args.cpu_time else f"wall clock, {args.threads} threads"
    print(f"## Pruned ResNet-50 ({args.size}x{args.size}, {clock}, {args.runs} interleaved runs)\n")
    print("| model | graph | ONNX params | Conv/Gemm params | GMACs/image |")
    print("|---|---|---:|---:|---:|")
    for r in res["model"]:
        print(f"| {r['model']} | {r['graph']} | {r['onnx_params']:,} | {r['params']:,} | {r['macs'] / 1e9:.3f} |")
    base = next(r for r in res["model"] if r["model"] == "resnet50_unpruned")
    pruned = next(r for r in res["model"] if r["model"] == "resnet50_pruned" and r["graph"] == "optimizer")
    flop_ratio = base["macs"] / pruned["macs"]
    print(f"\nFLOP reduction: {base['macs'] / 1e9:.2f} -> {pruned['macs'] / 1e9:.2f} GMACs/image "
          f"({flop_ratio:.2f}x fewer); parameters {base['params']:,} -> {pruned['params']:,} "
          f"({base['params'] / pruned['params']:.2f}x fewer)\n")
    print("| batch | runtime | median ms | p90 ms | vs pyengine unpruned |")
    print("|---:|---|---:|---:|---:|")
    for r in res["latency"]:
        print(f"| {r['batch']} | {r['runtime']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | "
              f"{r['vs_pyengine_unpruned']:.2f}x |")
    print()
    for b in sorted({r["batch"] for r in res["latency"]}):
        med = {r["runtime"]: r["median_ms"] for r in res["latency"] if r["batch"] == b}
        speed = med["pyengine unpruned"] / med["pyengine pruned"]
        print(f"batch {b}: pyengine speed-up {speed:.2f}x for {flop_ratio:.2f}x fewer FLOPs "
              f"({100 * speed / flop_ratio:.0f}% of the FLOP reduction); pyengine pruned vs ort pruned "
              f"{med['pyengine pruned'] / med['ort pruned']:.2f}x")
    if res["layers"]:
        ls = res["layers"]
        tu, tp, ti = (sum(r[k] for r in ls) for k in ("unpruned_ms", "ms", "ideal_ms"))
        fu, fp = sum(r["unpruned_flops"] for r in ls), sum(r["flops"] for r in ls)
        print(f"\nper-layer profile (best of {max(3, args.runs)}, batch {res['latency'][0]['batch']}): "
              f"layers sum {tu:.2f} -> {tp:.2f} ms ({tu / tp:.2f}x) for {fu / fp:.2f}x fewer FLOPs; at the "
              f"unpruned layers' own GFLOP/s the pruned layers would take {ti:.2f} ms ({tu / ti:.2f}x): "
              f"{tp - ti:+.2f} ms is kernel efficiency on the narrowed shapes, the rest is the layer mix\n")
        print("| layer | kernel | unpruned ms | pruned ms | at unpruned GFLOP/s | FLOPs ratio |")
        print("|---|---|---:|---:|---:|---:|")
        for r in sorted(ls, key=lambda r: r["ms"] - r["ideal_ms"], reverse=True)[:12]:
            ratio = r["unpruned_flops"] / r["flops"] if r["flops"] else float("nan")
            print(f"| {r['name'][:40]} | {r['kernel'][:36]} | {r['unpruned_ms']:.3f} | {r['ms']:.3f} | "
                  f"{r['ideal_ms']:.3f} | {ratio:.2f}x |")
    ex = issue_example(args.size)
    print(f"\n## Issue 12's example: zoo ResNet-18, half the scales of six BNs zeroed ({ex['zeroed_scales']} "
          f"scales)\n")
    print("| graph | parameters |")
    print("|---|---:|")
    print(f"| ONNX file | {ex['onnx']:,} |")
    print(f"| optimizer, pruning disabled | {ex['optimizer_without_pruning']:,} |")
    print(f"| optimizer | {ex['optimizer']:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
