"""STAND-IN `tensorrt` and `cuda.bindings.runtime` modules for the CPU tests.

THIS IS NOT TENSORRT, AND NOTHING TESTED WITH IT COUNTS AS TENSORRT
VERIFICATION. It exists only so that the CPU tests can check pyengine's own
logic around TensorRT: the builder call sequence (flags by name, workspace,
profiles, timing cache, levels, progress monitor, logging), the auto
fallback, the plan container, and the runtime's buffer, stream, CUDA-graph
and threading logic. Real TensorRT is exercised only by tests/gpu/ and
tools/trt_smoke.py on a machine with TensorRT and an NVIDIA GPU.

How it stands in:
* "device memory" is host memory (ctypes buffers); cudaMemcpyAsync is memmove;
  streams are integers; stream capture records the enqueued work and
  cudaGraphLaunch replays it.
* the "ONNX parser" reads the model with the onnx package and rejects ops
  outside SUPPORTED_OPS; the "serialized engine" is the ONNX bytes plus the
  profile, and "executing" it runs onnxruntime (CPU) on the bytes found at
  the tensor addresses, writing the outputs to their addresses.
"""

from __future__ import annotations

import ctypes
import enum
import itertools
import json
import sys
import threading
import types

import numpy as np
import onnx

MAGIC = b"STANDIN-TRT\0"
SUPPORTED_OPS = None  # None: every op; a set restricts what the parser accepts


# ---------------------------------------------------------------------------
# cuda.bindings.runtime stand-in
# ---------------------------------------------------------------------------

class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorInsufficientDriver = 35


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3


class cudaStreamCaptureMode(enum.IntEnum):
    cudaStreamCaptureModeGlobal = 0
    cudaStreamCaptureModeThreadLocal = 1
    cudaStreamCaptureModeRelaxed = 2


class FakeCuda:
    """State of the stand-in CUDA runtime (counters for the tests)."""

    def __init__(self, devices=1, cc=(8, 6), name=b"Stand-in GPU"):
        self.devices, self.cc, self.name = devices, cc, name
        self.buffers = {}
        self.streams = set()
        self.capturing = {}
        self.graphs = {}
        self.execs = {}
        self.ids = itertools.count(0x1000)
        self.counts = {"malloc": 0, "malloc_host": 0, "free": 0, "h2d": 0, "d2h": 0, "graph_launch": 0,
                       "graph_instantiate": 0}
        self.lock = threading.Lock()

    def module(self):
        S = cudaError_t.cudaSuccess
        m = types.ModuleType("cuda.bindings.runtime")
        m.__doc__ = "STAND-IN cuda.bindings.runtime for pyengine's CPU tests (not CUDA)"
        m.cudaError_t, m.cudaMemcpyKind, m.cudaStreamCaptureMode = cudaError_t, cudaMemcpyKind, cudaStreamCaptureMode
        m.cudaStreamNonBlocking = 1
        fc = self

        def count():
            if fc.devices == 0:
                return (cudaError_t.cudaErrorInsufficientDriver, None)
            return (S, fc.devices)

        def alloc(n, kind):
            buf = ctypes.create_string_buffer(int(n))
            ptr = ctypes.addressof(buf)
            with fc.lock:
                fc.buffers[ptr] = buf
                fc.counts[kind] += 1
            return (S, ptr)

        def free(ptr):
            with fc.lock:
                fc.buffers.pop(int(ptr), None)
                fc.counts["free"] += 1
            return (S,)

        def memcpy(dst, src, n, kind, stream=None):
            def op():
                ctypes.memmove(int(dst), int(src), int(n))
            with fc.lock:
                fc.counts["h2d" if kind == cudaMemcpyKind.cudaMemcpyHostToDevice else "d2h"] += 1
            if stream is not None and int(stream) in fc.capturing:
                fc.capturing[int(stream)].append(op)
            else:
                op()
            return (S,)

        def props(dev):
            return (S, types.SimpleNamespace(name=fc.name, major=fc.cc[0], minor=fc.cc[1]))

        def stream_create(flags):
            s = next(fc.ids)
            fc.streams.add(s)
            return (S, s)

        def begin_capture(stream, mode):
            fc.capturing[int(stream)] = []
            return (S,)

        def end_capture(stream):
            ops = fc.capturing.pop(int(stream))
            g = next(fc.ids)
            fc.graphs[g] = ops
            return (S, g)

        def instantiate(graph, flags):
            e = next(fc.ids)
            fc.execs[e] = fc.graphs[graph]
            fc.counts["graph_instantiate"] += 1
            return (S, e)

        def launch(exec_, stream):
            for op in fc.execs[exec_]:
                op()
            fc.counts["graph_launch"] += 1
            return (S,)

        m.cudaGetDeviceCount = count
        m.cudaGetDevice = lambda: (S, 0)
        m.cudaGetDeviceProperties = props
        m.cudaRuntimeGetVersion = lambda: (S, 12080)
        m.cudaDriverGetVersion = lambda: (S, 12080)
        m.cudaGetErrorString = lambda err: (S, b"stand-in error")
        m.cudaMalloc = lambda n: alloc(n, "malloc")
        m.cudaMallocHost = lambda n: alloc(n, "malloc_host")
        m.cudaFree = free
        m.cudaFreeHost = free
        m.cudaMemcpyAsync = memcpy
        m.cudaMemcpy = lambda dst, src, n, kind: memcpy(dst, src, n, kind)
        m.cudaStreamCreateWithFlags = stream_create
        m.cudaStreamSynchronize = lambda s: (S,)

        def device_sync():
            fc.counts["device_sync"] = fc.counts.get("device_sync", 0) + 1
            return (S,)
        m.cudaDeviceSynchronize = device_sync
        m.cudaStreamDestroy = lambda s: (fc.streams.discard(int(s)), S)[1:]
        m.cudaStreamBeginCapture = begin_capture
        m.cudaStreamEndCapture = end_capture
        m.cudaGraphInstantiate = instantiate
        m.cudaGraphLaunch = launch
        m.cudaGraphExecDestroy = lambda e: (fc.execs.pop(e, None), S)[1:]
        m.cudaGraphDestroy = lambda g: (fc.graphs.pop(g, None), S)[1:]
        return m


