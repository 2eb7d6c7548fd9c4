"""The TensorRT backend.

The model goes out as standard ONNX (:func:`pyengine.export`: FP32, FP16 with
float16 initializers and Casts, or INT8 with explicit Q/DQ), TensorRT's
ONNX parser reads it into a strongly typed network, and the builder writes a
serialized engine, which pyengine stores as one section of its own plan
format (engine/plan/format.md) next to metadata that says what it was built
for. ``tensorrt`` and ``cuda-python`` are imported lazily, so pyengine works
without them; see ../shared/TENSORRT.md for the API facts this relies on.

Modules: trt_build.py (the builder), trt_runtime.py (running on cuda-python),
this file (availability, build entry, plan container, preflight, Engine).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import time
import warnings

import numpy as np

from .. import __version__
from ..engine import EngineBase
from ..errors import BackendUnavailableError, PlanFormatError

log = logging.getLogger("pyengine.tensorrt")

ENGINE_SECTION = 4  # plan section kind holding the serialized engine (format.md)

# Options of pyengine.build(..., backend="tensorrt") that shape the ONNX export.
EXPORT_OPTIONS = ("io_dtype", "keep_fp32")
# ...and those that go to the builder (trt_build.BuildOptions).
BUILD_OPTIONS = ("workspace", "batch_range", "input_shapes", "cache_dir", "timing_cache",
                 "builder_optimization_level", "version_compatible", "hardware_compatibility_level", "progress")
RUNTIME_OPTIONS = ("cuda_graph",)
# Options the CPU INT8 build takes too (pyengine.quantize's): not TensorRT-only.
SHARED_OPTIONS = ("keep_fp32", "progress")
TENSORRT_ONLY_OPTIONS = tuple(o for o in EXPORT_OPTIONS + BUILD_OPTIONS + RUNTIME_OPTIONS if o not in SHARED_OPTIONS)


def _import_trt():
    import tensorrt as trt

    return trt


# The reason when the tensorrt package is absent: the normal state of a CPU-only
# machine, where the CPU runtime is the documented default (no warning for it).
NOT_INSTALLED = "the 'tensorrt' Python package is not installed (pip install 'pyengine[trt]')"


def availability() -> str | None:
    """None when TensorRT and a CUDA GPU are usable, else the reason why not.

    The GPU is checked with ``cudaGetDeviceCount`` before any TensorRT object
    exists: without a GPU, ``trt.Runtime()`` logs "CUDA initialization
    failure" and the next call can crash the process.
    """
    try:
        trt = _import_trt()
    except ImportError:
        return NOT_INSTALLED
    except Exception as exc:  # a broken install (missing libnvinfer) raises OSError and friends
        return f"the 'tensorrt' package cannot be imported: {exc}"
    try:
        from . import trt_runtime

        _, reason = trt_runtime.gpu_count()
    except BackendUnavailableError as exc:
        return str(exc)
    except Exception as exc:  # the CUDA runtime library itself is missing
        return f"the CUDA runtime cannot be loaded: {exc}"
    if reason:
        return reason
    if not hasattr(trt, "Builder"):
        return "the 'tensorrt' module has no Builder (a partial install?)"
    return None


def require() -> None:
    """Raises BackendUnavailableError saying what is missing."""
    reason = availability()
    if reason:
        raise BackendUnavailableError(f"the TensorRT backend cannot run here: {reason}")


def machine() -> dict:
    """What this machine offers TensorRT plans: TensorRT version, GPU, compute
    capability, CUDA versions (None where missing) and ``reason`` when unusable."""
    here = {"tensorrt_version": None, "gpu_name": None, "compute_capability": None,
            "cuda_runtime_version": None, "cuda_driver_version": None, "reason": None}
    try:
        here["tensorrt_version"] = _import_trt().__version__
    except Exception as exc:
        here["reason"] = f"TensorRT is not installed ({exc.__class__.__name__}: {exc})"
        return here
    try:
        from . import trt_runtime

        count, reason = trt_runtime.gpu_count()
        if reason:
            here["reason"] = reason
            return here
        here.update({k: v for k, v in trt_runtime.device_info().items() if k in here})
    except Exception as exc:
        here["reason"] = str(exc)
    return here


# --------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------

def split_options(options: dict) -> tuple[dict, dict, dict]:
    """Splits pyengine.build() options into (export, builder, runtime) options."""
    export_opts = {k: v for k, v in options.items() if k not in BUILD_OPTIONS + RUNTIME_OPTIONS}
    build_opts = {k: v for k, v in options.items() if k in BUILD_OPTIONS}
    run_opts = {k: v for k, v in options.items() if k in RUNTIME_OPTIONS}
    return export_opts, build_opts, run_opts


def build(model, precision: str = "fp32", optimize: bool = True, **options) -> "TensorRTEngine":
    """Exports, parses and builds a TensorRT engine (``backend="tensorrt"``).

    Never falls back to the CPU: raises BackendUnavailableError (no TensorRT
    or GPU) or UnsupportedOperatorError (TensorRT's parser or builder
    refused the model, with its messages).
    """
    require()
    return _engine_from_export(*_export_stage(model, precision, optimize, options))


def _export_stage(model, precision, optimize, options):
    """Options checked and the model exported: everything before TensorRT."""
    from . import trt_build
    from .. import onnx_io
    from ..export import export

    export_opts, build_opts, run_opts = split_options(options)
    if precision == "int8" and "progress" in build_opts:  # one switch for calibration and build bars
        export_opts.setdefault("progress", build_opts["progress"])
    opts = trt_build.BuildOptions.from_kwargs(build_opts)
    source = onnx_io.load_model(model)
    onnx_model = export(source, precision, optimize=optimize, **export_opts)
    return model, source, onnx_model, precision, opts, export_opts.get("io_dtype", "fp32"), run_opts


def _engine_from_export(model, source, onnx_model, precision, opts, io_dtype, run_opts) -> "TensorRTEngine":
    """TensorRT's part: parse, build, deserialize."""
    from . import trt_build, trt_runtime

    trt = _import_trt()
    device = trt_runtime.device_info()
    t0 = time.perf_counter()
    plan, info = trt_build.build_plan(trt, onnx_model.SerializeToString(), opts, device)
    info["build_seconds"] = round(time.perf_counter() - t0, 3)
    metadata = plan_metadata(model, source, onnx_model, precision, trt.__version__, device, info, io_dtype)
    engine = TensorRTEngine(plan, metadata, trt=trt, cuda_graph=run_opts.get("cuda_graph", False))
    engine._metadata["inputs"] = [s.to_json() for s in engine.inputs]
    engine._metadata["outputs"] = [s.to_json() for s in engine.outputs]
    return engine


