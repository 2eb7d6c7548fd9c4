"""ONNX <-> pyengine graph.

The ``onnx`` package reads the file (protobuf, opset versions); external data
is read here, confined to the model's folder whatever onnx version is
installed (see ``load_external_data``);
the C++ graph (``pyengine._core.Graph``) receives nodes, attributes and
initializers. Initializers are handed over as numpy arrays that C++ borrows,
so large weights are not copied again. ``graph_to_onnx`` writes a graph back
as a standard ONNX model, which makes every optimization observable in
onnxruntime or Netron.
"""

from __future__ import annotations

import hashlib
import os
from typing import Union

import numpy as np
import onnx
from onnx import helper, numpy_helper

from . import _core
from .errors import InvalidModelError

MIN_OPSET = 11
MAX_OPSET = onnx.defs.onnx_opset_version()

ModelLike = Union[str, os.PathLike, onnx.ModelProto]


def load_model(model: ModelLike) -> onnx.ModelProto:
    """Returns the ModelProto for a path or a ModelProto, with external data loaded."""
    if isinstance(model, onnx.ModelProto):
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise InvalidModelError(
            f"expected a path to an .onnx file or an onnx.ModelProto, got {type(model).__name__}")
    path = os.fspath(model)
    if not os.path.isfile(path):
        raise InvalidModelError(f"model file '{path}' does not exist")
    try:
        # External data is read below, by pyengine, not by onnx: older onnx
        # versions follow `location` anywhere (../../etc/..., symlinks).
        proto = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf raises several unrelated types
        raise InvalidModelError(f"'{path}' is not a readable ONNX model: {exc}") from None
    if not proto.graph.node and not proto.graph.output:
        raise InvalidModelError(f"'{path}' is not a readable ONNX model: it has no graph")
    load_external_data(proto, os.path.dirname(os.path.abspath(path)), path)
    return proto


def _all_tensors(proto: onnx.ModelProto):
    """Initializers and tensor attributes of every node, subgraphs included."""
    def graph_tensors(g):
        yield from g.initializer
        for node in g.node:
            for a in node.attribute:
                if a.HasField("t"):
                    yield a.t
                yield from a.tensors
                if a.HasField("g"):
                    yield from graph_tensors(a.g)
                for sub in a.graphs:
                    yield from graph_tensors(sub)
    yield from graph_tensors(proto.graph)


def resolve_external_location(location, base_dir: str, where: str) -> str:
    """The real path of an external-data ``location``, or InvalidModelError when it
    is absolute, contains ``..``, or resolves (through symlinks) outside ``base_dir``."""
    if not isinstance(location, str) or not location:
        raise InvalidModelError(f"{where}: the external data location is empty or not text")
    if "\0" in location or os.path.isabs(location) or location.startswith(("/", "\\")) or \
            (len(location) > 1 and location[1] == ":"):
        raise InvalidModelError(f"{where}: the external data location '{location}' is an absolute path; "
                                "it must be relative to the model's folder")
    parts = location.replace("\\", "/").split("/")
    if ".." in parts:
        raise InvalidModelError(f"{where}: the external data location '{location}' contains '..'; "
                                "it must stay inside the model's folder")
    base = os.path.realpath(base_dir)
    full = os.path.realpath(os.path.join(base, location))
    if os.path.commonpath([base, full]) != base:
        raise InvalidModelError(f"{where}: the external data location '{location}' resolves to '{full}', "
                                f"outside the model's folder '{base}' (a symlink?)")
    if not os.path.isfile(full):
        raise InvalidModelError(f"{where}: the external data file '{location}' does not exist in '{base}'")
    return full


def load_external_data(proto: onnx.ModelProto, base_dir: str, source: str = "the model") -> None:
    """Reads every tensor stored as external data into ``raw_data``, refusing any
    location outside ``base_dir`` (absolute paths, ``..``, symlinks leaving it)."""
    for t in _all_tensors(proto):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        where = f"model '{source}', tensor '{t.name}'"
        info = {e.key: e.value for e in t.external_data}
        full = resolve_external_location(info.get("location"), base_dir, where)
        try:
            offset = int(info.get("offset") or 0)
            length = None if info.get("length") in (None, "") else int(info["length"])
        except ValueError:
            raise InvalidModelError(f"{where}: bad external data offset/length {info}") from None
        size = os.path.getsize(full)
        if offset < 0 or offset > size or (length is not None and (length < 0 or length > size - offset)):
            raise InvalidModelError(f"{where}: external data (offset {offset}, length {length}) lies outside "
                                    f"'{info['location']}' ({size} bytes)")
        with open(full, "rb") as f:
            f.seek(offset)
            t.raw_data = f.read(size - offset if length is None else length)
        t.data_location = onnx.TensorProto.DEFAULT
        del t.external_data[:]


def _text(value, what: str) -> str:
    """A protobuf string field as str; protobuf hands invalid UTF-8 back as bytes."""
    if not isinstance(value, str):
        raise InvalidModelError(f"{what} is not valid UTF-8: {value!r}")
    return value


