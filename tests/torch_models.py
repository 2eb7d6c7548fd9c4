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

import dataclasses
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
    ``int8_finding`` records a measured shortfall of INT8 top-1 agreement on
    held-out real images of the small form trained on real images
    (tests/test_torch_families.py trains it and runs that check as a strict
    xfail with this reason) for the exporters in ``int8_finding_exporters``;
    ``int8_finding_strict`` False where the measured agreement straddles the
    bound (it depends on which of PyTorch's CPU kernels trained the network),
    so the xfail may pass.
    ``discontinuous`` marks a network whose output
    jumps when an activation crosses a threshold (a spiking network's
    Heaviside): rounding-level differences between runtimes may flip a
    spike, so exact agreement holds for most inputs, not all. The small
    form has 10 classes.
    """

    name: str
    build: Callable[[bool], nn.Module]
    input_shape: Tuple[int, ...]
    full_input_shape: Tuple[int, ...]
    int8: bool = True
    notes: str = ""
    int8_finding: str = ""
    int8_finding_exporters: Tuple[str, ...] = ("torchscript", "dynamo")
    int8_finding_strict: bool = True
    discontinuous: bool = False


FAMILIES: Dict[str, Family] = {}


def register(family: Family) -> Family:
    if family.name in FAMILIES:
        raise ValueError(f"family {family.name!r} registered twice")
    FAMILIES[family.name] = family
    return family


register(Family("resnet50", lambda full: randomize_(resnet50(1000 if full else 10)),
                (3, 64, 64), (3, 224, 224), notes="torchvision layout"))


# ---------------------------------------------------------------------------
# 2-D families (fam2d). Plain torch.nn versions of each architecture as its
# reference implementation writes it (so the exporters see the same ops), with
# a small form (narrow, shallow where the family allows, 32-64 px, 10 classes)
# for the tests and the real network (224 px, or 32 px for CIFAR forms, 1000
# or 10 classes) for the benchmark. tests/test_torch_families.py trains each
# small form on real images before its INT8 check.


@torch.no_grad()
def _randomize_all_(model, seed=0):
    """randomize_ plus what it leaves alone here: LayerNorm affine parameters,
    ConvNeXt layer scales, and the last norm of each residual branch of the
    blocks below (``residual_end``: a norm or, in pre-activation blocks, a
    conv), scaled down as randomize_ does for Bottleneck.bn3 so that the
    residual stream stays O(1) over deep stacks."""
    randomize_(model, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    for module in model.modules():
        if isinstance(module, nn.LayerNorm) and module.elementwise_affine:
            module.weight.copy_(1.0 + 0.2 * torch.randn(module.weight.shape, generator=gen))
            module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
        if isinstance(module, ConvNeXtBlock):
            module.layer_scale.copy_(0.05 + 0.3 * torch.rand(module.layer_scale.shape, generator=gen))
    for module in model.modules():
        end = getattr(module, "residual_end", None)
        if end is not None:
            end.weight.mul_(0.3)
    return model.eval()


def _conv_bn(cin, cout, k, stride=1, groups=1, dilation=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, dilation * (k // 2), dilation=dilation, groups=groups,
                                   bias=False), nn.BatchNorm2d(cout))


# --- bottleneck ResNets and their variants (ResNeXt, SE, SK) ----------------


class SqueezeExcite(nn.Module):
    """x * sigmoid(W2 relu(W1 avgpool(x))), reduction r (Hu et al.).

    ``form="conv"`` writes the two FCs as 1x1 convs on the (N, C, 1, 1)
    pooled tensor (timm's SEModule: GlobalAveragePool -> Conv -> Relu -> Conv
    -> Sigmoid -> Mul); ``form="linear"`` as the original does (pool, view to
    (N, C), Linear -> ReLU -> Linear -> Sigmoid, view back, x * y: Gemm/MatMul
    with Reshapes around them)."""

    def __init__(self, channels, reduction=16, form="conv"):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.form = form
        if form == "conv":
            self.fc1 = nn.Conv2d(channels, hidden, 1)
            self.fc2 = nn.Conv2d(hidden, channels, 1)
        elif form == "linear":
            self.fc1 = nn.Linear(channels, hidden)
            self.fc2 = nn.Linear(hidden, channels)
        else:
            raise ValueError(f"SE form is 'conv' or 'linear', got {form!r}")
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        if self.form == "conv":
            return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(self.pool(x)))))
        b, c = x.shape[:2]
        y = self.pool(x).view(b, c)
        y = torch.sigmoid(self.fc2(torch.relu(self.fc1(y))))
        return x * y.view(b, c, 1, 1)


class SelectiveKernel(nn.Module):
    """SKNet's selective kernel conv (Li et al. 2019): M branches (3x3 and
    3x3 dilated 2, i.e. a 5x5 field), grouped, each conv-BN-ReLU; U = sum;
    z = ReLU(BN(1x1 conv(avgpool(U)))) of width max(C/r, 32); per-branch
    attention = softmax over the branches of 1x1 conv(z); out = sum a_m U_m.
    Written as timm's SelectiveKernel does (stack, sum over dim 1, a 5-D
    softmax), so the export has Unsqueeze/Concat, ReduceSum and 5-D
    broadcasting."""

    def __init__(self, cin, cout, stride=1, groups=32, reduction=16, min_width=32):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(_conv_bn(cin, cout, 3, stride, groups=groups, dilation=d), nn.ReLU(inplace=True))
            for d in (1, 2))
        width = max(cout // reduction, min_width)
        self.fc_reduce = nn.Conv2d(cout, width, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.fc_select = nn.Conv2d(width, cout * len(self.branches), 1, bias=False)
        self.cout = cout

    def forward(self, x):
        feats = torch.stack([b(x) for b in self.branches], dim=1)  # N, M, C, H, W
        s = feats.sum(dim=1).mean((2, 3), keepdim=True)
        z = torch.relu(self.bn(self.fc_reduce(s)))
        a = self.fc_select(z).view(x.shape[0], len(self.branches), self.cout, 1, 1).softmax(dim=1)
        return (feats * a).sum(dim=1)


class BottleneckV2(nn.Module):
    """torchvision's Bottleneck generalized: groups and width per group
    (ResNeXt), an optional squeeze-excitation on the branch before the add
    (SE-ResNet), or a selective-kernel conv in place of the 3x3 (SK-ResNet)."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64, se=None,
                 sk=False):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        if sk:
            self.conv2 = SelectiveKernel(width, width, stride, groups=groups)
            self.bn2 = None
        else:
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.se = SqueezeExcite(planes * self.expansion, form=se) if se else None
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.residual_end = self.bn3

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.conv2(out) if self.bn2 is None else self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        return self.relu(out + identity)


