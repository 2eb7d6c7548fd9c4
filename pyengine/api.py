"""The top-level functions: build() and load()."""

from __future__ import annotations

import datetime
import os

from . import __version__, _core, onnx_io, qdq
from .backends import tensorrt
from .engine import Engine, load_engine
from .errors import CalibrationError, InvalidArgumentError, UnsupportedOperatorError

PRECISIONS = ("fp32", "fp16", "int8")
BACKENDS = ("auto", "cpu", "tensorrt")


def build(model, precision: str | None = None, backend: str = "auto", optimize: bool = True,
          num_threads: int = 0, memory_limit: int | None = None, preprocess=None, **options):
    """Builds an engine from an ONNX model.

    Args:
        model: path to an .onnx file (external data next to it is read too) or an
            ``onnx.ModelProto``.
        precision: "fp32", "fp16" (TensorRT only; the CPU runtime runs such a
            request in FP32 under backend="auto") or "int8". By default the
            graph decides, as in TensorRT's strongly typed networks: "int8" for
            a model that already has QuantizeLinear/DequantizeLinear nodes (run
            on the int8 kernels with the model's own scales; no calibration),
            else "fp32". "fp32" on a Q/DQ model runs its Q/DQ nodes as float
            fake-quant, the model's own arithmetic, as onnxruntime does.
            "int8" on a float model calibrates: pass ``calibration_data`` (or
            a ``calibration_cache`` that has this model's table).
        backend: "auto" (TensorRT when it is installed, a GPU is present and
            TensorRT can build the model; else the CPU runtime, with the
            reason in ``engine.metadata["fallback"]`` and a warning, once,
            unless TensorRT is simply not installed and nothing GPU-specific
            (fp16, TensorRT options) was asked for), "cpu" or
            "tensorrt" (never falls back: raises BackendUnavailableError or
            UnsupportedOperatorError with TensorRT's messages).
        optimize: run the graph optimizer (BatchNorm folding, fusions, ...).
        num_threads: CPU threads (0: one per physical core; see pyengine.default_threads).
        **options: INT8 calibration options (see :func:`pyengine.quantize`), and
            for TensorRT: ``io_dtype``, ``keep_fp32``, ``batch_range=(min, opt,
            max)``, ``input_shapes={name: (min, opt, max)}``, ``workspace``
            (bytes), ``cache_dir`` (timing cache), ``timing_cache``,
            ``builder_optimization_level`` (0-5), ``version_compatible``,
            ``hardware_compatibility_level`` ("ampere_plus",
            "same_compute_capability"), ``progress``, ``cuda_graph``.
        memory_limit: bytes one run may allocate (activation arena + outputs), or
            None (no limit); a run that needs more raises ShapeError before allocating.
        preprocess: a :class:`pyengine.Preprocess`: the plan's first op turns
            uint8 frames (N, H, W, 3) into the model input (resize, centre
            crop, mean/std, BGR to RGB), so the engine takes frames and
            ``engine.preprocess`` returns it. CPU runtime only:
            backend="auto" then builds for the CPU; "tensorrt" raises
            UnsupportedOperatorError. A preprocess whose output cannot feed
            the model input raises ShapeError naming the input.

    Returns:
        An :class:`Engine` (CPU) or a ``TensorRTEngine``; both run ``engine(x)``
        and ``engine.run({...})`` and save with ``engine.save(path)``.
    """
    if preprocess is not None:
        backend = _check_preprocess(preprocess, backend)
    engine = _build(model, precision, backend, optimize, num_threads, **options)
    if preprocess is not None:
        engine = _attach_preprocess(engine, preprocess, num_threads)
    if memory_limit is not None:
        engine.memory_limit = memory_limit
    return engine


def _check_preprocess(preprocess, backend: str) -> str:
    from .preprocess import Preprocess

    if not isinstance(preprocess, Preprocess):
        raise InvalidArgumentError(f"preprocess must be a pyengine.Preprocess, got {type(preprocess).__name__}")
    if backend == "tensorrt":
        raise UnsupportedOperatorError(
            "preprocess= runs in the CPU runtime only (the Preprocess op has no TensorRT plugin); build with "
            "backend='cpu', or preprocess in Python with Preprocess.apply_numpy and run the TensorRT engine on floats")
    return "cpu" if backend == "auto" else backend


