"""Pre-quantized models: ONNX graphs that already carry QuantizeLinear /
DequantizeLinear (ModelOpt, PyTorch QAT or fake-quant exports, onnxruntime's
``quantize_static`` in QDQ format).

As in TensorRT's strongly typed networks, the precision comes from the graph:
``pyengine.build(path)`` builds such a model for the int8 kernels by default,
with the scales and zero points its Q/DQ nodes carry (no calibration). The
"int8" pass pipeline (``engine/passes/registry.cc``) widens float16 layers to
float32, canonicalizes BatchNorm, and lowers each DQ -> Conv/Gemm -> [BN] ->
[Add] -> [Relu] -> Q group to one QConv/QGemm
(``engine/passes/lower_qdq_to_int8.cc``); what it cannot lower keeps running
as float fake-quant, exactly as the model says, and the engine's metadata
lists those layers with the reason.

    engine = pyengine.build("resnet_int8_qdq.onnx")      # int8 kernels
    print(engine.metadata["int8"]["float_layers"])       # what stayed float, and why
"""

from __future__ import annotations

from collections import Counter

import onnx

from . import onnx_io

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
INT8_OPS = ("QConv", "QGemm")


def has_qdq(proto: onnx.ModelProto) -> bool:
    """Whether the model's main graph has QuantizeLinear/DequantizeLinear nodes."""
    return any(n.op_type in QDQ_OPS and n.domain in ("", "ai.onnx") for n in proto.graph.node)


def qdq_summary(proto: onnx.ModelProto) -> dict:
    """Counts of the model's Q/DQ nodes and of their quantized types."""
    inits = {t.name: t.data_type for t in proto.graph.initializer}
    types = Counter()
    for n in proto.graph.node:
        if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits:
            types[onnx.TensorProto.DataType.Name(inits[n.input[2]]).lower()] += 1
    ops = Counter(n.op_type for n in proto.graph.node)
    return {"quantize_linear": ops.get("QuantizeLinear", 0), "dequantize_linear": ops.get("DequantizeLinear", 0),
            "quantized_types": dict(types)}


def lower_graph(graph, optimize: bool = True):
    """Runs the "int8" pipeline on a copy of ``graph``.

    Returns:
        (graph, optimizer report). With ``optimize=False`` only what running
        needs: float16 widening, the lowering and dead-code removal.
    """
    from .optimizer import optimize_graph

    if optimize:
        return optimize_graph(graph, pipeline="int8")
    return optimize_graph(graph, passes=["widen_float16", "elide_float16_round_trips", "lower_qdq_to_int8",
                                         "eliminate_dead_code"])


def int8_metadata(report: dict) -> dict:
    """What ran on the int8 kernels and what stayed float (with the reasons)."""
    ops = report.get("ops_after", {})
    float_layers = [{"node": r["node"], "op": r["op"], "reason": r["reason"]}
                    for r in report.get("refused", []) if r["pass"] == "lower_qdq_to_int8" and not r.get("quiet")]
    return {
        "source": "qdq",
        "int8_layers": {k: v for k, v in ops.items() if k in INT8_OPS},
        "float_layers": float_layers,
        "remaining_qdq": {k: v for k, v in ops.items() if k in QDQ_OPS},
    }


def build_qdq(model, proto: onnx.ModelProto | None = None, optimize: bool = True, num_threads: int = 0,
              precision: str = "int8"):
    """Builds a CPU engine for a model that already has Q/DQ nodes.

    Args:
        model: path or ``onnx.ModelProto``.
        proto: the loaded model, when the caller has it.
        optimize: run the whole "int8" pipeline (else only what running needs).
        num_threads: CPU threads (0: one per physical core; see pyengine.default_threads).
        precision: "int8" (the int8 kernels) or "fp32" (every Q/DQ node runs
            as float fake-quant, the model's own arithmetic, as onnxruntime
            runs it; float16 layers keep their float16 roundings).

    Returns:
        A :class:`pyengine.Engine`; ``metadata["int8"]`` says which layers
        run on the int8 kernels and why the others do not.
    """
    from .api import base_metadata
    from .engine import Engine
    from .optimizer import optimize_graph

    graph, proto = onnx_io.graph_from_onnx(model if proto is None else proto)
    metadata = base_metadata(model, proto, precision)
    metadata["qdq"] = qdq_summary(proto)
    if precision == "int8":
        graph, report = lower_graph(graph, optimize)
        metadata["int8"] = int8_metadata(report)
    elif optimize:
        graph, report = optimize_graph(graph)
    else:
        graph, report = optimize_graph(graph, passes=["widen_float16"])
    metadata["optimizer"] = report
    engine = Engine(graph, metadata, num_threads)
    engine.accuracy_report = None  # as for calibrated builds without validation data
    return engine
