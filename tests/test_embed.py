"""Embedding pyengine in C and C++ (issue 13, part 3): the installed C++
package, used from outside the tree.

The package (libpyengine, public headers, CMake config) comes from, in order:
$PYENGINE_EMBED_PREFIX; the one this pyengine was installed with (wheels
carry it under pyengine/cpp: ``python3 -m pyengine.embed``); or, in a source
checkout, ``cmake --install --component cpp`` into a temp prefix, from the
development build dir build/ when there is one (incremental), else from a
fresh library-only build. samples/cpp_app and samples/c_app are then configured with
find_package(pyengine) against it, built, and run on plans Python saved;
their outputs must equal Python's engine.run bit for bit (same thread
count). The C API's status codes, last-error text and thread-safety are
checked through ctypes.
"""

import ctypes
import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

import pyengine
from pyengine import zoo
from pyengine.embed import cmake_prefix_path

REPO = Path(__file__).resolve().parents[1]
THREADS = 2
CMAKE = shutil.which("cmake")
CXX = shutil.which(os.environ.get("CXX", "c++"))
CC = shutil.which(os.environ.get("CC", "cc"))

pytestmark = pytest.mark.skipif(
    not (CMAKE and CXX and CC),
    reason=f"needs cmake and C/C++ compilers (cmake: {CMAKE}, c++: {CXX}, cc: {CC})")

# pyengine_status codes (pyengine_c.h).
OK, INVALID_MODEL, UNSUPPORTED, SHAPE, DTYPE, PLAN_FORMAT, INVALID_ARGUMENT, BACKEND, INTERNAL = range(9)


def _run(cmd, **kwargs):
    """Runs a build step; fails the test with its output when it fails."""
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    if r.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return r


def _cmake_generator():
    return ["-G", "Ninja"] if shutil.which("ninja") else []


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    env = os.environ.get("PYENGINE_EMBED_PREFIX")
    if env:
        p = Path(env)
        assert list(p.glob("lib*/cmake/pyengine/pyengineConfig.cmake")), \
            f"PYENGINE_EMBED_PREFIX={env} holds no lib*/cmake/pyengine/pyengineConfig.cmake"
        return p
    bundled = cmake_prefix_path()
    if bundled:
        return Path(bundled)
    if not (REPO / "CMakeLists.txt").is_file():
        pytest.skip("this pyengine has no C++ package and there is no source tree to build one")
    tmp = tmp_path_factory.mktemp("embed-lib")
    # A source checkout with the development build (README: build/, whose
    # _core is the one imported in place): build libpyengine there, from the
    # same objects (incremental), and install the C++ package alone.
    dev = REPO / "build"
    if (dev / "CMakeCache.txt").is_file():
        built = subprocess.run([CMAKE, "--build", dev, "--target", "pyengine", "-j", "2"], capture_output=True)
        if built.returncode == 0:
            _run([CMAKE, "--install", dev, "--component", "cpp", "--prefix", tmp / "prefix"])
            return tmp / "prefix"
    # Otherwise the library alone (no Python module, so no pybind11 needed),
    # built and installed as a C++ user would.
    args = [CMAKE, "-S", REPO, "-B", tmp / "build", *_cmake_generator(), "-DCMAKE_BUILD_TYPE=Release",
            "-DPYENGINE_PYTHON=OFF"]
    if shutil.which("ccache"):
        args.append("-DCMAKE_CXX_COMPILER_LAUNCHER=ccache")
    _run(args)
    _run([CMAKE, "--build", tmp / "build", "--target", "pyengine", "-j", "2"])
    _run([CMAKE, "--install", tmp / "build", "--prefix", tmp / "prefix"])
    return tmp / "prefix"


@pytest.fixture(scope="module")
def library(prefix):
    libs = sorted(p for p in prefix.glob("lib*/libpyengine.so*") if not p.is_symlink()) or \
        sorted(prefix.glob("lib*/libpyengine.so*"))
    assert libs, f"no libpyengine.so under {prefix}"
    return libs[0]


