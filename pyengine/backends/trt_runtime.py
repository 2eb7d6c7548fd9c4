"""Running TensorRT engines on cuda-python (``cuda.bindings.runtime``; no
PyTorch or PyCUDA).

Per engine: one execution context, one non-blocking CUDA stream, device
buffers that grow to the largest shape seen and are reused, pinned host
staging buffers for numpy inputs and outputs, and optionally one CUDA graph
per (input shapes, tensor addresses).

Thread safety: an engine has exactly one execution context, and a lock
serializes every call that uses it (run, profile, close). Calls from several
threads are therefore safe but do not overlap; for parallel inference, load
one engine per thread (each gets its own context and stream).

Inputs are numpy arrays (copied through pinned memory), or device arrays
that expose ``__cuda_array_interface__`` (CuPy, PyTorch CUDA tensors, Numba)
or DLPack (``__dlpack__``), which are used in place: zero copies for frames
already on the GPU. ``run(..., device_outputs=True)`` returns
:class:`DeviceArray` outputs (``__cuda_array_interface__``), so that
``cupy.asarray(y)`` or ``torch.as_tensor(y, device="cuda")`` take them without
a copy.
"""

from __future__ import annotations

import ctypes
import json
import re
import threading
from collections import OrderedDict

import numpy as np

from ..errors import (
    BackendUnavailableError,
    InvalidArgumentError,
    PlanFormatError,
    PyengineError,
    ShapeError,
    UnsupportedOperatorError,
)

MAX_GRAPHS = 16  # CUDA graphs kept per engine (LRU)


def cudart():
    """The ``cuda.bindings.runtime`` module (cuda-python 12.6+), or the older
    ``cuda.cudart``; BackendUnavailableError without cuda-python."""
    try:
        from cuda.bindings import runtime
        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart as runtime  # cuda-python < 12.6
        return runtime
    except ImportError:
        raise BackendUnavailableError("the 'cuda-python' package is not installed (pip install cuda-python), "
                                      "which pyengine's TensorRT runtime uses for GPU memory and streams") from None


def check(result, what: str):
    """Unpacks a cuda-python result ``(err, *values)``; raises on an error."""
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if int(err) != 0:
        rt = cudart()
        try:
            text = rt.cudaGetErrorString(err)[1]
            text = text.decode() if isinstance(text, bytes) else str(text)
        except Exception:  # error strings are a courtesy
            text = ""
        raise PyengineError(f"CUDA call {what} failed: {getattr(err, 'name', err)} {text}".rstrip())
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def gpu_count() -> tuple[int, str | None]:
    """(number of CUDA devices, reason when 0) without touching TensorRT."""
    rt = cudart()
    err, count = rt.cudaGetDeviceCount()
    if int(err) != 0:
        return 0, f"no usable CUDA GPU (cudaGetDeviceCount: {getattr(err, 'name', err)})"
    if not count:
        return 0, "no CUDA GPU found (cudaGetDeviceCount returned 0)"
    return int(count), None


