"""RMNet as its authors deploy it (Meng et al. 2021, "RMNet: Equivalently
Removing Residual Connection from Networks"), exported by PyTorch, built by
pyengine: ``restore_residuals`` finds every block's identity channels through
the exporters' BatchNorms and the graph runs as the ResNet it came from.

The RM operation, written here from the paper: a trained ResNet basic block
ReLU(BN2(conv2(ReLU(BN1(conv1(x))))) + shortcut(x)) becomes
ReLU(BN2'(conv2'(ReLU(BN1'(conv1'(x)))))) with
- conv1' = [conv1; Dirac] (C extra outputs copying x, at conv1's stride) and
  BN1' = [BN1; an identity BN] (weight sqrt(var + eps), bias and running mean
  the same mean: the identity, up to float rounding);
- conv2' = [conv2 * s2 | shortcut] over the 2C hidden channels, the
  shortcut being the Dirac kernel, or in a downsampling block the 1x1
  projection (its BN folded) padded to 3x3; BN2' an identity BN whose bias
  carries BN2's and the projection's shifts.
The BatchNorms stay in the TorchScript export (constant folding off), so the
identity channels reach the optimizer as Dirac kernels times BN scales equal
to 1 within rounding, as users' exports have them.

Checks, for both exporters: the RM network equals the ResNet in PyTorch
(atol 1e-4); pyengine's FP32 engine matches onnxruntime on the exported file
(relative L2 <= 1e-5); ``restore_residuals`` fires on every block, the
downsampling ones included; the built graph has the ResNet's parameter
count, not the RM form's.
"""

import numpy as np
import pytest

import pyengine

pytestmark = pytest.mark.torch

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
nn = torch.nn

from realdata_models import BasicBlock  # noqa: E402  (conv-BN-ReLU-conv-BN + shortcut, `down` projection)
from test_torch_export import export, ort_session, rel_l2  # noqa: E402
from torch_models import randomize_  # noqa: E402

SHAPE = (3, 32, 32)
MAX_REL_L2 = 1e-5


def resnet(widths=(16, 32, 64), blocks=2, classes=10):
    layers = [nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()]
    cin = widths[0]
    for i, w in enumerate(widths):
        for b in range(blocks):
            layers.append(BasicBlock(cin, w, 2 if i > 0 and b == 0 else 1))
            cin = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))


def _fold(conv_w, bn):
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return conv_w * s[:, None, None, None], bn.bias - bn.running_mean * s


def _identity_bn(mean, var, bias_extra=None):
    """A BatchNorm that computes x (+ bias_extra) from its own running statistics."""
    bn = nn.BatchNorm2d(len(mean)).eval()
    bn.running_mean.copy_(mean)
    bn.running_var.copy_(var)
    bn.weight.copy_(torch.sqrt(var + bn.eps))
    bn.bias.copy_(mean if bias_extra is None else mean + bias_extra)
    return bn


@torch.no_grad()
def rm_block(block, gen):
    """The RM operation on a trained-form basic block (eval mode)."""
    cin, c = block.conv1.in_channels, block.conv1.out_channels
    stride = block.conv1.stride
    mean, var = 0.5 * torch.randn(cin, generator=gen), 0.5 + torch.rand(cin, generator=gen)
    conv1 = nn.Conv2d(cin, c + cin, 3, stride, 1, bias=False)
    conv1.weight[:c] = block.conv1.weight
    nn.init.dirac_(conv1.weight[c:])
    bn1 = nn.BatchNorm2d(c + cin).eval()
    ident = _identity_bn(mean, var)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(bn1, name)[:c] = getattr(block.bn1, name)
        getattr(bn1, name)[c:] = getattr(ident, name)
    conv2 = nn.Conv2d(c + cin, c, 3, 1, 1, bias=False)
    w2, b2 = _fold(block.conv2.weight, block.bn2)
    conv2.weight[:, :c] = w2
    if block.down is None:
        conv2.weight[:, c:] = 0
        nn.init.dirac_(conv2.weight[:, c:])
        shift = b2
    else:
        wd, bd = _fold(block.down[0].weight, block.down[1])
        conv2.weight[:, c:] = nn.functional.pad(wd, [1, 1, 1, 1])
        shift = b2 + bd
    bn2 = _identity_bn(0.5 * torch.randn(c, generator=gen), 0.5 + torch.rand(c, generator=gen), shift)
    return [conv1, bn1, nn.ReLU(), conv2, bn2, nn.ReLU()]


def rm_deploy(net, seed=0):
    gen = torch.Generator().manual_seed(seed)
    layers = []
    for m in net:
        layers += rm_block(m, gen) if isinstance(m, BasicBlock) else [m]
    return nn.Sequential(*layers).eval()


@pytest.fixture(scope="module")
@torch.no_grad()
def networks():
    net = randomize_(resnet(), seed=3)
    for m in net.modules():  # the residual branch's last BN small, as randomize_ does for bottlenecks
        if isinstance(m, BasicBlock):
            m.bn2.weight.mul_(0.3)
    return net.eval(), rm_deploy(net)


def test_rm_form_is_the_resnet(networks):
    net, rm = networks
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        np.testing.assert_allclose(rm(x).numpy(), net(x).numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_rmnet_export_becomes_the_resnet(networks, exporter, tmp_path):
    net, rm = networks
    blocks = sum(isinstance(m, BasicBlock) for m in net)
    path = export(rm, str(tmp_path / f"rmnet-{exporter}.onnx"), exporter, shape=SHAPE)
    engine = pyengine.build(path, backend="cpu")
    passes = {p["name"]: p["count"] for p in engine.metadata["optimizer"]["passes"]}
    assert passes.get("restore_residuals") == blocks, passes
    x = np.random.default_rng().standard_normal((3, *SHAPE)).astype(np.float32)
    (ref,) = ort_session(path).run(None, {"input": x})
    out = engine.run({"input": x})["logits"]
    assert rel_l2(out, ref) <= MAX_REL_L2
    # The optimized graph carries the ResNet's weights (BN-folded convs with
    # biases, the projections as bias-free 1x1 convs: their shift is in
    # conv2's bias), not the RM form's 2C-channel ones.
    import onnx

    optimized = pyengine.optimize(path)
    floats = sum(int(np.prod(t.dims)) for t in optimized.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    convs = [m for name, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    biases = sum(m.out_channels for name, m in net.named_modules()
                 if isinstance(m, nn.Conv2d) and not name.endswith("down.0"))
    fc = net[-1].weight.numel() + net[-1].bias.numel()
    assert floats == sum(m.weight.numel() for m in convs) + biases + fc