@pytest.fixture(scope="module")
def samples(prefix, tmp_path_factory):
    """cpp_app and c_app, each configured and built as its own project
    outside the tree, against the installed package."""
    tmp = tmp_path_factory.mktemp("embed-samples")
    exes = {}
    for name in ("cpp_app", "c_app"):
        build = tmp / name
        _run([CMAKE, "-S", REPO / "samples" / name, "-B", build, *_cmake_generator(),
              f"-DCMAKE_PREFIX_PATH={prefix}", "-DCMAKE_BUILD_TYPE=Release"])
        _run([CMAKE, "--build", build, "-j", "2"])
        exes[name] = build / name
    return exes


# Models: an FP32 ResNet-18 and an INT8 (calibrated) pre-activation ResNet, so
# both the float and the integer kernels are compared.
MODELS = ["resnet18-fp32", "preact_resnet-int8"]


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("embed-plans")
    out = {}
    for key in MODELS:
        name, precision = key.split("-")
        model = zoo.ZOO[name]()
        if precision == "int8":
            inp = model.graph.input[0].name
            calib = [zoo.make_input(model, 2, seed=200 + i)[inp] for i in range(2)]
            engine = pyengine.build(model, precision="int8", calibration_data=calib, num_threads=THREADS,
                                    report=False, progress=False)
        else:
            engine = pyengine.build(model, backend="cpu", num_threads=THREADS)
        path = tmp / f"{key}.plan"
        engine.save(path)
        out[key] = (model, path)
    return out


def _python_outputs(plan, x):
    """Python's engine.run on the saved plan, at the same thread count."""
    engine = pyengine.load(plan, num_threads=THREADS)
    assert engine.num_threads == THREADS
    return engine, list(engine.run({engine.inputs[0].name: x}).values())


def _assert_bitwise(raw: bytes, want):
    """The concatenated raw outputs equal Python's arrays bit for bit."""
    offset = 0
    for w in want:
        got = np.frombuffer(raw, dtype=w.dtype, count=w.size, offset=offset).reshape(w.shape)
        offset += w.nbytes
        assert np.array_equal(got.view(np.uint8), np.ascontiguousarray(w).view(np.uint8)), \
            f"max |diff| {np.max(np.abs(got.astype(np.float64) - w))}"
    assert offset == len(raw), f"{len(raw)} bytes written, {offset} expected"


def _fresh_input(model, batch, seed):
    return zoo.make_input(model, batch, seed=seed)[model.graph.input[0].name]


# -- the installed package ----------------------------------------------------

def test_installed_files(prefix, library):
    """Only the public headers are installed, with the library, its CMake
    config, version file and exported targets."""
    assert sorted(p.name for p in (prefix / "include" / "pyengine").iterdir()) == \
        ["engine.h", "export.h", "pyengine_c.h"]
    assert list((prefix / "include").iterdir()) == [prefix / "include" / "pyengine"]
    cmake_dir = library.parent / "cmake" / "pyengine"
    for f in ("pyengineConfig.cmake", "pyengineConfigVersion.cmake", "pyengineTargets.cmake"):
        assert (cmake_dir / f).is_file(), f
    assert f'PACKAGE_VERSION "{pyengine.__version__}"' in (cmake_dir / "pyengineConfigVersion.cmake").read_text()


@pytest.mark.parametrize("std", ["c++14", "c++17"])
def test_cpp_header_compiles_alone(prefix, tmp_path, std):
    """engine.h (and pyengine_c.h from C++) need only the standard library:
    nothing but the installed include dir is on the path."""
    src = tmp_path / "t.cc"
    src.write_text("#include <pyengine/engine.h>\n#include <pyengine/pyengine_c.h>\n"
                   "int main() { pyengine::EngineOptions o; return o.num_threads; }\n")
    _run([CXX, f"-std={std}", "-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only",
          f"-I{prefix / 'include'}", src])


def test_c_header_is_c99(prefix, tmp_path):
    src = tmp_path / "t.c"
    src.write_text("#include <pyengine/pyengine_c.h>\n"
                   "int main(void) { pyengine_tensor t = {PYENGINE_FLOAT32, 0, 0, 0, 0}; return t.rank; }\n")
    _run([CC, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only",
          f"-I{prefix / 'include'}", src])


