"""Every model family of ``torch_models.FAMILIES``, as PyTorch exports it,
built by pyengine (issue 12).

For each registered family (small form) and each exporter (TorchScript,
``dynamo=False``, opset 17, BatchNorm unfolded; dynamo, ``dynamo=True``,
opset 18, external data; the helpers of test_torch_export.py):

- ``test_fp32_matches_onnxruntime``: pyengine's FP32 engine on the exported
  file against onnxruntime on the same file, batch 2, fresh random inputs:
  relative L2 error <= 1e-5.
- ``test_int8_agrees_with_fp32``: pyengine's INT8 engine (default
  calibration method, calibrated on real images) agrees with pyengine's FP32
  engine on the top-1 class of >= 99% of 200 real images.
- ``test_int8_agrees_with_fp32_held_out``: the same on 300 held-out real
  images, where a family's measured shortfall (``Family.int8_finding``) makes
  it a strict xfail.
- ``test_plan_round_trip``: the FP32 and INT8 engines, saved to a plan file
  and loaded back, give bit-identical outputs.

The real images are crops of scikit-image's bundled pictures (one class per
picture, ``realdata_models.TEXTURE_IMAGES``): training and calibration crops
from the left 60% of each picture, held-out crops from the right 40%. A 5-D
input (C, T, H, W) gets clips: a crop window panning across the picture over
T frames.

Random-weight networks have near-tied logits, where a top-1 agreement test
measures nothing. So each family's backbone keeps its random weights (and
random BatchNorm statistics), but its classifier (the last ``nn.Linear``
called in ``forward``) is replaced by a linear head trained on the backbone's
features of 400 training crops (multinomial logistic regression). On those
crops its logits are decisive by construction (FP32 top-1 >= 90% is checked),
so INT8 flips there mean INT8 error, not ties: that is the 99% test, on 200 of
them. On held-out crops the heads are right 52-83% of the time (>= 30% is
checked), many crops sit near a decision boundary, and pyengine's INT8 agrees
on 86-99% of them, as onnxruntime's own INT8 does (measured per family in
``int8_finding``).

A family may set ``int8=False`` only with the reason in its ``notes``.
Full-size forms are exercised by ``tools/bench.py --families``; a few of them
are checked against onnxruntime here too (``slow`` marker).
"""

import functools

import numpy as np
import pytest

import pyengine

pytestmark = pytest.mark.torch

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("skimage.data")

import torch_models  # noqa: E402  (imports torch)
from realdata_models import TEXTURE_IMAGES  # noqa: E402
from test_torch_export import export, ort_session, rel_l2  # noqa: E402

MAX_REL_L2 = 1e-5          # pyengine FP32 vs onnxruntime FP32
MIN_AGREEMENT = 0.99       # INT8 vs FP32 top-1, held-out real images
MIN_HEAD_ACCURACY = {"fitted": 0.9, "held_out": 0.3}  # the trained head's FP32 top-1 (chance: 1 / 10)
TRAIN_PER_CLASS = 40       # crops per picture: head training (left 60% of the picture)
CALIB_SAMPLES = 128        # of the training crops: INT8 calibration
FITTED_SAMPLES = 200       # of the training crops (class-balanced): the INT8 agreement test
TEST_PER_CLASS = 30        # crops per picture: the held-out INT8 check (300 images, right 40%)
SCALE = 2                  # crop windows are 1x to SCALE x the input size
THREADS = 1                # a shared CI machine: no spinning thread pools
EXPORTERS = ("torchscript", "dynamo")
FAMILY_NAMES = list(torch_models.FAMILIES)

# Families whose INT8 agreement falls short even on the fitted crops (measured;
# strict xfails, so a fix shows up as a failure asking to update this list).
FITTED_FINDINGS = {
    "rmnet18": "97.5% on fitted crops (FP32 top-1 99.75%), 86% held out; INT8 relative L2 on the logits 11%, "
               "2-3x other families: each RM block's hidden tensor holds the block input (Dirac channels) next "
               "to the conv1 outputs, and one per-tensor activation scale serves both ranges",
    "resnet_stochastic_depth": "96.5% on fitted crops (FP32 top-1 95.5%), 93.7% held out",
    "r2plus1d_18": "96.5% on fitted crops (FP32 top-1 98%), 90.3% held out; its Conv3d layers run as float "
                   "fake-quant",
}

