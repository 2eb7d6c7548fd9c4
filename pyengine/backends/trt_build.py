"""Building TensorRT engines: small callables named for what they produce
(Polygraphy's shape). ``trt`` is the imported ``tensorrt`` module, passed in
so that nothing here imports it at module load (and so that the tests can
pass a stand-in module to check the call sequence).

Names used are valid in TensorRT 10.x and 11.x (../shared/TENSORRT.md):
precision is in the ONNX graph (Q/DQ, float16 initializers and Casts), never
in builder flags; the strongly typed creation flag is looked up by name where
it exists, never written as a literal bit.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from dataclasses import dataclass, field

from ..errors import InvalidArgumentError, ShapeError, UnsupportedOperatorError

log = logging.getLogger("pyengine.tensorrt")

DEFAULT_WORKSPACE = 1 << 30
DEFAULT_BATCH_RANGE = (1, 1, 32)
HARDWARE_COMPATIBILITY_LEVELS = ("none", "ampere_plus", "same_compute_capability")


class TensorRTParseError(UnsupportedOperatorError):
    """TensorRT's ONNX parser rejected the model; the message holds its errors."""


class TensorRTBuildError(UnsupportedOperatorError):
    """TensorRT parsed the model but could not build an engine from it."""


@dataclass
class BuildOptions:
    """Builder settings (see :func:`pyengine.build` for their meaning)."""

    workspace: int = DEFAULT_WORKSPACE
    batch_range: tuple | None = None
    input_shapes: dict | None = None
    cache_dir: str | None = None
    timing_cache: bool = True
    builder_optimization_level: int | None = None
    version_compatible: bool = False
    hardware_compatibility_level: str | None = None
    progress: bool = True
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_kwargs(cls, options: dict) -> "BuildOptions":
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InvalidArgumentError(f"unexpected TensorRT build options {unknown}; known: {sorted(known)}")
        opts = cls(**options)
        opts.validate()
        return opts

    def validate(self) -> None:
        if not isinstance(self.workspace, int) or self.workspace <= 0:
            raise InvalidArgumentError(f"workspace must be a positive number of bytes, got {self.workspace!r}")
        if self.batch_range is not None:
            br = tuple(self.batch_range)
            if len(br) != 3 or not all(isinstance(b, int) for b in br) or not 1 <= br[0] <= br[1] <= br[2]:
                raise InvalidArgumentError(f"batch_range must be (min, opt, max) with 1 <= min <= opt <= max, "
                                           f"got {self.batch_range!r}")
            self.batch_range = br
        if self.builder_optimization_level is not None and self.builder_optimization_level not in range(6):
            raise InvalidArgumentError(f"builder_optimization_level must be 0..5, got "
                                       f"{self.builder_optimization_level!r}")
        if self.hardware_compatibility_level is not None:
            level = str(self.hardware_compatibility_level).lower()
            if level not in HARDWARE_COMPATIBILITY_LEVELS:
                raise InvalidArgumentError(f"hardware_compatibility_level must be one of "
                                           f"{HARDWARE_COMPATIBILITY_LEVELS}, got {self.hardware_compatibility_level!r}")
            self.hardware_compatibility_level = None if level == "none" else level
        if self.input_shapes is not None:
            if not isinstance(self.input_shapes, dict):
                raise InvalidArgumentError("input_shapes must be {input name: (min shape, opt shape, max shape)}")
            for name, triple in self.input_shapes.items():
                if len(triple) != 3:
                    raise InvalidArgumentError(f"input_shapes['{name}'] must be (min, opt, max) shapes")


# --------------------------------------------------------------------------
# Logging and progress
# --------------------------------------------------------------------------

_LEVELS = {"INTERNAL_ERROR": logging.CRITICAL, "ERROR": logging.ERROR, "WARNING": logging.WARNING,
           "INFO": logging.INFO, "VERBOSE": logging.DEBUG}


def make_logger(trt):
    """A ``trt.ILogger`` that routes TensorRT's log to Python ``logging``
    (logger "pyengine.tensorrt") and keeps the errors for error messages."""

    class PythonLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors = []
            self._lock = threading.Lock()

        def log(self, severity, msg):  # called from TensorRT's threads too
            name = getattr(severity, "name", str(severity).rsplit(".", 1)[-1])
            level = _LEVELS.get(name, logging.INFO)
            if level >= logging.ERROR:
                with self._lock:
                    self.errors.append(str(msg))
            if log.isEnabledFor(level):  # VERBOSE floods: skip the formatting when nobody listens
                log.log(level, "TensorRT: %s", msg)

    return PythonLogger()


