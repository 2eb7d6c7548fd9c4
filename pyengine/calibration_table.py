"""Calibration tables and caches.

A :class:`CalibrationTable` holds the calibrated range (amax, the |x|
clipping threshold) of every float tensor of a model. Tables are cached in a
JSON file keyed by the model's content hash and the calibration settings
(:func:`cache_key`), and can be written and read in TensorRT's text
calibration cache format (``TRT-<version>-<algorithm>``, one
``name: <hex float32 scale>`` line per tensor).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import warnings
from dataclasses import dataclass

import numpy as np

from .errors import CalibrationError, CalibrationWarning, InvalidArgumentError

METHODS = ("entropy", "percentile", "mse", "minmax")
# The default calibration method: the one that held best on real data (see
# the README's INT8 section and tests/test_int8_realdata.py).
DEFAULT_METHOD = "mse"
DEFAULT_PERCENTILE = 99.99
DEFAULT_NUM_BINS = 2048
CACHE_FORMAT = "pyengine-calibration-cache"
CACHE_VERSION = 1
# A threshold that clips more than this share of a tensor's calibration
# values gets a CalibrationWarning (percentile: or twice what the chosen
# percentile clips by definition, if that is more).
MAX_CLIPPED_SHARE = 0.01
# ... when that is at least this many values (a share of a few dozen values
# says nothing).
MIN_CLIPPED_VALUES = 10
# int8 scales (amax / 127) are float32, and the int8 kernels and TensorRT
# multiply scales together (input scale x weight scale, requantization): a
# scale outside [1e-18, 1e18] keeps neither its square nor such products in
# float32's normal range. Calibrated data that far out is a preprocessing bug.
MIN_SCALE, MAX_SCALE = 1e-18, 1e18
# TensorRT 8.6.1, the last release whose calibration caches DeepStream and
# TensorRT <= 10 commonly read; override with trt_version=.
DEFAULT_TRT_CACHE_VERSION = "8601"


def _check_settings(method: str, percentile: float, num_bins: int = DEFAULT_NUM_BINS) -> None:
    if method not in METHODS:
        raise InvalidArgumentError(f"calibration_method must be one of {METHODS}, got {method!r}")
    if not (isinstance(percentile, (int, float)) and 0 < percentile <= 100):
        raise InvalidArgumentError(f"percentile must be in (0, 100], got {percentile!r}")
    if not isinstance(num_bins, int) or num_bins < 128:
        raise InvalidArgumentError(f"num_bins must be an int >= 128, got {num_bins!r}")


def cache_key(model_sha256: str, method: str, percentile: float, num_bins: int = DEFAULT_NUM_BINS) -> str:
    """The key of a calibration cache entry: model content and the settings
    that change the result (the percentile only matters for "percentile")."""
    pct = f"{float(percentile):.6g}" if method == "percentile" else "-"
    text = f"{model_sha256}|{method}|{pct}|{num_bins}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def scale_from_amax(amax: float) -> float:
    """amax / 127 in float32, 1.0 for an empty range (as engine/quant/qparams.h)."""
    a = np.float32(amax)
    if not (a > 0) or not np.isfinite(a):
        return 1.0
    return float(a / np.float32(127))


@dataclass
class CalibrationTable:
    """Calibrated ranges of a model's float tensors.

    Attributes:
        model_sha256: content hash of the source ONNX model.
        method, percentile, num_bins: the calibration settings.
        amax: {tensor name: |x| clipping threshold}, in graph order.
        num_batches: batches the statistics came from.
        runtime: "pyengine" or "onnxruntime" (what ran the float model).
    """

    model_sha256: str
    method: str
    percentile: float
    amax: dict
    num_bins: int = DEFAULT_NUM_BINS
    num_batches: int = 0
    runtime: str = ""

    @property
    def key(self) -> str:
        return cache_key(self.model_sha256, self.method, self.percentile, self.num_bins)

    def scales(self) -> dict:
        """{tensor name: scale = amax / 127}."""
        return {n: scale_from_amax(a) for n, a in self.amax.items()}

    def to_dict(self) -> dict:
        return {"model_sha256": self.model_sha256, "method": self.method, "percentile": self.percentile,
                "num_bins": self.num_bins, "num_batches": self.num_batches, "runtime": self.runtime,
                "amax": {n: float(a) for n, a in self.amax.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "CalibrationTable":
        try:
            return cls(model_sha256=d["model_sha256"], method=d["method"], percentile=float(d["percentile"]),
                       amax={str(n): float(a) for n, a in d["amax"].items()}, num_bins=int(d.get("num_bins", 2048)),
                       num_batches=int(d.get("num_batches", 0)), runtime=d.get("runtime", ""))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CalibrationError(f"malformed calibration table: {exc}") from None


def tensorrt_cache_text(table: CalibrationTable, trt_version: str = DEFAULT_TRT_CACHE_VERSION,
                        algorithm: str | None = None) -> str:
    """The table in TensorRT's calibration cache text format.

    First line ``TRT-<version>-<algorithm>`` (EntropyCalibration2, or
    MinMaxCalibration for "minmax"), then ``name: <hex>`` per tensor, the hex
    being the big-endian float32 bits of scale = amax / 127.
    """
    algorithm = algorithm or ("MinMaxCalibration" if table.method == "minmax" else "EntropyCalibration2")
    lines = [f"TRT-{trt_version}-{algorithm}"]
    for name, amax in table.amax.items():
        lines.append(f"{name}: {struct.pack('>f', scale_from_amax(amax)).hex()}")
    return "\n".join(lines) + "\n"


def parse_tensorrt_cache(text: str) -> tuple[str, str, dict]:
    """Parses a TensorRT text calibration cache.

    Returns (version, algorithm, {tensor name: scale}).
    """
    lines = [ln.rstrip("\r") for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("TRT-") or lines[0].count("-") < 2:
        raise CalibrationError("not a TensorRT calibration cache: the first line must be TRT-<version>-<algorithm>")
    _, version, algorithm = lines[0].split("-", 2)
    scales = {}
    for i, ln in enumerate(lines[1:], start=2):
        name, sep, hexval = ln.rpartition(": ")
        if not sep:
            raise CalibrationError(f"TensorRT calibration cache line {i} is not 'name: <hex>': {ln!r}")
        try:
            scales[name] = struct.unpack(">f", bytes.fromhex(hexval.strip()))[0]
        except (ValueError, struct.error):
            raise CalibrationError(f"TensorRT calibration cache line {i}: bad hex float {hexval!r}") from None
    return version, algorithm, scales


def _read_cache_entries(path: str) -> dict:
    """{key: CalibrationTable} of a pyengine JSON cache ({} if absent)."""
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise CalibrationError(f"cannot read calibration cache '{path}': {exc.strerror or exc}") from None
    except UnicodeError:
        raise CalibrationError(f"calibration cache '{path}' is not a text file (pyengine JSON or a TensorRT "
                               f"calibration cache)") from None
    if text.startswith("TRT-"):
        version, algorithm, scales = parse_tensorrt_cache(text)
        method = "minmax" if algorithm.startswith("MinMax") else "entropy"
        table = CalibrationTable("", method, DEFAULT_PERCENTILE,
                                 {n: s * 127.0 for n, s in scales.items()}, runtime=f"tensorrt-cache-{version}")
        return {"tensorrt": table}
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CalibrationError(f"calibration cache '{path}' is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != CACHE_FORMAT:
        raise CalibrationError(f"'{path}' is not a pyengine calibration cache")
    if doc.get("version") != CACHE_VERSION:
        raise CalibrationError(f"calibration cache '{path}' has version {doc.get('version')}; "
                               f"this pyengine reads version {CACHE_VERSION}")
    return {k: CalibrationTable.from_dict(v) for k, v in doc.get("entries", {}).items()}


def load_calibration(path) -> list[CalibrationTable]:
    """Every table in a calibration cache (pyengine JSON or TensorRT text)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CalibrationError(f"calibration cache '{path}' does not exist")
    return list(_read_cache_entries(path).values())


