#!/usr/bin/env python3
"""Micro-benchmark: ResNet-50's convolutions in pyengine vs onnxruntime.

    PYTHONPATH=. python3 tools/bench_conv.py --layers --batch 1 8
    PYTHONPATH=. python3 tools/bench_conv.py --chain --batch 1
    PYTHONPATH=. python3 tools/bench_conv.py --int8 --batch 1 8 --threads 1
    PYTHONPATH=. python3 tools/bench_conv.py --int8-network --batch 1 8 --threads 1

--layers  every distinct conv shape of ResNet-50 (v1.5, stride in the 3x3) as
          a single-conv model (Conv with bias, + Relu fused into FusedConv for
          pyengine where the network has one), followed by a GlobalAveragePool
          in both runtimes so the conv output is an intermediate tensor; the
          table gives per-shape times and the total weighted by how often each
          shape occurs.
--other   depthwise 7x7 (ConvNeXt), grouped 3x3 with 32 groups (ResNeXt) and
          3-D depthwise 3x3x3 (CSN) shapes, single Conv nodes.
--grouped ResNeXt-50 32x4d's grouped 3x3 convs (4..32 channels per group)
          and other small-group shapes, single Conv nodes; prints the
          kernel each ran (conv_grouped_f32_avx2 or the im2col GEMM).
--int8    every distinct conv shape of ResNet-50 quantized (pyengine's INT8
          against onnxruntime's u8s8 QDQ model, tools/bench.py's
          ort_u8s8_model), each conv fed by a 1x1 conv from a 3-channel input
          and read by a 1x1 conv to 8 channels, so that its input and output
          are int8 tensors as in a network; the conv alone is timed, by each
          runtime's own per-node profiler (onnxruntime's NHWC transposes at
          the model's edges are not counted).
--int8-network
          the whole ResNet-50 (zoo, 224x224) in INT8, each runtime's own
          per-node profiler over one model: pyengine's layers against
          onnxruntime's nodes on its u8s8 QDQ model (same calibration
          batches), summed per conv shape class (kernel, stride, channels),
          with the classes whose conv carries the residual add marked "+add"
          (pyengine fuses it; onnxruntime's QLinearAdd nodes get their own
          row). Unlike --int8, the convs read and write the tensors of the
          real network, in its order.
--chain   the whole conv body (stem conv, then layer1..layer4 bottlenecks with
          residual adds) as one model: pyengine runs FusedConv nodes (what the
          optimizer produces: bias, residual and Relu in the GEMM epilogue),
          onnxruntime runs the equivalent Conv/Add/Relu graph with all its
          graph optimizations. The max pool after the stem is replaced by a
          stride-4 stem so that no other op family is needed.

With --cpu-time (and --threads 1) the process CPU time is measured instead
of the wall time: on a machine shared with other jobs that still compares
the kernels' efficiency. Times are medians over --runs runs after warm-up, both engines on the same
number of threads (default 2). Each engine is created, timed and released
before the next, so idle spinning threads of one do not slow the other.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import numpy as np
from onnx import TensorProto, helper, numpy_helper

# (name, input HxW, cin, cout, kernel, stride, count in ResNet-50, relu after)
RESNET50_CONVS = [
    ("stem 7x7/2", 224, 3, 64, 7, 2, 1, True),
    ("l1 1x1 64->64", 56, 64, 64, 1, 1, 1, True),
    ("l1 3x3 64", 56, 64, 64, 3, 1, 3, True),
    ("l1 1x1 64->256", 56, 64, 256, 1, 1, 4, False),
    ("l1 1x1 256->64", 56, 256, 64, 1, 1, 2, True),
    ("l2 1x1 256->128", 56, 256, 128, 1, 1, 1, True),
    ("l2 3x3 128/2", 56, 128, 128, 3, 2, 1, True),
    ("l2 1x1 128->512", 28, 128, 512, 1, 1, 4, False),
    ("l2 ds 1x1/2 256->512", 56, 256, 512, 1, 2, 1, False),
    ("l2 1x1 512->128", 28, 512, 128, 1, 1, 3, True),
    ("l2 3x3 128", 28, 128, 128, 3, 1, 3, True),
    ("l3 1x1 512->256", 28, 512, 256, 1, 1, 1, True),
    ("l3 3x3 256/2", 28, 256, 256, 3, 2, 1, True),
    ("l3 1x1 256->1024", 14, 256, 1024, 1, 1, 6, False),
    ("l3 ds 1x1/2 512->1024", 28, 512, 1024, 1, 2, 1, False),
    ("l3 1x1 1024->256", 14, 1024, 256, 1, 1, 5, True),
    ("l3 3x3 256", 14, 256, 256, 3, 1, 5, True),
    ("l4 1x1 1024->512", 14, 1024, 512, 1, 1, 1, True),
    ("l4 3x3 512/2", 14, 512, 512, 3, 2, 1, True),
    ("l4 1x1 512->2048", 7, 512, 2048, 1, 1, 3, False),
    ("l4 ds 1x1/2 1024->2048", 14, 1024, 2048, 1, 2, 1, False),
    ("l4 1x1 2048->512", 7, 2048, 512, 1, 1, 2, True),
    ("l4 3x3 512", 7, 512, 512, 3, 1, 2, True),
]
RESNET50_CONV_COUNT = sum(layer[6] for layer in RESNET50_CONVS)  # 53 convs in the network


# Other families: (name, input spatial dims, cin, cout, kernel dims, group[,
# stride]); pads k // 2.
OTHER_CONVS = [
    ("convnext dw7x7 96@56", (56, 56), 96, 96, (7, 7), 96),
    ("convnext dw7x7 192@28", (28, 28), 192, 192, (7, 7), 192),
    ("convnext dw7x7 384@14", (14, 14), 384, 384, (7, 7), 384),
    ("convnext dw7x7 768@7", (7, 7), 768, 768, (7, 7), 768),
    ("resnext g32 3x3 128@56", (56, 56), 128, 128, (3, 3), 32),
    ("resnext g32 3x3 256@28", (28, 28), 256, 256, (3, 3), 32),
    ("resnext g32 3x3 512@14", (14, 14), 512, 512, (3, 3), 32),
    ("resnext g32 3x3 1024@7", (7, 7), 1024, 1024, (3, 3), 32),
    ("mbv2 dw3x3 32@112", (112, 112), 32, 32, (3, 3), 32),
    ("mbv2 dw3x3/2 96@112", (112, 112), 96, 96, (3, 3), 96, 2),
    ("mbv2 dw3x3 144@56", (56, 56), 144, 144, (3, 3), 144),
    ("mbv2 dw3x3/2 144@56", (56, 56), 144, 144, (3, 3), 144, 2),
    ("mbv2 dw3x3 192@28", (28, 28), 192, 192, (3, 3), 192),
    ("mbv2 dw3x3 384@14", (14, 14), 384, 384, (3, 3), 384),
    ("mbv2 dw3x3/2 576@14", (14, 14), 576, 576, (3, 3), 576, 2),
    ("mbv2 dw3x3 960@7", (7, 7), 960, 960, (3, 3), 960),
    ("effnet dw5x5 240@28", (28, 28), 240, 240, (5, 5), 240),
    ("effnet dw5x5/2 672@14", (14, 14), 672, 672, (5, 5), 672, 2),
    ("csn dw3x3x3 64@8x56", (8, 56, 56), 64, 64, (3, 3, 3), 64),
    ("csn dw3x3x3 256@4x28", (4, 28, 28), 256, 256, (3, 3, 3), 256),
    ("3d 1x1x1 64->256 @8x56", (8, 56, 56), 64, 256, (1, 1, 1), 1),
]


# ResNeXt-50 32x4d's grouped 3x3 convs (torchvision layout: stride in the
# 3x3) and a few other small-group shapes: (name, input HxW, channels,
# kernel, stride, group, count in ResNeXt-50 (0: not in it)).
GROUPED_CONVS = [
    ("l1 g32 3x3 128@56 cpg4", 56, 128, 3, 1, 32, 3),
    ("l2 g32 3x3/2 256@56 cpg8", 56, 256, 3, 2, 32, 1),
    ("l2 g32 3x3 256@28 cpg8", 28, 256, 3, 1, 32, 3),
    ("l3 g32 3x3/2 512@28 cpg16", 28, 512, 3, 2, 32, 1),
    ("l3 g32 3x3 512@14 cpg16", 14, 512, 3, 1, 32, 5),
    ("l4 g32 3x3/2 1024@14 cpg32", 14, 1024, 3, 2, 32, 1),
    ("l4 g32 3x3 1024@7 cpg32", 7, 1024, 3, 1, 32, 2),
    ("g64 3x3 128@28 cpg2", 28, 128, 3, 1, 64, 0),
    ("regnety800 g4 3x3/2 64@112 cpg16", 112, 64, 3, 2, 4, 0),
    ("regnety800 g9 3x3 144@28 cpg16", 28, 144, 3, 1, 9, 0),
    ("regnety800 g20 3x3/2 320@28 cpg16", 28, 320, 3, 2, 20, 0),
    ("regnety800 g49 3x3 784@7 cpg16", 7, 784, 3, 1, 49, 0),
    ("g8 3x3 512@14 cpg64", 14, 512, 3, 1, 8, 0),
    ("g32 1x1 128@56 cpg4", 56, 128, 1, 1, 32, 0),
    ("g16 1x1 256@28 cpg16", 28, 256, 1, 1, 16, 0),
    ("g8 1x1 256@28 cpg32", 28, 256, 1, 1, 8, 0),
]


def grouped_models(layer, batch, rng):
    name, hw, c, k, s, group, _ = layer
    w = rng.standard_normal((c, c // group, k, k)).astype(np.float32) * np.float32(0.1)
    b = rng.standard_normal(c).astype(np.float32) * np.float32(0.1)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, c, hw, hw])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[k, k], pads=[k // 2] * 4, strides=[s, s],
                            group=group)
    model = _model([node], [x], [y], inits, False)
    feeds = {"x": rng.standard_normal((batch, c, hw, hw)).astype(np.float32)}
    return model, model, feeds


def other_models(layer, batch, rng):
    name, dims, cin, cout, ks, group = layer[:6]
    stride = layer[6] if len(layer) > 6 else 1
    w = rng.standard_normal((cout, cin // group) + tuple(ks)).astype(np.float32) * np.float32(0.1)
    b = rng.standard_normal(cout).astype(np.float32) * np.float32(0.1)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, cin, *dims])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    attrs = dict(kernel_shape=list(ks), pads=[k // 2 for k in ks] * 2, group=group, strides=[stride] * len(ks))
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)
    model = _model([node], [x], [y], inits, False)
    feeds = {"x": rng.standard_normal((batch, cin, *dims)).astype(np.float32)}
    return model, model, feeds


def _weights(rng, cout, cin, k):
    w = rng.standard_normal((cout, cin, k, k)).astype(np.float32) * np.float32(np.sqrt(2.0 / (cin * k * k)))
    b = rng.standard_normal(cout).astype(np.float32) * np.float32(0.1)
    return w, b


def _out_hw(hw, k, s):
    """Output height (= width) of a k x k conv, stride s, pads k // 2."""
    return (hw + 2 * (k // 2) - k) // s + 1


def _conv_attrs(k, s):
    return dict(kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4)


def _model(nodes, inputs, outputs, inits, pyengine_domain):
    opsets = [helper.make_opsetid("", 17)]
    if pyengine_domain:
        opsets.append(helper.make_opsetid("pyengine", 1))
    m = helper.make_model(helper.make_graph(nodes, "bench", inputs, outputs, initializer=inits),
                          opset_imports=opsets)
    m.ir_version = 8
    return m


def layer_models(layer, batch, rng):
    name, hw, cin, cout, k, s, _, relu = layer
    w, b = _weights(rng, cout, cin, k)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, cin, hw, hw])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    attrs = _conv_attrs(k, s)
    if relu:
        ort_nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], **attrs), helper.make_node("Relu", ["c"], ["r"])]
    else:
        ort_nodes = [helper.make_node("Conv", ["x", "w", "b"], ["r"], **attrs)]
    pe_nodes = [helper.make_node("FusedConv", ["x", "w", "b"], ["r"], domain="pyengine",
                                 activation="Relu" if relu else "", **attrs)]
    # A global average pool keeps the conv output an intermediate tensor (in
    # the arena, as in a network) instead of a fresh graph output per run,
    # whose page faults would dominate the large early layers at batch 8.
    gap = helper.make_node("GlobalAveragePool", ["r"], ["y"])
    feeds = {"x": rng.standard_normal((batch, cin, hw, hw)).astype(np.float32)}
    return _model(ort_nodes + [gap], [x], [y], inits, False), _model(pe_nodes + [gap], [x], [y], inits, True), feeds