# Full-size forms checked here (slow, so few): the deepest ResNet from the
# TorchScript exporter (BatchNorm unfolded) and ConvNeXt-T from the dynamo one
# (its LayerNorm, GELU and permutes).
FULL_SIZE = [("resnet101", "torchscript"), ("convnext_t", "dynamo")]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """PyTorch on one thread here (as realdata_models.train): on a loaded
    2-core machine its spinning OpenMP workers make small ops 30x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- real images


@functools.lru_cache(maxsize=1)
def _pictures():
    import skimage.data

    pictures = []
    for name in TEXTURE_IMAGES:
        img = getattr(skimage.data, name)().astype(np.float32) / 255.0
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        pictures.append(np.ascontiguousarray(img[:, :, :3].transpose(2, 0, 1)))  # CHW
    return pictures


def _crops(shape, per_class, part, rng):
    """(x, y): per_class crops of each picture, shape (N, *shape), unnormalized.

    shape is (C, H, W) or (C, T, H, W); C is 3 (RGB) or 1 (gray). A crop is a
    random square window (1x to 2x the input size, so scales vary) resized to
    (H, W); a clip moves that window by a fixed random step each frame (a pan),
    staying inside the picture's part ("train": left 60%, "test": right 40%)."""
    import torch.nn.functional as F

    channels, (h, w) = shape[0], shape[-2:]
    frames = shape[1] if len(shape) == 4 else 1
    if channels not in (1, 3):
        raise ValueError(f"real-image data has 1 or 3 channels, the family wants {channels}")
    xs, ys = [], []
    for label, pic in enumerate(_pictures()):
        ph, pw = pic.shape[1:]
        lo, hi = (0, int(0.6 * pw)) if part == "train" else (int(0.6 * pw), pw)
        for _ in range(per_class):
            size = int(rng.integers(max(h, w), min(SCALE * max(h, w), hi - lo, ph) + 1))
            # Pan: total travel up to the room left in the part, split evenly over the frames.
            room_x, room_y = hi - lo - size, ph - size
            step_x = int(rng.integers(-(room_x // max(frames - 1, 1)), room_x // max(frames - 1, 1) + 1)) \
                if frames > 1 else 0
            step_y = int(rng.integers(-(room_y // (4 * max(frames - 1, 1))), room_y // (4 * max(frames - 1, 1)) + 1)) \
                if frames > 1 else 0
            span_x, span_y = abs(step_x) * (frames - 1), abs(step_y) * (frames - 1)
            c0 = lo + int(rng.integers(0, room_x - span_x + 1)) + (span_x if step_x < 0 else 0)
            r0 = int(rng.integers(0, room_y - span_y + 1)) + (span_y if step_y < 0 else 0)
            flip = rng.random() < 0.5
            windows = []
            for t in range(frames):
                r, c = r0 + t * step_y, c0 + t * step_x
                windows.append(pic[:, r:r + size, c:c + size])
            clip = torch.from_numpy(np.stack(windows))
            clip = F.interpolate(clip, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
            if flip:
                clip = torch.flip(clip, dims=[3])
            clip = clip.numpy()
            if channels == 1:
                clip = clip.mean(axis=1, keepdims=True)
            # (T, C, H, W) -> (C, H, W) or (C, T, H, W)
            xs.append(clip[0] if len(shape) == 3 else clip.transpose(1, 0, 2, 3))
            ys.append(label)
    return np.stack(xs).astype(np.float32), np.array(ys, np.int64)


@functools.lru_cache(maxsize=4)
def photo_data(shape):
    """{"train": (x, y), "calib": x, "test": (x, y), "classes"} for one sample
    shape, normalized per channel by the training crops' mean and std."""
    rng = np.random.default_rng(12)
    x_train, y_train = _crops(shape, TRAIN_PER_CLASS, "train", rng)
    x_test, y_test = _crops(shape, TEST_PER_CLASS, "test", rng)
    axes = tuple(i for i in range(x_train.ndim) if i != 1)
    mean = x_train.mean(axis=axes, keepdims=True)
    std = x_train.std(axis=axes, keepdims=True)
    x_train = ((x_train - mean) / std).astype(np.float32)
    x_test = ((x_test - mean) / std).astype(np.float32)
    calib = x_train[rng.permutation(len(x_train))[:CALIB_SAMPLES]]
    return {"train": (x_train, y_train), "calib": calib, "test": (x_test, y_test), "classes": len(TEXTURE_IMAGES)}


# ---------------------------------------------------------------- trained head


def _classifier(model, x):
    """(name, features) of the last nn.Linear that model.forward calls, and the
    inputs it got for the batches of x."""
    last = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            def hook(mod, inputs, name=name):
                last["name"], last["x"] = name, inputs[0].detach()
            hooks.append(module.register_forward_pre_hook(hook))
    names, feats = set(), []
    try:
        with torch.no_grad():
            for i in range(0, len(x), 64):
                last.clear()
                model(torch.from_numpy(x[i:i + 64]))
                if "name" not in last:
                    raise AssertionError("the family's forward calls no nn.Linear: the agreement test retrains "
                                         "the last nn.Linear as the classifier head")
                names.add(last["name"])
                feats.append(last["x"])
    finally:
        for h in hooks:
            h.remove()
    (name,) = names
    f = torch.cat(feats)
    assert f.ndim == 2, f"the classifier {name!r} gets {tuple(f.shape)} inputs; expected (N, features)"
    return name, f


def fit_head_(model, x, y, classes):
    """Replaces model's classifier by a multinomial logistic regression trained
    on its input features for (x, y); returns model."""
    name, f = _classifier(model, x)
    f = f.double()
    # One scale for all features, not one per feature: a near-constant feature
    # (a dead channel of a random network) must not get a huge weight, which
    # would turn its quantization noise into the logits.
    mean, std = f.mean(0), f.std(0).mean() + 1e-12
    z = (f - mean) / std
    target = torch.from_numpy(y)
    w = torch.zeros(classes, f.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ w.T + b, target) + 1e-3 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    head = torch.nn.Linear(f.shape[1], classes)
    with torch.no_grad():
        head.weight.copy_((w / std).float())
        head.bias.copy_((b - (w / std) @ mean).float())
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, head)
    return model.eval()


@functools.lru_cache(maxsize=2)
def trained_family(name):
    """(model with a trained head, its photo data)."""
    family = torch_models.FAMILIES[name]
    data = photo_data(tuple(family.input_shape))
    return fit_head_(family.build(False), *data["train"], data["classes"]), data


# ---------------------------------------------------------------- the cases


@pytest.fixture(scope="module", params=[(f, e) for f in FAMILY_NAMES for e in EXPORTERS],
                ids=[f"{f}-{e}" for f in FAMILY_NAMES for e in EXPORTERS])
def case(request, tmp_path_factory):
    """One family, one exporter: the exported file and its engines (built once)."""
    name, exporter = request.param
    family = torch_models.FAMILIES[name]
    model, data = trained_family(name)
    path = str(tmp_path_factory.mktemp(f"{name}-{exporter}") / f"{name}.onnx")
    export(model, path, exporter, tuple(family.input_shape))
    return {"name": name, "exporter": exporter, "family": family, "path": path, "data": data, "engines": {}}


def engine(case, precision):
    if precision not in case["engines"]:
        if precision == "fp32":
            case["engines"][precision] = pyengine.build(case["path"], backend="cpu", num_threads=THREADS)
        else:
            case["engines"][precision] = pyengine.build(
                case["path"], backend="cpu", precision="int8", calibration_data=case["data"]["calib"],
                report=False, progress=False, num_threads=THREADS)
    return case["engines"][precision]


def run_batched(eng, x, batch=50):
    return np.concatenate([eng.run({"input": x[i:i + batch]})["logits"] for i in range(0, len(x), batch)])


def int8_outputs(case, split):
    """(FP32 logits, INT8 logits, labels) on the "fitted" crops (the head's
    training crops) or the "held_out" crops; computed once per case."""
    key = f"outputs_{split}"
    if key not in case:
        x, y = case["data"]["train" if split == "fitted" else "test"]
        if split == "fitted":  # every other crop of each picture (crops are grouped by picture)
            step = len(x) // FITTED_SAMPLES
            x, y = x[::step][:FITTED_SAMPLES], y[::step][:FITTED_SAMPLES]
        case[key] = (run_batched(engine(case, "fp32"), x), run_batched(engine(case, "int8"), x), y)
    return case[key]


def test_registry_entries_are_well_formed():
    """Every family has a small and a full form of image (C, H, W) or clip
    (C, T, H, W) inputs, and says why when it opts out of the INT8 test."""
    assert FAMILY_NAMES
    for name, family in torch_models.FAMILIES.items():
        assert len(family.input_shape) in (3, 4), name
        assert len(family.full_input_shape) == len(family.input_shape), name
        assert family.int8 or family.notes.strip(), f"{name}: int8=False needs the reason in notes"


def test_fp32_matches_onnxruntime(case):
    """pyengine FP32 on the exported file vs onnxruntime on the same file,
    batch 2, fresh random inputs."""
    seed = int(np.random.SeedSequence().entropy % 2**32)
    x = np.random.default_rng(seed).standard_normal((2, *case["family"].input_shape), dtype=np.float32)
    out = engine(case, "fp32").run({"input": x})["logits"]
    (ref,) = ort_session(case["path"]).run(None, {"input": x})
    where = f"{case['name']} ({case['exporter']}), seed {seed}"
    assert out.shape == ref.shape, where
    err = rel_l2(out, ref)
    assert err <= MAX_REL_L2, f"{where}: relative L2 error {err:.3g} vs onnxruntime"


def check_agreement(case, split):
    if not case["family"].int8:
        pytest.skip(f"{case['name']}: no INT8 test ({case['family'].notes})")
    where = f"{case['name']} ({case['exporter']}, {split} crops)"
    fp32, int8, y = int8_outputs(case, split)
    assert engine(case, "int8").precision == "int8"
    head_acc = float(np.mean(fp32.argmax(1) == y))
    assert head_acc >= MIN_HEAD_ACCURACY[split], f"{where}: the trained head's FP32 top-1 is only {head_acc:.1%}"
    agreement = float(np.mean(fp32.argmax(1) == int8.argmax(1)))
    print(f"{where}: agreement {agreement:.2%}, FP32 top-1 {head_acc:.2%}")
    assert agreement >= MIN_AGREEMENT, (
        f"{where}: INT8 agrees with FP32 on {agreement:.2%} of {len(y)} images "
        f"(FP32 top-1 {head_acc:.2%}, INT8 top-1 {np.mean(int8.argmax(1) == y):.2%})")


def test_int8_agrees_with_fp32(request, case):
    """INT8 (pyengine's default calibration, on real training crops) picks the
    FP32 engine's class on >= 99% of 200 crops the head was fitted on (real
    images where the head's logits are decisive by construction: a broken or
    badly scaled INT8 op flips them, near-ties do not exist there)."""
    if case["name"] in FITTED_FINDINGS:
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"{case['name']}: {FITTED_FINDINGS[case['name']]}"))
    check_agreement(case, "fitted")


def test_int8_agrees_with_fp32_held_out(request, case):
    """The same on held-out crops (300, right 40% of each picture), where a
    head on random features is right only 60-80% of the time, so many crops
    lie near a decision boundary. A family whose ``int8_finding`` records a
    measured shortfall runs as a strict xfail (it fails when it starts
    passing, so the note gets updated). One exporter: the finding is the
    network's, and both exports build the same INT8 graph."""
    if case["exporter"] != "torchscript":
        pytest.skip("held-out agreement is checked on the TorchScript export (the same network)")
    finding = case["family"].int8_finding
    if finding:
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"{case['name']}: {finding}"))
    check_agreement(case, "held_out")


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_plan_round_trip(case, precision, tmp_path):
    """Saved and loaded, the engine gives bit-identical outputs."""
    if precision == "int8" and not case["family"].int8:
        pytest.skip(f"{case['name']}: no INT8 engine ({case['family'].notes})")
    x = np.random.default_rng().standard_normal((2, *case["family"].input_shape), dtype=np.float32)
    built = engine(case, precision)
    path = tmp_path / f"{case['name']}-{precision}.plan"
    built.save(str(path))
    loaded = pyengine.load(str(path), num_threads=THREADS)
    assert loaded.precision == built.precision
    a, b = built.run({"input": x})["logits"], loaded.run({"input": x})["logits"]
    assert a.shape == b.shape and np.array_equal(a, b), f"{case['name']} ({case['exporter']}) {precision}"


@pytest.mark.slow
@pytest.mark.parametrize("name,exporter", [pytest.param(n, e, id=f"{n}-{e}") for n, e in FULL_SIZE
                                           if n in torch_models.FAMILIES])
def test_full_size_fp32_matches_onnxruntime(name, exporter, tmp_path):
    """The real-size network (224x224, 1000 classes), batch 2, against onnxruntime."""
    family = torch_models.FAMILIES[name]
    path = str(tmp_path / f"{name}.onnx")
    export(family.build(True), path, exporter, tuple(family.full_input_shape))
    seed = int(np.random.SeedSequence().entropy % 2**32)
    x = np.random.default_rng(seed).standard_normal((2, *family.full_input_shape), dtype=np.float32)
    out = pyengine.build(path, backend="cpu", num_threads=2).run({"input": x})["logits"]
    (ref,) = ort_session(path).run(None, {"input": x})
    err = rel_l2(out, ref)
    assert err <= MAX_REL_L2, f"{name} ({exporter}) full size, seed {seed}: relative L2 error {err:.3g}"


def test_rm_block_equals_its_residual_block():
    """The RMNet-style block is the ResNet basic block it was made from
    (Dirac channels carry the identity through the ReLU on x >= 0)."""
    gen = torch.Generator().manual_seed(3)
    c = 8
    conv1, bn1 = torch.nn.Conv2d(c, c, 3, 1, 1, bias=False), torch.nn.BatchNorm2d(c)
    conv2, bn2 = torch.nn.Conv2d(c, c, 3, 1, 1, bias=False), torch.nn.BatchNorm2d(c)
    residual = torch_models._randomize_all_(torch.nn.ModuleList([conv1, bn1, conv2, bn2]), seed=4)
    block = torch_models.RMBlock(c).load_residual_block_(*residual).eval()
    x = torch.relu(torch.randn(2, c, 9, 9, generator=gen))
    with torch.no_grad():
        ref = torch.relu(bn2(conv2(torch.relu(bn1(conv1(x))))) + x)
        torch.testing.assert_close(block(x), ref, rtol=1e-5, atol=1e-5)
