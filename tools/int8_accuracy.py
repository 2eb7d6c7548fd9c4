#!/usr/bin/env python3
"""INT8 accuracy of every calibration method on the real-data models.

    python tools/int8_accuracy.py                    # both models, training seed 0
    python tools/int8_accuracy.py --seeds 0 1 2      # more trainings (a spread, not one draw)
    python tools/int8_accuracy.py --models resnet20_background_digits
    python tools/int8_accuracy.py --weight-rounding nearest   # int8 weights rounded to nearest (not GPTQ)

Trains the models of tests/realdata_models.py (PyTorch CPU; scikit-learn
digits and scikit-image's bundled pictures, nothing downloaded, nothing
cached), calibrates on 512 training images with each method, and scores
pyengine's INT8 engine against its FP32 engine on the held-out images:
FP32 top-1, INT8 top-1, the drop in points and the top-1 agreement with FP32.

The row "entropy (old KL)" is the entropy method as pyengine had it before it
flattened point masses (only bin 0 was, as in NVIDIA's tools), computed here
in numpy from the same histograms and fed to the same build through a
calibration cache.

Needs: torch, scikit-learn, scikit-image.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import pyengine  # noqa: E402
from pyengine.calibration_table import DEFAULT_METHOD, METHODS, CalibrationTable, save_calibration  # noqa: E402

THREADS = 1


def old_entropy_bin(hist) -> int:
    """The threshold bin of the KL search with only h[0] = h[1] (the old
    EntropyCalibration2 port, as NVIDIA's pytorch-quantization/ModelOpt
    _compute_amax_entropy do it), with prefix sums."""
    h = np.asarray(hist, dtype=np.float64).copy()
    h[0] = h[1]
    n, levels = len(h), 128
    mass = np.concatenate([[0.0], np.cumsum(h)])
    nonempty = np.concatenate([[0], np.cumsum(h > 0)])
    hlogh = np.concatenate([[0.0], np.cumsum(np.where(h > 0, h * np.log(np.where(h > 0, h, 1.0)), 0.0))])
    total = mass[n]
    best, best_i = np.inf, n
    j = np.arange(levels)
    for i in range(levels, n + 1):
        last, outliers = i - 1, total - mass[i]
        p_last = h[last] + outliers
        if mass[i] <= 0 or (h[last] == 0 and p_last > 0):
            continue
        begin, end = (j * i + levels - 1) // levels, ((j + 1) * i + levels - 1) // levels
        bins, level_mass = nonempty[end] - nonempty[begin], mass[end] - mass[begin]
        ok = bins > 0
        weight = level_mass.copy()
        weight[-1] += outliers
        p_log_q = np.sum(weight[ok] * np.log(level_mass[ok] / bins[ok]))
        p_log_p = hlogh[last] + (p_last * np.log(p_last) if p_last > 0 else 0.0)
        kl = (p_log_p - p_log_q) / total + np.log(mass[i]) - np.log(total)
        if kl <= best:
            best, best_i = kl, i
    return best_i


def old_entropy_cache(model, calib, path) -> None:
    """Writes a calibration cache holding the old KL thresholds for ``model``."""
    from pyengine.calibration import iter_batches
    from pyengine.quantize import _Session

    session = _Session(model, num_threads=THREADS)
    runner = session.float_runner()
    cal = runner.attach(session.float_tensors)
    try:
        for _, feeds in iter_batches(calib, session.specs, 32, None, False):
            runner.run(feeds)
        amax = {}
        for name in session.float_tensors:
            st = cal.stats(name)
            if st["count"] == 0:
                continue
            if st["absmax"] == 0:
                amax[name] = 0.0
                continue
            hist = st["histogram"]
            amax[name] = min(st["range"] * old_entropy_bin(hist) / len(hist), float(st["absmax"]))
    finally:
        runner.detach()
    save_calibration(CalibrationTable(session.model_sha256, "entropy", 99.99, amax, runtime="old KL (numpy)"), path)


def evaluate(model, data, method, cache=None, weight_rounding="gptq"):
    x, y = data["test"]
    options = {"calibration_cache": cache} if cache else {}
    engine = pyengine.build(model, precision="int8", calibration_data=data["calib"], calibration_method=method,
                            report=False, progress=False, num_threads=THREADS, weight_rounding=weight_rounding,
                            **options)
    out = engine(x)
    return float(np.mean(out.argmax(1) == y)), out.argmax(1)


def main(argv=None) -> int:
    import realdata_models

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=sorted(realdata_models.MODELS),
                    choices=sorted(realdata_models.MODELS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds")
    ap.add_argument("--no-old", action="store_true", help="leave out the old-KL row")
    ap.add_argument("--weight-rounding", choices=["gptq", "nearest"], default="gptq",
                    help="int8 weight rounding (pyengine's default: gptq)")
    args = ap.parse_args(argv)

    rows = []
    for name in args.models:
        data = realdata_models.MODELS[name][0]()
        for seed in args.seeds:
            t0 = time.time()
            net = realdata_models.make_and_train(name, data, seed)
            model = realdata_models.export(net, data["test"][0])
            x, y = data["test"]
            fp32 = pyengine.build(model, num_threads=THREADS)(x).argmax(1)
            fp32_acc = float(np.mean(fp32 == y))
            methods = [(m + (" (default)" if m == DEFAULT_METHOD else ""), m, None) for m in METHODS]
            with tempfile.TemporaryDirectory() as tmp:
                if not args.no_old:
                    cache = os.path.join(tmp, "old.calib")
                    old_entropy_cache(model, data["calib"], cache)
                    methods.append(("entropy (old KL)", "entropy", cache))
                for label, method, cache in methods:
                    acc, pred = evaluate(model, data, method, cache, args.weight_rounding)
                    rows.append((name, seed, len(y), label, fp32_acc, acc, float(np.mean(pred == fp32))))
            print(f"# {name} seed {seed}: {time.time() - t0:.0f} s", file=sys.stderr)

    print("| model | seed | test images | method | FP32 top-1 | INT8 top-1 | drop (pt) | agreement |")
    print("|---|---|---|---|---|---|---|---|")
    for name, seed, n, label, fa, ia, agree in rows:
        print(f"| {name} | {seed} | {n} | {label} | {100 * fa:.2f}% | {100 * ia:.2f}% | {100 * (fa - ia):+.2f} | "
              f"{100 * agree:.2f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
