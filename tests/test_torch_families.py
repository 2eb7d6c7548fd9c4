"""Every model family of ``torch_models.FAMILIES``, as PyTorch exports it,
built by pyengine (issue 12).

For each registered family (small form) and each exporter (TorchScript,
``dynamo=False``, opset 17, BatchNorm unfolded; dynamo, ``dynamo=True``,
opset 18, external data; the helpers of test_torch_export.py):

- ``test_fp32_matches_onnxruntime``: pyengine's FP32 engine on the exported
  file against onnxruntime on the same file, batch 2, fresh random inputs:
  relative L2 error <= 1e-5.
- ``test_int8_agrees_with_fp32``: pyengine's INT8 engine (default
  calibration method, calibrated on 128 training images) agrees with
  pyengine's FP32 engine on the top-1 class of >= 99% of 300 held-out real
  images, for the family's small form *trained* on real images; the trained
  network's FP32 top-1 on them is printed and must be >= 50% (chance: 10%).
  A family's measured shortfall (``Family.int8_finding``) makes it a strict
  xfail (a plain one where the measurement straddles the bound).
- ``test_plan_round_trip``: the FP32 and INT8 engines, saved to a plan file
  and loaded back, give bit-identical outputs.

The real images are crops of scikit-image's bundled pictures (one class per
picture, ``realdata_models.TEXTURE_IMAGES``, 10 classes). Each picture is cut
into square tiles (twice the input size); a fixed random 60% of each
picture's tiles give the training and calibration crops (800), the other 40%
the held-out crops (300), so no held-out pixel was seen in training. (A tile
split rather than left/right halves: held-out crops then come from the same
kinds of regions as the training ones, not from parts of a picture with no
counterpart in training.) A 5-D input (C, T, H, W) gets clips: a crop window
panning across its tile over T frames.

Random-weight networks have near-tied logits, where a top-1 agreement test
measures ties, not INT8 error. So every family's small form is trained end to
end (``train_``: all weights, BatchNorm in train mode, then eval; Adam,
one-cycle learning rate, TRAIN_STEPS batches of 16 crops, seeded, PyTorch on
one thread), cached per family so both exporters export the same network.
Exceptions (``TRAINING``): the two full-width ResNet-50s train only layer4
and fc on their frozen random stem and layer1-3 (23.5M parameters are too
slow to train end to end here), WRN-10-4 trains 80 steps, BiT, the
Residual Attention Network and IBN-Net 360 (at 120 a few held-out crops
sat within INT8 noise of a tie, and which flipped depended on PyTorch's
kernels); the SEW
spiking ResNet trains through ``torch_models.SurrogateHeaviside`` (eval mode,
and so the export, keeps the plain Heaviside). Pruned BatchNorm scales (exact
zeros) and the RM blocks' Dirac channels stay fixed. onnxruntime's own INT8
agreement on the same crops is printed by ``tools/family_agreement.py``.

A family may set ``int8=False`` only with the reason in its ``notes``.
Full-size forms are exercised by ``tools/bench.py --families``; a few of them
are checked against onnxruntime here too (``slow`` marker).
"""

import functools
import time

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
MIN_ACCURACY = 0.5         # the trained network's FP32 top-1 on the held-out crops (chance: 1 / 10)
TRAIN_PER_CLASS = 80       # crops per picture: training (from 60% of its tiles)
CALIB_SAMPLES = 128        # of the training crops: INT8 calibration
TEST_PER_CLASS = 30        # crops per picture: the held-out INT8 check (300 images, the other tiles)
SCALE = 2                  # crop windows are 1x to SCALE x the input size
TRAIN_STEPS = 120          # Adam steps of TRAIN_BATCH crops (2.4 epochs of the training crops)
TRAIN_BATCH = 16
TRAIN_LR = 1e-2
THREADS = 1                # a shared CI machine: no spinning thread pools
EXPORTERS = ("torchscript", "dynamo")
FAMILY_NAMES = list(torch_models.FAMILIES)

