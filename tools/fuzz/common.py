"""Shared setup of the atheris harnesses: import paths, limits, the outcome check."""

import os
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests"))  # fuzz_driver's mutators

try:  # the installed package, or the one PYTHONPATH names ...
    import pyengine
except ImportError:  # ... else the source tree (an in-place build)
    sys.path.insert(0, ROOT)
    import pyengine

# Mutated sizes that fit the limits still must not take minutes per input.
pyengine.set_max_tensor_bytes(16 << 20)
WORKDIR = tempfile.mkdtemp(prefix="pyengine-fuzz-")


def write(data: bytes, name: str) -> str:
    path = os.path.join(WORKDIR, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def check(fn, *args):
    """Runs fn; a PyengineError other than InternalError is an expected outcome,
    anything else propagates (atheris reports it with the input)."""
    try:
        fn(*args)
    except pyengine.InternalError:
        raise
    except pyengine.PyengineError:
        pass
