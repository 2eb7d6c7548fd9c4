"""The `pyengine` command line: demo, build, run, profile, compare, inspect, video, export-triton.

Every command fails with a one-line message (no traceback) and a non-zero
exit code on a missing file, a bad model or a bad option.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from .api import default_threads
from .calibration import load_arrays
from .errors import InvalidArgumentError, PyengineError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_MISMATCH = 0, 1, 2, 3


# -- shared helpers -----------------------------------------------------------
def _parse_list(text: str, kind=str) -> list:
    try:
        return [kind(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InvalidArgumentError(f"cannot parse {text!r} as a comma-separated list of {kind.__name__}") from None


def _is_plan(path: str) -> bool:
    if not os.path.isfile(path):
        return path.endswith(".plan")
    with open(path, "rb") as f:
        return f.read(8) == b"PYENGPLN"


def _check_file(path: str) -> str:
    if not os.path.isfile(path):
        raise InvalidArgumentError(f"file '{path}' does not exist")
    return path


def load_engine(path: str, precision: str | None = None, threads: int = 0, optimize: bool = True,
                backend: str = "auto", **options):
    """A plan file is loaded (CPU or TensorRT); an ONNX file is built
    (precision, optimizer and backend as given; precision None: from the graph)."""
    import pyengine

    _check_file(path)
    if _is_plan(path):
        return pyengine.load(path, num_threads=threads)
    return pyengine.build(path, precision=precision, optimize=optimize, num_threads=threads, backend=backend,
                          **options)


def _plan_metadata(path: str) -> dict | None:
    """The metadata of a plan file (None for ONNX files), read without building anything."""
    if not (os.path.isfile(path) and _is_plan(path)):
        return None
    from .backends.tensorrt import read_plan

    return read_plan(path)[0]


def _parse_batch_range(text: str) -> tuple:
    parts = text.replace(",", ":").split(":")
    try:
        lo, opt, hi = (int(p) for p in parts)
    except ValueError:
        raise InvalidArgumentError(f"--batch-range must be MIN:OPT:MAX, e.g. 1:8:32, got {text!r}") from None
    if not (1 <= lo <= opt <= hi):
        raise InvalidArgumentError(f"--batch-range must be MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX, got {text}")
    return lo, opt, hi


def random_inputs(specs, batch: int, seed: int = 0) -> dict:
    """Fresh random inputs for an engine's or a model's input specs (name, dtype, shape)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, dtype, shape in specs:
        if shape is None:
            raise InvalidArgumentError(f"input '{name}' has an unknown rank: pass it with --input {name}=file.npy")
        dims = []
        for i, d in enumerate(shape):
            if d is None or (isinstance(d, int) and d < 0):
                if i != 0:
                    raise InvalidArgumentError(
                        f"input '{name}' has a dynamic axis {i} besides the batch: pass it with --input")
                d = batch
            dims.append(int(d))
        dtype = np.dtype(dtype)
        if dtype.kind == "f":
            feeds[name] = rng.standard_normal(dims).astype(dtype)
        elif dtype.kind == "b":
            feeds[name] = rng.integers(0, 2, dims).astype(dtype)
        else:
            feeds[name] = rng.integers(0, 10, dims).astype(dtype)
    return feeds


def _read_inputs(args_inputs, specs) -> dict | None:
    if not args_inputs:
        return None
    feeds = {}
    names = [s[0] for s in specs]
    for item in args_inputs:
        name, path = item.split("=", 1) if "=" in item else (None, item)
        if name is None:
            if len(names) != 1:
                raise InvalidArgumentError(f"the model has inputs {names}: use --input NAME=file.npy")
            name = names[0]
        data = load_arrays(_check_file(path), InvalidArgumentError)
        if isinstance(data, dict):
            feeds.update(data)
        else:
            feeds[name] = data
    return feeds


def _engine_specs(engine):
    return [(s.name, s.dtype, s.shape) for s in engine.inputs]


