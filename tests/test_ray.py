"""pyengine.integrations.ray: the map_batches classes, alone and on a local Ray
instance (issue 14, item 2). Ray's results must equal a plain loop that reads
the same files and calls engine.run on one image (or one video clip) at a time."""

import os

import numpy as np
import onnx
import pytest

import pyengine
from pyengine import zoo
from pyengine.integrations.ray import ImagePreprocess, PyengineMapper, VideoMapper

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ray_plan") / "resnet18.plan")
    pyengine.build(zoo.build_model("resnet18"), backend="cpu", num_threads=1).save(path)
    return path


def _preprocess_reference(img):
    """ImagePreprocess written out for one (H, W, C) uint8 image."""
    x = img.astype(np.float64) / 255.0
    x = (x - np.array(MEAN)) / np.array(STD)
    return x.transpose(2, 0, 1).astype(np.float32)


# -- the mapper without Ray ---------------------------------------------------

def test_mapper_matches_engine_run(plan):
    rng = np.random.default_rng()
    images = rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    paths = np.array([f"img{i}.png" for i in range(5)])
    mapper = PyengineMapper(plan, preprocess=ImagePreprocess(MEAN, STD))
    out = mapper({"image": images, "path": paths})
    assert sorted(out) == ["class", "logits", "path"]       # the image column is dropped by default
    engine = pyengine.load(plan, num_threads=1)
    for i in range(5):
        ref = engine.run({"input": _preprocess_reference(images[i])[None]})["output"][0]
        np.testing.assert_allclose(out["logits"][i], ref, rtol=1e-5, atol=1e-5)
        assert out["class"][i] == ref.argmax()
    assert list(out["path"]) == list(paths)
    # A ragged column (Ray's form for images of different sizes) of equal-sized
    # arrays runs too; keep_input returns the column.
    out2 = PyengineMapper(plan, preprocess=ImagePreprocess(MEAN, STD), keep_input=True)(
        {"image": np.array(list(images) + [None], dtype=object)[:5]})
    np.testing.assert_array_equal(out2["logits"], out["logits"])
    assert "image" in out2


def test_mapper_clips_for_3d_model():
    """(N, C, T, H, W) clips through an ONNX model built once in the constructor."""
    model = zoo.build_model("r2plus1d")
    clips = np.random.default_rng().standard_normal((3, 3, 8, 32, 32), dtype=np.float32)
    mapper = PyengineMapper(model, column="clip", output_column="scores", class_column="label")
    out = mapper({"clip": clips, "id": np.arange(3)})
    ref = pyengine.build(model, backend="cpu", num_threads=1)(clips)
    np.testing.assert_allclose(out["scores"], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out["label"], ref.argmax(axis=1))
    np.testing.assert_array_equal(out["id"], np.arange(3))
    with pytest.raises(pyengine.ShapeError, match=r"'clip'.*\(N, C, T, H, W\) clips"):
        mapper({"clip": clips[:, :, 0]})


def test_mapper_errors(plan, tmp_path):
    with pytest.raises(pyengine.InvalidArgumentError, match="input_name 'x' is not an input"):
        PyengineMapper(plan, input_name="x")
    with pytest.raises(pyengine.InvalidArgumentError, match="output_name 'y' is not an output"):
        PyengineMapper(plan, output_name="y")
    with pytest.raises(pyengine.InvalidArgumentError, match="build options"):
        PyengineMapper(plan, build_options={"precision": "int8"})
    with pytest.raises(pyengine.PlanFormatError):
        PyengineMapper(str(tmp_path / "missing.plan"))
    mapper = PyengineMapper(plan, preprocess=ImagePreprocess())
    with pytest.raises(pyengine.InvalidArgumentError, match="no column 'image'.*'pixels'"):
        mapper({"pixels": np.zeros((1, 64, 64, 3), np.uint8)})
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = np.ones((64, 64, 3), np.uint8), np.ones((32, 64, 3), np.uint8)
    with pytest.raises(pyengine.ShapeError, match="different shapes.*size="):
        mapper({"image": ragged})
    with pytest.raises(pyengine.ShapeError, match=r"4 channels but mean/std have 3"):
        mapper({"image": np.ones((1, 64, 64, 4), np.uint8)})
    with pytest.raises(pyengine.InvalidArgumentError, match="std must not contain zeros"):
        ImagePreprocess(std=(1.0, 0.0, 1.0))