def _attach_preprocess(engine: Engine, preprocess, num_threads: int) -> Engine:
    """The engine's graph with a Preprocess node in front of the chosen input,
    compiled again (the model's own ops are unchanged)."""
    graph = engine._graph.clone()
    name = preprocess.input
    if name is None:
        names = [n for n, _, _ in graph.inputs()]
        if len(names) != 1:
            raise InvalidArgumentError(f"the model has {len(names)} inputs {names}: name the one to preprocess "
                                       f"with Preprocess(input=...)")
        name = names[0]
    graph.insert_preprocess(name, preprocess._attrs())
    meta = dict(engine._metadata)
    meta["preprocess"] = preprocess.to_json()
    return Engine(graph, meta, num_threads)


def _build(model, precision, backend, optimize, num_threads, **options):
    if precision is not None and precision not in PRECISIONS:
        raise InvalidArgumentError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if backend not in BACKENDS:
        raise InvalidArgumentError(f"backend must be one of {BACKENDS}, got {backend!r}")
    proto = onnx_io.load_model(model)
    if precision is None:
        precision = "int8" if qdq.has_qdq(proto) else "fp32"
    fallback = None
    if options.get("int8_activations", "symmetric") != "symmetric":
        # Zero points: the CPU runtime's (and onnxruntime's), not TensorRT's.
        if backend == "tensorrt":
            raise InvalidArgumentError(f"int8_activations={options['int8_activations']!r} is for the CPU backend: "
                                       "TensorRT takes symmetric int8 activations (zero point 0) only")
        if backend == "auto":
            backend = "cpu"
            fallback = {"requested_backend": "auto",
                        "reason": "int8_activations='asymmetric' runs on the CPU backend only"}
    if backend == "tensorrt":
        return tensorrt.build(model, precision=precision, optimize=optimize, **options)
    if backend == "auto":
        engine, reason = tensorrt.try_build(model, precision, optimize, **options)
        if engine is not None:
            return engine
        gpu_specific = precision == "fp16" or any(k in tensorrt.TENSORRT_ONLY_OPTIONS for k in options)
        tensorrt.fallback_warning(reason, quiet=reason == tensorrt.NOT_INSTALLED and not gpu_specific)
        fallback = {"requested_backend": "auto", "reason": reason}
        options = {k: v for k, v in options.items() if k not in tensorrt.TENSORRT_ONLY_OPTIONS}
        if precision == "fp16":
            fallback["requested_precision"] = "fp16"
            fallback["note"] = "the CPU runtime has no FP16 kernels: the model runs in FP32"
            precision = "fp32"
    elif precision == "fp16":
        raise InvalidArgumentError("precision='fp16' needs TensorRT; the CPU runtime runs fp32 or int8 "
                                   "(pyengine.export(model, 'fp16') gives the FP16 ONNX model)")
    trt_only = sorted(k for k in options if k in tensorrt.TENSORRT_ONLY_OPTIONS)
    if trt_only:
        raise InvalidArgumentError(f"options {trt_only} apply to the TensorRT backend only")
    if precision == "fp32" or qdq.has_qdq(proto):  # calibration's; nothing to show or keep here
        options.pop("progress", None)
        if fallback is not None:
            options.pop("keep_fp32", None)
    engine = _build_cpu(model, proto, precision, optimize, num_threads, **options)
    if fallback is not None:
        engine._metadata["fallback"] = fallback
    return engine


