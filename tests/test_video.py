"""pyengine.video (issue 13, part 2): sources, clip assembly, batching, the
pipelined loop, several streams, errors and early close, and `pyengine video`.

The videos are encoded here with PyAV (moving shapes; a panning crop over a
scikit-image photo). Streamed results must equal engine.run on the same frames
(decoded independently with PyAV, stacked into one batch) exactly: the same
engine runs both. Tests that read files skip without PyAV."""

import gc
import json
import os
import threading
import time

import numpy as np
import onnx
import pytest

import pyengine
import pyengine.video as V
from pyengine import zoo
from pyengine.engine import TensorSpec
from test_cli import run_cli

FPS = 25


# -- fixtures -------------------------------------------------------------------
@pytest.fixture(scope="module")
def av():
    return pytest.importorskip("av", reason="PyAV is optional: pip install av (pyengine[video])")


@pytest.fixture(scope="module")
def videos(av, tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng()
    out = {"shapes": V.write_video(d / "shapes.mp4", V.moving_shapes(37, 48, 64, seed=int(rng.integers(1 << 30))),
                                   fps=FPS)}
    try:
        from skimage import data

        photo = data.astronaut()
    except ImportError:  # the panning test still runs, over a random picture
        photo = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    out["pan"] = V.write_video(d / "pan.mp4", V.panning(photo, 30, 56, 72, step=5), fps=FPS)
    return out


@pytest.fixture(scope="module")
def engine2d():
    return pyengine.build(zoo.build_model("resnet18"), backend="cpu", num_threads=1)


@pytest.fixture(scope="module")
def engine3d():
    return pyengine.build(zoo.build_model("r2plus1d"), backend="cpu", num_threads=1)


def decode(path):
    """Every frame of a file, decoded with PyAV directly (the reference)."""
    import av

    with av.open(str(path)) as c:
        frames = [(f.to_ndarray(format="rgb24"), f.time) for f in c.decode(video=0)]
    return np.stack([f for f, _ in frames]), [t for _, t in frames]


def reference_clips(x, starts, length, rate):
    """Clips (N, C, T, H, W) from per-frame inputs x (F, C, H, W): the clip at s
    takes s, s + rate, ...; past the end it repeats its last real frame."""
    clips = []
    for s in starts:
        idx = [i for i in range(s, s + length * rate, rate) if i < len(x)]
        idx += [idx[-1]] * (length - len(idx))
        clips.append(x[idx].transpose(1, 0, 2, 3))
    return np.stack(clips)


class FakeEngine:
    """A Python engine: input x, output y = per-sample channel means; records batches."""

    def __init__(self, shape=(None, 3, 8, 8), dtype=np.float32, delay=0.0, fail_at=None, preprocess=None):
        self.inputs = [TensorSpec("x", np.dtype(dtype), shape)]
        self.batches = []
        self.delay, self.fail_at, self.preprocess = delay, fail_at, preprocess

    def run(self, feeds):
        x = feeds["x"]
        self.batches.append(x.copy())
        if self.fail_at is not None and len(self.batches) > self.fail_at:
            raise RuntimeError("engine failure for the test")
        if self.delay:
            time.sleep(self.delay)
        return {"y": x.reshape(len(x), x.shape[1], -1).astype(np.float64).mean(axis=2)}


def video_threads():
    return [t for t in threading.enumerate() if t.name.startswith("pyengine-video")]


def consume(it, timeout=60.0):
    """Drains an iterator in a helper thread: (results, exception); fails on a hang."""
    out = {"results": [], "exc": None}

    def work():
        try:
            for r in it:
                out["results"].append(r)
        except BaseException as exc:  # noqa: B902
            out["exc"] = exc

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "the video loop hung"
    return out["results"], out["exc"]


# -- clip assembly ------------------------------------------------------------------
@pytest.mark.parametrize("length,stride,rate,frames", [
    (4, 2, 1, 11), (4, 4, 1, 12), (3, 7, 1, 20), (4, 3, 2, 17), (5, None, 3, 40), (8, 1, 1, 5), (2, 5, 3, 2)])
@pytest.mark.parametrize("partial", ["drop", "pad"])
def test_clip_assembler(length, stride, rate, frames, partial):
    asm = V.ClipAssembler(length, stride, rate, partial)
    step = stride or length * rate
    got = []
    for i in range(frames):
        got += asm.push(i, i if asm.needed(i) else None)
    got += asm.finish()
    span = (length - 1) * rate
    full = [s for s in range(0, frames, step) if s + span < frames]
    expected = [(s, list(range(s, s + span + 1, rate)), 0) for s in full]
    nxt = full[-1] + step if full else 0
    if partial == "pad" and nxt < frames:
        real = list(range(nxt, min(nxt + span + 1, frames), rate))
        expected.append((nxt, real + [real[-1]] * (length - len(real)), length - len(real)))
    assert got == expected
    # Only frames some clip uses are asked for.
    used = {i for _, items, _ in expected for i in items}
    asm = V.ClipAssembler(length, stride, rate, partial)
    asked = []
    for i in range(frames):
        if asm.needed(i):
            asked.append(i)
        asm.push(i, i)
    assert set(asked) >= used
    if step > span + 1 or rate > 1:  # frames between clips, or between sampled frames, are never converted
        assert len(asked) < frames


def test_clip_assembler_bad_arguments():
    with pytest.raises(pyengine.InvalidArgumentError, match="clip length"):
        V.ClipAssembler(0)
    with pytest.raises(pyengine.InvalidArgumentError, match="stride"):
        V.ClipAssembler(4, stride=-1)
    with pytest.raises(pyengine.InvalidArgumentError, match="partial"):
        V.ClipAssembler(4, partial="keep")


# -- the default transform -------------------------------------------------------------
@pytest.mark.parametrize("in_hw,out_hw", [((37, 53), (16, 24)), ((48, 64), (64, 64)), ((120, 90), (32, 32))])
def test_frame_transform_matches_torch(in_hw, out_hw):
    torch = pytest.importorskip("torch", reason="the reference resize is torch.nn.functional.interpolate")
    rng = np.random.default_rng()
    frames = rng.integers(0, 256, (2, *in_hw, 3), dtype=np.uint8)
    got = V.FrameTransform(out_hw)(frames)
    scale = max(out_hw[0] / in_hw[0], out_hw[1] / in_hw[1])
    rh, rw = max(out_hw[0], round(in_hw[0] * scale)), max(out_hw[1], round(in_hw[1] * scale))
    t = torch.from_numpy(frames.astype(np.float32)).permute(0, 3, 1, 2)
    r = torch.nn.functional.interpolate(t, size=(rh, rw), mode="bilinear", align_corners=False).numpy()
    top, left = (rh - out_hw[0]) // 2, (rw - out_hw[1]) // 2
    r = r[:, :, top:top + out_hw[0], left:left + out_hw[1]] / 255.0
    ref = (r - np.array(V.IMAGENET_MEAN).reshape(1, 3, 1, 1)) / np.array(V.IMAGENET_STD).reshape(1, 3, 1, 1)
    assert got.shape == (2, 3, *out_hw) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=2e-4)