def int8_layer_model(layer, batch, rng):
    """The float model of one --int8 case: input (3 channels) -> 1x1 conv to
    cin + Relu -> the measured conv, node "conv" (+ Relu) -> 1x1 conv to 8
    channels -> GlobalAveragePool."""
    _, hw, cin, cout, k, s, _, relu = layer
    w0, _ = _weights(rng, cin, 3, 1)
    w, b = _weights(rng, cout, cin, k)
    wt, _ = _weights(rng, 8, cout, 1)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w0, "w0"), (w, "w"), (b, "b"), (wt, "wt"))]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["f"], name="feed"),
             helper.make_node("Relu", ["f"], ["fr"], name="feed_relu"),
             helper.make_node("Conv", ["fr", "w", "b"], ["c"], name="conv", **_conv_attrs(k, s))]
    last = "c"
    if relu:
        nodes.append(helper.make_node("Relu", ["c"], ["cr"], name="conv_relu"))
        last = "cr"
    nodes += [helper.make_node("Conv", [last, "wt"], ["t"], name="tail"),
              helper.make_node("GlobalAveragePool", ["t"], ["y"], name="gap")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, hw, hw])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    calib = [rng.standard_normal((batch, 3, hw, hw)).astype(np.float32) for _ in range(2)]
    return _model(nodes, [x], [y], inits, False), calib


