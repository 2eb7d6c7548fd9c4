"""Guards of INT8 calibration: degenerate statistics (zero, constant, far out
of range, heavily clipped tensors) and unreadable calibration files and
images, each a CalibrationError or a CalibrationWarning naming the tensor or
the file (pyengine/calibration_table.py, pyengine/calibration.py)."""

import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyengine
from pyengine.calibration import ImageFolder, InputSpec, iter_batches, read_array_file
from pyengine.calibration_table import MAX_CLIPPED_SHARE, check_statistics, clipped_share
from pyengine.quantize import METHODS, calibrate
from pyengine.zoo import GraphBuilder


def small_net():
    b = GraphBuilder("guards", seed=3)
    x = b.input((3, 8, 8))
    x = b.relu(b.bn(b.conv(x, 4, 3)))
    return b.build({"logits": b.gemm(b.flatten(b.gap(x)), 5)})


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(20).standard_normal((8, 3, 8, 8)).astype(np.float32)


# ---------------------------------------------------------------- statistics

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_data_scaled_far_out_of_range_is_refused_naming_the_tensor(method, scale, data):
    with pytest.raises(pyengine.CalibrationError, match=r"'input' \(\|x\| up to .*e[+-]30\).*preprocessing"):
        calibrate(small_net(), data * np.float32(scale), method, progress=False, num_threads=1)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("value", [0.0, 0.7])
def test_constant_input_is_refused(method, value, data):
    with pytest.raises(pyengine.CalibrationError, match=f"input 'input' is constant \\({value:g}\\)"):
        calibrate(small_net(), np.full_like(data, value), method, progress=False, num_threads=1)


def zero_and_constant_tensors():
    """x -> Abs -> Neg -> Relu (zero everywhere) -> Add 0.5 (constant) -> Add x."""
    nodes = [helper.make_node("Abs", ["x"], ["a"], name="abs"),
             helper.make_node("Neg", ["a"], ["n"], name="neg"),
             helper.make_node("Relu", ["n"], ["dead"], name="relu"),
             helper.make_node("Add", ["dead", "half"], ["const"], name="add_half"),
             helper.make_node("Add", ["const", "x"], ["y"], name="add_x")]
    g = helper.make_graph(nodes, "degenerate", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 6])],
                          initializer=[numpy_helper.from_array(np.array([0.5], np.float32), "half")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("method", METHODS)
def test_zero_and_constant_tensors_warn_naming_them(method):
    x = np.random.default_rng(21).standard_normal((16, 6)).astype(np.float32)
    with pytest.warns(pyengine.CalibrationWarning) as record:
        table = calibrate(zero_and_constant_tensors(), x, method, optimize=False, progress=False, num_threads=1)
    messages = [str(w.message) for w in record]
    assert any("'dead'" in m and "zero on all calibration data" in m for m in messages), messages
    assert any("'const' (= 0.5)" in m and "constant on all calibration data" in m for m in messages), messages
    assert table.amax["dead"] == 0 and table.amax["const"] == pytest.approx(0.5, rel=1e-3)
    assert table.scales()["dead"] == 1.0


def stats_of(x, bins=2048):
    obs = pyengine._core.TensorObserver(bins)
    obs.update(np.asarray(x, dtype=np.float32))
    return {"count": obs.count, "min": obs.min, "max": obs.max, "absmax": obs.absmax, "range": obs.range,
            "histogram": obs.histogram()}


def test_clipped_share_matches_numpy():
    x = np.random.default_rng(22).standard_normal(100000).astype(np.float32)
    st = stats_of(x)
    for amax in (0.5, 1.7, 2.9, float(st["absmax"])):
        assert clipped_share(st["histogram"], st["range"], amax) == pytest.approx(np.mean(np.abs(x) > amax),
                                                                                 abs=2e-4)


def test_threshold_clipping_much_of_the_data_warns_naming_the_tensor():
    x = np.random.default_rng(23).standard_normal(100000)
    stats = {"input": stats_of(x), "t": stats_of(x), "u": stats_of(x)}
    amax = {"input": 3.0, "t": 1.0, "u": 2.0}  # 'input' clips 0.3%, 't' 32%, 'u' 4.6%
    with pytest.warns(pyengine.CalibrationWarning, match=r"\(entropy\).*'t' \(32%\), 'u' \(4\.\d%\)") as record:
        check_statistics(stats, amax, "entropy", 99.99, inputs=["input"])
    assert "'input'" not in str(record[0].message)
    # percentile clips (100 - p)% by definition: warn only beyond twice that.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_statistics({"t": stats_of(x)}, {"t": float(np.percentile(np.abs(x), 90))}, "percentile", 90.0)
        check_statistics({"t": stats_of(x)}, {"t": 3.0}, "mse", 99.99)
    assert MAX_CLIPPED_SHARE == 0.01


def test_healthy_calibration_is_silent(data):
    for method in METHODS:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            calibrate(small_net(), data, method, progress=False, num_threads=1)


# ---------------------------------------------------------------- files

def clean(exc) -> bool:
    """No library exception chained to (and printed with) ours."""
    return exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)


