"""TensorRT backend: the optimized graph is written out as ONNX (explicit Q/DQ
for int8) and built by TensorRT. ``tensorrt`` is imported lazily so pyengine
works without it; see ../shared/TENSORRT.md for what TensorRT accepts."""

from __future__ import annotations

from ..errors import BackendUnavailableError


def availability() -> str | None:
    """None when TensorRT and a CUDA GPU are usable, else the reason why not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the 'tensorrt' Python package is not installed (pip install 'pyengine[trt]')"
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return "the 'cuda-python' package is not installed, so no GPU can be checked for"
    # Creating a TensorRT object without a GPU can crash the process (see
    # TENSORRT.md): ask the CUDA runtime first.
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count == 0:
        return f"no CUDA GPU is available (cudaGetDeviceCount: {err})"
    return None


def require() -> None:
    reason = availability()
    if reason:
        raise BackendUnavailableError(f"the TensorRT backend cannot run here: {reason}")


def build(*args, **kwargs):
    require()
    raise BackendUnavailableError(
        "building TensorRT engines is not implemented yet in this pyengine version; "
        "use backend='cpu', or export the optimized ONNX with pyengine.optimize() and build it with trtexec")


def load_plan(path, metadata):
    require()
    raise BackendUnavailableError(f"'{path}' is a TensorRT plan; running TensorRT plans is not implemented yet")