# -- streamed == one batch ----------------------------------------------------------------
@pytest.mark.parametrize("pipelined", [True, False])
def test_stream_2d_equals_batch(videos, engine2d, pipelined):
    frames, times = decode(videos["shapes"])
    ref = engine2d.run({"input": V.default_transform(engine2d)(frames)})["output"]
    with V.stream(engine2d, videos["shapes"], max_batch=5, max_wait=0.01, pipelined=pipelined) as s:
        results = list(s)
        stats = s.stats()[str(videos["shapes"])]
    assert [r.index for r in results] == list(range(len(frames)))
    assert [r.timestamp for r in results] == pytest.approx(times) and times[3] == pytest.approx(3 / FPS)
    np.testing.assert_array_equal(np.stack([r.output for r in results]), ref)
    assert {r.stream for r in results} == {str(videos["shapes"])}
    assert results[0].topk(3)[0][0] == int(ref[0].argmax())
    assert stats.frames == stats.results == len(frames) and stats.dropped == 0 and stats.fps > 0
    assert stats.latency_ms["p50"] <= stats.latency_ms["p90"] <= stats.latency_ms["p99"]


@pytest.mark.parametrize("stride,rate,partial", [(4, 1, "drop"), (3, 2, "pad"), (None, 1, "pad")])
def test_stream_3d_clips_equal_batch(videos, engine3d, stride, rate, partial):
    frames, times = decode(videos["pan"])
    x = V.FrameTransform((32, 32))(frames)
    results = list(V.stream(engine3d, videos["pan"], clip=8, stride=stride, sample_rate=rate, partial=partial,
                            max_batch=3))
    step = stride or 8 * rate
    span = 7 * rate
    full = list(range(0, len(frames) - span, step))
    starts = full + ([full[-1] + step] if partial == "pad" and full[-1] + step < len(frames) else [])
    assert [r.index for r in results] == starts
    assert [r.timestamp for r in results] == pytest.approx([times[s] for s in starts])
    assert [r.padded for r in results][:len(full)] == [0] * len(full)
    ref = engine3d.run({"input": reference_clips(x, starts, 8, rate)})["output"]
    np.testing.assert_array_equal(np.stack([r.output for r in results]), ref)
    seq = list(V.stream(engine3d, videos["pan"], clip=8, stride=stride, sample_rate=rate, partial=partial,
                        pipelined=False))
    np.testing.assert_array_equal(np.stack([r.output for r in seq]), ref)


