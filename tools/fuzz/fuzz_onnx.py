"""atheris harness: ONNX import + optimize + compile (pyengine.build) and one run.

    python tools/fuzz/fuzz_onnx.py CORPUS_DIR [-max_total_time=SECONDS] [libFuzzer flags]
"""

import sys

import atheris

with atheris.instrument_imports():
    import common
    from fuzz_driver import exercise

    import pyengine


def one_input(data: bytes) -> None:
    path = common.write(data, "input.onnx")
    common.check(lambda: exercise(pyengine.build(path, backend="cpu")))


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
