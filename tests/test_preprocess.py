"""Preprocessing inside the engine (pyengine.Preprocess, the Preprocess op).

Tolerances, in uint8 steps of the resized image (one step is 1 / (255 * std)
in the normalized model input):
  - kernel (each ISA tier) vs the numpy float64 reference with the same
    conventions (Preprocess.apply_numpy) and vs the reference kernel:
    STEP_FLOAT = 2e-3 (float32 sums of at most a few dozen taps);
  - vs torch.nn.functional.interpolate on float frames (bilinear,
    align_corners=False, antialias False/True): 1e-2 steps (torch computes
    source coordinates and weights in float32);
  - vs Pillow (BILINEAR = antialiased triangle filter, NEAREST): 1 step
    (+ STEP_FLOAT for float32 rounding). Pillow rounds to uint8 after each of
    its two passes and the kernel does not, so up to one step of difference
    is expected (exactly 1.0 occurs on photos);
  - end to end: engine(frames) vs engine_without_preprocess(reference(frames)):
    the same 2e-3 steps on the input, propagated through a small conv net;
  - NV12 frames: converted to RGB exactly (integer formula, numpy
    nv12_to_rgb), then as above.
Frames are fresh random noise (worst case for resampling), smooth random
images and scikit-image's photos, at several sizes and aspect ratios.
"""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyengine
from pyengine import _core
from conftest import tier_params

STEP_FLOAT = 2e-3


def _identity_model(shape):
    """x -> Identity -> y with x's (possibly dynamic: None) shape."""
    dims = [d if d is not None else "d%d" % i for i, d in enumerate(shape)]
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "ident",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _conv_model(h, w, seed=0):
    """A small conv net on [N, 3, h, w]: Conv 3->8 3x3, Relu, global pool."""
    rng = np.random.default_rng(seed)
    wts = numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "W")
    b = numpy_helper.from_array((rng.standard_normal(8) * 0.1).astype(np.float32), "B")
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["y"])]
    g = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, h, w])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 1, 1])], [wts, b])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _pre_engine(pre, out_hw=(None, None), tier=None, num_threads=2):
    """An engine that is the preprocess alone (model: Identity)."""
    shape = [None, 3, 4, *out_hw] if pre.layout == "NCTHW" else [None, 3, *out_hw]
    prev = _core.isa_cap()
    if tier is not None:
        _core.set_isa_cap(tier)
    try:
        return pyengine.build(_identity_model(shape), optimize=False, num_threads=num_threads, preprocess=pre)
    finally:
        _core.set_isa_cap(prev)


def _kernel_name(eng, frames):
    return [layer["kernel"] for layer in eng.profile({"x": frames}, runs=1) if layer["op"] == "Preprocess"][0]


def _steps(a, b, pre):
    """|a - b| in uint8 steps of the resized image (undoing std)."""
    std = np.asarray(pre.std, np.float64).reshape((1, 3) + (1,) * (a.ndim - 2))
    return np.abs(a.astype(np.float64) - b.astype(np.float64)) * std * 255.0


