"""Checks an aarch64 build of pyengine's C++ runtime against Python on x86.

Saves plans (FP32 and INT8 zoo models, 2-D and 3-D), runs each through the
cross-built `pyengine_run` sample under qemu-user, and compares its output
with `engine.run` here, on the same fresh random input. Used by
tools/ci/arm64.sh; run it directly with an existing cross build:

    python3 tools/ci/arm64_check.py build-arm64/pyengine_run

aarch64 runs the portable reference kernels (no x86 tier exists there), so
FP32 results differ from the x86 SIMD kernels in summation order only:
relative L2 <= 1e-5. INT8 plans run integer arithmetic with the same
requantization on both sides: their outputs must agree to within one int8
step of the last layer's output scale, and in practice they are equal.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import pyengine
from pyengine import zoo

QEMU = ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"]
FP32_REL_L2 = 1e-5

# (zoo model, image size or None, batch, precision)
CASES = [
    ("resnet18", 32, 2, "fp32"),
    ("se_resnet", None, 1, "fp32"),
    ("r2plus1d", None, 1, "fp32"),
    ("resnet18", 32, 2, "int8"),
]


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / max(np.linalg.norm(b.astype(np.float64)), 1e-30))


def build_case(name: str, size, precision: str, rng: np.random.Generator):
    model = zoo.build_model(name, image_size=size)
    if precision == "int8":
        calib = [zoo.make_input(model, 4, seed=s) for s in range(4)]
        return pyengine.build(model, precision="int8", calibration_data=calib, progress=False)
    return pyengine.build(model)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runner", help="the aarch64 pyengine_run binary")
    args = parser.parse_args()
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, size, batch, precision in CASES:
            engine = build_case(name, size, precision, rng)
            plan = os.path.join(tmp, f"{name}-{precision}.plan")
            engine.save(plan)
            spec = engine.inputs[0]
            shape = (batch,) + tuple(spec.shape[1:])
            x = rng.standard_normal(shape, dtype=np.float32)
            want = engine.run({spec.name: x})[engine.outputs[0].name]
            x.tofile(os.path.join(tmp, "in.f32"))
            out = os.path.join(tmp, "out.f32")
            start = time.perf_counter()
            proc = subprocess.run(QEMU + [args.runner, plan, str(batch), "--input", os.path.join(tmp, "in.f32"),
                                          "--output", out], capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if proc.returncode != 0:
                print(f"FAIL {name} {precision}: pyengine_run exited {proc.returncode}: {proc.stderr.strip()}")
                failures += 1
                continue
            got = np.fromfile(out, dtype=np.float32).reshape(want.shape)
            err = rel_l2(got, want)
            if precision == "int8":
                step = float(np.abs(want).max()) / 127.0
                ok = float(np.abs(got - want).max()) <= step + 1e-6
                detail = f"max |diff| {np.abs(got - want).max():.3g} (one int8 step {step:.3g})"
            else:
                ok = err <= FP32_REL_L2
                detail = f"rel L2 {err:.2e} (<= {FP32_REL_L2:g})"
            print(f"{'ok  ' if ok else 'FAIL'} {name:10s} {precision} batch {batch} {tuple(shape)}: {detail}, "
                  f"qemu run {seconds:.1f} s")
            failures += not ok
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
