#!/usr/bin/env python3
"""The family fusions (issue 12) measured: node counts and FP32 latency of
full-size models with and without fuse_gelu / fuse_squeeze_excitation /
fuse_channel_split_norm, onnxruntime beside them, in one interleaved run.

    python tools/bench_fusions.py                       # SE-ResNet-50 and ConvNeXt-T at 224, batch 1, 2 threads
    python tools/bench_fusions.py --size 160 --runs 10 --models se_resnet50
    python tools/bench_fusions.py --models se_tail_256x56,se_tail_1024x14,se_tail_2048x7 --runs 200

Rows per model: nodes after the optimizer and median ms of
  pyengine (all passes)      the default pipeline
  pyengine (no new fusions)  the same with the three fusion passes disabled
  ort fp32                   onnxruntime ORT_ENABLE_ALL on the unoptimized model
and the same-run ratio of the two pyengine rows. Random weights; read the
ratios, not the absolute times (shared machines are noisy).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pyengine import onnx_io, zoo  # noqa: E402
from pyengine.engine import Engine  # noqa: E402
from pyengine.optimizer import optimize_graph  # noqa: E402

NEW_FUSIONS = ("fuse_gelu", "fuse_squeeze_excitation", "fuse_channel_split_norm")


def se_resnet50(size):
    """torchvision ResNet-50 with an SE block (reduction 16, 1x1 convs) in every bottleneck."""
    b = zoo.GraphBuilder("se_resnet50", zoo.DEFAULT_OPSET, 0)
    x = zoo._torchvision_stem(b, b.input((3, size, size)), 64)
    for stage, count in enumerate((3, 4, 6, 3)):
        for i in range(count):
            x = zoo._bottleneck(b, x, 64 * 2**stage, 2 if stage > 0 and i == 0 else 1, se_reduction=16)
    return b.build({"output": zoo._classifier(b, x, 1000)})


def convnext_t(size):
    """ConvNeXt-T: dims 96-768, depths 3-3-9-3, erf-form GELU as exported at opset 17."""
    b = zoo.GraphBuilder("convnext_t", zoo.DEFAULT_OPSET, 0)
    x = b.conv(b.input((3, size, size)), 96, 4, 4, pad=0, bias=True)
    x = zoo._channels_first_norm(b, x)
    for stage, (dim, depth) in enumerate(zip((96, 192, 384, 768), (3, 3, 9, 3))):
        if stage:
            x = b.conv(zoo._channels_first_norm(b, x), dim, 2, 2, pad=0, bias=True)
        for _ in range(depth):
            x = zoo._convnext_block(b, x)
    head = b.layer_norm(b.flatten(b.gap(x)), b.channels(x), eps=1e-6)
    return b.build({"output": b.gemm(head, 1000)})


def se_tail(c, hw):
    """One SE-ResNet bottleneck tail alone: relu(x * SE(x) + x), SE with 1x1 convs, reduction 16."""
    def build(size):
        b = zoo.GraphBuilder(f"se_tail_{c}x{hw}", zoo.DEFAULT_OPSET, 0)
        x = b.input((c, hw, hw))
        return b.build({"output": b.relu(b.add(zoo._squeeze_excite(b, x, 16, "conv"), x))})
    return build


MODELS = {"se_resnet50": se_resnet50, "convnext_t": convnext_t,
          # The SE-ResNet-50 stage shapes, the block alone (size ignored).
          "se_tail_256x56": se_tail(256, 56), "se_tail_1024x14": se_tail(1024, 14), "se_tail_2048x7": se_tail(2048, 7)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    import onnxruntime as ort

    for name in args.models.split(","):
        model = MODELS[name](args.size)
        graph, proto = onnx_io.graph_from_onnx(model)
        engines = {}
        nodes = {"onnx": len(model.graph.node)}
        for label, disable in (("pyengine (all passes)", ()), ("pyengine (no new fusions)", NEW_FUSIONS)):
            g, rep = optimize_graph(graph, disable=disable)
            engines[label] = Engine(g, {}, args.threads)
            nodes[label] = rep["nodes_after"]
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        feeds = zoo.make_input(model, args.batch, seed=1)
        iname = model.graph.input[0].name
        runners = {k: (lambda e=e: e.run(feeds)) for k, e in engines.items()}
        runners["ort fp32"] = lambda: sess.run(None, feeds)
        ref = sess.run(None, feeds)[0]
        for k, e in engines.items():
            out = e.run(feeds)["output"]
            err = np.linalg.norm(out - ref) / np.linalg.norm(ref)
            assert err < 1e-4, (k, err)
        times = {k: [] for k in runners}
        for k in runners:   # warm-up
            runners[k]()
        for _ in range(args.runs):
            order = list(runners)
            random.shuffle(order)
            for k in order:
                t0 = time.perf_counter()
                runners[k]()
                times[k].append((time.perf_counter() - t0) * 1e3)
        med = {k: float(np.median(v)) for k, v in times.items()}
        where = "" if name.startswith("se_tail") else f" {args.size}x{args.size}"
        print(f"\n{name}{where} batch {args.batch}, {args.threads} threads, {args.runs} runs"
              f" (ONNX graph: {nodes['onnx']} nodes; input '{iname}')")
        print(f"  {'runtime':28s} {'nodes':>6s} {'median ms':>10s}")
        for k in runners:
            print(f"  {k:28s} {str(nodes.get(k, '')):>6s} {med[k]:10.2f}")
        print(f"  fusions: {med['pyengine (no new fusions)'] / med['pyengine (all passes)']:.3f}x faster than without;"
              f" pyengine/ort {med['pyengine (all passes)'] / med['ort fp32']:.3f}")


if __name__ == "__main__":
    main()