def _smooth(rng, n, h, w):
    """Random smooth images: noise upsampled from a coarse grid, plus edges."""
    coarse = rng.integers(0, 256, (n, max(h // 16, 2), max(w // 16, 2), 3)).astype(np.float64)
    yi = np.linspace(0, coarse.shape[1] - 1, h)
    xi = np.linspace(0, coarse.shape[2] - 1, w)
    img = coarse[:, np.round(yi).astype(int)][:, :, np.round(xi).astype(int)]
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _frames(rng, n, h, w, kind):
    if kind == "noise":
        return rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    return _smooth(rng, n, h, w)


# Configurations: (Preprocess kwargs, frame sizes (h, w)). Sizes cover
# upscaling and downscaling, landscape and portrait, odd widths (AVX2 tails)
# and crops that are not multiples of 8.
CASES = {
    "shorter_crop_aa": (dict(resize=64, crop=56, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
                        [(120, 160), (97, 203), (211, 77), (48, 50), (64, 64)]),
    "shorter_crop_noaa": (dict(resize=64, crop=(56, 50), antialias=False, std=0.5),
                          [(120, 160), (97, 203), (211, 77), (33, 45)]),
    "exact_bilinear": (dict(resize=(40, 71), mean=0.5, std=0.25), [(120, 160), (25, 31), (40, 71), (301, 99)]),
    "exact_nearest": (dict(resize=(40, 71), interpolation="nearest"), [(120, 160), (25, 31), (301, 99)]),
    "shorter_nearest_crop": (dict(resize=50, crop=45, interpolation="nearest", color="bgr"),
                             [(120, 160), (77, 203)]),
    "crop_only_bgr": (dict(crop=(33, 47), color="bgr", mean=(0.1, 0.2, 0.3), std=(0.3, 0.2, 0.1)),
                      [(33, 47), (60, 61), (100, 48)]),
    "big_downscale_aa": (dict(resize=(24, 40)), [(270, 480)]),
}


@pytest.mark.parametrize("tier", tier_params(("ref", "avx2", "avx512")))
@pytest.mark.parametrize("case", sorted(CASES))
def test_kernel_matches_numpy_reference(case, tier):
    kwargs, sizes = CASES[case]
    pre = pyengine.Preprocess(**kwargs)
    rng = np.random.default_rng()
    for h, w in sizes:
        out_hw = pre.output_size(h, w)
        eng = _pre_engine(pre, out_hw if pre.crop or isinstance(pre.resize, tuple) else (None, None), tier)
        for kind in ("noise", "smooth"):
            frames = _frames(rng, 2, h, w, kind)
            got = eng(frames)
            want = pre.apply_numpy(frames)
            assert got.shape == want.shape == (2, 3) + out_hw
            err = _steps(got, want, pre).max()
            assert err <= STEP_FLOAT, f"{case} {h}x{w} {kind} ({tier}): {err} uint8 steps"
        if tier != "ref":
            assert _kernel_name(eng, frames) == f"preprocess_u8_{tier}"


@pytest.mark.parametrize("tier", tier_params(("avx2", "avx512")))
def test_simd_tier_matches_reference_kernel(tier):
    """Each SIMD tier against the ref kernel on the same frames, over many
    random geometries (every tail length of the 4-pixel and 8-float loops)."""
    rng = np.random.default_rng()
    for trial in range(12):
        h, w = int(rng.integers(8, 90)), int(rng.integers(8, 90))
        out = (int(rng.integers(1, 40)), int(rng.integers(1, 40)))
        pre = pyengine.Preprocess(resize=out, interpolation=("bilinear", "nearest")[trial % 2],
                                  antialias=bool(trial % 3), color=("rgb", "bgr")[trial % 2], std=0.3)
        frames = rng.integers(0, 256, (3, h, w, 3), dtype=np.uint8)
        want = _pre_engine(pre, out, "ref")(frames)
        got = _pre_engine(pre, out, tier)(frames)
        err = _steps(got, want, pre).max()
        assert err <= STEP_FLOAT, f"{pre} on {h}x{w}: {err} steps"


def test_matches_pillow():
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng()
    for interp, pil in (("bilinear", Image.BILINEAR), ("nearest", Image.NEAREST)):
        for h, w, size in ((480, 640, (224, 300)), (123, 457, (100, 37)), (50, 70, (111, 130)), (1080, 1920, (256, 455))):
            pre = pyengine.Preprocess(resize=size, interpolation=interp, std=0.2)
            eng = _pre_engine(pre, size)
            frames = _frames(rng, 2, h, w, "smooth" if h > 500 else "noise")
            got = eng(frames)
            want = np.stack([np.asarray(Image.fromarray(f).resize(size[::-1], pil)) for f in frames])
            want = pyengine.Preprocess(std=0.2).apply_numpy(want)
            err = _steps(got, want, pre)
            if interp == "nearest":
                # The same pixels, except at exact ties ((o + 0.5) * in / out an
                # integer), where Pillow's floating-point coordinate may fall
                # just below and pick the lower neighbour; the kernel's integer
                # arithmetic picks the pixel the formula names.
                ty = (2 * np.arange(size[0]) + 1) * h % (2 * size[0]) == 0
                tx = (2 * np.arange(size[1]) + 1) * w % (2 * size[1]) == 0
                err = err[:, :, ~ty][:, :, :, ~tx]
                assert err.max() < STEP_FLOAT, f"nearest {h}x{w}->{size}: {err.max()} steps"
            else:
                assert err.max() <= 1.0 + STEP_FLOAT, f"bilinear {h}x{w}->{size}: {err.max()} steps"


def test_matches_pillow_pipeline_on_photos():
    """torchvision-style Resize(256) + CenterCrop(224) on real photos, via
    Pillow, against the engine."""
    Image = pytest.importorskip("PIL.Image")
    data = pytest.importorskip("skimage.data")
    pre = pyengine.Preprocess.imagenet()
    eng = _pre_engine(pre, (224, 224))
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        img = getattr(data, name)()
        h, w = img.shape[:2]
        rh, rw = pre.resized_size(h, w)
        pil = Image.fromarray(img).resize((rw, rh), Image.BILINEAR)
        top, left = int(round((rh - 224) / 2.0)), int(round((rw - 224) / 2.0))
        ref = np.asarray(pil)[None, top:top + 224, left:left + 224]
        want = pyengine.Preprocess(mean=pre.mean, std=pre.std).apply_numpy(ref)
        got = eng(img[None])
        err = _steps(got, want, pre)
        assert err.max() <= 1.0 + STEP_FLOAT, f"{name}: {err.max()} steps"
        # BGR frames of the same photo give the same input.
        bgr = _pre_engine(pyengine.Preprocess.imagenet(color="bgr"), (224, 224))(img[None, :, :, ::-1].copy())
        np.testing.assert_array_equal(bgr, got)


@pytest.mark.torch
@pytest.mark.parametrize("antialias", [False, True])
def test_matches_torch_interpolate(antialias):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng()
    for h, w, size in ((120, 160, (50, 70)), (37, 91, (80, 20)), (300, 400, (33, 33))):
        pre = pyengine.Preprocess(resize=size, antialias=antialias)
        frames = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
        t = torch.from_numpy(frames.astype(np.float32)).permute(0, 3, 1, 2)
        want = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False,
                                               antialias=antialias).numpy() / 255.0
        got = _pre_engine(pre, size)(frames)
        err = _steps(got, want, pre)
        assert err.max() <= 1e-2, f"{h}x{w}->{size} antialias={antialias}: {err.max()} steps"


def test_geometry_matches_torchvision_rules():
    pre = pyengine.Preprocess(resize=256, crop=224)
    assert pre.resized_size(1080, 1920) == (256, 455)   # int(256 * 1920 / 1080) = 455
    assert pre.resized_size(1920, 1080) == (455, 256)
    assert pre.resized_size(480, 640) == (256, 341)
    assert pre.resized_size(300, 300) == (256, 256)
    # CenterCrop rounds half to even: (455 - 224) / 2 = 115.5 -> 116; (341 - 224) / 2 = 58.5 -> 58.
    rng = np.random.default_rng()
    for h, w, top, left in ((1080, 1920, 16, 116), (480, 640, 16, 58)):
        frames = rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)
        noresize = pyengine.Preprocess(crop=224)
        full = pyengine.Preprocess(resize=pre.resized_size(h, w)).apply_numpy(frames)
        np.testing.assert_allclose(pre.apply_numpy(frames), full[:, :, top:top + 224, left:left + 224], atol=1e-6)
        assert noresize.output_size(h, w) == (224, 224)


@pytest.mark.parametrize("tier", tier_params(("ref", "avx2", "avx512")))
def test_video_clips(tier):
    pre = pyengine.Preprocess(resize=40, crop=(32, 36), layout="NCTHW", color="bgr", mean=0.45, std=0.225)
    eng = _pre_engine(pre, (32, 36), tier)
    rng = np.random.default_rng()
    clips = rng.integers(0, 256, (2, 4, 60, 90, 3), dtype=np.uint8)
    got = eng(clips)
    want = pre.apply_numpy(clips)
    assert got.shape == (2, 3, 4, 32, 36)
    assert _steps(got, want, pre).max() <= STEP_FLOAT
    # Frame t of clip n is the 2-D transform of that frame.
    flat = pyengine.Preprocess(resize=40, crop=(32, 36), color="bgr", mean=0.45, std=0.225).apply_numpy(clips[1])
    np.testing.assert_allclose(got[1].transpose(1, 0, 2, 3), flat, atol=1e-5)


def test_end_to_end_and_plan_round_trip(tmp_path):
    pre = pyengine.Preprocess.imagenet(resize=72, crop=64)
    model = _conv_model(64, 64)
    plain = pyengine.build(model, num_threads=2)
    eng = pyengine.build(model, num_threads=2, preprocess=pre)
    assert eng.preprocess == pre
    assert plain.preprocess is None
    assert eng.inputs[0].name == "x" and eng.inputs[0].dtype == np.uint8
    assert eng.inputs[0].shape == (None, None, None, 3)
    assert "Preprocess" in eng.graph_text()
    rng = np.random.default_rng()
    tol = None
    for h, w in ((96, 128), (130, 75), (72, 72)):   # the frame size may change between calls
        frames = _frames(rng, 3, h, w, "smooth")
        got = eng(frames)
        want = plain(pre.apply_numpy(frames))
        tol = np.abs(want).max() * 1e-4 + 1e-5
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=tol)
        assert eng.run({"x": frames})["y"].shape == got.shape
    path = tmp_path / "pre.plan"
    eng.save(path)
    loaded = pyengine.load(path, num_threads=1)
    assert loaded.preprocess == eng.preprocess
    assert loaded.inputs[0].dtype == np.uint8
    frames = _frames(rng, 2, 100, 140, "noise")
    np.testing.assert_array_equal(loaded(frames), eng(frames))  # same kernels; 1 vs 2 threads
    # The plan's node carries the transform: the C++ runtime needs no metadata.
    node = [n for n in _core.load_plan_sections(str(path))[0].nodes() if n["op_type"] == "Preprocess"][0]
    assert node["domain"] == "pyengine" and node["inputs"] == ["x"]


def test_threads_and_batch_are_consistent():
    pre = pyengine.Preprocess(resize=(150, 170), std=0.3)
    rng = np.random.default_rng()
    frames = rng.integers(0, 256, (5, 300, 200, 3), dtype=np.uint8)
    one = _pre_engine(pre, (150, 170), num_threads=1)(frames)
    two = _pre_engine(pre, (150, 170), num_threads=2)(frames)
    np.testing.assert_array_equal(one, two)
    eng = _pre_engine(pre, (150, 170))
    np.testing.assert_array_equal(np.concatenate([eng(frames[i:i + 1]) for i in range(5)]), one)
    # Non-contiguous frames (a BGR view) are accepted.
    view = frames[:, :, :, ::-1]
    np.testing.assert_array_equal(eng(view), eng(np.ascontiguousarray(view)))


def test_bad_frames_name_the_input():
    pre = pyengine.Preprocess(resize=64, crop=56)
    eng = _pre_engine(pre, (56, 56))
    rng = np.random.default_rng()
    with pytest.raises(pyengine.DTypeError, match="'x'.*uint8"):
        eng(rng.random((1, 80, 80, 3), dtype=np.float32))
    with pytest.raises(pyengine.ShapeError, match="'x'"):
        eng(rng.integers(0, 256, (1, 80, 80, 4), dtype=np.uint8))
    with pytest.raises(pyengine.ShapeError, match="'x'"):
        eng(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8))  # no batch axis
    crop_only = _pre_engine(pyengine.Preprocess(crop=56), (56, 56))
    with pytest.raises(pyengine.ShapeError, match="'x'.*smaller than the crop 56x56"):
        crop_only(rng.integers(0, 256, (1, 50, 80, 3), dtype=np.uint8))
    np.testing.assert_array_equal(crop_only(np.full((1, 56, 56, 3), 255, np.uint8)), np.ones((1, 3, 56, 56)))


