"""INT8 vs FP32 accuracy: the accuracy report and the keep-in-FP32 search.

:class:`_Evaluator` runs the FP32 model once over a fixed set of batches
(keeping its outputs and, through the C++ observers, the SQNR of every
calibrated tensor), then any number of INT8 variants of it (different
``keep_fp32`` sets) against those references. :func:`_search_keep_fp32`
uses it to find the fewest, most sensitive layers to leave in FP32 to meet
an ``accuracy_target``.
"""

from __future__ import annotations

import math

import numpy as np

from . import _core
from .calibration import iter_batches
from .calibration_table import CalibrationTable
from .errors import InvalidArgumentError

TARGET_KEYS = ("top1_agreement", "cosine")


class AccuracyReport(dict):
    """The accuracy of an INT8 model against its FP32 original (a dict);
    ``str(report)`` is a readable summary.

    Keys: "data" (batches, samples, held_out), "runtime" (what ran each model),
    "outputs" ({name: cosine, max_abs_error, mean_abs_error, sqnr_db,
    top1_agreement}), "tensors" (quantized tensors, least accurate first:
    tensor, kind, nodes, sqnr_db), "keep_fp32", "calibration".
    """

    def __str__(self) -> str:
        return format_accuracy_report(self)

    def worst_layers(self, n: int = 5) -> list:
        """ONNX node names reading the n least accurate quantized tensors."""
        names = []
        for t in self.get("tensors", []):
            for node in t["nodes"]:
                if node not in names:
                    names.append(node)
        return names[:n]


def format_accuracy_report(report: dict, max_tensors: int = 10) -> str:
    data = report.get("data", {})
    cal = report.get("calibration", {})
    lines = [f"INT8 vs FP32 on {data.get('samples', '?')} samples "
             f"({'held-out' if data.get('held_out') else 'calibration data, not held out'}); "
             f"calibration: {cal.get('method', '?')}"
             + (f" {cal.get('percentile')}" if cal.get("method") == "percentile" else "")]
    rt = report.get("runtime", {})
    if rt:
        lines.append(f"  runtimes: fp32 on {rt.get('fp32')}, int8 on {rt.get('int8')}")
    lines.append(f"  {'output':<24} {'cosine':>9} {'max|err|':>10} {'mean|err|':>10} {'SQNR dB':>8} {'top-1':>7}")
    for name, m in report.get("outputs", {}).items():
        top1 = "-" if m.get("top1_agreement") is None else f"{100 * m['top1_agreement']:.2f}%"
        lines.append(f"  {name[:24]:<24} {m['cosine']:>9.6f} {m['max_abs_error']:>10.4g} "
                     f"{m['mean_abs_error']:>10.4g} {m['sqnr_db']:>8.2f} {top1:>7}")
    tensors = report.get("tensors", [])
    if tensors:
        lines.append("  least accurate quantized tensors (SQNR, dB; lower = more sensitive):")
        for t in tensors[:max_tensors]:
            lines.append(f"    {t['sqnr_db']:>7.2f}  {t['kind']:<10} {t['tensor'][:40]:<40} -> {', '.join(t['nodes'])}")
    keep = report.get("keep_fp32")
    if keep:
        lines.append(f"  kept in FP32: {', '.join(keep)}")
    return "\n".join(lines)


