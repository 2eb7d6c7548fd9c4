"""Real-data models for the INT8 accuracy tests and tools (trained on the CPU
in seconds, from data that ships with scikit-learn and scikit-image: nothing is
downloaded, nothing is cached to disk).

Two data sets, each split so that no source image is shared between the
training, calibration and test sets:

``background_digits``
    scikit-learn's 8x8 digits, resized to 11-16 px and pasted at a random
    place on a 28x28 black canvas, then normalized by the training set's
    mean and std. About 80% of every image is background, which the
    normalization maps to one *non-zero* value: the normalized input, and the
    stem conv's output after it, carry a tall spike away from zero (the
    shape that made KL calibration clip the foreground on a held-out model).
    Every test digit appears at several random placements (augmentation), so
    that a 0.1 point accuracy difference is a few images, not a fraction of one.

``textures``
    32x32 RGB crops of scikit-image's bundled photographs and textures (one
    class per picture), normalized with per-channel mean and std. Training
    crops come from the left 60% of each picture, test crops from the right
    40%.

Two models:

``resnet20``
    The CIFAR ResNet-20 layout (3 stages of 3 basic blocks, 1x1 conv + BN
    projections where the shape changes): 19 convs, 21 BatchNorms, exported
    unfused, as the held-out model was.
``vgg_bn``
    Conv-BN-ReLU pairs with MaxPool between stages, global average pool and a
    linear classifier.

Import only after ``pytest.importorskip("torch")`` (and sklearn / skimage).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------- data


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    t = torch.from_numpy(img.astype(np.float32))[None, None]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()


def background_digits(placements_train: int = 2, placements_test: int = 3, seed: int = 0) -> dict:
    """{"train": (x, y), "calib": x, "test": (x, y), "mean", "std", "background"}:
    digits on a wide uniform background, float32 NCHW (N, 1, 28, 28)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = d.images.astype(np.float32) / 16.0
    labels = d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(images))
    n_train = int(0.6 * len(images))
    splits = {"train": perm[:n_train], "test": perm[n_train:]}

    def paste(indices, placements):
        xs, ys = [], []
        for _ in range(placements):
            for i in indices:
                size = int(rng.integers(11, 17))
                canvas = np.zeros((28, 28), np.float32)
                r, c = rng.integers(0, 28 - size + 1, size=2)
                canvas[r:r + size, c:c + size] = np.clip(_resize(images[i], size), 0.0, 1.0)
                xs.append(canvas)
                ys.append(labels[i])
        return np.stack(xs)[:, None], np.array(ys, np.int64)

    x_train, y_train = paste(splits["train"], placements_train)
    x_test, y_test = paste(splits["test"], placements_test)
    mean, std = float(x_train.mean()), float(x_train.std())
    norm = lambda a: ((a - mean) / std).astype(np.float32)  # noqa: E731
    x_train, x_test = norm(x_train), norm(x_test)
    calib = x_train[rng.permutation(len(x_train))[:512]]
    return {"train": (x_train, y_train), "calib": calib, "test": (x_test, y_test), "mean": mean, "std": std,
            "background": (0.0 - mean) / std}


TEXTURE_IMAGES = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel", "moon",
                  "rocket")