# ---------------------------------------------------------------------------
# tensorrt stand-in
# ---------------------------------------------------------------------------

class _Enum(enum.IntEnum):
    pass


def make_tensorrt(fake_cuda: FakeCuda, version="10.13.0", strongly_typed=True, progress_monitor=True,
                  build_fails=False):
    """A stand-in ``tensorrt`` module; ``trt.calls`` logs the builder calls."""
    trt = types.ModuleType("tensorrt")
    trt.__doc__ = "STAND-IN tensorrt module for pyengine's CPU tests (not TensorRT)"
    trt.__version__ = version
    trt.calls = []
    calls = trt.calls

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        def __init__(self):
            pass

    ILogger.Severity = Severity

    flags = {"STRONGLY_TYPED": 2} if strongly_typed else {}
    trt.NetworkDefinitionCreationFlag = _Enum("NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0, **flags})
    trt.MemoryPoolType = _Enum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1})
    trt.BuilderFlag = _Enum("BuilderFlag", {"DEBUG": 2, "VERSION_COMPATIBLE": 13})
    trt.HardwareCompatibilityLevel = _Enum("HardwareCompatibilityLevel",
                                           {"NONE": 0, "AMPERE_PLUS": 1, "SAME_COMPUTE_CAPABILITY": 2})
    trt.ProfilingVerbosity = _Enum("ProfilingVerbosity", {"LAYER_NAMES_ONLY": 0, "NONE": 1, "DETAILED": 2})
    trt.LayerInformationFormat = _Enum("LayerInformationFormat", {"ONELINE": 0, "JSON": 1})
    trt.TensorIOMode = _Enum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    trt.DataType = _Enum("DataType", {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4, "INT64": 9})
    trt.ILogger = ILogger
    np_of = {0: np.float32, 1: np.float16, 2: np.int8, 3: np.int32, 4: np.bool_, 9: np.int64}
    dt_of = {1: 0, 10: 1, 3: 2, 6: 3, 9: 4, 7: 9}
    trt.nptype = lambda dt: np_of[int(dt)]

    class IProfiler:
        def __init__(self):
            pass

    class IProgressMonitor:
        def __init__(self):
            pass

    trt.IProfiler = IProfiler
    if progress_monitor:
        trt.IProgressMonitor = IProgressMonitor

    class ParserError:
        def __init__(self, node, name, op, desc):
            self._n, self._name, self._op, self._desc = node, name, op, desc

        def desc(self):
            return self._desc

        def node(self):
            return self._n

        def node_name(self):
            return self._name

        def node_operator(self):
            return self._op

    class Tensor:
        def __init__(self, name, shape):
            self.name, self.shape = name, shape

    class Network:
        def __init__(self, flags):
            self.flags = flags
            self.model = None
            self.inputs = []

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network, logger):
            calls.append(("OnnxParser",))
            self.network, self.logger, self.errors = network, logger, []

        def parse(self, data):
            calls.append(("parse", len(data)))
            model = onnx.load_from_string(data)
            for i, n in enumerate(model.graph.node):
                if SUPPORTED_OPS is not None and n.op_type not in SUPPORTED_OPS:
                    self.errors.append(ParserError(i, n.name, n.op_type,
                                                   f"No importer registered for op: {n.op_type}"))
            if self.errors:
                return False
            inits = {t.name for t in model.graph.initializer}
            for v in model.graph.input:
                if v.name in inits:
                    continue
                dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim)
                self.network.inputs.append(Tensor(v.name, dims))
            self.network.model = data
            return True

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class TimingCache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return self.data + b"+standin-timing"

    class Config:
        def __init__(self):
            self.profiles, self.flags, self.cache = [], set(), None
            self._level = None

        def set_memory_pool_limit(self, pool, size):
            calls.append(("set_memory_pool_limit", pool, size))

        def add_optimization_profile(self, p):
            calls.append(("add_optimization_profile",))
            self.profiles.append(p)
            return len(self.profiles) - 1

        def create_timing_cache(self, data):
            calls.append(("create_timing_cache", bytes(data)))
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            calls.append(("set_timing_cache", ignore_mismatch))
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

        def set_flag(self, flag):
            calls.append(("set_flag", flag))
            self.flags.add(flag)

        def __setattr__(self, key, value):
            if key in ("builder_optimization_level", "hardware_compatibility_level", "profiling_verbosity",
                       "progress_monitor"):
                calls.append(("config." + key, value))
            object.__setattr__(self, key, value)

    class Builder:
        def __init__(self, logger):
            calls.append(("Builder",))
            self.logger = logger

        def create_network(self, flags):
            calls.append(("create_network", flags))
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls.append(("build_serialized_network",))
            self.logger.log(Severity.INFO, "stand-in build starting")
            monitor = getattr(config, "progress_monitor", None)
            if monitor is not None:  # called from several threads, as TensorRT does
                monitor.phase_start("Building", None, 4)

                def step(k):
                    monitor.step_complete("Building", k)
                threads = [threading.Thread(target=step, args=(k,)) for k in range(4)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                monitor.phase_finish("Building")
            if build_fails:
                self.logger.log(Severity.ERROR, "stand-in: no implementation for layer 'conv1'")
                return None
            profile = config.profiles[0].shapes if config.profiles else {}
            meta = {"profile": {k: [list(s) for s in v] for k, v in profile.items()}}
            head = json.dumps(meta).encode()
            return MAGIC + len(head).to_bytes(4, "little") + head + network.model

    if progress_monitor:
        Config.progress_monitor = None
    trt.Builder, trt.OnnxParser = Builder, OnnxParser

    # -- runtime -------------------------------------------------------------
    class Engine:
        def __init__(self, data):
            n = int.from_bytes(data[len(MAGIC):len(MAGIC) + 4], "little")
            meta = json.loads(data[len(MAGIC) + 4:len(MAGIC) + 4 + n])
            self.onnx = data[len(MAGIC) + 4 + n:]
            self.model = onnx.load_from_string(self.onnx)
            self.profile = {k: tuple(tuple(s) for s in v) for k, v in meta["profile"].items()}
            inits = {t.name for t in self.model.graph.initializer}
            self.io = []
            for v, mode in [(v, 1) for v in self.model.graph.input if v.name not in inits] + \
                           [(v, 2) for v in self.model.graph.output]:
                dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim)
                self.io.append((v.name, mode, dt_of[v.type.tensor_type.elem_type], dims))
            import onnxruntime as ort
            self.session = ort.InferenceSession(self.onnx, providers=["CPUExecutionProvider"])
            self.layers = _standin_layers(self.model)

        @property
        def num_io_tensors(self):
            return len(self.io)

        def get_tensor_name(self, i):
            return self.io[i][0]

        def _io(self, name):
            return next(x for x in self.io if x[0] == name)

        def get_tensor_mode(self, name):
            return trt.TensorIOMode(self._io(name)[1])

        def get_tensor_dtype(self, name):
            return trt.DataType(self._io(name)[2])

        def get_tensor_shape(self, name):
            return self._io(name)[3]

        def get_tensor_profile_shape(self, name, index):
            return self.profile[name]

        def create_execution_context(self):
            return Context(self)

        def create_engine_inspector(self):
            eng = self

            class Inspector:
                def get_engine_information(self, fmt):
                    assert fmt == trt.LayerInformationFormat.JSON
                    return json.dumps({"Layers": eng.layers, "I/O Tensors": [x[0] for x in eng.io]})
            return Inspector()

    class Context:
        def __init__(self, engine):
            self.engine = engine
            self.shapes, self.addresses = {}, {}
            self.profiler = None
            self.executions = 0
            self._out_shapes = {}

        def set_input_shape(self, name, shape):
            shape = tuple(int(d) for d in shape)
            rng = self.engine.profile.get(name)
            decl = self.engine._io(name)[3]
            if len(shape) != len(decl) or any(d != -1 and d != s for d, s in zip(decl, shape)):
                return False
            if rng and not all(lo <= s <= hi for lo, s, hi in zip(rng[0], shape, rng[2])):
                return False
            self.shapes[name] = shape
            return True

        def get_tensor_shape(self, name):
            if self.engine._io(name)[1] == 1:
                return self.shapes[name]
            key = tuple(sorted(self.shapes.items()))
            if key not in self._out_shapes:
                feeds = {n: np.zeros(s, np_of[self.engine._io(n)[2]]) for n, s in self.shapes.items()}
                outs = self.engine.session.run(None, feeds)
                self._out_shapes[key] = {o.name: v.shape for o, v in zip(self.engine.session.get_outputs(), outs)}
            return self._out_shapes[key][name]

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = int(ptr)
            return True

        def _compute(self):
            feeds = {}
            for name, mode, dt, _ in self.engine.io:
                if mode != 1:
                    continue
                shape = self.shapes[name]
                n = int(np.prod(shape)) * np.dtype(np_of[dt]).itemsize
                raw = ctypes.string_at(self.addresses[name], n)
                feeds[name] = np.frombuffer(raw, np_of[dt]).reshape(shape).copy()
            outs = self.engine.session.run(None, feeds)
            for o, v in zip(self.engine.session.get_outputs(), outs):
                v = np.ascontiguousarray(v)
                ctypes.memmove(self.addresses[o.name], v.ctypes.data, v.nbytes)
            self.executions += 1
            if self.profiler is not None:
                for layer in self.engine.layers:
                    self.profiler.report_layer_time(layer["Name"], 0.01)

        def execute_async_v3(self, stream):
            if int(stream) in fake_cuda.capturing:
                fake_cuda.capturing[int(stream)].append(self._compute)
            else:
                self._compute()
            return True

    class Runtime:
        def __init__(self, logger):
            calls.append(("Runtime",))
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, data):
            calls.append(("deserialize_cuda_engine", len(data)))
            if not bytes(data).startswith(MAGIC):
                return None
            return Engine(bytes(data))

    trt.Runtime = Runtime
    return trt


def _standin_layers(model):
    """Layer info like TensorRT's DETAILED inspector: Conv fused with the Relu after it."""
    nodes = list(model.graph.node)
    consumers = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    layers, used = [], set()
    for n in nodes:
        if n.name in used or n.op_type in ("QuantizeLinear", "DequantizeLinear", "Cast"):
            continue
        group = [n]
        nxt = consumers.get(n.output[0], [])
        if n.op_type == "Conv" and len(nxt) == 1 and nxt[0].op_type == "Relu":
            group.append(nxt[0])
        used.update(g.name for g in group)
        layers.append({"Name": " + ".join(g.name for g in group), "LayerType": group[0].op_type,
                       "Metadata": "\x1e".join(f"[ONNX Layer: {g.name}]" for g in group)})
    return layers


def install(monkeypatch, **kwargs):
    """Puts the stand-ins into sys.modules (undone by monkeypatch).

    Returns:
        (trt stand-in module, FakeCuda state).
    """
    fake = FakeCuda(**{k: kwargs.pop(k) for k in ("devices", "cc", "name") if k in kwargs})
    trt = make_tensorrt(fake, **kwargs)
    rt = fake.module()
    cuda = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = rt
    cuda.bindings = bindings
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", rt)
    return trt, fake
