#!/usr/bin/env python3
"""Pipelined vs sequential video inference, frames per second (issue 13).

The same video, engine (1 thread) and batch size through pyengine.video twice:

- sequential: decode (PyAV), transform and run one after another in one
  thread (``pyengine.video.stream(..., pipelined=False)``);
- pipelined: decode + transform in one thread, inference in another, over a
  bounded queue (the default); the engine releases the GIL while it runs.

The two modes alternate for --rounds rounds; the table gives each mode's
median frames/s and the same-round ratio (median of pipelined/sequential per
round). It also splits the sequential loop's time per frame into the time
inside engine.run (i) and the rest (d: decode, frame conversion, transform,
batching), which bound the possible gain: sequential costs d + i per frame, a
perfect pipeline max(d, i).

    pip install av scikit-image
    PYTHONPATH=. python3 tools/bench_video.py                     # se_resnet 64x64 over 360x640
    PYTHONPATH=. python3 tools/bench_video.py --model resnet18 --image-size 112

The video is a panning crop over scikit-image's astronaut (random pixels
without scikit-image), MPEG-4, written once to a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pyengine  # noqa: E402
import pyengine.video as V  # noqa: E402
from pyengine import zoo  # noqa: E402


def picture(height, width):
    """A photo at least (height, width) big: the astronaut tiled, or noise."""
    try:
        from skimage import data

        pic = data.astronaut()
    except ImportError:
        pic = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    reps = (-(-2 * height // pic.shape[0]), -(-2 * width // pic.shape[1]), 1)
    return np.tile(pic, reps)


class _Timed:
    """The engine with the time spent in run() added up."""

    def __init__(self, engine):
        self.engine, self.inputs, self.seconds = engine, engine.inputs, 0.0

    def run(self, feeds):
        t = time.perf_counter()
        out = self.engine.run(feeds)
        self.seconds += time.perf_counter() - t
        return out


def run(engine, path, pipelined, batch, thread_type):
    """(frames/s, outputs, seconds per frame inside engine.run)."""
    timed = _Timed(engine)
    src = V.VideoFile(path, thread_type=thread_type)
    t = time.perf_counter()
    with V.stream(timed, src, max_batch=batch, pipelined=pipelined) as s:
        outs = [r.output for r in s]
    wall = time.perf_counter() - t
    return len(outs) / wall, np.stack(outs), (wall - timed.seconds) / len(outs), timed.seconds / len(outs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="se_resnet", help="a 2-D zoo model (default se_resnet, 64x64)")
    ap.add_argument("--image-size", type=int, help="resnet18/resnet50 only: the full network at this size")
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="engine threads")
    ap.add_argument("--decode-threads", default="none", choices=("AUTO", "FRAME", "SLICE", "none"),
                    help="FFmpeg decoder threading, the same for both loops. none (default): decoding happens "
                         "in the calling thread, so the sequential loop is strictly sequential; AUTO (pyengine's "
                         "default for VideoFile) lets FFmpeg decode ahead in its own threads, which already "
                         "overlaps some decoding with inference in the sequential loop")
    args = ap.parse_args(argv)
    thread_type = None if args.decode_threads == "none" else args.decode_threads

    engine = pyengine.build(zoo.build_model(args.model, image_size=args.image_size), backend="cpu",
                            num_threads=args.threads)
    shape = engine.inputs[0].shape
    if len(shape) != 4:
        raise SystemExit(f"{args.model} is not a 2-D model (input {shape})")
    with tempfile.TemporaryDirectory(prefix="pyengine-bench-video-") as work:
        path = V.write_video(os.path.join(work, "pan.mp4"),
                             V.panning(picture(args.height, args.width), args.frames, args.height, args.width))
        fps = {"sequential": [], "pipelined": []}
        ratios, decode_ms, infer_ms = [], [], []
        ref = None
        for _ in range(args.rounds):
            f_seq, out_seq, rest, inside = run(engine, path, False, args.batch, thread_type)
            f_pipe, out_pipe, _, _ = run(engine, path, True, args.batch, thread_type)
            if ref is None:
                ref = out_seq
            if not (np.array_equal(out_seq, ref) and np.array_equal(out_pipe, ref)):
                raise SystemExit("pipelined and sequential results differ")
            fps["sequential"].append(f_seq)
            fps["pipelined"].append(f_pipe)
            ratios.append(f_pipe / f_seq)
            decode_ms.append(1e3 * rest)
            infer_ms.append(1e3 * inside)
        d, i = statistics.median(decode_ms), statistics.median(infer_ms)

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    print(f"machine: {cpu}, {os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"model: zoo {args.model} {'x'.join(str(d) for d in shape[1:])} fp32, {engine.num_threads} engine "
          f"thread(s), batch {args.batch}; video {args.frames} frames {args.height}x{args.width} MPEG-4, "
          f"decoder threading {args.decode_threads}")
    print(f"sequential loop, per frame (medians): in engine.run i = {i:.2f} ms, the rest (decode, convert, "
          f"transform, batching) d = {d:.2f} ms -> a perfect pipeline would reach (d + i) / max(d, i) = "
          f"{(d + i) / max(d, i):.2f}x the sequential rate")
    print(f"{'loop':<12}{'median frames/s':>17}{'min':>9}{'max':>9}")
    for k, v in fps.items():
        print(f"{k:<12}{statistics.median(v):>17.1f}{min(v):>9.1f}{max(v):>9.1f}")
    print(f"pipelined / sequential, same round: median {statistics.median(ratios):.2f}x "
          f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)}); results identical in every round")


if __name__ == "__main__":
    main()
