"""pyengine's cuda-python runtime layer on a real GPU, without TensorRT.

The execution context here is a STAND-IN engine that copies its input to its
output with cudaMemcpyAsync on the stream it is given (real CUDA work), so
that device buffers, pinned staging, the stream, CUDA-graph capture and
DLPack / __cuda_array_interface__ inputs are tested on any machine with an
NVIDIA GPU and cuda-python, TensorRT or not. Skipped without a GPU.
"""

import threading
import types

import numpy as np
import pytest

from pyengine.backends import trt_runtime

try:
    _count, _reason = trt_runtime.gpu_count()
except Exception as exc:  # cuda-python missing
    _count, _reason = 0, str(exc)

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_count == 0, reason=f"needs cuda-python and a GPU: {_reason}")]


def copy_engine_trt(shape=(-1, 3, 8, 8), max_batch=16):
    """A stand-in `tensorrt` whose engine copies tensor 'x' to tensor 'y' on the GPU."""
    rt = trt_runtime.cudart()
    trt = types.SimpleNamespace()
    trt.TensorIOMode = types.SimpleNamespace(INPUT=1, OUTPUT=2)
    trt.nptype = lambda dt: np.float32

    class Context:
        def __init__(self):
            self.shape, self.addr, self.profiler, self.executions = None, {}, None, 0

        def set_input_shape(self, name, s):
            if s[0] > max_batch or tuple(s[1:]) != tuple(shape[1:]):
                return False
            self.shape = tuple(s)
            return True

        def get_tensor_shape(self, name):
            return self.shape

        def set_tensor_address(self, name, ptr):
            self.addr[name] = int(ptr)
            return True

        def execute_async_v3(self, stream):
            n = int(np.prod(self.shape)) * 4
            err, = rt.cudaMemcpyAsync(self.addr["y"], self.addr["x"], n,
                                      rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream)
            self.executions += 1
            return int(err) == 0

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return "xy"[i]

        def get_tensor_dtype(self, name):
            return 0

        def get_tensor_shape(self, name):
            return shape

        def get_tensor_mode(self, name):
            return 1 if name == "x" else 2

        def get_tensor_profile_shape(self, name, i):
            return [(1,) + shape[1:], (1,) + shape[1:], (max_batch,) + shape[1:]]

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, plan):
            return Engine()

    trt.Runtime = Runtime
    return trt


def _runner():
    return trt_runtime.TRTRunner(copy_engine_trt(), b"copy", logger=None)


def test_numpy_round_trip_and_buffer_reuse():
    r = _runner()
    rng = np.random.default_rng()
    for batch in (4, 1, 3, 4):
        x = rng.standard_normal((batch, 3, 8, 8), dtype=np.float32)
        np.testing.assert_array_equal(r.run({"x": x})["y"], x)
    assert set(r._device) == {"x", "y"} and r._device["x"].nbytes == 4 * 3 * 8 * 8 * 4
    r.close()


def test_cuda_graph_replays():
    r = _runner()
    r.use_cuda_graph = True
    rng = np.random.default_rng()
    for _ in range(3):
        x = rng.standard_normal((2, 3, 8, 8), dtype=np.float32)
        np.testing.assert_array_equal(r.run({"x": x})["y"], x)  # new data each time: the graph reads the buffers
    assert len(r._graphs) == 1 and r.context.executions == 2  # one eager run + one captured enqueue
    r.close()


def test_device_outputs_and_four_threads():
    r = _runner()
    x = np.random.default_rng().standard_normal((2, 3, 8, 8), dtype=np.float32)
    y = r.run({"x": x}, device_outputs=True)["y"]
    np.testing.assert_array_equal(y.numpy(), x)
    # the output can itself be fed back as a device input (zero copy)
    np.testing.assert_array_equal(r.run({"x": y})["y"], x)
    errors = []

    def worker(seed):
        xs = np.random.default_rng(seed).standard_normal((1 + seed % 4, 3, 8, 8), dtype=np.float32)
        for _ in range(20):
            if not np.array_equal(r.run({"x": xs})["y"], xs):
                errors.append(seed)

    ts = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []
    r.close()


def test_dlpack_and_cai_inputs_from_torch_or_cupy():
    x = np.random.default_rng().standard_normal((2, 3, 8, 8), dtype=np.float32)
    r = _runner()
    tried = 0
    try:
        import cupy

        tried += 1
        np.testing.assert_array_equal(r.run({"x": cupy.asarray(x)})["y"], x)
    except ImportError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            tried += 1
            t = torch.from_numpy(x).cuda()
            np.testing.assert_array_equal(r.run({"x": t})["y"], x)

            class OnlyDLPack:
                def __dlpack__(self, stream=None):
                    return t.__dlpack__(stream=stream)

                def __dlpack_device__(self):
                    return t.__dlpack_device__()

            np.testing.assert_array_equal(r.run({"x": OnlyDLPack()})["y"], x)
    except ImportError:
        pass
    r.close()
    if not tried:
        pytest.skip("neither CuPy nor torch with CUDA is installed")