def _onnx_specs(model):
    from onnx import helper

    inits = {t.name for t in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        specs.append((vi.name, helper.tensor_dtype_to_np_dtype(tt.elem_type), shape))
    return specs


# -- commands -----------------------------------------------------------------
def cmd_demo(args) -> int:
    import time

    import pyengine
    from . import zoo

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"{args.model}.onnx")
    model = zoo.build_model(args.model, image_size=args.size)
    import onnx

    onnx.save(model, path)
    print(f"wrote {path} ({args.model}, random weights, input 1x3x{args.size}x{args.size})")
    t0 = time.perf_counter()
    engine = pyengine.build(path)
    threads = f", {engine.num_threads} threads" if engine.backend == "cpu" else ""
    print(f"built a {engine.backend}/{engine.precision} engine in {time.perf_counter() - t0:.2f} s{threads}")
    print(engine.report())
    plan = os.path.join(args.out, f"{args.model}.plan")
    engine.save(plan)
    engine = pyengine.load(plan)
    print(f"saved and reloaded {plan}")
    feeds = zoo.make_input(model, 1)
    from . import profile

    ours = profile.summarize(profile.measure(lambda: engine.run(feeds), duration_s=args.duration), 1)
    line = f"pyengine     median {ours['median_ms']:.2f} ms  p90 {ours['p90_ms']:.2f} ms"
    try:
        import onnxruntime as ort
    except ImportError:
        print(line + "\n(onnxruntime not installed: pip install 'pyengine[ort]' to compare)")
        return EXIT_OK
    so = ort.SessionOptions()
    so.intra_op_num_threads = engine.num_threads
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    ref = sess.run(None, feeds)
    got = engine.run(feeds)
    theirs = profile.summarize(profile.measure(lambda: sess.run(None, feeds), duration_s=args.duration), 1)
    print(line)
    print(f"onnxruntime  median {theirs['median_ms']:.2f} ms  p90 {theirs['p90_ms']:.2f} ms  "
          f"(pyengine/ort = {ours['median_ms'] / theirs['median_ms']:.2f}x)")
    for spec, r in zip(engine.outputs, ref):
        err = float(np.max(np.abs(got[spec.name] - r)))
        rel = float(np.linalg.norm(got[spec.name] - r) / max(np.linalg.norm(r), 1e-30))
        print(f"output '{spec.name}': max abs diff vs onnxruntime {err:.2e}, relative L2 {rel:.2e}")
    if not args.no_int8:
        _demo_int8(model, engine, feeds, ours, args)
    return EXIT_OK


def _demo_int8(model, fp32_engine, feeds, fp32_times, args) -> None:
    """The INT8 half of the demo: calibrate, build, time against FP32."""
    import time

    import pyengine
    from . import _core, profile, zoo

    calib = [zoo.make_input(model, 4, seed=100 + i)["input"] for i in range(4)]
    t0 = time.perf_counter()
    # Random images make this a timing demo: GPTQ's weight rounding (the
    # default, for accuracy on real data) would only add seconds here.
    int8 = pyengine.build(model, precision="int8", calibration_data=calib, progress=False, report=False,
                          weight_rounding="nearest")
    print(f"\nbuilt an INT8 engine in {time.perf_counter() - t0:.2f} s (calibrated on 16 random images, "
          f"weights rounded to nearest: a timing demo; ISA tier '{_core.cpu_info()['isa']}')")
    t = profile.summarize(profile.measure(lambda: int8.run(feeds), duration_s=args.duration), 1)
    print(f"pyengine int8 median {t['median_ms']:.2f} ms  p90 {t['p90_ms']:.2f} ms  "
          f"(speed-up over pyengine fp32: {fp32_times['median_ms'] / t['median_ms']:.2f}x)")
    a, b = fp32_engine.run(feeds), int8.run(feeds)
    for spec in fp32_engine.outputs:
        x, y = a[spec.name].ravel(), b[spec.name].ravel()
        cos = float(np.dot(x, y) / max(np.linalg.norm(x) * np.linalg.norm(y), 1e-30))
        print(f"output '{spec.name}': cosine int8 vs fp32 {cos:.4f} (random weights and data: accuracy on "
              f"trained models is in README's INT8 section)")


def cmd_build(args) -> int:
    options = {}
    if args.precision == "int8":
        if not args.calib:
            from . import onnx_io, qdq

            if not qdq.has_qdq(onnx_io.load_model(_check_file(args.model))):
                raise InvalidArgumentError("--precision int8 on a float model needs calibration data: --calib DIR "
                                           "(images or .npy); a model with Q/DQ nodes needs none")
    if args.precision == "int8" and args.calib:
        options["calibration_data"] = args.calib
        options["calibration_method"] = args.calib_method
        options["weight_rounding"] = args.weight_rounding
    trt = {}
    if args.batch_range:
        trt["batch_range"] = _parse_batch_range(args.batch_range)
    if args.workspace is not None:
        trt["workspace"] = int(args.workspace * (1 << 20))
    if args.opt_level is not None:
        trt["builder_optimization_level"] = args.opt_level
    if args.cache_dir:
        trt["cache_dir"] = args.cache_dir
    if args.version_compatible:
        trt["version_compatible"] = True
    if args.hardware_compat:
        trt["hardware_compatibility_level"] = args.hardware_compat
    if args.io_fp16:
        trt["io_dtype"] = "fp16"
    if trt and args.backend == "cpu":
        raise InvalidArgumentError(f"{sorted(trt)} are TensorRT options; the CPU plan takes any batch size")
    if args.precision == "fp16" and args.backend == "cpu":
        raise InvalidArgumentError("--precision fp16 needs --backend tensorrt (or auto on a GPU machine)")
    if args.preprocess:
        from .preprocess import parse_spec

        options["preprocess"] = parse_spec(args.preprocess)
    engine = load_engine(_check_file(args.model), args.precision, args.threads, not args.no_optimize,
                         backend=args.backend, **options, **trt)
    engine.save(args.output)
    print(f"built {args.model} -> {args.output} ({engine.backend}/{engine.precision})")
    fallback = engine.metadata.get("fallback")
    if fallback:
        print(f"note: TensorRT was not used: {fallback['reason']}")
    if args.raw_engine:
        if engine.backend != "tensorrt":
            raise InvalidArgumentError("--raw-engine needs a TensorRT engine")
        engine.save(args.raw_engine, raw=True)
        print(f"wrote the bare TensorRT engine to {args.raw_engine} (trtexec --loadEngine, Triton model.plan)")
    if not args.no_optimize:
        print(engine.report())
    return EXIT_OK