def test_build_checks_against_the_model_input():
    model = _conv_model(64, 64)
    with pytest.raises(pyengine.ShapeError, match="model input 'x'.*60x60.*64x64"):
        pyengine.build(model, preprocess=pyengine.Preprocess(resize=72, crop=60))
    with pytest.raises(pyengine.ShapeError, match="model input 'x'.*aspect ratio"):
        pyengine.build(model, preprocess=pyengine.Preprocess(resize=64))
    with pytest.raises(pyengine.ShapeError, match="model input 'x'.*NCTHW"):
        pyengine.build(model, preprocess=pyengine.Preprocess(resize=(64, 64), layout="NCTHW"))
    with pytest.raises(pyengine.InvalidArgumentError, match="no input named 'frames'"):
        pyengine.build(model, preprocess=pyengine.Preprocess(resize=(64, 64), input="frames"))
    with pytest.raises(pyengine.UnsupportedOperatorError, match="CPU runtime only"):
        pyengine.build(model, backend="tensorrt", preprocess=pyengine.Preprocess(resize=(64, 64)))
    with pytest.raises(pyengine.InvalidArgumentError, match="Preprocess"):
        pyengine.build(model, preprocess={"resize": 64})


@pytest.mark.parametrize("kwargs, match", [
    (dict(mean=(123.7, 116.3, 103.5)), "0-1 units"),
    (dict(std=(58.4, 57.1, 57.4)), "0-1 units"),
    (dict(std=0), r"\(0, 1\]"),
    (dict(mean=(0.5, 0.5)), "3 values"),
    (dict(resize=(224,)), "resize"),
    (dict(resize=0), "resize"),
    (dict(crop=(1.5, 2)), "crop"),
    (dict(color="yuv"), "color"),
    (dict(interpolation="bicubic"), "interpolation"),
    (dict(layout="NHWC"), "layout"),
])
def test_invalid_options(kwargs, match):
    with pytest.raises(pyengine.InvalidArgumentError, match=match):
        pyengine.Preprocess(**kwargs)


