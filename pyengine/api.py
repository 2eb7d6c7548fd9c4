"""The top-level functions: build() and load()."""

from __future__ import annotations

import datetime
import os

from . import __version__, _core, onnx_io
from .backends import tensorrt
from .engine import Engine, load_engine
from .errors import InvalidArgumentError

PRECISIONS = ("fp32", "int8")
BACKENDS = ("auto", "cpu", "tensorrt")


def build(model, precision: str = "fp32", backend: str = "auto", optimize: bool = True,
          num_threads: int = 0, memory_limit: int | None = None, **options) -> Engine:
    """Builds an engine from an ONNX model.

    Args:
        model: path to an .onnx file (external data next to it is read too) or an
            ``onnx.ModelProto``.
        precision: "fp32" or "int8".
        backend: "auto" (TensorRT when usable, else the CPU runtime), "cpu" or "tensorrt".
        optimize: run the graph optimizer (BatchNorm folding, fusions, ...).
        num_threads: CPU threads (0: all cores).
        memory_limit: bytes one run may allocate (activation arena + outputs), or
            None (no limit); a run that needs more raises ShapeError before allocating.

    Returns:
        An :class:`Engine`.
    """
    engine = _build(model, precision, backend, optimize, num_threads, **options)
    if memory_limit is not None:
        engine.memory_limit = memory_limit
    return engine


def _build(model, precision, backend, optimize, num_threads, **options) -> Engine:
    if precision not in PRECISIONS:
        raise InvalidArgumentError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if backend not in BACKENDS:
        raise InvalidArgumentError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "tensorrt":
        tensorrt.require()
        return tensorrt.build(model, precision=precision, **options)
    if backend == "auto" and tensorrt.availability() is None:
        return tensorrt.build(model, precision=precision, **options)
    if precision == "int8":
        from .quantize import build_int8

        return build_int8(model, optimize=optimize, num_threads=num_threads, **options)
    if options:
        raise InvalidArgumentError(f"unexpected options for an fp32 CPU build: {sorted(options)}")
    graph, proto = onnx_io.graph_from_onnx(model)
    metadata = base_metadata(model, proto, "fp32")
    if optimize:
        from .optimizer import optimize_graph

        graph, report = optimize_graph(graph)
        metadata["optimizer"] = report
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


def load(path, num_threads: int = 0, memory_limit: int | None = None) -> Engine:
    """Loads a plan file written by ``Engine.save``.

    Args:
        path: the plan file.
        num_threads: CPU threads (0: all cores).
        memory_limit: as for :func:`build`.

    Raises:
        PlanFormatError: the file is missing, corrupt, truncated, edited or from
            an incompatible pyengine version.
    """
    engine = load_engine(path, num_threads)
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