def plan_metadata(model, source, onnx_model, precision, trt_version, device, info, io_dtype="fp32") -> dict:
    from .. import onnx_io

    return {
        "pyengine_version": __version__,
        "backend": "tensorrt",
        "precision": precision,
        "source_model_sha256": onnx_io.model_sha256(source),
        "source_model_name": (os.path.basename(os.fspath(model)) if not hasattr(model, "graph")
                              else source.graph.name),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "opset": onnx_io.default_opset(onnx_model),
        "tensorrt": {
            "version": str(trt_version),
            "gpu_name": device.get("gpu_name"),
            "compute_capability": device.get("compute_capability"),
            "cuda_runtime_version": device.get("cuda_runtime_version"),
            "cuda_driver_version": device.get("cuda_driver_version"),
            "io_dtype": io_dtype,
            "exported_onnx_sha256": onnx_io.model_sha256(onnx_model),
            "onnx_nodes": [n.name for n in onnx_model.graph.node],
            **info,
        },
    }


# Reasons already warned about by backend="auto" (warn once per reason).
_warned = set()


def fallback_warning(reason: str, quiet: bool = False) -> None:
    """Warns (once per distinct reason) that backend="auto" runs on the CPU.

    ``quiet``: only log it (INFO); used where the CPU is simply the default
    (no TensorRT installed and nothing GPU-specific was asked for).
    """
    key = reason.split("\n", 1)[0]
    if quiet or key in _warned:
        log.info("backend='auto': TensorRT not used (%s)", key)
        return
    _warned.add(key)
    warnings.warn(f"pyengine: backend='auto' runs on the CPU runtime because TensorRT cannot be used: {key}",
                  RuntimeWarning, stacklevel=3)