def test_json_round_trip_and_frozen():
    pre = pyengine.Preprocess.imagenet(color="bgr", interpolation="nearest")
    assert pyengine.Preprocess.from_json(pre.to_json()) == pre
    assert pre.crop == (224, 224) and pre.resize == 256
    with pytest.raises(Exception):
        pre.resize = 10


def test_video_model_end_to_end():
    """A 3-D zoo model (R(2+1)D, input [N, 3, 8, 32, 32]) fed clips of 8 BGR frames."""
    from pyengine import zoo

    model = zoo.build_model("r2plus1d")
    pre = pyengine.Preprocess(resize=36, crop=32, layout="NCTHW", color="bgr", mean=(0.43, 0.4, 0.37),
                              std=(0.23, 0.22, 0.22))
    eng = pyengine.build(model, num_threads=2, preprocess=pre)
    plain = pyengine.build(model, num_threads=2)
    assert eng.inputs[0].shape == (None, 8, None, None, 3)
    clips = _smooth(np.random.default_rng(), 16, 48, 64).reshape(2, 8, 48, 64, 3)
    want = plain(pre.apply_numpy(clips))
    np.testing.assert_allclose(eng(clips), want, rtol=1e-4, atol=np.abs(want).max() * 1e-4)
    with pytest.raises(pyengine.ShapeError, match="'input'"):
        eng(clips[:, :4])  # the model takes clips of 8 frames


