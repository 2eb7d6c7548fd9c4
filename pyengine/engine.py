"""The Engine: a built plan you call on numpy arrays."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from . import _core
from .errors import InvalidArgumentError, PlanFormatError, PyengineError

_NP_DTYPES = {
    1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
    9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64,
}


def numpy_dtype(onnx_code: int) -> np.dtype:
    """The numpy dtype of an ONNX element type code."""
    return np.dtype(_NP_DTYPES.get(onnx_code, np.float32))


@dataclass(frozen=True)
class TensorSpec:
    """An input or output of an engine: name, numpy dtype and shape (None for dynamic axes)."""

    name: str
    dtype: np.dtype
    shape: tuple | None

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": str(self.dtype),
                "shape": None if self.shape is None else [-1 if d is None else d for d in self.shape]}


def _specs(entries) -> list[TensorSpec]:
    return [TensorSpec(n, numpy_dtype(d), None if s is None else tuple(None if x < 0 else x for x in s))
            for n, d, s in entries]


class EngineBase:
    """What every engine (CPU plan, TensorRT) shares: the input/output specs,
    checking feeds against them, and the metadata views. Subclasses set
    ``inputs``, ``outputs``, ``_input_names`` and ``_metadata``."""

    inputs: list
    outputs: list
    _input_names: list
    _metadata: dict

    def _check_feeds(self, feeds) -> None:
        if not isinstance(feeds, dict):
            raise InvalidArgumentError("run() takes a dict of input name -> array; use engine(x) for one input")
        missing = [n for n in self._input_names if n not in feeds]
        extra = [n for n in feeds if n not in self._input_names]
        if missing or extra:
            raise InvalidArgumentError(
                f"inputs do not match the model: missing {missing}, unexpected {extra}; "
                f"the model's inputs are {self._input_names}")

    def _check_positional(self, args) -> None:
        if len(args) != len(self.inputs):
            raise InvalidArgumentError(
                f"the model has {len(self.inputs)} inputs ({self._input_names}); "
                f"got {len(args)} positional arrays")

    @staticmethod
    def _single_or_tuple(values: list):
        return values[0] if len(values) == 1 else tuple(values)

    @property
    def metadata(self) -> dict:
        """Plan metadata: precision, backend, source model hash, versions, passes."""
        return dict(self._metadata)

    @property
    def precision(self) -> str:
        return self._metadata.get("precision", "fp32")

    @property
    def preprocess(self):
        """The :class:`pyengine.Preprocess` compiled into the plan (the engine
        then takes uint8 frames), or None."""
        d = self._metadata.get("preprocess")
        if d is None:
            return None
        from .preprocess import Preprocess

        return Preprocess.from_json(d)


class Engine(EngineBase):
    """A compiled model. Create with :func:`pyengine.build` or :func:`pyengine.load`.

    ``engine(x)`` runs a single-input model and returns its single output (or a
    tuple of outputs); ``engine.run({"input": x})`` returns a dict of outputs.
    The batch axis is dynamic: any batch size runs without rebuilding.
    """

    def __init__(self, graph: _core.Graph, metadata: dict, num_threads: int = 0):
        self._graph = graph
        self._metadata = metadata
        self._impl = _core.Executor(graph, num_threads)
        self.inputs = _specs(graph.inputs())
        self.outputs = _specs(graph.outputs())
        self._input_names = [s.name for s in self.inputs]

    # -- running -----------------------------------------------------------
    def run(self, feeds: dict) -> dict:
        """Runs the model.

        Args:
            feeds: input name -> numpy array (dtype and rank as in ``engine.inputs``).

        Returns:
            dict of output name -> numpy array, in the order of ``engine.outputs``.
        """
        self._check_feeds(feeds)
        arrays = [_as_array(feeds[n], n) for n in self._input_names]
        outs = self._impl.run(arrays)
        return {spec.name: out for spec, out in zip(self.outputs, outs)}

    def __call__(self, *args):
        self._check_positional(args)
        return self._single_or_tuple(self._impl.run([_as_array(a, n) for a, n in zip(args, self._input_names)]))

    # -- describing --------------------------------------------------------
    @property
    def backend(self) -> str:
        return self._metadata.get("backend", "cpu")

    @property
    def num_threads(self) -> int:
        return self._impl.num_threads

    @property
    def memory_limit(self) -> int | None:
        """Bytes one run may allocate (activation arena + outputs), or None for no
        limit. A run that needs more raises ShapeError before allocating."""
        return self._impl.memory_limit or None

    @memory_limit.setter
    def memory_limit(self, value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                  or value <= 0):
            raise InvalidArgumentError(f"memory_limit must be a positive number of bytes or None, got {value!r}")
        self._impl.memory_limit = 0 if value is None else int(value)

    def memory_info(self) -> dict:
        """Memory the engine holds: ``weights`` (constant tensors, bytes) and
        ``arena`` (activation arena for the largest input shapes run so far)."""
        weights = sum(np.asarray(self._graph.constant(name)).nbytes
                      for name, _, _, is_const in self._graph.values() if is_const)
        return {"weights": int(weights), "arena": int(self._impl.arena_bytes)}

    def graph_text(self) -> str:
        """The graph the engine runs, one node per line."""
        return self._graph.to_text()

    def report(self) -> str:
        """What the optimizer did: passes fired and node counts before/after."""
        rep = self._metadata.get("optimizer")
        if not rep:
            return "optimizer: not run (built with optimize=False)"
        from .optimizer import format_report

        return format_report(rep)

    def profile(self, feeds: dict, runs: int = 10) -> list:
        """Per-layer times (ms, averaged over ``runs``) of the CPU plan."""
        self._impl.set_profiling(True)
        try:
            totals = None
            for _ in range(runs):
                self.run(feeds)
                layers = self._impl.last_profile()
                if totals is None:
                    totals = layers
                else:
                    for t, l in zip(totals, layers):
                        t["ms"] += l["ms"]
            for t in totals:
                t["ms"] /= runs
            return totals
        finally:
            self._impl.set_profiling(False)

    # -- saving ------------------------------------------------------------
    def save_calibration(self, path, format: str = "json") -> None:
        """Writes the INT8 calibration table: "json" (pyengine's cache) or
        "tensorrt" (TensorRT's text cache); see pyengine.quantize.save_calibration."""
        from .quantize import save_calibration

        save_calibration(self, path, format=format)

    def save(self, path, raw: bool = False) -> None:
        """Writes the plan file (format: engine/plan/format.md). ``raw=True``
        (a bare engine file) exists for TensorRT engines only."""
        if raw:
            raise InvalidArgumentError("raw=True writes a bare TensorRT engine; this is a CPU engine "
                                       "(build with backend='tensorrt')")
        try:
            path = os.fspath(path)
        except TypeError:
            raise InvalidArgumentError(f"save() takes a file path, got {type(path).__name__}") from None
        meta = dict(self._metadata)
        meta["format_version"] = _core.PLAN_FORMAT_VERSION
        _core.save_plan(self._graph, json.dumps(meta, indent=1, sort_keys=True), path)

    def __repr__(self) -> str:
        ins = ", ".join(f"{s.name}: {s.dtype}{list(s.shape) if s.shape else ''}" for s in self.inputs)
        return f"<pyengine.Engine {self.backend}/{self.precision} ({ins})>"


def _as_array(value, name: str) -> np.ndarray:
    """np.asarray with its failures (ragged lists, odd objects) as InvalidArgumentError."""
    try:
        return np.asarray(value)
    except Exception as exc:
        raise InvalidArgumentError(f"input '{name}' cannot be converted to an array: {exc}") from None


def load_engine(path, num_threads: int = 0, cuda_graph: bool = False):
    """Loads a plan file written by :meth:`Engine.save` (or a TensorRT engine's save)."""
    try:
        path = os.fspath(path)
    except TypeError:
        raise InvalidArgumentError(f"expected a path to a plan file, got {type(path).__name__}") from None
    if not os.path.isfile(path):
        raise PlanFormatError(f"plan file '{path}' does not exist")
    graph, meta_json, blob = _core.load_plan_sections(path)
    try:
        meta = json.loads(meta_json)
    except json.JSONDecodeError as exc:
        raise PlanFormatError(f"plan '{path}' has unreadable metadata: {exc}") from None
    if not isinstance(meta, dict):
        raise PlanFormatError(f"plan '{path}' has unreadable metadata: not a JSON object")
    backend = meta.get("backend", "cpu")
    if backend == "tensorrt":
        from .backends import tensorrt

        return tensorrt.load_plan(path, meta, blob, cuda_graph=cuda_graph)
    if backend != "cpu" or blob is not None:
        raise PlanFormatError(f"plan '{path}' is for backend '{backend}', which this pyengine cannot run")
    try:
        return Engine(graph, meta, num_threads)
    except PlanFormatError:
        raise
    except PyengineError as exc:
        # The reader validated the graph as an import does; a plan whose graph
        # still cannot be compiled was edited (format.md: PlanFormatError).
        raise PlanFormatError(
            f"plan '{path}' holds a graph that cannot be compiled ({type(exc).__name__}: {exc})") from None