class ResNetV2Blocks(nn.Module):
    """The torchvision ResNet layout over BottleneckV2 blocks, with a base
    width (64 in the real networks) and the block options passed through."""

    def __init__(self, layers, num_classes=1000, width=64, **block_args):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages = []
        for i, blocks in enumerate(layers):
            stages.append(self._make_layer(width * 2 ** i, blocks, 1 if i == 0 else 2, block_args))
        self.layers = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.inplanes, num_classes)

    def _make_layer(self, planes, blocks, stride, block_args):
        downsample = None
        if stride != 1 or self.inplanes != planes * BottleneckV2.expansion:
            downsample = _conv_bn(self.inplanes, planes * BottleneckV2.expansion, 1, stride)
        layers = [BottleneckV2(self.inplanes, planes, stride, downsample, **block_args)]
        self.inplanes = planes * BottleneckV2.expansion
        layers += [BottleneckV2(self.inplanes, planes, **block_args) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.layers(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# --- pre-activation ResNet and Wide ResNet --------------------------------


class PreActBottleneck(nn.Module):
    """He et al. 2016, "Identity mappings": BN-ReLU-conv1x1, BN-ReLU-conv3x3
    (strided), BN-ReLU-conv1x1, added to the untouched identity; where the
    shape changes the projection shortcut reads the first BN-ReLU's output."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.shortcut = None
        if stride != 1 or inplanes != planes * 4:
            self.shortcut = nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False)
        self.residual_end = self.conv3

    def forward(self, x):
        out = torch.relu(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        out = self.conv3(torch.relu(self.bn3(out)))
        return out + identity


class PreActResNet(nn.Module):
    """Pre-activation bottleneck ResNet, ImageNet layout: 7x7/2 stem conv (no
    BN after it), max pool, four stages, final BN-ReLU, pool, classifier."""

    def __init__(self, layers=(3, 4, 6, 3), num_classes=1000, width=64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        blocks, cin = [], width
        for i, n in enumerate(layers):
            planes = width * 2 ** i
            for b in range(n):
                blocks.append(PreActBottleneck(cin, planes, 2 if i > 0 and b == 0 else 1))
                cin = planes * 4
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.blocks(self.maxpool(self.conv1(x)))
        x = torch.relu(self.bn(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class WideBasic(nn.Module):
    """Zagoruyko & Komodakis' wide basic block: BN-ReLU-conv3x3-BN-ReLU-
    (dropout, identity at inference)-conv3x3, plus the identity or a 1x1
    projection of the pre-activated input."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.dropout = nn.Dropout(0.3)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)
        self.residual_end = self.conv2

    def forward(self, x):
        out = torch.relu(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(self.dropout(torch.relu(self.bn2(self.conv1(out)))))
        return out + identity


class WideResNet(nn.Module):
    """WRN-depth-k for CIFAR (32x32): 3x3 stem (16), three stages of
    (depth - 4) / 6 wide blocks, widths 16k, 32k, 64k; BN-ReLU, 8x8 average
    pool, classifier."""

    def __init__(self, depth=28, k=10, num_classes=10):
        super().__init__()
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        blocks, cin = [], 16
        for i, w in enumerate((16 * k, 32 * k, 64 * k)):
            for b in range(n):
                blocks.append(WideBasic(cin, w, 2 if i > 0 and b == 0 else 1))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.pool = nn.AvgPool2d(8)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn(self.blocks(self.conv1(x)))))
        return self.fc(x.view(x.size(0), -1))


# --- DenseNet -----------------------------------------------------------------


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1 (bn_size * growth) - BN-ReLU-conv3x3 (growth), reading
    the concatenation of every earlier feature map of its block (torchvision
    concatenates the list anew in each layer, and so does this)."""

    def __init__(self, cin, growth, bn_size):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False)

    def forward(self, features):
        x = torch.cat(features, 1)
        x = self.conv1(torch.relu(self.norm1(x)))
        return self.conv2(torch.relu(self.norm2(x)))


class DenseBlock(nn.Module):
    def __init__(self, layers, cin, growth, bn_size):
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(cin + i * growth, growth, bn_size) for i in range(layers))

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-conv1x1 (compression 0.5) - 2x2 average pool."""

    def __init__(self, cin, cout):
        super().__init__(nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, 1, bias=False),
                         nn.AvgPool2d(2, 2))


class DenseNet(nn.Module):
    """torchvision's DenseNet: 7x7/2 conv-BN-ReLU stem, 3x3/2 max pool, dense
    blocks with transitions between them, final BN-ReLU, pool, classifier.
    DenseNet-121: growth 32, blocks (6, 12, 24, 16), 64 initial features."""

    def __init__(self, growth=32, blocks=(6, 12, 24, 16), init_features=64, bn_size=4, num_classes=1000):
        super().__init__()
        layers = [nn.Conv2d(3, init_features, 7, 2, 3, bias=False), nn.BatchNorm2d(init_features),
                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
        c = init_features
        for i, n in enumerate(blocks):
            layers.append(DenseBlock(n, c, growth, bn_size))
            c += n * growth
            if i != len(blocks) - 1:
                layers.append(Transition(c, c // 2))
                c //= 2
        layers.append(nn.BatchNorm2d(c))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        x = torch.relu(self.features(x))
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


# --- residual attention -------------------------------------------------------


class PreActUnit(nn.Module):
    """The residual unit of the Residual Attention Network: a pre-activation
    bottleneck (BN-ReLU-conv1x1 (C/4), BN-ReLU-conv3x3, BN-ReLU-conv1x1 (C)) plus
    the identity, channel count kept."""

    def __init__(self, c):
        super().__init__()
        m = c // 4
        self.body = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, m, 1, bias=False),
                                  nn.BatchNorm2d(m), nn.ReLU(inplace=True), nn.Conv2d(m, m, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(m), nn.ReLU(inplace=True), nn.Conv2d(m, c, 1, bias=False))
        self.residual_end = self.body[-1]

    def forward(self, x):
        return x + self.body(x)


class SoftMask(nn.Module):
    """The soft mask branch, an hourglass: max pool down, a residual unit,
    (recursively the next level plus a skip unit), a residual unit, bilinear
    upsampling back to the input's size."""

    def __init__(self, c, levels):
        super().__init__()
        self.down = nn.MaxPool2d(3, 2, 1)
        self.pre = PreActUnit(c)
        self.skip = PreActUnit(c) if levels > 1 else None
        self.inner = SoftMask(c, levels - 1) if levels > 1 else None
        self.post = PreActUnit(c)
        self.up = nn.UpsamplingBilinear2d(scale_factor=2)

    def forward(self, x):
        y = self.pre(self.down(x))
        if self.inner is not None:
            y = self.inner(y) + self.skip(y)
        return self.up(self.post(y))


class AttentionModule(nn.Module):
    """Wang et al. 2017: p residual units, then trunk T (t units) and soft
    mask M (hourglass + skip from the trunk, BN-ReLU-1x1-BN-ReLU-1x1, sigmoid),
    out = (1 + M) * T, then p units (p = 1, t = 2, as in Attention-56)."""

    def __init__(self, c, levels):
        super().__init__()
        self.pre = PreActUnit(c)
        self.trunk = nn.Sequential(PreActUnit(c), PreActUnit(c))
        self.mask = SoftMask(c, levels)
        self.mask_head = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, c, 1, bias=False),
                                       nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, c, 1, bias=False),
                                       nn.Sigmoid())
        self.post = PreActUnit(c)

    def forward(self, x):
        x = self.pre(x)
        trunk = self.trunk(x)
        mask = self.mask_head(self.mask(x) + trunk)
        return self.post((1 + mask) * trunk)


