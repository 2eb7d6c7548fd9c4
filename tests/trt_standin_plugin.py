"""pytest plugin: puts the STAND-IN tensorrt / cuda-python modules
(trt_standin.py) in place for a whole session, to dry-run the code of the
GPU tests on a machine without a GPU:

    cd tests && python3 -m pytest -q -p trt_standin_plugin gpu

This checks that the GPU tests' own code runs; it verifies nothing about
TensorRT or CUDA (the stand-ins execute the ONNX with onnxruntime on the CPU).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import trt_standin  # noqa: E402


class _Permanent:
    def setitem(self, mapping, key, value):
        mapping[key] = value


trt_standin.install(_Permanent())
