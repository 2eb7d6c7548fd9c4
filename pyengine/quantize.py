"""INT8 post-training quantization: calibrate, place Q/DQ, build, report.

    qdq = pyengine.quantize("model.onnx", calibration_data=images)      # onnx.ModelProto
    engine = pyengine.build("model.onnx", precision="int8", calibration_data=images,
                            validation_data=held_out)
    print(engine.accuracy_report)
    engine.save_calibration("model.calib", format="tensorrt")

The pipeline:

1. The float model is prepared: opset raised to 13 where older (per-channel
   DequantizeLinear needs it), Constant nodes and Identity-of-initializer
   chains become plain initializers, then the graph optimizer runs (with
   ``optimize=False`` only the passes that fold BatchNormalization into the
   Conv before it, so weights are quantized as they will run).
2. Calibration runs the float graph over the calibration batches and collects,
   in C++, the statistics of every float activation (engine/quant/observers.h):
   the CPU executor's observer hook when pyengine runs every op of the model,
   else onnxruntime, whose intermediate tensors feed the same observers.
3. ``insert_qdq`` (engine/quant/insert_qdq.h) places Q/DQ pairs as TensorRT
   wants them: every Conv/Gemm/MatMul input (weights int8 per output channel),
   the skip input of residual Adds, one pair per tensor.
4. The Q/DQ graph is written out as standard ONNX (``quantize``) or lowered to
   pyengine's int8 kernels (``build_int8``).

The calibration table (amax per tensor) can be cached (``calibration_cache``)
keyed by the model's content hash and the calibration settings, and exported
in TensorRT's text cache format.

Where things are: this module holds the entry points (``calibrate``,
``quantize``, ``build_int8``, ``accuracy_report``) and the quantization
session they share (model preparation, calibration runs, Q/DQ placement);
calibration tables and caches are in :mod:`pyengine.calibration_table`, the
accuracy report and the keep-in-FP32 search in :mod:`pyengine.accuracy`.
Every public name is re-exported here.
"""

from __future__ import annotations

import copy
import os
import warnings

import numpy as np
import onnx
from onnx import helper

from . import _core, onnx_io
from .accuracy import (  # noqa: F401  (re-exported: pyengine.quantize.AccuracyReport, ...)
    TARGET_KEYS,
    AccuracyReport,
    _check_target,
    _Evaluator,
    _jsonable,
    _search_keep_fp32,
    format_accuracy_report,
)
from .calibration import DEFAULT_BATCH_SIZE, input_specs, is_reiterable, iter_batches
from .calibration_table import (  # noqa: F401  (re-exported)
    CACHE_FORMAT,
    CACHE_VERSION,
    DEFAULT_METHOD,
    DEFAULT_NUM_BINS,
    DEFAULT_PERCENTILE,
    DEFAULT_TRT_CACHE_VERSION,
    METHODS,
    CalibrationTable,
    _check_settings,
    _read_cache_entries,
    cache_key,
    check_statistics,
    load_calibration,
    parse_tensorrt_cache,
    save_calibration,
    scale_from_amax,
    tensorrt_cache_text,
)
from .errors import (
    CalibrationError,
    InvalidArgumentError,
    InvalidModelError,
    UnsupportedOperatorError,
)

QDQ_MIN_OPSET = 13


# --------------------------------------------------------------------------
# Model preparation (float -> float, exact up to float rounding)
# --------------------------------------------------------------------------