def try_build(model, precision: str, optimize: bool, **options):
    """backend="auto": (engine, None) when TensorRT can build the model, else
    (None, reason).

    Errors that the CPU build would hit too (a bad model, bad calibration
    data, bad options) are raised. Once the ONNX for TensorRT exists, any
    failure on TensorRT's side (parser, builder, deserialization, out of
    GPU memory, a broken install) is a reason to use the CPU instead:
    ``auto`` never breaks where the CPU runtime works.
    """
    from ..errors import InvalidModelError

    reason = availability()
    if reason:
        return None, reason
    try:
        staged = _export_stage(model, precision, optimize, options)
    except InvalidModelError as exc:
        # The export's TensorRT lint (a pre-quantized model TensorRT would
        # reject) is a reason to use the CPU, not an error.
        if "TensorRT rule" in str(exc):
            return None, f"{exc.__class__.__name__}: {exc}"
        raise
    try:
        return _engine_from_export(*staged), None
    except Exception as exc:  # noqa: BLE001  (see the docstring)
        log.debug("backend='auto': TensorRT failed", exc_info=True)
        return None, f"{exc.__class__.__name__}: {exc}"


# --------------------------------------------------------------------------
# Plan container and preflight
# --------------------------------------------------------------------------

def describe_build(trt_meta: dict) -> str:
    return (f"TensorRT {trt_meta.get('version', '?')} on {trt_meta.get('gpu_name') or '?'} (compute capability "
            f"{trt_meta.get('compute_capability') or '?'}, CUDA {trt_meta.get('cuda_runtime_version') or '?'})")


def describe_machine(here: dict) -> str:
    if not here.get("tensorrt_version"):
        return "no TensorRT"
    if not here.get("compute_capability"):
        return f"TensorRT {here['tensorrt_version']} and no usable GPU ({here.get('reason') or 'unknown reason'})"
    return (f"TensorRT {here['tensorrt_version']} on {here.get('gpu_name') or '?'} (compute capability "
            f"{here['compute_capability']}, CUDA {here.get('cuda_runtime_version') or '?'})")


def rebuild_hint(meta: dict, path: str) -> str:
    name = meta.get("source_model_name") or "model.onnx"
    if not str(name).endswith(".onnx"):
        name = f"{name}.onnx"
    precision = meta.get("precision", "fp32")
    calib = " --calib DIR" if precision == "int8" else ""
    return (f"rebuild it on this machine from the ONNX model: pyengine build {name} --backend tensorrt "
            f"--precision {precision}{calib} -o {os.path.basename(path)} (or build with version_compatible=True / "
            "hardware_compatibility_level='ampere_plus' to make plans that travel)")


