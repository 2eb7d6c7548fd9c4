#!/usr/bin/env python3
"""INT8 vs FP32 top-1 agreement of every model family, trained as
tests/test_torch_families.py trains it, on its 300 held-out real crops:
pyengine's INT8 (default calibration on 128 training crops) and onnxruntime's
own INT8 (quantize_static, QDQ, u8 activations, s8 per-channel weights, the
same calibration crops) on the same TorchScript export.

    python tools/family_agreement.py                      # every family (about 10 minutes)
    python tools/family_agreement.py rmnet18 sew_resnet18 --tensors 5
    python tools/family_agreement.py --methods mse,percentile,entropy,minmax --more 100
    python tools/family_agreement.py --classifier        # and with the classifier kept in FP32

Prints a markdown table: the trained network's FP32 top-1 on the held-out
crops, both INT8 agreements, the relative L2 error of pyengine's INT8 logits
and the training seconds; ``--tensors N`` adds pyengine's N least accurate
quantized tensors per family (pyengine.quantize.accuracy_report, SQNR in dB);
``--classifier`` a table of pyengine's INT8 as built and with its final
classifier (the last Gemm/MatMul) kept in FP32 (agreement on 300 and 300 +
10 ``--more`` crops, logits error); ``--methods`` a second table: pyengine's INT8 agreement per calibration
method, on the test's 300 held-out crops and on those plus ``--more`` per
class drawn again from the same held-out tiles (a larger sample: one crop is
0.33 point of 300).
Needs torch, onnxruntime and scikit-image.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)

import pyengine  # noqa: E402


def ort_agreement(path, calib, x, fp32, tmp):
    """onnxruntime u8s8 INT8 top-1 agreement with fp32 logits, or the reason it failed."""
    import onnxruntime as ort

    from bench import ort_u8s8_model

    try:
        q = ort_u8s8_model(path, os.path.join(tmp, "u8s8.onnx"), "input",
                           [calib[i:i + 32] for i in range(0, len(calib), 32)])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 4
        sess = ort.InferenceSession(q, opts, providers=["CPUExecutionProvider"])
        out = np.concatenate([sess.run(None, {"input": x[i:i + 50]})[0] for i in range(0, len(x), 50)])
    except Exception as exc:  # onnxruntime's quantizer or runtime refusing the model
        return f"failed ({str(exc).splitlines()[0][:60]})"
    return f"{100 * np.mean(out.argmax(1) == fp32.argmax(1)):.2f}%"


def method_agreements(path, family, data, fp32_engine, methods, more, ttf):
    """[(agreement on the 300 held-out crops, on those and `more` per class
    more), per calibration method] of pyengine's INT8 with its FP32."""
    x_more, _ = ttf._crops(tuple(family.input_shape), more, "test", np.random.default_rng(777))
    x = np.concatenate([data["test"][0], ((x_more - data["mean"]) / data["std"]).astype(np.float32)])
    fp32 = ttf.run_batched(fp32_engine, x).argmax(1)
    row = []
    for method in methods:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            eng = pyengine.build(path, backend="cpu", precision="int8", calibration_data=data["calib"], report=False,
                                 progress=False, num_threads=1, calibration_method=method)
        int8 = ttf.run_batched(eng, x).argmax(1)
        n = len(data["test"][0])
        row.append((100 * np.mean(int8[:n] == fp32[:n]), 100 * np.mean(int8 == fp32)))
    return row


def final_classifier(path):
    """The ONNX name of the model's last Gemm or MatMul node (its classifier), or None."""
    import onnx

    names = [n.name for n in onnx.load(path, load_external_data=False).graph.node if n.op_type in ("Gemm", "MatMul")]
    return names[-1] if names else None