def make_progress_monitor(trt, enabled: bool = True):
    """A ``trt.IProgressMonitor`` drawing one tqdm bar per build phase, or
    None where the API (TensorRT < 10) or tqdm is missing. TensorRT calls it
    from several threads, so every callback takes a lock; keep the monitor
    alive until the build returns."""
    base = getattr(trt, "IProgressMonitor", None)
    if not enabled or base is None:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = None

    class ProgressMonitor(base):
        def __init__(self):
            base.__init__(self)
            self._lock = threading.Lock()
            self._bars = {}
            self._depth = {}
            self.cancelled = False
            self.phases = []

        def phase_start(self, phase_name, parent_phase, num_steps):
            with self._lock:
                depth = self._depth.get(parent_phase, -1) + 1 if parent_phase else 0
                self._depth[phase_name] = depth
                self.phases.append(phase_name)
                if tqdm is not None:
                    self._bars[phase_name] = tqdm(total=num_steps, desc=f"TensorRT {phase_name}", position=depth,
                                                  leave=depth == 0, unit="step")
                else:
                    log.debug("TensorRT build: %s (%d steps)", phase_name, num_steps)

        def step_complete(self, phase_name, step):
            with self._lock:
                bar = self._bars.get(phase_name)
                if bar is not None:
                    bar.n = step + 1
                    bar.refresh()
                return not self.cancelled  # False cancels the build

        def phase_finish(self, phase_name):
            with self._lock:
                bar = self._bars.pop(phase_name, None)
                if bar is not None:
                    bar.close()

    return ProgressMonitor()


# --------------------------------------------------------------------------
# Network, profiles, config, engine
# --------------------------------------------------------------------------

def network_flags(trt) -> int:
    """The network creation flags: STRONGLY_TYPED by name where the enum has
    it (10.x; 11.x networks are always strongly typed and ignore it)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def parser_error_text(err) -> str:
    """One line per ``parser.get_error(i)``: node name, op and description."""
    def call(attr):
        f = getattr(err, attr, None)
        try:
            return f() if callable(f) else f
        except Exception:  # older parsers lack some accessors
            return None

    desc = call("desc") or str(err)
    node_name, op, node = call("node_name"), call("node_operator"), call("node")
    where = []
    if node_name:
        where.append(f"node '{node_name}'")
    elif node is not None and node != -1:
        where.append(f"node #{node}")
    if op:
        where.append(f"({op})")
    return (" ".join(where) + ": " if where else "") + str(desc)


def network_from_onnx(trt, builder, logger, onnx_bytes: bytes):
    """Parses ONNX into a new strongly typed network.

    Returns:
        (network, parser): the parser owns objects the network uses; keep both.

    Raises:
        TensorRTParseError: with every error the parser reported.
    """
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [parser_error_text(parser.get_error(i)) for i in range(parser.num_errors)]
        raise TensorRTParseError("TensorRT's ONNX parser rejected the model:\n" +
                                 "\n".join(f"  {e}" for e in errors or ["(no error message)"]))
    return network, parser


def network_inputs(network) -> list:
    """[(name, shape with -1 for dynamic axes)] of the network's inputs."""
    out = []
    for i in range(network.num_inputs):
        t = network.get_input(i)
        out.append((t.name, tuple(int(d) for d in t.shape)))
    return out


def profile_shapes(inputs: list, batch_range=None, input_shapes=None) -> dict:
    """{input name: (min, opt, max) shapes} for the inputs with dynamic axes.

    ``input_shapes`` gives them per input; otherwise ``batch_range`` (default
    DEFAULT_BATCH_RANGE) fills a dynamic axis 0. Any other dynamic axis needs
    ``input_shapes``.

    Raises:
        ShapeError: a dynamic axis without a range, or a given shape that
            contradicts the model.
    """
    input_shapes = dict(input_shapes or {})
    names = [n for n, _ in inputs]
    unknown = sorted(set(input_shapes) - set(names))
    if unknown:
        raise InvalidArgumentError(f"input_shapes names unknown inputs {unknown}; the model's inputs are {names}")
    out = {}
    br = tuple(batch_range) if batch_range is not None else DEFAULT_BATCH_RANGE
    for name, shape in inputs:
        if name in input_shapes:
            triple = tuple(tuple(int(d) for d in s) for s in input_shapes[name])
            for s in triple:
                if len(s) != len(shape) or any(m != -1 and m != d for m, d in zip(shape, s)):
                    raise ShapeError(f"input_shapes['{name}'] = {list(triple)} does not fit the model's shape "
                                     f"{list(shape)} (-1: dynamic)")
            lo, opt, hi = triple
            if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
                raise ShapeError(f"input_shapes['{name}']: need min <= opt <= max on every axis, got {list(triple)}")
            out[name] = triple
            continue
        if all(d >= 0 for d in shape):
            if batch_range is not None:
                log.debug("input '%s' has a static shape %s: batch_range does not apply", name, shape)
            continue
        if any(d < 0 for d in shape[1:]):
            raise ShapeError(f"input '{name}' has dynamic axes besides the batch ({list(shape)}): give "
                             f"input_shapes={{'{name}': (min, opt, max)}}")
        out[name] = tuple((b,) + tuple(shape[1:]) for b in br)
    return out