def _version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def device_info() -> dict:
    """The current GPU: name, compute capability, CUDA runtime and driver versions."""
    rt = cudart()
    dev = check(rt.cudaGetDevice(), "cudaGetDevice")
    props = check(rt.cudaGetDeviceProperties(dev), "cudaGetDeviceProperties")
    name = props.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode(errors="replace")
    return {"gpu_name": str(name).strip(), "compute_capability": f"{props.major}.{props.minor}",
            "cuda_runtime_version": _version(check(rt.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")),
            "cuda_driver_version": _version(check(rt.cudaDriverGetVersion(), "cudaDriverGetVersion")),
            "device": int(dev)}


# --------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------

class DeviceMemory:
    """Owned device memory (cudaMalloc); freed by ``free()`` or on collection."""

    def __init__(self, nbytes: int):
        self.nbytes = max(int(nbytes), 1)
        self.ptr = int(check(cudart().cudaMalloc(self.nbytes), "cudaMalloc"))

    def free(self):
        if self.ptr:
            try:
                cudart().cudaFree(self.ptr)
            finally:
                self.ptr = 0

    def __del__(self):
        try:
            self.free()
        except Exception:  # interpreter shutdown: the driver frees it anyway
            pass


class PinnedMemory:
    """Page-locked host memory (cudaMallocHost), viewable as numpy arrays."""

    def __init__(self, nbytes: int):
        self.nbytes = max(int(nbytes), 1)
        self.ptr = int(check(cudart().cudaMallocHost(self.nbytes), "cudaMallocHost"))
        self._buf = (ctypes.c_byte * self.nbytes).from_address(self.ptr)

    def view(self, shape, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        n = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
        return np.frombuffer(self._buf, dtype=dtype, count=n).reshape(shape)

    def free(self):
        if self.ptr:
            self._buf = None
            try:
                cudart().cudaFreeHost(self.ptr)
            finally:
                self.ptr = 0

    def __del__(self):
        try:
            self.free()
        except Exception:
            pass


class DeviceArray:
    """A tensor in GPU memory, handed to CuPy / PyTorch / Numba without a copy
    through ``__cuda_array_interface__`` (version 3). ``numpy()`` copies it to
    the host. It keeps its memory alive for as long as it lives."""

    def __init__(self, memory: DeviceMemory, shape, dtype):
        self._memory = memory
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)

    @property
    def ptr(self) -> int:
        return self._memory.ptr

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False), "version": 3,
                "strides": None, "stream": None}

    def numpy(self) -> np.ndarray:
        out = np.empty(self.shape, self.dtype)
        rt = cudart()
        if out.nbytes:
            check(rt.cudaMemcpy(out.ctypes.data, self.ptr, out.nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost),
                  "cudaMemcpy")
        return out

    def __repr__(self) -> str:
        return f"<pyengine DeviceArray {self.dtype}{list(self.shape)} at 0x{self.ptr:x}>"


# --------------------------------------------------------------------------
# Device inputs: __cuda_array_interface__ and DLPack
# --------------------------------------------------------------------------

KDL_CPU, KDL_CUDA, KDL_CUDA_HOST, KDL_CUDA_MANAGED = 1, 2, 3, 13
_DL_CODES = {0: "i", 1: "u", 2: "f", 6: "b"}


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]


_get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_get_pointer.restype = ctypes.c_void_p
_get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def dlpack_view(capsule) -> dict:
    """Reads a (legacy, "dltensor") DLPack capsule without consuming it: the
    capsule's own destructor releases the tensor, so keep the capsule alive
    while the pointer is in use.

    Returns:
        {"ptr", "shape", "dtype", "contiguous", "device_type", "device_id"}.
    """
    addr = _get_pointer(capsule, b"dltensor")
    if not addr:
        raise InvalidArgumentError("not a DLPack 'dltensor' capsule")
    t = _DLManagedTensor.from_address(addr).dl_tensor
    shape = tuple(t.shape[i] for i in range(t.ndim))
    code = _DL_CODES.get(t.dtype.code)
    if code is None or t.dtype.lanes != 1:
        raise InvalidArgumentError(f"DLPack dtype code {t.dtype.code} x{t.dtype.lanes} lanes is not supported")
    dtype = np.dtype("?" if code == "b" else f"{code}{t.dtype.bits // 8}")
    contiguous = True
    if t.strides:
        expected = 1
        for i in reversed(range(t.ndim)):
            if shape[i] != 1 and t.strides[i] != expected:
                contiguous = False
            expected *= shape[i]
    return {"ptr": (t.data or 0) + t.byte_offset, "shape": shape, "dtype": dtype, "contiguous": contiguous,
            "device_type": t.device.device_type, "device_id": t.device.device_id}


