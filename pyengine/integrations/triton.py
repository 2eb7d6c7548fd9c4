"""Triton Inference Server model repositories from pyengine plans and ONNX models.

``export_repository(model, repo)`` writes ``repo/NAME/config.pbtxt`` and
``repo/NAME/1/...`` in the layout Triton reads:

* a TensorRT plan (pyengine container, backend "tensorrt"): ``platform:
  "tensorrt_plan"`` with the bare TensorRT engine (the container's engine
  section) as ``1/model.plan``; dynamic batching with the preferred batch
  sizes of the plan's optimization profile; ``KIND_GPU`` instances;
* a CPU plan, or an ONNX model (built into a CPU plan here; a Q/DQ model
  into an INT8 plan): Triton's Python backend, ``1/model.py`` loading
  ``1/pyengine.plan`` with pyengine, ``KIND_CPU`` instances;
* an ONNX model with ``onnxruntime=True``: Triton's onnxruntime backend on
  ``1/model.onnx``, the ONNX from :func:`pyengine.optimize` (standard ops
  only), or for a Q/DQ (INT8) model the Q/DQ ONNX itself.

The config is written as protobuf text (Triton's ``ModelConfig`` schema,
model_config.proto); nothing here imports Triton or tritonclient. Serving
itself is Triton's job: ``tritonserver --model-repository REPO``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil

import numpy as np

from ..errors import InvalidArgumentError, InvalidModelError, PlanFormatError

# numpy dtype name -> Triton DataType (model_config.proto).
TRITON_DTYPES = {
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
    "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64",
}

PLAN_FILE = "pyengine.plan"  # the Python backend's plan, next to model.py
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def triton_dtype(dtype) -> str:
    """The Triton ``TYPE_*`` name of a numpy dtype (or dtype name)."""
    name = np.dtype(dtype).name
    if name not in TRITON_DTYPES:
        raise InvalidArgumentError(f"dtype {name} has no Triton equivalent (Triton takes {sorted(TRITON_DTYPES)})")
    return TRITON_DTYPES[name]


# --------------------------------------------------------------------------
# What the model is: specs of its inputs and outputs
# --------------------------------------------------------------------------

def _is_plan(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"PYENGPLN"


def _spec_list(entries, where: str) -> list:
    """[(name, numpy dtype name, [dims with -1 dynamic])] from plan metadata / engine specs."""
    out = []
    for e in entries:
        if isinstance(e, dict):
            name, dtype, shape = e.get("name"), e.get("dtype"), e.get("shape")
        else:  # a TensorSpec
            name, dtype, shape = e.name, e.dtype, None if e.shape is None else [-1 if d is None else d for d in e.shape]
        if not name or dtype is None:
            raise PlanFormatError(f"{where}: an input/output without a name or dtype: {e!r}")
        if shape is None:
            raise InvalidModelError(f"{where}: tensor '{name}' has an unknown rank; Triton needs its dims")
        out.append((str(name), np.dtype(dtype).name, [int(-1 if d is None else d) for d in shape]))
    return out


def _onnx_specs(proto, where: str) -> tuple[list, list]:
    import onnx
    from onnx import helper

    inits = {t.name for t in proto.graph.initializer}
    if any(not vi.type.tensor_type.HasField("shape") for vi in proto.graph.output):
        try:
            proto = onnx.shape_inference.infer_shapes(proto)
        except Exception as exc:  # noqa: BLE001  (reported as the missing rank below)
            raise InvalidModelError(f"{where}: output ranks unknown and shape inference failed: {exc}") from None

    def spec(vi):
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            raise InvalidModelError(f"{where}: tensor '{vi.name}' has an unknown rank; Triton needs its dims")
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tt.shape.dim]
        return vi.name, np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).name, dims

    return ([spec(vi) for vi in proto.graph.input if vi.name not in inits], [spec(vi) for vi in proto.graph.output])


# --------------------------------------------------------------------------
# config.pbtxt
# --------------------------------------------------------------------------

def _quote(s: str) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _batching(inputs, outputs, max_batch: int) -> bool:
    """Triton batching (max_batch_size > 0) needs a dynamic first axis on every input and output."""
    return max_batch > 0 and all(len(d) >= 1 and d[0] == -1 for _, _, d in inputs + outputs)


def _tensor_block(kind: str, specs, batching: bool) -> str:
    lines = []
    for name, dtype, dims in specs:
        d = dims[1:] if batching else dims
        if not d:  # Triton wants at least one dim; a per-sample scalar is [1] with reshape to []
            lines.append(f"  {{\n    name: {_quote(name)}\n    data_type: {triton_dtype(dtype)}\n    dims: [ 1 ]\n"
                         "    reshape: { shape: [ ] }\n  }")
        else:
            lines.append(f"  {{\n    name: {_quote(name)}\n    data_type: {triton_dtype(dtype)}\n"
                         f"    dims: [ {', '.join(str(x) for x in d)} ]\n  }}")
    return f"{kind} [\n" + ",\n".join(lines) + "\n]\n"


def config_text(name: str, inputs, outputs, *, platform: str | None = None, backend: str | None = None,
                max_batch_size: int = 0, preferred: list | None = None, instance_kind: str = "KIND_CPU",
                instances: int = 1, parameters: dict | None = None) -> str:
    """A Triton ``config.pbtxt`` (protobuf text of ``inference.ModelConfig``)."""
    batching = max_batch_size > 0
    parts = [f"name: {_quote(name)}\n"]
    if platform:
        parts.append(f"platform: {_quote(platform)}\n")
    if backend:
        parts.append(f"backend: {_quote(backend)}\n")
    parts.append(f"max_batch_size: {int(max_batch_size)}\n")
    parts.append(_tensor_block("input", inputs, batching))
    parts.append(_tensor_block("output", outputs, batching))
    parts.append(f"instance_group [\n  {{\n    kind: {instance_kind}\n    count: {int(instances)}\n  }}\n]\n")
    if batching:
        if preferred:
            parts.append(f"dynamic_batching {{\n  preferred_batch_size: [ {', '.join(str(p) for p in preferred)} ]\n}}\n")
        else:
            parts.append("dynamic_batching { }\n")
    for key, value in (parameters or {}).items():
        parts.append(f"parameters {{\n  key: {_quote(key)}\n  value: {{ string_value: {_quote(value)} }}\n}}\n")
    return "".join(parts)


# --------------------------------------------------------------------------
# The Python backend's model.py
# --------------------------------------------------------------------------

MODEL_PY = '''"""Triton Python-backend model: runs a pyengine plan (generated by
`pyengine export-triton`). Needs pyengine installed in the Python that Triton's
Python backend uses. Requests in one execute() call are concatenated along the
batch axis, run once, and split back."""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

PLAN_FILE = "pyengine.plan"


class TritonPythonModel:
    def initialize(self, args):
        import pyengine

        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
        threads = int(params.get("num_threads", "0") or 0)
        if threads <= 0:  # share the cores among this model's CPU instances
            count = sum(int(g.get("count", 1)) for g in (config.get("instance_group") or [{"count": 1}]))
            threads = max(1, pyengine.default_threads() // max(1, count))
        path = os.path.join(args.get("model_repository", ""), str(args.get("model_version", "")), PLAN_FILE)
        if not os.path.isfile(path):  # model.py sits next to the plan
            path = os.path.join(os.path.dirname(os.path.abspath(__file__)), PLAN_FILE)
        self.engine = pyengine.load(path, num_threads=threads)
        self.batching = int(config.get("max_batch_size", 0)) > 0
        self.inputs = [s.name for s in self.engine.inputs]
        self.dtypes = {s.name: np.dtype(s.dtype) for s in self.engine.inputs}
        self.outputs = [s.name for s in self.engine.outputs]

    def _run(self, feeds):
        outs = self.engine.run(feeds)
        return [outs[n] for n in self.outputs]

    def execute(self, requests):
        try:
            per_request = [{n: np.ascontiguousarray(pb_utils.get_input_tensor_by_name(r, n).as_numpy(),
                                                    dtype=self.dtypes[n]) for n in self.inputs}
                           for r in requests]
        except Exception as exc:  # a missing input: every request gets the error
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(f"pyengine: bad request: {exc}"))
                    for _ in requests]
        if self.batching and len(requests) > 1:
            sizes = [f[self.inputs[0]].shape[0] for f in per_request]
            try:
                feeds = {n: np.concatenate([f[n] for f in per_request]) for n in self.inputs}
                outs = self._run(feeds)
                bounds = np.cumsum(sizes)[:-1]
                results = list(zip(*[np.split(o, bounds) for o in outs]))
            except Exception:  # requests that do not stack (or one bad one): run them one by one
                results = None
            if results is not None:
                return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(n, np.ascontiguousarray(a))
                                                                   for n, a in zip(self.outputs, res)])
                        for res in results]
        responses = []
        for feeds in per_request:
            try:
                outs = self._run(feeds)
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(n, np.ascontiguousarray(a)) for n, a in zip(self.outputs, outs)]))
            except Exception as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"pyengine: {exc}")))
        return responses

    def finalize(self):
        self.engine = None
'''


# --------------------------------------------------------------------------
# The repository
# --------------------------------------------------------------------------

def _model_dir(repo, name: str, overwrite: bool) -> str:
    if not _NAME_RE.match(name):
        raise InvalidArgumentError(f"Triton model name {name!r}: use letters, digits, '_', '.', '-' "
                                   "(it is the folder name)")
    path = os.path.join(os.fspath(repo), name)
    if os.path.exists(path) and os.listdir(path):
        if not overwrite:
            raise InvalidArgumentError(f"'{path}' already exists and is not empty (overwrite=True / --force "
                                       "replaces it)")
        shutil.rmtree(path)
    os.makedirs(os.path.join(path, "1"), exist_ok=True)
    return path


def _tensorrt_batching(meta: dict, inputs, max_batch: int, path: str) -> tuple[int, list, list]:
    """(max_batch_size, preferred sizes, notes) from the plan's optimization profile."""
    notes = []
    profiles = (meta.get("tensorrt") or {}).get("profiles") or []
    if not profiles:
        if any(d and d[0] == -1 for _, _, d in inputs):
            raise PlanFormatError(f"'{path}': a dynamic batch axis but no optimization profile in the metadata")
        return 0, [], ["the plan has fixed input shapes: max_batch_size 0 (no Triton batching)"]
    prof = profiles[0]
    if len(profiles) > 1:
        notes.append(f"the plan has {len(profiles)} optimization profiles; batch sizes come from the first")
    lo = opt = 1
    hi = None
    for name, _, dims in inputs:
        if name not in prof:
            raise PlanFormatError(f"'{path}': input '{name}' has no shapes in the optimization profile")
        mn, op, mx = (int(s[0]) for s in prof[name])
        lo, opt = max(lo, mn), max(opt, op)
        hi = mx if hi is None else min(hi, mx)
    if hi is None or hi < 1:
        return 0, [], ["the plan has no inputs with a batch axis: max_batch_size 0"]
    mbs = min(max_batch, hi)
    if max_batch > hi:
        notes.append(f"max_batch_size {mbs}: the plan's profile allows batches up to {hi} (asked for {max_batch})")
    if lo > 1:
        notes.append(f"the plan's profile needs batches of at least {lo}: Triton may send smaller ones; "
                     "rebuild with --batch-range 1:OPT:MAX")
    preferred = sorted({b for b in (opt, mbs) if lo <= b <= mbs})
    return mbs, preferred, notes