def ort_u8s8_node_samples(path, in_name, calib, feeds, threads, runs, tmp):
    """onnxruntime's per-node profile (pyengine.profile.ort_node_samples) of
    its u8s8 QDQ model of the float model at `path`, calibrated on `calib`,
    on `threads` intra-op threads."""
    import os

    import onnxruntime as ort
    from pyengine.profile import ort_node_samples

    from bench import ort_u8s8_model

    qpath = ort_u8s8_model(path, os.path.join(tmp, "u8s8.onnx"), in_name, calib)

    def session(so):
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        return ort.InferenceSession(qpath, so, providers=["CPUExecutionProvider"])

    return ort_node_samples(session, feeds, runs)


def int8_conv_ms(model, calib, threads, runs, tmp):
    """(pyengine's, onnxruntime's) median ms of the node "conv" of an
    int8_layer_model, each from its runtime's per-node profiler, and
    pyengine's kernel name."""
    import os

    import onnx
    import pyengine

    feeds = {"x": calib[0]}
    engine = pyengine.build(model, precision="int8", calibration_data=calib, num_threads=threads, report=False,
                            progress=False)
    engine.run(feeds)
    samples, kernel = [], ""
    for _ in range(runs):
        (row,) = [r for r in engine.profile(feeds, runs=1) if "conv" in (r.get("origin") or [r["name"]])]
        samples.append(row["ms"])
        kernel = row.get("kernel", "")
    del engine
    path = os.path.join(tmp, "float.onnx")
    onnx.save(model, path)
    nodes = ort_u8s8_node_samples(path, "x", calib, feeds, threads, runs, tmp)
    gc.collect()
    # onnxruntime renames the fused QLinearConv nodes: the measured conv is
    # the second conv node of a run (feed, conv, tail).
    convs = [times for op, times in nodes.values() if "Conv" in op]
    if len(convs) != 3:
        raise RuntimeError(f"expected 3 conv nodes in onnxruntime's profile, found {list(nodes)}")
    return statistics.median(samples), statistics.median(convs[1]), kernel