def device_input(obj, stream: int | None = None):
    """(ptr, shape, dtype, keepalive) for a device-resident array, else None.

    DLPack is preferred for CUDA arrays: the consumer's stream is passed to
    ``__dlpack__(stream=...)``, so the producer (PyTorch, CuPy) makes this
    engine's stream wait for its pending work. Otherwise
    ``__cuda_array_interface__`` is used: version 3's "stream" is
    synchronized; an interface without that key (version 2) gives no
    ordering information, so the device is synchronized. Non-contiguous
    device arrays are refused: pass a contiguous copy.
    """
    if hasattr(obj, "__dlpack_device__") and hasattr(obj, "__dlpack__"):
        try:
            dev_type, _ = obj.__dlpack_device__()
        except Exception:  # a producer that cannot say: try the array interface
            dev_type = None
        if dev_type is not None and int(dev_type) not in (KDL_CUDA, KDL_CUDA_MANAGED):
            if getattr(obj, "__cuda_array_interface__", None) is None:
                return None
        elif dev_type is not None:
            try:
                capsule = obj.__dlpack__(stream=stream if stream else 1)
            except TypeError:  # producers predating the stream argument
                capsule = obj.__dlpack__()
            view = dlpack_view(capsule)
            if not view["contiguous"]:
                raise InvalidArgumentError("a DLPack device input is not C-contiguous; pass a contiguous copy")
            return view["ptr"], view["shape"], view["dtype"], capsule
    cai = getattr(obj, "__cuda_array_interface__", None)
    if cai is None:
        return None
    shape = tuple(int(d) for d in cai["shape"])
    dtype = np.dtype(cai["typestr"])
    strides = cai.get("strides")
    if strides is not None:
        expected, ok = dtype.itemsize, True
        for d, st in zip(reversed(shape), reversed(strides)):
            if d != 1 and st != expected:
                ok = False
            expected *= d
        if not ok:
            raise InvalidArgumentError("a device input is not C-contiguous; pass a contiguous copy")
    rt = cudart()
    if "stream" not in cai:
        check(rt.cudaDeviceSynchronize(), "cudaDeviceSynchronize (input without stream information)")
    elif cai["stream"] not in (None, 0):
        check(rt.cudaStreamSynchronize(cai["stream"]), "cudaStreamSynchronize (the input's stream)")
    return int(cai["data"][0]), shape, dtype, obj


# --------------------------------------------------------------------------
# Layer names -> ONNX nodes, from the engine inspector's JSON
# --------------------------------------------------------------------------

_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]]*)\]")


def inspector_layers(info_json: str) -> list:
    """The inspector's layers as dicts with at least "Name" (10.x and 11.x;
    LAYER_NAMES_ONLY plans list bare names)."""
    info = json.loads(info_json) if isinstance(info_json, str) else info_json
    layers = info.get("Layers", []) if isinstance(info, dict) else info
    return [{"Name": l} if isinstance(l, str) else dict(l) for l in layers]


def inspector_io(info_json: str) -> list:
    info = json.loads(info_json) if isinstance(info_json, str) else info_json
    return info.get("I/O Tensors", info.get("Bindings", [])) if isinstance(info, dict) else []


def layer_onnx_nodes(layer: dict, onnx_nodes) -> list:
    """The ONNX node names a TensorRT layer was made from.

    The ONNX parser records "[ONNX Layer: name]" in each layer's metadata,
    which the DETAILED inspector shows (fused layers list several); without
    it, a fused layer's name is its parts' names joined by " + ".
    """
    known = set(onnx_nodes)
    meta = layer.get("Metadata") or ""
    found = _ONNX_LAYER.findall(meta) if isinstance(meta, str) else []
    if found:
        return list(dict.fromkeys(found))
    name = layer.get("Name", "")
    parts = [p.strip() for p in re.split(r"\s\+\s", name)]
    out = []
    for p in parts:
        for cand in (p, re.sub(r"^(PWN|PointWiseNode|Reformatting CopyNode for .*? to )\(?", "", p).rstrip(")")):
            if cand in known and cand not in out:
                out.append(cand)
    if not out:  # Myelin/pointwise names wrap the parts: "PWN(relu1, add1)"
        inner = re.findall(r"[^\s(),+]+", name)
        out = [c for c in dict.fromkeys(inner) if c in known]
    return out


# --------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------

def _make_profiler(trt):
    class LayerProfiler(trt.IProfiler):
        def __init__(self):
            trt.IProfiler.__init__(self)
            self.times = OrderedDict()
            self.runs = 0

        def report_layer_time(self, layer_name, ms):
            self.times[layer_name] = self.times.get(layer_name, 0.0) + float(ms)

    return LayerProfiler()