def export_repository(model, repo, name: str | None = None, max_batch: int = 32, instances: int = 1,
                      onnxruntime: bool = False, num_threads: int = 0, overwrite: bool = False) -> dict:
    """Writes a Triton model repository entry ``repo/name`` for a model.

    Args:
        model: a pyengine plan file (CPU or TensorRT) or an ONNX file.
        repo: the model repository folder (created if missing).
        name: the Triton model name (default: the file name without extension).
        max_batch: Triton's ``max_batch_size`` (0: no batching); a TensorRT
            plan caps it at its optimization profile's largest batch.
        instances: ``instance_group`` count (CPU processes for the Python
            backend, per-GPU instances for TensorRT).
        onnxruntime: ONNX models only: Triton's onnxruntime backend on the
            optimized ONNX (a Q/DQ model: the Q/DQ ONNX itself) instead of the
            Python backend running pyengine.
        num_threads: Python backend: threads per instance (0: cores / instances).
        overwrite: replace an existing ``repo/name``.

    Returns:
        {"name", "path", "config", "kind" ("tensorrt_plan", "python" or
        "onnxruntime"), "files", "max_batch_size", "preferred_batch_size", "notes"}.

    Raises:
        InvalidArgumentError: bad options, an existing folder, --onnxruntime on a plan.
        PlanFormatError: a corrupt plan, or a TensorRT plan whose metadata
            lacks what the config needs.
        InvalidModelError: an unreadable ONNX model.
    """
    if int(max_batch) < 0:
        raise InvalidArgumentError(f"max_batch must be >= 0, got {max_batch}")
    if int(instances) < 1:
        raise InvalidArgumentError(f"instances must be >= 1, got {instances}")
    if int(num_threads) < 0:
        raise InvalidArgumentError(f"num_threads must be >= 0, got {num_threads}")
    try:
        path = os.fspath(model)
    except TypeError:
        raise InvalidArgumentError(f"export_repository takes a plan or ONNX file path, got {type(model).__name__}") \
            from None
    if not os.path.isfile(path):
        raise InvalidArgumentError(f"file '{path}' does not exist")
    name = name or os.path.splitext(os.path.basename(path))[0]
    if _is_plan(path):
        from ..backends.tensorrt import read_plan

        meta, blob = read_plan(path)
        if onnxruntime:
            raise InvalidArgumentError(f"--onnxruntime needs the ONNX model; '{path}' is a pyengine plan")
        if meta.get("backend") == "tensorrt":
            return _export_tensorrt(path, meta, blob, repo, name, int(max_batch), int(instances), overwrite)
        import pyengine

        engine = pyengine.load(path, num_threads=1)  # validates the plan fully before it is copied
        return _export_python(engine, path, repo, name, int(max_batch), int(instances), int(num_threads), overwrite)
    from .. import onnx_io

    proto = onnx_io.load_model(path)
    if onnxruntime:
        return _export_onnxruntime(proto, path, repo, name, int(max_batch), int(instances), overwrite)
    import pyengine

    engine = pyengine.build(proto, backend="cpu", num_threads=1)  # a Q/DQ model builds as INT8
    return _export_python(engine, None, repo, name, int(max_batch), int(instances), int(num_threads), overwrite)


