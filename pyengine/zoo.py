"""The model zoo: residual CNNs built with onnx.helper and random weights.

Used by the tests (tests/models.py), `pyengine demo` and tools/bench.py, so a
fresh machine has realistic models without downloading anything.

Every model has one float32 input named "input" whose first axis is the dynamic
"batch" dimension, and float32 outputs with the same leading axis. Weights come
from fixed seeds with He-style scaling, and BatchNorm layers carry non-trivial
statistics, so activations stay O(1) through deep networks and tolerance
comparisons stay meaningful. Each model is checked with onnx.checker
(full_check) when it is built.
"""

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DEFAULT_OPSET = 17
BATCH = "batch"
NUM_CLASSES = 10
# Random BatchNorm statistics scale the mean square of activations by
# E[gamma^2] * E[1 / var] = 13/12 * ln 3 on average; convs divide that out so that
# a conv + BN layer keeps activations at the scale He initialization intends.
BN_GAIN = 1.0 / math.sqrt(13.0 / 12.0 * math.log(3.0))
# Scales the last conv of each residual branch (as Fixup does) so that the
# variance added by every block stays small and deep stacks do not explode.
RESIDUAL_GAIN = 0.25
# For convs whose output is not rectified (He scaling assumes a ReLU follows).
LINEAR_GAIN = math.sqrt(0.5)


def _tuple(value, rank):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * rank