class TRTRunner:
    """One deserialized engine with one execution context and one stream.

    Thread-safety rule: every method takes the runner's lock, so one context
    is never used by two threads at once (see the module docstring).
    """

    def __init__(self, trt, plan: bytes, logger, host_code_allowed: bool = False):
        self.trt = trt
        self.rt = cudart()
        self._lock = threading.Lock()
        self._logger = logger
        self._runtime = trt.Runtime(logger)
        if host_code_allowed:  # version-compatible plans carry a lean runtime
            self._runtime.engine_host_code_allowed = True
        self.engine = self._runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            errors = "; ".join(getattr(logger, "errors", [])[-5:])
            raise PlanFormatError(f"TensorRT could not deserialize the engine: {errors or 'no error logged'}")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise PyengineError("TensorRT could not create an execution context (out of GPU memory?)")
        self.stream = check(self.rt.cudaStreamCreateWithFlags(self.rt.cudaStreamNonBlocking), "cudaStreamCreate")
        self.stream_handle = int(self.stream)
        self.inputs, self.outputs = [], []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            shape = tuple(int(d) for d in self.engine.get_tensor_shape(name))
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append((name, dtype, shape))
        self._device = {}
        self._pinned = {}
        self._graphs = OrderedDict()
        self._shapes = None
        self._addresses = {}
        self.use_cuda_graph = False
        self.closed = False

    # -- buffers -----------------------------------------------------------
    def _device_buffer(self, name: str, nbytes: int) -> int:
        buf = self._device.get(name)
        if buf is None or buf.nbytes < nbytes:
            if buf is not None:
                self._drop_graphs()  # captured graphs hold the old address
                buf.free()
            buf = self._device[name] = DeviceMemory(nbytes)
        return buf.ptr

    def _pinned_view(self, name: str, shape, dtype) -> np.ndarray:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        buf = self._pinned.get(name)
        if buf is None or buf.nbytes < nbytes:
            if buf is not None:
                buf.free()
            buf = self._pinned[name] = PinnedMemory(nbytes)
        return buf.view(shape, dtype)

    def _drop_graphs(self):
        for graph, exec_ in self._graphs.values():
            self.rt.cudaGraphExecDestroy(exec_)
            self.rt.cudaGraphDestroy(graph)
        self._graphs.clear()

    # -- running -----------------------------------------------------------
    def profile_range(self, name: str):
        """(min, opt, max) shapes of profile 0 for an input, or None if static."""
        try:
            return tuple(tuple(int(d) for d in s) for s in self.engine.get_tensor_profile_shape(name, 0))
        except Exception:  # static inputs have no profile
            return None

    def _set_shapes(self, shapes: dict):
        key = tuple(shapes[n] for n, _, _ in self.inputs)
        if key == self._shapes:
            return
        self._shapes = None  # until every input shape is accepted
        for name, _, _ in self.inputs:
            if not self.context.set_input_shape(name, shapes[name]):
                rng = self.profile_range(name)
                hint = f"; the engine's profile allows min {list(rng[0])}, max {list(rng[2])}" if rng else ""
                raise ShapeError(f"input '{name}': shape {list(shapes[name])} is outside what the TensorRT engine "
                                 f"was built for{hint} (rebuild with batch_range=/input_shapes=)")
        self._shapes = key

    def run(self, feeds: dict, device_outputs: bool = False, profiler=None) -> dict:
        with self._lock:
            if self.closed:
                raise InvalidArgumentError("the TensorRT engine was closed")
            return self._run(feeds, device_outputs, profiler)

    def _run(self, feeds, device_outputs, profiler):
        rt = self.rt
        h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        shapes, addresses, host_inputs, keepalive = {}, {}, [], []
        for name, dtype, _ in self.inputs:
            obj = feeds[name]
            dev = device_input(obj, self.stream_handle)
            if dev is not None:
                ptr, shape, got, keep = dev
                if got != dtype:
                    raise InvalidArgumentError(f"device input '{name}' is {got}; the engine takes {dtype} "
                                               "(device inputs are not converted)")
                shapes[name], addresses[name] = shape, ptr
                keepalive.append(keep)
            else:
                arr = np.asarray(obj)
                if arr.dtype != dtype:
                    if not np.can_cast(arr.dtype, dtype, casting="same_kind"):
                        raise InvalidArgumentError(f"input '{name}' is {arr.dtype}; the engine takes {dtype}")
                    arr = arr.astype(dtype)
                shapes[name] = tuple(arr.shape)
                addresses[name] = self._device_buffer(name, arr.nbytes)
                host_inputs.append((name, arr))
        self._set_shapes(shapes)
        out_shapes = {}
        for name, dtype, _ in self.outputs:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise UnsupportedOperatorError(f"output '{name}' has a data-dependent shape {list(shape)}, which "
                                               "pyengine's TensorRT runtime does not support")
            out_shapes[name] = shape
        owned = {}
        for name, dtype, _ in self.outputs:
            nbytes = int(np.prod(out_shapes[name], dtype=np.int64)) * dtype.itemsize
            if device_outputs:
                owned[name] = DeviceMemory(nbytes)
                addresses[name] = owned[name].ptr
            else:
                addresses[name] = self._device_buffer(name, nbytes)
        # Growing a buffer above may have moved earlier ones: read them again.
        for name, _ in host_inputs:
            addresses[name] = self._device[name].ptr
        for name, ptr in addresses.items():
            if self._addresses.get(name) != ptr:
                self.context.set_tensor_address(name, ptr)
                self._addresses[name] = ptr
        for name, arr in host_inputs:
            staging = self._pinned_view(name, arr.shape, arr.dtype)
            np.copyto(staging, arr)
            if arr.nbytes:
                check(rt.cudaMemcpyAsync(addresses[name], staging.ctypes.data, arr.nbytes, h2d, self.stream),
                      "cudaMemcpyAsync (input)")
        if profiler is None and self.use_cuda_graph and not device_outputs:
            self._execute_graph(tuple(sorted(addresses.items())))
        else:
            self._execute()
        results = {}
        for name, dtype, _ in self.outputs:
            if device_outputs:
                results[name] = DeviceArray(owned[name], out_shapes[name], dtype)
                continue
            staging = self._pinned_view(name, out_shapes[name], dtype)
            if staging.nbytes:
                check(rt.cudaMemcpyAsync(staging.ctypes.data, addresses[name], staging.nbytes, d2h, self.stream),
                      "cudaMemcpyAsync (output)")
            results[name] = staging
        check(rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        del keepalive
        # Pinned staging is reused by the next call: hand out copies.
        return {n: (v if device_outputs else np.array(v)) for n, v in results.items()}

    def _execute(self):
        if not self.context.execute_async_v3(self.stream_handle):
            errors = "; ".join(getattr(self._logger, "errors", [])[-5:])
            raise PyengineError(f"TensorRT execute_async_v3 failed: {errors or 'no error logged'}")

    def _execute_graph(self, addresses):
        """Runs through a CUDA graph per (shapes, addresses): the first call
        for a key runs normally, synchronizes, then captures the next
        enqueue on this (non-default) stream; later calls launch the graph."""
        rt = self.rt
        key = (self._shapes, addresses)
        entry = self._graphs.get(key)
        if entry is not None:
            self._graphs.move_to_end(key)
            check(rt.cudaGraphLaunch(entry[1], self.stream), "cudaGraphLaunch")
            return
        self._execute()
        check(rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        check(rt.cudaStreamBeginCapture(self.stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
              "cudaStreamBeginCapture")
        try:
            self._execute()
        finally:
            graph = check(rt.cudaStreamEndCapture(self.stream), "cudaStreamEndCapture")
        exec_ = check(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        self._graphs[key] = (graph, exec_)
        while len(self._graphs) > MAX_GRAPHS:
            _, (g, e) = self._graphs.popitem(last=False)
            rt.cudaGraphExecDestroy(e)
            rt.cudaGraphDestroy(g)
        # The captured work was recorded, not run: the eager run above
        # produced this call's outputs.

    # -- inspection --------------------------------------------------------
    def engine_information(self) -> str:
        inspector = self.engine.create_engine_inspector()
        return inspector.get_engine_information(self.trt.LayerInformationFormat.JSON)

    def profile(self, feeds: dict, runs: int = 10) -> dict:
        """{layer name: mean ms} from an IProfiler over ``runs`` runs (no CUDA graph)."""
        profiler = _make_profiler(self.trt)
        with self._lock:
            self.context.profiler = profiler
            try:
                for _ in range(runs):
                    self._run(feeds, False, profiler)
            finally:
                try:
                    self.context.profiler = None
                except Exception:  # bindings that refuse None: profiling stays on (slower runs)
                    pass
        return {name: ms / runs for name, ms in profiler.times.items()}

    def close(self):
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._drop_graphs()
            for buf in list(self._device.values()) + list(self._pinned.values()):
                buf.free()
            self._device.clear()
            self._pinned.clear()
            self.rt.cudaStreamDestroy(self.stream)
            self.context = None
            self.engine = None