def test_frames_and_capture_sources(videos, engine2d):
    """An iterator of frames and an OpenCV-style capture (BGR) give the file's results."""
    frames, times = decode(videos["shapes"])
    from_file = np.stack([r.output for r in V.stream(engine2d, videos["shapes"])])

    class FakeCapture:  # cv2.VideoCapture's read()/get()/isOpened(), BGR frames
        def __init__(self, frames):
            self.frames, self.i = frames, 0

        def isOpened(self):
            return True

        def read(self):
            if self.i >= len(self.frames):
                return False, None
            self.i += 1
            return True, np.ascontiguousarray(self.frames[self.i - 1][..., ::-1])

        def get(self, prop):
            return {0: 1000.0 * (self.i - 1) / FPS, 5: float(FPS), 7: float(len(self.frames))}.get(prop, 0.0)

    cap = list(V.stream(engine2d, FakeCapture(frames), max_batch=4))
    np.testing.assert_array_equal(np.stack([r.output for r in cap]), from_file)
    assert [r.timestamp for r in cap] == pytest.approx(times)
    assert {r.stream for r in cap} == {"capture"}
    gen = list(V.stream(engine2d, V.Frames((f for f in frames), fps=FPS)))
    np.testing.assert_array_equal(np.stack([r.output for r in gen]), from_file)
    assert [r.timestamp for r in gen] == pytest.approx([i / FPS for i in range(len(frames))])
    no_fps = list(V.stream(engine2d, frames[:3]))
    assert [r.timestamp for r in no_fps] == [None] * 3
    with pytest.raises(pyengine.InvalidArgumentError, match="not opened"):
        cap = FakeCapture(frames)
        cap.isOpened = lambda: False
        V.stream(engine2d, cap)


# -- batching ---------------------------------------------------------------------------
def _slow(frames, delay):
    for f in frames:
        time.sleep(delay)
        yield f


