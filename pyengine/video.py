"""Streaming video inference: frames in, results out.

    import pyengine, pyengine.video

    engine = pyengine.load("r2plus1d.plan")
    with pyengine.video.stream(engine, "input.mp4", clip=8, stride=4) as results:
        for r in results:                 # in order; r.index is the clip's first frame
            print(r.stream, r.index, r.timestamp, r.topk(3))
        print(results.stats())            # per stream: fps, latency p50/p90/p99, dropped

Sources (:func:`as_source`): a video file (decoded with PyAV, ``pip install av``
or ``pyengine[video]``), an OpenCV ``cv2.VideoCapture`` (anything with
``read()`` and ``get()``; its BGR frames are turned to RGB), or any iterable of
uint8 (H, W, 3) RGB frames (a generator, a list, an (N, H, W, 3) array).

What reaches the engine:

- An engine with in-engine preprocessing (``engine.preprocess`` is not None)
  gets the uint8 frames themselves: (N, H, W, 3) for 2-D models, clips
  (N, T, H, W, 3) for 3-D ones.
- Otherwise each frame goes through ``transform`` (uint8 (n, H, W, 3) RGB ->
  float (n, C, h, w)) once, however many clips it is part of, and clips are
  assembled from the transformed frames as (N, C, T, h, w). The default
  transform is :class:`FrameTransform` for the engine's input size: a plain
  numpy bilinear resize of the shorter side to fit, a center crop, x / 255
  and ImageNet mean / std.

The pipelined loop (the default) runs decode + transform + clip assembly in
one thread per stream and inference in another, over bounded queues; the
engine releases the GIL while it runs, so decoding overlaps inference. Samples
from several streams are batched together (up to ``max_batch``, waiting at
most ``max_wait`` seconds after the oldest one became ready); results come out
in order within each stream, tagged with the stream's name. An exception in a
decode thread (a corrupt file, a failing iterator) is raised by the consuming
loop once the results before it are out; closing the iterator (``close()``,
leaving the ``with`` block or breaking out of a for loop over it inside one)
stops the threads.
"""

from __future__ import annotations

import collections
import os
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .errors import BackendUnavailableError, DTypeError, InternalError, InvalidArgumentError, ShapeError