def _check_text_fields(proto: onnx.ModelProto, where: str) -> None:
    """Every name pyengine reads must be text: a mutated file can hold invalid
    UTF-8, which protobuf returns as bytes (and which would otherwise surface
    later as a UnicodeDecodeError)."""
    g = proto.graph
    _text(proto.producer_name, f"{where}: producer_name")
    _text(g.name, f"{where}: the graph name")
    for imp in proto.opset_import:
        _text(imp.domain, f"{where}: an opset domain")
    for t in g.initializer:
        _text(t.name, f"{where}: an initializer name")
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        _text(vi.name, f"{where}: a value name")
    for i, node in enumerate(g.node):
        what = f"{where}: node {i}"
        _text(node.name, f"{what}: the name")
        _text(node.op_type, f"{what}: the op type")
        _text(node.domain, f"{what}: the domain")
        for n in list(node.input) + list(node.output):
            _text(n, f"{what}: an input/output name")
        for a in node.attribute:
            _text(a.name, f"{what}: an attribute name")
            if a.HasField("t"):
                _text(a.t.name, f"{what}: a tensor attribute name")


def model_sha256(proto: onnx.ModelProto) -> str:
    """A content hash of the model (graph and weights), for plan metadata and caches."""
    return hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest()


def default_opset(proto: onnx.ModelProto) -> int:
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise InvalidModelError("the model does not import the default ONNX opset")


def _dims(type_proto) -> list | None:
    if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else -1 for d in type_proto.tensor_type.shape.dim]


def _attr_value(attr: onnx.AttributeProto):
    t = attr.type
    A = onnx.AttributeProto
    if t == A.FLOAT:
        return attr.f
    if t == A.INT:
        return attr.i
    if t == A.STRING:
        return attr.s.decode("utf-8", errors="replace")
    if t == A.TENSOR:
        return numpy_helper.to_array(attr.t)
    if t == A.FLOATS:
        return list(attr.floats)
    if t == A.INTS:
        return list(attr.ints)
    if t == A.STRINGS:
        return [s.decode("utf-8", errors="replace") for s in attr.strings]
    return None  # graphs, sparse tensors, type protos: the op is unsupported anyway


def _upgrade(proto: onnx.ModelProto, opset: int, where: str) -> onnx.ModelProto:
    try:
        from onnx import version_converter

        return version_converter.convert_version(proto, MIN_OPSET)
    except Exception as exc:
        raise InvalidModelError(
            f"{where} uses opset {opset}; pyengine needs opset {MIN_OPSET} to {MAX_OPSET} "
            f"and the automatic upgrade failed: {exc}") from None


def _legacy_softmax(graph_nodes, opset):
    """Rewrites Softmax/LogSoftmax of opset < 13 (which flatten the input to 2-D
    at `axis`) into Flatten -> op(axis=1) -> Reshape(Shape(x)), the modern
    equivalent, unless axis is already the last one."""
    out = []
    for i, n in enumerate(graph_nodes):
        if opset >= 13 or n.op_type not in ("Softmax", "LogSoftmax") or n.domain not in ("", "ai.onnx"):
            out.append(n)
            continue
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        if axis == -1:
            out.append(n)
            continue
        base = n.name or f"{n.op_type}_{i}"
        flat, soft, shape = f"{base}__flat", f"{base}__2d", f"{base}__shape"
        out.append(helper.make_node("Flatten", [n.input[0]], [flat], axis=axis, name=f"{base}__flatten"))
        out.append(helper.make_node(n.op_type, [flat], [soft], axis=1, name=base))
        out.append(helper.make_node("Shape", [n.input[0]], [shape], name=f"{base}__shape_of"))
        out.append(helper.make_node("Reshape", [soft, shape], [n.output[0]], name=f"{base}__reshape"))
    return out


def _castlike_to_cast(proto: onnx.ModelProto, nodes: list) -> list:
    """CastLike(x, like) -> Cast(x, to=dtype(like)): the target type is static
    in ONNX, so CastLike is a Cast whose `to` comes from type inference."""
    if not any(n.op_type == "CastLike" and n.domain in ("", "ai.onnx") for n in nodes):
        return nodes
    types = {t.name: t.data_type for t in proto.graph.initializer}
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
        infos = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    except Exception:  # inference is best effort; unknown types stay CastLike
        infos = list(proto.graph.value_info) + list(proto.graph.input)
    for vi in infos:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types.setdefault(vi.name, vi.type.tensor_type.elem_type)
    for n in nodes:  # Constant nodes feeding CastLike (the usual pattern)
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    types.setdefault(n.output[0], a.t.data_type)
    out = []
    for n in nodes:
        if n.op_type == "CastLike" and n.domain in ("", "ai.onnx") and n.input[1] in types:
            out.append(helper.make_node("Cast", [n.input[0]], [n.output[0]], name=n.name,
                                        to=types[n.input[1]]))
        else:
            out.append(n)
    return out