def _result(name, mdir, kind, config, mbs, preferred, notes) -> dict:
    files = sorted(os.path.relpath(os.path.join(d, f), mdir) for d, _, fs in os.walk(mdir) for f in fs)
    return {"name": name, "path": mdir, "config": config, "kind": kind, "files": files, "max_batch_size": mbs,
            "preferred_batch_size": preferred, "notes": notes}


def _write_config(mdir: str, text: str) -> None:
    with open(os.path.join(mdir, "config.pbtxt"), "w", encoding="utf-8") as f:
        f.write(text)


def _export_tensorrt(path, meta, blob, repo, name, max_batch, instances, overwrite) -> dict:
    if not blob:
        raise PlanFormatError(f"'{path}' is marked as a TensorRT plan but has no engine section")
    t = meta.get("tensorrt") or {}
    if t.get("engine_sha256") and hashlib.sha256(blob).hexdigest() != t["engine_sha256"]:
        raise PlanFormatError(f"'{path}': the engine section does not match the hash in the metadata")
    inputs = _spec_list(meta.get("inputs") or [], path)
    outputs = _spec_list(meta.get("outputs") or [], path)
    if not inputs or not outputs:
        raise PlanFormatError(f"'{path}': the metadata lists no {'inputs' if not inputs else 'outputs'}; "
                              "rebuild the plan with this pyengine (pyengine build --backend tensorrt)")
    mbs, preferred, notes = (_tensorrt_batching(meta, inputs, max_batch, path)
                             if _batching(inputs, outputs, max_batch) else (0, [], []))
    text = config_text(name, inputs, outputs, platform="tensorrt_plan", max_batch_size=mbs, preferred=preferred,
                       instance_kind="KIND_GPU", instances=instances)
    mdir = _model_dir(repo, name, overwrite)
    with open(os.path.join(mdir, "1", "model.plan"), "wb") as f:
        f.write(blob)
    _write_config(mdir, text)
    notes.append(f"model.plan runs only on {t.get('gpu_name') or '?'}-class GPUs (compute capability "
                 f"{t.get('compute_capability') or '?'}) with TensorRT {t.get('version') or '?'}: use a Triton "
                 "release built on that TensorRT version")
    return _result(name, mdir, "tensorrt_plan", text, mbs, preferred, notes)