# -- on a local Ray instance ----------------------------------------------------

@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="Ray is optional: pip install 'ray[data]'")
    pytest.importorskip("ray.data", reason="Ray Data is optional: pip install 'ray[data]'")
    pytest.importorskip("PIL", reason="ray.data.read_images needs Pillow")
    pytest.importorskip("pyarrow.parquet", reason="Parquet output needs pyarrow (comes with ray[data])")
    # Local, loopback only; the actors import pyengine from the same path as this process.
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
                 p for p in [os.path.dirname(os.path.dirname(pyengine.__file__)),
                             os.environ.get("PYTHONPATH", "")] if p)}})
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def _write_images(folder, count, rng):
    """Random RGB pictures of different sizes (read_images resizes them)."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    for i in range(count):
        h, w = rng.integers(48, 97, 2)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(os.path.join(folder, f"{i:03d}.png"))


def _alarm(signum, frame):
    raise TimeoutError("the Ray pipeline did not finish in 300 s (a stalled read or actor?)")


def test_ray_equals_plain_loop(ray_local, plan, tmp_path):
    # A stall in Ray's scheduling must fail the test, not hang CI.
    import signal

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(300)
    try:
        _ray_equals_plain_loop(ray_local, plan, tmp_path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _ray_equals_plain_loop(ray_local, plan, tmp_path):
    import pyarrow.parquet as pq
    from PIL import Image

    ray = ray_local
    images, out_dir = str(tmp_path / "images"), str(tmp_path / "predictions")
    _write_images(images, 24, np.random.default_rng())
    # num_cpus=0 for the readers: the two actors hold both CPUs (a reader that
    # waits for a CPU would stall the pipeline).
    ds = ray.data.read_images(images, size=(64, 64), mode="RGB", include_paths=True, num_cpus=0)
    preds = ds.map_batches(PyengineMapper, fn_constructor_kwargs={
        "model": plan, "preprocess": ImagePreprocess(MEAN, STD)},
        compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1, batch_size=5, batch_format="numpy")
    preds.write_parquet(out_dir)

    table = pq.read_table(out_dir)
    assert sorted(table.column_names) == ["class", "logits", "path"]
    rows = {os.path.basename(p): (l, c) for p, l, c in zip(
        table["path"].to_pylist(), _logits(table), table["class"].to_pylist())}
    assert len(rows) == 24

    # The plain loop: the same files, Pillow's bilinear resize, one engine.run per image.
    engine = pyengine.load(plan, num_threads=1)
    for name in sorted(os.listdir(images)):
        with Image.open(os.path.join(images, name)) as img:
            img = img.resize((64, 64), Image.BILINEAR).convert("RGB")
            x = _preprocess_reference(np.asarray(img))[None]
        ref = engine.run({"input": x})["output"][0]
        logits, cls = rows[name]
        np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-5, err_msg=name)
        assert cls == ref.argmax(), name


def _logits(table):
    """The logits column as (N, K) float32, whatever Arrow type Ray wrote it with."""
    col = table["logits"].combine_chunks()
    storage = getattr(col, "storage", col)
    return np.asarray(storage.to_pylist(), dtype=np.float32)


# -- a folder of videos (pyengine.video) -------------------------------------------

@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    pytest.importorskip("av", reason="reading videos needs PyAV: pip install av")
    import pyengine.video as V

    folder = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng()
    for i, n in enumerate((21, 14, 30)):  # clips of 8 every 4 frames: 4, 2 and 6 clips
        V.write_video(folder / f"{i}.mp4", V.moving_shapes(n, 40, 48, seed=int(rng.integers(1 << 30))))
    return folder


@pytest.fixture(scope="module")
def plan3d(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ray_plan3d") / "r2plus1d.plan")
    pyengine.build(zoo.build_model("r2plus1d"), backend="cpu", num_threads=1).save(path)
    return path


def _video_plain_loop(folder, plan):
    """(file name, first frame) -> (logits, timestamp): PyAV decode, the default
    transform, clips of 8 frames every 4 assembled by hand, engine.run per clip."""
    import av
    import pyengine.video as V

    engine = pyengine.load(plan, num_threads=1)
    transform = V.FrameTransform((32, 32))
    out = {}
    for name in sorted(os.listdir(folder)):
        with av.open(os.path.join(folder, name)) as c:
            decoded = [(f.to_ndarray(format="rgb24"), f.time) for f in c.decode(video=0)]
        x = transform(np.stack([f for f, _ in decoded]))
        for start in range(0, len(x) - 7, 4):
            clip = x[start:start + 8].transpose(1, 0, 2, 3)[None]
            out[(name, start)] = (engine.run({"input": clip})["output"][0], decoded[start][1])
    return out


def test_video_mapper_equals_plain_loop(videos, plan3d):
    ref = _video_plain_loop(videos, plan3d)
    paths = np.array(sorted(str(p) for p in videos.iterdir()))
    out = VideoMapper(plan3d, stride=4)({"path": paths, "id": np.arange(len(paths))})
    assert sorted(out) == ["class", "id", "index", "logits", "path", "timestamp"]
    assert len(out["path"]) == len(ref) == 12
    for p, i, t, logits, c, vid in zip(out["path"], out["index"], out["timestamp"], out["logits"], out["class"],
                                       out["id"]):
        r, ts = ref[(os.path.basename(p), i)]
        np.testing.assert_allclose(logits, r, rtol=1e-5, atol=1e-5)
        assert c == r.argmax() and t == pytest.approx(ts) and paths[vid] == p
    empty = VideoMapper(plan3d, stride=4)({"path": np.array([], dtype=object)})
    assert empty["logits"].shape == (0, 10) and len(empty["index"]) == 0
    with pytest.raises(pyengine.ShapeError, match="clip=6"):
        VideoMapper(plan3d, clip=6)
    with pytest.raises(pyengine.InvalidArgumentError, match="no column 'path'"):
        VideoMapper(plan3d)({"file": paths})


def test_ray_videos_equal_plain_loop(ray_local, videos, plan3d, tmp_path):
    import signal

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(300)
    try:
        import pyarrow.parquet as pq

        ray = ray_local
        out_dir = str(tmp_path / "video_predictions")
        paths = sorted(str(p) for p in videos.iterdir())
        ds = ray.data.from_items([{"path": p} for p in paths])
        preds = ds.map_batches(VideoMapper, fn_constructor_kwargs={"model": plan3d, "stride": 4},
                               compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1, batch_size=1,
                               batch_format="numpy")
        preds.write_parquet(out_dir)
        table = pq.read_table(out_dir)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    ref = _video_plain_loop(videos, plan3d)
    assert sorted(table.column_names) == ["class", "index", "logits", "path", "timestamp"]
    got = {(os.path.basename(p), i): (l, c, t) for p, i, l, c, t in zip(
        table["path"].to_pylist(), table["index"].to_pylist(), _logits(table), table["class"].to_pylist(),
        table["timestamp"].to_pylist())}
    assert sorted(got) == sorted(ref)
    for key, (r, ts) in ref.items():
        logits, cls, t = got[key]
        np.testing.assert_allclose(logits, r, rtol=1e-5, atol=1e-5, err_msg=str(key))
        assert cls == r.argmax() and t == pytest.approx(ts), key