def _table_of(obj) -> CalibrationTable:
    if isinstance(obj, CalibrationTable):
        return obj
    if isinstance(obj, dict):
        return CalibrationTable.from_dict(obj)
    meta = getattr(obj, "metadata", None)
    if isinstance(meta, dict):
        if "calibration" not in meta:
            raise InvalidArgumentError("this engine has no calibration table (it is not an INT8 build)")
        return CalibrationTable.from_dict(meta["calibration"])
    raise InvalidArgumentError(f"expected an Engine or a CalibrationTable, got {type(obj).__name__}")


def save_calibration(obj, path, format: str = "json", trt_version: str = DEFAULT_TRT_CACHE_VERSION) -> None:
    """Writes the calibration table of an INT8 Engine (or a CalibrationTable).

    Args:
        obj: an INT8 :class:`pyengine.Engine` or a :class:`CalibrationTable`.
        path: file to write.
        format: "json" (pyengine's cache: entries keyed by model hash and
            settings; an existing cache file keeps its other entries) or
            "tensorrt" (TensorRT's text calibration cache).
        trt_version: the version field of the TensorRT header.
    """
    table = _table_of(obj)
    path = os.fspath(path)
    if format == "tensorrt":
        text = tensorrt_cache_text(table, trt_version)
    elif format == "json":
        entries = {}
        if os.path.exists(path):
            try:
                entries = {k: v.to_dict() for k, v in _read_cache_entries(path).items() if k != "tensorrt"}
            except CalibrationError:
                entries = {}
        entries[table.key] = table.to_dict()
        text = json.dumps({"format": CACHE_FORMAT, "version": CACHE_VERSION, "entries": entries}, indent=1)
    else:
        raise InvalidArgumentError(f"format must be 'json' or 'tensorrt', got {format!r}")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# Guards on the calibration statistics