def _export_python(engine, plan_path, repo, name, max_batch, instances, num_threads, overwrite) -> dict:
    inputs = _spec_list(engine.inputs, name)
    outputs = _spec_list(engine.outputs, name)
    mbs = max_batch if _batching(inputs, outputs, max_batch) else 0
    notes = [] if mbs or not max_batch else ["not every input/output has a dynamic batch axis: max_batch_size 0"]
    text = config_text(name, inputs, outputs, backend="python", max_batch_size=mbs, instance_kind="KIND_CPU",
                       instances=instances, parameters={"num_threads": str(num_threads)})
    mdir = _model_dir(repo, name, overwrite)
    plan = os.path.join(mdir, "1", PLAN_FILE)
    if plan_path:
        shutil.copyfile(plan_path, plan)
    else:
        engine.save(plan)
    with open(os.path.join(mdir, "1", "model.py"), "w", encoding="utf-8") as f:
        f.write(MODEL_PY)
    _write_config(mdir, text)
    notes.append(f"{engine.backend}/{engine.precision} plan in Triton's Python backend: pyengine must be installed "
                 "in the Python that runs model.py")
    return _result(name, mdir, "python", text, mbs, [], notes)


def _export_onnxruntime(proto, path, repo, name, max_batch, instances, overwrite) -> dict:
    import onnx

    from .. import qdq
    from ..optimizer import optimize

    if qdq.has_qdq(proto):
        served, what = proto, "the Q/DQ (INT8) ONNX as given"
    else:
        served, what = optimize(proto), "the ONNX from pyengine.optimize (standard ops)"
    inputs, outputs = _onnx_specs(served, path)
    mbs = max_batch if _batching(inputs, outputs, max_batch) else 0
    notes = [f"model.onnx is {what}"]
    if max_batch and not mbs:
        notes.append("not every input/output has a dynamic batch axis: max_batch_size 0")
    text = config_text(name, inputs, outputs, backend="onnxruntime", max_batch_size=mbs, instance_kind="KIND_CPU",
                       instances=instances)
    mdir = _model_dir(repo, name, overwrite)
    onnx.save(served, os.path.join(mdir, "1", "model.onnx"))
    _write_config(mdir, text)
    return _result(name, mdir, "onnxruntime", text, mbs, [], notes)