def test_cli_build_with_preprocess(tmp_path, capsys):
    from pyengine import cli
    import onnx

    path = tmp_path / "m.onnx"
    onnx.save(_conv_model(56, 56), str(path))
    plan = tmp_path / "m.plan"
    assert cli.main(["build", str(path), "-o", str(plan), "--backend", "cpu",
                     "--preprocess", "resize=64,crop=56,mean=imagenet,std=imagenet,color=bgr"]) == 0
    eng = pyengine.load(plan)
    assert eng.preprocess == pyengine.Preprocess.imagenet(resize=64, crop=56, color="bgr")
    frames = np.random.default_rng().integers(0, 256, (1, 70, 90, 3), dtype=np.uint8)
    assert eng(frames).shape == (1, 8, 1, 1)
    assert cli.main(["build", str(path), "-o", str(plan), "--preprocess", "size=64"]) != 0
    assert "unknown preprocess spec key 'size'" in capsys.readouterr().err
    assert pyengine.preprocess.parse_spec("imagenet,interpolation=nearest,antialias=0") == pyengine.Preprocess.imagenet(
        interpolation="nearest", antialias=False)


def test_int8_build_with_preprocess():
    """Calibration sees the float model input; the Preprocess op goes in front
    of the quantized graph."""
    model = _conv_model(56, 56)
    pre = pyengine.Preprocess.imagenet(resize=64, crop=56)
    rng = np.random.default_rng()
    calib = rng.standard_normal((16, 3, 56, 56)).astype(np.float32)
    eng = pyengine.build(model, precision="int8", calibration_data=calib, preprocess=pre, progress=False)
    plain = pyengine.build(model, precision="int8", calibration_data=calib, progress=False)
    assert eng.precision == "int8" and eng.inputs[0].dtype == np.uint8
    frames = _frames(rng, 2, 70, 90, "smooth")
    want = plain(pre.apply_numpy(frames))
    # Inputs within 2e-3 uint8 steps may still round to neighbouring int8
    # codes at the first QuantizeLinear; allow a few output codes' worth.
    np.testing.assert_allclose(eng(frames), want, atol=np.abs(want).max() * 0.02 + 1e-4)