class GraphBuilder:
    """Builds an ONNX graph node by node, tracking the channel count of values.

    Values are referred to by name. Methods that create weights draw them from
    one ``np.random.default_rng(seed)``, so a model is a pure function of its
    construction code, opset and seed.
    """

    def __init__(self, name, opset=DEFAULT_OPSET, seed=0):
        if opset < 13:
            raise ValueError(f"the zoo needs opset 13 or newer, got {opset}")
        self.name = name
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.spatial_rank = None
        self._nodes = []
        self._inputs = []
        self._initializers = []
        self._value_info = []
        self._channels = {}
        self._counts = {}

    def _fresh(self, prefix):
        count = self._counts.get(prefix, 0)
        self._counts[prefix] = count + 1
        return f"{prefix}_{count}"

    def channels(self, x):
        """Returns the channel count of value ``x``."""
        return self._channels[x]

    # Graph plumbing.

    def input(self, shape, name="input"):
        """Declares a float input of shape ("batch", *shape); shape[0] is C."""
        dims = [BATCH, *shape]
        self._inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
        self.spatial_rank = len(shape) - 1
        self._channels[name] = shape[0]
        return name

    def declare_like(self, x, like):
        """Declares value ``x`` (as value_info) with the inferred type of ``like``.

        For ops that ONNX shape inference cannot see through, as exporters
        record intermediate shapes.
        """
        graph = helper.make_graph(
            self._nodes, self.name, self._inputs,
            [helper.make_tensor_value_info(like, TensorProto.FLOAT, None)],
            initializer=self._initializers, value_info=self._value_info)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        value = helper.make_empty_tensor_value_info(x)
        value.type.CopyFrom(inferred.graph.output[0].type)
        self._value_info.append(value)

    def weight(self, array, prefix="w"):
        """Adds an initializer (float arrays are stored as float32)."""
        array = np.asarray(array)
        if array.dtype.kind == "f":
            array = array.astype(np.float32)
        name = self._fresh(prefix)
        self._initializers.append(numpy_helper.from_array(array, name))
        return name

    def ints(self, values, prefix="shape"):
        """Adds an int64 initializer (shapes, axes, pads, split sizes)."""
        return self.weight(np.asarray(values, dtype=np.int64), prefix)

    def node(self, op_type, inputs, num_outputs=1, channels=None, **attrs):
        """Adds a node; returns its output name (or list of names).

        ``channels`` is recorded for every output; when omitted, outputs inherit
        the channel count of the first input, if known.
        """
        prefix = op_type.lower()
        outputs = [self._fresh(prefix) for _ in range(num_outputs)]
        self._nodes.append(helper.make_node(op_type, inputs, outputs, name=outputs[0], **attrs))
        if channels is None and inputs and inputs[0] in self._channels:
            channels = self._channels[inputs[0]]
        if channels is not None:
            for out in outputs:
                self._channels[out] = channels
        return outputs[0] if num_outputs == 1 else outputs

    def constant(self, array):
        """Adds a Constant node, as the PyTorch exporter emits for literals."""
        tensor = numpy_helper.from_array(np.asarray(array), self._fresh("value"))
        return self.node("Constant", [], value=tensor)

    # Layers with weights.

    def conv(self, x, cout, k=3, stride=1, pad=None, groups=1, dilation=1, bias=False,
             gain=1.0):
        """Conv with He-scaled weights (times BN_GAIN); ``pad=None`` keeps the size.

        ``k``, ``stride``, ``dilation`` take an int (same for every spatial axis)
        or a tuple; ``pad`` takes an int, one int per axis, or 2*rank ONNX pads.
        """
        rank = len(k) if isinstance(k, (tuple, list)) else self.spatial_rank
        k, stride, dilation = (_tuple(v, rank) for v in (k, stride, dilation))
        if pad is None:
            pad = tuple(d * (kk - 1) // 2 for kk, d in zip(k, dilation))
        pads = _tuple(pad, rank)
        if len(pads) == rank:
            pads = pads + pads
        cin = self.channels(x)
        fan_in = cin // groups * math.prod(k)
        std = gain * BN_GAIN * math.sqrt(2.0 / fan_in)
        w = self.rng.standard_normal((cout, cin // groups, *k)) * std
        inputs = [x, self.weight(w)]
        if bias:
            inputs.append(self.weight(self.rng.normal(0.0, 0.1, cout), "b"))
        return self.node("Conv", inputs, channels=cout, kernel_shape=list(k),
                         strides=list(stride), pads=list(pads), dilations=list(dilation),
                         group=groups)

    def bn(self, x, eps=1e-5):
        """Inference BatchNormalization with random, non-trivial statistics."""
        c = self.channels(x)
        gamma = self.weight(self.rng.uniform(0.5, 1.5, c), "gamma")
        beta = self.weight(self.rng.normal(0.0, 0.1, c), "beta")
        mean = self.weight(self.rng.normal(0.0, 0.1, c), "mean")
        var = self.weight(self.rng.uniform(0.5, 1.5, c), "var")
        return self.node("BatchNormalization", [x, gamma, beta, mean, var], epsilon=eps)

    def gemm(self, x, cout, cin=None, gain=1.0):
        """Gemm (transB=1) with bias on a (N, cin) value; LeCun-scaled by default."""
        cin = cin or self.channels(x)
        w = self.rng.standard_normal((cout, cin)) * gain / math.sqrt(cin)
        b = self.rng.normal(0.0, 0.1, cout)
        return self.node("Gemm", [x, self.weight(w), self.weight(b, "b")], channels=cout,
                         transB=1)

    def linear(self, x, cin, cout, gain=1.0):
        """MatMul + Add over the last axis, as exported for nn.Linear on N-D input."""
        w = self.rng.standard_normal((cin, cout)) * gain / math.sqrt(cin)
        y = self.node("MatMul", [x, self.weight(w)], channels=cout)
        return self.node("Add", [y, self.weight(self.rng.normal(0.0, 0.1, cout), "b")])

    def layer_norm(self, x, size, axis=-1, eps=1e-6):
        """LayerNormalization over the trailing axes from ``axis`` (size: their shape)."""
        scale = self.weight(self.rng.uniform(0.5, 1.5, size), "gamma")
        bias = self.weight(self.rng.normal(0.0, 0.1, size), "beta")
        return self.node("LayerNormalization", [x, scale, bias], axis=axis, epsilon=eps)

    # Layers without weights.

    def relu(self, x):
        return self.node("Relu", [x])

    def sigmoid(self, x):
        return self.node("Sigmoid", [x])

    def add(self, a, b):
        return self.node("Add", [a, b])

    def mul(self, a, b):
        return self.node("Mul", [a, b])

    def concat(self, xs, axis=1):
        channels = sum(self.channels(x) for x in xs) if axis == 1 else None
        return self.node("Concat", list(xs), channels=channels, axis=axis)

    def maxpool(self, x, k, stride, pad=0, ceil_mode=0):
        rank = self.spatial_rank
        return self.node("MaxPool", [x], kernel_shape=list(_tuple(k, rank)),
                         strides=list(_tuple(stride, rank)), pads=list(_tuple(pad, rank)) * 2,
                         ceil_mode=ceil_mode)

    def avgpool(self, x, k, stride, pad=0, ceil_mode=0, count_include_pad=0):
        rank = self.spatial_rank
        return self.node("AveragePool", [x], kernel_shape=list(_tuple(k, rank)),
                         strides=list(_tuple(stride, rank)), pads=list(_tuple(pad, rank)) * 2,
                         ceil_mode=ceil_mode, count_include_pad=count_include_pad)

    def gap(self, x):
        return self.node("GlobalAveragePool", [x])

    def flatten(self, x):
        return self.node("Flatten", [x], axis=1)

    def reshape(self, x, shape, channels=None):
        return self.node("Reshape", [x, self.ints(shape)], channels=channels)

    def transpose(self, x, perm):
        return self.node("Transpose", [x], perm=list(perm))

    def unsqueeze(self, x, axes):
        return self.node("Unsqueeze", [x, self.ints(axes, "axes")])

    def squeeze(self, x, axes):
        return self.node("Squeeze", [x, self.ints(axes, "axes")])

    def reduce(self, op_type, x, axes, keepdims=1, channels=None):
        """Reduce* node; axes move from attribute to input at opset 18 (13 for ReduceSum)."""
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.node(op_type, [x, self.ints(axes, "axes")], channels=channels,
                             keepdims=keepdims)
        return self.node(op_type, [x], channels=channels, axes=list(axes), keepdims=keepdims)

    def gelu(self, x):
        """Gelu: the op from opset 20, else the erf form the PyTorch exporter emits."""
        if self.opset >= 20:
            return self.node("Gelu", [x])
        scaled = self.node("Div", [x, self.weight(np.float32(math.sqrt(2.0)), "c")])
        erf = self.node("Erf", [scaled])
        one_plus = self.node("Add", [erf, self.weight(np.float32(1.0), "c")])
        return self.node("Mul", [self.mul(x, one_plus), self.weight(np.float32(0.5), "c")])

    def build(self, outputs):
        """Returns the checked model; ``outputs`` maps output names to values.

        Output shapes come from ONNX shape inference, with the leading axis
        declared as the "batch" dimension.
        """
        renames = dict(zip(outputs.values(), outputs.keys()))
        for node in self._nodes:
            node.input[:] = [renames.get(v, v) for v in node.input]
            node.output[:] = [renames.get(v, v) for v in node.output]
        graph = helper.make_graph(
            self._nodes, self.name, self._inputs,
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
            initializer=self._initializers, value_info=self._value_info)
        opsets = [helper.make_opsetid("", self.opset)]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="pyengine-tests",
                                  ir_version=helper.find_min_ir_version_for(opsets))
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
        types = {v.name: v.type for v in (*inferred.graph.value_info, *inferred.graph.output)}
        for out in model.graph.output:
            dims = types[out.name].tensor_type.shape.dim
            if not dims or not all(d.HasField("dim_value") for d in dims[1:]):
                raise ValueError(f"{self.name}: cannot infer the shape of output {out.name!r}")
            shape = [BATCH] + [d.dim_value for d in dims[1:]]
            out.CopyFrom(helper.make_tensor_value_info(out.name, TensorProto.FLOAT, shape))
        onnx.checker.check_model(model, full_check=True)
        return model


# Shared blocks.

def _conv_bn_relu(b, x, cout, k=3, stride=1, **conv_args):
    return b.relu(b.bn(b.conv(x, cout, k, stride, **conv_args)))


def _shortcut(b, x, cout, stride):
    """Identity, or the 1x1 conv + BN projection when the shape changes."""
    if stride == 1 and b.channels(x) == cout:
        return x
    return b.bn(b.conv(x, cout, 1, stride, pad=0, gain=LINEAR_GAIN))


def _classifier(b, x, num_classes=NUM_CLASSES):
    return b.gemm(b.flatten(b.gap(x)), num_classes)


def _torchvision_stem(b, x, width):
    x = _conv_bn_relu(b, x, width, 7, 2)
    return b.maxpool(x, 3, 2, pad=1)


def _conv3(b, x, cout, stride=1, gain=1.0):
    return b.conv(x, cout, 3, stride, gain=gain)


def _basic_block(b, x, planes, stride, conv=_conv3):
    """conv-BN-ReLU-conv-BN + shortcut, ReLU; ``conv(b, x, cout, stride, gain)``."""
    out = b.relu(b.bn(conv(b, x, planes, stride)))
    out = b.bn(conv(b, out, planes, gain=RESIDUAL_GAIN))
    return b.relu(b.add(out, _shortcut(b, x, planes, stride)))


def _bottleneck(b, x, planes, stride, groups=1, width=None, se_reduction=0, se_fc="conv"):
    width = width or planes
    out = _conv_bn_relu(b, x, width, 1, pad=0)
    out = _conv_bn_relu(b, out, width, 3, stride, groups=groups)
    out = b.bn(b.conv(out, planes * 4, 1, pad=0, gain=RESIDUAL_GAIN))
    if se_reduction:
        out = _squeeze_excite(b, out, se_reduction, se_fc)
    return b.relu(b.add(out, _shortcut(b, x, planes * 4, stride)))


def _squeeze_excite(b, x, reduction, fc):
    """x * sigmoid(fc(relu(fc(gap(x))))), with 1x1 convs or Gemms as the fcs."""
    c = b.channels(x)
    s = b.gap(x)
    if fc == "conv":
        s = b.relu(b.conv(s, c // reduction, 1, pad=0, bias=True))
        s = b.conv(s, c, 1, pad=0, bias=True)
    else:
        s = b.relu(b.gemm(b.flatten(s), c // reduction, gain=math.sqrt(2.0)))
        s = b.unsqueeze(b.gemm(s, c), [2, 3])
    return b.mul(x, b.sigmoid(s))


def _resnet(name, block, layers, width, opset, seed, image_size=64, num_classes=NUM_CLASSES):
    b = GraphBuilder(name, opset, seed)
    x = _torchvision_stem(b, b.input((3, image_size, image_size)), width)
    for stage, count in enumerate(layers):
        for i in range(count):
            stride = 2 if stage > 0 and i == 0 else 1
            x = block(b, x, width * 2**stage, stride)
    return b.build({"output": _classifier(b, x, num_classes)})


def _preact_block(b, x, planes, stride):
    """BN-ReLU-Conv x2; the projection shortcut reads the pre-activated input."""
    pre = b.relu(b.bn(x))
    skip = x
    if stride != 1 or b.channels(x) != planes:
        skip = b.conv(pre, planes, 1, stride, pad=0, gain=LINEAR_GAIN)
    out = b.conv(pre, planes, 3, stride)
    out = b.conv(b.relu(b.bn(out)), planes, 3, gain=RESIDUAL_GAIN)
    return b.add(out, skip)


def _preact_net(b, x, widths, blocks_per_stage):
    for stage, planes in enumerate(widths):
        for i in range(blocks_per_stage):
            x = _preact_block(b, x, planes, 2 if stage > 0 and i == 0 else 1)
    return _classifier(b, b.relu(b.bn(x)))


# 2-D residual networks.

def resnet18(opset=DEFAULT_OPSET, seed=0):
    """torchvision ResNet-18 layout (BasicBlock [2, 2, 2, 2], width 64), 64x64 input."""
    return _resnet("resnet18", _basic_block, [2, 2, 2, 2], 64, opset, seed)


def resnet50(opset=DEFAULT_OPSET, seed=0):
    """torchvision ResNet-50 layout (Bottleneck [3, 4, 6, 3]) at half width, 64x64 input."""
    return _resnet("resnet50", _bottleneck, [3, 4, 6, 3], 32, opset, seed)


def preact_resnet(opset=DEFAULT_OPSET, seed=0):
    """Pre-activation ResNet-18 for CIFAR (BN-ReLU-Conv units), 32x32 input."""
    b = GraphBuilder("preact_resnet", opset, seed)
    x = b.conv(b.input((3, 32, 32)), 32, 3)
    return b.build({"output": _preact_net(b, x, (32, 64, 128, 256), 2)})


def wide_resnet(opset=DEFAULT_OPSET, seed=0):
    """WRN-16-4 for CIFAR (widths 16k for k = 4, 2 pre-activation blocks per group)."""
    b = GraphBuilder("wide_resnet", opset, seed)
    x = b.conv(b.input((3, 32, 32)), 16, 3)
    return b.build({"output": _preact_net(b, x, (64, 128, 256), 2)})


def resnext(opset=DEFAULT_OPSET, seed=0):
    """ResNeXt 32x4d bottlenecks (grouped 3x3, groups=32) on a CIFAR stem, 32x32 input."""
    b = GraphBuilder("resnext", opset, seed)
    x = _conv_bn_relu(b, b.input((3, 32, 32)), 64)
    groups, width_per_group = 32, 4
    for stage, planes in enumerate((32, 64, 128)):
        width = planes * width_per_group // 64 * groups
        for i in range(2):
            x = _bottleneck(b, x, planes, 2 if stage > 0 and i == 0 else 1, groups, width)
    return b.build({"output": _classifier(b, x)})


def se_resnet(opset=DEFAULT_OPSET, seed=0):
    """SE-ResNet bottlenecks [1, 2, 2, 1]; SE uses 1x1 convs in stages 1-2, Gemms in 3-4."""
    b = GraphBuilder("se_resnet", opset, seed)
    x = _torchvision_stem(b, b.input((3, 64, 64)), 32)
    for stage, count in enumerate((1, 2, 2, 1)):
        for i in range(count):
            x = _bottleneck(b, x, 16 * 2**stage, 2 if stage > 0 and i == 0 else 1,
                            se_reduction=4, se_fc="conv" if stage < 2 else "gemm")
    return b.build({"output": _classifier(b, x)})


def _selective_kernel(b, x, c, stride, fuse):
    """SKNet unit: 3x3 and dilated 3x3 branches weighted by a softmax over branches.

    ``fuse="stack"`` stacks the branches to (N, 2, C, H, W) and uses ReduceSum;
    ``fuse="split"`` splits the attention with Split/Squeeze and adds.
    """
    a = _conv_bn_relu(b, x, c, 3, stride, groups=4)
    d = _conv_bn_relu(b, x, c, 3, stride, dilation=2, groups=4)
    z = _conv_bn_relu(b, b.gap(b.add(a, d)), max(c // 4, 8), 1, pad=0)
    att = b.reshape(b.conv(z, 2 * c, 1, pad=0, bias=True), [0, 2, c, 1, 1])
    att = b.node("Softmax", [att], axis=1)
    if fuse == "stack":
        feats = b.concat([b.unsqueeze(a, [1]), b.unsqueeze(d, [1])], axis=1)
        return b.reduce("ReduceSum", b.mul(feats, att), [1], keepdims=0, channels=c)
    att_a, att_d = b.node("Split", [att, b.ints([1, 1], "split")], num_outputs=2, axis=1)
    return b.add(b.mul(a, b.squeeze(att_a, [1])), b.mul(d, b.squeeze(att_d, [1])))


def _sk_unit(b, x, c, stride, fuse):
    out = b.bn(b.conv(_selective_kernel(b, x, c, stride, fuse), c, 1, pad=0,
                      gain=RESIDUAL_GAIN))
    return b.relu(b.add(out, _shortcut(b, x, c, stride)))


def sk_block(opset=DEFAULT_OPSET, seed=0):
    """Selective-kernel units (both fusion forms), 32x32 input."""
    b = GraphBuilder("sk_block", opset, seed)
    x = _conv_bn_relu(b, b.input((3, 32, 32)), 32)
    x = _sk_unit(b, x, 32, 1, "stack")
    x = _sk_unit(b, x, 64, 2, "split")
    return b.build({"output": _classifier(b, x)})


def densenet_block(opset=DEFAULT_OPSET, seed=0):
    """Two DenseNet-BC blocks (growth 16) joined by a transition, 32x32 input."""
    b = GraphBuilder("densenet_block", opset, seed)
    growth = 16
    x = b.conv(b.input((3, 32, 32)), 2 * growth, 3)
    for block in range(2):
        if block:
            x = b.conv(b.relu(b.bn(x)), b.channels(x) // 2, 1, pad=0)
            x = b.avgpool(x, 2, 2)
        for _ in range(4):
            y = b.conv(b.relu(b.bn(x)), 4 * growth, 1, pad=0)
            y = b.conv(b.relu(b.bn(y)), growth, 3)
            x = b.concat([x, y])
    return b.build({"output": _classifier(b, b.relu(b.bn(x)))})


def repvgg_block(opset=DEFAULT_OPSET, seed=0):
    """Training-time RepVGG: ReLU(BN(3x3) + BN(1x1) + BN(identity)), 32x32 input."""
    b = GraphBuilder("repvgg_block", opset, seed)
    x = b.input((3, 32, 32))
    gain = 0.5  # the branches are summed: halve each to keep the sum O(1)
    for width in (32, 64):
        for i in range(3):
            stride = 2 if i == 0 else 1
            out = b.add(b.bn(b.conv(x, width, 3, stride, gain=gain)),
                        b.bn(b.conv(x, width, 1, stride, pad=0, gain=gain)))
            if stride == 1 and b.channels(x) == width:
                out = b.add(out, b.bn(x))
            x = b.relu(out)
    return b.build({"output": _classifier(b, x)})


def _rm_unit(b, x, cout=None, stride=1):
    """A ResNet basic block in RMNet's residual-free form: conv1 [W1; I] (its
    C extra outputs an identity kernel at conv1's stride, bias 0), ReLU
    (x >= 0 passes), conv2 [W2 | P] over the 2C hidden channels, ReLU; P is
    the identity kernel, or in a downsampling block (cout != C) the 1x1
    projection shortcut padded to 3x3; BatchNorm folded into the biased
    convs, as RMNet's deploy form leaves it."""
    c = b.channels(x)
    cout = cout or c
    std = BN_GAIN * math.sqrt(2.0 / (9 * c))
    eye = np.zeros((c, c, 3, 3))
    eye[np.arange(c), np.arange(c), 1, 1] = 1.0
    shortcut = eye
    if cout != c:
        shortcut = np.zeros((cout, c, 3, 3))
        shortcut[:, :, 1, 1] = b.rng.standard_normal((cout, c)) * LINEAR_GAIN / math.sqrt(c)
    w1 = np.concatenate([b.rng.standard_normal((cout, c, 3, 3)) * std, eye], 0)
    b1 = np.concatenate([b.rng.normal(0.0, 0.1, cout), np.zeros(c)])
    w2 = np.concatenate([b.rng.standard_normal((cout, cout, 3, 3)) * BN_GAIN * math.sqrt(2.0 / (9 * cout))
                         * RESIDUAL_GAIN, shortcut], 1)
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    h = b.relu(b.node("Conv", [x, b.weight(w1), b.weight(b1, "b")], channels=cout + c, strides=[stride] * 2,
                      **conv))
    y = b.node("Conv", [h, b.weight(w2), b.weight(b.rng.normal(0.0, 0.1, cout), "b")], channels=cout, **conv)
    return b.relu(y)


def rm_block(opset=DEFAULT_OPSET, seed=0):
    """RMNet (RM operation): 2 stages of 2 residual-free basic blocks, the
    second starting with a strided one (projection shortcut), 32x32 input."""
    b = GraphBuilder("rm_block", opset, seed)
    x = _conv_bn_relu(b, b.input((3, 32, 32)), 16)
    for width in (16, 32):
        x = _rm_unit(b, x, width, 1 if width == b.channels(x) else 2)
        x = _rm_unit(b, x)
    return b.build({"output": _classifier(b, x)})


def _channels_first_norm(b, x, eps=1e-6):
    """ConvNeXt's LayerNorm over channels of NCHW, written out as the exporter does."""
    c = b.channels(x)
    centered = b.node("Sub", [x, b.reduce("ReduceMean", x, [1])])
    power = b.node("Pow", [centered, b.weight(np.float32(2.0), "c")])
    var = b.reduce("ReduceMean", power, [1], channels=1)
    std = b.node("Sqrt", [b.node("Add", [var, b.weight(np.float32(eps), "c")])])
    y = b.node("Div", [centered, std])
    y = b.mul(y, b.weight(b.rng.uniform(0.5, 1.5, (c, 1, 1)), "gamma"))
    return b.add(y, b.weight(b.rng.normal(0.0, 0.1, (c, 1, 1)), "beta"))


def _convnext_block(b, x):
    c = b.channels(x)
    y = b.transpose(b.conv(x, c, 7, groups=c, bias=True), [0, 2, 3, 1])
    y = b.linear(b.layer_norm(y, c), c, 4 * c, gain=math.sqrt(2.0))
    y = b.linear(b.gelu(y), 4 * c, c)
    y = b.mul(y, b.weight(b.rng.uniform(0.1, 1.0, c), "layer_scale"))
    return b.add(x, b.transpose(y, [0, 3, 1, 2]))


def convnext_block(opset=DEFAULT_OPSET, seed=0):
    """ConvNeXt: patchify stem, 2 stages of 2 blocks, LN downsampling, 32x32 input."""
    b = GraphBuilder("convnext_block", opset, seed)
    x = b.conv(b.input((3, 32, 32)), 32, 4, 4, pad=0, bias=True)
    x = _channels_first_norm(b, x)
    for stage, dim in enumerate((32, 64)):
        if stage:
            x = b.conv(_channels_first_norm(b, x), dim, 2, 2, pad=0, bias=True)
        for _ in range(2):
            x = _convnext_block(b, x)
    head = b.layer_norm(b.flatten(b.gap(x)), b.channels(x), eps=1e-6)
    return b.build({"output": b.gemm(head, NUM_CLASSES)})


# 3-D (video) networks: input (N, C, T, H, W).

def _conv2plus1d(b, x, cout, stride=1, gain=1.0):
    """R(2+1)D factorized conv: (1,3,3) spatial, BN, ReLU, then (3,1,1) temporal."""
    cin = b.channels(x)
    mid = cin * cout * 27 // (cin * 9 + 3 * cout)
    x = _conv_bn_relu(b, x, mid, (1, 3, 3), (1, stride, stride), pad=(0, 1, 1))
    return b.conv(x, cout, (3, 1, 1), (stride, 1, 1), pad=(1, 0, 0), gain=gain)


def r2plus1d(opset=DEFAULT_OPSET, seed=0):
    """torchvision R(2+1)D-18 layout, one block per stage, input (N, 3, 8, 32, 32)."""
    b = GraphBuilder("r2plus1d", opset, seed)
    x = b.input((3, 8, 32, 32))
    x = _conv_bn_relu(b, x, 24, (1, 7, 7), (1, 2, 2), pad=(0, 3, 3))
    x = _conv_bn_relu(b, x, 16, (3, 1, 1), pad=(1, 0, 0))
    for stage, planes in enumerate((16, 32, 64, 128)):
        x = _basic_block(b, x, planes, 2 if stage else 1, _conv2plus1d)
    return b.build({"output": _classifier(b, x)})


def _p3d_block(b, x, planes, stride, kind):
    """P3D bottleneck: spatial (1,3,3) and temporal (3,1,1) convs as A, B or C."""
    out = _conv_bn_relu(b, x, planes, 1, stride, pad=0)

    def spatial(y):
        return _conv_bn_relu(b, y, planes, (1, 3, 3), pad=(0, 1, 1))

    def temporal(y):
        return _conv_bn_relu(b, y, planes, (3, 1, 1), pad=(1, 0, 0))

    if kind == "A":
        out = temporal(spatial(out))
    elif kind == "B":
        out = b.add(spatial(out), temporal(out))
    else:
        s = spatial(out)
        out = b.add(s, temporal(s))
    out = b.bn(b.conv(out, planes * 4, 1, pad=0, gain=RESIDUAL_GAIN))
    return b.relu(b.add(out, _shortcut(b, x, planes * 4, stride)))


def p3d(opset=DEFAULT_OPSET, seed=0):
    """Pseudo-3D ResNet cycling P3D-A/B/C bottlenecks, input (N, 3, 8, 32, 32)."""
    b = GraphBuilder("p3d", opset, seed)
    x = _conv_bn_relu(b, b.input((3, 8, 32, 32)), 32, (1, 7, 7), (1, 2, 2), pad=(0, 3, 3))
    x = b.maxpool(x, (1, 3, 3), (1, 2, 2), pad=(0, 1, 1))
    for planes, stride, kind in [(16, 1, "A"), (16, 1, "B"), (16, 1, "C"),
                                 (32, 2, "A"), (32, 1, "B"), (32, 1, "C")]:
        x = _p3d_block(b, x, planes, stride, kind)
    return b.build({"output": _classifier(b, x)})


def _csn_block(b, x, planes, stride, interaction_preserved):
    """CSN bottleneck with a depthwise 3x3x3 conv (ip: a 1x1x1 conv right before it)."""
    out = _conv_bn_relu(b, x, planes, 1, pad=0)
    if interaction_preserved:
        out = b.conv(out, planes, 1, pad=0)
    out = _conv_bn_relu(b, out, planes, 3, stride, groups=planes)
    out = b.bn(b.conv(out, planes * 4, 1, pad=0, gain=RESIDUAL_GAIN))
    return b.relu(b.add(out, _shortcut(b, x, planes * 4, stride)))


def csn(opset=DEFAULT_OPSET, seed=0):
    """Channel-separated network (ir-CSN and ip-CSN blocks), input (N, 3, 8, 32, 32)."""
    b = GraphBuilder("csn", opset, seed)
    x = _conv_bn_relu(b, b.input((3, 8, 32, 32)), 32, (3, 7, 7), (1, 2, 2), pad=(1, 3, 3))
    for planes, stride, ip in [(16, 1, False), (16, 1, True), (32, 2, False), (32, 1, True)]:
        x = _csn_block(b, x, planes, stride, ip)
    return b.build({"output": _classifier(b, x)})


# Small models that exercise particular ops.

def _group_norm(b, x, groups, eps=1e-5):
    """GroupNormalization (opset 21+), else the exporter's InstanceNorm decomposition."""
    c = b.channels(x)
    gamma = b.rng.uniform(0.5, 1.5, c)
    beta = b.rng.normal(0.0, 0.1, c)
    if b.opset >= 21:
        y = b.node("GroupNormalization", [x, b.weight(gamma, "gamma"), b.weight(beta, "beta")],
                   num_groups=groups, epsilon=eps)
        b.declare_like(y, x)  # onnx 1.23 has no shape inference for it (onnx/onnx#7157)
        return y
    grouped = b.reshape(x, [0, groups, -1], channels=groups)
    ones, zeros = b.weight(np.ones(groups), "ones"), b.weight(np.zeros(groups), "zeros")
    normed = b.node("InstanceNormalization", [grouped, ones, zeros], epsilon=eps)
    y = b.node("Reshape", [normed, b.node("Shape", [x])], channels=c)
    y = b.mul(y, b.weight(gamma.reshape(c, 1, 1), "gamma"))
    return b.add(y, b.weight(beta.reshape(c, 1, 1), "beta"))


def norms(opset=DEFAULT_OPSET, seed=0):
    """InstanceNormalization and GroupNorm in a small residual net, 32x32 input."""
    b = GraphBuilder("norms", opset, seed)
    x = b.conv(b.input((3, 32, 32)), 32, 3)
    c = b.channels(x)
    x = b.relu(b.node("InstanceNormalization",
                      [x, b.weight(b.rng.uniform(0.5, 1.5, c), "gamma"),
                       b.weight(b.rng.normal(0.0, 0.1, c), "beta")], epsilon=1e-5))
    x = b.relu(_group_norm(b, b.conv(x, 64, 3, 2), 8))
    y = b.relu(_group_norm(b, b.conv(x, 64, 3), 8))
    y = _group_norm(b, b.conv(y, 64, 3, gain=RESIDUAL_GAIN), 16)
    return b.build({"output": _classifier(b, b.relu(b.add(x, y)))})


def _resize(b, x, mode, **attrs):
    scales = b.weight(np.array([1.0, 1.0, 2.0, 2.0]), "scales")
    return b.node("Resize", [x, "", scales], mode=mode, **attrs)


def resize(opset=DEFAULT_OPSET, seed=0):
    """FPN-like segmentation net: nearest and bilinear 2x Resize; outputs "output", "aux"."""
    b = GraphBuilder("resize", opset, seed)
    c1 = _conv_bn_relu(b, b.input((3, 32, 32)), 16)
    c2 = _conv_bn_relu(b, c1, 32, 3, 2)
    c3 = _conv_bn_relu(b, c2, 64, 3, 2)
    up = _resize(b, b.conv(c3, 32, 1, pad=0), "nearest",
                 coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    p2 = b.add(b.conv(c2, 32, 1, pad=0), up)
    up = _resize(b, p2, "linear", coordinate_transformation_mode="half_pixel")
    p1 = _conv_bn_relu(b, b.concat([c1, up]), 32)
    seg = b.conv(p1, 5, 1, pad=0, bias=True)
    return b.build({"output": seg, "aux": _classifier(b, c3)})


def pooling(opset=DEFAULT_OPSET, seed=0):
    """Pad (reflect, edge, constant), asymmetric conv pads, MaxPool and AveragePool
    where ceil_mode changes the output size, AveragePool count_include_pad."""
    b = GraphBuilder("pooling", opset, seed)
    x = b.input((3, 32, 32))
    x = b.relu(b.bn(b.conv(x, 16, 3, 2, pad=(0, 0, 1, 1))))              # 16x16, TF "SAME"
    x = b.node("Pad", [x, b.ints([0, 0, 1, 1, 0, 0, 1, 1], "pads")], mode="reflect")
    x = _conv_bn_relu(b, x, 32, 3, pad=0)                                # 16x16
    x = b.maxpool(x, 3, 2, ceil_mode=1)                                  # 8x8 (floor: 7x7)
    x = b.node("Pad", [x, b.ints([0, 0, 0, 1, 0, 0, 1, 0], "pads")], mode="edge")
    x = _conv_bn_relu(b, x, 32, 3)                                       # 9x9
    x = b.avgpool(x, 3, 2, pad=1, count_include_pad=1)                   # 5x5
    pad_value = b.weight(np.float32(0.5), "c")
    x = b.node("Pad", [x, b.ints([0, 0, 1, 0, 0, 0, 0, 1], "pads"), pad_value])  # 6x6
    x = b.avgpool(x, 3, 2, ceil_mode=1)                                  # 3x3 (floor: 2x2)
    x = b.maxpool(_conv_bn_relu(b, x, 64, 3), 2, 1)                      # 2x2
    return b.build({"output": _classifier(b, x)})


def flatten_chain(opset=DEFAULT_OPSET, seed=0):
    """MNIST-style net flattened with x.view(x.size(0), -1) as PyTorch exports it."""
    b = GraphBuilder("flatten_chain", opset, seed)
    x = b.maxpool(_conv_bn_relu(b, b.input((1, 28, 28)), 16), 2, 2)
    x = b.maxpool(_conv_bn_relu(b, x, 32), 2, 2)                             # 32x7x7
    batch = b.node("Gather", [b.node("Shape", [x]), b.constant(np.int64(0))], axis=0)
    shape = b.node("Concat", [b.node("Unsqueeze", [batch, b.constant(np.array([0], np.int64))]),
                              b.constant(np.array([-1], np.int64))], axis=0)
    x = b.node("Reshape", [x, shape], channels=32 * 7 * 7)
    x = b.relu(b.gemm(x, 64, gain=math.sqrt(2.0)))
    return b.build({"output": b.gemm(x, NUM_CLASSES)})


def _dilated_conv3(b, x, cout, stride=1, gain=1.0):
    return b.conv(x, cout, 3, stride, dilation=2, gain=gain)


def conv1d(opset=DEFAULT_OPSET, seed=0):
    """1-D residual net (N, C, L): strided stem, basic blocks, a dilated block."""
    b = GraphBuilder("conv1d", opset, seed)
    x = _conv_bn_relu(b, b.input((4, 128)), 32, 7, 2)
    x = b.maxpool(x, 3, 2, pad=1)
    x = _basic_block(b, x, 32, 1)
    x = _basic_block(b, x, 64, 2)
    x = _basic_block(b, x, 64, 1, _dilated_conv3)
    return b.build({"output": _classifier(b, x)})


ZOO = {fn.__name__: fn for fn in (
    resnet18, resnet50, preact_resnet, resnext, wide_resnet, se_resnet, sk_block,
    densenet_block, repvgg_block, rm_block, convnext_block, r2plus1d, p3d, csn, norms, resize,
    pooling, flatten_chain, conv1d)}


def build_model(name, image_size=None, opset=DEFAULT_OPSET, seed=0):
    """A zoo model by name.

    With ``image_size``, "resnet18" and "resnet50" are the full torchvision
    networks (width 64, 1000 classes) at that input size, as used by
    `pyengine demo` and the benchmarks; otherwise the small test variants.
    """
    if image_size is not None and name in ("resnet18", "resnet50"):
        block, layers = (_basic_block, [2, 2, 2, 2]) if name == "resnet18" else (_bottleneck, [3, 4, 6, 3])
        return _resnet(name, block, layers, 64, opset, seed, image_size=image_size, num_classes=1000)
    if name not in ZOO:
        from .errors import InvalidArgumentError

        raise InvalidArgumentError(f"unknown zoo model {name!r}; choose from {sorted(ZOO)}")
    return ZOO[name](opset=opset, seed=seed)


def make_input(model, batch, seed=0):
    """Returns {input name: float32 standard-normal array} with the given batch size.

    Args:
        model: an ``onnx.ModelProto`` whose inputs have static shapes except for
            symbolic (dim_param) axes, which take the value ``batch``.
        batch: the batch size.
        seed: the ``np.random.default_rng`` seed.
    """
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        shape = [d.dim_value if d.HasField("dim_value") else batch for d in dims]
        feeds[value.name] = rng.standard_normal(shape, dtype=np.float32)
    return feeds
