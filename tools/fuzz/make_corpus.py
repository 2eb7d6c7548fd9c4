"""Writes the seed corpus: zoo models as .onnx and their CPU plans, and an
INT8 plan with channels-last convs.

    python tools/fuzz/make_corpus.py OUT    # OUT/onnx/*.onnx, OUT/plan/*.plan
"""

import os
import sys

import common  # noqa: F401  (paths)
import numpy as np
from onnx import TensorProto, helper, numpy_helper

import pyengine  # noqa: E402
import pyengine.zoo  # noqa: E402

SEEDS = ("pooling", "flatten_chain", "resize", "norms", "conv1d", "repvgg_block", "sk_block")


def main(out: str) -> None:
    os.makedirs(os.path.join(out, "onnx"), exist_ok=True)
    os.makedirs(os.path.join(out, "plan"), exist_ok=True)
    for name in SEEDS:
        model = pyengine.zoo.build_model(name)
        with open(os.path.join(out, "onnx", f"{name}.onnx"), "wb") as f:
            f.write(model.SerializeToString())
        pyengine.build(model, backend="cpu").save(os.path.join(out, "plan", f"{name}.plan"))
    # An INT8 plan with channels-last convs (its loader's layout fit runs
    # either way round on it): a chain of 8-channel convs with a residual.
    model = int8_chain()
    saved = pyengine._core.int8_layout()
    pyengine._core.set_int8_layout("nhwc")
    try:
        x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
        pyengine.build(model, backend="cpu", precision="int8", calibration_data=[x], report=False,
                       progress=False).save(os.path.join(out, "plan", "int8_chain.plan"))
    finally:
        pyengine._core.set_int8_layout(saved)
    print(f"wrote {len(SEEDS)} models and {len(SEEDS) + 1} plans under {out}")


def int8_chain():
    """x [N, 3, 8, 8] -> conv 3->8 -> relu -> four 8->8 convs (relu; the
    third adds the first conv's output) -> global average pool."""
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i, c in enumerate((3, 8, 8, 8, 8)):
        inits.append(numpy_helper.from_array((rng.standard_normal((8, c, 3, 3)) * 0.3).astype(np.float32), f"w{i}"))
        inits.append(numpy_helper.from_array((rng.standard_normal(8) * 0.1).astype(np.float32), f"b{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        if i == 3:
            nodes.append(helper.make_node("Add", [f"c{i}", "r0"], [f"s{i}"]))
            nodes.append(helper.make_node("Relu", [f"s{i}"], [f"r{i}"]))
        else:
            nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        prev = f"r{i}"
    nodes.append(helper.make_node("GlobalAveragePool", [prev], ["y"]))
    g = helper.make_graph(nodes, "int8_chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "fuzz-corpus")
