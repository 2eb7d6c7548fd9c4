#!/usr/bin/env python3
"""pyengine vs onnxruntime (and OpenVINO) latency, FP32 and INT8, in one run.

    python tools/bench.py                        # ResNet-18/50, 224x224, batch 1 and 8, 2 threads
    python tools/bench.py --tiers avx2,avx512    # also pyengine with PYENGINE_ISA-style caps
    python tools/bench.py --models resnet50 --batches 1 --runs 20 --no-int8
    python tools/bench.py --families                         # every family of tests/torch_models.py
    python tools/bench.py --families resnet101,convnext_t --runs 5   # some of them, fewer rounds

Prints, for the machine at hand:
  - the CPU model, its ISA flags and the tier pyengine uses (PYENGINE_ISA caps it);
  - the round trip of a cache line between the first two CPUs, before and after
    the runs (_core.core_to_core_ns): ~50 ns where they share a cache; several
    hundred on a VM whose vCPUs sit apart (or on busy CPUs), where every
    multi-threaded runtime is slower, so compare runs only in one state;
  - the attainable FP32 GEMM rate: numpy sgemm (OpenBLAS) GFLOP/s on the same
    thread count, and for each FP32 row the share of it the model reaches
    (model FLOPs / latency / sgemm rate);
  - per model and batch, interleaved timings (one call of each runtime per
    round, in a random order, --settle seconds apart, so machine noise and
    the previous runtime's spinning threads hit all alike), median and p90 ms, and the
    ratio to onnxruntime FP32 (and, for INT8 rows, to onnxruntime INT8):
      pyengine fp32            build(model)
      pyengine int8            build(precision="int8"), default (mse) calibration on random images
      pyengine fp32 [avx2]...  the same with the ISA tier capped (--tiers)
      ort fp32                 onnxruntime, ORT_ENABLE_ALL
      ort int8 u8s8            onnxruntime on its own quantize_static model: QDQ, QUInt8
                               activations, QInt8 per-channel weights (its fastest CPU form),
                               after quant_pre_process (BatchNorm folded), as its docs ask
      pyengine int8 ort-file   pyengine on that same onnxruntime file (its u8 Q/DQ lowered to the
                               int8 kernels with zero points)
      openvino fp32 / int8     when `openvino` is installed (pip install openvino); INT8 runs the
                               same u8s8 QDQ model
All INT8 variants calibrate on the same random images: these rows measure
speed, not accuracy (tests/test_int8_accuracy.py measures accuracy). Read the
ratios, not the absolute times: shared machines are noisy.

--families (needs torch): each registered model family's full-size form
(tests/torch_models.FAMILIES), exported by PyTorch (TorchScript by default,
--exporter dynamo for the new exporter), batch 1, interleaved as above; a
markdown table with the ONNX file's node count and pyengine's after its
optimizer, FP32 latency against onnxruntime FP32 and INT8 latency against
onnxruntime's u8s8 QDQ model (medians, ratios: below 1 is faster than
onnxruntime).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import pyengine  # noqa: E402
from pyengine import _core, zoo  # noqa: E402

ISA_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx_vnni",
             "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def cpu_description() -> tuple[str, list]:
    """(model name, the ISA flags of ISA_FLAGS the CPU reports)."""
    brand = _core.cpu_info().get("brand") or platform.processor() or "unknown CPU"
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    brand = line.split(":", 1)[1]
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return brand.strip(), [f for f in ISA_FLAGS if f in flags]


_SGEMM_SNIPPET = """
import time, numpy as np
n = {n}
a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
a @ b
best = 1e9
for _ in range({reps}):
    t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)