def cmd_run(args) -> int:
    engine = load_engine(args.model, args.precision, args.threads)
    feeds = _read_inputs(args.input, _engine_specs(engine)) or random_inputs(_engine_specs(engine), args.batch, args.seed)
    outputs = engine.run(feeds)
    for name, value in outputs.items():
        print(f"{name}: {value.dtype} {list(value.shape)}  mean {float(np.mean(value)):.6g}  "
              f"std {float(np.std(value)):.6g}")
    if args.output:
        np.savez(args.output, **outputs)
        print(f"wrote {args.output}")
    return EXIT_OK


def list_kernels() -> int:
    """Prints the kernel table (engine/cpu/kernels.def) and which lines this
    CPU, build and ISA cap can use."""
    from . import _core

    info = _core.cpu_info()
    print(f"tier in use: {info['isa']} (highest this CPU/build has: {info['max_isa']})")
    print(f"{'op':<16} {'dtype':<5} {'tier':<7} {'symbol':<30} {'width':>5}  usable")
    for e in _core.kernel_table():
        print(f"{e['op']:<16} {e['dtype']:<5} {e['tier']:<7} {e['symbol']:<30} {e['width']:>5}  "
              f"{'yes' if e['usable'] else 'no'}")
    return 0


def cmd_profile(args) -> int:
    from . import profile

    if args.list_kernels:
        return list_kernels()
    if not args.model:
        raise InvalidArgumentError("profile: a model is required (or --list-kernels)")
    batches = _parse_list(args.batch, int)
    _check_file(args.model)
    is_plan = _is_plan(args.model)
    # As build and run: a Q/DQ model runs in INT8 with its own scales unless
    # told otherwise (its FP32 is fake-quant, the model's own arithmetic).
    if args.precision is None:
        args.precision = "int8" if not is_plan and _has_qdq_file(args.model) else "fp32"
    precisions = _parse_list(args.precision)
    for p in precisions:
        if p not in ("fp32", "fp16", "int8"):
            raise InvalidArgumentError(f"--precision takes fp32, fp16 and/or int8, got {p!r}")
    if any(b < 1 for b in batches):
        raise InvalidArgumentError("--batch values must be >= 1")
    if args.compare and args.compare not in ("onnxruntime", "onnxruntime-gpu"):
        raise InvalidArgumentError(f"--compare supports 'onnxruntime' and 'onnxruntime-gpu', got {args.compare!r}")
    results = []
    sess = None
    ort_label = "onnxruntime"
    if args.compare:
        if is_plan:
            raise InvalidArgumentError(f"--compare {args.compare} needs the ONNX model, not a plan")
        sess, ort_label = _ort_session(args.model, args.compare, args.threads)
    name = os.path.basename(args.model)
    ort_nodes = {}  # batch -> onnxruntime's per-node ms (--per-layer --compare onnxruntime)
    qdq_file = "int8" in precisions and not is_plan and _has_qdq_file(args.model)
    for precision in ([None] if is_plan else precisions):
        options = {}
        if precision == "int8" and qdq_file:
            pass  # a Q/DQ model: its scales come from the graph
        elif precision == "int8":
            if args.calib:
                options["calibration_data"] = args.calib
            else:  # timing only: calibrate on random inputs, and say so
                print("note: int8 calibrated on random inputs (--calib DIR for real data); "
                      "timings are valid, accuracy is not", file=sys.stderr)
                specs = _onnx_specs(__import__("onnx").load(args.model, load_external_data=False))
                options["calibration_data"] = [random_inputs(specs, 1, seed=s) for s in range(4)]
            options["report"] = False
        engine = load_engine(args.model, precision or "fp32", args.threads, backend=args.backend, **options)
        precision = engine.precision
        for batch in batches:
            feeds = random_inputs(_engine_specs(engine), batch, seed=0)
            samples = profile.measure(lambda: engine.run(feeds), args.warmup_ms, args.duration, args.iterations,
                                      desc=f"pyengine {precision} b{batch}")
            row = {"model": name, "runtime": f"pyengine-{engine.backend}" if engine.backend != "cpu" else "pyengine",
                   "precision": precision, "batch": batch,
                   "threads": engine.num_threads, "samples_ms": samples,
                   "stats": profile.summarize(samples, batch)}
            if args.per_layer:
                runs = max(3, min(20, args.iterations or 10))
                layers = engine.profile(feeds, runs=runs)
                total = sum(l["ms"] for l in layers if l.get("executed", True))
                row["layers"] = profile.layer_table(layers, total)
                if args.compare == "onnxruntime":
                    if batch not in ort_nodes:
                        ort_nodes[batch] = profile.ort_node_times(
                            lambda so: _ort_session(args.model, "onnxruntime", args.threads, so)[0], feeds, runs)
                    row["ort_unclaimed_ms"] = profile.attach_ort_layers(row["layers"], ort_nodes[batch])
            results.append(row)
            if sess is not None and precision == (precisions[0] if not is_plan else precision):
                ort_samples = profile.measure(lambda: sess.run(None, feeds), args.warmup_ms, args.duration,
                                              args.iterations, desc=f"{ort_label} b{batch}")
                results.append({"model": name, "runtime": ort_label, "precision": "fp32", "batch": batch,
                                "threads": args.threads or default_threads(), "samples_ms": ort_samples,
                                "stats": profile.summarize(ort_samples, batch)})
    ort_by_batch = {r["batch"]: r["stats"]["median_ms"] for r in results if r["runtime"] == ort_label}
    for r in results:
        if r["batch"] in ort_by_batch:
            r["ratio_vs_ort"] = r["stats"]["median_ms"] / ort_by_batch[r["batch"]]
    print(profile.machine_line(sorted({r["threads"] for r in results if r["runtime"] == "pyengine"})))
    print(profile.format_latency_table(results))
    for r in results:
        if r["stats"]["cv_percent"] > profile.CV_WARN_PERCENT:
            print(f"warning: {r['runtime']} {r['precision']} batch {r['batch']}: coefficient of variation "
                  f"{r['stats']['cv_percent']:.1f}% > {profile.CV_WARN_PERCENT}%: the timings are noisy "
                  "(other load on the machine?)")
        if r.get("layers"):
            print(f"\nper layer: {r['runtime']} {r['precision']} batch {r['batch']} (top {args.top})")
            print(profile.format_layer_table(r["layers"], args.top))
            if "ort_unclaimed_ms" in r:
                print(f"(ort ms: onnxruntime's own profiler on the same ONNX file, {ort_label} as timed above, "
                      f"its nodes summed per pyengine layer by ONNX node name; {r['ort_unclaimed_ms']:.3f} ms "
                      "in onnxruntime nodes no layer claims)")
    mem = profile.peak_rss_mb()
    print(f"\npeak memory (process RSS): {mem:.0f} MB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": profile.machine(), "peak_rss_mb": mem, "model": args.model,
                       "settings": {"warmup_ms": args.warmup_ms, "duration_s": args.duration,
                                    "iterations": args.iterations, "threads": args.threads},
                       "results": results}, f, indent=1)
        print(f"wrote {args.json}")
    if args.plot:
        profile.plot(args.plot, results)
        print(f"wrote {args.plot}")
    return EXIT_OK