def _build_cpu(model, proto, precision, optimize, num_threads, **options) -> Engine:
    if qdq.has_qdq(proto):
        if options:
            raise InvalidArgumentError(
                f"the model already has QuantizeLinear/DequantizeLinear nodes: its scales come from the graph, "
                f"so {sorted(options)} do not apply (pass the float model to calibrate it with pyengine)")
        return qdq.build_qdq(model, proto, optimize=optimize, num_threads=num_threads, precision=precision)
    if precision == "int8":
        from .quantize import build_int8

        if options.get("calibration_data") is None and options.get("calibration_cache") is None:
            raise CalibrationError(
                "precision='int8' on a float model needs calibration data: pass calibration_data= (an array "
                "shaped like the input, e.g. (N, C, H, W) float32 with a few hundred representative samples; a "
                "list or iterable of such batches or of {input name: array} dicts; or a folder of .npy files or "
                "images), or calibration_cache= naming a cache written by an earlier build of this model. "
                "A model that already has QuantizeLinear/DequantizeLinear nodes needs neither.")

        return build_int8(model, optimize=optimize, num_threads=num_threads, **options)
    if options:
        raise InvalidArgumentError(f"unexpected options for an fp32 CPU build: {sorted(options)}")
    from .optimizer import _with_inferred_shapes, optimize_graph

    # ONNX shape inference with data propagation first, as pyengine.optimize
    # does: exported shape plumbing (x.view(b, c) as Shape -> Gather ->
    # Concat -> Reshape on a dynamic batch) then carries the shapes the
    # patterns need (the Linear-form squeeze-excitation). It only adds
    # value_info: the metadata hashes the model as given.
    graph, _ = onnx_io.graph_from_onnx(_with_inferred_shapes(proto) if optimize else proto)
    metadata = base_metadata(model, proto, "fp32")

    if optimize:
        graph, report = optimize_graph(graph)
        metadata["optimizer"] = report
    else:
        # Not an optimization: float16 layers run only once widened.
        graph, _ = optimize_graph(graph, passes=["widen_float16"])
    return Engine(graph, metadata, num_threads)


def base_metadata(model, proto, precision: str) -> dict:
    """Plan metadata shared by every build."""
    graph = proto.graph
    return {
        "pyengine_version": __version__,
        "backend": "cpu",
        "precision": precision,
        "source_model_sha256": onnx_io.model_sha256(proto),
        "source_model_name": os.path.basename(os.fspath(model)) if not hasattr(model, "graph") else graph.name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "opset": onnx_io.default_opset(proto),
    }


def load(path, num_threads: int = 0, cuda_graph: bool = False, memory_limit: int | None = None):
    """Loads a plan file written by ``engine.save``: a CPU plan, or a TensorRT
    plan after checking (before any TensorRT call) that this machine has the
    TensorRT version and GPU architecture it was built for.

    Args:
        path: the plan file.
        num_threads: CPU threads for CPU plans (0: one per physical core; see pyengine.default_threads).
        cuda_graph: TensorRT plans: run through CUDA graphs.
        memory_limit: CPU plans: bytes one run may allocate (activation arena
            + outputs), or None (no limit).

    Raises:
        PlanFormatError: the file is missing, corrupt, truncated, edited, from an
            incompatible pyengine version, or a TensorRT plan built for another
            TensorRT version or GPU (the message says how to rebuild).
        BackendUnavailableError: a TensorRT plan on a machine without
            TensorRT or a GPU.
    """
    engine = load_engine(path, num_threads, cuda_graph=cuda_graph)
    if memory_limit is not None:
        engine.memory_limit = memory_limit
    return engine


def set_max_tensor_bytes(nbytes: int | None) -> None:
    """Sets the per-tensor size limit (bytes) checked at build, load and run time;
    None restores the default (the machine's physical memory, or the
    PYENGINE_MAX_TENSOR_BYTES environment variable)."""
    if nbytes is not None and (isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes <= 0):
        raise InvalidArgumentError(f"max tensor bytes must be a positive int or None, got {nbytes!r}")
    _core.set_max_tensor_bytes(0 if nbytes is None else nbytes)


def max_tensor_bytes() -> int:
    """The per-tensor size limit in bytes (see :func:`set_max_tensor_bytes`)."""
    return _core.max_tensor_bytes()


def default_threads() -> int:
    """The threads of an engine built or loaded with ``num_threads=0``:
    ``PYENGINE_NUM_THREADS`` when it is set (else InvalidArgumentError for a
    value that is not a count from 1 to 4096), otherwise one per physical
    core among the CPUs this process may run on (its affinity mask, as
    ``taskset`` or a container's cpuset leaves it), capped by its cgroup CPU
    quota (a container's ``--cpus``). A core's second hardware thread adds
    no throughput to these kernels, and threads beyond the CPU set or quota
    only take turns."""
    return _core.default_threads()
