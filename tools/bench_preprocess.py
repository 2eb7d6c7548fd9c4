#!/usr/bin/env python3
"""Benchmark: preprocessing inside the engine vs the same transform in numpy
and in Pillow + numpy.

The transform is the ImageNet evaluation one (shorter side 256, centre crop
224, mean/std, HWC uint8 -> NCHW float32), on 1080p and 480p frames at batch
1 and 8. Columns, all medians of --repeat runs in one process (same-run
ratios; absolute times depend on the machine and its load):

  engine T=k      pyengine.build(model, preprocess=...) on uint8 frames, k
                  threads; the model is a GlobalAveragePool, so this is the
                  Preprocess op plus a pass over its output
  numpy           Preprocess.apply_numpy(frames, float32): the same
                  separable resampling written with numpy gathers
  pillow+numpy    per frame Image.resize(BILINEAR) (antialiased, as the
                  engine's default), crop, then normalize and transpose in numpy

Usage: python3 tools/bench_preprocess.py [--repeat 15] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import pyengine  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402


def pool_model(h: int, w: int):
    """x [N, 3, h, w] -> GlobalAveragePool: the cheapest consumer of the
    preprocessed input (it stays in the engine's arena, as it would in front
    of a real network, instead of becoming a freshly allocated output)."""
    g = helper.make_graph([helper.make_node("GlobalAveragePool", ["x"], ["y"])], "pool",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, h, w])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 1, 1])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def pillow_numpy(frames, pre):
    from PIL import Image

    mean = np.asarray(pre.mean, np.float32)
    std = np.asarray(pre.std, np.float32)
    out = []
    for f in frames:
        h, w = f.shape[:2]
        rh, rw = pre.resized_size(h, w)
        img = Image.fromarray(f).resize((rw, rh), Image.BILINEAR)
        ch, cw = pre.crop
        top, left = int(round((rh - ch) / 2.0)), int(round((rw - cw) / 2.0))
        a = np.asarray(img.crop((left, top, left + cw, top + ch)), np.float32)
        out.append(((a / 255.0 - mean) / std).transpose(2, 0, 1))
    return np.stack(out)


def interleaved_medians(fns: dict, repeat: int) -> dict:
    """Median ms of each callable, timed in interleaved rounds so that machine
    noise hits all of them alike."""
    for fn in fns.values():
        fn()  # warm-up (tables, arena)
    times = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--antialias", choices=["on", "off", "both"], default="both")
    ap.add_argument("--tiers", default="",
                    help="also time the kernel variants, e.g. ref,avx2,avx512 (ISA cap per engine, 1 thread, batch 1)")
    args = ap.parse_args(argv)
    try:
        import PIL  # noqa: F401
        have_pil = True
    except ImportError:
        have_pil = False

    sizes = {"1080p": (1080, 1920), "480p": (480, 640)}
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.antialias]
    rng = np.random.default_rng()
    print(f"pyengine {pyengine.__version__}, ISA {pyengine._core.cpu_info()['max_isa']}, "
          f"median of {args.repeat} runs, ms per batch")
    head = ["frames", "batch", "antialias"] + [f"engine T={t}" for t in args.threads] + ["numpy", "pillow+numpy",
                                                                                         "numpy/engine", "pillow/engine"]
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for aa in modes:
        pre = pyengine.Preprocess.imagenet(antialias=aa)
        engines = {t: pyengine.build(pool_model(224, 224), optimize=False, num_threads=t, preprocess=pre)
                   for t in args.threads}
        for label, (h, w) in sizes.items():
            for n in args.batches:
                frames = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
                fns = {f"T={t}": (lambda e=e: e(frames)) for t, e in engines.items()}
                fns["numpy"] = lambda: pre.apply_numpy(frames, np.float32)
                if have_pil and aa:
                    fns["pillow"] = lambda: pillow_numpy(frames, pre)
                ms = interleaved_medians(fns, args.repeat)
                best = min(ms[f"T={t}"] for t in args.threads)
                pil = ms.get("pillow")
                row = [label, str(n), "on" if aa else "off"] + [f"{ms[f'T={t}']:.2f}" for t in args.threads]
                row += [f"{ms['numpy']:.1f}", "-" if pil is None else f"{pil:.1f}",
                        f"{ms['numpy'] / best:.0f}x", "-" if pil is None else f"{pil / best:.1f}x"]
                print(" | ".join(row), flush=True)
    print("ratios use the fastest engine column; Pillow has no two-tap bilinear, so it runs only with antialias on")
    if args.tiers:
        tier_table(args.tiers.split(","), modes, sizes, args.repeat, rng)
    return 0


def tier_table(tiers, modes, sizes, repeat, rng) -> None:
    """Engine time per kernel variant (ISA cap at build), 1 thread, batch 1."""
    from pyengine import _core

    have = _core.cpu_info()["max_isa"]
    print()
    print(" | ".join(["frames", "antialias"] + [f"{t} ms" for t in tiers] + [f"{t} / {tiers[-1]}" for t in tiers[:-1]]))
    print(" | ".join("---" for _ in range(2 + 2 * len(tiers) - 1)))
    for aa in modes:
        pre = pyengine.Preprocess.imagenet(antialias=aa)
        engines = {}
        prev = _core.isa_cap()
        try:
            for t in tiers:
                _core.set_isa_cap(t)
                engines[t] = pyengine.build(pool_model(224, 224), optimize=False, num_threads=1, preprocess=pre)
        finally:
            _core.set_isa_cap(prev)
        for label, (h, w) in sizes.items():
            frames = rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)
            ms = interleaved_medians({t: (lambda e=e: e(frames)) for t, e in engines.items()}, repeat)
            print(" | ".join([label, "on" if aa else "off"] + [f"{ms[t]:.2f}" for t in tiers]
                             + [f"{ms[t] / ms[tiers[-1]]:.2f}x" for t in tiers[:-1]]), flush=True)
    print(f"(tiers above the CPU's ({have}) run the highest one it has)")


if __name__ == "__main__":
    sys.exit(main())