def _version_tuple(v) -> tuple:
    out = []
    for p in str(v).split("."):
        digits = "".join(c for c in p if c.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def _cc_tuple(cc) -> tuple:
    return _version_tuple(cc)[:2]


def preflight(meta: dict, here: dict, path: str = "plan") -> list:
    """Checks that a TensorRT plan can be deserialized on this machine, before
    any TensorRT call (a foreign plan can abort the process inside TensorRT).

    Args:
        meta: the plan's metadata.
        here: :func:`machine`'s description of this machine.
        path: for messages.

    Returns:
        Warnings (e.g. another GPU model of the same compute capability).

    Raises:
        BackendUnavailableError: no TensorRT or no GPU here.
        PlanFormatError: another TensorRT version or GPU architecture than the
            plan was built for; the message says what the plan needs, what
            this machine has, and how to rebuild.
    """
    t = meta.get("tensorrt") or {}
    built = describe_build(t)
    have = describe_machine(here)
    hint = rebuild_hint(meta, path)
    if not t.get("version") or not t.get("compute_capability"):
        raise PlanFormatError(f"'{path}' is a TensorRT plan without the TensorRT version or compute capability "
                              f"in its metadata, so it cannot be checked before loading; {hint}")
    if not here.get("tensorrt_version") or not here.get("compute_capability"):
        raise BackendUnavailableError(f"'{path}' is a TensorRT plan built for {built}; this machine has {have}. "
                                      f"Run it on a machine with TensorRT {t['version']} and such a GPU, or build a "
                                      "CPU plan: pyengine build MODEL.onnx -o MODEL.plan")
    ours, theirs = _version_tuple(here["tensorrt_version"]), _version_tuple(t["version"])
    if t.get("version_compatible"):
        if ours[:1] != theirs[:1] or ours < theirs:
            raise PlanFormatError(f"'{path}' was built version-compatible for {built}; this machine has {have}. "
                                  f"Version-compatible plans run on TensorRT {theirs[0]}.x from {t['version']} on; "
                                  f"{hint}")
    elif ours != theirs:
        raise PlanFormatError(f"'{path}' was built for {built}; this machine has {have}. A TensorRT plan runs only "
                              f"with the TensorRT version that built it; {hint}")
    cc_plan, cc_here = _cc_tuple(t["compute_capability"]), _cc_tuple(here["compute_capability"])
    level = (t.get("hardware_compatibility_level") or "none").lower()
    warns = []
    if level == "ampere_plus":
        if cc_here < (8, 0):
            raise PlanFormatError(f"'{path}' was built for {built} with hardware compatibility 'ampere_plus' "
                                  f"(compute capability 8.0 or newer); this machine has {have}; {hint}")
    elif cc_here != cc_plan:
        raise PlanFormatError(f"'{path}' was built for {built}; this machine has {have}. A TensorRT plan runs only "
                              f"on the GPU architecture it was built for; {hint}")
    elif level == "none" and t.get("gpu_name") and here.get("gpu_name") and t["gpu_name"] != here["gpu_name"]:
        warns.append(f"'{path}' was built on {t['gpu_name']} and runs on {here['gpu_name']} (same compute "
                     "capability): TensorRT may pick slower kernels; rebuild here for best speed")
    return warns


def read_plan(path) -> tuple[dict, bytes | None]:
    """(metadata, engine bytes or None) of a pyengine plan file; no TensorRT needed."""
    from .. import _core

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise PlanFormatError(f"plan file '{path}' does not exist")
    _, meta_json, blob = _core.load_plan_sections(path)
    try:
        meta = json.loads(meta_json)
    except json.JSONDecodeError as exc:
        raise PlanFormatError(f"plan '{path}' has unreadable metadata: {exc}") from None
    return meta, blob


def write_plan(path, metadata: dict, engine_bytes: bytes) -> None:
    """Writes a pyengine plan holding a serialized TensorRT engine (section 4)
    and its metadata; the graph section is empty (TensorRT holds the graph)."""
    from .. import _core

    meta = dict(metadata)
    meta["format_version"] = _core.PLAN_FORMAT_VERSION
    meta.setdefault("tensorrt", {})
    meta["tensorrt"] = dict(meta["tensorrt"], engine_bytes=len(engine_bytes),
                            engine_sha256=hashlib.sha256(engine_bytes).hexdigest())
    empty = _core.Graph()
    empty.finalize()
    _core.save_plan(empty, json.dumps(meta, indent=1, sort_keys=True), os.fspath(path), engine=engine_bytes)


def load_plan(path, metadata: dict | None = None, blob: bytes | None = None, cuda_graph: bool = False):
    """Loads a TensorRT plan written by :meth:`TensorRTEngine.save`, after the
    preflight check (TensorRT version and compute capability)."""
    path = os.fspath(path)
    if metadata is None or blob is None:
        metadata, blob = read_plan(path)
    if metadata.get("backend") != "tensorrt":
        raise PlanFormatError(f"'{path}' is a {metadata.get('backend', 'cpu')} plan, not a TensorRT plan")
    if not blob:
        raise PlanFormatError(f"'{path}' is marked as a TensorRT plan but has no engine section (kind "
                              f"{ENGINE_SECTION})")
    t = metadata.get("tensorrt") or {}
    if t.get("engine_sha256") and hashlib.sha256(blob).hexdigest() != t["engine_sha256"]:
        raise PlanFormatError(f"'{path}': the engine section does not match the hash in the metadata")
    for w in preflight(metadata, machine(), path):
        warnings.warn(w, RuntimeWarning, stacklevel=3)
    return TensorRTEngine(blob, metadata, trt=_import_trt(), cuda_graph=cuda_graph)


# --------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------

class TensorRTEngine(EngineBase):
    """A TensorRT engine with pyengine's Engine interface.

    ``engine(x)``, ``engine.run({name: x})``: numpy in, numpy out, or device
    arrays (``__cuda_array_interface__`` / DLPack) in place;
    ``engine.run(feeds, device_outputs=True)`` keeps outputs on the GPU.

    Thread safety: one execution context per engine, and a lock makes calls
    from several threads take turns (safe, not parallel). For parallel
    inference load one engine per thread.
    """

    backend_name = "tensorrt"

    def __init__(self, plan: bytes, metadata: dict, trt=None, cuda_graph: bool = False):
        from ..engine import TensorSpec
        from . import trt_build, trt_runtime

        trt = trt or _import_trt()
        self._trt = trt
        self._plan = bytes(plan)
        self._metadata = dict(metadata)
        t = self._metadata.get("tensorrt") or {}
        self._logger = trt_build.make_logger(trt)
        self._runner = trt_runtime.TRTRunner(trt, self._plan, self._logger,
                                             host_code_allowed=bool(t.get("version_compatible")))
        self._runner.use_cuda_graph = bool(cuda_graph)

        def spec(name, dtype, shape):
            return TensorSpec(name, np.dtype(dtype), tuple(None if d < 0 else d for d in shape))

        self.inputs = [spec(*x) for x in self._runner.inputs]
        self.outputs = [spec(*x) for x in self._runner.outputs]
        self._input_names = [s.name for s in self.inputs]
        self.accuracy_report = None

    # -- running -----------------------------------------------------------
    @property
    def cuda_graph(self) -> bool:
        """Run through CUDA graphs (one captured per input shape)."""
        return self._runner.use_cuda_graph

    @cuda_graph.setter
    def cuda_graph(self, value: bool) -> None:
        self._runner.use_cuda_graph = bool(value)

    def run(self, feeds: dict, device_outputs: bool = False) -> dict:
        """Runs the engine.

        Args:
            feeds: input name -> numpy array or device array.
            device_outputs: return :class:`DeviceArray` outputs (on the GPU).

        Returns:
            dict of output name -> numpy array (or DeviceArray).
        """
        self._check_feeds(feeds)
        return self._runner.run(feeds, device_outputs)

    def __call__(self, *args):
        self._check_positional(args)
        outs = self._runner.run(dict(zip(self._input_names, args)))
        return self._single_or_tuple([outs[s.name] for s in self.outputs])

    # -- describing --------------------------------------------------------
    @property
    def backend(self) -> str:
        return "tensorrt"

    @property
    def num_threads(self) -> int:
        return 0

    def layer_information(self) -> dict:
        """The engine inspector's JSON (DETAILED verbosity), parsed."""
        return json.loads(self._runner.engine_information())

    def layers(self) -> list:
        """[{name, type, onnx_nodes}] of the engine's layers, with the ONNX nodes each came from."""
        from . import trt_runtime

        nodes = (self._metadata.get("tensorrt") or {}).get("onnx_nodes", [])
        out = []
        for layer in trt_runtime.inspector_layers(self._runner.engine_information()):
            out.append({"name": layer.get("Name", ""), "type": layer.get("LayerType", ""),
                        "onnx_nodes": trt_runtime.layer_onnx_nodes(layer, nodes)})
        return out

    def graph_text(self) -> str:
        return "\n".join(f"{l['name']} [{l['type']}] <- {', '.join(l['onnx_nodes']) or '-'}" for l in self.layers())

    def report(self) -> str:
        t = self._metadata.get("tensorrt") or {}
        return (f"TensorRT engine: {describe_build(t)}, {self.precision}, built in {t.get('build_seconds', '?')} s, "
                f"profiles {t.get('profiles', [])}")

    def profile(self, feeds: dict, runs: int = 10) -> list:
        """Per-layer times (ms, mean over ``runs``) from TensorRT's IProfiler,
        each layer with the ONNX node names it was made from.

        Returns:
            [{"name", "op", "ms", "onnx_nodes"}] in execution order ("origin"
            repeats "onnx_nodes" for pyengine's profile tables; "flops" is 0:
            TensorRT does not report it).
        """
        from . import trt_runtime

        times = self._runner.profile(feeds, runs)
        nodes = (self._metadata.get("tensorrt") or {}).get("onnx_nodes", [])
        info = {l.get("Name"): l for l in trt_runtime.inspector_layers(self._runner.engine_information())}
        out = []
        for name, ms in times.items():
            layer = info.get(name, {"Name": name})
            origin = trt_runtime.layer_onnx_nodes(layer, nodes)
            out.append({"name": name, "op": layer.get("LayerType", "TensorRT"), "ms": ms, "onnx_nodes": origin,
                        "origin": origin, "flops": 0.0, "executed": True})
        return out

    # -- saving ------------------------------------------------------------
    def save(self, path, raw: bool = False) -> None:
        """Writes the plan: pyengine's container (metadata + engine section),
        or with ``raw=True`` the bare TensorRT engine (for trtexec
        ``--loadEngine`` and Triton's ``model.plan``), which carries no metadata."""
        path = os.fspath(path)
        if raw:
            with open(path, "wb") as f:
                f.write(self._plan)
            return
        write_plan(path, self._metadata, self._plan)

    def serialize(self) -> bytes:
        """The bare TensorRT engine bytes."""
        return self._plan

    def close(self) -> None:
        """Releases the GPU buffers, graphs, stream and context now."""
        self._runner.close()

    def __repr__(self) -> str:
        ins = ", ".join(f"{s.name}: {s.dtype}{list(s.shape) if s.shape else ''}" for s in self.inputs)
        return f"<pyengine.TensorRTEngine {self.precision} ({ins})>"