SPECS = [InputSpec("input", np.dtype(np.float32), (None, 3, 8, 8))]


def _read_all(path):
    return list(iter_batches(str(path), SPECS))


def test_pickled_npy_names_the_file_without_numpy_pickle_message(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((3, 8, 8), np.float32))
    np.save(tmp_path / "b.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(pyengine.CalibrationError) as exc:
        _read_all(tmp_path)
    msg = str(exc.value)
    assert "b.npy" in msg and "pickled Python objects" in msg
    assert "allow_pickle" not in msg and clean(exc.value)
    # A plain pickle saved under a .npy name, and an object array inside an .npz.
    import pickle

    (tmp_path / "b.npy").write_bytes(pickle.dumps({"x": np.zeros(3)}))
    with pytest.raises(pyengine.CalibrationError, match="b.npy' holds pickled Python objects"):
        _read_all(tmp_path)
    (tmp_path / "b.npy").unlink()
    np.savez(tmp_path / "c.npz", input=np.array([None, 1], dtype=object))
    with pytest.raises(pyengine.CalibrationError, match="c.npz' holds pickled Python objects") as exc:
        _read_all(tmp_path)
    assert "allow_pickle" not in str(exc.value)


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage" * 10, b"\x93NUMPY\x01\x00\xff\xff" + b"\xc3\x28" * 40,
                                     b"", b"PK\x03\x04broken zip",
                                     # a one-byte header "[": numpy's tokenize raised TokenError (atheris find)
                                     b"\x93NUMPY\x01\x00\x01\x00[",
                                     b"\x93NUMPY\x01\x00\x40\x00{'descr': '<f4', 'fortran_order': False, 'shape': ("
                                     b"2**62,), }",
                                     b"\x93NUMPY\x01\x00\x3c\x00{'descr': '<f4', 'fortran_order': False, "
                                     b"'shape': (4611686018427387904,), }     \n"])
@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_corrupt_array_files_name_the_file(tmp_path, content, suffix):
    (tmp_path / f"bad{suffix}").write_bytes(content)
    with pytest.raises(pyengine.CalibrationError, match=f"bad\\{suffix}.*not a valid .npy/.npz file") as exc:
        _read_all(tmp_path)
    assert clean(exc.value)
    # A single .npy file given directly goes through the same reader.
    if suffix == ".npy":
        with pytest.raises(pyengine.CalibrationError, match="bad.npy"):
            _read_all(tmp_path / "bad.npy")


def test_non_numeric_arrays_name_the_file(tmp_path):
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    with pytest.raises(pyengine.CalibrationError, match=r"s\.npy' holds <U1 data"):
        read_array_file(str(tmp_path / "s.npy"))
    np.savez(tmp_path / "z.npz", input=np.array(["x"]))
    with pytest.raises(pyengine.CalibrationError, match=r"z\.npz' \(array 'input'\) holds"):
        read_array_file(str(tmp_path / "z.npz"))


def test_binary_calibration_cache_names_the_file(tmp_path, data):
    cache = tmp_path / "model.calib"
    cache.write_bytes(b"\xff\xfe\xfa\x00binary")
    with pytest.raises(pyengine.CalibrationError, match="model.calib' is not a text file"):
        pyengine.quantize(small_net(), calibration_data=data, calibration_cache=cache, progress=False)


@pytest.fixture
def image_dir(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(24)
    for i in range(2):
        pil.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(tmp_path / f"ok{i}.png")
    return tmp_path


@pytest.mark.parametrize("name,content", [
    ("text.png", "not an image, and not UTF-8 either: \u00e9".encode("latin-1")),
    ("empty.jpg", b""),
    ("random.bmp", bytes(range(256)) * 4),
])
def test_unreadable_images_name_the_file(image_dir, name, content):
    (image_dir / name).write_bytes(content)
    folder = ImageFolder(image_dir, resize=8, crop=8, batch_size=4)
    with pytest.raises(pyengine.CalibrationError, match=f"cannot read calibration image '.*{name}'") as exc:
        list(folder)
    assert clean(exc.value)
    assert "UnidentifiedImageError" not in str(exc.value) and "cannot identify" not in str(exc.value)


def test_truncated_image_names_the_file(image_dir):
    data = (image_dir / "ok0.png").read_bytes()
    (image_dir / "trunc.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(pyengine.CalibrationError, match="cannot read calibration image '.*trunc.png'"):
        list(ImageFolder(image_dir, resize=8, crop=8))


def test_images_of_different_sizes_need_resize_and_crop(image_dir):
    pil = pytest.importorskip("PIL.Image")
    pil.fromarray(np.zeros((20, 10, 3), np.uint8)).save(image_dir / "tall.png")
    with pytest.raises(pyengine.CalibrationError, match="tall.png' is 10x20 .* pass resize= and crop="):
        list(ImageFolder(image_dir))
    assert [b.shape for b in ImageFolder(image_dir, resize=8, crop=8)] == [(3, 3, 8, 8)]