def _has_qdq_file(path: str) -> bool:
    """Whether the ONNX file already carries Q/DQ nodes (ModelOpt, QAT, onnxruntime, pyengine.quantize)."""
    import onnx

    from .qdq import has_qdq

    return has_qdq(onnx.load(path, load_external_data=False))


def _ort_session(model: str, which: str, threads: int, so=None):
    """An onnxruntime session: CPU, or with --compare onnxruntime-gpu the
    TensorRT / CUDA execution providers of onnxruntime-gpu (an optional extra).
    ``so``: SessionOptions to start from (the per-layer profiler's)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise InvalidArgumentError(f"--compare {which} needs onnxruntime (pip install onnxruntime"
                                   f"{'-gpu' if which.endswith('gpu') else ''})") from None
    so = so or ort.SessionOptions()
    so.intra_op_num_threads = threads or default_threads()
    so.inter_op_num_threads = 1
    if which == "onnxruntime":
        return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"]), "onnxruntime"
    available = ort.get_available_providers()
    providers = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
    if not providers:
        raise InvalidArgumentError("--compare onnxruntime-gpu needs onnxruntime-gpu with the CUDA or TensorRT "
                                   f"execution provider; this onnxruntime has {available} "
                                   "(pip install onnxruntime-gpu)")
    sess = ort.InferenceSession(model, so, providers=providers + ["CPUExecutionProvider"])
    used = sess.get_providers()[0].replace("ExecutionProvider", "")
    return sess, f"ort-{used.lower()}"


def _runner(spec: str, precision: str, threads: int):
    """'onnxruntime:model.onnx' or a model/plan path -> (label, specs, output names, fn(feeds) -> list of
    outputs, precision)."""
    if spec.startswith("onnxruntime:") or spec.startswith("ort:"):
        path = _check_file(spec.split(":", 1)[1])
        import onnx
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or default_threads()
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        specs = _onnx_specs(onnx.load(path, load_external_data=False))
        return f"onnxruntime({os.path.basename(path)})", specs, names, lambda f: sess.run(None, f), "fp32"
    engine = load_engine(spec, precision, threads)
    names = [o.name for o in engine.outputs]
    return (f"pyengine({os.path.basename(spec)},{engine.backend}/{engine.precision})", _engine_specs(engine), names,
            lambda f: [engine.run(f)[n] for n in names], engine.precision)


# `compare` with a reduced-precision side: elementwise tolerances made for
# FP32 rounding fail every INT8 plan, so the default criterion is the cosine
# between the two outputs (per output tensor), as Polygraphy and ModelOpt
# report it. Explicit --atol/--rtol always mean an elementwise check.
MIN_COSINE = {"int8": 0.99, "fp16": 0.999}
DEFAULT_ATOL = DEFAULT_RTOL = 1e-4


def compare_outputs(a: np.ndarray, b: np.ndarray, atol: float, rtol: float, min_cosine: float | None = None) -> dict:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    diff = np.abs(a64 - b64)
    denom = np.linalg.norm(a64) * np.linalg.norm(b64)
    out = {"shape": list(a.shape), "max_abs": float(diff.max()) if diff.size else 0.0,
           "mean_abs": float(diff.mean()) if diff.size else 0.0,
           "max_rel": float((diff / np.maximum(np.abs(b64), 1e-12)).max()) if diff.size else 0.0,
           "cosine": float(np.sum(a64 * b64) / denom) if denom > 0 else 1.0,
           "pass": bool(np.allclose(a64, b64, atol=atol, rtol=rtol))}
    if min_cosine is not None:
        out["pass"] = bool(np.isfinite(a64).all() and np.isfinite(b64).all() and out["cosine"] >= min_cosine)
    if a.ndim == 2 and a.shape[1] > 1:
        out["top1_agreement"] = float(np.mean(np.argmax(a, 1) == np.argmax(b, 1)))
    return out


def cmd_compare(args) -> int:
    la, specs, names_a, run_a, prec_a = _runner(args.a, args.precision_a, args.threads)
    lb, _, names_b, run_b, prec_b = _runner(args.b, args.precision_b, args.threads)
    min_cosine = None
    if args.atol is None and args.rtol is None:
        reduced = [MIN_COSINE[p] for p in (prec_a, prec_b) if p in MIN_COSINE]
        min_cosine = args.min_cosine if args.min_cosine is not None else (min(reduced) if reduced else None)
    atol = DEFAULT_ATOL if args.atol is None else args.atol
    rtol = DEFAULT_RTOL if args.rtol is None else args.rtol
    criterion = f"cosine >= {min_cosine:g}" if min_cosine is not None else f"atol {atol:g}, rtol {rtol:g}"
    if names_a != names_b:
        raise InvalidArgumentError(f"the two sides have different outputs: {names_a} vs {names_b}")
    feeds = _read_inputs(args.input, specs) or random_inputs(specs, args.batch, args.seed)
    outs_a, outs_b = run_a(feeds), run_b(feeds)
    print(f"A = {la}\nB = {lb}\ninputs: " + ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items()))
    print(f"{'output':<20} {'max abs':>10} {'mean abs':>10} {'max rel':>10} {'cosine':>10} {'top1':>6}  result")
    ok = True
    report = {}
    for name, a, b in zip(names_a, outs_a, outs_b):
        if a.shape != b.shape:
            print(f"{name:<20} shape mismatch {list(a.shape)} vs {list(b.shape)}  FAIL")
            ok = False
            continue
        r = compare_outputs(a, b, atol, rtol, min_cosine)
        report[name] = r
        ok &= r["pass"]
        top1 = f"{r['top1_agreement']:.3f}" if "top1_agreement" in r else "-"
        print(f"{name[:20]:<20} {r['max_abs']:>10.3e} {r['mean_abs']:>10.3e} {r['max_rel']:>10.3e} "
              f"{r['cosine']:>10.6f} {top1:>6}  {'PASS' if r['pass'] else 'FAIL'}")
    print(f"{'PASSED' if ok else 'FAILED'} ({criterion})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"a": la, "b": lb, "outputs": report, "pass": ok}, f, indent=1)
    return EXIT_OK if ok else EXIT_MISMATCH


def _inspect_tensorrt(path: str, meta: dict) -> int:
    """A TensorRT plan: what it was built for (no TensorRT needed), and its
    layers with the ONNX nodes each came from (where TensorRT and the GPU are here)."""
    from .backends import tensorrt

    t = meta.get("tensorrt") or {}
    print(f"{path}: tensorrt/{meta.get('precision')}, built for {tensorrt.describe_build(t)}")
    print(f"  source model: {meta.get('source_model_name')} (sha256 {str(meta.get('source_model_sha256'))[:16]}...)")
    print(f"  built {meta.get('created')} with pyengine {meta.get('pyengine_version')} in "
          f"{t.get('build_seconds', '?')} s; engine {t.get('engine_bytes', '?')} bytes")
    print(f"  version_compatible {t.get('version_compatible', False)}, hardware compatibility "
          f"{t.get('hardware_compatibility_level', 'none')}, builder optimization level "
          f"{t.get('builder_optimization_level', 'default')}, workspace {t.get('workspace_bytes', '?')} bytes")
    for title in ("inputs", "outputs"):
        print(f"{title}:")
        for s in meta.get(title, []):
            dims = "x".join("N" if d is None or d < 0 else str(d) for d in (s.get("shape") or []))
            print(f"  {s['name']}: {s['dtype']} [{dims}]")
    for i, prof in enumerate(t.get("profiles", [])):
        for name, (lo, opt, hi) in prof.items():
            print(f"profile {i}: {name} min {lo} opt {opt} max {hi}")
    here = tensorrt.machine()
    try:
        for w in tensorrt.preflight(meta, here, path):
            print(f"warning: {w}")
    except PyengineError as exc:
        print(f"cannot load here: {exc}")
        return EXIT_OK
    engine = tensorrt.load_plan(path, meta)
    layers = engine.layers()
    print(f"{len(layers)} TensorRT layers:")
    print(f"{'layer':<48} {'type':<20} from ONNX nodes")
    for l in layers:
        print(f"{l['name'][:48]:<48} {l['type'][:20]:<20} {', '.join(l['onnx_nodes'])}")
    return EXIT_OK


def cmd_inspect(args) -> int:
    meta = _plan_metadata(_check_file(args.model))
    if meta is not None and meta.get("backend") == "tensorrt":
        return _inspect_tensorrt(args.model, meta)
    engine = load_engine(args.model, None, 1, not args.no_optimize, backend="cpu")  # int8 for a Q/DQ model
    graph = engine._graph
    shapes = {n: s for n, _, s, _ in graph.values()}
    consts = {n for n, _, _, c in graph.values() if c}
    print(f"{args.model}: {engine.backend}/{engine.precision}, {graph.num_nodes} layers")
    for title, specs in (("inputs", engine.inputs), ("outputs", engine.outputs)):
        print(f"{title}:")
        for s in specs:
            dims = "?" if s.shape is None else "x".join("N" if d is None else str(d) for d in s.shape)
            print(f"  {s.name}: {s.dtype} [{dims}]")
    flops = {}
    try:
        feeds = random_inputs(_engine_specs(engine), 1)
        flops = {l["name"]: l["flops"] for l in engine.profile(feeds, runs=1)}
    except PyengineError:
        pass
    print(f"{'layer':<32} {'op':<16} {'output shape':<22} {'params':>10} {'MFLOPs':>9}  fused from")
    total_params = total_flops = 0
    for n in graph.nodes():
        params = sum(int(np.prod(shapes[i])) for i in n["inputs"] if i in consts and shapes.get(i) is not None)
        out = shapes.get(n["outputs"][0]) if n["outputs"] and n["outputs"][0] else None
        out_s = "?" if out is None else "x".join("N" if d < 0 else str(d) for d in out)
        f = flops.get(n["name"], 0.0)
        total_params += params
        total_flops += f
        origin = n["origin"] if len(n["origin"]) > 1 else []
        print(f"{n['name'][:32]:<32} {n['op_type'][:16]:<16} {out_s[:22]:<22} {params:>10} {f / 1e6:>9.1f}  "
              f"{','.join(origin)}")
    print(f"total: {total_params} parameters, {total_flops / 1e9:.3f} GFLOPs at batch 1")
    print(engine.report())
    return EXIT_OK


def _expected_results(sources, clip_args, total_frames) -> int | None:
    """How many results the streams will give (for the progress bar), or None if unknown."""
    if total_frames is None:
        return None
    if clip_args is None:
        return total_frames
    n = 0
    length, stride, rate, partial = clip_args
    stride = stride or length * rate
    span = (length - 1) * rate
    for src in sources:
        f = src.frame_count or 0
        full = (f - span - 1) // stride + 1 if f > span else 0
        n += full + (1 if partial == "pad" and full * stride < f else 0)
    return n


def cmd_video(args) -> int:
    import time

    from . import video

    engine = load_engine(args.model, None, args.threads)
    sources = [video.VideoFile(_check_file(p)) for p in args.inputs]
    transform = None
    if args.mean or args.std:
        layout = video._layout(engine, None)
        if layout.uint8:
            raise InvalidArgumentError("--mean/--std: this engine preprocesses its input itself")
        transform = video.FrameTransform(layout.size, _parse_list(args.mean or "0.485,0.456,0.406", float),
                                         _parse_list(args.std or "0.229,0.224,0.225", float))
    t0 = time.perf_counter()
    results = video.stream(engine, sources, clip=args.clip, stride=args.stride, sample_rate=args.sample_rate,
                           partial=args.partial, transform=transform, max_batch=args.batch, max_wait=args.max_wait,
                           realtime=args.realtime, pipelined=not args.sequential)
    loop = results._loop
    frames = [s.frame_count for s in sources]
    total = _expected_results(sources, loop._clip_args, None if None in frames else sum(frames))
    bar = None
    if not args.no_progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="clip" if loop._clip_args else "frame", desc="pyengine video",
                       file=sys.stderr)
        except ImportError:
            pass
    out = open(args.json, "w") if args.json else None
    count = 0
    try:
        with results:
            for r in results:
                count += 1
                if out is not None:
                    out.write(json.dumps({"stream": r.stream, "index": r.index, "timestamp": r.timestamp,
                                          "padded": r.padded,
                                          "topk": [{"class": c, "score": v} for c, v in r.topk(args.topk)]}) + "\n")
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if out is not None:
            out.close()
    wall = time.perf_counter() - t0
    stats = results.stats()
    nframes = sum(s.frames for s in stats.values())
    kind = "clips" if loop._clip_args else "frames"
    mode = "sequential" if args.sequential else "pipelined"
    print(f"{os.path.basename(args.model)} ({engine.backend}/{engine.precision}, {engine.num_threads} threads), "
          f"{mode}, batch <= {args.batch}: {nframes} frames decoded, {count} {kind} run in {wall:.2f} s: "
          f"{nframes / wall:.1f} frames/s, {count / wall:.1f} {kind}/s")
    for s in stats.values():
        lat = "  ".join(f"{k} {v:.1f} ms" for k, v in s.latency_ms.items())
        print(f"  {s.name}: {s.frames} frames, {s.results} results, {s.fps:.1f} frames/s, latency {lat}, "
              f"dropped {s.dropped}")
    if out is not None:
        print(f"wrote {count} JSON lines to {args.json}")
    return EXIT_OK


def cmd_export_triton(args) -> int:
    from .integrations.triton import export_repository

    result = export_repository(_check_file(args.model), args.repo, name=args.name, max_batch=args.max_batch,
                               instances=args.instances, onnxruntime=args.onnxruntime, num_threads=args.threads,
                               overwrite=args.force)
    print(f"wrote Triton model '{result['name']}' ({result['kind']}) to {result['path']}: "
          + ", ".join(result["files"]))
    for note in result["notes"]:
        print(f"note: {note}")
    print(f"serve it with: tritonserver --model-repository {os.path.abspath(args.repo)}")
    return EXIT_OK


# -- entry point --------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyengine", description="Build, run and measure residual CNNs from ONNX.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="write a ResNet ONNX model, build, run and compare with onnxruntime")
    d.add_argument("--model", default="resnet50", help="resnet18 | resnet50 (random weights)")
    d.add_argument("--size", type=int, default=224, help="input height and width")
    d.add_argument("--out", default="pyengine-demo", help="folder for the .onnx and .plan files")
    d.add_argument("--duration", type=float, default=2.0, help="seconds of timing per runtime")
    d.add_argument("--no-int8", action="store_true", help="skip the INT8 build and timing")
    d.set_defaults(fn=cmd_demo)

    b = sub.add_parser("build", help="build a plan from an ONNX model")
    b.add_argument("model")
    b.add_argument("-o", "--output", required=True)
    b.add_argument("--precision", choices=("fp32", "fp16", "int8"), default=None,
                   help="default: from the graph (int8 for a model with Q/DQ nodes, else fp32); fp16 needs TensorRT")
    b.add_argument("--backend", choices=("auto", "cpu", "tensorrt"), default="auto",
                   help="auto: TensorRT when usable, else CPU (says why); tensorrt: never falls back")
    b.add_argument("--calib", help="calibration data: a folder of images or .npy files, or a .npy array")
    b.add_argument("--calib-method", default="mse", choices=("entropy", "minmax", "percentile", "mse"))
    b.add_argument("--weight-rounding", default="gptq", choices=("gptq", "nearest"),
                   help="int8 weights: GPTQ (the layer's output error, default) or nearest rounding")
    b.add_argument("--batch-range", help="MIN:OPT:MAX batch sizes (TensorRT profiles; the CPU plan takes any)")
    b.add_argument("--workspace", type=float, help="TensorRT workspace limit in MiB (default 1024)")
    b.add_argument("--opt-level", type=int, choices=range(6), help="TensorRT builder optimization level 0-5")
    b.add_argument("--cache-dir", help="TensorRT timing cache folder (default ~/.cache/pyengine/tensorrt)")
    b.add_argument("--version-compatible", action="store_true", help="TensorRT: plan runs on later TensorRT versions")
    b.add_argument("--hardware-compat", choices=("none", "ampere_plus", "same_compute_capability"),
                   help="TensorRT hardware compatibility level")
    b.add_argument("--io-fp16", action="store_true", help="fp16: float16 inputs and outputs too")
    b.add_argument("--raw-engine", help="TensorRT: also write the bare engine (trtexec, Triton) here")
    b.add_argument("--threads", type=int, default=0)
    b.add_argument("--no-optimize", action="store_true")
    b.add_argument("--preprocess", metavar="SPEC",
                   help="compile an input transform into the plan, which then takes uint8 frames (N, H, W, 3): "
                        "'imagenet' or key=value items such as resize=256,crop=224,mean=imagenet,std=imagenet,"
                        "color=bgr (README: Preprocessing in the engine)")
    b.set_defaults(fn=cmd_build)

    r = sub.add_parser("run", help="run a plan or model on given or random inputs")
    r.add_argument("model")
    r.add_argument("--input", action="append", help="NAME=x.npy (repeatable), x.npy, or inputs.npz")
    r.add_argument("--output", help="write outputs to this .npz")
    r.add_argument("--batch", type=int, default=1)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--precision", choices=("fp32", "fp16", "int8"), default=None,
                   help="default: from the graph (int8 for a model with Q/DQ nodes, else fp32)")
    r.add_argument("--threads", type=int, default=0)
    r.set_defaults(fn=cmd_run)

    pr = sub.add_parser("profile", help="latency percentiles, throughput and per-layer times")
    pr.add_argument("model", nargs="?")
    pr.add_argument("--list-kernels", action="store_true",
                    help="print the kernel table (op, dtype, ISA tier, symbol) and exit")
    pr.add_argument("--batch", default="1", help="comma-separated batch sizes, e.g. 1,8")
    pr.add_argument("--precision", default=None,
                    help="fp32,fp16,int8 (fp16 needs TensorRT); default: from the graph (int8 for a model with "
                         "Q/DQ nodes, else fp32)")
    pr.add_argument("--backend", choices=("auto", "cpu", "tensorrt"), default="auto")
    pr.add_argument("--calib", help="calibration data for int8 (default: random inputs)")
    pr.add_argument("--threads", type=int, default=0)
    pr.add_argument("--warmup-ms", type=float, default=200.0)
    pr.add_argument("--duration", type=float, default=3.0, help="seconds of timed runs")
    pr.add_argument("--iterations", type=int, help="exact number of timed runs (overrides --duration)")
    pr.add_argument("--per-layer", action="store_true")
    pr.add_argument("--top", type=int, default=15, help="layers shown with --per-layer")
    pr.add_argument("--compare", help="onnxruntime (CPU) or onnxruntime-gpu (its TensorRT/CUDA providers; "
                                      "optional extra): time it side by side on the same inputs")
    pr.add_argument("--json", help="write every sample and the machine description here")
    pr.add_argument("--plot", help="write a PNG with the latency distribution and per-layer breakdown")
    pr.set_defaults(fn=cmd_profile)

    c = sub.add_parser("compare", help="compare two models, plans or runtimes on the same inputs")
    c.add_argument("a", help="model.onnx, model.plan, or onnxruntime:model.onnx")
    c.add_argument("b")
    c.add_argument("--input", action="append")
    c.add_argument("--batch", type=int, default=1)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--atol", type=float, default=None,
                   help=f"elementwise tolerance (default {DEFAULT_ATOL:g} when both sides are FP32)")
    c.add_argument("--rtol", type=float, default=None, help=f"(default {DEFAULT_RTOL:g})")
    c.add_argument("--min-cosine", type=float, default=None,
                   help="pass criterion when a side is INT8 or FP16 and no --atol/--rtol is given "
                        f"(default {MIN_COSINE['int8']:g} for INT8, {MIN_COSINE['fp16']:g} for FP16)")
    c.add_argument("--precision-a", choices=("fp32", "fp16", "int8"), default="fp32")
    c.add_argument("--precision-b", choices=("fp32", "fp16", "int8"), default="fp32")
    c.add_argument("--threads", type=int, default=0)
    c.add_argument("--json")
    c.set_defaults(fn=cmd_compare)

    i = sub.add_parser("inspect", help="inputs, outputs and layers (op, shape, params, FLOPs, fusions)")
    i.add_argument("model")
    i.add_argument("--no-optimize", action="store_true")
    i.set_defaults(fn=cmd_inspect)

    v = sub.add_parser("video", help="run a model over video files (frames or clips), batched and pipelined")
    v.add_argument("model", help="a plan file or an .onnx model")
    v.add_argument("inputs", nargs="+", help="video files; several are batched together (results tagged by file)")
    v.add_argument("--clip", type=int, help="frames per clip, 3-D models (default: the model's T)")
    v.add_argument("--stride", type=int, help="source frames between clip starts (default: clip x sample rate)")
    v.add_argument("--sample-rate", type=int, default=1, help="take every k-th frame into a clip")
    v.add_argument("--partial", choices=("drop", "pad"), default="drop",
                   help="the last incomplete clip: drop it, or pad it by repeating its last frame")
    v.add_argument("--batch", type=int, default=8, help="max batch (frames or clips of all streams)")
    v.add_argument("--max-wait", type=float, default=0.05, help="seconds a batch waits for more samples")
    v.add_argument("--mean", help="per-channel mean after /255 (default ImageNet's 0.485,0.456,0.406)")
    v.add_argument("--std", help="per-channel std (default ImageNet's 0.229,0.224,0.225)")
    v.add_argument("--topk", type=int, default=5, help="classes per result in --json")
    v.add_argument("--json", help="write one JSON line per result: stream, index, timestamp, topk")
    v.add_argument("--threads", type=int, default=0, help="engine threads (0: one per physical core)")
    v.add_argument("--sequential", action="store_true", help="decode and infer in one thread (no pipelining)")
    v.add_argument("--realtime", action="store_true", help="drop samples when the inference queue is full")
    v.add_argument("--no-progress", action="store_true", help="no progress bar (tqdm)")
    v.set_defaults(fn=cmd_video)

    t = sub.add_parser("export-triton", help="write a Triton Inference Server model repository entry")
    t.add_argument("model", help="a pyengine plan (CPU or TensorRT) or an ONNX model")
    t.add_argument("--repo", required=True, help="the model repository folder (created if missing)")
    t.add_argument("--name", help="Triton model name (default: the file name without extension)")
    t.add_argument("--max-batch", type=int, default=32,
                   help="max_batch_size (0: no batching; a TensorRT plan caps it at its profile's maximum)")
    t.add_argument("--instances", type=int, default=1, help="instance_group count")
    t.add_argument("--onnxruntime", action="store_true",
                   help="ONNX models: Triton's onnxruntime backend on the optimized (or Q/DQ) ONNX instead of "
                        "the Python backend running pyengine")
    t.add_argument("--threads", type=int, default=0, help="Python backend: threads per instance (0: cores/instances)")
    t.add_argument("--force", action="store_true", help="replace an existing REPO/NAME")
    t.set_defaults(fn=cmd_export_triton)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except PyengineError as exc:
        print(f"pyengine {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (OSError, ImportError) as exc:
        print(f"pyengine {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