def _nv12(rng, n, h, w, lead=()):
    """Random NV12 frames (smooth luma, noisy chroma) of shape lead + (n, h * 3 // 2, w)."""
    y = _smooth(rng, n, h, w)[..., 0]
    uv = rng.integers(16, 241, (n, h // 2, w), dtype=np.uint8)
    return np.concatenate([y, uv], axis=1).reshape(lead + (n, h * 3 // 2, w))


@pytest.mark.parametrize("tier", tier_params(("ref", "avx2", "avx512")))
def test_nv12_frames(tier):
    rng = np.random.default_rng()
    pre = pyengine.Preprocess.imagenet(resize=64, crop=(56, 50), color="nv12")
    eng = _pre_engine(pre, (56, 50), tier)
    for h, w in ((120, 160), (72, 58), (240, 426)):
        frames = _nv12(rng, 2, h, w)
        rgb = pyengine.preprocess.nv12_to_rgb(frames)
        assert rgb.shape == (2, h, w, 3)
        got = eng(frames)
        want = pyengine.Preprocess.imagenet(resize=64, crop=(56, 50)).apply_numpy(rgb)
        assert _steps(got, want, pre).max() <= STEP_FLOAT
        np.testing.assert_allclose(pre.apply_numpy(frames), want, atol=1e-6)
    assert eng.inputs[0].shape == (None, None, None)
    with pytest.raises(pyengine.ShapeError, match="'x'.*H even"):
        eng(rng.integers(0, 256, (1, 100, 64), dtype=np.uint8))  # 100 rows: not H * 3 / 2 with H even
    with pytest.raises(pyengine.ShapeError, match="'x'.*even width"):
        eng(rng.integers(0, 256, (1, 120, 63), dtype=np.uint8))
    with pytest.raises(pyengine.ShapeError, match="'x'"):  # RGB frames to an NV12 engine
        eng(rng.integers(0, 256, (1, 120, 64, 3), dtype=np.uint8))


def test_nv12_formula_matches_bt601():
    """The fixed-point conversion against the BT.601 limited-range equations
    in float (within the rounding of 20-bit coefficients) and known colours."""
    rng = np.random.default_rng()
    frames = _nv12(rng, 1, 16, 32)
    rgb = pyengine.preprocess.nv12_to_rgb(frames)[0].astype(np.float64)
    y = frames[0, :16].astype(np.float64)
    uv = frames[0, 16:].reshape(8, 16, 2).astype(np.float64) - 128
    u = uv[..., 0].repeat(2, 0).repeat(2, 1)
    v = uv[..., 1].repeat(2, 0).repeat(2, 1)
    c = 1.164 * np.maximum(y - 16, 0)
    want = np.clip(np.stack([c + 1.596 * v, c - 0.813 * v - 0.391 * u, c + 2.018 * u], -1), 0, 255)
    assert np.abs(rgb - want).max() <= 0.51 + 1e-3 * 255
    grey = np.concatenate([np.full((1, 4, 4), 235, np.uint8), np.full((1, 2, 4), 128, np.uint8)], axis=1)
    assert (pyengine.preprocess.nv12_to_rgb(grey) == 255).all()   # video white
    # Video clips of NV12 frames.
    pre = pyengine.Preprocess(resize=(24, 30), color="nv12", layout="NCTHW")
    clips = _nv12(rng, 4, 40, 50, lead=(1,)).reshape(1, 4, 60, 50)
    got = _pre_engine(pre, (24, 30))(clips)
    assert got.shape == (1, 3, 4, 24, 30)
    assert _steps(got, pre.apply_numpy(clips), pre).max() <= STEP_FLOAT
