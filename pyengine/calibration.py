"""Calibration data sources for INT8 builds.

``calibration_data`` (and ``validation_data``) may be:

- a numpy array shaped like the model's single input, (N, ...): split into
  batches of ``batch_size`` along the first axis (one sample without the batch
  axis is a batch of one);
- an iterable of batches: numpy arrays (single-input models), dicts
  {input name: array}, or (inputs, label) tuples as data loaders yield them
  (the first element is used);
- a path to a folder of ``.npy`` files (each one sample or one batch, sorted
  by name) or ``.npz`` files (each a dict of input arrays), or to one ``.npy``
  file;
- an :class:`ImageFolder`: a folder of images with a declared preprocessing
  (resize, center crop, mean/std, NCHW or NHWC), read with Pillow.

Every batch is checked: known dimensions must match the model, and NaN or Inf
values raise :class:`pyengine.CalibrationError` naming the batch index.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from .errors import CalibrationError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True)
class InputSpec:
    """A model input: name, numpy dtype, shape (None for unknown dims)."""

    name: str
    dtype: np.dtype
    shape: tuple | None


def input_specs(graph) -> list[InputSpec]:
    """The InputSpecs of a ``pyengine._core.Graph``."""
    from .engine import numpy_dtype

    specs = []
    for name, code, shape in graph.inputs():
        dims = None if shape is None else tuple(None if d < 0 else int(d) for d in shape)
        specs.append(InputSpec(name, numpy_dtype(code), dims))
    return specs


class ImageFolder:
    """A folder of images as calibration data, with a declared preprocessing.

    Each image is converted to RGB (or L with ``grayscale=True``), its shorter
    side resized to ``resize`` (bilinear), center-cropped to ``crop``, scaled
    to [0, 1], normalized with ``(x - mean) / std`` per channel, and laid out
    as ``layout`` ("NCHW" or "NHWC"). Files are read in sorted name order, so
    calibration is reproducible.

    Example (torchvision's ImageNet evaluation transform)::

        ImageFolder("calib/", resize=256, crop=224,
                    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

    Args:
        path: folder with image files (searched recursively).
        resize: target of the shorter side (int), an exact (height, width), or None.
        crop: center crop size, int or (height, width), or None.
        mean, std: per-channel normalization applied after scaling to [0, 1].
        layout: "NCHW" or "NHWC".
        grayscale: read images as one channel.
        batch_size: images per batch.
        limit: use at most this many images.
    """

    def __init__(self, path, resize=None, crop=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                 layout: str = "NCHW", grayscale: bool = False, batch_size: int = DEFAULT_BATCH_SIZE,
                 limit: int | None = None):
        self.path = os.fspath(path)
        if not os.path.isdir(self.path):
            raise CalibrationError(f"image folder '{self.path}' does not exist")
        if layout not in ("NCHW", "NHWC"):
            raise CalibrationError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
        if batch_size < 1:
            raise CalibrationError(f"batch_size must be at least 1, got {batch_size}")
        self.resize, self.crop = resize, crop
        channels = 1 if grayscale else 3
        self.mean = np.broadcast_to(np.asarray(mean, dtype=np.float32).reshape(-1), (channels,)).copy() \
            if np.size(mean) in (1, channels) else None
        self.std = np.broadcast_to(np.asarray(std, dtype=np.float32).reshape(-1), (channels,)).copy() \
            if np.size(std) in (1, channels) else None
        if self.mean is None or self.std is None:
            raise CalibrationError(f"mean and std need 1 or {channels} values")
        if np.any(self.std == 0):
            raise CalibrationError("std must not contain zeros")
        self.layout, self.grayscale = layout, grayscale
        self.batch_size, self.limit = batch_size, limit
        self.files = _list_files(self.path, IMAGE_EXTENSIONS)
        if limit is not None:
            self.files = self.files[:limit]
        if not self.files:
            raise CalibrationError(f"image folder '{self.path}' has no images ({', '.join(IMAGE_EXTENSIONS)})")

    def __len__(self) -> int:
        return (len(self.files) + self.batch_size - 1) // self.batch_size

    def load(self, file) -> np.ndarray:
        """One preprocessed image, (C, H, W) or (H, W, C) float32."""
        try:
            from PIL import Image
        except ImportError:
            raise CalibrationError(
                "reading calibration images needs Pillow (pip install Pillow); "
                "or pass preprocessed arrays / a folder of .npy files") from None
        try:
            with Image.open(file) as img:
                img = img.convert("L" if self.grayscale else "RGB")
                if self.resize is not None:
                    img = img.resize(_resized_size(img.size, self.resize), Image.BILINEAR)
                if self.crop is not None:
                    ch, cw = (self.crop, self.crop) if isinstance(self.crop, int) else self.crop
                    w, h = img.size
                    if ch > h or cw > w:
                        raise CalibrationError(
                            f"image '{file}' ({w}x{h} after resize) is smaller than the crop {cw}x{ch}")
                    left, top = (w - cw) // 2, (h - ch) // 2
                    img = img.crop((left, top, left + cw, top + ch))
                x = np.asarray(img, dtype=np.float32) / 255.0
        except CalibrationError:
            raise
        except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError ... by format
            raise CalibrationError(f"cannot read calibration image '{file}': {_image_error(exc)}") from None
        if x.ndim == 2:
            x = x[:, :, None]
        x = (x - self.mean) / self.std
        return np.ascontiguousarray(x.transpose(2, 0, 1) if self.layout == "NCHW" else x)

    def __iter__(self) -> Iterator[np.ndarray]:
        for start in range(0, len(self.files), self.batch_size):
            files = self.files[start:start + self.batch_size]
            images = [self.load(f) for f in files]
            for f, x in zip(files, images):
                if x.shape != images[0].shape:
                    raise CalibrationError(
                        f"image '{f}' is {_hw(x, self.layout)} after preprocessing but '{files[0]}' is "
                        f"{_hw(images[0], self.layout)}: pass resize= and crop= so that every image has one size")
            yield np.stack(images)


def _hw(x, layout):
    h, w = x.shape[1:] if layout == "NCHW" else x.shape[:2]
    return f"{w}x{h}"


def _image_error(exc) -> str:
    """A short reason for a Pillow failure (Pillow's own messages vary by
    format and version)."""
    try:
        from PIL import Image

        if isinstance(exc, Image.UnidentifiedImageError):
            return "not an image file Pillow can read"
        if isinstance(exc, Image.DecompressionBombError):
            return "too many pixels (Pillow's decompression bomb limit)"
    except ImportError:
        pass
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"truncated or corrupt image data ({type(exc).__name__})"


def _resized_size(size, resize):
    w, h = size
    if isinstance(resize, int):
        if w <= h:
            return resize, max(1, round(h * resize / w))
        return max(1, round(w * resize / h)), resize
    rh, rw = resize
    return rw, rh


def _list_files(folder, extensions):
    found = []
    for root, _, files in os.walk(folder):
        for f in files:
            if f.lower().endswith(extensions):
                found.append(os.path.join(root, f))
    return sorted(found)


class NpyFolder:
    """A folder of .npy files (each one sample or one batch) or .npz files
    (each a dict of input arrays), read in sorted name order."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.files = _list_files(self.path, (".npy", ".npz"))
        if not self.files:
            raise CalibrationError(f"folder '{self.path}' has no .npy or .npz files")

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self):
        for f in self.files:
            yield load_arrays(f)


def load_arrays(path, error=CalibrationError):
    """Reads a .npy (an array) or .npz (a dict of arrays) file without ever
    unpickling (unpickling runs code from the file). Every failure raises
    ``error`` (a PyengineError class) naming the file; numpy's messages,
    pickle ones included, stay inside."""
    import tokenize
    import zipfile

    path = os.fspath(path)
    bad = f"cannot read calibration file '{path}': not a valid .npy/.npz file (bad header or truncated)"
    pickled = (f"calibration file '{path}' holds pickled Python objects, which pyengine does not load; "
               f"save numeric arrays with numpy.save / numpy.savez")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as exc:
        raise error(f"cannot read calibration file '{path}': {exc.strerror or exc}") from None
    if magic[:1] == b"\x80":  # a pickle protocol 2+ stream, not an array file
        raise error(pickled)
    if magic != b"\x93NUMPY" and magic[:4] != b"PK\x03\x04":
        raise error(bad)
    try:
        if magic[:4] == b"PK\x03\x04":
            with np.load(path, allow_pickle=False) as z:
                value = {k: z[k] for k in z.files}
            arrays = value.items()
        else:
            value = np.load(path, allow_pickle=False)
            arrays = [("", value)]
    except OSError as exc:
        raise error(f"cannot read calibration file '{path}': {exc.strerror}" if exc.strerror
                               else bad) from None
    except ValueError as exc:
        # Object arrays inside a valid file: numpy refuses them without pickle.
        raise error(pickled if "pickle" in str(exc) else bad) from None
    except (EOFError, KeyError, zipfile.BadZipFile, UnicodeError, SyntaxError, TypeError, OverflowError,
            MemoryError, tokenize.TokenError):
        # numpy parses the .npy header with tokenize + ast: a cut or junk header
        # raises their errors (found by tools/fuzz/fuzz_cli.py).
        raise error(bad) from None
    for key, a in arrays:
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "biuf":
            what = f" (array '{key}')" if key else ""
            raise error(f"calibration file '{path}'{what} holds {getattr(a, 'dtype', type(a))} data; "
                                   f"calibration needs numeric arrays")
    return value


def read_array_file(path):
    """One calibration array (.npy) or dict of arrays (.npz); CalibrationError
    naming the file on any failure."""
    return load_arrays(path, CalibrationError)


def open_source(data, specs: list[InputSpec], batch_size: int = DEFAULT_BATCH_SIZE):
    """Turns user calibration data into an iterable of raw batches.

    Returns (iterable, number of batches or None when unknown).
    """
    if data is None:
        raise CalibrationError("no calibration data given (calibration_data=...)")
    if batch_size < 1:
        raise CalibrationError(f"batch_size must be at least 1, got {batch_size}")
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        if os.path.isdir(path):
            if _list_files(path, (".npy", ".npz")):
                return _sample_batches(NpyFolder(path), specs, batch_size), None
            if _list_files(path, IMAGE_EXTENSIONS):
                raise CalibrationError(
                    f"'{path}' holds images: declare their preprocessing with "
                    f"pyengine.calibration.ImageFolder('{path}', resize=..., crop=..., mean=..., std=...)")
            raise CalibrationError(f"folder '{path}' has no .npy, .npz or image files")
        if os.path.isfile(path) and path.endswith(".npy"):
            data = read_array_file(path)
        else:
            raise CalibrationError(f"calibration data '{path}' is not a folder or a .npy file")
    if isinstance(data, np.ndarray):
        if len(specs) != 1:
            raise CalibrationError(
                f"the model has {len(specs)} inputs ({[s.name for s in specs]}); pass dicts of arrays")
        rank = None if specs[0].shape is None else len(specs[0].shape)
        if rank is not None and data.ndim == rank - 1:
            data = data[None]
        if data.shape[0] == 0:
            raise CalibrationError("calibration data is empty")
        n = data.shape[0]
        return (data[i:i + batch_size] for i in range(0, n, batch_size)), (n + batch_size - 1) // batch_size
    if isinstance(data, Mapping):
        return [data], 1
    if isinstance(data, Iterable):
        try:
            count = len(data)
        except TypeError:
            count = None
        return data, count
    raise CalibrationError(
        f"unsupported calibration data of type {type(data).__name__}: pass an array, an iterable of "
        f"arrays or dicts, a folder of .npy files, or an ImageFolder")


def _sample_batches(files, specs, batch_size):
    """Groups per-sample arrays (rank = input rank - 1) into batches; passes
    batches and dicts through."""
    rank = None if len(specs) != 1 or specs[0].shape is None else len(specs[0].shape)
    pending = []
    for item in files:
        if rank is not None and isinstance(item, np.ndarray) and item.ndim == rank - 1:
            pending.append(item)
            if len(pending) == batch_size:
                yield np.stack(pending)
                pending = []
            continue
        if pending:
            yield np.stack(pending)
            pending = []
        yield item
    if pending:
        yield np.stack(pending)


def is_reiterable(data) -> bool:
    """True if iterating ``data`` twice gives the same batches (not a one-shot iterator)."""
    return not isinstance(data, Iterator)


def check_batch(index: int, item, specs: list[InputSpec]) -> dict:
    """Validates one raw batch and returns {input name: C-contiguous array}."""
    if isinstance(item, (tuple, list)) and len(specs) == 1 and item and not np.isscalar(item[0]):
        item = item[0]  # (inputs, labels) from a data loader
    if isinstance(item, Mapping):
        feeds = dict(item)
        missing = [s.name for s in specs if s.name not in feeds]
        extra = [k for k in feeds if k not in {s.name for s in specs}]
        if missing or extra:
            raise CalibrationError(
                f"calibration batch {index}: inputs do not match the model: missing {missing}, "
                f"unexpected {extra}; the model's inputs are {[s.name for s in specs]}")
    else:
        if len(specs) != 1:
            raise CalibrationError(
                f"calibration batch {index}: the model has {len(specs)} inputs; pass dicts of arrays")
        feeds = {specs[0].name: item}
    out = {}
    for spec in specs:
        try:
            a = np.asarray(feeds[spec.name])
        except Exception as exc:
            raise CalibrationError(f"calibration batch {index}: input '{spec.name}' is not an array: {exc}") from None
        if a.dtype.kind not in "fiub":
            raise CalibrationError(f"calibration batch {index}: input '{spec.name}' has dtype {a.dtype}")
        if spec.shape is not None:
            if a.ndim == len(spec.shape) - 1:
                a = a[None]
            if a.ndim != len(spec.shape):
                raise CalibrationError(
                    f"calibration batch {index}: input '{spec.name}' has shape {a.shape}; "
                    f"the model expects rank {len(spec.shape)} {_shape_text(spec.shape)}")
            for axis, (got, want) in enumerate(zip(a.shape, spec.shape)):
                if want is not None and got != want:
                    raise CalibrationError(
                        f"calibration batch {index}: input '{spec.name}' has shape {a.shape}; "
                        f"the model expects {_shape_text(spec.shape)} (axis {axis})")
        if a.size == 0:
            raise CalibrationError(f"calibration batch {index}: input '{spec.name}' is empty")
        a = np.ascontiguousarray(a, dtype=spec.dtype)
        if a.dtype.kind == "f":
            bad = int(np.count_nonzero(~np.isfinite(a)))
            if bad:
                raise CalibrationError(
                    f"calibration batch {index}: input '{spec.name}' contains {bad} NaN or Inf "
                    f"value(s); fix the data or drop the batch")
        out[spec.name] = a
    return out


def _shape_text(shape):
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def iter_batches(data, specs: list[InputSpec], batch_size: int = DEFAULT_BATCH_SIZE,
                 num_batches: int | None = None, progress: bool = False, desc: str = "calibrating"):
    """Yields (batch index, {input name: array}) for every usable batch.

    Args:
        data: any source listed in this module's docstring.
        specs: the model's inputs (see :func:`input_specs`).
        batch_size: samples per batch when splitting arrays or grouping samples.
        num_batches: stop after this many batches.
        progress: show a tqdm progress bar when tqdm is installed.

    Raises:
        CalibrationError: empty data, wrong shapes, NaN/Inf values (naming the batch).
    """
    if num_batches is not None and num_batches < 1:
        raise CalibrationError(f"num_batches must be at least 1, got {num_batches}")
    source, count = open_source(data, specs, batch_size)
    total = count if num_batches is None else (num_batches if count is None else min(count, num_batches))
    bar = _progress_bar(total, desc) if progress else None
    index = -1
    try:
        for index, item in enumerate(source):
            if num_batches is not None and index >= num_batches:
                index -= 1
                break
            yield index, check_batch(index, item, specs)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if index < 0:
        raise CalibrationError("calibration data is empty")


def _progress_bar(total, desc):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="batch", leave=False)
