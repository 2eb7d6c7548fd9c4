#!/usr/bin/env python3
"""pyengine against onnxruntime on real architectures as users get them:
timm and torchvision models, random weights (random BatchNorm statistics),
exported by PyTorch's TorchScript exporter at 224x224, batch 1.

    python tools/bench_timm.py                                  # the default list (about 20 minutes)
    python tools/bench_timm.py resnet50d,tv:convnext_tiny --runs 9

Needs torch, timm (and torchvision for the ``tv:`` names) and onnxruntime:
none of them is a pyengine dependency. Per model it prints pyengine's FP32
and INT8 medians beside onnxruntime's FP32 and u8s8 INT8 (``quantize_static``
after ``quant_pre_process``, as bench.py builds it), the ratios (below 1:
pyengine is faster), and pyengine FP32's relative L2 error against
onnxruntime on the same input (a correctness check: a new architecture
either builds and agrees, or the row says why not). INT8 is calibrated on 4
random images with nearest weight rounding (timings, not accuracy:
tests/test_torch_families.py measures that).
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
sys.path.insert(0, HERE)

import pyengine  # noqa: E402
from bench import _ort_session, cpu_description, interleaved, ort_u8s8_model  # noqa: E402

DEFAULT = ("tv:resnet50,tv:resnext50_32x4d,tv:wide_resnet50_2,tv:densenet121,tv:regnet_y_800mf,tv:convnext_tiny,"
           "tv:mobilenet_v2,tv:efficientnet_b0,resnet50d,seresnet50,skresnet18,ecaresnet50d,res2net50_26w_4s,"
           "resnest50d,repvgg_a2,resnetv2_50,cspresnet50,dla34,dpn68,nf_resnet26,gcresnet50t,resnetrs50,tresnet_m,"
           "regnetz_b16,ghostnet_100,hrnet_w18_small,selecsls42b,rexnet_100,resnet26t,seresnext26d_32x4d,resnet50_gn,"
           "ese_vovnet19b_dw,xception41")


def make_model(name: str):
    """A timm model, or a torchvision one for ``tv:<name>``, random weights,
    random BatchNorm running statistics, eval mode."""
    import torch

    if name.startswith("tv:"):
        import torchvision

        model = getattr(torchvision.models, name[3:])(weights=None)
    else:
        import timm

        model = timm.create_model(name, pretrained=False)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                c = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
    return model.eval()


def bench_one(name: str, size: int, threads: int, runs: int, tmp: str) -> str:
    import torch

    model = make_model(name)
    path = os.path.join(tmp, "model.onnx")
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(x),), path, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"])
    calib = [np.random.default_rng(i).standard_normal((1, 3, size, size)).astype(np.float32) for i in range(4)]
    fp32 = pyengine.build(path, backend="cpu", num_threads=threads)
    ort_fp32 = _ort_session(path, threads)
    ref = ort_fp32.run(None, {"input": x})[0]
    out = fp32.run({"input": x})["output"]
    err = float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        int8 = pyengine.build(path, backend="cpu", precision="int8", calibration_data=calib, report=False,
                              progress=False, weight_rounding="nearest", num_threads=threads)
    calls = {"fp32": lambda: fp32.run({"input": x}), "ort fp32": lambda: ort_fp32.run(None, {"input": x}),
             "int8": lambda: int8.run({"input": x})}
    try:
        q8 = _ort_session(ort_u8s8_model(path, os.path.join(tmp, "u8s8.onnx"), "input", calib), threads)
        q8.run(None, {"input": x})
        calls["ort int8"] = lambda: q8.run(None, {"input": x})
    except Exception:  # onnxruntime's quantizer refusing the model: the row says so
        pass
    med = {k: float(np.median(v)) for k, v in interleaved(calls, runs, 1).items()}
    ort8 = med.get("ort int8")
    int8_cells = (f"{med['int8']:.1f} | {ort8:.1f} | {med['int8'] / ort8:.2f}x" if ort8
                  else f"{med['int8']:.1f} | failed | -")
    return (f"| {name} | {med['fp32']:.1f} | {med['ort fp32']:.1f} | {med['fp32'] / med['ort fp32']:.2f}x "
            f"| {int8_cells} | {err:.1e} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="?", default=DEFAULT, help="comma list: timm names, tv:<torchvision name>")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5, help="interleaved rounds (medians)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    brand, _ = cpu_description()
    print(f"cpu: {brand}; pyengine tier {pyengine._core.cpu_info()['isa']}; batch 1; {args.size}x{args.size}; "
          f"threads {args.threads}; {args.runs} interleaved rounds")
    print("| model | pyengine FP32 ms | ORT FP32 ms | FP32 ratio | pyengine INT8 ms | ORT INT8 ms | INT8 ratio "
          "| FP32 rel. L2 vs ORT |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                print(bench_one(name, args.size, args.threads, args.runs, tmp), flush=True)
            except Exception as exc:  # one architecture failing is a finding, not the end of the table
                print(f"| {name} | failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
