"""Deterministic mutation fuzzing of the ONNX import and the plan reader.

Each case mutates a zoo model or a plan file (byte flips, attribute edits,
forged plans with recomputed checksums), then builds / loads it and runs it
once. The only acceptable outcomes are success and a PyengineError (not
InternalError); anything else is reported as BAD. A crash kills the process:
the last "case" line on stdout names the culprit.

    python tests/fuzz_driver.py onnx 0 300     # kind, first seed, number of cases
    python tests/fuzz_driver.py plan 0 300

Used by tests/test_fuzz.py (in a subprocess, so a crash fails the test instead
of killing pytest) and by tools/fuzz/ (the atheris harnesses share mutate_*).
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile

import numpy as np

try:  # the installed package, or the one PYTHONPATH names ...
    import pyengine
except ImportError:  # ... else the source tree this file sits in (an in-place build)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import pyengine
import pyengine.zoo  # noqa: E402
from pyengine import _core  # noqa: E402

INTERESTING = [0, 1, -1, 2, 3, 7, 255, 1000, 2**31 - 1, 2**31, 2**32, 2**40, 2**56, 2**60, 2**62, 2**63 - 1,
               -(2**63), -(2**31), -2]
SEED_MODEL = "pooling"


def seed_model_bytes() -> bytes:
    return pyengine.zoo.build_model(SEED_MODEL).SerializeToString()


def seed_plan_bytes(workdir: str) -> bytes:
    path = os.path.join(workdir, "seed.plan")
    pyengine.build(pyengine.zoo.build_model(SEED_MODEL), backend="cpu").save(path)
    with open(path, "rb") as f:
        return f.read()


# -- mutations -------------------------------------------------------------------

def flip_bytes(data: bytes, rng: np.random.Generator, start: int = 0, end: int | None = None) -> bytes:
    end = len(data) if end is None else end
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        i = int(rng.integers(start, end))
        out[i] ^= int(rng.integers(1, 256))
    return bytes(out)


def mutate_onnx_attributes(data: bytes, rng: np.random.Generator) -> bytes:
    """Sets one int / ints attribute (or a graph input dim) to an interesting value."""
    import onnx

    model = onnx.ModelProto()
    model.ParseFromString(data)
    choice = rng.integers(0, 10)
    if choice == 0:
        dims = model.graph.input[0].type.tensor_type.shape.dim
        d = dims[int(rng.integers(0, len(dims)))]
        d.dim_value = INTERESTING[int(rng.integers(0, len(INTERESTING)))] % (2**63)
    else:
        attrs = [a for n in model.graph.node for a in n.attribute if a.type in (onnx.AttributeProto.INT,
                                                                                 onnx.AttributeProto.INTS)]
        a = attrs[int(rng.integers(0, len(attrs)))]
        value = INTERESTING[int(rng.integers(0, len(INTERESTING)))]
        if a.type == onnx.AttributeProto.INT:
            a.i = value
        elif len(a.ints):
            a.ints[int(rng.integers(0, len(a.ints)))] = value
        else:
            a.ints.append(value)
    return model.SerializeToString()


def _sections(data: bytes) -> dict:
    nsec = struct.unpack_from("<I", data, 16)[0]
    out = {}
    for i in range(nsec):
        kind, _, off, size, _ = struct.unpack_from("<IIQQQ", data, 24 + 32 * i)
        out[kind] = (i, off, size)
    return out


def recompute_checksums(data: bytes) -> bytes:
    """Makes every checksum of a (possibly edited) plan match again, as a forger would."""
    out = bytearray(data)
    nsec = struct.unpack_from("<I", out, 16)[0]
    for i in range(nsec):
        _, _, off, size, _ = struct.unpack_from("<IIQQQ", out, 24 + 32 * i)
        if off + size <= len(out):
            struct.pack_into("<Q", out, 24 + 32 * i + 24, _core.plan_checksum(bytes(out[off:off + size])))
    header = 24 + 32 * nsec
    struct.pack_into("<Q", out, header, _core.plan_checksum(bytes(out[:header])))
    return bytes(out)


def mutate_plan(data: bytes, rng: np.random.Generator, mode: str) -> bytes:
    """mode: "flip" (anywhere, checksums stale), "forge" (flips in the graph or
    metadata section, checksums recomputed), "int64" (an 8-byte field of the graph
    section that holds a small value set to an interesting one, checksums recomputed)."""
    secs = _sections(data)
    if mode == "flip":
        return flip_bytes(data, rng)
    if mode == "forge":
        _, off, size = secs[2] if rng.integers(0, 4) else secs[1]
        return recompute_checksums(flip_bytes(data, rng, off, off + size))
    _, off, size = secs[2]
    graph = data[off:off + size]
    slots = [i for i in range(0, size - 7) if 0 <= struct.unpack_from("<q", graph, i)[0] <= 64]
    out = bytearray(data)
    i = off + slots[int(rng.integers(0, len(slots)))]
    struct.pack_into("<q", out, i, INTERESTING[int(rng.integers(0, len(INTERESTING)))])
    return recompute_checksums(bytes(out))


# -- running one case ------------------------------------------------------------

def exercise(engine) -> None:
    """Runs a built or loaded engine once on fresh random inputs."""
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in engine.inputs:
        shape = [1 if d is None else d for d in (spec.shape or (1,))]
        feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
    engine.run(feeds)


def run_case(kind: str, seed: int, seed_bytes: bytes, workdir: str) -> str:
    """Returns "ok", "error:<Class>" or "BAD:<Class>: <message>"."""
    rng = np.random.default_rng(seed)
    try:
        if kind == "onnx":
            blob = flip_bytes(seed_bytes, rng) if seed % 2 else mutate_onnx_attributes(seed_bytes, rng)
            path = os.path.join(workdir, "case.onnx")
        else:
            blob = mutate_plan(seed_bytes, rng, ("flip", "forge", "int64")[seed % 3])
            path = os.path.join(workdir, "case.plan")
        with open(path, "wb") as f:
            f.write(blob)
        engine = pyengine.build(path, backend="cpu") if kind == "onnx" else pyengine.load(path)
        exercise(engine)
        return "ok"
    except pyengine.InternalError as exc:
        return f"BAD:InternalError: {exc}"
    except pyengine.PyengineError as exc:
        return f"error:{type(exc).__name__}"
    except Exception as exc:  # noqa: BLE001 - exactly what the fuzzer looks for
        return f"BAD:{type(exc).__module__}.{type(exc).__name__}: {exc}"


def main(argv) -> int:
    kind, first, count = argv[0], int(argv[1]), int(argv[2])
    # Mutated sizes that fit the limits still must not take minutes to run.
    pyengine.set_max_tensor_bytes(16 << 20)
    with tempfile.TemporaryDirectory() as workdir:
        seed_bytes = seed_model_bytes() if kind == "onnx" else seed_plan_bytes(workdir)
        bad = 0
        for seed in range(first, first + count):
            print(f"case {kind} {seed}", flush=True)
            result = run_case(kind, seed, seed_bytes, workdir)
            print(f"  {result}", flush=True)
            bad += result.startswith("BAD")
    print(f"done {count} cases, {bad} bad", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
