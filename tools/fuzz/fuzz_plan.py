"""atheris harness: plan reader (pyengine.load) and one run of what it loads.

    python tools/fuzz/fuzz_plan.py CORPUS_DIR [-max_total_time=SECONDS] [libFuzzer flags]
"""

import sys

import atheris

with atheris.instrument_imports():
    import common
    from fuzz_driver import exercise, recompute_checksums

    import pyengine


def one_input(data: bytes) -> None:
    # Half the inputs get their checksums fixed, so the fuzzer reaches the
    # graph validation instead of stopping at the checksum.
    if len(data) > 64 and data[-1] & 1:
        try:
            data = recompute_checksums(data)
        except Exception:  # noqa: BLE001 - a header too broken to fix: use as is
            pass
    path = common.write(data, "input.plan")
    common.check(lambda: exercise(pyengine.load(path)))


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
