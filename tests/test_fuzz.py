"""A small, deterministic mutation fuzz run (tests/fuzz_driver.py) in CI.

ONNX byte flips and attribute edits of the zoo `pooling` model, and plan byte
flips, forged plans (checksums recomputed) and int64-field edits of its plan:
each case must build/load and run, or raise a PyengineError other than
InternalError. The cases run in a subprocess so that a crash fails this test
(naming the case) instead of killing pytest. Seeds are fixed; the long,
coverage-guided runs are tools/fuzz/ (atheris).
"""

import os
import subprocess
import sys

import pytest

DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_driver.py")


@pytest.mark.parametrize("kind,count", [("onnx", 300), ("plan", 300)])
def test_mutation_fuzz(kind, count):
    import pyengine

    # The subprocess imports the same pyengine as this test.
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(pyengine.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run([sys.executable, DRIVER, kind, "0", str(count)], capture_output=True, text=True,
                          timeout=600, env=env)
    lines = proc.stdout.splitlines()
    bad = [f"{lines[i - 1]} -> {line.strip()}" for i, line in enumerate(lines) if line.strip().startswith("BAD")]
    assert not bad, "\n".join(bad[:20])
    assert proc.returncode == 0, (
        f"the fuzz process died (rc {proc.returncode}) at '{lines[-1] if lines else '?'}':\n{proc.stderr[-3000:]}")
    assert lines[-1] == f"done {count} cases, 0 bad"
    # The mutations must reach the validation, not just bounce off one check.
    errors = {line.strip() for line in lines if line.strip().startswith("error:")}
    assert errors, "no case raised an error: the mutations are not effective"