def run_int8_layers(batches, threads, runs):
    import tempfile

    rng = np.random.default_rng(0)
    for batch in batches:
        print(f"\nResNet-50 conv shapes in INT8, batch {batch}, {threads} threads (median ms of the conv node, "
              f"each runtime's profiler; onnxruntime: u8s8 QDQ)")
        print(f"{'layer':26s} {'count':>5s} {'GMAC':>7s} {'pyengine':>9s} {'ORT':>9s} {'ratio':>6s} "
              f"{'pe GMAC/s':>9s}  kernel")
        tot_pe = tot_ort = tot_mac = 0.0
        for layer in RESNET50_CONVS:
            name, hw, cin, cout, k, s, count, _ = layer
            model, calib = int8_layer_model(layer, batch, rng)
            with tempfile.TemporaryDirectory() as tmp:
                pe_ms, ort_ms, kernel = int8_conv_ms(model, calib, threads, max(5, runs // (4 if batch > 1 else 1)),
                                                     tmp)
            oh = _out_hw(hw, k, s)
            gmac = batch * cout * oh * oh * cin * k * k / 1e9
            tot_pe += pe_ms * count
            tot_ort += ort_ms * count
            tot_mac += gmac * count
            print(f"{name:26s} {count:5d} {gmac:7.3f} {pe_ms:9.3f} {ort_ms:9.3f} {pe_ms / ort_ms:6.2f} "
                  f"{gmac / pe_ms * 1e3:9.1f}  {kernel}", flush=True)
        print(f"{'total (x count)':26s} {RESNET50_CONV_COUNT:5d} {tot_mac:7.3f} {tot_pe:9.2f} {tot_ort:9.2f} {tot_pe / tot_ort:6.2f} "
              f"{tot_mac / tot_pe * 1e3:9.1f}")


def conv_classes(model) -> dict:
    """{ONNX Conv node name: "KxK/S cin->cout"} of a float model."""
    inits = {t.name: t.dims for t in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type != "Conv" or n.input[1] not in inits:
            continue
        w = inits[n.input[1]]
        strides = next((list(a.ints) for a in n.attribute if a.name == "strides"), [1])
        out[n.name] = f"{w[2]}x{w[3]}/{strides[0]} {w[1]}->{w[0]}"
    return out


def int8_network_rows(batch, threads, runs, tmp, model_name="resnet50", size=224):
    """[(class, pyengine layers, pyengine ms, onnxruntime ms)] of a zoo model
    (ResNet-50 at 224x224 for --int8-network) in INT8, the largest first."""
    import os

    import onnx
    import pyengine
    from pyengine import zoo

    model = zoo.build_model(model_name, image_size=size)
    path = os.path.join(tmp, f"{model_name}.onnx")
    onnx.save(model, path)
    rng = np.random.default_rng(0)
    calib = [rng.standard_normal((8, 3, size, size)).astype(np.float32) for _ in range(2)]
    feeds = {"input": rng.standard_normal((batch, 3, size, size)).astype(np.float32)}
    classes = conv_classes(model)
    engine = pyengine.build(path, precision="int8", calibration_data=calib, num_threads=threads, report=False,
                            progress=False)
    engine.run(feeds)
    pe, ort_ms, count, key_of = {}, {}, {}, {}
    for layer in engine.profile(feeds, runs=runs):
        origin = layer.get("origin") or [layer["name"]]
        conv = [o for o in origin if o in classes]
        key = classes[conv[0]] + (" +add" if any(o.startswith("add") for o in origin) else "") if conv else layer["op"]
        key_of.update((c, key) for c in conv)
        pe[key] = pe.get(key, 0.0) + layer["ms"]
        count[key] = count.get(key, 0) + 1
    del engine
    gc.collect()
    same_op = {"NhwcMaxPool": "MaxPool", "QLinearGlobalAveragePool": "GlobalAveragePool"}
    for name, (op, times) in ort_u8s8_node_samples(path, "input", calib, feeds, threads, runs, tmp).items():
        # onnxruntime's QLinearConv keeps the float conv's name as a prefix:
        # it lands in the class pyengine's layer of that conv has.
        conv = max((c for c in classes if name == c or name.startswith(c + "_")), key=len, default=None)
        key = key_of.get(conv, classes[conv]) if conv else same_op.get(op, op)
        ort_ms[key] = ort_ms.get(key, 0.0) + statistics.median(times)
    keys = sorted(set(pe) | set(ort_ms), key=lambda k: -max(pe.get(k, 0.0), ort_ms.get(k, 0.0)))
    return [(k, count.get(k, 0), pe.get(k, 0.0), ort_ms.get(k, 0.0)) for k in keys]


def run_int8_network(batches, threads, runs):
    import tempfile

    for batch in batches:
        with tempfile.TemporaryDirectory() as tmp:
            rows = int8_network_rows(batch, threads, runs, tmp)
        print(f"\nResNet-50 INT8, batch {batch}, {threads} threads: per conv class, each runtime's profiler "
              f"(ms per run, median of {runs}; onnxruntime: u8s8 QDQ)")
        print(f"{'class':24s} {'layers':>6s} {'pyengine':>9s} {'ORT':>9s} {'ratio':>6s}")
        for key, n, a, b in rows:
            ratio = f"{a / b:6.2f}" if a and b else "     -"
            print(f"{key:24s} {n:6d} {a:9.3f} {b:9.3f} {ratio}")
        tot_pe, tot_ort = sum(r[2] for r in rows), sum(r[3] for r in rows)
        print(f"{'total':24s} {'':6s} {tot_pe:9.2f} {tot_ort:9.2f} {tot_pe / tot_ort:6.2f}")
    print("(+add: the convs that carry a residual add, which pyengine fuses into them; onnxruntime runs its adds "
          "as the QLinearAdd row, so compare a +add row with its onnxruntime conv time plus a share of that row)")


def chain_models(batch, rng):
    """The conv body of ResNet-50 with residual adds (see module doc)."""
    ort_nodes, pe_nodes, inits = [], [], []
    counter = [0]

    def conv(x, cin, cout, k, s, relu, z=None):
        i = counter[0]
        counter[0] += 1
        w, b = _weights(rng, cout, cin, k)
        inits.extend([numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")])
        attrs = _conv_attrs(k, s)
        out = f"y{i}"
        c = f"c{i}"
        ort_nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [c], **attrs))
        last = c
        if z is not None:
            ort_nodes.append(helper.make_node("Add", [last, z], [f"a{i}"]))
            last = f"a{i}"
        if relu:
            ort_nodes.append(helper.make_node("Relu", [last], [f"r{i}"]))
            last = f"r{i}"
        ort_nodes.append(helper.make_node("Identity", [last], [out]))
        ins = [x, f"w{i}", f"b{i}"] + ([z] if z is not None else [])
        pe_nodes.append(helper.make_node("FusedConv", ins, [out], domain="pyengine",
                                         activation="Relu" if relu else "", **attrs))
        return out

    # Stem with stride 4 stands in for conv 7x7/2 + max pool 3x3/2.
    x = conv("x", 3, 64, 7, 4, True)
    cin = 64
    for stage, (width, blocks, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]):
        for blk in range(blocks):
            s = stride if blk == 0 else 1
            a = conv(x, cin, width, 1, 1, True)
            bb = conv(a, width, width, 3, s, True)
            short = conv(x, cin, width * 4, 1, s, False) if blk == 0 else x
            x = conv(bb, width, width * 4, 1, 1, True, z=short)
            cin = width * 4
    xin = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 224, 224])
    yout = helper.make_tensor_value_info(x, TensorProto.FLOAT, None)
    # ORT: drop the Identity nodes that only name outputs like pyengine's.
    ort_model = _model(ort_nodes, [xin], [yout], inits, False)
    pe_model = _model(pe_nodes, [xin], [yout], inits, True)
    feeds = {"x": rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)}
    return ort_model, pe_model, feeds


