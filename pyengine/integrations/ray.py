"""Ray Data batch inference: a callable class for ``Dataset.map_batches``.

Ray Data does the scale-out (reading files, sharding, a pool of actors,
writing Parquet); pyengine only runs numpy batches. Each actor builds or loads
the engine once, in ``__init__``, and then runs every batch it is given::

    import ray
    from pyengine.integrations.ray import PyengineMapper, ImagePreprocess

    ds = ray.data.read_images("images/", size=(64, 64), mode="RGB", include_paths=True)
    preds = ds.map_batches(
        PyengineMapper,
        fn_constructor_kwargs={"model": "resnet.plan", "preprocess": ImagePreprocess()},
        concurrency=2, batch_size=32, batch_format="numpy")
    preds.write_parquet("predictions/")

Images are (N, C, H, W) batches, clips for 3-D models (N, C, T, H, W); the
rank must match the engine's input. This module does not import ray: the
mappers are plain classes (they run on a dict of numpy arrays, with or without
Ray), so ``pip install pyengine[ray]`` is needed only for the Dataset side.

A folder of videos goes through :class:`VideoMapper`: a column of file paths
in, one row per clip (3-D models) or frame (2-D models) out, decoded, cut into
clips and run by :mod:`pyengine.video`::

    paths = sorted(glob.glob("videos/*.mp4"))
    ds = ray.data.from_items([{"path": p} for p in paths])
    preds = ds.map_batches(VideoMapper, fn_constructor_kwargs={"model": "r2plus1d.plan", "stride": 4},
                           concurrency=2, batch_size=1, batch_format="numpy")
    preds.write_parquet("video_predictions/")    # path, index, timestamp, logits, class
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import InvalidArgumentError, ShapeError

__all__ = ["ImagePreprocess", "PyengineMapper", "VideoMapper"]


class ImagePreprocess:
    """Turns Ray's image column into the engine's float input.

    ``ray.data.read_images`` gives (N, H, W, C) uint8 batches (or a list of
    (H, W, C) arrays when sizes differ). Each image is scaled to [0, 1],
    normalized per channel with ``(x - mean) / std`` and transposed to
    (N, C, H, W) float32. Resizing is left to ``read_images(size=...)``;
    images of different sizes raise ShapeError.

    Args:
        mean, std: per-channel normalization after scaling to [0, 1].
        scale: the divisor that maps pixel values to [0, 1] (255 for uint8).
    """

    def __init__(self, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), scale: float = 255.0):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1)
        if self.mean.size != self.std.size:
            raise InvalidArgumentError(f"mean has {self.mean.size} values but std has {self.std.size}")
        if np.any(self.std == 0):
            raise InvalidArgumentError("std must not contain zeros")
        self.scale = float(scale)

    def __call__(self, images) -> np.ndarray:
        x = _stack(images, "image")
        if x.ndim == 3:  # grayscale (N, H, W)
            x = x[..., None]
        if x.ndim != 4:
            raise ShapeError(f"ImagePreprocess expects (N, H, W, C) images, got shape {x.shape}")
        channels = x.shape[-1]
        if self.mean.size not in (1, channels):
            raise ShapeError(f"images have {channels} channels but mean/std have {self.mean.size} values")
        x = (x.astype(np.float32) / np.float32(self.scale) - self.mean) / self.std
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _stack(column, name) -> np.ndarray:
    """A batch column as one array (Ray hands a list / object array for ragged data)."""
    if isinstance(column, np.ndarray) and column.dtype != object:
        return column
    items = [np.asarray(v) for v in column]
    shapes = {v.shape for v in items}
    if len(shapes) > 1:
        raise ShapeError(f"column '{name}' holds arrays of different shapes {sorted(shapes)[:4]}: resize them to "
                         f"one size first (e.g. ray.data.read_images(..., size=(H, W)))")
    return np.stack(items) if items else np.zeros((0,), np.float32)


def _open_engine(model, num_threads, build_options):
    import pyengine

    if hasattr(model, "graph"):  # onnx.ModelProto
        return pyengine.build(model, backend="cpu", num_threads=num_threads, **build_options)
    try:
        path = os.fspath(model)
    except TypeError:
        raise InvalidArgumentError(
            f"model must be a plan file, an .onnx file or an onnx.ModelProto, got {type(model).__name__}") from None
    if path.lower().endswith(".onnx"):
        return pyengine.build(path, backend="cpu", num_threads=num_threads, **build_options)
    if build_options:
        raise InvalidArgumentError(f"'{path}' is loaded as a plan file: build options {sorted(build_options)} "
                                   "apply to .onnx models only")
    return pyengine.load(path, num_threads=num_threads)


class PyengineMapper:
    """A ``map_batches`` class that runs a pyengine engine on numpy batches.

    The engine is built (from ONNX) or loaded (a plan file) once per actor, in
    the constructor; Ray passes the constructor's arguments with
    ``fn_constructor_kwargs``. Each call takes a batch (dict of column name ->
    numpy array, ``batch_format="numpy"``), runs ``preprocess`` on the input
    column, runs the engine on the whole batch and returns the batch's other
    columns (e.g. "path") plus the output column (``output_column``, one row
    of logits per sample) and its top-1 class (``class_column``).

    Args:
        model: a plan file (``engine.save``), an .onnx file or an
            ``onnx.ModelProto`` (built here with the CPU backend and
            ``build_options``, e.g. ``precision="int8"``,
            ``calibration_cache=...``).
        column: the batch column holding the input ("image" is what
            ``ray.data.read_images`` writes).
        input_name: the engine input it feeds (default: the engine's only input).
        output_name: the engine output to return (default: its first output).
        output_column: the name of the logits column.
        class_column: the name of the top-1 class column, or None for none.
        preprocess: a callable from the input column (numpy) to the engine's
            input array, e.g. :class:`ImagePreprocess`; None feeds the column
            as it is (it must already be float32 (N, C, H, W), or
            (N, C, T, H, W) for 3-D models).
        keep_input: also return the input column (off: Parquet files of
            predictions stay small).
        num_threads: CPU threads per actor (1 with one actor per core).
        build_options: passed to :func:`pyengine.build` for ONNX models.
    """

    def __init__(self, model, column: str = "image", input_name: str | None = None,
                 output_name: str | None = None, output_column: str = "logits",
                 class_column: str | None = "class", preprocess=None, keep_input: bool = False,
                 num_threads: int = 1, build_options: dict | None = None):
        if preprocess is not None and not callable(preprocess):
            raise InvalidArgumentError(f"preprocess must be callable, got {type(preprocess).__name__}")
        self.engine = _open_engine(model, num_threads, dict(build_options or {}))
        inputs = [s.name for s in self.engine.inputs]
        outputs = [s.name for s in self.engine.outputs]
        if len(inputs) != 1:
            raise InvalidArgumentError(f"PyengineMapper feeds one input; the model has {inputs}")
        if input_name is None:
            input_name = inputs[0]
        elif input_name not in inputs:
            raise InvalidArgumentError(f"input_name '{input_name}' is not an input of the model {inputs}")
        if output_name is None:
            output_name = outputs[0]
        elif output_name not in outputs:
            raise InvalidArgumentError(f"output_name '{output_name}' is not an output of the model {outputs}")
        self.column, self.input_name, self.output_name = column, input_name, output_name
        self.output_column, self.class_column = output_column, class_column
        self.preprocess, self.keep_input = preprocess, keep_input
        spec = self.engine.inputs[0]
        self._rank = None if spec.shape is None else len(spec.shape)
        self._dtype = spec.dtype

    def __call__(self, batch: dict) -> dict:
        if self.column not in batch:
            raise InvalidArgumentError(f"the batch has no column '{self.column}' (it has {sorted(batch)}); "
                                       f"pass column= to name the input column")
        x = batch[self.column]
        x = self.preprocess(x) if self.preprocess is not None else _stack(x, self.column)
        x = np.ascontiguousarray(x, dtype=self._dtype)
        if self._rank is not None and x.ndim != self._rank:
            what = "(N, C, T, H, W) clips" if self._rank == 5 else "(N, C, H, W) images" if self._rank == 4 \
                else f"rank-{self._rank} arrays"
            raise ShapeError(f"column '{self.column}' gives a batch of shape {x.shape} for input "
                             f"'{self.input_name}', which takes {what}; pass preprocess= to convert it")
        y = self.engine.run({self.input_name: x})[self.output_name]
        out = {k: v for k, v in batch.items() if k != self.column or self.keep_input}
        out[self.output_column] = y
        if self.class_column is not None:
            out[self.class_column] = y.reshape(len(y), -1).argmax(axis=1).astype(np.int64)
        return out


class VideoMapper:
    """A ``map_batches`` class that runs a pyengine engine over video files.

    Each call takes a batch whose ``column`` holds video file paths, streams
    each file through :func:`pyengine.video.stream` (PyAV decoding, clip
    assembly, the default or given transform, batched inference) and returns
    one row per result: ``path``, ``index`` (the clip's first frame, or the
    frame), ``timestamp`` (seconds; NaN where the file has none), the output
    column and the top-1 class. The batch's other columns are repeated on
    each of their file's rows. The engine is built or loaded once per actor.

    Args:
        model: a plan file, an .onnx file or an ``onnx.ModelProto`` (as
            :class:`PyengineMapper`).
        column: the column of video paths.
        clip, stride, sample_rate, partial, transform, max_batch, pipelined:
            as in :func:`pyengine.video.stream`.
        output_column, class_column: names of the logits and top-1 columns
            (class_column None: no class column).
        num_threads: CPU threads per actor.
        build_options: passed to :func:`pyengine.build` for ONNX models.
    """

    def __init__(self, model, column: str = "path", clip: int | None = None, stride: int | None = None,
                 sample_rate: int = 1, partial: str = "drop", transform=None, max_batch: int = 8,
                 pipelined: bool = True, output_column: str = "logits", class_column: str | None = "class",
                 num_threads: int = 1, build_options: dict | None = None):
        from .. import video

        self.engine = _open_engine(model, num_threads, dict(build_options or {}))
        self.options = dict(clip=clip, stride=stride, sample_rate=sample_rate, partial=partial,
                            transform=transform, max_batch=max_batch, pipelined=pipelined)
        video.check_options(self.engine, **self.options)  # bad options fail here, once per actor
        self.column, self.output_column, self.class_column = column, output_column, class_column
        out = self.engine.outputs[0]
        self._row_shape = tuple(1 if d is None else d for d in (out.shape or (None, 1))[1:])

    def __call__(self, batch: dict) -> dict:
        from .. import video

        if self.column not in batch:
            raise InvalidArgumentError(f"the batch has no column '{self.column}' (it has {sorted(batch)}); "
                                       f"pass column= to name the column of video paths")
        paths, index, stamps, rows, counts = [], [], [], [], []
        for p in batch[self.column]:
            path = p.decode() if isinstance(p, bytes) else str(p)
            n = 0
            with video.stream(self.engine, path, **self.options) as results:
                for r in results:
                    paths.append(path)
                    index.append(r.index)
                    stamps.append(np.nan if r.timestamp is None else r.timestamp)
                    rows.append(r.output)
                    n += 1
            counts.append(n)
        logits = np.stack(rows) if rows else np.zeros((0,) + self._row_shape, np.float32)
        out = {k: np.repeat(np.asarray(v), counts, axis=0) for k, v in batch.items() if k != self.column}
        out.update({"path": np.asarray(paths, dtype=object), "index": np.asarray(index, np.int64),
                    "timestamp": np.asarray(stamps, np.float64), self.output_column: logits})
        if self.class_column is not None:
            flat = logits.reshape(len(logits), int(np.prod(logits.shape[1:])))
            out[self.class_column] = flat.argmax(axis=1).astype(np.int64) if len(flat) else np.zeros(0, np.int64)
        return out
