"""pyengine: an inference engine for residual convolutional networks.

    engine = pyengine.build("resnet50.onnx")       # optimize + compile a CPU plan
    y = engine(x)                                  # numpy in, numpy out
    engine.save("resnet50.plan"); pyengine.load("resnet50.plan")
"""

from .errors import (  # noqa: F401
    BackendUnavailableError,
    CalibrationError,
    CalibrationWarning,
    DTypeError,
    InternalError,
    InvalidArgumentError,
    InvalidModelError,
    PlanFormatError,
    PyengineError,
    PyengineWarning,
    ShapeError,
    UnsupportedOperatorError,
)

__version__ = "0.1.0"

from . import _core  # noqa: E402,F401  (imported first: it loads the C++ core)
from .api import build, default_threads, load, max_tensor_bytes, set_max_tensor_bytes  # noqa: E402,F401
from .backends.tensorrt import TensorRTEngine  # noqa: E402,F401  (tensorrt itself is imported lazily)
from .engine import Engine, TensorSpec  # noqa: E402,F401
from .export import check_tensorrt, export  # noqa: E402,F401
from .optimizer import optimize  # noqa: E402,F401
from .preprocess import Preprocess  # noqa: E402,F401
from .quantize import quantize  # noqa: E402,F401
from . import video  # noqa: E402,F401  (streaming; PyAV is imported only to read video files)