def _ensure_opset(proto: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    current = onnx_io.default_opset(proto)
    if current >= opset:
        return proto
    try:
        from onnx import version_converter

        return version_converter.convert_version(proto, opset)
    except Exception as exc:
        raise InvalidModelError(
            f"the model uses opset {current}; INT8 Q/DQ models need opset {opset} and the upgrade failed: {exc}") from None


def prepare_float_model(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Returns a copy of ``proto`` with Constant nodes and Identity-of-constant
    chains turned into initializers.

    BatchNormalization is not folded here: the C++ pass ``fold_bn_into_conv``
    does it (also with ``optimize=False``, see :data:`BN_FOLD_PASSES`), so
    weights are quantized as they will run.
    """
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    g = model.graph
    outputs = {o.name for o in g.output}
    inits = {t.name: t for t in g.initializer}

    # Constant nodes (PyTorch emits them for literals and, unfolded, for
    # parameters) and Identity chains over constants become initializers.
    alias = {}
    nodes = []
    for n in g.node:
        ins = [alias.get(i, i) for i in n.input]
        default_domain = n.domain in ("", "ai.onnx")
        if (default_domain and n.op_type == "Constant" and len(n.attribute) == 1
                and n.attribute[0].name == "value" and n.output[0] not in outputs):
            t = onnx.TensorProto()
            t.CopyFrom(n.attribute[0].t)
            t.name = n.output[0]
            g.initializer.append(t)
            inits[t.name] = t
            continue
        if default_domain and n.op_type == "Identity" and ins and ins[0] in inits and n.output[0] not in outputs:
            alias[n.output[0]] = ins[0]
            continue
        del n.input[:]
        n.input.extend(ins)
        nodes.append(n)

    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in nodes for i in n.input} | outputs
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    kept_names = {t.name for t in keep}
    graph_inputs = [vi for vi in g.input if vi.name not in inits or vi.name in kept_names]
    del g.input[:]
    g.input.extend(graph_inputs)
    produced = {o for n in nodes for o in n.output}
    value_info = [vi for vi in g.value_info if vi.name in produced]
    del g.value_info[:]
    g.value_info.extend(value_info)
    return model


# --------------------------------------------------------------------------
# pyengine-domain ops -> standard ONNX (for onnxruntime and TensorRT)
# --------------------------------------------------------------------------

def _onnxruntime(reason):
    try:
        import onnxruntime
    except ImportError:
        raise UnsupportedOperatorError(
            f"{reason}\n(onnxruntime, which pyengine falls back to for calibration and INT8 "
            f"evaluation of such models, is not installed: pip install onnxruntime)") from None
    return onnxruntime


class _Runner:
    """Runs a graph with pyengine's CPU executor, or with onnxruntime when the
    executor lacks a kernel for some op of it. ``attach`` routes the float
    tensors of every run into C++ observers (a ``_core.Calibrator``)."""

    def __init__(self, graph, onnx_model, num_threads: int = 0):
        self.inputs = [i[0] for i in graph.inputs()]
        self.outputs = [o[0] for o in graph.outputs()]
        self._onnx_model = onnx_model  # callable returning a ModelProto, for onnxruntime
        self._num_threads = num_threads
        self._session = None
        self._fetch = []
        self.calibrator = None
        self._names = set()
        self._tap, self._tapped = None, set()
        try:
            self._executor = _core.Executor(graph, num_threads)
            self.kind = "pyengine"
        except UnsupportedOperatorError as exc:
            self._executor = None
            self._ort = _onnxruntime(str(exc))
            self.kind = "onnxruntime"

    def attach(self, names, num_bins: int = DEFAULT_NUM_BINS, tap=None):
        """Observers for ``names``; ``tap`` (a gptq.GramCollector, or None) is
        also handed its tensors (``tap.tensors()``) as the runs compute them."""
        self.detach()
        tapped = tap.tensors() if tap is not None else []
        self.calibrator = _core.Calibrator(self._executor, list(names), num_bins, tap, tapped)
        self._names = set(names)
        self._tap, self._tapped = tap, set(tapped)
        if self._executor is None:
            wanted = list(dict.fromkeys(list(names) + tapped))
            self._fetch = [n for n in wanted if n not in self.inputs and n not in self.outputs]
            self._session = None
        return self.calibrator

    def detach(self):
        if self.calibrator is not None:
            self.calibrator.detach()
        self.calibrator, self._names, self._fetch, self._session = None, set(), [], None
        self._tap, self._tapped = None, set()

    def _ort_session(self):
        if self._session is None:
            model = copy.deepcopy(self._onnx_model())
            known = {o.name for o in model.graph.output}
            for name in self._fetch:
                if name not in known:
                    model.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
            options = self._ort.SessionOptions()
            if self._num_threads:
                options.intra_op_num_threads = self._num_threads
            options.log_severity_level = 3
            self._session = self._ort.InferenceSession(model.SerializeToString(), options,
                                                       providers=["CPUExecutionProvider"])
        return self._session

    def run(self, feeds: dict) -> list:
        if self._executor is not None:
            arrays = [feeds[n] for n in self.inputs]
            if self.calibrator is not None:
                return self.calibrator.observe(arrays)
            return self._executor.run(arrays)
        names = self.outputs + self._fetch
        results = self._ort_session().run(names, {n: feeds[n] for n in self.inputs})
        if self.calibrator is not None:
            for n, a in list(zip(self.inputs, (feeds[i] for i in self.inputs))) + list(zip(names, results)):
                if not isinstance(a, np.ndarray) or a.dtype != np.float32:
                    continue
                if n in self._names:
                    self.calibrator.update(n, np.ascontiguousarray(a))
                if n in self._tapped:
                    self._tap(n, a)
        return results[:len(self.outputs)]


def _onnx_elem_types(proto: onnx.ModelProto) -> dict:
    """{value name: ONNX element type} from onnx shape inference (best effort)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # inference is a hint here; models it rejects still run
        inferred = proto
    g = inferred.graph
    return {vi.name: vi.type.tensor_type.elem_type for vi in (*g.input, *g.value_info, *g.output)
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type}


# With optimize=False, only what folding BatchNormalization into the Conv
# before it needs (parameters as constants first), so that weights are
# quantized as they will run; float16 layers are widened (no kernel runs them).
BN_FOLD_PASSES = ("widen_float16", "eliminate_identity", "fold_constants", "eliminate_dead_code",
                  "fold_bn_into_conv", "eliminate_dead_code")


def _optimize_for_quantization(graph, optimize: bool = True):
    """The "quantize" pipeline (engine/passes/registry.cc): the default one
    without the epilogue fusion, which would hide the Conv -> Add -> Relu
    groups that Q/DQ placement, TensorRT and the int8 lowering look for.
    With ``optimize=False``, only :data:`BN_FOLD_PASSES`."""
    from .optimizer import optimize_graph

    if not optimize:
        return optimize_graph(graph, passes=list(BN_FOLD_PASSES))
    return optimize_graph(graph, pipeline="quantize")


def _to_standard_onnx(model: onnx.ModelProto) -> onnx.ModelProto:
    """pyengine-domain ops written as standard ONNX (the optimizer's expander)."""
    from . import optimizer

    return optimizer.expand_custom_ops(model)


def _lower(graph, with_report=False):
    """The Q/DQ graph through the "int8" pipeline (engine/passes/registry.cc):
    lowered to pyengine's int8 ops, the layers left in float fused. With
    ``with_report``: (graph, optimizer report)."""
    from .optimizer import optimize_graph

    lowered, report = optimize_graph(graph, pipeline="int8")
    return (lowered, report) if with_report else lowered


# --------------------------------------------------------------------------
# The quantization session: one prepared model, calibrated once
# --------------------------------------------------------------------------

# How the int8 weight levels are chosen (pyengine/gptq.py): GPTQ, which
# minimizes each layer's output error on the calibration inputs, or nearest
# rounding (each weight's own error). Same scales either way.
WEIGHT_ROUNDINGS = ("gptq", "nearest")
DEFAULT_WEIGHT_ROUNDING = "gptq"


def _check_weight_rounding(weight_rounding) -> str:
    if weight_rounding not in WEIGHT_ROUNDINGS:
        raise InvalidArgumentError(f"weight_rounding must be one of {WEIGHT_ROUNDINGS}, got {weight_rounding!r}")
    return weight_rounding


class _Session:
    def __init__(self, model, optimize: bool = True, num_threads: int = 0, int8_activations: str = "symmetric",
                 weight_rounding: str = DEFAULT_WEIGHT_ROUNDING):
        self.asymmetric = _check_activations(int8_activations)
        self.weight_rounding = _check_weight_rounding(weight_rounding)
        # GPTQ's input statistics (gptq.GramCollector), from the calibration
        # pass or, when the table came from a cache, a pass of their own.
        self.grams = None
        self._gptq_memo = {}
        source = onnx_io.load_model(model)
        if any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul")
               for n in source.graph.node):
            raise InvalidArgumentError("the model is already quantized (it has QuantizeLinear/DequantizeLinear "
                                       "or QLinear* nodes): build it as it is, pyengine.build(model) (its Q/DQ "
                                       "give the int8 scales), or pass the float model to calibrate")
        self.model = model
        self.source = source
        self.model_sha256 = onnx_io.model_sha256(source)
        self.proto = prepare_float_model(_ensure_opset(source, QDQ_MIN_OPSET))
        # Shapes inferred first, as for FP32 builds (api._build_cpu).
        from .optimizer import _with_inferred_shapes

        graph, _ = onnx_io.graph_from_onnx(_with_inferred_shapes(self.proto) if optimize else self.proto)
        graph, report = _optimize_for_quantization(graph, optimize)
        self.optimizer_report = report if optimize else None
        self.graph = graph
        self.opset = onnx_io.default_opset(self.proto)
        self.num_threads = num_threads
        self.specs = input_specs(graph)
        dtypes = {name: code for name, code, _, is_const in graph.values() if not is_const}
        # Until shape inference knows every op, ONNX's own inference fills in
        # element types the C++ graph does not have yet.
        for name, code in _onnx_elem_types(self.proto).items():
            if not dtypes.get(name):
                dtypes[name] = code
        names = [n for n, code, _ in graph.inputs() if code == onnx.TensorProto.FLOAT]
        self.nodes = graph.nodes()
        for node in self.nodes:
            names.extend(o for o in node["outputs"] if o and dtypes.get(o) == onnx.TensorProto.FLOAT)
        self.float_tensors = list(dict.fromkeys(names))
        self.origins = {n["name"]: list(n["origin"]) or [n["name"]] for n in self.nodes}
        self._float_onnx = None

    # -- float model ------------------------------------------------------
    def float_onnx(self) -> onnx.ModelProto:
        if self._float_onnx is None:
            self._float_onnx = _to_standard_onnx(onnx_io.graph_to_onnx(self.graph, self.opset))
        return self._float_onnx

    def float_runner(self) -> _Runner:
        return _Runner(self.graph, self.float_onnx, self.num_threads)

    # -- calibration ------------------------------------------------------
    def calibrate(self, data, method, percentile, num_batches=None, batch_size=DEFAULT_BATCH_SIZE,
                  num_bins=DEFAULT_NUM_BINS, progress=True) -> CalibrationTable:
        runner = self.float_runner()
        grams = self._gram_collector()
        calibrator = runner.attach(self.float_tensors, num_bins, tap=grams)
        count = 0
        try:
            for index, feeds in iter_batches(data, self.specs, batch_size, num_batches, progress):
                runner.run(feeds)
                bad = calibrator.nonfinite()
                if bad:
                    where = ", ".join(f"'{n}' ({c} values)" for n, c in list(bad.items())[:5])
                    raise CalibrationError(f"calibration batch {index}: the float model produced NaN or Inf in "
                                           f"{where}; check the data and the model")
                count += 1
            amax = calibrator.amax(method, percentile)
            ordered = {n: float(amax[n]) for n in self.float_tensors if n in amax}
            check_statistics({n: calibrator.stats(n) for n in ordered}, ordered, method, percentile,
                             inputs=[spec.name for spec in self.specs])
        finally:
            runner.detach()
        self._set_grams(grams)
        return CalibrationTable(self.model_sha256, method, float(percentile), ordered, num_bins, count, runner.kind)

    def _gram_collector(self):
        if self.weight_rounding != "gptq":
            return None
        from .gptq import GramCollector

        return GramCollector(self.graph)

    def collect_grams(self, data, num_batches=None, batch_size=DEFAULT_BATCH_SIZE, progress=True):
        """GPTQ's statistics alone (a table read from a cache): one float pass."""
        grams = self._gram_collector()
        if grams is None or data is None:
            return
        runner = self.float_runner()
        runner.attach([], tap=grams)
        try:
            for _, feeds in iter_batches(data, self.specs, batch_size, num_batches, progress, desc="GPTQ statistics"):
                runner.run(feeds)
        finally:
            runner.detach()
        self._set_grams(grams)

    def _set_grams(self, grams):
        self.grams = grams
        self._gptq_memo = {}  # (roundings made from earlier statistics)

    def table(self, data, method, percentile, cache=None, num_batches=None, batch_size=DEFAULT_BATCH_SIZE,
              num_bins=DEFAULT_NUM_BINS, progress=True) -> CalibrationTable:
        """The calibration table: from the cache when it has an entry for this
        model and these settings, else calibrated (and then cached)."""
        _check_settings(method, percentile, num_bins)
        key = cache_key(self.model_sha256, method, percentile, num_bins)
        if cache is not None:
            entries = _read_cache_entries(os.fspath(cache))
            if key in entries:
                self.collect_grams(data, num_batches, batch_size, progress)
                return entries[key]
            if "tensorrt" in entries:
                self.collect_grams(data, num_batches, batch_size, progress)
                return self._from_tensorrt_cache(entries["tensorrt"], os.fspath(cache))
        if data is None:
            where = f" and the cache '{os.fspath(cache)}' has no entry for this model and settings" if cache else ""
            raise CalibrationError(f"no calibration data given (calibration_data=...){where}")
        table = self.calibrate(data, method, percentile, num_batches, batch_size, num_bins, progress)
        if cache is not None:
            save_calibration(table, cache, format="json")
        return table

    def _from_tensorrt_cache(self, table, path):
        known = set(self.float_tensors)
        amax = {n: a for n, a in table.amax.items() if n in known}
        if not amax:
            raise CalibrationError(f"TensorRT calibration cache '{path}' names none of this model's tensors")
        table.model_sha256 = self.model_sha256
        table.amax = amax
        return table

    # -- Q/DQ -------------------------------------------------------------
    def check_keep(self, keep_fp32) -> list:
        if isinstance(keep_fp32, str):
            keep_fp32 = [keep_fp32]
        keep = list(dict.fromkeys(keep_fp32 or ()))
        known = set(self.origins) | {o for origin in self.origins.values() for o in origin}
        unknown = [k for k in keep if k not in known]
        if unknown:
            raise InvalidArgumentError(f"keep_fp32 names unknown nodes {unknown}; node names are ONNX node names "
                                       f"such as {sorted(self.origins)[:5]}")
        return keep

    def qdq_graph(self, table: CalibrationTable, keep_fp32=()):
        g = self.graph.clone()
        summary = _core.insert_qdq(g, dict(table.amax), list(keep_fp32), self.asymmetric)
        summary["weight_rounding"] = self.round_weights(g, summary)
        return g, summary

    def round_weights(self, qgraph, summary) -> dict:
        """GPTQ's int8 weights in place of nearest rounding's (when asked for
        and calibration data was seen); the report for the metadata."""
        if self.weight_rounding != "gptq":
            return {"method": "nearest"}
        if self.grams is None:
            note = ("weight_rounding='gptq' needs the calibration data, and the table came from a cache without "
                    "it: the int8 weights are rounded to nearest (pass calibration_data=... with the cache, or "
                    "weight_rounding='nearest' to say so)")
            warnings.warn(note, stacklevel=4)
            return {"method": "nearest", "note": note}
        from . import gptq

        return gptq.apply(qgraph, self.graph, summary, self.grams, self._gptq_memo)

    def qdq_onnx(self, qgraph, table: CalibrationTable, summary) -> onnx.ModelProto:
        name = self.source.graph.name or "pyengine"
        model = _to_standard_onnx(onnx_io.graph_to_onnx(qgraph, self.opset, name=f"{name}_int8"))
        props = {"pyengine.precision": "int8", "pyengine.calibration_method": table.method,
                 "pyengine.calibration_percentile": str(table.percentile),
                 "pyengine.source_model_sha256": self.model_sha256,
                 "pyengine.weight_rounding": summary["weight_rounding"]["method"]}
        for k, v in props.items():
            model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
        onnx.checker.check_model(model)
        return model

    def qdq_runner(self, table, keep_fp32=()):
        qgraph, summary = self.qdq_graph(table, keep_fp32)
        model = []

        def onnx_model():
            if not model:
                model.append(self.qdq_onnx(qgraph, table, summary))
            return model[0]

        # Lowering rewrites in place; onnxruntime, if it has to step in, needs
        # the standard Q/DQ graph.
        return _Runner(_lower(qgraph.clone()), onnx_model, self.num_threads), summary


# --------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------

INT8_ACTIVATIONS = ("symmetric", "asymmetric")


def _check_activations(int8_activations) -> bool:
    """True for "asymmetric" (see quantize())."""
    if int8_activations not in INT8_ACTIVATIONS:
        raise InvalidArgumentError(f"int8_activations must be one of {INT8_ACTIVATIONS}, got {int8_activations!r}")
    return int8_activations == "asymmetric"


def calibrate(model, calibration_data, calibration_method: str = DEFAULT_METHOD,
              percentile: float = DEFAULT_PERCENTILE,
              num_batches: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE, num_bins: int = DEFAULT_NUM_BINS,
              optimize: bool = True, progress: bool = True, num_threads: int = 0) -> CalibrationTable:
    """Calibrates every float tensor of a model.

    Args:
        model: path to an .onnx file or an ``onnx.ModelProto`` (float).
        calibration_data: see :mod:`pyengine.calibration`.
        calibration_method: "mse" (the default: the threshold minimizing
            the squared quantization error), "percentile" (of |x|),
            "entropy" (TensorRT's EntropyCalibration2, robust to point
            masses) or "minmax".
        percentile: for "percentile", the percentile of |x| kept unclipped.
        num_batches: use at most this many batches.
        batch_size: samples per batch when splitting arrays.
        num_bins: histogram bins per tensor.
        optimize: run the graph optimizer before calibrating.
        progress: show a progress bar (tqdm, when installed).
        num_threads: CPU threads (0: one per physical core; see pyengine.default_threads).

    Returns:
        A :class:`CalibrationTable`.
    """
    _check_settings(calibration_method, percentile, num_bins)
    session = _Session(model, optimize, num_threads, weight_rounding="nearest")  # (a table has no weights)
    return session.calibrate(calibration_data, calibration_method, percentile, num_batches, batch_size,
                             num_bins, progress)


def quantize(model, calibration_data=None, calibration_method: str = DEFAULT_METHOD,
             percentile: float = DEFAULT_PERCENTILE, keep_fp32=(), calibration_cache=None,
             num_batches: int | None = None, *, batch_size: int = DEFAULT_BATCH_SIZE, optimize: bool = True,
             num_bins: int = DEFAULT_NUM_BINS, accuracy_target: dict | None = None, validation_data=None,
             progress: bool = True, num_threads: int = 0, int8_activations: str = "symmetric",
             weight_rounding: str = DEFAULT_WEIGHT_ROUNDING) -> onnx.ModelProto:
    """Post-training INT8 quantization to a standard Q/DQ ONNX model.

    The result passes ``onnx.checker``, runs in onnxruntime, and is what the
    TensorRT backend builds from: symmetric int8 (zero points 0; see
    ``int8_activations`` for the CPU's asymmetric option), weights per
    output channel, activations per tensor, Q/DQ placed as TensorRT wants
    for residual networks.

    Args:
        model: path to an .onnx file or an ``onnx.ModelProto`` (float).
        calibration_data: see :mod:`pyengine.calibration`; may be omitted when
            ``calibration_cache`` has an entry for this model and settings.
        calibration_method: "mse" (default), "percentile", "entropy" or "minmax".
        percentile: for "percentile" (default 99.99).
        keep_fp32: ONNX node names to leave unquantized.
        calibration_cache: path of a calibration cache: read when it has an
            entry for this model's content and these settings, else written
            after calibrating. A TensorRT text cache is read too.
        num_batches: calibrate on at most this many batches.
        batch_size: samples per batch when splitting arrays.
        optimize: run the graph optimizer first.
        num_bins: histogram bins per tensor.
        accuracy_target: e.g. ``{"top1_agreement": 0.99}`` or ``{"cosine": 0.999}``:
            keep the fewest, most sensitive layers in FP32 to meet it on
            ``validation_data``.
        validation_data: held-out batches for ``accuracy_target``.
        progress: show progress bars (tqdm, when installed).
        num_threads: CPU threads for calibration (0: one per physical core; see pyengine.default_threads).
        int8_activations: "symmetric" (default: zero point 0, the form
            TensorRT takes) or "asymmetric": tensors that are non-negative by
            construction (Relu, Clip(min >= 0), Sigmoid outputs and poolings
            of them) use the whole int8 range for [0, amax] (scale amax / 255,
            zero point -128, onnxruntime's u8 form stored as int8): one more
            bit where a symmetric scale wastes the negative half. For the CPU
            runtime and onnxruntime; TensorRT rejects zero points.
        weight_rounding: "gptq" (default): each conv's and Gemm's int8
            weights rounded to minimize the layer's output error on the
            calibration inputs (pyengine/gptq.py; the per-channel scales stay
            amax / 127, so TensorRT takes the model as before); "nearest":
            each weight to its nearest level. GPTQ needs the calibration data
            (a table read from a cache without data falls back to nearest).

    Returns:
        The Q/DQ ``onnx.ModelProto``.
    """
    session = _Session(model, optimize, num_threads, int8_activations, weight_rounding)
    table = session.table(calibration_data, calibration_method, percentile, calibration_cache, num_batches,
                          batch_size, num_bins, progress)
    keep = session.check_keep(keep_fp32)
    if accuracy_target is not None:
        target = _check_target(accuracy_target)
        if validation_data is None:
            raise InvalidArgumentError("accuracy_target needs validation_data (held-out batches)")
        evaluator = _Evaluator(session, table, validation_data, batch_size, None, True)
        keep, _ = _search_keep_fp32(evaluator, target, keep)
    qgraph, summary = session.qdq_graph(table, keep)
    return session.qdq_onnx(qgraph, table, summary)


def build_int8(model, optimize: bool = True, num_threads: int = 0, *, calibration_data=None,
               calibration_method: str = DEFAULT_METHOD, percentile: float = DEFAULT_PERCENTILE, keep_fp32=(),
               calibration_cache=None, num_batches: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
               num_bins: int = DEFAULT_NUM_BINS, validation_data=None, accuracy_target: dict | None = None,
               report: bool = True, progress: bool = True, int8_activations: str = "symmetric",
               weight_rounding: str = DEFAULT_WEIGHT_ROUNDING):
    """Calibrates, quantizes and compiles an INT8 CPU engine
    (``pyengine.build(model, precision="int8", ...)`` lands here).

    Options are those of :func:`quantize`, plus:
        validation_data: held-out batches for the accuracy report and
            ``accuracy_target``; without it the report uses the calibration
            data when it can be read twice (and says it is not held out).
        report: compute the accuracy report (``engine.accuracy_report``, also
            stored in ``engine.metadata["int8"]["accuracy"]``).

    Returns:
        A :class:`pyengine.Engine` running the Q/DQ graph, lowered to int8
        kernels where pyengine has them. ``engine.save_calibration(path)``
        writes its calibration table.
    """
    from .api import base_metadata
    from .engine import Engine

    session = _Session(model, optimize, num_threads, int8_activations, weight_rounding)
    table = session.table(calibration_data, calibration_method, percentile, calibration_cache, num_batches,
                          batch_size, num_bins, progress)
    keep = session.check_keep(keep_fp32)
    search_log = None
    evaluator = None
    if accuracy_target is not None:
        target = _check_target(accuracy_target)
        if validation_data is None:
            raise InvalidArgumentError("accuracy_target needs validation_data (held-out batches)")
        evaluator = _Evaluator(session, table, validation_data, batch_size, None, True)
        keep, search_log = _search_keep_fp32(evaluator, target, keep)
    qgraph, summary = session.qdq_graph(table, keep)
    run_graph, lower_report = _lower(qgraph, with_report=True)
    metadata = base_metadata(model, session.source, "int8")
    metadata["source_model_sha256"] = session.model_sha256
    if session.optimizer_report is not None:
        metadata["optimizer"] = session.optimizer_report
    metadata["calibration"] = table.to_dict()
    metadata["int8"] = {
        "keep_fp32": keep,
        "quantized_nodes": summary["quantized_nodes"],
        "skipped": [list(s) for s in summary["skipped"]],
        "num_activation_pairs": summary["num_activation_pairs"],
        "num_weights": summary["num_weights"],
        "lowered": True,
        "activations": int8_activations,
        "asymmetric_tensors": len(summary["activation_zero_points"]),
        "weight_rounding": summary["weight_rounding"],
    }
    # Quantized layers the int8 kernels cannot take (3-D convolutions, for
    # one) keep running as float fake-quant (DQ -> op): name them and why.
    from .qdq import int8_metadata

    lowering = int8_metadata(lower_report)
    metadata["int8"]["int8_layers"] = lowering["int8_layers"]
    metadata["int8"]["float_layers"] = lowering["float_layers"]
    if search_log is not None:
        metadata["int8"]["accuracy_search"] = _jsonable(search_log)
    try:
        engine = Engine(run_graph, metadata, num_threads)
    except UnsupportedOperatorError as exc:
        raise UnsupportedOperatorError(
            f"{exc}\nThis build of pyengine cannot run the INT8 graph on the CPU; "
            f"pyengine.quantize(...) gives the Q/DQ ONNX model for onnxruntime or TensorRT.") from None
    accuracy = None
    if report:
        if evaluator is None:
            data, held_out = (validation_data, True) if validation_data is not None else (calibration_data, False)
            if data is not None and (held_out or is_reiterable(data)):
                evaluator = _Evaluator(session, table, data, batch_size, None if held_out else num_batches,
                                       held_out)
        if evaluator is not None:
            accuracy = evaluator.report(keep)
            metadata["int8"]["accuracy"] = _jsonable(dict(accuracy))
    engine.accuracy_report = accuracy
    return engine


def accuracy_report(model, data, calibration_method: str = DEFAULT_METHOD,
                    percentile: float = DEFAULT_PERCENTILE,
                    keep_fp32=(), calibration_cache=None, calibration_data=None, num_batches=None,
                    batch_size: int = DEFAULT_BATCH_SIZE, num_bins: int = DEFAULT_NUM_BINS, optimize: bool = True,
                    progress: bool = False, num_threads: int = 0,
                    weight_rounding: str = DEFAULT_WEIGHT_ROUNDING) -> AccuracyReport:
    """INT8 vs FP32 accuracy of a model's quantization on ``data`` (held out).

    Calibrates on ``calibration_data`` (or reads ``calibration_cache``) with
    the given settings, quantizes, and compares the INT8 model's outputs with
    the FP32 model's on ``data``: per output cosine similarity, max/mean
    absolute error, SQNR and top-1 agreement; per quantized tensor its SQNR
    (dB), naming the ONNX nodes that read it, least accurate first.
    ``weight_rounding``: as for :func:`quantize`.

    Returns:
        An :class:`AccuracyReport` (a dict; ``str()`` gives a summary table).
    """
    session = _Session(model, optimize, num_threads, weight_rounding=weight_rounding)
    table = session.table(calibration_data, calibration_method, percentile, calibration_cache, num_batches,
                          batch_size, num_bins, progress)
    keep = session.check_keep(keep_fp32)
    return _Evaluator(session, table, data, batch_size, None, True).report(keep)


__all__ = [
    "quantize", "build_int8", "calibrate", "accuracy_report", "AccuracyReport", "CalibrationTable",
    "save_calibration", "load_calibration", "tensorrt_cache_text", "parse_tensorrt_cache",
    "prepare_float_model", "METHODS",
]
