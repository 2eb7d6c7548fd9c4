"""Plain torch.nn model definitions for the exporter tests (torchvision is not
available here).

``resnet50()`` follows torchvision's layout exactly (Bottleneck blocks
[3, 4, 6, 3], stride on the 3x3 conv as in ResNet v1.5, BatchNorm after every
conv, 1x1 conv + BN downsample where shape changes), so the exported graphs
have the same node structure as a torchvision ResNet-50 export.
``randomize_(model, seed)`` gives it random weights and non-trivial
BatchNorm running statistics, so that a BN that is dropped, mis-read or
applied with the wrong epsilon shows up in the outputs.

This module imports torch: import it only after ``pytest.importorskip("torch")``.
"""

from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import torch
from torch import nn


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (strided) -> 1x1 expand, each with BN; residual add; ReLU."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ResNet: 7x7/2 stem, 3x3/2 max pool, four stages, global
    average pool, fully connected classifier."""

    def __init__(self, layers=(3, 4, 6, 3), num_classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * Bottleneck.expansion, num_classes)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion))
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet50(num_classes=1000):
    return ResNet((3, 4, 6, 3), num_classes)


@torch.no_grad()
def randomize_(model, seed=0):
    """Gives ``model`` random weights and BN statistics, in place; returns it in eval mode.

    Convs and Linear layers get He-normal weights (so activations stay O(1)
    through 50 layers); every BatchNorm gets random gamma, beta, running mean
    and running variance (variance in [0.5, 1.5], never the default 1), so the
    BN arithmetic is visible in the outputs. The last BN of each residual
    branch gets a smaller gamma, as in Fixup, so the residual stream does not
    grow block after block.
    """
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in = module.weight[0].numel()
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            if module.bias is not None:
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
        elif isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.weight.copy_(1.0 + 0.2 * torch.randn(c, generator=gen))
            module.bias.copy_(0.1 * torch.randn(c, generator=gen))
            module.running_mean.copy_(0.2 * torch.randn(c, generator=gen))
            module.running_var.copy_(0.5 + torch.rand(c, generator=gen))
    for module in model.modules():
        if isinstance(module, Bottleneck):
            module.bn3.weight.mul_(0.3)
    return model.eval()


# ---------------------------------------------------------------------------
# The family registry (issue 12). Every residual family the project serves is
# registered here once, with a small form for the fast tests and a full-size
# form for `tools/bench.py --families`. Sections below each register their own
# families; keep one section per family group so parallel edits don't collide.


@dataclass(frozen=True)
class Family:
    """One model family as PyTorch exports it.

    ``build(full)`` returns a fresh, randomized module in eval mode (small
    form when ``full`` is False); ``input_shape``/``full_input_shape`` are
    the per-sample shapes (no batch dim) of each form. ``int8`` says whether
    the INT8 agreement test applies; ``notes`` is shown in the family table.
    """

    name: str
    build: Callable[[bool], nn.Module]
    input_shape: Tuple[int, ...]
    full_input_shape: Tuple[int, ...]
    int8: bool = True
    notes: str = ""


FAMILIES: Dict[str, Family] = {}


def register(family: Family) -> Family:
    if family.name in FAMILIES:
        raise ValueError(f"family {family.name!r} registered twice")
    FAMILIES[family.name] = family
    return family


register(Family("resnet50", lambda full: randomize_(resnet50(1000 if full else 10)),
                (3, 64, 64), (3, 224, 224), notes="torchvision layout"))


# ---------------------------------------------------------------------------
# Pruned ResNet-50 (prune)
#
# A ResNet-50 as network slimming / polarization pruning leaves it: half the
# BN scales (gamma) of every BN inside a residual branch before the last one
# (bn1, bn2 of each bottleneck) are exactly zero, their betas kept (both
# signs), and in layer2 and layer3 half the channels of the residual stream
# are pruned too: the same channels of every block's bn3 and of the stage's
# downsample BN, so the whole stage agrees on them. The optimizer's
# prune_dead_channels removes what that makes constant.


@torch.no_grad()
def polarize_(model, seed=0, fraction=0.5, stream_stages=("layer2", "layer3")):
    """Zeroes ``fraction`` of the BN scales of ``model`` (a ``ResNet``) in place;
    returns it. bn1/bn2 of every bottleneck: a random subset each; the residual
    stream of ``stream_stages``: one random subset per stage, zeroed in every
    block's bn3 and the downsample BN. Betas stay as they are."""
    gen = torch.Generator().manual_seed(seed + 1000)

    def pick(c):
        return torch.randperm(c, generator=gen)[: int(round(fraction * c))]

    for stage_name in ("layer1", "layer2", "layer3", "layer4"):
        stage = getattr(model, stage_name)
        stream = pick(stage[0].bn3.num_features) if stage_name in stream_stages else None
        for block in stage:
            for bn in (block.bn1, block.bn2):
                bn.weight[pick(bn.num_features)] = 0.0
            if stream is not None:
                block.bn3.weight[stream] = 0.0
                if block.downsample is not None:
                    block.downsample[1].weight[stream] = 0.0
    return model


def resnet50_pruned(full=False, pruned=True, seed=0):
    """The polarization-pruned ResNet-50 (``pruned=False``: the same weights
    without the zeroed scales, the unpruned baseline)."""
    model = randomize_(resnet50(1000 if full else 10), seed=seed)
    return polarize_(model, seed=seed) if pruned else model


register(Family("resnet50_pruned", lambda full: resnet50_pruned(full), (3, 64, 64), (3, 224, 224),
                notes="polarization-pruned: 50% of bn1/bn2 scales zero, layer2/3 stream halved"))