def test_batching_max_batch_and_wait():
    rng = np.random.default_rng()
    frames = rng.integers(0, 256, (23, 8, 8, 3), dtype=np.uint8)
    eng = FakeEngine()
    results = list(V.stream(eng, frames, max_batch=4, max_wait=5.0))
    # A source faster than the engine: full batches, the rest at the end.
    assert [len(b) for b in eng.batches] == [4] * 5 + [3]
    assert [r.index for r in results] == list(range(23))
    np.testing.assert_array_equal(np.concatenate(eng.batches), V.FrameTransform((8, 8))(frames))
    # A slow source and no waiting: each sample runs alone as soon as it is ready.
    eng = FakeEngine()
    list(V.stream(eng, _slow(frames[:5], 0.08), max_batch=4, max_wait=0.0))
    assert [len(b) for b in eng.batches] == [1] * 5
    # A slow source and a generous budget: batches still fill.
    eng = FakeEngine()
    list(V.stream(eng, _slow(frames[:8], 0.01), max_batch=4, max_wait=2.0))
    assert [len(b) for b in eng.batches] == [4, 4]


def test_multi_stream_mux(videos, engine2d):
    """Two files and a frame iterator into one engine: per-stream results equal
    each stream run alone, in order, and batches mix streams."""
    solo = {k: np.stack([r.output for r in V.stream(engine2d, videos[k])]) for k in ("shapes", "pan")}
    rng = np.random.default_rng()
    noise = rng.integers(0, 256, (9, 40, 40, 3), dtype=np.uint8)
    solo["noise"] = engine2d.run({"input": V.default_transform(engine2d)(noise)})["output"]
    with V.stream(engine2d, {"shapes": videos["shapes"], "pan": videos["pan"], "noise": noise}, max_batch=6) as s:
        results = list(s)
        stats = s.stats()
    for name, ref in solo.items():
        mine = [r for r in results if r.stream == name]
        assert [r.index for r in mine] == list(range(len(ref)))
        np.testing.assert_array_equal(np.stack([r.output for r in mine]), ref)
        assert stats[name].results == len(ref)
    # A list of paths names the streams by path.
    names = {r.stream for r in V.stream(engine2d, [videos["shapes"], videos["pan"]])}
    assert names == {str(videos["shapes"]), str(videos["pan"])}


def test_mux_batches_mix_streams():
    eng = FakeEngine()
    a, b = np.full((12, 8, 8, 3), 10, np.uint8), np.full((12, 8, 8, 3), 200, np.uint8)
    results = list(V.stream(eng, {"a": a, "b": b}, max_batch=8, max_wait=1.0))
    assert sorted(r.stream for r in results) == ["a"] * 12 + ["b"] * 12
    mixed = [b for b in eng.batches if len(np.unique(b[:, 0, 0, 0])) == 2]
    assert mixed, "no batch held frames of both streams"
    for r in results:  # every result is its own stream's
        assert (r.output[0] < 0) == (r.stream == "a")


# -- in-engine preprocessing ---------------------------------------------------------------
def test_preprocessing_engine_gets_uint8_clips():
    """An engine with .preprocess gets the raw uint8 frames, clips as (N, T, H, W, 3)."""
    rng = np.random.default_rng()
    frames = rng.integers(0, 256, (10, 6, 10, 3), dtype=np.uint8)
    eng = FakeEngine(shape=(None, 4, 6, 10, 3), dtype=np.uint8, preprocess=object())

    def forbidden(x):
        raise AssertionError("transform must not run for a preprocessing engine")

    results = list(V.stream(eng, frames, stride=2, transform=forbidden))
    assert [r.index for r in results] == [0, 2, 4, 6]
    sent = np.concatenate(eng.batches)
    assert sent.dtype == np.uint8
    np.testing.assert_array_equal(sent, np.stack([frames[s:s + 4] for s in (0, 2, 4, 6)]))
    eng2 = FakeEngine(shape=(None, 6, 10, 3), dtype=np.uint8, preprocess=object())
    list(V.stream(eng2, frames))
    np.testing.assert_array_equal(np.concatenate(eng2.batches), frames)