def _db(signal: float, noise: float) -> float:
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def _output_metrics(refs: list, outs: list) -> dict:
    """Per-output agreement over batches: refs[b][i] vs outs[b][i]."""
    metrics = []
    for i in range(len(refs[0])):
        dot = sa = sb = se = 0.0
        max_err, abs_sum, count, agree, top1_total = 0.0, 0.0, 0, 0, 0
        for ref_b, out_b in zip(refs, outs):
            a = np.asarray(ref_b[i], dtype=np.float64)
            b = np.asarray(out_b[i], dtype=np.float64)
            d = a - b
            dot += float(np.sum(a * b))
            sa += float(np.sum(a * a))
            sb += float(np.sum(b * b))
            se += float(np.sum(d * d))
            if d.size:
                max_err = max(max_err, float(np.max(np.abs(d))))
            abs_sum += float(np.sum(np.abs(d)))
            count += d.size
            if a.ndim >= 2 and a.shape[1] > 1:
                agree += int(np.count_nonzero(np.argmax(a, axis=1) == np.argmax(b, axis=1)))
                top1_total += int(np.prod(a.shape) // a.shape[1])
        cosine = 1.0 if sa == 0 and sb == 0 else (dot / math.sqrt(sa * sb) if sa > 0 and sb > 0 else 0.0)
        metrics.append({"cosine": cosine, "max_abs_error": max_err, "mean_abs_error": abs_sum / max(count, 1),
                        "sqnr_db": _db(sa, se), "top1_agreement": agree / top1_total if top1_total else None})
    return metrics


class _Evaluator:
    """FP32 reference outputs (and per-tensor SQNR) on a fixed set of batches,
    and INT8 variants evaluated against them."""

    def __init__(self, session: "_Session", table: CalibrationTable, data, batch_size, num_batches, held_out,
                 progress=False):
        self.session, self.table, self.held_out = session, table, held_out
        self.batches = [feeds for _, feeds in iter_batches(data, session.specs, batch_size, num_batches,
                                                           progress, desc="evaluating")]
        runner = session.float_runner()
        calibrator = runner.attach(list(table.amax), table.num_bins)
        calibrator.set_eval_scales(table.scales(), statistics=False)  # only the SQNR is read here
        try:
            self.refs = [runner.run(b) for b in self.batches]
            self.sqnr = calibrator.sqnr_db()
        finally:
            runner.detach()
        self.fp32_runtime = runner.kind
        self.output_names = runner.outputs

    def run_int8(self, keep_fp32=()):
        runner, summary = self.session.qdq_runner(self.table, keep_fp32)
        outs = [runner.run(b) for b in self.batches]
        metrics = _output_metrics(self.refs, outs)
        return dict(zip(self.output_names, metrics)), summary, runner.kind

    def report(self, keep_fp32=()) -> AccuracyReport:
        outputs, summary, int8_runtime = self.run_int8(keep_fp32)
        origins = self.session.origins
        tensors = []
        for name, consumers in summary["activation_consumers"].items():
            nodes = [o for c in consumers for o in origins.get(c, [c])]
            tensors.append({"tensor": name, "kind": "activation", "nodes": nodes,
                            "sqnr_db": float(self.sqnr.get(name, math.inf)),
                            "scale": float(summary["activation_scales"][name])})
        for name, consumers in summary["weight_consumers"].items():
            nodes = [o for c in consumers for o in origins.get(c, [c])]
            tensors.append({"tensor": name, "kind": "weight", "nodes": nodes,
                            "sqnr_db": _weight_sqnr(self.session.graph.constant(name), consumers, self.session)})
        tensors.sort(key=lambda t: t["sqnr_db"])
        samples = sum(next(iter(b.values())).shape[0] for b in self.batches)
        return AccuracyReport(
            data={"batches": len(self.batches), "samples": int(samples), "held_out": bool(self.held_out)},
            runtime={"fp32": self.fp32_runtime, "int8": int8_runtime},
            outputs=outputs, tensors=tensors, keep_fp32=list(keep_fp32),
            calibration={"method": self.table.method, "percentile": self.table.percentile},
            skipped=[list(s) for s in summary["skipped"]])


def _weight_sqnr(w, consumers, session) -> float:
    if w is None:
        return math.inf
    w = np.asarray(w, dtype=np.float32)
    kinds = {n["name"]: n for n in session.nodes}
    axis = 0
    node = kinds.get(consumers[0]) if consumers else None
    if node is not None and node["op_type"] in ("Gemm", "FusedGemm"):
        axis = 0 if node["attrs"].get("transB", (2, 0))[1] else 1
    elif node is not None and node["op_type"] == "MatMul":
        axis = w.ndim - 1 if w.ndim >= 2 else 0
    q, scale = _core.quantize_weights(w, axis)
    shape = [1] * w.ndim
    shape[axis] = -1
    dq = q.astype(np.float32) * scale.reshape(shape)
    return _db(float(np.sum(w.astype(np.float64) ** 2)), float(np.sum((w.astype(np.float64) - dq) ** 2)))


def _meets(outputs: dict, target: dict) -> bool:
    for key, want in target.items():
        values = [m[key] for m in outputs.values() if m.get(key) is not None]
        if not values:
            raise InvalidArgumentError(f"accuracy_target key {key!r}: no output of the model supports it "
                                       f"(top-1 needs outputs shaped (N, classes, ...))")
        if min(values) < want:
            return False
    return True


def _check_target(target) -> dict:
    if not isinstance(target, dict) or not target:
        raise InvalidArgumentError(f"accuracy_target must be a dict such as {{'top1_agreement': 0.99}}, got {target!r}")
    bad = [k for k in target if k not in TARGET_KEYS]
    if bad:
        raise InvalidArgumentError(f"accuracy_target keys must be among {TARGET_KEYS}, got {bad}")
    return {k: float(v) for k, v in target.items()}


def _search_keep_fp32(evaluator: _Evaluator, target: dict, keep_fp32: list) -> tuple[list, dict]:
    """The fewest layers to keep in FP32 (beyond ``keep_fp32``) to meet
    ``target``: layers are ranked by their sensitivity, the output noise when
    only that layer is quantized, and added most sensitive first."""
    outputs, summary, _ = evaluator.run_int8(keep_fp32)
    log = {"target": target, "initial": outputs, "sensitivity": [], "evaluations": 1}
    if _meets(outputs, target):
        log["met"] = True
        return keep_fp32, log
    layers = [n for n in summary["quantized_nodes"] if n not in keep_fp32]
    sensitivity = []
    for layer in layers:
        others = keep_fp32 + [n for n in layers if n != layer]
        outs, _, _ = evaluator.run_int8(others)
        noise = max(1.0 - m["cosine"] for m in outs.values())
        top1 = [m["top1_agreement"] for m in outs.values() if m["top1_agreement"] is not None]
        sensitivity.append({"node": layer, "output_noise": noise, "top1_agreement": min(top1) if top1 else None})
    log["evaluations"] += len(layers)
    ranked = [s["node"] for s in sorted(sensitivity, key=lambda s: -s["output_noise"])]
    log["sensitivity"] = sorted(sensitivity, key=lambda s: -s["output_noise"])
    for k in range(1, len(ranked) + 1):
        keep = keep_fp32 + ranked[:k]
        outs, _, _ = evaluator.run_int8(keep)
        log["evaluations"] += 1
        if _meets(outs, target):
            log["met"], log["final"] = True, outs
            return keep, log
    log["met"] = False
    return keep_fp32 + ranked, log



def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, (np.floating, np.integer)):
        return _jsonable(obj.item())
    return obj