def graph_from_onnx(model: ModelLike) -> tuple[_core.Graph, onnx.ModelProto]:
    """Imports an ONNX model into a C++ graph (sorted, verified, shapes inferred).

    Returns the graph and the ModelProto it was read from.
    """
    proto = load_model(model)
    where = f"model '{model}'" if not isinstance(model, onnx.ModelProto) else "the model"
    _check_text_fields(proto, where)
    for t in _all_tensors(proto):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            # onnx would read it relative to the current directory: refuse.
            raise InvalidModelError(
                f"{where}: tensor '{t.name}' is stored as external data that is not loaded; pass the "
                "model's path to pyengine so the data is read from (and confined to) its folder")
    opset = default_opset(proto)
    if opset > MAX_OPSET:
        raise InvalidModelError(
            f"{where} uses opset {opset}, newer than this onnx package supports ({MAX_OPSET}); upgrade onnx")
    if opset < MIN_OPSET:
        proto = _upgrade(proto, opset, where)
        opset = default_opset(proto)
    g = proto.graph
    graph = _core.Graph()
    initializers = {t.name for t in g.initializer}
    for t in g.initializer:
        try:
            arr = numpy_helper.to_array(t)
        except Exception as exc:
            raise InvalidModelError(f"{where}: initializer '{t.name}' cannot be read: {exc}") from None
        graph.add_initializer(t.name, arr)
    for vi in g.input:
        if vi.name in initializers:  # old-style models list weights as inputs too
            continue
        elem = vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else 0
        graph.add_input(vi.name, elem, _dims(vi.type))
    for vi in list(g.value_info) + list(g.output):
        if vi.type.HasField("tensor_type"):
            graph.set_value_info(vi.name, vi.type.tensor_type.elem_type, _dims(vi.type))
    seen = set()
    for i, node in enumerate(_castlike_to_cast(proto, _legacy_softmax(g.node, opset))):
        name = node.name or f"{node.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        seen.add(name)
        attrs = {}
        for a in node.attribute:
            value = _attr_value(a)
            if value is not None:
                attrs[a.name] = (int(a.type), value)
        graph.add_node(node.op_type, node.domain, name, list(node.input), list(node.output), attrs)
    for vi in g.output:
        graph.add_output(vi.name)
    graph.set_metadata("opset", str(opset))
    graph.set_metadata("producer_name", proto.producer_name)
    graph.finalize()
    return graph, proto


def graph_to_onnx(graph: _core.Graph, opset: int | None = None, name: str = "pyengine") -> onnx.ModelProto:
    """Writes a C++ graph back as an ONNX model (nodes of domain "pyengine"
    stay custom-domain nodes; callers expand them first where needed)."""
    opset = opset or int(graph.metadata().get("opset", "17"))
    nodes, domains = [], {"": opset}
    used = set()
    for n in graph.nodes():
        attrs = []
        for an, (atype, value) in n["attrs"].items():
            if atype == onnx.AttributeProto.TENSOR:
                attrs.append(helper.make_attribute(an, numpy_helper.from_array(np.asarray(value))))
            elif atype == onnx.AttributeProto.STRING:
                attrs.append(helper.make_attribute(an, value))
            elif atype == onnx.AttributeProto.STRINGS:
                attrs.append(helper.make_attribute(an, list(value), attr_type=onnx.AttributeProto.STRINGS))
            elif atype == onnx.AttributeProto.FLOATS:
                attrs.append(helper.make_attribute(an, list(value), attr_type=onnx.AttributeProto.FLOATS))
            elif atype == onnx.AttributeProto.INTS:
                attrs.append(helper.make_attribute(an, list(value), attr_type=onnx.AttributeProto.INTS))
            else:
                attrs.append(helper.make_attribute(an, value))
        node = helper.make_node(n["op_type"], n["inputs"], n["outputs"], name=n["name"], domain=n["domain"])
        node.attribute.extend(attrs)
        nodes.append(node)
        used.update(i for i in n["inputs"] if i)
        if n["domain"] and n["domain"] not in domains:
            domains[n["domain"]] = 1
    initializers, value_info = [], []
    outputs = {o[0] for o in graph.outputs()}
    for vname, dtype, shape, is_const in graph.values():
        if is_const:
            if vname in used or vname in outputs:
                initializers.append(numpy_helper.from_array(np.asarray(graph.constant(vname)), vname))
        elif dtype and shape is not None and vname not in outputs:
            value_info.append(_value_info(vname, dtype, shape))
    inputs = [_value_info(n, d, s) for n, d, s in graph.inputs()]
    outs = [_value_info(n, d, s) for n, d, s in graph.outputs()]
    g = helper.make_graph(nodes, name, inputs, outs, initializer=initializers, value_info=value_info)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in domains.items()],
                              producer_name="pyengine")
    model.ir_version = min(model.ir_version, 9)
    return model


def _value_info(name, dtype, shape):
    dims = None if shape is None else [d if d >= 0 else None for d in shape]
    if dims is not None:
        dims = [d if d is not None else ("batch" if i == 0 else f"{name}_d{i}") for i, d in enumerate(dims)]
    return helper.make_tensor_value_info(name, dtype, dims)