def test_real_preprocessing_engines_rgb_and_bgr(videos):
    """Engines with a compiled-in Preprocess: a 3-D one gets clips, and an
    engine whose Preprocess wants BGR gets the decoded RGB frames flipped, so
    its results equal the RGB engine's bit for bit and both equal engine.run
    on the decoded frames; an NV12 engine is refused (sources decode RGB)."""
    frames, _ = decode(videos["pan"])
    model = zoo.build_model("r2plus1d")
    spec = dict(resize=40, crop=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), layout="NCTHW")
    rgb = pyengine.build(model, backend="cpu", num_threads=1, preprocess=pyengine.Preprocess(color="rgb", **spec))
    bgr = pyengine.build(model, backend="cpu", num_threads=1, preprocess=pyengine.Preprocess(color="bgr", **spec))
    got_rgb = list(V.stream(rgb, videos["pan"], stride=4))
    got_bgr = list(V.stream(bgr, videos["pan"], stride=4))
    starts = list(range(0, len(frames) - 8 + 1, 4))
    assert [r.index for r in got_rgb] == [r.index for r in got_bgr] == starts
    want = rgb(np.stack([frames[s:s + 8] for s in starts]))
    np.testing.assert_array_equal(np.stack([r.output for r in got_rgb]), want)
    np.testing.assert_array_equal(np.stack([r.output for r in got_bgr]), want)
    nv12 = pyengine.build(zoo.build_model("resnet18"), backend="cpu",
                          preprocess=pyengine.Preprocess(color="nv12", resize=64, crop=64))
    with pytest.raises(pyengine.InvalidArgumentError, match="nv12"):
        V.stream(nv12, videos["pan"])


def test_custom_transform_and_bad_arguments(engine2d, engine3d):
    rng = np.random.default_rng()
    frames = rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)

    def plain(x):
        return (x.astype(np.float32) / 255.0).transpose(0, 3, 1, 2)

    got = np.stack([r.output for r in V.stream(engine2d, frames, transform=plain)])
    np.testing.assert_array_equal(got, engine2d.run({"input": plain(frames)})["output"])
    with pytest.raises(pyengine.ShapeError, match="clip=6.*8 frames"):
        V.stream(engine3d, frames, clip=6)
    with pytest.raises(pyengine.InvalidArgumentError, match="3-D models"):
        V.stream(engine2d, frames, clip=4)
    with pytest.raises(pyengine.InvalidArgumentError, match="max_batch"):
        V.stream(engine2d, frames, max_batch=0)
    with pytest.raises(pyengine.InvalidArgumentError, match="does not exist"):
        V.stream(engine2d, "missing.mp4")
    with pytest.raises(pyengine.ShapeError, match="transform must map"):
        list(V.stream(engine2d, frames, transform=lambda x: x[0]))


# -- errors, early close, realtime -------------------------------------------------------------
def _failing(frames, at):
    for i, f in enumerate(frames):
        if i == at:
            raise ValueError(f"camera unplugged at frame {i}")
        yield f


@pytest.mark.parametrize("pipelined", [True, False])
def test_decode_error_reaches_consumer(pipelined):
    rng = np.random.default_rng()
    frames = rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    eng = FakeEngine()
    results, exc = consume(V.stream(eng, _failing(frames, 9), max_batch=4, max_wait=0.0, pipelined=pipelined))
    assert isinstance(exc, ValueError) and "frame 9" in str(exc)
    assert [r.index for r in results] == list(range(len(results))) and len(results) <= 9
    # Bad frames are pyengine errors naming the stream and the frame.
    bad = list(frames[:3]) + [frames[3].astype(np.float32)]
    results, exc = consume(V.stream(FakeEngine(), {"cam": bad}, pipelined=pipelined))
    assert isinstance(exc, pyengine.DTypeError) and "'cam' frame 3" in str(exc)
    results, exc = consume(V.stream(FakeEngine(), [frames[0], frames[1, :, :, :2]], pipelined=pipelined))
    assert isinstance(exc, pyengine.ShapeError) and "frame 1" in str(exc)
    # One failing stream among several stops the loop with its error.
    results, exc = consume(V.stream(FakeEngine(), {"ok": frames, "bad": _failing(frames, 2)}, pipelined=pipelined))
    assert isinstance(exc, ValueError)
    time.sleep(0.2)
    assert not video_threads()