def classifier_rows(path, family, data, fp32_engine, more, ttf):
    """(agreement on the 300 held-out crops, on those and `more` per class
    more, logits relative L2 error on all of them) of pyengine's INT8 with
    its FP32: as built by default, and with the final classifier kept in
    FP32 (keep_fp32); None for the second where the model has no Gemm/MatMul."""
    x_more, _ = ttf._crops(tuple(family.input_shape), more, "test", np.random.default_rng(777))
    x = np.concatenate([data["test"][0], ((x_more - data["mean"]) / data["std"]).astype(np.float32)])
    fp32 = ttf.run_batched(fp32_engine, x)
    n = len(data["test"][0])
    rows = []
    for keep in ([], [final_classifier(path)]):
        if keep and keep[0] is None:
            rows.append(None)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            eng = pyengine.build(path, backend="cpu", precision="int8", calibration_data=data["calib"], report=False,
                                 progress=False, num_threads=1, keep_fp32=keep)
        int8 = ttf.run_batched(eng, x)
        same = int8.argmax(1) == fp32.argmax(1)
        rows.append((100 * np.mean(same[:n]), 100 * np.mean(same),
                     float(np.linalg.norm(int8 - fp32) / np.linalg.norm(fp32))))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("families", nargs="*", help="family names (default: all)")
    ap.add_argument("--tensors", type=int, default=0, help="also list the N least accurate quantized tensors")
    ap.add_argument("--methods", default="", help="comma list of calibration methods to compare (second table)")
    ap.add_argument("--more", type=int, default=100,
                    help="with --methods or --classifier: more held-out crops per class")
    ap.add_argument("--classifier", action="store_true",
                    help="also compare INT8 with the final classifier (last Gemm/MatMul) kept in FP32")
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]

    import torch

    torch.set_num_threads(1)
    import test_torch_families as ttf
    from test_torch_export import export

    names = args.families or ttf.FAMILY_NAMES
    print("| family | FP32 top-1 (held out) | pyengine INT8 agreement | onnxruntime INT8 agreement "
          "| INT8 logits rel. L2 | training s |")
    print("|---|---|---|---|---|---|")
    details, by_method, by_classifier = [], [], []
    for name in names:
        family = ttf.torch_models.FAMILIES[name]
        model, data, train_s = ttf.trained_family(name)
        x, y = data["test"]
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, f"{name}.onnx")
            export(model, path, "torchscript", tuple(family.input_shape))
            fp32_engine = pyengine.build(path, backend="cpu", num_threads=1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                int8_engine = pyengine.build(path, backend="cpu", precision="int8", calibration_data=data["calib"],
                                             report=False, progress=False, num_threads=1)
            fp32, int8 = ttf.run_batched(fp32_engine, x), ttf.run_batched(int8_engine, x)
            ort = ort_agreement(path, data["calib"], x, fp32, tmp)
            if args.tensors:
                from pyengine.quantize import accuracy_report

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    rep = accuracy_report(path, {"input": x}, calibration_data=data["calib"], num_threads=1)
                details.append((name, rep.get("tensors", [])[:args.tensors]))
            if methods and family.int8:
                by_method.append((name, method_agreements(path, family, data, fp32_engine, methods, args.more, ttf)))
            if args.classifier and family.int8:
                by_classifier.append((name, classifier_rows(path, family, data, fp32_engine, args.more, ttf)))
        rel = float(np.linalg.norm(int8 - fp32) / np.linalg.norm(fp32))
        print(f"| {name} | {100 * np.mean(fp32.argmax(1) == y):.2f}% "
              f"| {100 * np.mean(int8.argmax(1) == fp32.argmax(1)):.2f}% | {ort} | {rel:.3f} | {train_s:.1f} |",
              flush=True)
        ttf.trained_family.cache_clear()
    if by_method:
        print(f"\n| family | {' | '.join(methods)} |  (INT8 agreement: 300 held-out crops / "
              f"300 + {10 * args.more} more)")
        print("|---|" + "---|" * len(methods))
        for name, row in by_method:
            print(f"| {name} | " + " | ".join(f"{a:.2f}% / {b:.2f}%" for a, b in row) + " |")
    if by_classifier:
        print(f"\n| family | INT8 agreement, default (300 / 300 + {10 * args.more}) | logits rel. L2 "
              f"| classifier in FP32 | logits rel. L2 |")
        print("|---|---|---|---|---|")
        cell = lambda r: "n/a | n/a" if r is None else f"{r[0]:.2f}% / {r[1]:.2f}% | {r[2]:.4f}"  # noqa: E731
        for name, (default, kept) in by_classifier:
            print(f"| {name} | {cell(default)} | {cell(kept)} |")
    for name, tensors in details:
        print(f"\n{name}: least accurate quantized tensors (SQNR dB)")
        for t in tensors:
            print(f"  {t['sqnr_db']:7.2f}  {t['kind']:<10} {t['tensor'][:48]:<48} -> {', '.join(t['nodes'])[:60]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