class ResidualAttentionNet(nn.Module):
    """Attention-56: conv7x7/2-BN-ReLU, max pool, then per stage a residual
    unit (strided where the stage starts; here a projection unit) and one
    attention module (mask levels 3, 2, 1 at 56, 28, 14 px for 224 input),
    three final units, BN-ReLU, pool, classifier."""

    def __init__(self, num_classes=1000, width=64, levels=(3, 2, 1)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        stages, c = [], width
        for i, lv in enumerate(levels):
            cout = width * 4 * 2 ** i
            stages += [_conv_bn(c, cout, 1, 1 if i == 0 else 2), AttentionModule(cout, lv)]
            c = cout
        cout = c * 2
        stages += [_conv_bn(c, cout, 1, 2), PreActUnit(cout), PreActUnit(cout), PreActUnit(cout)]
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(cout)
        self.fc = nn.Linear(cout, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn(self.stages(self.stem(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


# --- RepVGG (train-time form) and RMNet-style blocks --------------------------


class RepVGGBlock(nn.Module):
    """RepVGG's training-time block (Ding et al. 2021): ReLU(BN(conv3x3(x)) +
    BN(conv1x1(x)) + BN(x)), the identity BN only where shapes allow."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.dense = _conv_bn(cin, cout, 3, stride)
        self.one = _conv_bn(cin, cout, 1, stride)
        self.identity = nn.BatchNorm2d(cin) if cin == cout and stride == 1 else None

    def forward(self, x):
        out = self.dense(x) + self.one(x)
        if self.identity is not None:
            out = out + self.identity(x)
        return torch.relu(out)


class RepVGG(nn.Module):
    """RepVGG-A0 by default: stages of (1, 2, 4, 14, 1) blocks, widths
    (48, 48, 96, 192, 1280), the first block of each stage strided."""

    def __init__(self, layers=(1, 2, 4, 14, 1), widths=(48, 48, 96, 192, 1280), num_classes=1000):
        super().__init__()
        blocks, c = [], 3
        for n, w in zip(layers, widths):
            for b in range(n):
                blocks.append(RepVGGBlock(c, w, 2 if b == 0 else 1))
                c = w
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.blocks(x), 1), 1))


class RMBlock(nn.Module):
    """An RMNet-style block (Meng et al. 2021, "RM operation"): a ResNet basic
    block, ReLU(BN(conv(ReLU(BN(conv(x))))) + x), with its residual removed by
    construction: conv1 gets C extra output channels that are a Dirac
    (identity) kernel, which ReLU keeps because x >= 0 (x is a ReLU output),
    and conv2 reads them back through a second Dirac kernel. BN is folded into
    both convs, as the RM operation does, so the block is
    ReLU(conv2(ReLU(conv1(x)))) with 2C hidden channels and no Add."""

    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, 2 * c, 3, 1, 1)
        self.conv2 = nn.Conv2d(2 * c, c, 3, 1, 1)

    @torch.no_grad()
    def load_residual_block_(self, conv1, bn1, conv2, bn2):
        """Sets the weights from a trained-form basic block (bias-free convs and BNs, eval mode)."""
        c = conv1.weight.shape[0]
        dirac = nn.init.dirac_(torch.empty(c, c, 3, 3))
        for conv, bn, dst, extra_in in ((conv1, bn1, self.conv1, False), (conv2, bn2, self.conv2, True)):
            s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            w = conv.weight * s[:, None, None, None]
            b = bn.bias - bn.running_mean * s
            if extra_in:  # conv2: [W2 | Dirac] over the 2C inputs
                dst.weight.copy_(torch.cat([w, dirac], 1))
                dst.bias.copy_(b)
            else:  # conv1: [W1; Dirac] over the 2C outputs
                dst.weight.copy_(torch.cat([w, dirac], 0))
                dst.bias.copy_(torch.cat([b, torch.zeros(c)]))
        return self

    def grad_masks(self):
        """(parameter, mask) pairs for training: only the basic block's own
        weights learn (conv1's first C outputs, conv2's first C inputs, the
        biases); the Dirac channels that carry the identity stay as they are,
        so the block stays a residual block through training."""
        c = self.conv2.weight.shape[0]
        w1, b1, w2 = (torch.ones_like(t) for t in (self.conv1.weight, self.conv1.bias, self.conv2.weight))
        w1[c:], b1[c:], w2[:, c:] = 0.0, 0.0, 0.0
        return [(self.conv1.weight, w1), (self.conv1.bias, b1), (self.conv2.weight, w2)]

    def forward(self, x):
        return torch.relu(self.conv2(torch.relu(self.conv1(x))))


class RMNet(nn.Module):
    """A ResNet-18-shaped RMNet: 7x7/2 conv-BN-ReLU stem, max pool, stages of
    RM blocks; each stage after the first starts with a strided 3x3 conv-BN-
    ReLU (RMNet's plain downsampling), then pool and classifier."""

    def __init__(self, layers=(2, 2, 2, 2), width=64, num_classes=1000):
        super().__init__()
        seq = [nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
               nn.MaxPool2d(3, 2, 1)]
        c = width
        for i, n in enumerate(layers):
            if i > 0:
                seq += [*_conv_bn(c, 2 * c, 3, 2), nn.ReLU(inplace=True)]
                c *= 2
            seq += [RMBlock(c) for _ in range(n)]
        self.features = nn.Sequential(*seq)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


@torch.no_grad()
def rmnet(layers=(2, 2, 2, 2), width=64, num_classes=1000, seed=0):
    """An RMNet whose blocks come from random trained-form basic blocks
    (random weights and BN statistics, last BN scaled down as randomize_ does)."""
    net = _randomize_all_(RMNet(layers, width, num_classes), seed)
    gen = torch.Generator().manual_seed(seed + 2)
    for block in net.modules():
        if isinstance(block, RMBlock):
            c = block.conv2.weight.shape[0]
            basic = _randomize_all_(nn.ModuleList([nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c),
                                                   nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)]),
                                    int(torch.randint(0, 2**31, (1,), generator=gen)))
            basic[3].weight.mul_(0.3)
            block.load_residual_block_(*basic)
    return net.eval()


# --- ConvNeXt -----------------------------------------------------------------


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor, as torchvision writes
    it: permute to channels-last, layer_norm, permute back."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """Liu et al. 2022: depthwise 7x7 conv, permute to NHWC, LayerNorm,
    Linear (4C), GELU (erf form), Linear (C), layer scale, permute back, add
    (stochastic depth is the identity at inference)."""

    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, 1, 3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.layer_scale = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + (self.layer_scale * y).permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """ConvNeXt-T by default: 4x4/4 stem conv + LayerNorm, stages of (3, 3, 9,
    3) blocks at widths (96, 192, 384, 768), LayerNorm + 2x2/2 conv between
    stages, global average pool, LayerNorm, classifier."""

    def __init__(self, depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), num_classes=1000):
        super().__init__()
        seq = [nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0], eps=1e-6)]
        for i, (n, d) in enumerate(zip(depths, dims)):
            if i > 0:
                seq += [LayerNorm2d(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], d, 2, 2)]
            seq += [ConvNeXtBlock(d) for _ in range(n)]
        self.features = nn.Sequential(*seq)
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x):
        x = self.features(x).mean((2, 3))
        return self.head(self.norm(x))


# --- the 2-D registrations ----------------------------------------------------


def _family(name, make, small_shape, full_shape, notes=""):
    register(Family(name, lambda full: _randomize_all_(make(full)), small_shape, full_shape, True, notes))


_family("resnet101", lambda full: ResNet((3, 4, 23, 3), 1000) if full else ResNetV2Blocks((1, 2, 6, 1), 10, 16),
        (3, 64, 64), (3, 224, 224), "torchvision layout; small: [1,2,6,1] blocks, width 16")
_family("preact_resnet50", lambda full: PreActResNet((3, 4, 6, 3), 1000 if full else 10, 64 if full else 16),
        (3, 64, 64), (3, 224, 224), "identity mappings (He et al. 2016)")
_family("resnext50_32x4d",
        lambda full: ResNetV2Blocks((3, 4, 6, 3), 1000, 64, groups=32, base_width=4) if full
        else ResNetV2Blocks((1, 1, 2, 1), 10, 32, groups=8, base_width=8),
        (3, 64, 64), (3, 224, 224), "grouped 3x3 (small: 8 groups)")
_family("wide_resnet28_10", lambda full: WideResNet(28, 10) if full else WideResNet(10, 4),
        (3, 32, 32), (3, 32, 32), "CIFAR form; small: WRN-10-4")
_family("densenet121",
        lambda full: DenseNet(32, (6, 12, 24, 16), 64, 4, 1000) if full else DenseNet(16, (2, 4, 4), 32, 4, 10),
        (3, 64, 64), (3, 224, 224), "Concat of all earlier maps per layer")
_family("se_resnet50",
        lambda full: ResNetV2Blocks((3, 4, 6, 3), 1000, 64, se="conv") if full
        else ResNetV2Blocks((1, 1, 1, 1), 10, 16, se="conv"),
        (3, 64, 64), (3, 224, 224), "SE as GlobalAveragePool-Conv-Relu-Conv-Sigmoid-Mul")
_family("se_resnet50_linear",
        lambda full: ResNetV2Blocks((3, 4, 6, 3), 1000, 64, se="linear") if full
        else ResNetV2Blocks((1, 1, 1, 1), 10, 16, se="linear"),
        (3, 64, 64), (3, 224, 224), "SE as pool-view-Linear-ReLU-Linear-Sigmoid-view-Mul")
_family("sk_resnet50",
        lambda full: ResNetV2Blocks((3, 4, 6, 3), 1000, 64, groups=32, base_width=4, sk=True) if full
        else ResNetV2Blocks((1, 1, 1, 1), 10, 32, groups=8, base_width=8, sk=True),
        (3, 64, 64), (3, 224, 224), "selective kernel: 2 branches, 5-D softmax")
_family("residual_attention56",
        lambda full: ResidualAttentionNet(1000, 64) if full else ResidualAttentionNet(10, 8, (2, 1, 1)),
        (3, 64, 64), (3, 224, 224), "(1 + sigmoid mask) * trunk; MaxPool/Upsample hourglass")
_family("repvgg_a0",
        lambda full: RepVGG() if full else RepVGG((1, 1, 2, 2, 1), (16, 16, 32, 64, 128), 10),
        (3, 64, 64), (3, 224, 224), "train-time form: 3x3+BN, 1x1+BN, identity BN")
register(Family("rmnet18", lambda full: rmnet((2, 2, 2, 2), 64 if full else 16, 1000 if full else 10),
                (3, 64, 64), (3, 224, 224),
                notes="RM blocks: residual removed via Dirac channels (restore_residuals puts it back)"))
_family("convnext_t",
        lambda full: ConvNeXt() if full else ConvNeXt((1, 1, 2, 1), (16, 32, 64, 128), 10),
        (3, 64, 64), (3, 224, 224), "dwconv 7x7, channels-last LayerNorm, GELU, layer scale")

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
# Video, spiking and scalar-quirk families (famx)
#
# Each module below is written the way its reference implementation writes
# it, so that the exporters emit that family's real quirks:
#
#   resnet_stochastic_depth  CIFAR ResNet-110 with stochastic depth, inference
#                            form (Huang et al. 2016): the residual branch is
#                            multiplied by its survival probability, a Python
#                            float, so both exporters emit a `Mul` by a scalar
#                            constant on every branch (linear decay to 0.5).
#   resnet18_prelu           ResNet-18 with PReLU: one shared slope in the stem
#                            (nn.PReLU(), slope shape [1]) and per-channel
#                            slopes in the blocks (TorchScript: Unsqueeze of
#                            [C] to [C, 1, 1]; dynamo: [1, C, 1, 1]).
#   resnet50_gn              ResNet-50 with GroupNorm(32) after every conv (both
#                            exporters: Reshape -> InstanceNorm -> Reshape -> Mul -> Add).
#   bit_resnetv2_50          BiT ResNetV2-50x1: pre-activation GroupNorm
#                            bottlenecks, weight-standardized convs (TorchScript:
#                            BatchNormalization training_mode=1 on each weight).
#   fixup_resnet50           Fixup (Zhang et al. 2019), no normalization: scalar
#                            biases (shape [1]) before each conv and activation,
#                            a scalar multiplier at the end of each branch.
#   skipinit_resnet50        SkipInit (De & Smith 2020): pre-activation
#                            bottlenecks without normalization, convs with
#                            biases, the branch scaled by a 0-d scalar `alpha`.
#   resnet50_ibn_a           IBN-Net-a (Pan et al. 2018): in stages 1-3 the first
#                            norm of each bottleneck splits its channels, half
#                            through InstanceNorm, half through BatchNorm, and
#                            concatenates them (Split -> IN | BN -> Concat).
#   resnet_in_resnet         RiR (Targ et al. 2016), CIFAR: a residual and a
#                            transient stream, four convs per layer crossing
#                            between them, a shortcut on the residual stream
#                            only, and an outer shortcut around each 2-layer block.
#   r2plus1d_18              torchvision's R(2+1)D-18: (1,k,k) spatial then
#                            (t,1,1) temporal convs, 16x112x112 clips.
#   p3d_resnet50             Pseudo-3D ResNet (Qiu et al. 2017): bottlenecks
#                            cycling P3D-A (S then T), -B (S and T in parallel)
#                            and -C (S, then T plus S), a temporal max pool.
#   ir_csn50                 Channel-separated networks (Tran et al. 2019):
#                            ir-CSN bottlenecks, 3x3x3 depthwise convs; the
#                            small form mixes in ip-CSN (1x1x1 + depthwise).
#   sew_resnet18             SEW spiking ResNet-18 (Fang et al. 2021) as
#                            spikingjelly writes it in multi-step mode, unrolled
#                            over T=4: the image repeated T times, convs over the
#                            flattened [T*N] batch, IF neurons looping over the
#                            time steps (membrane, Heaviside firing as
#                            `(v - v_th >= 0).to(v)`, hard reset), SEW ADD
#                            residuals, logits averaged over T.
#
# Full-size forms are the published sizes (R(2+1)D-18 at 16x112x112, a
# SEW-ResNet-18 at T=4 on 224x224, ...); small forms keep the structure (every
# block kind, downsampling, the quirks) with 1 block per stage, narrow widths
# and small inputs, for the fast tests.

import math  # noqa: E402


@torch.no_grad()
def randomize_famx_(model, seed=0):
    """``randomize_`` for the modules of this section, in place; returns it in eval mode.

    Convs (2-D and 3-D) and Linear layers get He-normal weights and small
    random biases; BatchNorm (2-D and 3-D) random gamma, beta and running
    statistics; affine GroupNorm/InstanceNorm random gamma and beta; PReLU
    slopes around 0.25 (some negative). Then every module with a
    ``famx_damp_(gen)`` method shrinks the end of its residual branch (the
    last norm's gamma, or its scalar multiplier) so that the residual stream
    stays O(1) through the network, as Fixup/SkipInit initializations intend.
    """
    gen = torch.Generator().manual_seed(seed)

    def randn(shape):
        return torch.randn(shape, generator=gen)

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear)):
            fan_in = m.weight[0].numel()
            m.weight.copy_(randn(m.weight.shape) * (2.0 / fan_in) ** 0.5)
            if m.bias is not None:
                m.bias.copy_(randn(m.bias.shape) * 0.1)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            c = m.num_features
            m.weight.copy_(1.0 + 0.2 * randn(c))
            m.bias.copy_(0.1 * randn(c))
            m.running_mean.copy_(0.2 * randn(c))
            m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
        elif isinstance(m, (nn.GroupNorm, nn.InstanceNorm2d, nn.InstanceNorm3d)) and m.affine:
            m.weight.copy_(1.0 + 0.2 * randn(m.weight.shape))
            m.bias.copy_(0.1 * randn(m.bias.shape))
        elif isinstance(m, nn.PReLU):
            m.weight.copy_(0.25 + 0.15 * randn(m.weight.shape))
    for m in model.modules():
        if hasattr(m, "famx_damp_"):
            m.famx_damp_(gen)
    return model.eval()


def _bn(dims, c):
    return nn.BatchNorm2d(c) if dims == 2 else nn.BatchNorm3d(c)


def _conv_bn_nd(cin, cout, k, stride=1, padding=0, dims=2, groups=1):
    conv = (nn.Conv2d if dims == 2 else nn.Conv3d)(cin, cout, k, stride=stride, padding=padding,
                                                  groups=groups, bias=False)
    return nn.Sequential(conv, _bn(dims, cout))


# ---- stochastic depth -------------------------------------------------------


class StochasticDepthBlock(nn.Module):
    """CIFAR basic block whose branch is scaled by its survival probability at
    inference (the expectation of the training-time Bernoulli gate)."""

    def __init__(self, cin, cout, stride, survival):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _conv_bn_nd(cin, cout, 1, stride) if stride != 1 or cin != cout else None
        self.survival = float(survival)

    def famx_damp_(self, gen):
        self.bn2.weight.mul_(0.4)

    def forward(self, x):
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(identity + self.survival * out)


class StochasticDepthResNet(nn.Module):
    """CIFAR ResNet-(6n+2) with linearly decaying survival, p_L = 0.5."""

    def __init__(self, n, widths=(16, 32, 64), num_classes=10, p_last=0.5):
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn_nd(3, widths[0], 3, 1, 1), nn.ReLU(inplace=True))
        total, blocks, cin, i = 3 * n, [], widths[0], 0
        for stage, w in enumerate(widths):
            for j in range(n):
                i += 1
                survival = 1.0 - i / total * (1.0 - p_last)
                blocks.append(StochasticDepthBlock(cin, w, 2 if stage and not j else 1, survival))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


# ---- PReLU and GroupNorm ResNets ---------------------------------------------


class PReLUBasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act2 = nn.PReLU(cout)
        self.downsample = _conv_bn_nd(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def famx_damp_(self, gen):
        self.bn2.weight.mul_(0.4)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(out + identity)


class GNBottleneck(nn.Module):
    def __init__(self, cin, planes, stride, groups):
        super().__init__()
        cout = planes * 4
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.gn1 = nn.GroupNorm(groups, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.gn2 = nn.GroupNorm(groups, planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.gn3 = nn.GroupNorm(groups, cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.GroupNorm(groups, cout))

    def famx_damp_(self, gen):
        self.gn3.weight.mul_(0.3)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.gn1(self.conv1(x)))
        out = self.relu(self.gn2(self.conv2(out)))
        return self.relu(self.gn3(self.conv3(out)) + identity)


class StagedResNet(nn.Module):
    """torchvision's ResNet skeleton over any block factory:
    ``block(cin, planes, stride) -> (module, cout)``; ``stem`` maps 3 -> width."""

    def __init__(self, block, layers, width, stem, num_classes, head_channels):
        super().__init__()
        self.stem = stem
        stages, cin = [], width
        for i, n in enumerate(layers):
            planes = width * 2 ** i
            blocks = []
            for j in range(n):
                module, cin = block(cin, planes, 2 if i and not j else 1)
                blocks.append(module)
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = head_channels(cin)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.head(self.stages(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def _imagenet_stem(width, norm, act):
    return nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), norm(width), act(width),
                         nn.MaxPool2d(3, 2, 1))


def resnet18_prelu(full):
    layers, width = ((2, 2, 2, 2), 64) if full else ((1, 1, 1, 1), 16)
    return StagedResNet(lambda cin, planes, s: (PReLUBasicBlock(cin, planes, s), planes), layers, width,
                        _imagenet_stem(width, nn.BatchNorm2d, lambda c: nn.PReLU()),
                        1000 if full else 10, lambda c: nn.Identity())


def resnet50_gn(full):
    layers, width, groups = ((3, 4, 6, 3), 64, 32) if full else ((1, 1, 1, 1), 16, 8)
    return StagedResNet(lambda cin, planes, s: (GNBottleneck(cin, planes, s, groups), planes * 4), layers,
                        width, _imagenet_stem(width, lambda c: nn.GroupNorm(groups, c), lambda c: nn.ReLU()),
                        1000 if full else 10, lambda c: nn.Identity())


# ---- BiT: weight-standardized convs and GroupNorm ---------------------------


class StdConv2d(nn.Conv2d):
    """timm's StdConv2d (BiT, Kolesnikov et al. 2020): each output channel's
    weights standardized to zero mean and unit variance before the conv,
    written as timm writes it, F.batch_norm(w, training=True) on the weight
    reshaped to (1, M, K). The TorchScript exporter keeps that as a
    BatchNormalization with training_mode=1 on a constant; the dynamo
    exporter's optimizer folds it."""

    def __init__(self, *args, eps=1e-8, **kw):
        super().__init__(*args, bias=False, **kw)
        self.eps = eps

    def forward(self, x):
        w = nn.functional.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True,
                                     momentum=0.0, eps=self.eps).reshape_as(self.weight)
        return nn.functional.conv2d(x, w, None, self.stride, self.padding, self.dilation, self.groups)


class BiTBottleneck(nn.Module):
    """BiT's ResNetV2 pre-activation bottleneck: GroupNorm-ReLU before each
    weight-standardized conv (stride on the 3x3), the projection shortcut on
    the first pre-activation."""

    def __init__(self, cin, planes, stride, groups):
        super().__init__()
        cout = planes * 4
        self.gn1 = nn.GroupNorm(groups, cin)
        self.conv1 = StdConv2d(cin, planes, 1)
        self.gn2 = nn.GroupNorm(groups, planes)
        self.conv2 = StdConv2d(planes, planes, 3, stride=stride, padding=1)
        self.gn3 = nn.GroupNorm(groups, planes)
        self.conv3 = StdConv2d(planes, cout, 1)
        self.shortcut = StdConv2d(cin, cout, 1, stride=stride) if stride != 1 or cin != cout else None

    def famx_damp_(self, gen):
        # A standardized conv undoes any scaling of its own weights; its input's
        # norm scales its output instead (bias-free): K = planes inputs of unit
        # weight variance would grow the stream by ~sqrt(K) a block.
        self.gn3.weight.mul_(0.5 / self.conv3.in_channels ** 0.5)
        self.gn3.bias.mul_(0.5 / self.conv3.in_channels ** 0.5)

    def forward(self, x):
        out = torch.relu(self.gn1(x))
        identity = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(torch.relu(self.gn2(self.conv1(out))))
        return self.conv3(torch.relu(self.gn3(out))) + identity


def bit_resnetv2_50(full):
    """BiT-M ResNetV2-50x1 (timm's resnetv2_50x1_bit): StdConv2d 7x7/2 stem,
    max pool, [3, 4, 6, 3] pre-activation bottlenecks with GroupNorm(32),
    final GroupNorm-ReLU. Small: [1, 1, 1, 1], width 16, 8 groups."""
    layers, width, groups = ((3, 4, 6, 3), 64, 32) if full else ((1, 1, 1, 1), 16, 8)
    stem = nn.Sequential(StdConv2d(3, width, 7, stride=2, padding=3), nn.MaxPool2d(3, 2, 1))
    return StagedResNet(lambda cin, planes, s: (BiTBottleneck(cin, planes, s, groups), planes * 4), layers, width,
                        stem, 1000 if full else 10, lambda c: nn.Sequential(nn.GroupNorm(groups, c), nn.ReLU()))


# ---- Fixup and SkipInit ------------------------------------------------------


def _scalar(shape=(1,)):
    return nn.Parameter(torch.zeros(shape))


class FixupBottleneck(nn.Module):
    """As in the Fixup reference code: scalar biases (shape [1]) before each
    conv and after each conv's activation input, a scalar multiplier on the
    branch; no normalization, bias-less convs."""

    def __init__(self, cin, planes, stride):
        super().__init__()
        cout = planes * 4
        for name in ("bias1a", "bias1b", "bias2a", "bias2b", "bias3a", "bias3b"):
            setattr(self, name, _scalar())
        self.scale = nn.Parameter(torch.ones(1))
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def famx_damp_(self, gen):
        for name in ("bias1a", "bias1b", "bias2a", "bias2b", "bias3a", "bias3b"):
            getattr(self, name).copy_(0.1 * torch.randn(1, generator=gen))
        self.scale.fill_(0.2 + 0.1 * float(torch.rand(1, generator=gen)))

    def forward(self, x):
        out = self.relu(self.conv1(x + self.bias1a) + self.bias1b)
        out = self.relu(self.conv2(out + self.bias2a) + self.bias2b)
        out = self.conv3(out + self.bias3a) * self.scale + self.bias3b
        identity = x if self.downsample is None else self.downsample(x + self.bias1a)
        return self.relu(out + identity)


class FixupResNet(nn.Module):
    def __init__(self, layers, width, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bias1 = _scalar()
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, cin = [], width
        for i, n in enumerate(layers):
            planes = width * 2 ** i
            stages.append(nn.Sequential(*[FixupBottleneck(cin if not j else planes * 4, planes,
                                                          2 if i and not j else 1) for j in range(n)]))
            cin = planes * 4
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.bias2 = _scalar()
        self.fc = nn.Linear(cin, num_classes)

    def famx_damp_(self, gen):
        self.bias1.copy_(0.1 * torch.randn(1, generator=gen))
        self.bias2.copy_(0.1 * torch.randn(1, generator=gen))

    def forward(self, x):
        x = self.maxpool(self.relu(self.conv1(x) + self.bias1))
        x = torch.flatten(self.pool(self.stages(x)), 1)
        return self.fc(x + self.bias2)


class SkipInitBottleneck(nn.Module):
    """Pre-activation bottleneck without normalization; the branch is scaled
    by a 0-d learnable scalar (zero at initialization in the paper)."""

    def __init__(self, cin, planes, stride):
        super().__init__()
        cout = planes * 4
        self.conv1 = nn.Conv2d(cin, planes, 1)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1)
        self.conv3 = nn.Conv2d(planes, cout, 1)
        self.relu = nn.ReLU()
        self.alpha = _scalar(())
        self.shortcut = nn.Conv2d(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def famx_damp_(self, gen):
        self.alpha.fill_(0.15 + 0.1 * float(torch.rand((), generator=gen)))

    def forward(self, x):
        pre = self.relu(x)
        identity = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv3(self.relu(self.conv2(self.relu(self.conv1(pre)))))
        return identity + self.alpha * out


def fixup_resnet50(full):
    layers, width = ((3, 4, 6, 3), 64) if full else ((1, 1, 1, 1), 16)
    return FixupResNet(layers, width, 1000 if full else 10)


def skipinit_resnet50(full):
    layers, width = ((3, 4, 6, 3), 64) if full else ((1, 1, 1, 1), 16)
    stem = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3), nn.MaxPool2d(3, 2, 1))
    return StagedResNet(lambda cin, planes, s: (SkipInitBottleneck(cin, planes, s), planes * 4), layers, width,
                        stem, 1000 if full else 10, lambda c: nn.ReLU())


# ---- IBN-Net -----------------------------------------------------------------


class IBN(nn.Module):
    """IBN-Net's instance-batch norm: the first `ratio` of the channels through
    an affine InstanceNorm, the rest through BatchNorm (the reference code)."""

    def __init__(self, planes, ratio=0.5):
        super().__init__()
        self.half = int(planes * ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x):
        split = torch.split(x, self.half, 1)
        out1 = self.IN(split[0].contiguous())
        out2 = self.BN(split[1].contiguous())
        return torch.cat((out1, out2), 1)


class IBNBottleneck(Bottleneck):
    def __init__(self, inplanes, planes, stride=1, downsample=None, ibn=True):
        super().__init__(inplanes, planes, stride, downsample)
        if ibn:
            self.bn1 = IBN(planes)

    def famx_damp_(self, gen):
        self.bn3.weight.mul_(0.3)


def resnet50_ibn_a(full):
    layers, width = ((3, 4, 6, 3), 64) if full else ((1, 1, 1, 1), 16)

    def block(cin, planes, stride):
        ds = _conv_bn_nd(cin, planes * 4, 1, stride) if stride != 1 or cin != planes * 4 else None
        return IBNBottleneck(cin, planes, stride, ds, ibn=planes < width * 8), planes * 4

    return StagedResNet(block, layers, width, _imagenet_stem(width, nn.BatchNorm2d, lambda c: nn.ReLU()),
                        1000 if full else 10, lambda c: nn.Identity())


# ---- Resnet-in-Resnet ----------------------------------------------------------


class RiRLayer(nn.Module):
    """One generalized residual layer: r' = relu(BN(W_rr r + W_tr t + shortcut(r))),
    t' = relu(BN(W_rt r + W_tt t)); 3x3 convs, the shortcut on r only."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.rr = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.tr = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.rt = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.tt = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn_r = nn.BatchNorm2d(cout)
        self.bn_t = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def famx_damp_(self, gen):
        for conv in (self.rr, self.tr, self.rt, self.tt):
            conv.weight.mul_(0.5)

    def forward(self, r, t):
        identity = r if self.shortcut is None else self.shortcut(r)
        r2 = self.relu(self.bn_r(self.rr(r) + self.tr(t) + identity))
        t2 = self.relu(self.bn_t(self.rt(r) + self.tt(t)))
        return r2, t2


class RiRBlock(nn.Module):
    """Two generalized residual layers with an outer shortcut around both streams."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.layer1 = RiRLayer(cin, cout, stride)
        self.layer2 = RiRLayer(cout, cout, 1)
        self.outer_r = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None
        self.outer_t = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def famx_damp_(self, gen):
        self.layer2.bn_r.weight.mul_(0.5)
        self.layer2.bn_t.weight.mul_(0.5)

    def forward(self, r, t):
        r2, t2 = self.layer2(*self.layer1(r, t))
        if self.outer_r is not None:
            r, t = self.outer_r(r), self.outer_t(t)
        return r2 + r, t2 + t


class ResNetInResNet(nn.Module):
    def __init__(self, blocks, widths, num_classes):
        super().__init__()
        self.stem_r = nn.Sequential(*_conv_bn_nd(3, widths[0], 3, 1, 1), nn.ReLU(inplace=True))
        self.stem_t = nn.Sequential(*_conv_bn_nd(3, widths[0], 3, 1, 1), nn.ReLU(inplace=True))
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            for j in range(blocks):
                layers.append(RiRBlock(cin, w, 2 if i and not j else 1))
                cin = w
        self.blocks = nn.ModuleList(layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * cin, num_classes)

    def forward(self, x):
        r, t = self.stem_r(x), self.stem_t(x)
        for block in self.blocks:
            r, t = block(r, t)
        return self.fc(torch.flatten(self.pool(torch.cat((r, t), 1)), 1))


def resnet_in_resnet(full):
    # Full: the paper's 18-layer CIFAR RiR (3 stages x 3 blocks x 2 layers),
    # streams of 48/96/192 channels (96/192/384 in all, its "wide" widths).
    return ResNetInResNet(3, (48, 96, 192), 10) if full else ResNetInResNet(1, (8, 16, 32), 10)


# ---- 3-D video blocks ------------------------------------------------------------


class Conv2Plus1D(nn.Sequential):
    """torchvision's Conv2Plus1D: (1,3,3) spatial conv -> BN -> ReLU -> (3,1,1) temporal conv."""

    def __init__(self, cin, cout, mid, stride=1):
        super().__init__(nn.Conv3d(cin, mid, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False),
                         nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
                         nn.Conv3d(mid, cout, (3, 1, 1), (stride, 1, 1), (1, 0, 0), bias=False))


class R2Plus1DBlock(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        mid = (cin * planes * 27) // (cin * 9 + 3 * planes)
        self.conv1 = nn.Sequential(Conv2Plus1D(cin, planes, mid, stride), nn.BatchNorm3d(planes), nn.ReLU(inplace=True))
        mid = (planes * planes * 27) // (planes * 9 + 3 * planes)
        self.conv2 = nn.Sequential(Conv2Plus1D(planes, planes, mid), nn.BatchNorm3d(planes))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _conv_bn_nd(cin, planes, 1, stride, dims=3) if stride != 1 or cin != planes else None

    def famx_damp_(self, gen):
        self.conv2[1].weight.mul_(0.4)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + identity)


class VideoResNet(nn.Module):
    """torchvision's VideoResNet skeleton: stem, four stages, AdaptiveAvgPool3d(1), fc."""

    def __init__(self, stem, block, layers, width, expansion, num_classes, between=None):
        super().__init__()
        self.stem = stem
        stages, cin = [], width
        for i, n in enumerate(layers):
            planes = width * 2 ** i
            blocks = []
            for j in range(n):
                blocks.append(block(cin, planes, 2 if i and not j else 1, i, j))
                cin = planes * expansion
            stages.append(nn.Sequential(*blocks))
            if between is not None and i == 0:
                stages.append(between)
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


def r2plus1d_18(full):
    layers, width = ((2, 2, 2, 2), 64) if full else ((1, 1, 1, 1), 16)
    mid = 45 if full else 12
    stem = nn.Sequential(nn.Conv3d(3, mid, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False), nn.BatchNorm3d(mid),
                         nn.ReLU(inplace=True),
                         nn.Conv3d(mid, width, (3, 1, 1), 1, (1, 0, 0), bias=False), nn.BatchNorm3d(width),
                         nn.ReLU(inplace=True))
    return VideoResNet(stem, lambda cin, planes, s, i, j: R2Plus1DBlock(cin, planes, s), layers, width, 1,
                       400 if full else 10)


class P3DBottleneck(nn.Module):
    """1x1x1 reduce -> P3D-A/B/C unit of a (1,3,3) S conv and a (3,1,1) T conv -> 1x1x1 expand."""

    def __init__(self, cin, planes, stride, kind):
        super().__init__()
        cout = planes * 4
        self.kind = kind
        # As in the P3D reference code, the spatial stride is on the first 1x1x1 conv.
        self.conv1 = nn.Conv3d(cin, planes, 1, (1, stride, stride), bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv_s = nn.Conv3d(planes, planes, (1, 3, 3), 1, (0, 1, 1), bias=False)
        self.bn_s = nn.BatchNorm3d(planes)
        self.conv_t = nn.Conv3d(planes, planes, (3, 1, 1), 1, (1, 0, 0), bias=False)
        self.bn_t = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = _conv_bn_nd(cin, cout, 1, (1, stride, stride), dims=3)

    def famx_damp_(self, gen):
        self.bn3.weight.mul_(0.3)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        s = self.relu(self.bn_s(self.conv_s(out)))
        if self.kind == "A":
            out = self.relu(self.bn_t(self.conv_t(s)))
        elif self.kind == "B":
            out = s + self.relu(self.bn_t(self.conv_t(out)))
        else:
            out = s + self.relu(self.bn_t(self.conv_t(s)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


def p3d_resnet50(full):
    layers, width = ((3, 4, 6, 3), 64) if full else ((1, 1, 1, 1), 16)
    stem = nn.Sequential(nn.Conv3d(3, width, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False), nn.BatchNorm3d(width),
                         nn.ReLU(inplace=True), nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)))
    counter = iter(range(10 ** 6))
    return VideoResNet(stem, lambda cin, planes, s, i, j: P3DBottleneck(cin, planes, s, "ABC"[next(counter) % 3]),
                       layers, width, 4, 400 if full else 10, between=nn.MaxPool3d((2, 1, 1), (2, 1, 1)))


class CSNBottleneck(nn.Module):
    """ir-CSN: 1x1x1 -> depthwise 3x3x3 -> 1x1x1; ip-CSN adds a 1x1x1 conv before the depthwise one."""

    def __init__(self, cin, planes, stride, ip=False):
        super().__init__()
        cout = planes * 4
        self.conv1 = nn.Conv3d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.pre = nn.Conv3d(planes, planes, 1, bias=False) if ip else None
        self.conv2 = nn.Conv3d(planes, planes, 3, stride, 1, groups=planes, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _conv_bn_nd(cin, cout, 1, stride, dims=3) if stride != 1 or cin != cout else None

    def famx_damp_(self, gen):
        self.bn3.weight.mul_(0.3)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        if self.pre is not None:
            out = self.pre(out)
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


def ir_csn50(full):
    layers, width = ((3, 4, 6, 3), 64) if full else ((1, 1, 1, 1), 16)
    stem = nn.Sequential(nn.Conv3d(3, width, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False), nn.BatchNorm3d(width),
                         nn.ReLU(inplace=True), nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)))
    # The small form makes its odd stages ip-CSN so that both block kinds are tested.
    return VideoResNet(stem, lambda cin, planes, s, i, j: CSNBottleneck(cin, planes, s, ip=not full and i % 2 == 1),
                       layers, width, 4, 400 if full else 10)


# ---- SEW spiking ResNet -------------------------------------------------------------


def heaviside(x, firing="ge_cast"):
    """The Heaviside step of a spiking neuron's forward pass, in the forms
    exporters see: spikingjelly's ``(x >= 0).to(x)`` (GreaterOrEqual + Cast),
    ``(x > 0).float()`` (Greater + Cast) or ``torch.where(x >= 0, 1, 0)``
    (GreaterOrEqual + Where)."""
    if firing == "ge_cast":
        return (x >= 0).to(x)
    if firing == "gt_cast":
        return (x > 0).float()
    if firing == "where":
        return torch.where(x >= 0, torch.ones_like(x), torch.zeros_like(x))
    raise ValueError(f"unknown firing form {firing!r}")


class SurrogateHeaviside(torch.autograd.Function):
    """The Heaviside firing with a surrogate gradient, for training (as
    spikingjelly's ``surrogate.Sigmoid``): the forward is ``heaviside(x,
    firing)`` itself, the backward the derivative of sigmoid(alpha x). Only
    used in train mode: eval mode (and so every export) calls ``heaviside``."""

    ALPHA = 4.0

    @staticmethod
    def forward(ctx, x, firing):
        ctx.save_for_backward(x)
        return heaviside(x, firing)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        sg = torch.sigmoid(SurrogateHeaviside.ALPHA * x)
        return grad * SurrogateHeaviside.ALPHA * sg * (1.0 - sg), None


class MultiStepNeuron(nn.Module):
    """spikingjelly's IF / LIF node in multi-step mode, unrolled over T.

    Input and output [T, N, ...]. Per step (v_reset = 0, v starts at v_reset):
      IF:  h = v + x            LIF: h = v + (x - (v - v_reset)) / tau   (v_reset = 0 for soft reset)
      s = heaviside(h - v_th)
      hard reset: v = (1 - s) * h + s * v_reset      soft reset: v = h - s * v_th
    """

    def __init__(self, tau=None, v_threshold=1.0, v_reset=0.0, firing="ge_cast"):
        super().__init__()
        self.tau, self.v_threshold, self.v_reset, self.firing = tau, v_threshold, v_reset, firing

    def forward(self, x_seq):
        vr = 0.0 if self.v_reset is None else self.v_reset  # soft reset: the rest potential is 0
        v, spikes = None, []
        for t in range(x_seq.shape[0]):
            x = x_seq[t]
            if v is None:  # v = vr at t = 0, folded in: no zeros tensor in the exported graph
                h = x + vr if self.tau is None else vr + x / self.tau
            elif self.tau is None:
                h = v + x
            else:
                h = v + (x - (v - vr)) / self.tau
            if self.training:  # the same step, with a surrogate gradient
                s = SurrogateHeaviside.apply(h - self.v_threshold, self.firing)
            else:
                s = heaviside(h - self.v_threshold, self.firing)
            if self.v_reset is None:
                v = h - s * self.v_threshold
            else:
                v = (1.0 - s) * h + s * self.v_reset
            spikes.append(s)
        return torch.stack(spikes)


class SeqToANN(nn.Module):
    """spikingjelly's SeqToANNContainer: runs stateless layers on [T*N, ...]."""

    def __init__(self, *modules):
        super().__init__()
        self.module = nn.Sequential(*modules)

    def forward(self, x_seq):
        y = self.module(x_seq.flatten(0, 1))
        return y.view((x_seq.shape[0], x_seq.shape[1]) + tuple(y.shape[1:]))


class SEWBasicBlock(nn.Module):
    """SEW residual block, ADD connect: SN(BN(conv(SN(BN(conv(x)))))) + identity spikes."""

    def __init__(self, cin, planes, stride, neuron):
        super().__init__()
        self.conv1 = SeqToANN(nn.Conv2d(cin, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes))
        self.sn1 = neuron()
        self.conv2 = SeqToANN(nn.Conv2d(planes, planes, 3, 1, 1, bias=False), nn.BatchNorm2d(planes))
        self.sn2 = neuron()
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = SeqToANN(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
            self.downsample_sn = neuron()

    def forward(self, x):
        out = self.sn2(self.conv2(self.sn1(self.conv1(x))))
        identity = x if self.downsample is None else self.downsample_sn(self.downsample(x))
        return out + identity


class SEWResNet(nn.Module):
    """SEW-ResNet (spikingjelly layout): image repeated T times, conv stem, SN,
    max pool, SEW basic blocks, average pool, mean over T, fc."""

    def __init__(self, layers, width, num_classes, T=4, neuron=None):
        super().__init__()
        self.T = T
        neuron = neuron or MultiStepNeuron
        self.input_gain = neuron().tau or 1.0  # LIF neurons see x / tau: randomize_famx_ scales BN by tau
        self.conv1 = SeqToANN(nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width))
        self.sn1 = neuron()
        self.maxpool = SeqToANN(nn.MaxPool2d(3, 2, 1))
        stages, cin = [], width
        for i, n in enumerate(layers):
            planes = width * 2 ** i
            blocks = []
            for j in range(n):
                blocks.append(SEWBasicBlock(cin, planes, 2 if i and not j else 1, neuron))
                cin = planes
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = SeqToANN(nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(cin, num_classes)

    def famx_damp_(self, gen):
        # Random BN statistics put about a third of the neurons above threshold
        # early on; shift each BN so that firing stays in a useful range (not
        # all-silent, not all-firing) through 18 layers of random weights.
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.mul_(0.8 * self.input_gain)
                m.bias.add_(0.4 * self.input_gain)

    def forward(self, x):
        x = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        x = self.maxpool(self.sn1(self.conv1(x)))
        x = self.pool(self.stages(x))
        # spikingjelly applies fc per step and then averages over T; fc is
        # linear, so averaging the spike-rate features first is the same
        # function (and one Gemm instead of T).
        return self.fc(torch.flatten(x, 2).mean(0))


def sew_resnet18(full, firing="ge_cast", tau=None, v_reset=0.0, T=4):
    layers, width = ((2, 2, 2, 2), 64) if full else ((1, 1, 1, 1), 16)

    def neuron():
        return MultiStepNeuron(tau=tau, v_reset=v_reset, firing=firing)

    return SEWResNet(layers, width, 1000 if full else 10, T=T, neuron=neuron)


def _famx(name, factory, small, full, notes, int8=True):
    register(Family(name, lambda full_, f=factory: randomize_famx_(f(full_)), small, full, int8, notes))


_famx("resnet_stochastic_depth", lambda full: StochasticDepthResNet(18 if full else 1, num_classes=10),
      (3, 32, 32), (3, 32, 32), "CIFAR ResNet-110, branch x survival (Mul by scalar), p_L = 0.5")
_famx("resnet18_prelu", resnet18_prelu, (3, 64, 64), (3, 224, 224), "PReLU: shared slope (stem), per-channel (blocks)")
_famx("resnet50_gn", resnet50_gn, (3, 64, 64), (3, 224, 224), "GroupNorm(32) after every conv")
_famx("bit_resnetv2_50", bit_resnetv2_50, (3, 64, 64), (3, 224, 224),
      "BiT: weight-standardized convs (BatchNormalization training_mode=1 on the weight), GroupNorm")
_famx("fixup_resnet50", fixup_resnet50, (3, 64, 64), (3, 224, 224), "no norm; scalar biases and multipliers")
_famx("skipinit_resnet50", skipinit_resnet50, (3, 64, 64), (3, 224, 224), "no norm; 0-d scalar alpha per branch")
_famx("resnet50_ibn_a", resnet50_ibn_a, (3, 64, 64), (3, 224, 224), "Split -> InstanceNorm | BatchNorm -> Concat")
_famx("resnet_in_resnet", resnet_in_resnet, (3, 32, 32), (3, 32, 32), "two streams (residual, transient), CIFAR")
_famx("r2plus1d_18", r2plus1d_18, (3, 4, 32, 32), (3, 16, 112, 112), "(1,3,3) + (3,1,1) Conv3d, 16x112x112 clips")
_famx("p3d_resnet50", p3d_resnet50, (3, 4, 32, 32), (3, 16, 112, 112), "P3D-A/B/C bottlenecks, temporal max pool")
_famx("ir_csn50", ir_csn50, (3, 4, 32, 32), (3, 16, 112, 112), "depthwise 3x3x3 Conv3d (ir-CSN; small: + ip-CSN)")
_famx("sew_resnet18", sew_resnet18, (3, 32, 32), (3, 224, 224),
      "spiking, T=4 unrolled: IF neurons, (v - v_th >= 0) Heaviside, hard reset, SEW ADD; trained with a "
      "surrogate gradient (SurrogateHeaviside); tests/test_spiking.py checks its spikes and INT8 noise floor")


# ---------------------------------------------------------------------------
# Measured INT8 shortfalls (tests/test_torch_families.py: each family's small
# form trained on real crops, pyengine's default calibration, INT8 vs FP32
# top-1 on 300 held-out crops; onnxruntime's u8s8 QDQ INT8 on the same file,
# calibration and crops from tools/family_agreement.py). The test runs these
# families as strict xfails.
def _shortfall(measured, ort, fp32, why=""):
    return (f"held-out agreement {measured} (onnxruntime u8s8 INT8 {ort}), FP32 top-1 {fp32}: "
            + (why or "a few crops near a decision boundary of a network trained for 120 steps flip; no outlier "
                      "layer (per-tensor SQNR 27-35 dB) and onnxruntime's INT8 flips about as many"))


_INT8_FINDINGS = {
    "resnet50": _shortfall("98.33% (dynamo 98.33%)", "98.00%", "81.0%",
                           "only layer4 and fc are trained (the full-width stem and layer1-3 keep random weights, "
                           "too slow to train in the test), so the logits rest on random features and are less "
                           "decisive; no outlier layer, onnxruntime's INT8 flips about as many"),
    "rmnet18": _shortfall(
        "98.33% / 98.67% / 99.00% (trained with PyTorch's AVX2 / default / AVX-512 kernels; 98.92% of 1300 crops)",
        "98.67%", "67-74%",
        "its INT8 logits error (0.027-0.034) is a ResNet's, but the network trained for 120 steps has many "
        "near-ties. Not its RM form: restore_residuals turns the RM blocks back into residual blocks before "
        "quantizing (conv2's per-channel weight scale was set by the identity's 1.0, 24.5 dB; that moved "
        "agreement on 1300 crops by none, 98.92% both ways). Trained 360 steps it is 97.67-99.00% (more "
        "decisive logits, but more crops on the other side of the bound); cross-layer equalization of the "
        "blocks' hidden channels gives +0.15 point; the block outputs feeding the strided convs are the most "
        "sensitive tensors (one kept in float: 99.15-99.31% of 1300 crops at 360 steps). Not strict: the 300 crops "
        "straddle the bound (twenty-first session)"),
    "sew_resnet18": _shortfall(
        "86.67%", "87.67%", "69.3% (INT8's is the same)",
        "a membrane within INT8 error of the threshold flips its spike, and the flip travels through the "
        "T=4 steps and the layers: the FP32 network itself changes its top-1 on 9-11% of these crops when "
        "its input moves by +-0.1 to +-0.5 INT8 input steps (tests/test_spiking.py checks INT8 against "
        "that floor), so 99% is out of reach for any INT8 of this network"),
}
# (resnet50_ibn_a (dynamo: 98.33%) and residual_attention56 (98.67%) were here at 120
# training steps, near-ties of an undertrained network: trained 360 steps
# (test_torch_families.TRAINING) they agree on 99.67-100%.)
# (With nearest weight rounding, before GPTQ became the default, preact_resnet50 98.67%,
# resnet_stochastic_depth 98.67%, ir_csn50 98.00% and resnet50_pruned 98.33% fell short too;
# GPTQ brings each to 99.00-99.67% on both exporters.)
for _name, _finding in _INT8_FINDINGS.items():
    FAMILIES[_name] = dataclasses.replace(FAMILIES[_name], int8_finding=_finding)
FAMILIES["sew_resnet18"] = dataclasses.replace(FAMILIES["sew_resnet18"], discontinuous=True)
FAMILIES["rmnet18"] = dataclasses.replace(FAMILIES["rmnet18"], int8_finding_strict=False)