# --------------------------------------------------------------------------

def clipped_share(histogram, value_range: float, amax: float) -> float:
    """The share of the values in a histogram of |x| (equal bins over
    [0, value_range]) above ``amax``, values taken as uniform within a bin."""
    h = np.asarray(histogram, dtype=np.float64)
    total = h.sum()
    if total == 0 or value_range <= 0 or amax >= value_range:
        return 0.0
    pos = max(amax, 0.0) / value_range * len(h)
    k = int(pos)
    above = h[k + 1:].sum() + h[k] * (k + 1 - pos)
    return float(above / total)


def _names(items, fmt, limit=5) -> str:
    text = ", ".join(fmt(*it) for it in items[:limit])
    return text + (f" and {len(items) - limit} more" if len(items) > limit else "")


def check_statistics(stats: dict, amax: dict, method: str, percentile: float, inputs=()) -> None:
    """Guards a calibration against degenerate statistics.

    Args:
        stats: {tensor: observer statistics} (``_core.Calibrator.stats``:
            count, min, max, absmax, range, histogram).
        amax: {tensor: calibrated threshold}.
        method, percentile: the calibration settings.
        inputs: names of the model's inputs.

    Raises:
        CalibrationError: a model input is constant over all calibration
            data, or a threshold gives a scale outside [1e-18, 1e18] (data
            scaled far out of range, e.g. by 1e30).

    Warns (CalibrationWarning, naming the tensors): tensors that are zero or
    constant on the calibration data, and thresholds that clip more than
    MAX_CLIPPED_SHARE of a tensor's calibration values (and at least
    MIN_CLIPPED_VALUES of them).
    """
    out_of_range, zero, constant, clipped = [], [], [], []
    limit = MAX_CLIPPED_SHARE
    if method == "percentile":
        limit = max(limit, 2.0 * (100.0 - float(percentile)) / 100.0)
    for name, a in amax.items():
        st = stats.get(name)
        if st is None or st["count"] == 0:
            continue
        lo, hi = float(st["min"]), float(st["max"])
        if lo == hi:
            if name in inputs:
                raise CalibrationError(
                    f"calibration input '{name}' is constant ({lo:g}) over all {st['count']} calibration values: "
                    f"calibration needs real samples (check the data source and its preprocessing)")
            (zero if lo == 0 else constant).append((name, lo))
        scale = float(a) / 127.0
        if a > 0 and not (MIN_SCALE <= scale <= MAX_SCALE):
            out_of_range.append((name, float(a)))
            continue
        if lo != hi:
            share = clipped_share(st["histogram"], float(st["range"]), float(a))
            if share > limit and share * st["count"] >= MIN_CLIPPED_VALUES:
                clipped.append((name, share))
    if out_of_range:
        raise CalibrationError(
            f"calibration: the range of {_names(out_of_range, lambda n, a: f'{n!r} (|x| up to {a:.3g})')} gives an "
            f"int8 scale outside [{MIN_SCALE:g}, {MAX_SCALE:g}], which float32 scale arithmetic cannot carry; "
            f"check the data's preprocessing (units, normalization)")
    if zero:
        warnings.warn(
            f"calibration: {_names(zero, lambda n, v: repr(n))} {'is' if len(zero) == 1 else 'are'} zero on all "
            f"calibration data (a dead layer, or data that never reaches it); "
            f"{'its' if len(zero) == 1 else 'their'} int8 scale is 1.0", CalibrationWarning, stacklevel=3)
    if constant:
        warnings.warn(
            f"calibration: {_names(constant, lambda n, v: f'{n!r} (= {v:g})')} "
            f"{'is' if len(constant) == 1 else 'are'} constant on all calibration data: the data does not exercise "
            f"{'it' if len(constant) == 1 else 'them'}; check that the calibration samples vary",
            CalibrationWarning, stacklevel=3)
    if clipped:
        clipped.sort(key=lambda t: -t[1])
        warnings.warn(
            f"calibration ({method}): the threshold of {_names(clipped, lambda n, s: f'{n!r} ({100 * s:.2g}%)')} "
            f"clips more than {100 * limit:g}% of its calibration values; the INT8 model may lose accuracy "
            f"(calibration_method='percentile' or 'minmax' clip less)", CalibrationWarning, stacklevel=3)
