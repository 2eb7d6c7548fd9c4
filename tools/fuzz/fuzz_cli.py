"""atheris harness: the CLI's file inputs (`pyengine inspect` and `pyengine run`).

The first byte picks the file kind (.plan, .onnx, .npy input); the rest is the
file. The CLI must return an exit code, never raise.

    python tools/fuzz/fuzz_cli.py CORPUS_DIR [-max_total_time=SECONDS] [libFuzzer flags]
"""

import contextlib
import io
import sys

import atheris

with atheris.instrument_imports():
    import common

    from pyengine import cli

SEED_PLAN = None


def one_input(data: bytes) -> None:
    global SEED_PLAN
    if not data:
        return
    kind, body = data[0] % 3, data[1:]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        if kind == 2:
            # A junk .npy input for a valid plan.
            if SEED_PLAN is None:
                import pyengine
                import pyengine.zoo

                SEED_PLAN = common.write(b"", "seed.plan")
                pyengine.build(pyengine.zoo.build_model("flatten_chain"), backend="cpu").save(SEED_PLAN)
            npy = common.write(body, "input.npy")
            rc = cli.main(["run", SEED_PLAN, "--input", npy])
        else:
            path = common.write(body, "input.plan" if kind == 0 else "input.onnx")
            rc = cli.main(["inspect", path]) if data[-1] & 1 else cli.main(["run", path])
    assert isinstance(rc, int)


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
