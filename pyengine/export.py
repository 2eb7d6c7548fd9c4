"""What the TensorRT backend hands to TensorRT, as standard ONNX.

    onnx_model = pyengine.export("m.onnx", precision="fp16")          # onnx.ModelProto
    onnx_model = pyengine.export("m.onnx", precision="int8", calibration_data=images)
    problems = pyengine.check_tensorrt(onnx_model)                     # [] when TensorRT's rules hold

TensorRT 10/11 networks are strongly typed: precision is in the graph, not in
builder flags (../shared/TENSORRT.md). So:

* FP32: the optimized graph (``pyengine.optimize``), standard ops only.
* FP16: the same graph with float16 initializers and Casts. Inputs and
  outputs stay float32 (a Cast after each input, one before each output)
  unless ``io_dtype="fp16"``; ``keep_fp32`` names nodes that run in float32
  between Casts.
* INT8: explicit QuantizeLinear/DequantizeLinear pairs, from
  :func:`pyengine.quantize` (calibrated here) or already in the user's model;
  :func:`pyengine.check_tensorrt` runs first and must find nothing.

``pyengine.build(..., backend="tensorrt")`` builds exactly what ``export``
returns for the same arguments.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import onnx_io
from .errors import InvalidArgumentError, InvalidModelError

PRECISIONS = ("fp32", "fp16", "int8")
IO_DTYPES = ("fp32", "fp16")
MIN_OPSET = 13  # per-channel DequantizeLinear, and TensorRT's Q/DQ rules

# Options export() passes to pyengine.quantize() for INT8.
QUANTIZE_OPTIONS = ("calibration_data", "calibration_method", "percentile", "calibration_cache", "num_batches",
                    "batch_size", "num_bins", "accuracy_target", "validation_data", "progress", "num_threads",
                    "weight_rounding")

# Float inputs that ONNX fixes to float32 whatever the data type (Resize and
# Upsample scales): they stay float32 in an FP16 model.
_FLOAT32_INPUTS = {("Resize", 2), ("Upsample", 1)}
# Ops whose output type is set by an attribute rather than by their inputs.
_TYPED_BY_ATTRIBUTE = {"Cast": "to", "EyeLike": "dtype", "RandomNormal": "dtype", "RandomUniform": "dtype",
                       "RandomNormalLike": "dtype", "RandomUniformLike": "dtype"}


def is_quantized(model: onnx.ModelProto) -> bool:
    """True when the model already carries Q/DQ (ModelOpt, QAT, onnxruntime, pyengine.quantize)."""
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def export(model, precision: str = "fp32", *, io_dtype: str = "fp32", keep_fp32=(), optimize: bool = True,
           check: bool = True, **quantize_options) -> onnx.ModelProto:
    """The ONNX model that the TensorRT backend builds, for inspection or other tools.

    Args:
        model: path to an .onnx file or an ``onnx.ModelProto``.
        precision: "fp32", "fp16" or "int8".
        io_dtype: "fp32" (default; FP16 models Cast at their inputs and
            outputs) or "fp16" (float inputs and outputs become float16).
        keep_fp32: ONNX node names that stay in FP32 (FP16: Casts around them;
            INT8: left unquantized, as in :func:`pyengine.quantize`).
        optimize: run pyengine's graph optimizer first (standard ops only).
        check: for INT8, run :func:`check_tensorrt` and raise on any violation.
        **quantize_options: for INT8, the calibration options of
            :func:`pyengine.quantize` (``calibration_data``,
            ``calibration_method``, ``percentile``, ``calibration_cache``, ...).
            An already quantized model (it has Q/DQ nodes) is taken as it is.

    Returns:
        A standard ``onnx.ModelProto`` (opset >= 13, no pyengine custom ops)
        that passes ``onnx.checker``.

    Raises:
        InvalidArgumentError: a bad precision, io_dtype or option.
        InvalidModelError: the INT8 model breaks one of TensorRT's rules
            (the message lists each violation with its node).
    """
    if precision not in PRECISIONS:
        raise InvalidArgumentError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if io_dtype not in IO_DTYPES:
        raise InvalidArgumentError(f"io_dtype must be one of {IO_DTYPES}, got {io_dtype!r}")
    if isinstance(keep_fp32, str):
        keep_fp32 = [keep_fp32]
    keep_fp32 = list(keep_fp32 or ())
    unknown = sorted(set(quantize_options) - set(QUANTIZE_OPTIONS))
    if unknown:
        raise InvalidArgumentError(f"unexpected export options {unknown}; INT8 takes {list(QUANTIZE_OPTIONS)}")
    if quantize_options and precision != "int8":
        raise InvalidArgumentError(f"calibration options {sorted(quantize_options)} apply to precision='int8' only")
    proto = onnx_io.load_model(model)

    if precision == "int8":
        if io_dtype != "fp32":
            raise InvalidArgumentError("io_dtype='fp16' is for precision='fp16'; INT8 models keep float32 I/O")
        if is_quantized(proto):
            if set(quantize_options) - {"progress", "num_threads"}:
                raise InvalidArgumentError("the model is already quantized (it has Q/DQ nodes): calibration "
                                           f"options {sorted(quantize_options)} do not apply")
            out = _ensure_opset(_copy(proto))
        else:
            from .quantize import quantize

            out = quantize(proto, keep_fp32=keep_fp32, optimize=optimize, **quantize_options)
        if check:
            require_tensorrt_rules(out)
        _tag(out, "int8", io_dtype)
        return out

    out = _float_model(proto, optimize)
    if precision == "fp16":
        out = to_fp16(out, io_dtype=io_dtype, keep_fp32=keep_fp32)
    elif keep_fp32:
        raise InvalidArgumentError("keep_fp32 applies to precision='fp16' or 'int8'")
    elif io_dtype != "fp32":
        raise InvalidArgumentError("io_dtype='fp16' needs precision='fp16'")
    if check:
        require_tensorrt_rules(out)
    _tag(out, precision, io_dtype)
    return out


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


def _tag(model: onnx.ModelProto, precision: str, io_dtype: str) -> None:
    props = {p.key: p for p in model.metadata_props}
    for key, value in (("pyengine.precision", precision), ("pyengine.io_dtype", io_dtype),
                       ("pyengine.export", "tensorrt")):
        if key in props:
            props[key].value = value
        else:
            model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))


def _ensure_opset(proto: onnx.ModelProto) -> onnx.ModelProto:
    if onnx_io.default_opset(proto) >= MIN_OPSET:
        return proto
    try:
        from onnx import version_converter

        return version_converter.convert_version(proto, MIN_OPSET)
    except Exception as exc:
        raise InvalidModelError(f"the model's opset {onnx_io.default_opset(proto)} is below {MIN_OPSET}, which "
                                f"TensorRT's Q/DQ rules need, and the upgrade failed: {exc}") from None


def _float_model(proto: onnx.ModelProto, optimize: bool) -> onnx.ModelProto:
    if is_quantized(proto):
        raise InvalidArgumentError("the model is quantized (it has Q/DQ nodes): export it with precision='int8'")
    proto = _ensure_opset(proto)
    if optimize:
        from .optimizer import optimize as optimize_model

        return optimize_model(proto)
    from .optimizer import expand_custom_ops

    return expand_custom_ops(_copy(proto))


# --------------------------------------------------------------------------
# FP16: float16 initializers and Casts
# --------------------------------------------------------------------------

def _fresh(taken: set, base: str) -> str:
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


def to_fp16(model: onnx.ModelProto, io_dtype: str = "fp32", keep_fp32=()) -> onnx.ModelProto:
    """Rewrites a float32 model as a strongly typed FP16 model.

    Every float32 initializer becomes float16 (except those ONNX fixes to
    float32, such as Resize scales), Cast-to-float nodes cast to float16, and
    Casts are inserted at the float inputs and outputs (unless
    ``io_dtype="fp16"``, which retypes them) and around ``keep_fp32`` nodes,
    whose float initializers stay float32.

    Raises:
        InvalidArgumentError: ``keep_fp32`` names a node the model lacks.
    """
    model = _copy(model)
    g = model.graph
    keep = set(keep_fp32 or ())
    node_names = {n.name for n in g.node}
    missing = sorted(keep - node_names)
    if missing:
        raise InvalidArgumentError(f"keep_fp32 names unknown nodes {missing}; node names of the exported model "
                                   f"are e.g. {sorted(n for n in node_names if n)[:5]}")
    F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16
    taken = {i.name for i in g.initializer} | {v.name for v in g.input} | {v.name for v in g.output}
    for n in g.node:
        taken.update(n.input)
        taken.update(n.output)
    taken_nodes = set(node_names)

    # Initializers: which are read by fp32 consumers (kept nodes, fixed-type inputs)?
    fp32_reads, fp16_reads = set(), set()
    for n in g.node:
        for k, name in enumerate(n.input):
            if n.name in keep or (n.op_type, k) in _FLOAT32_INPUTS:
                fp32_reads.add(name)
            else:
                fp16_reads.add(name)
    inits = []
    converted = {}
    for t in g.initializer:
        if t.data_type != F32:
            inits.append(t)
            continue
        arr = numpy_helper.to_array(t)
        if t.name in fp16_reads or t.name not in fp32_reads:
            half = numpy_helper.from_array(_to_half(arr, t.name), t.name)
            inits.append(half)
            converted[t.name] = t.name
        if t.name in fp32_reads:
            if t.name in fp16_reads:  # read in both precisions: keep a float32 copy
                copy_name = _fresh(taken, f"{t.name}_fp32")
                inits.append(numpy_helper.from_array(arr, copy_name))
                converted[t.name] = None
                for n in g.node:
                    for k, name in enumerate(n.input):
                        if name == t.name and (n.name in keep or (n.op_type, k) in _FLOAT32_INPUTS):
                            n.input[k] = copy_name
            else:
                inits.append(t)

    float_in = [v for v in g.input if v.type.tensor_type.elem_type == F32 and v.name not in converted]
    float_out = [v for v in g.output if v.type.tensor_type.elem_type == F32]
    nodes = []
    # Inputs: Cast to float16 at the top (or retype them with io_dtype="fp16").
    rename = {}
    for v in float_in:
        if io_dtype == "fp16":
            v.type.tensor_type.elem_type = F16
        else:
            half = _fresh(taken, f"{v.name}_fp16")
            nodes.append(helper.make_node("Cast", [v.name], [half], to=F16,
                                          name=_fresh(taken_nodes, f"{v.name}_cast_fp16")))
            rename[v.name] = half
    out_names = {v.name for v in float_out}
    out_rename = {}
    if io_dtype != "fp16":
        for v in float_out:
            out_rename[v.name] = _fresh(taken, f"{v.name}_fp16")
    else:
        for v in float_out:
            v.type.tensor_type.elem_type = F16

    fp32_inits = {t.name for t in inits if t.data_type == F32}
    for n in g.node:
        for k, name in enumerate(n.input):
            if name in rename:
                n.input[k] = rename[name]
        if n.op_type in _TYPED_BY_ATTRIBUTE:
            for a in n.attribute:
                if a.name == _TYPED_BY_ATTRIBUTE[n.op_type] and a.i == F32 and n.name not in keep:
                    a.i = F16
        if n.op_type in ("Constant", "ConstantOfShape") and n.name not in keep:
            for a in list(n.attribute):
                if a.name == "value" and a.t.data_type == F32:
                    a.t.CopyFrom(numpy_helper.from_array(_to_half(numpy_helper.to_array(a.t), n.name), a.t.name))
                elif a.name in ("value_float", "value_floats"):  # float32 by definition: as a float16 tensor
                    vals = np.asarray(a.f if a.name == "value_float" else list(a.floats), np.float32)
                    n.attribute.remove(a)
                    n.attribute.append(helper.make_attribute("value", numpy_helper.from_array(_to_half(vals, n.name))))
        if n.name in keep:
            nodes.extend(_wrap_fp32(n, taken, taken_nodes, fp32_inits))
        else:
            nodes.append(n)
    # Float outputs are computed in float16 under a new name, then Cast back
    # (nodes that read a graph output read the float16 value).
    for n in nodes:
        for k, name in enumerate(n.input):
            if name in out_rename:
                n.input[k] = out_rename[name]
        for k, name in enumerate(n.output):
            if name in out_rename:
                n.output[k] = out_rename[name]
    for name in out_names:
        if name in out_rename:
            nodes.append(helper.make_node("Cast", [out_rename[name]], [name], to=F32,
                                          name=_fresh(taken_nodes, f"{name}_cast_fp32")))

    # Old-style models also list initializers as inputs: they are weights, not inputs.
    init_names = {t.name for t in inits}
    graph_inputs = [v for v in g.input if v.name not in init_names]
    new_graph = helper.make_graph(nodes, g.name, graph_inputs, list(g.output), initializer=inits)
    out = helper.make_model(new_graph, opset_imports=list(model.opset_import), producer_name=model.producer_name)
    out.ir_version = model.ir_version
    out.metadata_props.extend(model.metadata_props)
    try:
        out = onnx.shape_inference.infer_shapes(out, strict_mode=True)
    except Exception as exc:
        raise InvalidModelError(f"the FP16 model does not type-check ({exc}); keep the node it names in FP32 "
                                "with keep_fp32=[...]") from None
    return out


def _to_half(arr: np.ndarray, where: str) -> np.ndarray:
    finite = arr[np.isfinite(arr)]
    if finite.size and float(np.max(np.abs(finite))) > 65504.0:
        raise InvalidModelError(f"'{where}' holds values beyond the float16 range (max |x| "
                                f"{float(np.max(np.abs(finite))):.3g} > 65504): keep its node in FP32 with keep_fp32")
    return arr.astype(np.float16)


def _wrap_fp32(n, taken, taken_nodes, fp32_inits):
    """Casts a kept node's float16 activation inputs to float32 and its outputs back."""
    pre, post = [], []
    for k, name in enumerate(n.input):
        if not name or name in fp32_inits:
            continue
        if _is_float_activation(name, n, k):
            f32 = _fresh(taken, f"{name}_fp32")
            pre.append(helper.make_node("Cast", [name], [f32], to=TensorProto.FLOAT,
                                        name=_fresh(taken_nodes, f"{n.name}_in{k}_cast_fp32")))
            n.input[k] = f32
    for k, name in enumerate(n.output):
        if not name:
            continue
        f32 = _fresh(taken, f"{name}_fp32")
        post.append(helper.make_node("Cast", [f32], [name], to=TensorProto.FLOAT16,
                                     name=_fresh(taken_nodes, f"{n.name}_out{k}_cast_fp16")))
        n.output[k] = f32
    return pre + [n] + post