def test_engine_error_and_corrupt_file(tmp_path, av):
    rng = np.random.default_rng()
    frames = rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    results, exc = consume(V.stream(FakeEngine(fail_at=2), frames, max_batch=2, max_wait=5.0))
    assert isinstance(exc, RuntimeError) and "engine failure" in str(exc)
    assert len(results) == 4
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(pyengine.InvalidArgumentError, match="corrupt.mp4"):
        V.stream(FakeEngine(), str(bad))
    time.sleep(0.2)
    assert not video_threads()


def test_close_early_stops_threads():
    rng = np.random.default_rng()
    frame = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)

    def forever():
        while True:
            yield frame

    s = V.stream(FakeEngine(), {"a": forever(), "b": forever()}, max_batch=2)
    assert [next(s).index for _ in range(3)]
    assert video_threads()
    s.close()
    assert not video_threads()
    with pytest.raises(StopIteration):
        next(s)
    # Dropping the iterator (a for loop broken out of) stops the threads too.
    for r in V.stream(FakeEngine(), forever()):
        if r.index == 5:
            break
    gc.collect()
    deadline = time.time() + 10
    while video_threads() and time.time() < deadline:
        time.sleep(0.05)
    assert not video_threads()


def test_realtime_drops_when_full():
    rng = np.random.default_rng()
    frames = rng.integers(0, 256, (60, 8, 8, 3), dtype=np.uint8)
    with V.stream(FakeEngine(delay=0.02), frames, max_batch=2, queue_size=2, realtime=True) as s:
        results = list(s)
        st = s.stats()["frames"]
    assert st.dropped > 0 and st.results == len(results) and st.results + st.dropped == st.samples == 60
    assert [r.index for r in results] == sorted(r.index for r in results)
    with V.stream(FakeEngine(delay=0.02), frames, max_batch=2, queue_size=2) as s:  # off by default
        assert len(list(s)) == 60 and s.stats()["frames"].dropped == 0


# -- the command line ---------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["r2plus1d", "resnet18"])
def test_cli_video(videos, tmp_path, model):
    onnx_path = tmp_path / f"{model}.onnx"
    onnx.save(zoo.build_model(model), onnx_path)
    engine = pyengine.build(str(onnx_path), backend="cpu", num_threads=1)
    out = tmp_path / "out.jsonl"
    if model == "r2plus1d":  # a 3-D model from its .onnx, clips of 8 every 4 frames
        args = ["video", onnx_path, videos["pan"], "--clip", "8", "--stride", "4", "--partial", "pad"]
        ref = list(V.stream(engine, videos["pan"], clip=8, stride=4, partial="pad"))
    else:  # a 2-D plan over two files
        plan = tmp_path / "resnet18.plan"
        engine.save(plan)
        args = ["video", plan, videos["shapes"], videos["pan"], "--batch", "4"]
        ref = list(V.stream(engine, [videos["shapes"], videos["pan"]]))
    proc = run_cli(*args, "--json", out, "--threads", "1", "--topk", "3")
    assert proc.returncode == 0, proc.stderr
    assert "frames/s" in proc.stdout and "latency p50" in proc.stdout
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == len(ref)
    key = {(r.stream, r.index): r for r in ref}
    for line in lines:
        r = key[(line["stream"], line["index"])]
        assert line["timestamp"] == pytest.approx(r.timestamp)
        assert [t["class"] for t in line["topk"]] == [c for c, _ in r.topk(3)]
        assert [t["score"] for t in line["topk"]] == pytest.approx([v for _, v in r.topk(3)], rel=1e-6)
    proc = run_cli("video", onnx_path, tmp_path / "missing.mp4")
    assert proc.returncode == 1 and "missing.mp4" in proc.stderr and "Traceback" not in proc.stderr