__all__ = ["VideoFile", "Capture", "Frames", "as_source", "FrameTransform", "default_transform",
           "ClipAssembler", "Result", "StreamStats", "VideoStream", "stream", "check_options", "write_video",
           "moving_shapes", "panning"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_CAP_PROP_POS_MSEC, _CAP_PROP_FPS, _CAP_PROP_FRAME_COUNT = 0, 5, 7  # OpenCV's property ids
_LATENCY_WINDOW = 10000  # latency percentiles cover a stream's most recent results (bounded memory)


# -- sources ------------------------------------------------------------------
class _Source:
    """A source yields (timestamp seconds or None, raw frame) from ``frames()``;
    ``to_array(raw)`` gives the uint8 (H, W, 3) RGB image. The two are split so
    that frames no clip needs are never converted."""

    name = "frames"
    frame_count = None   # total frames when the container says so, else None
    fps = None

    def frames(self):
        raise NotImplementedError

    def to_array(self, raw) -> np.ndarray:
        return np.asarray(raw)


class VideoFile(_Source):
    """A video file decoded with PyAV (FFmpeg).

    Timestamps are the frames' presentation times (pts x time base) in seconds.

    Args:
        path: the file.
        stream_index: which video stream of the container.
        thread_type: FFmpeg's decoder threading ("AUTO", "FRAME", "SLICE" or
            None for FFmpeg's default); "AUTO" lets the codec use its own threads.
    """

    def __init__(self, path, stream_index: int = 0, thread_type: str | None = "AUTO"):
        try:
            self.path = os.fspath(path)
        except TypeError:
            raise InvalidArgumentError(f"a video file path must be a str or os.PathLike, got "
                                       f"{type(path).__name__}") from None
        if not os.path.isfile(self.path):
            raise InvalidArgumentError(f"video file '{self.path}' does not exist")
        self.name = self.path
        self.stream_index, self.thread_type = stream_index, thread_type
        av = _import_av()
        try:
            with av.open(self.path) as container:
                streams = container.streams.video
                if stream_index >= len(streams):
                    raise InvalidArgumentError(f"video file '{self.path}' has {len(streams)} video streams; "
                                               f"stream_index {stream_index} does not exist")
                st = streams[stream_index]
                self.frame_count = int(st.frames) or None
                self.fps = float(st.average_rate) if st.average_rate else None
        except av.error.FFmpegError as exc:
            raise InvalidArgumentError(f"cannot read video file '{self.path}': {exc}") from None

    def frames(self):
        av = _import_av()
        container = av.open(self.path)
        try:
            st = container.streams.video[self.stream_index]
            if self.thread_type:
                st.thread_type = self.thread_type
            for frame in container.decode(st):
                yield frame.time, frame
        finally:
            container.close()

    def to_array(self, raw) -> np.ndarray:
        return raw.to_ndarray(format="rgb24")


class Capture(_Source):
    """An OpenCV ``cv2.VideoCapture`` (or any object with ``read() -> (ok,
    frame)`` and ``get(prop)``). The capture stays the caller's: it is not
    released here.

    Timestamps come from ``get(CAP_PROP_POS_MSEC)`` after each read; where the
    capture reports none (0 after the first frame, as some cameras do) they are
    index / ``CAP_PROP_FPS``, or None without a frame rate.

    Args:
        capture: the capture.
        bgr: the capture delivers BGR (OpenCV's order); frames are flipped to RGB.
        name: the stream's name in results.
    """

    def __init__(self, capture, bgr: bool = True, name: str = "capture"):
        if not (callable(getattr(capture, "read", None)) and callable(getattr(capture, "get", None))):
            raise InvalidArgumentError(f"a capture needs read() and get() (cv2.VideoCapture), got "
                                       f"{type(capture).__name__}")
        opened = getattr(capture, "isOpened", None)
        if callable(opened) and not opened():
            raise InvalidArgumentError(f"capture '{name}' is not opened (cv2.VideoCapture.isOpened() is False)")
        self.capture, self.bgr, self.name = capture, bgr, name
        fps = _float_or_none(capture.get(_CAP_PROP_FPS))
        self.fps = fps if fps and fps > 0 else None
        count = _float_or_none(capture.get(_CAP_PROP_FRAME_COUNT))
        self.frame_count = int(count) if count and count > 0 else None

    def frames(self):
        index = 0
        while True:
            ok, frame = self.capture.read()
            if not ok or frame is None:
                return
            ms = _float_or_none(self.capture.get(_CAP_PROP_POS_MSEC))
            if ms is not None and (ms > 0 or index == 0):
                ts = ms / 1000.0
            else:
                ts = index / self.fps if self.fps else None
            yield ts, frame
            index += 1

    def to_array(self, raw) -> np.ndarray:
        a = np.asarray(raw)
        if self.bgr and a.ndim == 3 and a.shape[2] == 3:
            a = a[..., ::-1]
        return a


class Frames(_Source):
    """Any iterable of uint8 (H, W, 3) RGB frames (or (H, W) grayscale, repeated
    to 3 channels). Timestamps are index / ``fps``, or None without ``fps``."""

    def __init__(self, frames, fps: float | None = None, name: str = "frames"):
        try:
            self._iterable = iter(frames) if not isinstance(frames, np.ndarray) else frames
        except TypeError:
            raise InvalidArgumentError(f"a frame source must be iterable, got {type(frames).__name__}") from None
        if isinstance(frames, np.ndarray) and frames.ndim not in (3, 4):
            raise ShapeError(f"an array of frames must be (N, H, W, 3) or (N, H, W), got shape {frames.shape}")
        self.frame_count = len(frames) if hasattr(frames, "__len__") else None
        self.fps, self.name = fps, name

    def frames(self):
        for i, f in enumerate(self._iterable):
            yield (i / self.fps if self.fps else None), f


def as_source(obj, name: str | None = None) -> _Source:
    """A source for a video file path, a cv2.VideoCapture-like object, an
    iterable of frames or an (N, H, W, 3) array (sources pass through)."""
    if isinstance(obj, _Source):
        src = obj
    elif isinstance(obj, (str, bytes, os.PathLike)):
        src = VideoFile(obj)
    elif callable(getattr(obj, "read", None)) and callable(getattr(obj, "get", None)):
        src = Capture(obj)
    else:
        src = Frames(obj)
    if name is not None:
        src.name = name
    return src


def _import_av():
    try:
        import av
    except ImportError:
        raise BackendUnavailableError("reading video files needs PyAV: pip install av "
                                      "(or pip install 'pyengine[video]')") from None
    return av


def _float_or_none(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _check_frame(a, stream, index) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != np.uint8:
        raise DTypeError(f"stream '{stream}' frame {index}: frames must be uint8 RGB, got {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ShapeError(f"stream '{stream}' frame {index}: frames must be (H, W, 3) RGB, got shape {a.shape}")
    return a


# -- the default transform ------------------------------------------------------
class FrameTransform:
    """uint8 (n, H, W, 3) RGB frames -> float32 (n, 3, h, w), in plain numpy.

    1. Bilinear resize (half-pixel centers, no antialiasing: torch's
       ``interpolate(mode="bilinear", align_corners=False)``) by one scale
       factor, the smallest that makes the image cover (h, w): the shorter
       side (relative to the target's aspect) fits.
    2. Center crop to (h, w).
    3. x / 255, then (x - mean) / std per channel.

    Args:
        size: (h, w) of the model input.
        mean, std: per channel, after scaling to [0, 1] (ImageNet's by default).
    """

    def __init__(self, size, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.size = (int(size[0]), int(size[1]))
        self.mean = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
        if self.mean.size != 3 or self.std.size != 3:
            raise InvalidArgumentError("FrameTransform: mean and std take 3 values (RGB)")
        if np.any(self.std == 0):
            raise InvalidArgumentError("FrameTransform: std must not contain zeros")
        self._grid = {}

    def _coords(self, in_h, in_w):
        key = (in_h, in_w)
        if key not in self._grid:
            oh, ow = self.size
            scale = max(oh / in_h, ow / in_w)
            rh, rw = max(oh, int(round(in_h * scale))), max(ow, int(round(in_w * scale)))
            top, left = (rh - oh) // 2, (rw - ow) // 2
            self._grid[key] = (_axis(in_h, rh, top, oh), _axis(in_w, rw, left, ow))
        return self._grid[key]

    def __call__(self, frames) -> np.ndarray:
        x = np.asarray(frames)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[3] != 3:
            raise ShapeError(f"FrameTransform takes (n, H, W, 3) RGB frames, got shape {x.shape}")
        (y0, y1, wy), (x0, x1, wx) = self._coords(x.shape[1], x.shape[2])
        a = x[:, y0].astype(np.float32)
        rows = a + (x[:, y1].astype(np.float32) - a) * wy[None, :, None, None]
        b = rows[:, :, x0]
        out = b + (rows[:, :, x1] - b) * wx[None, None, :, None]
        out = out.transpose(0, 3, 1, 2) * np.float32(1.0 / 255.0)
        return np.ascontiguousarray((out - self.mean) / self.std, dtype=np.float32)


def _axis(n_in, n_resized, offset, n_out):
    """Source indices and weights of output positions offset..offset+n_out of a
    bilinear resize n_in -> n_resized (half-pixel centers, edges clamped)."""
    dst = np.arange(offset, offset + n_out, dtype=np.float64)
    src = np.maximum((dst + 0.5) * (n_in / n_resized) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def default_transform(engine) -> FrameTransform:
    """The :class:`FrameTransform` for an engine's (N, 3, H, W) or (N, 3, T, H, W) float input."""
    layout = _layout(engine, None)
    return FrameTransform(layout.size)


# -- clips ----------------------------------------------------------------------
class ClipAssembler:
    """Groups a stream of frames (indices 0, 1, 2, ...) into clips.

    The clip that starts at frame s holds frames s, s + k, ..., s + (T - 1) k
    (T = ``length``, k = ``sample_rate``); clips start at 0, ``stride``,
    2 ``stride``, ... (strides count source frames). ``partial`` is the policy
    for the end of the stream:

    - "drop" (default): a clip that does not complete is not emitted.
    - "pad": one more clip, at the first start that did not complete, if it
      holds at least one frame; its missing frames repeat its last frame
      (``padded`` says how many). A stream shorter than one clip gives one
      padded clip.
    """

    def __init__(self, length: int, stride: int | None = None, sample_rate: int = 1, partial: str = "drop"):
        for what, v in (("clip length", length), ("stride", stride if stride is not None else 1),
                        ("sample_rate", sample_rate)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise InvalidArgumentError(f"{what} must be a positive integer, got {v!r}")
        if partial not in ("drop", "pad"):
            raise InvalidArgumentError(f"partial must be 'drop' or 'pad', got {partial!r}")
        self.length, self.sample_rate, self.partial = int(length), int(sample_rate), partial
        self.stride = int(stride) if stride is not None else self.length * self.sample_rate
        self.span = (self.length - 1) * self.sample_rate
        self._next = 0          # the first clip start not emitted yet
        self._buf = {}          # frame index -> item, for frames a pending clip needs

    def needed(self, index: int) -> bool:
        """Whether any clip (a complete one or the padded one) uses this frame."""
        k, s = self.sample_rate, self.stride
        lo = max(self._next, index - self.span)
        first = -(-lo // s) * s
        for start in range(first, index + 1, s):
            if (index - start) % k == 0:
                return True
        return False

    def push(self, index: int, item):
        """Adds frame ``index`` (every index in order; unneeded ones may be skipped).
        Returns the clips it completes: a list of (start, items, padded)."""
        if self.needed(index):
            self._buf[index] = item
        out = []
        while index >= self._next + self.span:
            start = self._next
            out.append((start, [self._buf[start + j * self.sample_rate] for j in range(self.length)], 0))
            self._next += self.stride
            self._buf = {i: v for i, v in self._buf.items() if i >= self._next}
        return out

    def finish(self):
        """The end of the stream: the padded clip under partial="pad", else nothing."""
        out = []
        if self.partial == "pad":
            items = []
            for j in range(self.length):
                v = self._buf.get(self._next + j * self.sample_rate)
                if v is None:
                    break
                items.append(v)
            if items:
                pad = self.length - len(items)
                out.append((self._next, items + [items[-1]] * pad, pad))
        self._buf = {}
        return out


# -- results and statistics -----------------------------------------------------
@dataclass
class Result:
    """One model output for one frame (2-D models) or one clip (3-D models).

    Attributes:
        stream: the stream's name (the file path, or the name given).
        index: source frame index of the frame, or the clip's first frame.
        timestamp: that frame's time in seconds (pts), or None where unknown.
        outputs: output name -> this sample's row of each output.
        latency: seconds from the arrival (decode) of the sample's last frame
            to the end of the engine run that produced this result.
        padded: frames repeated at the end of a padded clip (partial="pad").
    """

    stream: str
    index: int
    timestamp: float | None
    outputs: dict
    latency: float
    padded: int = 0

    @property
    def output(self) -> np.ndarray:
        """The first output's row."""
        return next(iter(self.outputs.values()))

    def topk(self, k: int = 5):
        """[(class, score)] of the first output, highest first."""
        row = np.asarray(self.output).reshape(-1)
        order = np.argsort(-row, kind="stable")[:k]
        return [(int(i), float(row[i])) for i in order]


@dataclass
class StreamStats:
    """Per-stream counters.

    Attributes:
        frames: frames decoded. samples: frames or clips made from them.
        results: samples that came out of the engine. dropped: samples dropped
            because the queue was full (realtime mode only).
        elapsed_s: from the stream's start to its last result.
        fps: frames / elapsed_s. latency_ms: p50, p90, p99 of arrival -> result
            (over the stream's last 10000 results).
    """

    name: str
    frames: int = 0
    samples: int = 0
    results: int = 0
    dropped: int = 0
    elapsed_s: float = 0.0
    fps: float = 0.0
    latency_ms: dict = field(default_factory=dict)


class _StreamState:
    def __init__(self, source):
        self.source = source
        self.name = source.name
        self.start = None
        self.last = None
        self.frames = self.samples = self.results = self.dropped = 0
        self.latencies = collections.deque(maxlen=_LATENCY_WINDOW)


class _Sample:
    __slots__ = ("stream", "index", "timestamp", "arrival", "ready", "x", "padded")

    def __init__(self, stream, index, timestamp, arrival, x, padded=0):
        self.stream, self.index, self.timestamp, self.arrival = stream, index, timestamp, arrival
        self.x, self.padded, self.ready = x, padded, arrival


class _End:
    __slots__ = ("stream",)

    def __init__(self, stream):
        self.stream = stream


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc):
        self.exc = exc


_DONE = object()


@dataclass
class _Layout:
    clips: bool            # 3-D model: clips (N, C, T, H, W) or (N, T, H, W, 3)
    length: int | None     # T, when the input has a static one
    size: tuple | None     # (H, W) of the float input
    uint8: bool            # the engine preprocesses: it takes uint8 frames
    input_name: str
    dtype: np.dtype
    bgr: bool = False      # the engine's Preprocess wants BGR frames (decoded frames are RGB)


def _layout(engine, transform) -> _Layout:
    inputs = getattr(engine, "inputs", None)
    if not inputs or len(inputs) != 1:
        names = [s.name for s in inputs or []]
        raise InvalidArgumentError(f"pyengine.video feeds models with one input; this one has {names}")
    spec = inputs[0]
    shape = spec.shape
    if shape is None:
        raise ShapeError(f"input '{spec.name}' has an unknown rank: pyengine.video needs (N, C, H, W) frames or "
                         "(N, C, T, H, W) clips")
    pre = getattr(engine, "preprocess", None)
    if pre is not None:
        # The engine takes uint8 frames (N, H, W, 3) or clips (N, T, H, W, 3),
        # in the color order its Preprocess declares; sources give RGB.
        color = getattr(pre, "color", "rgb")
        if color not in ("rgb", "bgr"):
            raise InvalidArgumentError(f"input '{spec.name}': the engine's Preprocess takes {color} frames; "
                                       "pyengine.video decodes to RGB (build the plan with color='rgb' or 'bgr')")
        clips = len(shape) == 5
        return _Layout(clips, shape[1] if clips else None, None, True, spec.name, np.dtype(np.uint8),
                       bgr=color == "bgr")
    if len(shape) not in (4, 5):
        raise ShapeError(f"input '{spec.name}' has shape {list(shape)}: pyengine.video needs (N, C, H, W) frames "
                         "or (N, C, T, H, W) clips")
    clips = len(shape) == 5
    size = tuple(shape[-2:])
    if transform is None and (None in size or shape[1] != 3):
        raise ShapeError(f"input '{spec.name}' has shape {list(shape)}: the default transform needs 3 channels and "
                         "a static height and width; pass transform=")
    return _Layout(clips, shape[2] if clips else None, size, False, spec.name, np.dtype(spec.dtype))


def check_options(engine, *, clip=None, stride=None, sample_rate=1, partial="drop", transform=None, max_batch=8,
                  max_wait=0.05, **_):
    """Validates :func:`stream`'s options for an engine (raises as stream would)."""
    _configure(engine, clip, stride, sample_rate, partial, transform, max_batch, max_wait)


def _configure(engine, clip, stride, sample_rate, partial, transform, max_batch, max_wait):
    """(layout, clip arguments or None, transform or None) for stream's options."""
    if transform is not None and not callable(transform):
        raise InvalidArgumentError(f"transform must be callable, got {type(transform).__name__}")
    if isinstance(max_batch, bool) or not isinstance(max_batch, (int, np.integer)) or max_batch < 1:
        raise InvalidArgumentError(f"max_batch must be a positive integer, got {max_batch!r}")
    if not isinstance(max_wait, (int, float)) or max_wait < 0:
        raise InvalidArgumentError(f"max_wait must be a number of seconds >= 0, got {max_wait!r}")
    layout = _layout(engine, transform)
    if layout.clips:
        length = clip if clip is not None else layout.length
        if length is None:
            raise InvalidArgumentError(f"input '{layout.input_name}' has a dynamic clip length: pass clip=")
        if layout.length is not None and length != layout.length:
            raise ShapeError(f"clip={length}, but input '{layout.input_name}' takes clips of "
                             f"{layout.length} frames")
        ClipAssembler(length, stride, sample_rate, partial)  # validates the arguments
        clip_args = (length, stride, sample_rate, partial)
    else:
        if clip is not None or stride is not None:
            raise InvalidArgumentError(f"clip/stride are for 3-D models; input '{layout.input_name}' "
                                       "takes single frames (N, C, H, W)")
        clip_args = None
    transform = None if layout.uint8 else (transform or FrameTransform(layout.size))
    return layout, clip_args, transform


# -- the loop ----------------------------------------------------------------------
class VideoStream:
    """An iterator of :class:`Result` over one or several sources; see
    :func:`stream` for the arguments.

    ``close()`` (or leaving a ``with`` block) stops its threads; so does
    dropping the last reference to it (the threads hold only its inner loop),
    e.g. breaking out of ``for r in pyengine.video.stream(...)``.
    """

    def __init__(self, engine, sources, **options):
        self._loop = _Loop(engine, sources, **options)

    @property
    def layout(self):
        return self._loop.layout

    @property
    def transform(self):
        """The transform in use (None when the engine preprocesses)."""
        return self._loop.transform

    def __iter__(self):
        return self

    def __next__(self) -> Result:
        return self._loop.next()

    def close(self) -> None:
        """Stops the threads (decode threads stop at their next frame) and frees the queues."""
        self._loop.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        loop = getattr(self, "_loop", None)
        if loop is not None:
            try:
                loop.close()
            except Exception:  # interpreter shutdown: nothing left to stop
                pass

    def stats(self) -> dict:
        """stream name -> :class:`StreamStats` (so far)."""
        return self._loop.stats()


class _Loop:
    """The state VideoStream's threads share (they never reference the VideoStream)."""

    def __init__(self, engine, sources, *, clip=None, stride=None, sample_rate=1, partial="drop", transform=None,
                 max_batch=8, max_wait=0.05, queue_size=None, realtime=False, pipelined=True):
        self.engine = engine
        self.layout, self._clip_args, self.transform = _configure(engine, clip, stride, sample_rate, partial,
                                                                  transform, max_batch, max_wait)
        self.max_batch, self.max_wait, self.realtime = int(max_batch), float(max_wait), bool(realtime)
        self._streams = [_StreamState(s) for s in sources]
        if not self._streams:
            raise InvalidArgumentError("no sources given")
        names = [s.name for s in self._streams]
        if len(set(names)) != len(names):
            raise InvalidArgumentError(f"stream names must differ, got {names}: pass a dict name -> source")
        self._buffer = collections.deque()
        self._finished = False
        self._closed = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        self._pipelined = bool(pipelined)
        if self._pipelined:
            size = queue_size or 2 * self.max_batch
            self._q = queue.Queue(maxsize=size)
            self._out = queue.Queue(maxsize=4)
            for s in self._streams:
                self._threads.append(threading.Thread(target=self._decode_worker, args=(s,), daemon=True,
                                                      name=f"pyengine-video-decode:{s.name}"))
            self._infer = threading.Thread(target=self._infer_worker, daemon=True, name="pyengine-video-infer")
            self._threads.append(self._infer)
            for t in self._threads:
                t.start()
        else:
            self._gen = self._sequential()

    # -- producing samples (decode thread, or the caller in sequential mode) ---
    def _samples(self, s: _StreamState):
        """Frames of one source -> samples (frames or clips) ready for the engine."""
        src = s.source
        asm = ClipAssembler(*self._clip_args) if self._clip_args else None
        s.start = time.perf_counter()
        it = src.frames()
        try:
            index = 0
            last_ts = {}
            for ts, raw in it:
                arrival = time.perf_counter()
                s.frames += 1
                if asm is None or asm.needed(index):
                    img = _check_frame(src.to_array(raw), s.name, index)
                    if self.transform is not None:
                        x = self._apply(img, s.name, index)
                    else:
                        x = img[..., ::-1] if self.layout.bgr else img
                    if asm is None:
                        yield _Sample(s, index, ts, arrival, x)
                    else:
                        last_ts[index] = ts
                        for start, items, pad in asm.push(index, x):
                            yield self._clip(s, start, last_ts, items, arrival, pad)
                            last_ts = {i: t for i, t in last_ts.items() if i >= asm._next}
                else:
                    asm.push(index, None)
                index += 1
                if self._stop.is_set():
                    return
            if asm is not None:
                for start, items, pad in asm.finish():
                    yield self._clip(s, start, last_ts, items, time.perf_counter(), pad)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def _clip(self, s, start, timestamps, items, arrival, pad):
        axis = 0 if self.transform is None else 1  # (T, H, W, 3) or (C, T, h, w)
        return _Sample(s, start, timestamps.get(start), arrival, np.stack(items, axis=axis), pad)

    def _apply(self, img, stream, index):
        y = np.asarray(self.transform(img[None]))
        if y.ndim != 4 or y.shape[0] != 1:
            raise ShapeError(f"stream '{stream}' frame {index}: transform must map (1, H, W, 3) frames to "
                             f"(1, C, H, W), got shape {y.shape}")
        return y[0]

    # -- running batches --------------------------------------------------------
    def _run_batch(self, batch):
        """Runs samples (grouped by shape, in order) and returns their Results."""
        results = [None] * len(batch)
        groups = {}
        for i, smp in enumerate(batch):
            groups.setdefault(smp.x.shape, []).append(i)
        for idx in groups.values():
            x = np.stack([batch[i].x for i in idx])
            if x.dtype != self.layout.dtype:
                x = x.astype(self.layout.dtype)
            outs = self.engine.run({self.layout.input_name: x})
            done = time.perf_counter()
            for j, i in enumerate(idx):
                smp = batch[i]
                results[i] = Result(smp.stream.name, smp.index, smp.timestamp,
                                    {name: v[j] for name, v in outs.items()}, done - smp.arrival, smp.padded)
        with self._lock:
            for smp, r in zip(batch, results):
                s = smp.stream
                s.results += 1
                s.latencies.append(r.latency)
                s.last = r.latency + smp.arrival
        return results

    def _sequential(self):
        """Decode, transform and run in the calling thread (round robin over streams)."""
        gens = [self._samples(s) for s in self._streams]
        try:
            while gens:
                batch = []
                for g in list(gens):
                    try:
                        smp = next(g)
                    except StopIteration:
                        gens.remove(g)
                        continue
                    smp.stream.samples += 1
                    batch.append(smp)
                    if len(batch) == self.max_batch:
                        yield from self._run_batch(batch)
                        batch = []
                if batch:
                    yield from self._run_batch(batch)
        finally:
            for g in gens:
                g.close()

    # -- the threads ---------------------------------------------------------------
    def _put(self, q, item) -> bool:
        while not self._stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def _decode_worker(self, s):
        samples = self._samples(s)
        try:
            for smp in samples:
                smp.ready = time.perf_counter()
                s.samples += 1
                if self.realtime:
                    try:
                        self._q.put_nowait(smp)
                    except queue.Full:
                        with self._lock:
                            s.dropped += 1
                elif not self._put(self._q, smp):
                    return
            self._put(self._q, _End(s))
        except BaseException as exc:  # noqa: B902 -- handed to the consumer
            _note(exc, f"pyengine.video: raised while reading stream '{s.name}'")
            self._put(self._q, _Failure(exc))
        finally:
            samples.close()  # closes the source (a PyAV container) in this thread

    def _infer_worker(self):
        pending = None
        ended = 0
        try:
            while not self._stop.is_set():
                if ended == len(self._streams):
                    self._put(self._out, _DONE)
                    return
                item = pending if pending is not None else self._get(self._q)
                pending = None
                if item is None:
                    return
                if isinstance(item, _End):
                    ended += 1
                    continue
                if isinstance(item, _Failure):
                    self._put(self._out, item)
                    return
                batch = [item]
                deadline = item.ready + self.max_wait
                while len(batch) < self.max_batch and ended < len(self._streams):
                    wait = deadline - time.perf_counter()
                    try:
                        nxt = self._q.get_nowait() if wait <= 0 else self._q.get(timeout=wait)
                    except queue.Empty:
                        break
                    if isinstance(nxt, _Sample):
                        batch.append(nxt)
                    elif isinstance(nxt, _End):
                        ended += 1
                    else:
                        pending = nxt
                        break
                if not self._put(self._out, self._run_batch(batch)):
                    return
        except BaseException as exc:  # noqa: B902
            _note(exc, "pyengine.video: raised while running the engine")
            self._put(self._out, _Failure(exc))

    def _get(self, q):
        while not self._stop.is_set():
            try:
                return q.get(timeout=0.05)
            except queue.Empty:
                pass
        return None

    # -- the consumer side ------------------------------------------------------------
    def next(self) -> Result:
        if not self._pipelined:
            if self._closed:
                raise StopIteration
            try:
                return next(self._gen)
            except BaseException:
                self.close()
                raise
        while not self._buffer:
            if self._finished or self._closed:
                raise StopIteration
            item = self._next_out()
            if item is _DONE:
                self._finished = True
                self.close()
                raise StopIteration
            if isinstance(item, _Failure):
                self._finished = True
                self.close()
                raise item.exc
            self._buffer.extend(item)
        return self._buffer.popleft()

    def _next_out(self):
        while True:
            try:
                return self._out.get(timeout=0.1)
            except queue.Empty:
                if not self._infer.is_alive() and self._out.empty():
                    self.close()
                    raise InternalError("pyengine.video: the inference thread ended without a result") from None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._buffer.clear()
        if not self._pipelined:
            self._gen.close()
            return
        for q in (self._q, self._out):
            try:
                while True:
                    q.get_nowait()
            except queue.Empty:
                pass
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=5.0)

    def stats(self) -> dict:
        out = {}
        with self._lock:
            for s in self._streams:
                elapsed = (s.last - s.start) if s.last is not None and s.start is not None else 0.0
                lat = np.asarray(s.latencies) * 1e3
                pct = ({f"p{p}": float(np.percentile(lat, p)) for p in (50, 90, 99)} if lat.size else {})
                out[s.name] = StreamStats(s.name, s.frames, s.samples, s.results, s.dropped, elapsed,
                                          s.frames / elapsed if elapsed > 0 else 0.0, pct)
        return out


def _note(exc, text):
    add = getattr(exc, "add_note", None)
    if add is not None:
        add(text)


def stream(engine, source, *, clip=None, stride=None, sample_rate=1, partial="drop", transform=None,
           max_batch=8, max_wait=0.05, queue_size=None, realtime=False, pipelined=True) -> VideoStream:
    """Runs an engine over video: returns an iterator of :class:`Result`.

    Args:
        engine: a pyengine engine with one input: (N, C, H, W) frames (2-D
            models: one result per frame) or (N, C, T, H, W) clips (3-D models:
            one result per clip); or an engine with ``engine.preprocess`` set,
            fed uint8 (N, H, W, 3) frames or (N, T, H, W, 3) clips.
        source: one source (a video file path, a cv2.VideoCapture, an iterable
            of uint8 (H, W, 3) RGB frames, a :class:`VideoFile` / :class:`Capture`
            / :class:`Frames`), or several: a dict name -> source, or a list or
            tuple of paths / captures / sources. Several streams are batched
            together into one engine; results carry the stream's name (the
            dict key, the file path, or "capture" / "frames" + position).
        clip: frames per clip T (3-D models; default: the input's T).
        stride: source frames between clip starts (default: clip x sample_rate,
            clips that neither overlap nor leave gaps).
        sample_rate: take every k-th frame into a clip.
        partial: the stream's last incomplete clip: "drop" or "pad" (see
            :class:`ClipAssembler`).
        transform: uint8 (n, H, W, 3) RGB -> float (n, C, h, w), applied once
            per frame (default :class:`FrameTransform` to the input's size);
            not used when the engine has ``preprocess``.
        max_batch: the largest batch run at once (samples from every stream).
        max_wait: seconds a batch may wait for more samples, counted from the
            moment its oldest sample was ready (the latency budget).
        queue_size: bound of the decode -> inference queue (default 2 x max_batch).
        realtime: drop samples when that queue is full instead of waiting (for
            live sources: results stay current; ``stats()`` counts the drops).
        pipelined: False runs decode, transform and inference one after another
            in the calling thread (the reference the pipelined loop is measured
            against; same results).
    """
    return VideoStream(engine, _sources(source), clip=clip, stride=stride, sample_rate=sample_rate,
                       partial=partial, transform=transform, max_batch=max_batch, max_wait=max_wait,
                       queue_size=queue_size, realtime=realtime, pipelined=pipelined)


def _sources(source):
    if isinstance(source, dict):
        return [as_source(v, name=str(k)) for k, v in source.items()]
    if isinstance(source, (list, tuple)) and source and all(
            isinstance(s, (str, bytes, os.PathLike, _Source)) or
            (callable(getattr(s, "read", None)) and callable(getattr(s, "get", None))) for s in source):
        srcs = [as_source(s) for s in source]
        for i, s in enumerate(srcs):
            if not isinstance(source[i], (str, bytes, os.PathLike, _Source)):
                s.name = f"{s.name}{i}"
        seen = collections.Counter()
        for i, s in enumerate(srcs):  # the same file twice: "a.mp4" and "a.mp4#1"
            seen[s.name] += 1
            if seen[s.name] > 1:
                s.name = f"{s.name}#{seen[s.name] - 1}"
        return srcs
    return [as_source(source)]


# -- writing test videos ------------------------------------------------------------
def write_video(path, frames, fps: int = 25, codec: str = "mpeg4", bit_rate: int = 2_000_000) -> str:
    """Encodes uint8 (H, W, 3) RGB frames (even H and W) with PyAV; returns the path.

    The default codec, FFmpeg's own MPEG-4 part 2 encoder, needs no GPL library."""
    av = _import_av()
    path = os.fspath(path)
    with av.open(path, mode="w") as container:
        st = None
        for img in frames:
            img = np.ascontiguousarray(img, dtype=np.uint8)
            if st is None:
                st = container.add_stream(codec, rate=fps)
                st.height, st.width = img.shape[:2]
                st.pix_fmt = "yuv420p"
                st.bit_rate = bit_rate
            for packet in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        if st is None:
            raise InvalidArgumentError("write_video: no frames")
        for packet in st.encode():
            container.mux(packet)
    return path


def moving_shapes(count: int, height: int = 96, width: int = 128, seed: int = 0):
    """``count`` RGB frames: a square and a disc moving over a gradient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1),
                     np.full_like(xx, 96)], axis=-1).astype(np.uint8)
    color_a, color_b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    side, radius = max(4, height // 4), max(3, height // 6)
    for t in range(count):
        img = base.copy()
        x0 = (t * 3) % max(width - side, 1)
        y0 = (height - side) // 2 + int((height // 4) * np.sin(t / 5))
        img[max(y0, 0):y0 + side, x0:x0 + side] = color_a
        cy, cx = height // 2 + int((height // 3) * np.cos(t / 7)), width - 1 - (t * 2) % width
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = color_b
        yield img


def panning(image: np.ndarray, count: int, height: int, width: int, step: int = 3):
    """``count`` (height, width) crops of an RGB picture, panning right and down by ``step`` px a frame."""
    image = np.asarray(image, dtype=np.uint8)
    h, w = image.shape[:2]
    if h < height or w < width:
        raise ShapeError(f"panning: the picture {image.shape[:2]} is smaller than the crop ({height}, {width})")
    for t in range(count):
        top = (t * step // 2) % (h - height + 1)
        left = (t * step) % (w - width + 1)
        yield image[top:top + height, left:left + width]