def textures(crop: int = 32, n_train: int = 300, n_test: int = 240, seed: int = 0) -> dict:
    """{"train": (x, y), "calib": x, "test": (x, y)}: crops of scikit-image's
    bundled pictures, one class per picture, float32 NCHW (N, 3, crop, crop)."""
    import skimage.data

    rng = np.random.default_rng(seed)
    pictures = []
    for name in TEXTURE_IMAGES:
        img = getattr(skimage.data, name)().astype(np.float32) / 255.0
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        pictures.append(img[:, :, :3])

    def crops(part, per_class):
        xs, ys = [], []
        for label, img in enumerate(pictures):
            h, w, _ = img.shape
            lo, hi = (0, int(0.6 * w)) if part == "train" else (int(0.6 * w), w)
            for _ in range(per_class):
                size = int(rng.integers(crop, 2 * crop + 1))  # random scale, 1x to 2x
                r = int(rng.integers(0, h - size + 1))
                c = int(rng.integers(lo, hi - size + 1))
                patch = torch.from_numpy(np.ascontiguousarray(img[r:r + size, c:c + size].transpose(2, 0, 1)))
                patch = F.interpolate(patch[None], size=(crop, crop), mode="bilinear", align_corners=False)[0]
                if rng.random() < 0.5:
                    patch = torch.flip(patch, dims=[2])
                xs.append(patch.numpy())
                ys.append(label)
        return np.stack(xs).astype(np.float32), np.array(ys, np.int64)

    x_train, y_train = crops("train", n_train)
    x_test, y_test = crops("test", n_test)
    mean = x_train.mean(axis=(0, 2, 3), keepdims=True)
    std = x_train.std(axis=(0, 2, 3), keepdims=True)
    x_train = ((x_train - mean) / std).astype(np.float32)
    x_test = ((x_test - mean) / std).astype(np.float32)
    calib = x_train[rng.permutation(len(x_train))[:512]]
    return {"train": (x_train, y_train), "calib": calib, "test": (x_test, y_test)}


# ---------------------------------------------------------------- models


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.down is None else self.down(x)))


class ResNet20(nn.Module):
    """CIFAR ResNet-20 (stages of 3 blocks), widths (w, 2w, 4w)."""

    def __init__(self, in_channels=1, classes=10, width=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        blocks, cin = [], width
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            for b in range(3):
                blocks.append(BasicBlock(cin, cout, 2 if stage > 0 and b == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class VggBn(nn.Module):
    """(Conv-BN-ReLU) x2, MaxPool, (Conv-BN-ReLU) x2, MaxPool, Conv-BN-ReLU, GAP, Linear."""

    def __init__(self, in_channels=3, classes=10, width=16):
        super().__init__()

        def cbr(cin, cout):
            return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        w = width
        self.features = nn.Sequential(*cbr(in_channels, w), *cbr(w, w), nn.MaxPool2d(2), *cbr(w, 2 * w),
                                      *cbr(2 * w, 2 * w), nn.MaxPool2d(2), *cbr(2 * w, 4 * w))
        self.fc = nn.Linear(4 * w, classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


def train(net: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float = 3e-3, batch: int = 64,
          seed: int = 0) -> nn.Module:
    """Adam with a cosine learning rate, on one CPU thread (deterministic, and
    no spinning threads on a shared CI machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        steps = epochs * ((len(x) + batch - 1) // batch)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        for epoch in range(epochs):
            net.train()
            order = torch.from_numpy(np.random.default_rng(seed + epoch).permutation(len(x)))
            for i in range(0, len(order), batch):
                idx = order[i:i + batch]
                loss = F.cross_entropy(net(xt[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        net.eval()
    finally:
        torch.set_num_threads(threads)
    return net


def export(net: nn.Module, example: np.ndarray):
    """The TorchScript ONNX export (opset 17), BatchNorm kept unfused and no
    constant folding, as real exports often are. Returns an onnx.ModelProto."""
    import onnx

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.from_numpy(example[:1]), buf, dynamo=False, opset_version=17,
                          training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return onnx.load_from_string(buf.getvalue())


# ---------------------------------------------------------------- the zoo

# name -> (data set, model factory, epochs)
MODELS = {
    "resnet20_background_digits": (background_digits, lambda: ResNet20(1, 10, 8), 10),
    "vgg_bn_textures": (textures, lambda: VggBn(3, len(TEXTURE_IMAGES), 16), 12),
}


def make_and_train(name: str, data: dict, seed: int = 0) -> nn.Module:
    """A model of MODELS, initialized from ``seed`` and trained on ``data``."""
    _, make_net, epochs = MODELS[name]
    torch.manual_seed(seed)
    return train(make_net(), *data["train"], epochs=epochs, seed=seed)


def trained(name: str, seed: int = 0):
    """(onnx model, data dict, PyTorch test accuracy) for a model of MODELS."""
    data = MODELS[name][0]()
    net = make_and_train(name, data, seed)
    x_test, y_test = data["test"]
    with torch.no_grad():
        acc = float((net(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
    return export(net, x_test), data, acc