# Inputs that are integer (shapes, axes, indices) for the ops pyengine models use.
_INTEGER_INPUTS = {("Reshape", 1), ("Slice", 1), ("Slice", 2), ("Slice", 3), ("Slice", 4), ("Unsqueeze", 1),
                   ("Squeeze", 1), ("Split", 1), ("ReduceSum", 1), ("ReduceMean", 1), ("ReduceMax", 1),
                   ("Expand", 1), ("Tile", 1), ("Gather", 1), ("Pad", 1), ("Pad", 3), ("Resize", 3),
                   ("TopK", 1), ("ConstantOfShape", 0), ("Range", 0), ("OneHot", 1)}


def _is_float_activation(name, node, k) -> bool:
    return (node.op_type, k) not in _INTEGER_INPUTS and (node.op_type, k) not in _FLOAT32_INPUTS


# --------------------------------------------------------------------------
# check_tensorrt: TensorRT's documented rules, as a lint
# --------------------------------------------------------------------------

# Operators the TensorRT 10/11 ONNX parser imports (onnx-tensorrt's
# operators.md), for the default domain.
TENSORRT_ONNX_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool BatchNormalization
BlackmanWindow Cast CastLike Ceil Celu Clip Compress Concat Constant ConstantOfShape Conv ConvTranspose
Cos Cosh CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand
EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool
GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow HannWindow
HardSigmoid HardSwish Hardmax Identity If InstanceNormalization IsInf IsNaN LayerNormalization
LeakyRelu Less LessOrEqual Log LogSoftmax Loop LpNormalization LpPool LRN LSTM MatMul Max MaxPool
MaxRoiPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or
Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean
ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RMSNormalization RNN
RoiAlign RotaryEmbedding Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink
Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan
Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