def test_exports_only_the_public_api(library):
    nm = shutil.which("nm")
    if not nm:
        pytest.skip("needs nm (binutils)")
    r = _run([nm, "-D", "-C", "--defined-only", library])
    names = [line.split(" ", 2)[2] for line in r.stdout.splitlines() if line.count(" ") >= 2]
    allowed = ("pyengine::", "pyengine_", "typeinfo for pyengine::", "typeinfo name for pyengine::",
               "vtable for pyengine::")
    leaked = [n for n in names if not n.startswith(allowed) and not n.startswith("PYENGINE")]
    assert not leaked, f"{len(leaked)} non-API symbols exported, e.g. {leaked[:10]}"
    for want in ("pyengine::Engine::load(", "pyengine_engine_run", "typeinfo for pyengine::ShapeError"):
        assert any(n.startswith(want) for n in names), want
    # The ISA kernels are inside (the internal engine:: namespace, hidden).
    assert library.stat().st_size > 500_000


# -- the samples, outside the tree -------------------------------------------

@pytest.mark.parametrize("key", MODELS)
def test_cpp_sample_matches_python(samples, plans, tmp_path, key):
    model, plan = plans[key]
    x = _fresh_input(model, 2, seed=int.from_bytes(os.urandom(2), "little"))
    np.save(tmp_path / "x.npy", x)
    r = _run([samples["cpp_app"], plan, tmp_path / "x.npy", tmp_path / "y.raw", THREADS])
    engine, want = _python_outputs(plan, x)
    assert f"output {engine.outputs[0].name} float32 [2," in r.stdout
    _assert_bitwise((tmp_path / "y.raw").read_bytes(), want)


@pytest.mark.parametrize("key", MODELS)
def test_c_sample_matches_python(samples, plans, tmp_path, key):
    model, plan = plans[key]
    x = _fresh_input(model, 3, seed=int.from_bytes(os.urandom(2), "little"))
    (tmp_path / "x.raw").write_bytes(x.tobytes())
    r = _run([samples["c_app"], plan, tmp_path / "x.raw", tmp_path / "y.raw", THREADS])
    assert "batch 3" in r.stdout
    _, want = _python_outputs(plan, x)
    _assert_bitwise((tmp_path / "y.raw").read_bytes(), want)


def _corrupt_copy(plan, dst):
    data = bytearray(plan.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0x5A
    dst.write_bytes(bytes(data))
    return dst


def test_c_sample_errors(samples, plans, tmp_path):
    """Through the C API: a corrupt plan is PYENGINE_ERROR_PLAN_FORMAT with a
    message naming the file; an input file of the wrong size is
    PYENGINE_ERROR_SHAPE naming the input."""
    model, plan = plans["resnet18-fp32"]
    bad = _corrupt_copy(plan, tmp_path / "corrupt.plan")
    r = subprocess.run([samples["c_app"], bad, tmp_path / "none.raw", tmp_path / "y.raw"],
                       capture_output=True, text=True)
    assert r.returncode == PLAN_FORMAT, r.stderr
    assert "PYENGINE_ERROR_PLAN_FORMAT" in r.stderr and str(bad) in r.stderr

    missing = tmp_path / "missing.plan"
    r = subprocess.run([samples["c_app"], missing, tmp_path / "none.raw", tmp_path / "y.raw"],
                       capture_output=True, text=True)
    assert r.returncode == PLAN_FORMAT and str(missing) in r.stderr, r.stderr

    x = _fresh_input(model, 1, seed=5)
    (tmp_path / "x.raw").write_bytes(x.tobytes() + b"\0\0\0\0")  # one float too many
    r = subprocess.run([samples["c_app"], plan, tmp_path / "x.raw", tmp_path / "y.raw", str(THREADS)],
                       capture_output=True, text=True)
    assert r.returncode == SHAPE, r.stderr
    name = model.graph.input[0].name
    assert "PYENGINE_ERROR_SHAPE" in r.stderr and f"input '{name}'" in r.stderr
    assert f"holds {x.nbytes + 4} bytes" in r.stderr


def test_cpp_sample_errors(samples, plans, tmp_path):
    """Through the C++ API: typed exceptions thrown in libpyengine are caught
    by type in the program (PlanFormatError, ShapeError, DTypeError)."""
    model, plan = plans["resnet18-fp32"]
    x = _fresh_input(model, 1, seed=6)
    np.save(tmp_path / "x.npy", x)
    bad = _corrupt_copy(plan, tmp_path / "corrupt.plan")
    r = subprocess.run([samples["cpp_app"], bad, tmp_path / "x.npy", tmp_path / "y.raw"],
                       capture_output=True, text=True)
    assert r.returncode == 3 and "(PlanFormatError)" in r.stderr and str(bad) in r.stderr, r.stderr

    np.save(tmp_path / "wide.npy", np.concatenate([x, x[..., :1]], axis=-1))  # W + 1
    r = subprocess.run([samples["cpp_app"], plan, tmp_path / "wide.npy", tmp_path / "y.raw"],
                       capture_output=True, text=True)
    assert r.returncode == 4 and "(ShapeError)" in r.stderr, r.stderr
    assert f"input '{model.graph.input[0].name}'" in r.stderr

    np.save(tmp_path / "f64.npy", x.astype(np.float64))
    r = subprocess.run([samples["cpp_app"], plan, tmp_path / "f64.npy", tmp_path / "y.raw"],
                       capture_output=True, text=True)
    assert r.returncode == 4 and "(DTypeError)" in r.stderr and "float32" in r.stderr, r.stderr


# -- the C API through ctypes -------------------------------------------------

class Tensor(ctypes.Structure):
    _fields_ = [("dtype", ctypes.c_int32), ("rank", ctypes.c_int32), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("data", ctypes.c_void_p), ("nbytes", ctypes.c_size_t)]


class Spec(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int32), ("rank", ctypes.c_int32),
                ("shape", ctypes.POINTER(ctypes.c_int64))]


