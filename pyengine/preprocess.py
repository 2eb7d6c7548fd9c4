"""Preprocessing inside the engine: camera frames in, model input out.

``pyengine.build(model, preprocess=pyengine.Preprocess(...))`` puts the
transform in the plan as its first op (a ``pyengine``-domain ``Preprocess``
node, run by a C++ kernel with reference and AVX2 variants), so the engine
takes uint8 frames directly and saved plans keep it.

Conventions (the same in the C++ kernel, engine/ir/preprocess.h, and in
:meth:`Preprocess.apply_numpy`):

* frames are uint8 ``(N, H, W, 3)`` (``(N, T, H, W, 3)`` clips for
  ``layout="NCTHW"``), RGB or BGR, or NV12 ``(N, H * 3 // 2, W)``; H and W
  may change between calls.
* ``resize=(h, w)`` resizes exactly; ``resize=s`` resizes the shorter side to
  ``s`` and the longer to ``int(s * long / short)``, as torchvision's
  ``Resize(s)``.
* ``interpolation="bilinear"`` uses half-pixel centres (torch
  ``align_corners=False``, OpenCV ``INTER_LINEAR``). With ``antialias=True``
  (the default) downscaling widens the triangle filter by the scale factor,
  which is what Pillow's ``BILINEAR`` and torchvision's ``Resize`` (antialias
  True) do, i.e. what PIL-based training pipelines saw; ``antialias=False``
  samples two taps as OpenCV and torch ``antialias=False`` do (aliasing on
  large downscales). Upscaling is the same either way.
* ``interpolation="nearest"`` picks ``floor((o + 0.5) * in / out)`` (Pillow's
  ``NEAREST``, torch ``"nearest-exact"``), computed exactly in integers; where
  that value is an exact integer Pillow's floating-point coordinate can land
  just below it and pick the lower neighbour.
* ``crop=(h, w)`` takes the centre crop after resizing, with torchvision's
  ``CenterCrop`` offsets ``int(round((H - h) / 2))`` (round half to even). A
  frame smaller than the crop after resizing is a :class:`ShapeError`.
* ``mean`` and ``std`` are in 0-1 units, as torchvision's ``Normalize`` after
  ``ToTensor``: ``x = (pixel / 255 - mean[c]) / std[c]``, channels in RGB
  order. Values above 1 (0-255 units) are rejected with a hint.

The kernel resamples in float32 without rounding to uint8 between passes;
Pillow rounds after each of its two passes, so the two agree within one
uint8 step of the resized image (``1 / (255 * std)`` in normalized units).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from .errors import DTypeError, InvalidArgumentError, ShapeError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_ATTR_INT, _ATTR_FLOAT, _ATTR_STRING, _ATTR_FLOATS, _ATTR_INTS = 2, 1, 3, 6, 7


def _size_pair(value, what: str):
    if value is None:
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    try:
        pair = tuple(value)
    except TypeError:
        raise InvalidArgumentError(f"Preprocess {what} must be an int or (h, w), got {value!r}") from None
    if len(pair) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in pair):
        raise InvalidArgumentError(f"Preprocess {what} must be an int or (h, w) of ints, got {value!r}")
    return (int(pair[0]), int(pair[1]))


def _three(value, what: str):
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        vals = (float(value),) * 3
    else:
        try:
            vals = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"Preprocess {what} must be a number or 3 numbers, got {value!r}") from None
    if len(vals) != 3:
        raise InvalidArgumentError(f"Preprocess {what} must have 3 values (R, G, B), got {len(vals)}")
    if not all(math.isfinite(v) for v in vals):
        raise InvalidArgumentError(f"Preprocess {what} must be finite, got {vals}")
    return vals


@dataclass(frozen=True)
class Preprocess:
    """An input transform compiled into the plan: uint8 frames -> model input.

    Args:
        resize: None (no resize), an int (shorter side, aspect kept, as
            torchvision's ``Resize(int)``) or ``(h, w)`` (exact).
        crop: None, an int (square) or ``(h, w)``: centre crop after resizing.
        mean: per-channel mean in 0-1 units (RGB order), one number or three.
        std: per-channel std in 0-1 units, in (0, 1].
        color: the frames' channel order, "rgb" or "bgr" (OpenCV); the model
            gets RGB. "nv12": YUV 4:2:0 frames ``(N, H * 3 // 2, W)`` (the Y
            plane, then interleaved U, V at half resolution; H and W even),
            converted with BT.601 limited-range coefficients as OpenCV's
            ``COLOR_YUV2RGB_NV12`` (see :func:`nv12_to_rgb`).
        interpolation: "bilinear" or "nearest".
        antialias: bilinear downscaling with Pillow's widened triangle filter
            (True, the default) or two-tap sampling as OpenCV (False).
        layout: the model input's layout: "NCHW" (frames ``(N, H, W, 3)``) or
            "NCTHW" for 3-D video models (clips ``(N, T, H, W, 3)``).
        input: the model input to feed; None for the model's only input.

    Raises:
        InvalidArgumentError: a malformed option (the message names it).
    """

    resize: int | tuple | None = None
    crop: int | tuple | None = None
    mean: tuple = (0.0, 0.0, 0.0)
    std: tuple = (1.0, 1.0, 1.0)
    color: str = "rgb"
    interpolation: str = "bilinear"
    antialias: bool = True
    layout: str = "NCHW"
    input: str | None = None

    def __post_init__(self):
        resize = _size_pair(self.resize, "resize")
        crop = _size_pair(self.crop, "crop")
        if isinstance(crop, int):
            crop = (crop, crop)
        for what, v in (("resize", resize), ("crop", crop)):
            vals = () if v is None else (v,) if isinstance(v, int) else v
            if any(x < 1 or x > 2**31 - 1 for x in vals):
                raise InvalidArgumentError(f"Preprocess {what} sizes must be in [1, 2**31 - 1], got {v}")
        mean, std = _three(self.mean, "mean"), _three(self.std, "std")
        if any(m < 0 or m > 1 for m in mean):
            raise InvalidArgumentError(
                f"Preprocess mean {mean} must be in 0-1 units (torchvision's Normalize after ToTensor, e.g. "
                f"{IMAGENET_MEAN}); divide 0-255 values by 255")
        if any(s <= 0 or s > 1 for s in std):
            raise InvalidArgumentError(
                f"Preprocess std {std} must be in (0, 1] in 0-1 units (e.g. {IMAGENET_STD}); divide 0-255 "
                f"values by 255")
        if self.color not in ("rgb", "bgr", "nv12"):
            raise InvalidArgumentError(f"Preprocess color must be 'rgb', 'bgr' or 'nv12', got {self.color!r}")
        if self.interpolation not in ("bilinear", "nearest"):
            raise InvalidArgumentError(
                f"Preprocess interpolation must be 'bilinear' or 'nearest', got {self.interpolation!r}")
        if not isinstance(self.antialias, (bool, np.bool_)):
            raise InvalidArgumentError(f"Preprocess antialias must be a bool, got {self.antialias!r}")
        if self.layout not in ("NCHW", "NCTHW"):
            raise InvalidArgumentError(f"Preprocess layout must be 'NCHW' or 'NCTHW', got {self.layout!r}")
        if self.input is not None and not isinstance(self.input, str):
            raise InvalidArgumentError(f"Preprocess input must be a model input name or None, got {self.input!r}")
        object.__setattr__(self, "resize", resize)
        object.__setattr__(self, "crop", crop)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "antialias", bool(self.antialias))

    @classmethod
    def imagenet(cls, resize=256, crop=224, **kwargs) -> "Preprocess":
        """The usual ImageNet evaluation transform: shorter side 256, centre
        crop 224, ImageNet mean and std (keyword arguments override)."""
        kwargs.setdefault("mean", IMAGENET_MEAN)
        kwargs.setdefault("std", IMAGENET_STD)
        return cls(resize=resize, crop=crop, **kwargs)

    # -- serialization --------------------------------------------------------
    def to_json(self) -> dict:
        """A JSON-able dict (kept in plan metadata); :meth:`from_json` inverts it."""
        return {"resize": list(self.resize) if isinstance(self.resize, tuple) else self.resize,
                "crop": None if self.crop is None else list(self.crop),
                "mean": list(self.mean), "std": list(self.std), "color": self.color,
                "interpolation": self.interpolation, "antialias": self.antialias, "layout": self.layout,
                "input": self.input}

    @classmethod
    def from_json(cls, d: dict) -> "Preprocess":
        return cls(**d)

    def _attrs(self) -> dict:
        """The Preprocess node's attributes as (ONNX attribute type, value) pairs."""
        if self.resize is None:
            mode, size = "none", []
        elif isinstance(self.resize, int):
            mode, size = "shorter", [self.resize]
        else:
            mode, size = "exact", list(self.resize)
        return {"color": (_ATTR_STRING, self.color), "resize_mode": (_ATTR_STRING, mode),
                "size": (_ATTR_INTS, size), "interpolation": (_ATTR_STRING, self.interpolation),
                "antialias": (_ATTR_INT, int(self.antialias)),
                "crop": (_ATTR_INTS, [] if self.crop is None else list(self.crop)),
                "mean": (_ATTR_FLOATS, list(self.mean)), "std": (_ATTR_FLOATS, list(self.std)),
                "layout": (_ATTR_STRING, self.layout)}

    # -- geometry -------------------------------------------------------------
    def resized_size(self, h: int, w: int) -> tuple:
        """(height, width) a frame of h x w is resized to (before the crop)."""
        if self.resize is None:
            return h, w
        if isinstance(self.resize, tuple):
            return self.resize
        s = self.resize
        short, long = min(h, w), max(h, w)
        new_long = int(s * long / short)
        return (new_long, s) if w <= h else (s, new_long)

    def output_size(self, h: int, w: int) -> tuple:
        """(height, width) of the model input made from a frame of h x w."""
        rh, rw = self.resized_size(h, w)
        if self.crop is None:
            return rh, rw
        ch, cw = self.crop
        if ch > rh or cw > rw:
            raise ShapeError(f"a frame of {h}x{w} resizes to {rh}x{rw}, smaller than the crop {ch}x{cw}")
        return ch, cw

    # -- the same transform in numpy -----------------------------------------
    def apply_numpy(self, frames, dtype=np.float64) -> np.ndarray:
        """This transform in numpy (separable resampling, sums in ``dtype``):
        the reference the kernel is tested against, and a fallback for
        backends without the op. Returns float32 in the model's layout."""
        frames = np.asarray(frames)
        video = self.layout == "NCTHW"
        rank = 5 if video else 4
        if frames.dtype != np.uint8:
            raise DTypeError(f"frames must be uint8, got {frames.dtype}")
        if self.color == "nv12":
            if frames.ndim != rank - 1:
                want = "(N, T, H * 3 // 2, W)" if video else "(N, H * 3 // 2, W)"
                raise ShapeError(f"NV12 frames must have shape {want}, got {frames.shape}")
            frames = nv12_to_rgb(frames)
        if frames.ndim != rank or frames.shape[-1] != 3:
            want = "(N, T, H, W, 3)" if video else "(N, H, W, 3)"
            raise ShapeError(f"frames must have shape {want}, got {frames.shape}")
        lead = frames.shape[:-3]
        h, w = frames.shape[-3:-1]
        imgs = frames.reshape((-1, h, w, 3))
        if self.color == "bgr":
            imgs = imgs[..., ::-1]
        rh, rw = self.resized_size(h, w)
        oh, ow = self.output_size(h, w)
        top = _half_even((rh - oh) / 2) if self.crop else 0
        left = _half_even((rw - ow) / 2) if self.crop else 0
        iy, wy = axis_taps(h, rh, top, oh, self.interpolation, self.antialias)
        ix, wx = axis_taps(w, rw, left, ow, self.interpolation, self.antialias)
        # Horizontal: (B, H, ow, 3), then vertical: (B, oh, ow, 3); one tap
        # at a time keeps the temporaries the size of the output.
        wx, wy = wx.astype(dtype), wy.astype(dtype)
        t = sum(imgs[:, :, ix[:, k], :] * wx[None, None, :, k, None] for k in range(ix.shape[1]))
        t = sum(t[:, iy[:, k], :, :] * wy[None, :, k, None, None] for k in range(iy.shape[1]))
        mean = np.asarray(self.mean, dtype)
        std = np.asarray(self.std, dtype)
        t = (t / 255.0 - mean) / std
        t = t.astype(np.float32).reshape(lead + (oh, ow, 3))
        # (N, oh, ow, 3) -> (N, 3, oh, ow); (N, T, oh, ow, 3) -> (N, 3, T, oh, ow)
        t = np.moveaxis(t, -1, 1)
        return np.ascontiguousarray(t)


def nv12_to_rgb(frames) -> np.ndarray:
    """NV12 frames ``(..., H * 3 // 2, W)`` to RGB ``(..., H, W, 3)`` uint8, with
    the kernel's formula: BT.601 limited range in 20-bit fixed point (OpenCV's
    ``COLOR_YUV2RGB_NV12``), each 2x2 block sharing its chroma sample."""
    frames = np.asarray(frames)
    rows, w = frames.shape[-2:]
    if frames.dtype != np.uint8 or rows % 6 or w % 2:
        raise ShapeError(f"NV12 frames are uint8 (..., H * 3 // 2, W) with H and W even, got {frames.dtype} "
                         f"{frames.shape}")
    h = rows // 3 * 2
    y = frames[..., :h, :].astype(np.int64)
    uv = frames[..., h:, :].reshape(frames.shape[:-2] + (h // 2, w // 2, 2)).astype(np.int64) - 128
    u = np.repeat(np.repeat(uv[..., 0], 2, axis=-2), 2, axis=-1)
    v = np.repeat(np.repeat(uv[..., 1], 2, axis=-2), 2, axis=-1)
    yy = np.maximum(y - 16, 0) * 1220542
    r = (yy + 1673527 * v + (1 << 19)) >> 20
    g = (yy - 852492 * v - 409993 * u + (1 << 19)) >> 20
    b = (yy + 2116026 * u + (1 << 19)) >> 20
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def _half_even(x: float) -> int:
    return int(round(x))


def axis_taps(in_len: int, resized_len: int, offset: int, out_len: int, interpolation: str, antialias: bool):
    """Per output index of one axis: input indices (out_len, K) and weights
    (out_len, K) float64, for the resized indices [offset, offset + out_len)."""
    scale = in_len / resized_len
    rows = []
    for o in range(offset, offset + out_len):
        if interpolation == "nearest":
            rows.append(([min((2 * o + 1) * in_len // (2 * resized_len), in_len - 1)], [1.0]))
        elif antialias and scale > 1:
            center = (o + 0.5) * scale
            lo = max(int(center - scale + 0.5), 0)
            hi = min(int(center + scale + 0.5), in_len)
            xs = np.arange(lo, max(hi, lo + 1))
            ws = np.maximum(0.0, 1.0 - np.abs((xs - center + 0.5) / scale))
            rows.append((list(xs), list(ws / ws.sum())))
        else:
            src = max((o + 0.5) * scale - 0.5, 0.0)
            i0 = int(src)
            lam = src - i0
            if i0 >= in_len - 1:
                i0, lam = in_len - 1, 0.0
            rows.append(([i0, min(i0 + 1, in_len - 1)], [1.0 - lam, lam]))
    k = max(len(r[0]) for r in rows)
    idx = np.zeros((out_len, k), np.int64)
    wts = np.zeros((out_len, k), np.float64)
    for i, (xs, ws) in enumerate(rows):
        idx[i, :len(xs)] = xs
        idx[i, len(xs):] = xs[-1]
        wts[i, :len(ws)] = ws
    return idx, wts


def parse_spec(text: str) -> Preprocess:
    """A Preprocess from the command line's ``key=value,...`` form, e.g.
    ``imagenet`` or ``resize=256,crop=224,mean=imagenet,std=imagenet,color=bgr``.
    Sizes are ``N`` or ``HxW``; mean/std ``imagenet`` or ``a/b/c`` (0-1 units);
    antialias ``0``/``1``; other keys as :class:`Preprocess`'s arguments."""
    kwargs: dict = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        if item == "imagenet":
            kwargs.update(resize=256, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidArgumentError(f"preprocess spec item {item!r} is not key=value (in {text!r})")
        if key not in ("resize", "crop", "mean", "std", "antialias", "color", "interpolation", "layout", "input"):
            raise InvalidArgumentError(f"unknown preprocess spec key {key!r} (in {text!r}); keys: imagenet, resize, "
                                       f"crop, mean, std, color, interpolation, antialias, layout, input")
        try:
            if key in ("resize", "crop"):
                parts = [int(v) for v in value.lower().split("x")]
                kwargs[key] = parts[0] if len(parts) == 1 else tuple(parts)
            elif key in ("mean", "std"):
                if value == "imagenet":
                    kwargs[key] = IMAGENET_MEAN if key == "mean" else IMAGENET_STD
                else:
                    kwargs[key] = tuple(float(v) for v in value.split("/"))
            elif key == "antialias":
                if value not in ("0", "1", "true", "false"):
                    raise ValueError(value)
                kwargs[key] = value in ("1", "true")
            else:
                kwargs[key] = value
        except ValueError:
            raise InvalidArgumentError(f"preprocess spec {key}={value!r} is malformed (in {text!r})") from None
    return Preprocess(**kwargs)