# Ops TensorRT fuses with a preceding Conv (with BN folded in): a Q/DQ pair
# between them and the Conv/BN stops the fusion.
_FUSED_AFTER_CONV = {"BatchNormalization", "Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "Elu", "Selu",
                     "HardSigmoid", "Softplus"}
_CONV_LIKE = {"Conv", "ConvTranspose", "BatchNormalization"}


class Violation(dict):
    """One broken rule: ``rule``, ``node`` (the ONNX node name) and ``message``."""

    def __str__(self) -> str:
        return f"[{self['rule']}] node '{self['node']}': {self['message']}"


RULES = ("opset", "unsupported_op", "qdq_dtype", "zero_point", "scale", "weight_axis", "activation_per_tensor",
         "fusion")


def check_tensorrt(model) -> list:
    """Checks a model against TensorRT's documented ONNX and Q/DQ rules.

    Rules (each violation names its node):
        opset: the default opset is >= 13.
        unsupported_op: every node is an op the TensorRT ONNX parser imports
            (standard domain; no custom domains such as pyengine's).
        qdq_dtype: Q/DQ are int8 (a zero point of type int8, or output_dtype INT8).
        zero_point: zero points are 0 (symmetric quantization).
        scale: scales are constant, positive and finite.
        weight_axis: weights are quantized per output channel (axis 0 for
            Conv and Gemm with transB=1) or per tensor.
        activation_per_tensor: activations are quantized per tensor.
        fusion: no Q/DQ pair between Conv, BatchNormalization and the
            activation after them (TensorRT fuses those itself).

    Args:
        model: path to an .onnx file or an ``onnx.ModelProto``.

    Returns:
        A list of :class:`Violation` dicts (empty when the model follows every rule).
    """
    proto = onnx_io.load_model(model)
    g = proto.graph
    out = []

    def bad(rule, node, message):
        out.append(Violation(rule=rule, node=node.name if hasattr(node, "name") else str(node), message=message))

    opset = None
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            opset = imp.version
    if opset is None or opset < MIN_OPSET:
        bad("opset", "<model>", f"default-domain opset is {opset}; TensorRT's Q/DQ import needs opset >= "
                                f"{MIN_OPSET} (upgrade with onnx.version_converter)")
    for n in g.node:
        if n.domain not in ("", "ai.onnx"):
            bad("unsupported_op", n, f"op '{n.domain}::{n.op_type}' is not a standard ONNX op; TensorRT's ONNX "
                                     "parser only imports it through a plugin")
        elif n.op_type not in TENSORRT_ONNX_OPS:
            bad("unsupported_op", n, f"op '{n.op_type}' is not imported by TensorRT's ONNX parser")

    inits = {t.name: t for t in g.initializer}
    constants = {}
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    constants[n.output[0]] = a.t

    def const(name):
        t = inits.get(name) if name in inits else constants.get(name)
        return None if t is None else numpy_helper.to_array(t)

    def const_type(name):
        t = inits.get(name) if name in inits else constants.get(name)
        return None if t is None else t.data_type

    producer = {o: n for n in g.node for o in n.output if o}
    consumers = {}
    for n in g.node:
        for k, i in enumerate(n.input):
            if i:
                consumers.setdefault(i, []).append((n, k))

    for n in g.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear") or n.domain not in ("", "ai.onnx"):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        axis = int(attrs.get("axis", 1))
        scale = const(n.input[1]) if len(n.input) > 1 else None
        if scale is None:
            bad("scale", n, f"scale '{n.input[1] if len(n.input) > 1 else ''}' is not a constant; TensorRT needs "
                            "constant scales")
        else:
            s = scale.astype(np.float64)
            if not np.all(np.isfinite(s)) or np.any(s <= 0):
                bad("scale", n, f"scale '{n.input[1]}' must be positive and finite (min {float(np.min(s)):.3g}, "
                                f"{int(np.sum(~np.isfinite(s)))} non-finite)")
        zp_name = n.input[2] if len(n.input) > 2 else ""
        if zp_name:
            zp = const(zp_name)
            ztype = const_type(zp_name)
            if ztype is not None and ztype != TensorProto.INT8:
                bad("qdq_dtype", n, f"zero point '{zp_name}' is {TensorProto.DataType.Name(ztype).lower()}; "
                                    "TensorRT's INT8 Q/DQ need int8")
            if zp is None:
                bad("zero_point", n, f"zero point '{zp_name}' is not a constant")
            elif np.any(zp != 0):
                bad("zero_point", n, f"zero point '{zp_name}' is not 0 (max |zp| {int(np.max(np.abs(zp)))}); "
                                     "TensorRT takes symmetric quantization only")
        elif n.op_type == "QuantizeLinear" and int(attrs.get("output_dtype", 0)) != TensorProto.INT8:
            bad("qdq_dtype", n, "no zero point, so the output type defaults to uint8; TensorRT needs int8 "
                                "(add an int8 zero point of 0)")
        # Per-channel or per-tensor, by what is quantized.
        if scale is None:
            continue
        x = n.input[0]
        per_channel = scale.ndim > 0 and scale.size > 1
        weight = n.op_type == "DequantizeLinear" and x in inits or (
            n.op_type == "QuantizeLinear" and x in inits)
        if n.op_type == "DequantizeLinear" and x in producer and producer[x].op_type == "QuantizeLinear":
            qin = producer[x].input[0]
            weight = weight or qin in inits
        if weight:
            if per_channel:
                data = const(x) if x in inits else None
                rank = data.ndim if data is not None else None
                want = _weight_axis(n, consumers)
                ax = axis + rank if (rank is not None and axis < 0) else axis
                if want is not None and ax != want:
                    bad("weight_axis", n, f"weights are quantized per channel on axis {axis}; TensorRT wants the "
                                          f"output-channel axis ({want})")
        elif per_channel:
            bad("activation_per_tensor", n, f"activation '{x}' has {scale.size} scales; TensorRT quantizes "
                                            "activations per tensor (one scale)")
        # Q/DQ between Conv/BN and the BN/activation TensorRT fuses into it.
        if n.op_type == "QuantizeLinear" and x in producer and producer[x].op_type in _CONV_LIKE:
            for dq, _ in consumers.get(n.output[0], []):
                if dq.op_type != "DequantizeLinear":
                    continue
                for user, _ in consumers.get(dq.output[0], []):
                    if user.op_type in _FUSED_AFTER_CONV:
                        bad("fusion", n, f"a Q/DQ pair between '{producer[x].name}' ({producer[x].op_type}) and "
                                         f"'{user.name}' ({user.op_type}) stops TensorRT fusing them; quantize "
                                         f"after the activation instead")
    return out


def _weight_axis(dq, consumers):
    """The output-channel axis of the weight a DequantizeLinear feeds (None: unknown consumer)."""
    for user, k in consumers.get(dq.output[0], []):
        if user.op_type == "Conv" and k == 1:
            return 0
        if user.op_type == "ConvTranspose" and k == 1:
            return 1
        if user.op_type == "Gemm" and k == 1:
            trans_b = next((a.i for a in user.attribute if a.name == "transB"), 0)
            return 0 if trans_b else 1
        if user.op_type == "MatMul" and k == 1:
            return 1
    return None


def require_tensorrt_rules(model) -> None:
    """Raises InvalidModelError listing every :func:`check_tensorrt` violation."""
    problems = check_tensorrt(model)
    if problems:
        raise InvalidModelError(
            f"the model breaks {len(problems)} TensorRT rule(s):\n" + "\n".join(f"  {p}" for p in problems[:50])
            + ("" if len(problems) <= 50 else f"\n  ... and {len(problems) - 50} more"))


__all__ = ["export", "to_fp16", "check_tensorrt", "require_tensorrt_rules", "Violation", "TENSORRT_ONNX_OPS",
           "is_quantized", "RULES"]