def _tensor(a: np.ndarray, shape=None, nbytes=None, dtype=1):
    shape = a.shape if shape is None else shape
    dims = (ctypes.c_int64 * max(len(shape), 1))(*shape)
    t = Tensor(dtype, len(shape), dims, a.ctypes.data, a.nbytes if nbytes is None else nbytes)
    t._keep = (a, dims)
    return t


@pytest.fixture(scope="module")
def capi(library):
    lib = ctypes.CDLL(str(library))
    P = ctypes.c_void_p
    lib.pyengine_last_error.restype = ctypes.c_char_p
    lib.pyengine_status_name.restype = ctypes.c_char_p
    lib.pyengine_version.restype = ctypes.c_char_p
    lib.pyengine_engine_load.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(P)]
    lib.pyengine_engine_load_memory.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, ctypes.POINTER(P)]
    lib.pyengine_engine_free.argtypes = [P]
    lib.pyengine_engine_num_inputs.argtypes = [P]
    lib.pyengine_engine_num_inputs.restype = ctypes.c_size_t
    lib.pyengine_engine_num_outputs.argtypes = [P]
    lib.pyengine_engine_num_outputs.restype = ctypes.c_size_t
    lib.pyengine_engine_num_threads.argtypes = [P]
    lib.pyengine_engine_input.argtypes = [P, ctypes.c_size_t, ctypes.POINTER(Spec)]
    lib.pyengine_engine_output.argtypes = [P, ctypes.c_size_t, ctypes.POINTER(Spec)]
    lib.pyengine_engine_output_shape.argtypes = [P, ctypes.POINTER(Tensor), ctypes.c_size_t, ctypes.c_size_t,
                                                 ctypes.POINTER(ctypes.c_int64), ctypes.c_int32,
                                                 ctypes.POINTER(ctypes.c_int32)]
    lib.pyengine_engine_run.argtypes = [P, ctypes.POINTER(Tensor), ctypes.c_size_t, ctypes.POINTER(Tensor),
                                        ctypes.c_size_t]
    return lib


def _load_memory(capi, data: bytes):
    handle = ctypes.c_void_p()
    status = capi.pyengine_engine_load_memory(data, len(data), THREADS, ctypes.byref(handle))
    return status, handle


def _run_c(capi, handle, x, out):
    return capi.pyengine_engine_run(handle, ctypes.byref(_tensor(x)), 1, ctypes.byref(_tensor(out)), 1)


