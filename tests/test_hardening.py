"""Hardening (issue 11): absurd sizes, forged plans, junk into every entry point,
external data outside the model's folder.

Each case from the issue is pinned here with the behaviour it must have now
(before the fix it segfaulted, returned garbage, or raised a non-pyengine
exception; see the issue text).
"""

import os
import struct

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyengine
import pyengine.zoo
from pyengine import _core

INT64_MAX = 2**63 - 1


# -- tiny models ---------------------------------------------------------------

def _model(nodes, inits=(), outputs=("y",), in_shape=(1, 1, 8, 8)):
    g = helper.make_graph(list(nodes), "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                          initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _conv(relu=False, **attrs):
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((1, 1, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c" if relu else "y"], name="conv", **attrs)]
    if relu:
        nodes.append(helper.make_node("Relu", ["c"], ["y"], name="relu"))
    return _model(nodes, [w])


def _pool(op, **attrs):
    return _model([helper.make_node(op, ["x"], ["y"], name="pool", kernel_shape=[3, 3], **attrs)])


def _expand(batch):
    s = numpy_helper.from_array(np.array([batch, 1, 8, 8], np.int64), "s")
    return _model([helper.make_node("Expand", ["x", "s"], ["y"], name="expand")], [s])


def _x(shape=(1, 1, 8, 8), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# -- 1. absurd sizes are a ShapeError at build time, naming the node -------------

# Before: segfault on first run (2**60, 2**56+Relu), a silent 4x6 tensor of zeros
# (INT64_MAX), builtins.MemoryError, ValueError "cannot create std::vector larger
# than max_size()", ValueError "array is too big", InternalError at run time.
ISSUE_CASES = {
    "conv_pads_2^60": (lambda: _conv(pads=[2**60, 0, 0, 0]), "conv"),
    "conv_relu_pads_2^56": (lambda: _conv(relu=True, pads=[2**56, 0, 0, 0]), "conv"),
    "conv_pads_int64_max": (lambda: _conv(pads=[INT64_MAX, 0, INT64_MAX, 0]), "conv"),
    "conv_pads_2^61": (lambda: _conv(pads=[2**61, 0, 0, 0]), "conv"),
    "conv_pads_2^40": (lambda: _conv(pads=[2**40, 0, 0, 0]), "conv"),
    "conv_pads_2^48": (lambda: _conv(pads=[0, 2**48, 0, 0]), "conv"),
    "conv_pads_2^56": (lambda: _conv(pads=[2**56, 0, 0, 0]), "conv"),
    "conv_dilations_2^62": (lambda: _conv(dilations=[2**62, 1]), "conv"),
    "conv_strides_2^62": (lambda: _conv(strides=[2**62, 1]), "conv"),
    "conv_pads_at_limit": (lambda: _conv(pads=[2**31 - 1, 0, 0, 0]), "conv"),  # in range, output too big
    "maxpool_pads_2^60": (lambda: _pool("MaxPool", pads=[2**60, 0, 0, 0]), "pool"),
    "avgpool_pads_2^62": (lambda: _pool("AveragePool", pads=[2**62, 0, 0, 0]), "pool"),
    "maxpool_dilations_2^62": (lambda: _pool("MaxPool", dilations=[2**62, 1]), "pool"),
    "expand_batch_2^31": (lambda: _expand(2**31), "expand"),
}


@pytest.mark.parametrize("case", sorted(ISSUE_CASES))
def test_absurd_sizes_fail_at_build(case):
    make, node = ISSUE_CASES[case]
    with pytest.raises(pyengine.ShapeError, match=f"node '{node}'"):
        pyengine.build(make(), backend="cpu")


def test_int64_max_pads_rejected_like_onnxruntime():
    """Before: built and returned a [1,1,4,6] tensor of zeros (the pad sum wrapped)."""
    model = _conv(pads=[INT64_MAX, 0, INT64_MAX, 0])
    with pytest.raises(pyengine.ShapeError, match="pads"):
        pyengine.build(model, backend="cpu", optimize=False)
    ort = pytest.importorskip("onnxruntime")
    with pytest.raises(Exception):  # the reference rejects the model too
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"x": _x()})


def test_zoo_pooling_with_huge_pads():
    """The 1,000-case attribute fuzz crashed on pads of 2**62 in the zoo `pooling` model."""
    for op in ("Conv", "MaxPool", "AveragePool"):
        model = pyengine.zoo.build_model("pooling")
        node = next(n for n in model.graph.node if n.op_type == op and any(a.name == "pads" for a in n.attribute))
        for a in node.attribute:
            if a.name == "pads":
                a.ints[0] = 2**62
        with pytest.raises(pyengine.ShapeError, match=f"node '{node.name}'"):
            pyengine.build(model, backend="cpu")


def test_large_but_valid_pads_still_run():
    """The limits do not cut legitimate models: pads larger than the input are fine."""
    model = _conv(pads=[5, 7, 3, 1])
    y = pyengine.build(model, backend="cpu")(_x())
    assert y.shape == (1, 1, 14, 14)


def test_duplicate_graph_outputs_rejected():
    """Before: accepted, and one output came back."""
    model = _model([helper.make_node("Relu", ["x"], ["y"])], outputs=("y", "y"))
    with pytest.raises(pyengine.InvalidModelError, match="'y' is listed twice"):
        pyengine.build(model, backend="cpu")


def test_per_tensor_limit_is_configurable():
    model = _expand(64)  # [64,1,8,8] float32 = 16 KiB
    default = pyengine.max_tensor_bytes()
    assert default > 2**20
    try:
        pyengine.set_max_tensor_bytes(8192)
        assert pyengine.max_tensor_bytes() == 8192
        with pytest.raises(pyengine.ShapeError, match="above the per-tensor limit of 8192"):
            pyengine.build(model, backend="cpu")
    finally:
        pyengine.set_max_tensor_bytes(None)
    assert pyengine.max_tensor_bytes() == default
    assert pyengine.build(model, backend="cpu")(_x()).shape == (64, 1, 8, 8)
    with pytest.raises(pyengine.InvalidArgumentError):
        pyengine.set_max_tensor_bytes(-5)


def test_dynamic_batch_checked_at_run():
    """With a dynamic batch the sizes are known only at run time: still a ShapeError."""
    model = pyengine.zoo.build_model("flatten_chain")
    engine = pyengine.build(model, backend="cpu")
    x = pyengine.zoo.make_input(model, 2)
    engine.run(x)
    try:
        pyengine.set_max_tensor_bytes(100_000)
        with pytest.raises(pyengine.ShapeError, match="per-tensor limit"):
            engine.run(pyengine.zoo.make_input(model, 64))
    finally:
        pyengine.set_max_tensor_bytes(None)


def test_memory_limit_fails_before_allocating():
    model = pyengine.zoo.build_model("flatten_chain")
    engine = pyengine.build(model, backend="cpu", memory_limit=4 << 20)
    assert engine.memory_limit == 4 << 20
    ref = engine.run(pyengine.zoo.make_input(model, 1))
    arena = engine.memory_info()["arena"]
    with pytest.raises(pyengine.ShapeError, match="memory_limit"):
        engine.run(pyengine.zoo.make_input(model, 512))
    assert engine.memory_info()["arena"] == arena  # nothing was allocated
    engine.memory_limit = None
    out = engine.run(pyengine.zoo.make_input(model, 1))
    np.testing.assert_array_equal(out["output"], ref["output"])
    info = engine.memory_info()
    assert info["weights"] > 0 and info["arena"] > 0
    with pytest.raises(pyengine.InvalidArgumentError):
        engine.memory_limit = -1


# -- 2. forged plans (checksums recomputed) are a PlanFormatError ----------------

def _sections(data):
    nsec = struct.unpack_from("<I", data, 16)[0]
    out = {}
    for i in range(nsec):
        kind, _, off, size, _ = struct.unpack_from("<IIQQQ", data, 24 + 32 * i)
        out[kind] = (i, off, size)
    return out


def forge(data: bytes, edit) -> bytes:
    """Applies edit(graph_bytes) -> graph_bytes to the graph section of a plan and
    recomputes every checksum, as a forger would (the section keeps its size)."""
    data = bytearray(data)
    i, off, size = _sections(bytes(data))[2]
    graph = edit(bytes(data[off:off + size]))
    assert len(graph) == size
    data[off:off + size] = graph
    struct.pack_into("<Q", data, 24 + 32 * i + 24, _core.plan_checksum(graph))
    nsec = struct.unpack_from("<I", data, 16)[0]
    header = 24 + 32 * nsec
    struct.pack_into("<Q", data, header, _core.plan_checksum(bytes(data[:header])))
    return bytes(data)


def _ints_attr(name, values):
    return struct.pack("<I", len(name)) + name + bytes([7]) + struct.pack("<I", len(values)) + struct.pack(
        f"<{len(values)}q", *values)


@pytest.fixture(scope="module")
def conv_plan(tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "conv.plan"
    pyengine.build(_conv(relu=True, pads=[1, 1, 1, 1]), backend="cpu", optimize=False).save(path)
    return path.read_bytes()


def _replace(old, new):
    def edit(graph):
        assert old in graph, "pattern not in the plan"
        return graph.replace(old, new, 1)
    return edit


FORGERIES = {
    # Before: segfault on first run.
    "pads_2^60": _replace(_ints_attr(b"pads", [1, 1, 1, 1]), _ints_attr(b"pads", [2**60, 0, 0, 0])),
    "pads_int64_max": _replace(_ints_attr(b"pads", [1, 1, 1, 1]), _ints_attr(b"pads", [INT64_MAX, 0, INT64_MAX, 0])),
    "pads_negative": _replace(_ints_attr(b"pads", [1, 1, 1, 1]), _ints_attr(b"pads", [-3, 0, 0, 0])),
    # Before: InvalidModelError / UnsupportedOperatorError at load.
    "attr_renamed": _replace(_ints_attr(b"pads", [1, 1, 1, 1]), _ints_attr(b"padz", [1, 1, 1, 1])),
    "op_renamed": _replace(b"\x04\x00\x00\x00Relu", b"\x04\x00\x00\x00Relx"),
    # Before: UnicodeDecodeError at load.
    "name_not_utf8": _replace(b"\x01\x00\x00\x00x", b"\x01\x00\x00\x00\xff"),
    "input_dims_2^40": _replace(struct.pack("<4q", 1, 1, 8, 8), struct.pack("<4q", 2**40, 1, 8, 8)),
    "input_dims_negative": _replace(struct.pack("<4q", 1, 1, 8, 8), struct.pack("<4q", 1, -7, 8, 8)),
}


@pytest.mark.parametrize("case", sorted(FORGERIES))
def test_forged_plans_are_plan_format_errors(case, conv_plan, tmp_path):
    edit = FORGERIES[case]
    try:
        blob = forge(conv_plan, edit)
    except AssertionError:
        pytest.fail(f"forgery {case} did not find its pattern in the plan")
    path = tmp_path / f"{case}.plan"
    path.write_bytes(blob)
    with pytest.raises(pyengine.PlanFormatError, match=r"plan '.*\.plan'"):
        engine = pyengine.load(path)
        engine(_x())


def test_forged_metadata_not_utf8(conv_plan, tmp_path):
    data = bytearray(conv_plan)
    i, off, size = _sections(conv_plan)[1]
    data[off + 5] = 0xFF
    struct.pack_into("<Q", data, 24 + 32 * i + 24, _core.plan_checksum(bytes(data[off:off + size])))
    nsec = struct.unpack_from("<I", data, 16)[0]
    struct.pack_into("<Q", data, 24 + 32 * nsec, _core.plan_checksum(bytes(data[:24 + 32 * nsec])))
    path = tmp_path / "meta.plan"
    path.write_bytes(bytes(data))
    with pytest.raises(pyengine.PlanFormatError, match="UTF-8"):
        pyengine.load(path)


def test_unforged_plan_still_loads(conv_plan, tmp_path):
    path = tmp_path / "ok.plan"
    path.write_bytes(forge(conv_plan, lambda g: g))
    x = _x()
    np.testing.assert_array_equal(pyengine.load(path)(x),
                                  pyengine.build(_conv(relu=True, pads=[1, 1, 1, 1]), optimize=False)(x))


# -- 3. junk into every public entry point: only PyengineError -------------------

def _assert_pyengine_error(fn, *args, **kwargs):
    with pytest.raises(Exception) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, pyengine.PyengineError), \
        f"{fn.__name__}{args!r}: {type(info.value).__module__}.{type(info.value).__name__}: {info.value}"
    assert not isinstance(info.value, pyengine.InternalError), str(info.value)


@pytest.fixture(scope="module")
def junk_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("junk")
    rng = np.random.default_rng(11)
    files = {"random": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "empty": b"",
             "text": "héllo\n".encode(), "utf16": "\ufeffplan".encode("utf-16"), "zeros": b"\0" * 1000}
    model = _conv(pads=[1, 1, 1, 1]).SerializeToString()
    files["truncated_onnx"] = model[: len(model) // 2]
    files["bad_utf8_onnx"] = model.replace(b"conv", b"\xff\xfeon")
    paths = []
    for name, blob in files.items():
        p = d / f"{name}.bin"
        p.write_bytes(blob)
        paths.append(p)
    paths.append(d)  # a directory
    paths.append(d / "missing.onnx")
    return paths


def test_build_and_optimize_junk(junk_files):
    for junk in junk_files + [None, 42, b"bytes", object()]:
        _assert_pyengine_error(pyengine.build, junk, backend="cpu")
        _assert_pyengine_error(pyengine.optimize, junk)


def test_load_junk(junk_files):
    for junk in junk_files + [None, 42, object()]:
        _assert_pyengine_error(pyengine.load, junk)


def test_quantize_junk(junk_files):
    for junk in junk_files[:3] + [None]:
        _assert_pyengine_error(pyengine.quantize, junk, [], progress=False)
    model = _conv(pads=[1, 1, 1, 1])
    for data in ([{"x": "text"}], [{"nope": _x()}], [{"x": np.zeros((2, 2), np.float32)}], [np.full((1, 1, 8, 8),
                                                                                                      np.nan,
                                                                                                      np.float32)]):
        _assert_pyengine_error(pyengine.quantize, model, data, progress=False)


def test_run_and_call_junk():
    engine = pyengine.build(_conv(pads=[1, 1, 1, 1]), backend="cpu")
    feeds = [None, "text", 3.5, [[1, 2], [3]], np.zeros((1, 1, 8), np.float32), np.zeros((1, 2, 8, 8), np.float32),
             np.array(["a"] * 64).reshape(1, 1, 8, 8), np.zeros((1, 1, 8, 8), object), {"a": 1},
             np.zeros((1, 1, 8, 8), np.complex64), np.zeros((0, 1, 8, 8), np.float32)[:, :, :, :0]]
    for junk in feeds:
        _assert_pyengine_error(engine.run, {"x": junk})
        _assert_pyengine_error(engine, junk)
    _assert_pyengine_error(engine.run, [_x()])
    _assert_pyengine_error(engine.run, {"x": _x(), "extra": _x()})
    _assert_pyengine_error(engine)
    _assert_pyengine_error(engine, _x(), _x())


def test_save_junk(tmp_path):
    engine = pyengine.build(_conv(pads=[1, 1, 1, 1]), backend="cpu")
    for junk in (tmp_path, tmp_path / "no" / "such" / "dir.plan", None, 42):
        _assert_pyengine_error(engine.save, junk)


def test_cli_junk(junk_files, tmp_path, capsys):
    from pyengine import cli

    for junk in junk_files:
        for argv in (["build", str(junk), "-o", str(tmp_path / "o.plan")], ["run", str(junk)],
                     ["inspect", str(junk)], ["compare", str(junk), str(junk)]):
            rc = cli.main(argv)  # any non-pyengine exception propagates and fails the test
            assert rc != 0, argv
    capsys.readouterr()


def test_pickled_npy_is_refused_clearly(tmp_path, capsys):
    """Calibration data and CLI inputs never unpickle (allow_pickle stays off)."""
    from pyengine import cli

    path = tmp_path / "evil.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    model = _conv(pads=[1, 1, 1, 1])
    with pytest.raises(pyengine.CalibrationError, match="pickled Python objects"):
        pyengine.quantize(model, str(path), progress=False)
    folder = tmp_path / "calib"
    folder.mkdir()
    np.save(folder / "a.npy", np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(pyengine.CalibrationError, match="pickled Python objects"):
        pyengine.quantize(model, str(folder), progress=False)
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(model.SerializeToString())
    assert cli.main(["run", str(onnx_path), "--input", str(path)]) != 0
    assert "pickled Python objects" in capsys.readouterr().err


# -- 4. external data stays inside the model's folder ----------------------------

def _external_model(location, data=None):
    """A Conv whose weight is external data at `location`; bypasses onnx's checks
    by writing the protobuf directly."""
    model = _conv(pads=[1, 1, 1, 1])
    w = model.graph.initializer[0]
    raw = numpy_helper.to_array(w).tobytes()
    w.ClearField("float_data")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(len(raw)))):
        e = w.external_data.add()
        e.key, e.value = k, v
    return model, raw


def test_external_data_inside_folder_works(tmp_path, naive_onnx_external_data):
    model, raw = _external_model("weights/w.bin")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "w.bin").write_bytes(raw)
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    x = _x()
    np.testing.assert_allclose(pyengine.build(path)(x), pyengine.build(_conv(pads=[1, 1, 1, 1]))(x), rtol=0, atol=0)


@pytest.fixture
def naive_onnx_external_data(monkeypatch):
    """Replaces onnx's external-data reader by one without any path check (as in
    older onnx releases), so the tests show pyengine's own confinement."""
    from onnx import external_data_helper as edh

    def naive(tensor, base_dir):
        info = {e.key: e.value for e in tensor.external_data}
        with open(os.path.join(base_dir, info["location"]), "rb") as f:
            f.seek(int(info.get("offset", 0)))
            tensor.raw_data = f.read(int(info["length"]) if "length" in info else -1)
        tensor.data_location = TensorProto.DEFAULT
        del tensor.external_data[:]

    monkeypatch.setattr(edh, "load_external_data_for_tensor", naive)
    monkeypatch.setattr(edh, "_read_external_data_bytes", lambda *a, **k: pytest.fail("onnx read external data"),
                        raising=False)


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink_file", "symlink_dir", "missing", "beyond_end"])
def test_external_data_outside_folder_refused(kind, tmp_path, naive_onnx_external_data):
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = tmp_path / "model"
    folder.mkdir()
    _, raw = _external_model("x")
    secret = outside / "secret.bin"
    secret.write_bytes(raw)
    location = {"absolute": str(secret), "dotdot": "../outside/secret.bin", "symlink_file": "link.bin",
                "symlink_dir": "linkdir/secret.bin", "missing": "nothing.bin", "beyond_end": "short.bin"}[kind]
    if kind == "symlink_file":
        os.symlink(secret, folder / "link.bin")
    if kind == "symlink_dir":
        os.symlink(outside, folder / "linkdir")
    if kind == "beyond_end":
        (folder / "short.bin").write_bytes(raw[:10])
    model, _ = _external_model(location)
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    message = {"absolute": "is an absolute path", "dotdot": "contains '..'", "symlink_file": "outside the model's folder",
               "symlink_dir": "outside the model's folder", "missing": "does not exist",
               "beyond_end": "lies outside"}[kind]
    with pytest.raises(pyengine.InvalidModelError, match=message):
        pyengine.build(path, backend="cpu")


def test_external_data_in_a_modelproto_is_refused():
    model, _ = _external_model("w.bin")
    with pytest.raises(pyengine.InvalidModelError, match="external data"):
        pyengine.build(model, backend="cpu")
