"""The top-level functions: build() and load()."""

from __future__ import annotations

import datetime
import os

from . import __version__, onnx_io, qdq
from .backends import tensorrt
from .engine import Engine, load_engine
from .errors import CalibrationError, InvalidArgumentError

PRECISIONS = ("fp32", "int8")
BACKENDS = ("auto", "cpu", "tensorrt")


def build(model, precision: str | None = None, backend: str = "auto", optimize: bool = True,
          num_threads: int = 0, **options) -> Engine:
    """Builds an engine from an ONNX model.

    Args:
        model: path to an .onnx file (external data next to it is read too) or an
            ``onnx.ModelProto``.
        precision: "fp32" or "int8"; by default the graph decides, as in
            TensorRT's strongly typed networks: "int8" for a model that
            already has QuantizeLinear/DequantizeLinear nodes (run on the int8
            kernels with the model's own scales; no calibration), else
            "fp32". "fp32" on a Q/DQ model runs its Q/DQ nodes as float
            fake-quant, the model's own arithmetic, as onnxruntime does.
            "int8" on a float model calibrates: pass ``calibration_data``
            (or a ``calibration_cache`` that has this model's table).
        backend: "auto" (TensorRT when usable, else the CPU runtime), "cpu" or "tensorrt".
        optimize: run the graph optimizer (BatchNorm folding, fusions, ...).
        num_threads: CPU threads (0: all cores).

    Returns:
        An :class:`Engine`.
    """
    if precision is not None and precision not in PRECISIONS:
        raise InvalidArgumentError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if backend not in BACKENDS:
        raise InvalidArgumentError(f"backend must be one of {BACKENDS}, got {backend!r}")
    proto = onnx_io.load_model(model)
    quantized = qdq.has_qdq(proto)
    if precision is None:
        precision = "int8" if quantized else "fp32"
    if backend == "tensorrt":
        tensorrt.require()
        return tensorrt.build(model, precision=precision, **options)
    if backend == "auto" and tensorrt.availability() is None:
        return tensorrt.build(model, precision=precision, **options)
    if quantized:
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
    graph, proto = onnx_io.graph_from_onnx(proto)
    metadata = base_metadata(model, proto, "fp32")
    from .optimizer import optimize_graph

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


def load(path, num_threads: int = 0) -> Engine:
    """Loads a plan file written by ``Engine.save``.

    Raises:
        PlanFormatError: the file is missing, corrupt, truncated or from an
            incompatible pyengine version.
    """
    return load_engine(path, num_threads)