def test_c_api(capi, plans):
    """Specs, output shapes and a zero-copy run into a numpy buffer, from a
    plan loaded from memory; every error path gives its status code and the
    thread's last-error text."""
    model, plan = plans["resnet18-fp32"]
    assert capi.pyengine_version().decode() == pyengine.__version__
    status, handle = _load_memory(capi, plan.read_bytes())
    assert status == OK, capi.pyengine_last_error()
    try:
        assert capi.pyengine_last_error() == b""
        assert capi.pyengine_engine_num_threads(handle) == THREADS
        engine = pyengine.load(plan, num_threads=THREADS)
        spec = Spec()
        assert capi.pyengine_engine_num_inputs(handle) == 1 == len(engine.inputs)
        assert capi.pyengine_engine_input(handle, 0, ctypes.byref(spec)) == OK
        assert spec.name.decode() == engine.inputs[0].name and spec.dtype == 1
        assert [spec.shape[i] for i in range(spec.rank)] == [-1 if d is None else d for d in engine.inputs[0].shape]
        assert capi.pyengine_engine_output(handle, 0, ctypes.byref(spec)) == OK
        assert spec.name.decode() == engine.outputs[0].name
        assert capi.pyengine_engine_input(handle, 1, ctypes.byref(spec)) == INVALID_ARGUMENT
        assert b"out of range" in capi.pyengine_last_error()

        x = _fresh_input(model, 4, seed=int.from_bytes(os.urandom(2), "little"))
        want = engine(x)
        dims, rank = (ctypes.c_int64 * 8)(), ctypes.c_int32()
        assert capi.pyengine_engine_output_shape(handle, ctypes.byref(_tensor(x)), 1, 0, dims, 8,
                                                 ctypes.byref(rank)) == OK
        assert tuple(dims[i] for i in range(rank.value)) == want.shape
        out = np.full(want.shape, np.nan, np.float32)
        assert _run_c(capi, handle, x, out) == OK
        assert np.array_equal(out.view(np.uint32), want.view(np.uint32))
        # Buffers need only element alignment: both 4 bytes off a 64-byte line.
        raw_x, raw_y = np.empty(x.size + 17, np.float32), np.empty(out.size + 17, np.float32)
        off_x = (-(raw_x.ctypes.data // 4) + 1) % 16
        off_y = (-(raw_y.ctypes.data // 4) + 1) % 16
        x_odd = raw_x[off_x:off_x + x.size].reshape(x.shape)
        y_odd = raw_y[off_y:off_y + out.size].reshape(out.shape)
        x_odd[...] = x
        assert x_odd.ctypes.data % 64 == 4 and y_odd.ctypes.data % 64 == 4
        assert _run_c(capi, handle, x_odd, y_odd) == OK
        assert np.array_equal(y_odd.view(np.uint32), want.view(np.uint32))

        # Error paths: the status names the kind, the text names the culprit.
        name = engine.inputs[0].name.encode()
        wrong_hw = np.ascontiguousarray(x[:, :, :-1])
        assert _run_c(capi, handle, wrong_hw, out) == SHAPE
        assert b"input '" + name + b"' must have shape" in capi.pyengine_last_error()
        t = _tensor(x, nbytes=x.nbytes - 4)
        assert capi.pyengine_engine_run(handle, ctypes.byref(t), 1, ctypes.byref(_tensor(out)), 1) == SHAPE
        assert b"holds %d bytes" % (x.nbytes - 4) in capi.pyengine_last_error()
        x64 = x.astype(np.float64)
        t = _tensor(x64, dtype=11)
        assert capi.pyengine_engine_run(handle, ctypes.byref(t), 1, ctypes.byref(_tensor(out)), 1) == DTYPE
        assert b"must be float32, got float64" in capi.pyengine_last_error()
        small = np.zeros((2,) + want.shape[1:], np.float32)
        assert _run_c(capi, handle, x, small) == SHAPE
        assert b"output '" + engine.outputs[0].name.encode() + b"'" in capi.pyengine_last_error()
        overlap = np.zeros(x.size + out.size, np.float32)
        xo = overlap[:x.size].reshape(x.shape)
        xo[...] = x
        t_out = _tensor(overlap[x.size - 1:x.size - 1 + out.size].reshape(out.shape))
        assert capi.pyengine_engine_run(handle, ctypes.byref(_tensor(xo)), 1, ctypes.byref(t_out), 1) \
            == INVALID_ARGUMENT
        assert b"overlaps" in capi.pyengine_last_error()
        # Two inputs for a one-input model. The array must really hold two
        # tensors: the count is the caller's promise, and reading a second
        # struct past a single one read the stack (a rare segfault in CI).
        t0, t1 = _tensor(x), _tensor(x)  # kept alive: the array copies their pointers
        two = (Tensor * 2)(t0, t1)
        assert capi.pyengine_engine_run(handle, two, 2, ctypes.byref(_tensor(out)), 1) == INVALID_ARGUMENT
        assert capi.pyengine_engine_run(None, None, 0, None, 0) == INVALID_ARGUMENT
        assert capi.pyengine_status_name(SHAPE) == b"PYENGINE_ERROR_SHAPE"

        # The last error is per thread, and a successful call clears it.
        seen = []
        th = threading.Thread(target=lambda: seen.append(capi.pyengine_last_error()))
        th.start()
        th.join()
        assert seen == [b""] and capi.pyengine_last_error() != b""
        assert _run_c(capi, handle, x, out) == OK and capi.pyengine_last_error() == b""
    finally:
        capi.pyengine_engine_free(handle)

    data = bytearray(plan.read_bytes())
    data[len(data) // 2] ^= 0xFF
    status, handle = _load_memory(capi, bytes(data))
    assert status == PLAN_FORMAT and not handle.value
    assert b"<memory>" in capi.pyengine_last_error()
    status, handle = _load_memory(capi, b"not a plan")
    assert status == PLAN_FORMAT and b"<memory>" in capi.pyengine_last_error()
    handle = ctypes.c_void_p()
    missing = str(plan) + ".missing"
    assert capi.pyengine_engine_load(missing.encode(), 1, ctypes.byref(handle)) == PLAN_FORMAT
    assert missing.encode() in capi.pyengine_last_error()
    capi.pyengine_engine_free(None)


def test_c_api_concurrent_runs(capi, plans):
    """The header's thread-safety statement: one engine run from 4 threads
    at once (ctypes releases the GIL), batch sizes interleaved; every output
    equals the same input run alone."""
    model, plan = plans["preact_resnet-int8"]
    status, handle = _load_memory(capi, plan.read_bytes())
    assert status == OK, capi.pyengine_last_error()
    try:
        engine = pyengine.load(plan, num_threads=THREADS)
        xs = [_fresh_input(model, 1 + i % 2, seed=300 + i) for i in range(4)]
        want = [engine(x) for x in xs]
        errors = []

        def work(i):
            out = np.empty_like(want[i])
            for _ in range(10):
                out.fill(np.nan)
                status = _run_c(capi, handle, xs[i], out)
                if status != OK or not np.array_equal(out.view(np.uint32), want[i].view(np.uint32)):
                    errors.append((i, status, capi.pyengine_last_error()))
                    return

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
    finally:
        capi.pyengine_engine_free(handle)


@pytest.mark.parametrize("meta, status", [
    ({"backend": "tensorrt"}, BACKEND),
    ({"backend": "npu"}, PLAN_FORMAT),
    ({"a": {"backend": "tensorrt"}, "backend": "cpu"}, OK),  # only the top-level key counts
    ({"precision": "fp32"}, OK),                             # no backend: a CPU plan
])
def test_c_api_plan_backend(capi, plans, tmp_path, meta, status):
    """A plan's metadata decides whether the C++ runtime may run it, as
    pyengine.load decides: TensorRT plans are BackendUnavailableError."""
    import json

    from pyengine import _core

    model, plan = plans["resnet18-fp32"]
    engine = pyengine.load(plan)
    path = tmp_path / "m.plan"
    _core.save_plan(engine._graph, json.dumps(meta, indent=1, sort_keys=True), str(path))
    handle = ctypes.c_void_p()
    got = capi.pyengine_engine_load(str(path).encode(), 1, ctypes.byref(handle))
    assert got == status, capi.pyengine_last_error()
    capi.pyengine_engine_free(handle)
    if status != OK:
        assert str(path).encode() in capi.pyengine_last_error()
