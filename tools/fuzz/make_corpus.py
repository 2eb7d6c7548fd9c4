"""Writes the seed corpus: zoo models as .onnx and their CPU plans.

    python tools/fuzz/make_corpus.py OUT    # OUT/onnx/*.onnx, OUT/plan/*.plan
"""

import os
import sys

import common  # noqa: F401  (paths)

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
    print(f"wrote {len(SEEDS)} models and plans under {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "fuzz-corpus")
