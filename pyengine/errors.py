"""The pyengine exception hierarchy.

Every error a user can cause is a :class:`PyengineError`; its message names the
file, node, tensor or option at fault. :class:`InternalError` is a bug in
pyengine (please report it with the message).
"""


class PyengineError(Exception):
    """Base class of every pyengine error."""


class InvalidModelError(PyengineError, ValueError):
    """The model file is missing, unreadable or malformed."""


class UnsupportedOperatorError(PyengineError):
    """The model uses operators (or variants of them) pyengine cannot run."""


class ShapeError(PyengineError, ValueError):
    """An input has the wrong shape, or shapes in the model are inconsistent."""


class DTypeError(PyengineError, TypeError):
    """An input has the wrong element type."""


class PlanFormatError(PyengineError):
    """A plan file is corrupt, truncated, or from an incompatible version."""


class BackendUnavailableError(PyengineError):
    """The requested backend (e.g. TensorRT) cannot run on this machine."""


class InvalidArgumentError(PyengineError, ValueError):
    """A bad argument to a pyengine function (unknown input name, bad option)."""


class CalibrationError(PyengineError, ValueError):
    """Calibration data is unusable (NaN/Inf values, wrong shapes, empty)."""


class PyengineWarning(UserWarning):
    """Base class of pyengine's warnings."""


class CalibrationWarning(PyengineWarning):
    """Calibration statistics that will likely cost accuracy (a tensor that is
    constant on the calibration data, a threshold clipping much of it); the
    message names the tensors."""


class InternalError(PyengineError, RuntimeError):
    """A broken invariant inside pyengine: a bug, not a problem with the model."""


__all__ = [
    "PyengineError",
    "InvalidModelError",
    "UnsupportedOperatorError",
    "ShapeError",
    "DTypeError",
    "PlanFormatError",
    "BackendUnavailableError",
    "InvalidArgumentError",
    "CalibrationError",
    "InternalError",
    "PyengineWarning",
    "CalibrationWarning",
]