CLOCK = time.perf_counter
STAT = "median"


def _time(fn, runs, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = CLOCK()
        fn()
        times.append((CLOCK() - t0) * 1e3)
    return (min(times) if STAT == "min" else statistics.median(times)), min(times)


def time_ort(model, feeds, threads, runs, warmup):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    res = _time(lambda: sess.run(None, feeds), runs, warmup)
    out = sess.run(None, feeds)[0]
    del sess
    gc.collect()
    return res, out


def time_pyengine(model, feeds, threads, runs, warmup):
    import pyengine

    engine = pyengine.build(model, optimize=False, num_threads=threads)
    res = _time(lambda: engine.run(feeds), runs, warmup)
    out = next(iter(engine.run(feeds).values()))
    del engine
    gc.collect()
    return res, out


def run_layers(batches, threads, runs, verbose=True):
    rng = np.random.default_rng(0)
    for batch in batches:
        print(f"\nResNet-50 conv shapes, batch {batch}, {threads} threads ({STAT} ms per call, {CLOCK.__name__})")
        print(f"{'layer':26s} {'count':>5s} {'GFLOP':>7s} {'pyengine':>9s} {'ORT':>9s} {'ratio':>6s} {'pe GF/s':>8s}")
        tot_pe = tot_ort = tot_flop = 0.0
        for layer in RESNET50_CONVS:
            name, hw, cin, cout, k, s, count, _ = layer
            ort_model, pe_model, feeds = layer_models(layer, batch, rng)
            r = max(3, runs // (4 if batch > 1 else 1))
            (ort_ms, _), ort_out = time_ort(ort_model, feeds, threads, r, 2)
            (pe_ms, _), pe_out = time_pyengine(pe_model, feeds, threads, r, 2)
            err = float(np.max(np.abs(pe_out - ort_out)))
            oh = _out_hw(hw, k, s)
            gflop = 2.0 * batch * cout * oh * oh * cin * k * k / 1e9
            tot_pe += pe_ms * count
            tot_ort += ort_ms * count
            tot_flop += gflop * count
            flag = "" if err < 1e-3 else f"  MAX ERR {err:.2e}"
            print(f"{name:26s} {count:5d} {gflop:7.3f} {pe_ms:9.3f} {ort_ms:9.3f} {pe_ms / ort_ms:6.2f} "
                  f"{gflop / pe_ms * 1e3:8.1f}{flag}")
        print(f"{'total (x count)':26s} {RESNET50_CONV_COUNT:5d} {tot_flop:7.3f} {tot_pe:9.2f} {tot_ort:9.2f} {tot_pe / tot_ort:6.2f} "
              f"{tot_flop / tot_pe * 1e3:8.1f}")


def run_other(batches, threads, runs):
    rng = np.random.default_rng(0)
    for batch in batches:
        print(f"\nDepthwise / grouped / 3-D convs, batch {batch}, {threads} threads ({STAT} ms per call)")
        print(f"{'layer':26s} {'GFLOP':>7s} {'pyengine':>9s} {'ORT':>9s} {'ratio':>6s}")
        for layer in OTHER_CONVS:
            ort_model, pe_model, feeds = other_models(layer, batch, rng)
            r = max(3, runs // (4 if batch > 1 else 1))
            (ort_ms, _), ort_out = time_ort(ort_model, feeds, threads, r, 2)
            (pe_ms, _), pe_out = time_pyengine(pe_model, feeds, threads, r, 2)
            err = float(np.max(np.abs(pe_out - ort_out)))
            _, dims, cin, cout, ks, group = layer[:6]
            outputs = np.prod(ort_out.shape[2:])
            gflop = 2.0 * batch * cout * outputs * (cin // group) * np.prod(ks) / 1e9
            flag = "" if err < 1e-3 else f"  MAX ERR {err:.2e}"
            print(f"{layer[0]:26s} {gflop:7.3f} {pe_ms:9.3f} {ort_ms:9.3f} {pe_ms / ort_ms:6.2f}{flag}")


def run_grouped(batches, threads, runs):
    import pyengine

    rng = np.random.default_rng(0)
    for batch in batches:
        print(f"\nGrouped convs (ResNeXt-50 32x4d and others), batch {batch}, {threads} threads "
              f"({STAT} ms per call, pyengine from {pyengine.__file__})")
        print(f"{'layer':28s} {'count':>5s} {'GFLOP':>7s} {'pyengine':>9s} {'ORT':>9s} {'ratio':>6s}  kernel")
        tot_pe = tot_ort = 0.0
        for layer in GROUPED_CONVS:
            ort_model, pe_model, feeds = grouped_models(layer, batch, rng)
            r = max(5, runs // (4 if batch > 1 else 1))
            (ort_ms, _), ort_out = time_ort(ort_model, feeds, threads, r, 2)
            (pe_ms, _), pe_out = time_pyengine(pe_model, feeds, threads, r, 2)
            eng = pyengine.build(pe_model, optimize=False, num_threads=threads)
            kernel = eng.profile(feeds, runs=1)[0]["kernel"]
            err = float(np.max(np.abs(pe_out - ort_out)))
            name, hw, c, k, s, group, count = layer
            oh = _out_hw(hw, k, s)
            gflop = 2.0 * batch * c * oh * oh * (c // group) * k * k / 1e9
            tot_pe += pe_ms * count
            tot_ort += ort_ms * count
            flag = "" if err < 1e-3 else f"  MAX ERR {err:.2e}"
            print(f"{name:28s} {count:5d} {gflop:7.3f} {pe_ms:9.3f} {ort_ms:9.3f} {pe_ms / ort_ms:6.2f}  {kernel}{flag}")
        print(f"{'ResNeXt-50 total (x count)':28s} {16:5d} {'':7s} {tot_pe:9.2f} {tot_ort:9.2f} {tot_pe / tot_ort:6.2f}")


def run_chain(batches, threads, runs):
    rng = np.random.default_rng(0)
    for batch in batches:
        ort_model, pe_model, feeds = chain_models(batch, rng)
        r = max(3, runs // batch)
        (ort_ms, ort_min), ort_out = time_ort(ort_model, feeds, threads, r, 2)
        (pe_ms, pe_min), pe_out = time_pyengine(pe_model, feeds, threads, r, 2)
        rel = float(np.max(np.abs(pe_out - ort_out)) / (np.max(np.abs(ort_out)) + 1e-12))
        print(f"ResNet-50 conv body chain, batch {batch}, {threads} threads: pyengine {pe_ms:.2f} ms "
              f"(min {pe_min:.2f}), onnxruntime {ort_ms:.2f} ms (min {ort_min:.2f}), ratio {pe_ms / ort_ms:.2f}, "
              f"max rel diff {rel:.1e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", action="store_true")
    ap.add_argument("--chain", action="store_true")
    ap.add_argument("--int8", action="store_true", help="ResNet-50's conv shapes in INT8 against onnxruntime u8s8")
    ap.add_argument("--int8-network", action="store_true",
                    help="the whole ResNet-50 in INT8, per conv class, against onnxruntime u8s8 (profilers)")
    ap.add_argument("--other", action="store_true", help="depthwise (ConvNeXt), grouped (ResNeXt), 3-D (CSN) shapes")
    ap.add_argument("--grouped", action="store_true",
                    help="ResNeXt-50 32x4d grouped 3x3 convs and other small-group shapes, with the kernel used")
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--cpu-time", action="store_true",
                    help="measure process CPU time instead of wall time (use with --threads 1 on a busy machine)")
    ap.add_argument("--stat", choices=["median", "min"], default="median",
                    help="statistic reported per layer (min is the stable one on a loaded machine)")
    args = ap.parse_args()
    global STAT
    STAT = args.stat
    if args.cpu_time:
        global CLOCK
        CLOCK = time.process_time
    if not (args.layers or args.chain or args.other or args.grouped or args.int8 or args.int8_network):
        args.layers = True
    if args.layers:
        run_layers(args.batch, args.threads, args.runs)
    if args.other:
        run_other(args.batch, args.threads, args.runs)
    if args.grouped:
        run_grouped(args.batch, args.threads, args.runs)
    if args.int8:
        run_int8_layers(args.batch, args.threads, args.runs)
    if args.int8_network:
        run_int8_network(args.batch, args.threads, args.runs)
    if args.chain:
        run_chain(args.batch, args.threads, args.runs)


if __name__ == "__main__":
    main()