def timing_cache_path(cache_dir: str, gpu_name: str, compute_capability: str, trt_version: str) -> str:
    """Where the timing cache for this GPU and TensorRT version lives."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower() or "gpu"
    cc = compute_capability.replace(".", "")
    return os.path.join(cache_dir, f"timing-{slug}-sm{cc}-trt{trt_version}.cache")


def default_cache_dir() -> str:
    return os.environ.get("PYENGINE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "pyengine", "tensorrt")


def config_from_options(trt, builder, network, opts: BuildOptions, timing_cache_file: str | None):
    """The builder config: workspace, profiles, timing cache, levels, flags.

    Returns:
        (config, info): info records what was set (for plan metadata) and
        holds the progress monitor and timing cache, which must outlive the build.
    """
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace))
    info = {"workspace_bytes": int(opts.workspace), "profiles": []}
    shapes = profile_shapes(network_inputs(network), opts.batch_range, opts.input_shapes)
    if shapes:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
        info["profiles"].append({n: [list(s) for s in t] for n, t in shapes.items()})
    if opts.timing_cache and timing_cache_file:
        data = b""
        if os.path.isfile(timing_cache_file):
            with open(timing_cache_file, "rb") as f:
                data = f.read()
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, False)
        info["timing_cache"] = {"path": timing_cache_file, "reused": bool(data)}
        info["_cache"] = cache
    if opts.builder_optimization_level is not None:
        config.builder_optimization_level = int(opts.builder_optimization_level)
        info["builder_optimization_level"] = int(opts.builder_optimization_level)
    if opts.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    info["version_compatible"] = bool(opts.version_compatible)
    if opts.hardware_compatibility_level:
        level = getattr(trt.HardwareCompatibilityLevel, opts.hardware_compatibility_level.upper(), None)
        if level is None:
            raise InvalidArgumentError(f"TensorRT {trt.__version__} has no hardware compatibility level "
                                       f"'{opts.hardware_compatibility_level}'")
        config.hardware_compatibility_level = level
    info["hardware_compatibility_level"] = opts.hardware_compatibility_level or "none"
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    monitor = make_progress_monitor(trt, opts.progress)
    if monitor is not None and hasattr(config, "progress_monitor"):
        config.progress_monitor = monitor
        info["_monitor"] = monitor
    return config, info


def engine_from_network(trt, builder, network, config, logger) -> bytes:
    """Builds the serialized engine (plan bytes).

    Raises:
        TensorRTBuildError: the build failed; the message has TensorRT's errors.
    """
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        errors = getattr(logger, "errors", [])
        raise TensorRTBuildError("TensorRT could not build an engine from the model:\n" +
                                 "\n".join(f"  {e}" for e in errors[-20:] or ["(TensorRT logged no error)"]))
    return bytes(plan)


def save_timing_cache(config, path: str) -> None:
    """Writes the config's timing cache back (atomically: other builds may read it)."""
    cache = config.get_timing_cache()
    if cache is None:
        return
    data = bytes(cache.serialize())
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".timing-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def build_plan(trt, onnx_bytes: bytes, opts: BuildOptions, device: dict) -> tuple[bytes, dict]:
    """ONNX bytes -> TensorRT plan bytes, with what was set (for metadata).

    ``device`` is :func:`pyengine.backends.trt_runtime.device_info` of the GPU
    the engine is built on (keys the timing cache).
    """
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    network, parser = network_from_onnx(trt, builder, logger, onnx_bytes)
    cache_file = None
    if opts.timing_cache:
        cache_file = timing_cache_path(opts.cache_dir or default_cache_dir(), device["gpu_name"],
                                       device["compute_capability"], trt.__version__)
    config, info = config_from_options(trt, builder, network, opts, cache_file)
    plan = engine_from_network(trt, builder, network, config, logger)
    if cache_file:
        try:
            save_timing_cache(config, cache_file)
        except OSError as exc:  # a read-only cache dir must not fail the build
            log.warning("could not write the TensorRT timing cache '%s': %s", cache_file, exc)
    info["strongly_typed_flag"] = network_flags(trt) != 0
    del parser, network  # the monitor and cache in info outlive the builder objects
    return plan, {k: v for k, v in info.items() if not k.startswith("_")}