# Families trained differently (train_'s keyword arguments), to keep the
# whole file's training within a few minutes on one thread.
TRAINING = {
    # Full-width ResNet-50s (23.5M parameters, 40 ms a crop to train at 64 px
    # on one thread): only layer4 and fc learn, on the frozen random stem
    # and layer1-3's outputs of half the training crops.
    "resnet50": dict(steps=120, lr=1e-3, split=lambda m: _resnet_layer4(m)),
    "resnet50_pruned": dict(steps=120, lr=1e-3, split=lambda m: _resnet_layer4(m)),
    # WRN-10-4 at 32 px: 16 ms a crop, 4x the median family: two thirds of the steps.
    "wide_resnet28_10": dict(steps=80),
    # Near-ties of an undertrained network: at 120 steps 3-5 of the 300
    # held-out crops sat within INT8 noise of a tie (agreement on 1300 crops
    # was 99.2-99.5%, onnxruntime's INT8 flipped as many), and which ones
    # flipped depended on PyTorch's kernels (BiT: 98.33-99.33% between its
    # AVX2 and AVX-512 trainings). 360 steps train them past that: BiT
    # 99.33-99.67%, residual_attention56 99.67%, resnet50_ibn_a 99.67-100%
    # with PyTorch's default, AVX2 and AVX-512 kernels (twentieth session).
    # Not rmnet18: at 360 steps 97.67-99.00%, at 480 98.33-99.33% (its int8_finding).
    "bit_resnetv2_50": dict(steps=360),
    "residual_attention56": dict(steps=360),
    "resnet50_ibn_a": dict(steps=360),
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


def _tiles(pic_shape, tile, part, label):
    """The (row, col) origins of the picture's tiles (tile x tile squares on a
    grid) of one part: a fixed random 60% of them for "train", the others
    for "test", so no pixel of a training crop is in a held-out one."""
    ph, pw = pic_shape
    grid = [(r * tile, c * tile) for r in range(ph // tile) for c in range(pw // tile)]
    order = np.random.default_rng(1000 + label).permutation(len(grid))
    n_train = min(max(1, round(0.6 * len(grid))), len(grid) - 1)
    return [grid[i] for i in (order[:n_train] if part == "train" else order[n_train:])]


def _crops(shape, per_class, part, rng):
    """(x, y): per_class crops of each picture, shape (N, *shape), unnormalized.

    shape is (C, H, W) or (C, T, H, W); C is 3 (RGB) or 1 (gray). Each
    picture is cut into square tiles of SCALE x the input size, 60% of them
    for training ("train") and the rest held out ("test"). A crop is a random
    square window inside one tile of the part (1x to SCALE x the input size,
    so scales vary), resized to (H, W); a clip moves that window by a fixed
    random step each frame (a pan), staying inside the tile."""
    import torch.nn.functional as F

    channels, (h, w) = shape[0], shape[-2:]
    frames = shape[1] if len(shape) == 4 else 1
    if channels not in (1, 3):
        raise ValueError(f"real-image data has 1 or 3 channels, the family wants {channels}")
    tile = SCALE * max(h, w)
    xs, ys = [], []
    for label, pic in enumerate(_pictures()):
        tiles = _tiles(pic.shape[1:], tile, part, label)
        for _ in range(per_class):
            top, left = tiles[int(rng.integers(len(tiles)))]
            size = int(rng.integers(max(h, w), tile + 1))
            # Pan: total travel up to the room left in the tile, split evenly over the frames.
            room_x = room_y = tile - size
            step_x = int(rng.integers(-(room_x // max(frames - 1, 1)), room_x // max(frames - 1, 1) + 1)) \
                if frames > 1 else 0
            step_y = int(rng.integers(-(room_y // (4 * max(frames - 1, 1))), room_y // (4 * max(frames - 1, 1)) + 1)) \
                if frames > 1 else 0
            span_x, span_y = abs(step_x) * (frames - 1), abs(step_y) * (frames - 1)
            c0 = left + int(rng.integers(0, room_x - span_x + 1)) + (span_x if step_x < 0 else 0)
            r0 = top + int(rng.integers(0, room_y - span_y + 1)) + (span_y if step_y < 0 else 0)
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
    """{"train": (x, y), "calib": x, "test": (x, y), "classes", "mean", "std"}
    for one sample shape, normalized per channel by the training crops' mean
    and std (the last two)."""
    rng = np.random.default_rng(12)
    x_train, y_train = _crops(shape, TRAIN_PER_CLASS, "train", rng)
    x_test, y_test = _crops(shape, TEST_PER_CLASS, "test", rng)
    axes = tuple(i for i in range(x_train.ndim) if i != 1)
    mean = x_train.mean(axis=axes, keepdims=True)
    std = x_train.std(axis=axes, keepdims=True)
    x_train = ((x_train - mean) / std).astype(np.float32)
    x_test = ((x_test - mean) / std).astype(np.float32)
    calib = x_train[rng.permutation(len(x_train))[:CALIB_SAMPLES]]
    return {"train": (x_train, y_train), "calib": calib, "test": (x_test, y_test), "classes": len(TEXTURE_IMAGES),
            "mean": mean, "std": std}


# ---------------------------------------------------------------- training


def _trainable(name, only):
    return not only or any(name == p or name.startswith(p + ".") for p in only)


def _resnet_layer4(model):
    """torchvision's ResNet split for training its last stage only: (frozen
    prefix, trained suffix, the suffix's modules)."""
    def prefix(x):
        return model.layer3(model.layer2(model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(x)))))))

    def suffix(f):
        return model.fc(torch.flatten(model.avgpool(model.layer4(f)), 1))

    return prefix, suffix, ("layer4", "fc")


def train_(model, x, y, steps, lr=None, split=None, seed=0):
    """Trains model on (x, y), in place, and returns it in eval mode.

    Adam with a one-cycle learning rate, batches of TRAIN_BATCH drawn from
    seeded permutations, BatchNorm in train mode (its running statistics are
    the training batches' by the end: momentum 0.1 over the last low-rate
    steps). End to end by default; ``split(model)`` returns (prefix, suffix,
    suffix module names) to train only the suffix modules on the frozen
    prefix's outputs (computed once, the prefix in eval mode). What a family
    fixes stays fixed: a BatchNorm scale that is exactly zero (a pruned
    channel, as polarization pruning's fine-tuning keeps it) and whatever a
    module's ``grad_masks()`` masks (the RM blocks' Dirac channels)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    lr = lr or TRAIN_LR
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    run, only = model, ()
    if split is not None:
        prefix, run, only = split(model)
        model.eval()
        x, y = x[::2], y[::2]  # half the crops (every class): the prefix is the costly part
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        with torch.no_grad():
            xt = torch.cat([prefix(xt[i:i + 64]) for i in range(0, len(xt), 64)])
    masks = []
    for name, module in model.named_modules():
        if not _trainable(name, only):
            continue
        if hasattr(module, "grad_masks"):
            masks += module.grad_masks()
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.affine:
            if bool((module.weight == 0).any()):
                masks.append((module.weight, (module.weight != 0).float()))
                masks.append((module.bias, (module.weight != 0).float()))
    params = [p for n, p in model.named_parameters() if _trainable(n.rpartition(".")[0], only)]
    hooks = [p.register_hook(lambda g, m=m: g * m) for p, m in masks]
    try:
        opt = torch.optim.Adam(params, lr=lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.25)
        for name, module in model.named_modules():
            module.train(_trainable(name, only))
        order = np.empty(0, np.int64)
        for _ in range(steps):
            if len(order) < TRAIN_BATCH:
                order = np.concatenate([order, rng.permutation(len(x))])
            idx, order = torch.from_numpy(order[:TRAIN_BATCH]), order[TRAIN_BATCH:]
            loss = torch.nn.functional.cross_entropy(run(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    finally:
        for h in hooks:
            h.remove()
    return model.eval()


@functools.lru_cache(maxsize=2)
def trained_family(name):
    """(the family's small form trained on the training crops, its photo
    data, training seconds); cached so that both exporters share it."""
    family = torch_models.FAMILIES[name]
    data = photo_data(tuple(family.input_shape))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic for any caller (the sums' order depends on the thread count)
    try:
        t0 = time.perf_counter()
        model = train_(family.build(False), *data["train"], **{"steps": TRAIN_STEPS, **TRAINING.get(name, {})})
    finally:
        torch.set_num_threads(threads)
    return model, data, time.perf_counter() - t0


# ---------------------------------------------------------------- the cases


@pytest.fixture(scope="module", params=[(f, e) for f in FAMILY_NAMES for e in EXPORTERS],
                ids=[f"{f}-{e}" for f in FAMILY_NAMES for e in EXPORTERS])
def case(request, tmp_path_factory):
    """One family, one exporter: the exported file and its engines (built once)."""
    name, exporter = request.param
    family = torch_models.FAMILIES[name]
    model, data, train_s = trained_family(name)
    path = str(tmp_path_factory.mktemp(f"{name}-{exporter}") / f"{name}.onnx")
    export(model, path, exporter, tuple(family.input_shape))
    return {"name": name, "exporter": exporter, "family": family, "path": path, "data": data, "engines": {},
            "train_s": train_s}


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


def int8_outputs(case):
    """(FP32 logits, INT8 logits, labels) on the held-out crops; computed once per case."""
    if "outputs" not in case:
        x, y = case["data"]["test"]
        case["outputs"] = (run_batched(engine(case, "fp32"), x), run_batched(engine(case, "int8"), x), y)
    return case["outputs"]


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
    batch 2, fresh random inputs. A discontinuous family (SEW's Heaviside
    spikes) may flip a spike whose membrane lies within rounding of the
    threshold: there 3 of 4 fresh draws must match (test_spiking.py checks
    the threshold decisions themselves bit for bit)."""
    draws = 4 if case["family"].discontinuous else 1
    failures = []
    for _ in range(draws):
        seed = int(np.random.SeedSequence().entropy % 2**32)
        x = np.random.default_rng(seed).standard_normal((2, *case["family"].input_shape), dtype=np.float32)
        out = engine(case, "fp32").run({"input": x})["logits"]
        (ref,) = ort_session(case["path"]).run(None, {"input": x})
        where = f"{case['name']} ({case['exporter']}), seed {seed}"
        assert out.shape == ref.shape and np.all(np.isfinite(out)), where
        err = rel_l2(out, ref)
        if err > MAX_REL_L2:
            failures.append(f"{where}: relative L2 error {err:.3g} vs onnxruntime")
    print("\n".join(failures))
    assert len(failures) <= (1 if case["family"].discontinuous else 0), failures


def test_int8_agrees_with_fp32(request, case):
    """INT8 (pyengine's default calibration, on training crops) picks the FP32
    engine's class on >= 99% of the 300 held-out crops (right 40% of each
    picture, never seen in training or calibration), for a network trained on
    the training crops. A family whose ``int8_finding`` records a measured
    shortfall runs as a strict xfail (it fails when it starts passing, so the
    note gets updated), or a plain one where the finding straddles the bound
    (``int8_finding_strict``)."""
    if not case["family"].int8:
        pytest.skip(f"{case['name']}: no INT8 test ({case['family'].notes})")
    finding = case["family"].int8_finding if case["exporter"] in case["family"].int8_finding_exporters else ""
    if finding:
        request.applymarker(pytest.mark.xfail(strict=case["family"].int8_finding_strict,
                                              reason=f"{case['name']}: {finding}"))
    where = f"{case['name']} ({case['exporter']})"
    fp32, int8, y = int8_outputs(case)
    assert engine(case, "int8").precision == "int8"
    accuracy = float(np.mean(fp32.argmax(1) == y))
    agreement = float(np.mean(fp32.argmax(1) == int8.argmax(1)))
    print(f"{where}: INT8/FP32 top-1 agreement {agreement:.2%} on {len(y)} held-out crops; FP32 top-1 "
          f"{accuracy:.2%} (chance {1 / case['data']['classes']:.0%}); trained in {case['train_s']:.1f} s")
    assert accuracy >= MIN_ACCURACY, f"{where}: the trained network's FP32 top-1 is only {accuracy:.2%}"
    assert agreement >= MIN_AGREEMENT, (
        f"{where}: INT8 agrees with FP32 on {agreement:.2%} of {len(y)} held-out images "
        f"(FP32 top-1 {accuracy:.2%}, INT8 top-1 {np.mean(int8.argmax(1) == y):.2%})")


# Families whose symmetric INT8 falls short (int8_finding) and that reach
# MIN_AGREEMENT with asymmetric activations on the exporters of the finding
# (measured with GPTQ weight rounding: rmnet18 99.33% / 99.33% (TorchScript /
# dynamo); not resnet50, 98.67% / 99.33%, nor sew_resnet18, whose spikes have
# no Relu output to widen, 86.67%).
ASYMMETRIC_REACHES = {"rmnet18"}


def test_int8_asymmetric_activations(case):
    """``int8_activations="asymmetric"`` (CPU only: the non-negative tensors
    quantized over [0, amax] with zero point -128) on the families whose
    symmetric INT8 falls short: never less accurate than the symmetric form
    (agreement within one crop, logits error no larger), and >= 99%
    agreement on the families listed in ASYMMETRIC_REACHES."""
    family = case["family"]
    if not family.int8 or not family.int8_finding or case["exporter"] not in family.int8_finding_exporters:
        pytest.skip(f"{case['name']}: symmetric INT8 already meets the bound (or no INT8 test)")
    where = f"{case['name']} ({case['exporter']})"
    fp32, int8, _ = int8_outputs(case)
    x = case["data"]["test"][0]
    asym_engine = pyengine.build(case["path"], backend="cpu", precision="int8",
                                 calibration_data=case["data"]["calib"], report=False, progress=False,
                                 num_threads=THREADS, int8_activations="asymmetric")
    asym = run_batched(asym_engine, x)
    rel = lambda a: float(np.linalg.norm(a - fp32) / np.linalg.norm(fp32))  # noqa: E731
    agree = lambda a: float(np.mean(a.argmax(1) == fp32.argmax(1)))  # noqa: E731
    print(f"{where}: agreement symmetric {agree(int8):.2%} asymmetric {agree(asym):.2%}; logits rel. L2 "
          f"{rel(int8):.4f} -> {rel(asym):.4f} ({asym_engine.metadata['int8']['asymmetric_tensors']} tensors)")
    assert agree(asym) >= agree(int8) - 1.0 / len(x) - 1e-9, where
    assert rel(asym) <= rel(int8) * 1.01 + 1e-6, where
    if case["name"] in ASYMMETRIC_REACHES:
        assert agree(asym) >= MIN_AGREEMENT, where


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