print(2.0 * n ** 3 / best / 1e9)
"""


def sgemm_gflops(threads: int, n: int = 1536, reps: int = 7) -> float:
    """numpy's float32 GEMM rate (best of reps) on `threads` threads, measured
    in a child process so the BLAS thread count can be set before it loads."""
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
        env[var] = str(threads)
    out = subprocess.run([sys.executable, "-c", _SGEMM_SNIPPET.format(n=n, reps=reps)], env=env,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def model_flops(engine, feeds) -> float:
    """FLOPs of one run (the per-layer profile's counts: 2 per multiply-add)."""
    return float(sum(layer.get("flops", 0) or 0 for layer in engine.profile(feeds, runs=1)))


def _ort_session(path_or_model, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    src = path_or_model if isinstance(path_or_model, str) else path_or_model.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def ort_u8s8_model(fp32_path: str, out_path: str, in_name: str, calib: list) -> str:
    """onnxruntime's static QDQ quantization: QUInt8 activations, QInt8
    per-channel weights (u8s8, its fastest CPU form), after its own
    quant_pre_process as its documentation asks (it folds BatchNorm into the
    convs; without it each BN stays a separate DQ -> BN -> Q step, and
    onnxruntime's INT8 ResNet-18 runs 1.6x slower)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{in_name: x} for x in calib])

        def get_next(self):
            return next(self._it, None)

    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its per-tensor notes (BatchNorm gammas, pre-processing advice)
    try:
        pre_path = out_path + ".pre.onnx"
        quant_pre_process(fp32_path, pre_path, skip_symbolic_shape=True)
        quantize_static(pre_path, out_path, Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)
    return out_path


def _openvino():
    try:
        import openvino as ov  # noqa: F401
    except ImportError:
        return None
    return ov


def openvino_call(ov, path: str, in_name: str, threads: int):
    core = ov.Core()
    # f32: on CPUs with AVX512-BF16 or AMX, OpenVINO's default inference
    # precision is bf16, which would make its "fp32" row bf16 arithmetic.
    compiled = core.compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                                "INFERENCE_PRECISION_HINT": "f32"})
    req = compiled.create_infer_request()
    return lambda x: req.infer({in_name: x})


def _build(model, tier, threads, **kw):
    prev = _core.isa_cap()
    if tier:
        _core.set_isa_cap(tier)
    try:
        return pyengine.build(model, num_threads=threads, **kw)
    finally:
        _core.set_isa_cap(prev)


def interleaved(calls: dict, runs: int, warmup: int, settle_s: float = 0.1, seed: int = 0,
                clock=time.perf_counter) -> dict:
    """{label: [ms, ...]}: each round calls every runtime once, in a fresh
    random order, each call starting `settle_s` after the previous one ended.
    onnxruntime's worker threads keep spinning for a while after a run, and
    on a 2-core machine they slow down whatever runs next: in a fixed cyclic
    order one runtime would always pay for it. `clock=time.process_time`
    measures CPU time instead of the wall clock (single-threaded runs on a
    machine shared with other jobs)."""
    labels = list(calls)
    rng = np.random.default_rng(seed)
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    samples = {k: [] for k in calls}
    for _ in range(runs):
        for label in rng.permutation(labels):
            time.sleep(settle_s)
            t0 = clock()
            calls[label]()
            samples[label].append((clock() - t0) * 1e3)
    return samples


def export_family(family, path: str, exporter: str) -> None:
    """Writes the family's full-size form, exported as the tests export it
    (TorchScript: opset 17, BatchNorm kept; dynamo: opset 18, external data)."""
    import warnings

    import torch

    model = family.build(True)
    example = torch.randn(1, *family.full_input_shape)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(model, (example,), path, dynamo=False, opset_version=17, do_constant_folding=False,
                              training=torch.onnx.TrainingMode.EVAL, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        else:
            torch.onnx.export(model, (example,), path, dynamo=True, opset_version=18, external_data=True,
                              verbose=False, input_names=["input"], output_names=["logits"],
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},))


def families_main(args) -> int:
    """The --families table (see the module docstring)."""
    import onnx

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    import torch

    import torch_models

    torch.set_num_threads(args.threads)
    names = list(torch_models.FAMILIES) if args.families == "all" else args.families.split(",")
    unknown = [n for n in names if n not in torch_models.FAMILIES]
    if unknown:
        raise SystemExit(f"unknown families {unknown}; registered: {', '.join(torch_models.FAMILIES)}")
    import onnxruntime as ort

    brand, _ = cpu_description()
    print(f"cpu: {brand}; pyengine tier {_core.cpu_info()['isa']}; onnxruntime {ort.__version__}; "
          f"torch {torch.__version__}; exporter {args.exporter}; batch 1; threads={args.threads}; "
          f"runs={args.runs} (interleaved, medians)", flush=True)
    print(core_to_core_line("before the runs"), flush=True)
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            family = torch_models.FAMILIES[name]
            path = os.path.join(tmp, f"{name}.onnx")
            export_family(family, path, args.exporter)
            nodes_onnx = len(onnx.load(path, load_external_data=False).graph.node)
            rng = np.random.default_rng(0)
            x = rng.standard_normal((1, *family.full_input_shape), dtype=np.float32)
            calib = [rng.standard_normal((1, *family.full_input_shape), dtype=np.float32)
                     for _ in range(args.calib_batches)]
            fp32 = pyengine.build(path, backend="cpu", num_threads=args.threads)
            calls = {"pyengine fp32": lambda: fp32.run({"input": x}),
                     "ort fp32": (lambda s: lambda: s.run(None, {"input": x}))(_ort_session(path, args.threads))}
            int8 = None
            if family.int8 and not args.no_int8:
                int8 = pyengine.build(path, backend="cpu", precision="int8", calibration_data=calib, report=False,
                                      progress=False, num_threads=args.threads)
                calls["pyengine int8"] = lambda: int8.run({"input": x})
                try:
                    q_path = ort_u8s8_model(path, os.path.join(tmp, f"{name}_u8s8.onnx"), "input", calib)
                    session = _ort_session(q_path, args.threads)
                    session.run(None, {"input": x})
                    calls["ort int8 u8s8"] = lambda: session.run(None, {"input": x})
                except Exception as exc:  # onnxruntime's quantizer or runtime refusing the model
                    notes.append(f"{name}: onnxruntime INT8 failed: {str(exc).splitlines()[0][:200]}")
                    print(f"  {notes[-1]}", flush=True)
            med = {k: float(np.median(v)) for k, v in
                   interleaved(calls, args.runs, args.warmup, settle_s=args.settle).items()}
            opt = fp32.metadata.get("optimizer", {})
            row = (name, "x".join(map(str, family.full_input_shape)), nodes_onnx, opt.get("nodes_after"), med)
            rows.append(row)
            print(f"  {name}: {nodes_onnx} -> {row[3]} nodes, " +
                  ", ".join(f"{k} {v:.1f} ms" for k, v in med.items()), flush=True)
            del fp32, int8, calls
    print()
    print("| family | input | ONNX nodes | after optimizer | pyengine FP32 ms | ORT FP32 ms | FP32 ratio "
          "| pyengine INT8 ms | ORT INT8 ms | INT8 ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, shape, before, after, med in rows:
        int8 = "| - | - | -"
        if "pyengine int8" in med:
            ort8 = med.get("ort int8 u8s8")
            int8 = (f"| {med['pyengine int8']:.1f} | {ort8:.1f} | {med['pyengine int8'] / ort8:.2f}x" if ort8
                    else f"| {med['pyengine int8']:.1f} | failed | -")
        print(f"| {name} | {shape} | {before} | {after} | {med['pyengine fp32']:.1f} | {med['ort fp32']:.1f} "
              f"| {med['pyengine fp32'] / med['ort fp32']:.2f}x {int8} |")
    for note in notes:
        print(f"\n{note}")
    print("\nratio = pyengine median / onnxruntime median (below 1: pyengine is faster); INT8 calibrated on "
          "random images (speed, not accuracy: tests/test_torch_families.py measures that)")
    print(core_to_core_line("after the runs"))
    return 0


def core_to_core_line(when: str) -> str:
    """The machine-state line: the cache-line round trip between two CPUs."""
    ns = _core.core_to_core_ns()
    if ns < 0:
        return f"cross-core cache-line round trip ({when}): n/a (one CPU)"
    far = ("  (cores without a shared cache, or busy ones: multi-threaded timings are slower in this state)"
           if ns > 200 else "")
    return f"cross-core cache-line round trip ({when}): {ns:.0f} ns{far}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="?", const="all", default=None,
                   help="benchmark the model families of tests/torch_models.py instead (comma list, or all)")
    p.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript",
                   help="--families: the PyTorch exporter")
    p.add_argument("--models", default="resnet18,resnet50")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--size", type=int, default=224, help="input height/width")
    p.add_argument("--runs", type=int, default=10, help="timed rounds (each runs every runtime once)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--settle", type=float, default=0.1,
                   help="seconds between timed calls (lets spinning worker threads of the previous runtime idle)")
    p.add_argument("--tiers", default="", help="comma list of ISA caps (ref, avx2, avx512, vnni, amx) to add "
                                             "pyengine rows for, e.g. avx2,avx512")
    p.add_argument("--no-int8", action="store_true", help="skip the INT8 rows")
    p.add_argument("--no-openvino", action="store_true", help="skip OpenVINO even when installed")
    p.add_argument("--calib-batches", type=int, default=4)
    args = p.parse_args(argv)
    if args.families:
        return families_main(args)
    tiers = [t for t in args.tiers.split(",") if t]
    ov = None if args.no_openvino else _openvino()

    brand, flags = cpu_description()
    info = _core.cpu_info()
    print(f"cpu: {brand}  ({os.cpu_count()} logical CPUs)")
    print(f"isa flags: {' '.join(flags) or '-'}")
    print(f"pyengine tier: {info['isa']} (highest this CPU/build has: {info['max_isa']}; "
          f"PYENGINE_ISA={os.environ.get('PYENGINE_ISA', '') or 'unset'}); AMX int8 kernels: {info['amx_use']} "
          f"(PYENGINE_AMX=1 switches them on; untested on AMX hardware so far)")
    import onnxruntime as ort

    print(f"onnxruntime {ort.__version__}; openvino {ov.__version__ if ov else 'not installed'}; "
          f"threads={args.threads}; size={args.size}; runs={args.runs} (interleaved)")
    print(core_to_core_line("before the runs"))
    peak = sgemm_gflops(args.threads)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            model = zoo.build_model(name, image_size=args.size)
            in_name = model.graph.input[0].name
            fp32_path = os.path.join(tmp, f"{name}.onnx")
            import onnx

            onnx.save(model, fp32_path)
            pe = {"pyengine fp32": _build(model, None, args.threads)}
            for t in tiers:
                pe[f"pyengine fp32 [{t}]"] = _build(model, t, args.threads)
            ort_calls = {"ort fp32": _ort_session(fp32_path, args.threads)}
            ov_calls = {}
            if ov:
                ov_calls["openvino fp32"] = openvino_call(ov, fp32_path, in_name, args.threads)
            if not args.no_int8:
                calib = [zoo.make_input(model, 1, seed=100 + i)[in_name] for i in range(args.calib_batches)]
                kw = dict(precision="int8", calibration_data=calib, report=False, progress=False)
                pe["pyengine int8"] = _build(model, None, args.threads, **kw)
                for t in tiers:
                    pe[f"pyengine int8 [{t}]"] = _build(model, t, args.threads, **kw)
                q_path = ort_u8s8_model(fp32_path, os.path.join(tmp, f"{name}_u8s8.onnx"), in_name, calib)
                ort_calls["ort int8 u8s8"] = _ort_session(q_path, args.threads)
                pe["pyengine int8 ort-file"] = _build(q_path, None, args.threads)
                if ov:
                    ov_calls["openvino int8 u8s8"] = openvino_call(ov, q_path, in_name, args.threads)
            flops1 = model_flops(pe["pyengine fp32"], zoo.make_input(model, 1))
            for batch in (int(b) for b in args.batches.split(",")):
                x = zoo.make_input(model, batch)[in_name]
                calls = {}
                for label, eng in pe.items():
                    calls[label] = lambda e=eng: e.run({in_name: x})
                for label, sess in ort_calls.items():
                    calls[label] = lambda s=sess: s.run(None, {in_name: x})
                for label, fn in ov_calls.items():
                    calls[label] = lambda f=fn: f(x)
                samples = interleaved(calls, args.runs, args.warmup, settle_s=args.settle)
                med = {k: float(np.median(v)) for k, v in samples.items()}
                for label, v in samples.items():
                    gflops = flops1 * batch / (med[label] * 1e6) if "fp32" in label else None
                    vs_q = ""
                    if "int8" in label and "ort int8 u8s8" in med:
                        vs_q = f"{med[label] / med['ort int8 u8s8']:.2f}x"
                    rows.append((name, batch, label, med[label], float(np.percentile(v, 90)),
                                 med[label] / med["ort fp32"], vs_q, gflops))
    # Measured again at the end (the best of both): a loaded machine can
    # slow one measurement, and a too-low peak would inflate the shares.
    peak = max(peak, sgemm_gflops(args.threads))
    print(f"attainable FP32 GEMM rate: numpy sgemm {peak:.1f} GFLOP/s on {args.threads} threads "
          f"(best of two measurements)")
    print()
    print(f"{'model':<9} {'batch':>5} {'runtime':<24} {'median ms':>10} {'p90 ms':>9} {'vs ort fp32':>11} "
          f"{'vs ort int8':>11} {'% of sgemm':>10}")
    for name, batch, label, med, p90, ratio, vs_q, gflops in rows:
        share = f"{100 * gflops / peak:.0f}%" if gflops is not None else ""
        print(f"{name:<9} {batch:>5} {label:<24} {med:>10.2f} {p90:>9.2f} {ratio:>10.2f}x {vs_q:>11} {share:>10}")
    print(f"\nmodel FLOPs are pyengine's per-layer counts (2 per multiply-add); % of sgemm = "
          f"FLOPs / latency / {peak:.1f} GFLOP/s")
    print(core_to_core_line("after the runs"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
